// Tests of the float ops the forward pass uses (src/kernels/ops.h), on every CPU tier (scalar,
// avx2, avxvnni, avx512, amx, neon, i8mm; a tier this CPU or build cannot run is skipped with its
// name):
//  (a) attention (ops attend / attend_f16 / attend_paged / attend_paged_f16 / attend_window*):
//      each tier vs scalar within a per-case bound; n_q heads in one call bitwise equal to one
//      call per head, paged and window results bitwise equal to contiguous ones, within the tier
//  (b) elementwise ops (silu_mul, gelu, gelu_mul, layer_norm, dot, axpy, to_f16): each tier vs a
//      double or scalar reference within a stated bound, and each row's bits independent of its
//      placement and neighbours
//  (c) every SIMD tier's table has none of the scalar entries (no silent fallback)
// Perf mode (LLMT_KERNEL_PERF=1 or --perf): attention microseconds per call per tier
// (interleaved, medians).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/ops.h"
#define LLMT_KERNEL_TEST_MAIN
#include "kernel-test-util.h"
#include "tier-util.h"

namespace llmt::kernels {
namespace {

using test::kTestTiers;
using test::perf_mode;
using test::random_floats;

// ---- attention ops ----

// One attention shape: n_q query heads over one KV head of n_kv positions, head size hd;
// block_size 0 = the contiguous entry points, else the paged ones (blocks in shuffled order).
struct AttendCase {
  int32_t n_q, hd, n_kv, block_size;
  bool f16;
  // |tier - scalar| <= tol * (1 + max_j scale*sum_d |q_d k_jd|) * sum_j p_j |v_jd| per output
  // element (p the scalar softmax weights): the rounding scale of the score dot products (fed
  // through the softmax) and of the weighted V sum.
  double tol;
};

// Attention shape x tier (scalar included: its own invariances are checked too).
using AttendTierCase = std::tuple<AttendCase, Isa>;

std::string attend_case_name(const testing::TestParamInfo<AttendTierCase>& info) {
  const AttendCase& c = std::get<0>(info.param);
  return "q" + std::to_string(c.n_q) + "_hd" + std::to_string(c.hd) + "_kv" +
         std::to_string(c.n_kv) + "_bs" + std::to_string(c.block_size) +
         (c.f16 ? "_f16_" : "_f32_") + isa_name(std::get<1>(info.param));
}

std::vector<AttendCase> attend_cases() {
  std::vector<AttendCase> v;
  // The decode shapes of the GQA models (3 query heads per KV head, hd 64) over row counts
  // around the 4- and 8-row passes, block sizes that cut runs at odd places, and other head
  // counts (groups of 3 plus a rest of 1 or 2) and head sizes (hd 12: not a multiple of 8, the
  // scalar fallback).
  for (bool f16 : {false, true}) {
    for (int32_t n_kv : {1, 3, 4, 5, 8, 9, 31, 128, 257}) {
      for (int32_t bs : {0, 5, 16}) v.push_back({3, 64, n_kv, bs, f16, 1e-6});
    }
    for (int32_t n_q : {1, 2, 4, 5, 8}) {
      v.push_back({n_q, 64, 77, 0, f16, 1e-6});
      v.push_back({n_q, 64, 77, 32, f16, 1e-6});
    }
    for (int32_t hd : {8, 16, 40, 128}) {
      v.push_back({3, hd, 45, 0, f16, 1e-6});
      v.push_back({1, hd, 45, 7, f16, 1e-6});
    }
    v.push_back({3, 12, 45, 0, f16, 1e-6});
    v.push_back({2, 12, 45, 4, f16, 1e-6});
    // The avx512 passes: 16-lane steps with a masked last step (hd 24, 40, 80: not multiples of
    // 16; hd 80: one 64-dim value pass plus a 16-dim one), rows 8 at a time, value slices of 32
    // rows; one-row blocks, odd blocks and a long cache (many slices and prefetch distances).
    for (int32_t hd : {24, 80, 256}) {
      for (int32_t n_kv : {1, 17, 100}) {
        for (int32_t bs : {0, 1, 13}) v.push_back({3, hd, n_kv, bs, f16, 1e-6});
      }
    }
    for (int32_t bs : {1, 3, 17}) v.push_back({3, 64, 1, bs, f16, 1e-6});
    for (int32_t bs : {0, 16, 33}) v.push_back({3, 128, 1000, bs, f16, 1e-6});
    v.push_back({1, 80, 1000, 16, f16, 1e-6});
  }
  return v;
}

// Runs one case's entry point of table ot on heads [h0, h0 + n_q).
struct AttendInputs {
  std::vector<float> q, k, v;      // q [n_q, hd]; k, v [n_kv, hd] (f32 values)
  std::vector<uint16_t> k16, v16;  // the same rows as half (f16 cases use these)
  std::vector<uint8_t> pool;       // paged: K and V rows scattered into blocks
  std::vector<int32_t> table;
  size_t stride = 0, v_off = 0;
};

AttendInputs attend_inputs(const AttendCase& c, uint32_t seed) {
  AttendInputs in;
  in.q = random_floats(static_cast<int64_t>(c.n_q) * c.hd, seed);
  in.k = random_floats(static_cast<int64_t>(c.n_kv) * c.hd, seed + 1);
  in.v = random_floats(static_cast<int64_t>(c.n_kv) * c.hd, seed + 2);
  for (auto& x : in.k) x *= 2.0f;  // peaked softmax rows as well as flat ones
  in.k16.resize(in.k.size());
  in.v16.resize(in.v.size());
  for (size_t i = 0; i < in.k.size(); ++i) {
    in.k16[i] = fp32_to_fp16(in.k[i]);
    in.v16[i] = fp32_to_fp16(in.v[i]);
    if (c.f16) {  // the reference sees exactly the half values
      in.k[i] = fp16_to_fp32(in.k16[i]);
      in.v[i] = fp16_to_fp32(in.v16[i]);
    }
  }
  if (c.block_size > 0) {
    const size_t elem = c.f16 ? 2 : 4;
    const size_t part = static_cast<size_t>(c.block_size) * c.hd * elem;
    const int32_t n_blocks = (c.n_kv + c.block_size - 1) / c.block_size;
    in.stride = 2 * part;
    in.v_off = part;
    in.pool.assign(in.stride * (n_blocks + 1), 0xFF);  // NaN fill: a stray read shows
    in.table.resize(n_blocks);
    for (int32_t b = 0; b < n_blocks; ++b) in.table[b] = (b * 7 + 3) % (n_blocks + 1);
    for (int32_t j = 0; j < c.n_kv; ++j) {
      const size_t at = static_cast<size_t>(in.table[j / c.block_size]) * in.stride +
                        static_cast<size_t>(j % c.block_size) * c.hd * elem;
      const size_t src = static_cast<size_t>(j) * c.hd;
      const void* kp = c.f16 ? static_cast<const void*>(&in.k16[src]) : &in.k[src];
      const void* vp = c.f16 ? static_cast<const void*>(&in.v16[src]) : &in.v[src];
      std::memcpy(&in.pool[at], kp, c.hd * elem);
      std::memcpy(&in.pool[at + in.v_off], vp, c.hd * elem);
    }
  }
  return in;
}

std::vector<float> run_attend(const ops::OpsTable& ot, const AttendCase& c, const AttendInputs& in,
                              int32_t h0, int32_t n_q) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  const float* q = in.q.data() + static_cast<int64_t>(h0) * c.hd;
  std::vector<float> sc(static_cast<size_t>(n_q) * c.n_kv, -1.0f);
  std::vector<float> out(static_cast<size_t>(n_q) * c.hd, -1.0f);
  if (c.block_size == 0 && !c.f16) {
    ot.attend(q, n_q, in.k.data(), in.v.data(), c.n_kv, c.hd, scale, sc.data(), out.data());
  } else if (c.block_size == 0) {
    ot.attend_f16(q, n_q, in.k16.data(), in.v16.data(), c.n_kv, c.hd, scale, sc.data(), out.data());
  } else {
    (c.f16 ? ot.attend_paged_f16 : ot.attend_paged)(
        q, n_q, in.pool.data(), in.pool.data() + in.v_off, in.table.data(), in.stride, c.block_size,
        c.n_kv, c.hd, scale, sc.data(), out.data());
  }
  return out;
}

class KernelAttend : public testing::TestWithParam<AttendTierCase> {};

// The tier's attention against the scalar one within the case's bound; each head's bits the same
// alone as in a group; the paged entry points bitwise equal to the contiguous ones on the same
// rows (the layout never changes a result).
TEST_P(KernelAttend, MatchesScalarAndHeadsAndLayoutAreInvariant) {
  const auto& [c, isa] = GetParam();
  LLMT_REQUIRE_TIER(isa);
  const AttendInputs in = attend_inputs(c, 100 + c.n_kv + c.hd);
  const std::vector<float> want = run_attend(ops::ops_table(Isa::kScalar), c, in, 0, c.n_q);
  // Per-element bound from the f32 values the kernels see.
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  std::vector<double> bound(want.size());
  for (int32_t h = 0; h < c.n_q; ++h) {
    const float* q = in.q.data() + static_cast<int64_t>(h) * c.hd;
    std::vector<double> s(c.n_kv);
    double amax = 0.0, smax = -1e300;
    for (int32_t j = 0; j < c.n_kv; ++j) {
      double dot = 0.0, mag = 0.0;
      for (int32_t d = 0; d < c.hd; ++d) {
        dot += static_cast<double>(q[d]) * in.k[static_cast<size_t>(j) * c.hd + d];
        mag += std::abs(static_cast<double>(q[d]) * in.k[static_cast<size_t>(j) * c.hd + d]);
      }
      s[j] = dot * scale;
      smax = std::max(smax, s[j]);
      amax = std::max(amax, mag * scale);
    }
    double z = 0.0;
    for (int32_t j = 0; j < c.n_kv; ++j) z += std::exp(s[j] - smax);
    for (int32_t d = 0; d < c.hd; ++d) {
      double pv = 0.0;
      for (int32_t j = 0; j < c.n_kv; ++j) {
        pv += std::exp(s[j] - smax) / z * std::abs(in.v[static_cast<size_t>(j) * c.hd + d]);
      }
      bound[static_cast<size_t>(h) * c.hd + d] = c.tol * (1.0 + amax) * pv;
    }
  }
  const ops::OpsTable& ot = ops::ops_table(isa);
  const std::vector<float> got = run_attend(ot, c, in, 0, c.n_q);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_LE(std::abs(static_cast<double>(got[i]) - want[i]), bound[i])
        << "element " << i << ": " << got[i] << " vs scalar " << want[i];
  }
  // The context groups a KV head's query heads into one call or not depending on the batch:
  // each head's bits must not depend on that.
  for (int32_t h = 0; h < c.n_q; ++h) {
    const std::vector<float> one = run_attend(ot, c, in, h, 1);
    ASSERT_EQ(std::memcmp(one.data(), got.data() + static_cast<size_t>(h) * c.hd,
                          one.size() * sizeof(float)),
              0)
        << "head " << h << " alone differs from head " << h << " of " << c.n_q;
  }
  if (c.block_size > 0) {
    AttendCase contiguous = c;
    contiguous.block_size = 0;
    const std::vector<float> flat = run_attend(ot, contiguous, in, 0, c.n_q);
    ASSERT_EQ(std::memcmp(flat.data(), got.data(), got.size() * sizeof(float)), 0)
        << "paged differs from contiguous";
  }
}

std::vector<Isa> scalar_and_test_tiers() {
  std::vector<Isa> v = {Isa::kScalar};
  v.insert(v.end(), std::begin(kTestTiers), std::end(kTestTiers));
  return v;
}

INSTANTIATE_TEST_SUITE_P(Shapes, KernelAttend,
                         testing::Combine(testing::ValuesIn(attend_cases()),
                                          testing::ValuesIn(scalar_and_test_tiers())),
                         attend_case_name);

// attend_window over positions [p0, n_kv) of the paged layout equals (bitwise) the contiguous
// kernel on those rows, on every tier (the contract of OpsTable::attend_window).
TEST_P(KernelAttend, WindowEqualsContiguousOnTheWindowRows) {
  const auto& [c, isa] = GetParam();
  LLMT_REQUIRE_TIER(isa);
  if (c.block_size == 0 || c.n_kv < 2) GTEST_SKIP() << "paged cases with >= 2 rows";
  const AttendInputs in = attend_inputs(c, 300 + c.n_kv + c.hd);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  for (const int32_t p0 : {1, c.n_kv / 3, c.block_size + 1, c.n_kv - 1}) {
    if (p0 < 1 || p0 >= c.n_kv) continue;
    SCOPED_TRACE("p0 " + std::to_string(p0));
    const int32_t n = c.n_kv - p0;
    const size_t off = static_cast<size_t>(p0) * c.hd;
    const ops::OpsTable& ot = ops::ops_table(isa);
    std::vector<float> sc(static_cast<size_t>(c.n_q) * n), want(static_cast<size_t>(c.n_q) * c.hd);
    std::vector<float> got(want.size(), -1.0f);
    if (c.f16) {
      ot.attend_f16(in.q.data(), c.n_q, in.k16.data() + off, in.v16.data() + off, n, c.hd, scale,
                    sc.data(), want.data());
    } else {
      ot.attend(in.q.data(), c.n_q, in.k.data() + off, in.v.data() + off, n, c.hd, scale, sc.data(),
                want.data());
    }
    (c.f16 ? ot.attend_window_f16 : ot.attend_window)(
        in.q.data(), c.n_q, in.pool.data(), in.pool.data() + in.v_off, in.table.data(), in.stride,
        c.block_size, p0, c.n_kv, c.hd, scale, sc.data(), got.data());
    ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
  }
}

// ---- elementwise ops, per tier (scalar included) ----

class KernelOps : public testing::TestWithParam<Isa> {};

// Row lengths around the 8- and 16-lane steps (tails of every size class, tail-only rows) and
// model-sized rows.
constexpr int64_t kOpLengths[] = {1, 5, 7, 8, 15, 16, 17, 31, 33, 64, 100, 768, 1003};

// LayerNorm against the scalar one (both accumulate in double): within a few float ulps, with
// and without weight / bias, in place.
TEST_P(KernelOps, LayerNormMatchesScalar) {
  const Isa isa = GetParam();
  LLMT_REQUIRE_TIER(isa);
  for (const int64_t n : kOpLengths) {
    std::vector<float> x = random_floats(n, 91), w = random_floats(n, 92), b = random_floats(n, 93);
    for (auto& v : x) v = 3.0f * v + 0.5f;  // a mean far from 0
    for (const bool wb : {false, true}) {
      SCOPED_TRACE("n " + std::to_string(n) + (wb ? " with w, b" : ""));
      std::vector<float> want(n);
      ops::layer_norm(x.data(), wb ? w.data() : nullptr, wb ? b.data() : nullptr, want.data(), n,
                      1e-5f);
      std::vector<float> got = x;
      ops::ops_table(isa).layer_norm(got.data(), wb ? w.data() : nullptr, wb ? b.data() : nullptr,
                                     got.data(), n, 1e-5f);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(got[i], want[i], 1e-6f * (1.0f + std::abs(want[i]))) << "element " << i;
      }
    }
  }
}

// GELU and GELU GLU against the tanh form in double: within 1e-6 relative plus 1e-7 |x|
// absolute (the float tanh form loses digits to 1 + tanh(a) for negative x), finite everywhere,
// including large |x| where the vector e^x clamps.
TEST_P(KernelOps, GeluMatchesDoubleReference) {
  const Isa isa = GetParam();
  LLMT_REQUIRE_TIER(isa);
  auto ref = [](double v) {
    return 0.5 * v * (1.0 + std::tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v)));
  };
  const ops::OpsTable& ot = ops::ops_table(isa);
  for (const int64_t n : {int64_t{13}, int64_t{1003}}) {
    std::vector<float> x = random_floats(n, 77), u = random_floats(n, 78);
    for (int64_t i = 0; i < n; ++i) x[i] *= 6.0f;
    x[0] = -30.0f, x[1] = 30.0f, x[2] = 0.0f, x[3] = -1e-20f, x[4] = 90.0f, x[5] = -90.0f;
    x[n - 1] = -90.0f;  // in the tail too
    std::vector<float> got = x, got_mul = x;
    ot.gelu(got.data(), n);
    ot.gelu_mul(got_mul.data(), u.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double want = ref(x[i]), want_mul = want * u[i];
      const double tol = 1e-6 * std::abs(want) + 1e-7 * std::abs(x[i]);
      ASSERT_TRUE(std::isfinite(got[i]) && std::isfinite(got_mul[i])) << "x " << x[i];
      ASSERT_LE(std::abs(got[i] - want), tol) << "x " << x[i];
      ASSERT_LE(std::abs(got_mul[i] - want_mul), tol * std::abs(u[i]) + 1e-30) << "x " << x[i];
    }
  }
}

// SwiGLU g = silu(g) * u against v / (1 + e^-v) * u in double: the vector e^x has about 2e-7
// relative error and the division and product round once each, so within 1e-6 relative; plus
// 1e-30 absolute for the clamped e^x at v < -87 (true values below 1e-35 there). Finite.
TEST_P(KernelOps, SiluMulMatchesDoubleReference) {
  const Isa isa = GetParam();
  LLMT_REQUIRE_TIER(isa);
  for (const int64_t n : kOpLengths) {
    std::vector<float> g = random_floats(n, 81), u = random_floats(n, 82);
    for (auto& v : g) v *= 8.0f;
    const float special[] = {-100.0f, 100.0f, 0.0f, -0.0f, -87.5f, 88.5f, 1e-30f};
    for (size_t i = 0; i < std::size(special) && i < static_cast<size_t>(n); ++i) {
      g[n - 1 - i] = special[i];  // the row's end: vector lanes or the tail, by n
    }
    std::vector<float> got = g;
    ops::ops_table(isa).silu_mul(got.data(), u.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double v = g[i], want = v / (1.0 + std::exp(-v)) * u[i];
      ASSERT_TRUE(std::isfinite(got[i])) << "n " << n << " g " << g[i];
      ASSERT_LE(std::abs(got[i] - want), 1e-6 * std::abs(want) + 1e-30)
          << "n " << n << " element " << i << " g " << g[i];
    }
  }
}

// dot and axpy against fp64: any summation order of n products with fused or unfused steps is
// within (n + 1) u sum |a_i b_i| of the exact dot (u = 2^-24); axpy rounds y + alpha x at most
// twice, so within 2u (|y| + |alpha x|).
TEST_P(KernelOps, DotAndAxpyWithinRoundingBound) {
  const Isa isa = GetParam();
  LLMT_REQUIRE_TIER(isa);
  const ops::OpsTable& ot = ops::ops_table(isa);
  constexpr double kU = 0x1p-24;
  for (const int64_t n : kOpLengths) {
    SCOPED_TRACE("n " + std::to_string(n));
    const std::vector<float> a = random_floats(n, 61), b = random_floats(n, 62);
    double exact = 0.0, mag = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      exact += static_cast<double>(a[i]) * b[i];
      mag += std::abs(static_cast<double>(a[i]) * b[i]);
    }
    ASSERT_LE(std::abs(ot.dot(a.data(), b.data(), n) - exact), (n + 1) * kU * mag);
    std::vector<float> y = b;
    const float alpha = -0.7f;
    ot.axpy(alpha, a.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double want = b[i] + static_cast<double>(alpha) * a[i];
      ASSERT_LE(std::abs(y[i] - want), 2 * kU * (std::abs(b[i]) + std::abs(alpha * a[i])))
          << "axpy element " << i;
    }
  }
}

// to_f16 is exact (round to nearest even): bitwise the scalar conversion, for values across the
// half range, subnormals, ties, overflow to infinity and signed zeros.
TEST_P(KernelOps, ToF16EqualsScalar) {
  const Isa isa = GetParam();
  LLMT_REQUIRE_TIER(isa);
  std::mt19937 rng(5);
  for (const int64_t n : kOpLengths) {
    std::vector<float> x(n);
    for (auto& v : x) {
      uint32_t bits = rng();
      bits = (bits & 0x807FFFFFu) | ((95u + (rng() % 60)) << 23);  // 2^-32 .. 2^27
      v = std::bit_cast<float>(bits);
    }
    const float special[] = {0.0f,     -0.0f,      65504.0f,        65520.0f, -1e9f,
                             0x1p-25f, 0x1.8p-24f, 1.0f + 0x1p-11f, INFINITY};
    for (size_t i = 0; i < std::size(special) && i < static_cast<size_t>(n); ++i) {
      x[n - 1 - i] = special[i];
    }
    std::vector<uint16_t> want(n), got(n, 0xAAAA);
    ops::to_f16_scalar(x.data(), want.data(), n);
    ops::ops_table(isa).to_f16(x.data(), got.data(), n);
    ASSERT_EQ(got, want) << "n " << n;
  }
}

// Batch invariance of the row ops: a row's results do not depend on where the row lies (a row of
// a batch buffer starts at t * n floats, so at every alignment) nor on its neighbours, and
// nothing outside the row is written. Each row is placed at float offsets 0..16 of a buffer
// whose other elements are NaN, and every op's bits must equal those at offset 0.
TEST_P(KernelOps, RowResultsIndependentOfPlacementAndNeighbours) {
  const Isa isa = GetParam();
  LLMT_REQUIRE_TIER(isa);
  const ops::OpsTable& ot = ops::ops_table(isa);
  for (const int64_t n : kOpLengths) {
    const std::vector<float> x = random_floats(n, 51), u = random_floats(n, 52),
                             w = random_floats(n, 53);
    // Runs every op on the row placed at offset off; returns all outputs, concatenated.
    auto run = [&](int64_t off) {
      const int64_t len = n + 2 * 32;
      auto placed = [&](const std::vector<float>& src) {
        std::vector<float> buf(len, std::nanf(""));
        std::copy(src.begin(), src.end(), buf.begin() + off);
        return buf;
      };
      std::vector<float> out;
      auto take = [&](const std::vector<float>& buf) {
        for (int64_t i = 0; i < len; ++i) {
          if (i >= off && i < off + n) continue;
          EXPECT_TRUE(std::isnan(buf[i])) << "n " << n << " off " << off << ": wrote " << i;
        }
        out.insert(out.end(), buf.begin() + off, buf.begin() + off + n);
      };
      const std::vector<float> xb = placed(x), ub = placed(u), wb = placed(w);
      std::vector<float> g = xb;
      ot.silu_mul(g.data() + off, ub.data() + off, n);
      take(g);
      g = xb;
      ot.gelu(g.data() + off, n);
      take(g);
      g = xb;
      ot.gelu_mul(g.data() + off, ub.data() + off, n);
      take(g);
      g = xb;
      ot.layer_norm(g.data() + off, wb.data() + off, ub.data() + off, g.data() + off, n, 1e-5f);
      take(g);
      g = ub;
      ot.axpy(0.3f, xb.data() + off, g.data() + off, n);
      take(g);
      out.push_back(ot.dot(xb.data() + off, ub.data() + off, n));
      std::vector<uint16_t> h(len, 0x7E00);
      ot.to_f16(xb.data() + off, h.data() + off, n);
      for (int64_t i = 0; i < len; ++i) {
        if (i < off || i >= off + n) {
          EXPECT_EQ(h[i], 0x7E00) << "to_f16 wrote " << i;
        }
      }
      for (int64_t i = 0; i < n; ++i) out.push_back(h[off + i]);
      return out;
    };
    const std::vector<float> want = run(0);
    for (int64_t off = 1; off <= 16; ++off) {
      const std::vector<float> got = run(off);
      ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0)
          << "n " << n << " offset " << off;
    }
  }
}

// Every SIMD tier has its own ops: no entry of its table is the scalar one (so a tier's tests
// cannot pass by falling back to scalar; the neon and i8mm tiers use ops-neon.cpp, avxvnni the
// avx2 ops, amx the avx512 ones).
TEST_P(KernelOps, SimdTierHasNoScalarEntry) {
  const Isa isa = GetParam();
  if (isa == Isa::kScalar) GTEST_SKIP() << "the scalar tier is the reference";
  LLMT_REQUIRE_TIER(isa);
  const ops::OpsTable& s = ops::ops_table(Isa::kScalar);
  const ops::OpsTable& t = ops::ops_table(isa);
  EXPECT_NE(&t, &s);
  EXPECT_NE(t.dot, s.dot);
  EXPECT_NE(t.axpy, s.axpy);
  EXPECT_NE(t.attend, s.attend);
  EXPECT_NE(t.attend_f16, s.attend_f16);
  EXPECT_NE(t.silu_mul, s.silu_mul);
  EXPECT_NE(t.to_f16, s.to_f16);
  EXPECT_NE(t.attend_paged, s.attend_paged);
  EXPECT_NE(t.attend_paged_f16, s.attend_paged_f16);
  EXPECT_NE(t.attend_window, s.attend_window);
  EXPECT_NE(t.attend_window_f16, s.attend_window_f16);
  EXPECT_NE(t.gelu, s.gelu);
  EXPECT_NE(t.gelu_mul, s.gelu_mul);
  EXPECT_NE(t.layer_norm, s.layer_norm);
  // The neon tier's entries are ops-neon.cpp's, and i8mm shares them.
#if defined(__aarch64__)
  if (isa == Isa::kNeon || isa == Isa::kI8mm) {
    EXPECT_EQ(t.attend, &ops::attend_neon);
    EXPECT_EQ(t.dot, &ops::dot_neon);
    EXPECT_EQ(t.layer_norm, &ops::layer_norm_neon);
  }
#endif
}

std::string isa_case_name(const testing::TestParamInfo<Isa>& info) {
  return isa_name(info.param);
}

INSTANTIATE_TEST_SUITE_P(Tiers, KernelOps, testing::ValuesIn(scalar_and_test_tiers()),
                         isa_case_name);

// ---- perf mode ----

// Attention per call on each x86 tier this machine has, interleaved (tier A, tier B, A, ...),
// median of 21 timed calls each: the decode shape of the GQA models (3 query heads per KV head,
// hd 64 and 128) through the paged entry points (block size 16, blocks in shuffled order) over
// n_kv cached positions, F32 and F16 cache. GB/s counts the K and V bytes read once per call.
TEST(KernelPerf, AttentionThroughput) {
  if (!perf_mode()) GTEST_SKIP() << "set LLMT_KERNEL_PERF=1 (or pass --perf) to run";
  std::vector<Isa> tiers;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    if (isa != Isa::kScalar && isa_supported(isa)) tiers.push_back(isa);
  }
  std::printf("%-6s %4s %6s %4s", "kv", "hd", "n_kv", "n_q");
  for (Isa isa : tiers)
    std::printf(" %10s %8s", (std::string(isa_name(isa)) + " us").c_str(), "GB/s");
  std::printf("\n");
  for (const bool f16 : {false, true}) {
    for (const int32_t hd : {64, 128}) {
      for (const int32_t n_kv : {512, 4096}) {
        const AttendCase c{3, hd, n_kv, 16, f16, 0.0};
        const AttendInputs in = attend_inputs(c, 500);
        std::vector<std::vector<double>> times(tiers.size());
        for (int rep = 0; rep < 22; ++rep) {
          for (size_t ti = 0; ti < tiers.size(); ++ti) {
            const auto t0 = std::chrono::steady_clock::now();
            const auto out = run_attend(ops::ops_table(tiers[ti]), c, in, 0, c.n_q);
            const double sec =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (rep > 0) times[ti].push_back(sec);  // the first call warms up
            ASSERT_TRUE(std::isfinite(out[0]));
          }
        }
        const double bytes = 2.0 * n_kv * hd * (f16 ? 2 : 4);
        std::printf("%-6s %4d %6d %4d", f16 ? "f16" : "f32", hd, n_kv, c.n_q);
        for (auto& t : times) {
          std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
          const double med = t[t.size() / 2];
          std::printf(" %10.1f %8.2f", med * 1e6, bytes / med / 1e9);
        }
        std::printf("\n");
      }
    }
  }
}

}  // namespace
}  // namespace llmt::kernels
