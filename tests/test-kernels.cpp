// Tests of the weight-format kernels (src/kernels): table-driven over every format x every CPU
// tier (avx2, avxvnni, avx512, amx, neon). A tier this CPU or build cannot run is reported as
// skipped with its name; the scalar reference runs everywhere.
//  (a) tier dequantize == scalar dequantize (bit-exact)
//  (b) tier vec_dot vs scalar vec_dot within tol_isa * sum |w_i x_i| (1e-5 for every format)
//  (c) vec_dot vs an fp64 dot of the dequantized weights and quantized-then-dequantized
//      activations, within a relative bound
//  (d) matmul batch invariance: rows bitwise equal for M in {1,3,4,5,8,9,16,33,70,512} (tile
//      edges of the 4-token dot path and the 8-token GEMM tiles, a full prompt) and nth in {1,2,3},
//      for every format with or without a GEMM tile (float formats also with K % 16 != 0)
//      on the scalar path and on every tier, and the avxvnni and avx512 tiers bitwise equal to the
//      avx2 tier for the quantized formats (the float formats have their own avx512 tiles); float
//      vec_dot at awkward lengths within a rounding bound on every tier
//  (g) the EVEX twin of the avxvnni kernels (vnni256-avx512.cpp, the avx512 tier's kernels below
//      the wide tiles; runs where AVX-512 VNNI+VL does): vec_dot vs scalar and fp64, bitwise
//      equal to avx2 (random and extreme codes), vec_dot_rows equal to vec_dot, and (d) through
//      matmul's walk, bitwise equal to avx2 for every M; the avx512 tier's tables use them
//  (e) activation quantization round trip, and tier quantize == scalar quantize (bytes)
// The attention and elementwise ops are tested in test-kernel-ops.cpp.
//  plus fp16/bf16 conversions and, when real GGUF files are present, a cross-format check that
//  the same tensor decodes to nearly the same values from every format's file.
// Relative bounds are against sum_i |w_i * x_i| (the scale of the rounding in any summation).
// Perf mode: LLMT_KERNEL_PERF=1 (or --perf) prints matmul GB/s and GOP/s per format and M
// (1, 16, 64, 512; one thread; LLMT_KERNEL_PERF_NK=NxK sets the matrix, default 2048x768) and,
// where the EVEX twin runs, its time against avx2 (KernelPerf.VnniTwinVsAvx2).
#include <gtest/gtest.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "kernels/quant-blocks.h"
#include "llmthreads/gguf.h"
#define LLMT_KERNEL_TEST_MAIN
#include "kernel-test-util.h"
#include "test-util.h"
#include "tier-util.h"

namespace llmt::kernels {
namespace {

using test::data_path;
using test::perf_mode;
using test::random_floats;

struct FormatCase {
  TensorType type;
  // Byte offsets of fp16 scale fields inside a block, set to sane positive values.
  std::vector<int> fp16_fields;
  double tol_isa;  // (b) AVX2 vs scalar
  double tol_ref;  // (c) vs fp64
};

const std::vector<FormatCase>& format_cases() {
  static const std::vector<FormatCase> cases = {
      {TensorType::F32, {}, 1e-5, 1e-5},      {TensorType::F16, {}, 1e-5, 1e-5},
      {TensorType::BF16, {}, 1e-5, 1e-5},     {TensorType::Q8_0, {0}, 1e-5, 1e-5},
      {TensorType::Q4_0, {0}, 1e-5, 1e-5},    {TensorType::Q4_1, {0, 2}, 1e-5, 1e-4},
      {TensorType::Q5_0, {0}, 1e-5, 1e-5},    {TensorType::Q5_1, {0, 2}, 1e-5, 1e-4},
      {TensorType::IQ4_NL, {0}, 1e-5, 1e-5},  {TensorType::Q2_K, {80, 82}, 1e-5, 1e-5},
      {TensorType::Q3_K, {108}, 1e-5, 1e-5},  {TensorType::Q4_K, {0, 2}, 1e-5, 1e-5},
      {TensorType::Q5_K, {0, 2}, 1e-5, 1e-5}, {TensorType::Q6_K, {208}, 1e-5, 1e-5},
  };
  return cases;
}

std::string case_name(const testing::TestParamInfo<FormatCase>& info) {
  return tensor_type_name(info.param.type);
}

// Tiers other than scalar that this machine can run (lowest first).
std::vector<Isa> runnable_tiers() {
  std::vector<Isa> v;
  for (Isa isa : arch_isas()) {
    if (isa != Isa::kScalar && isa_supported(isa)) v.push_back(isa);
  }
  return v;
}
// Scalar plus the runnable tiers.
std::vector<Isa> all_runnable() {
  std::vector<Isa> v = {Isa::kScalar};
  for (Isa isa : runnable_tiers()) v.push_back(isa);
  return v;
}
using test::kTestTiers;

size_t row_bytes(TensorType t, int64_t k) {
  return *tensor_row_bytes(t, k);
}

// n_rows random rows of k elements in format c.type.
std::vector<uint8_t> random_weights(const FormatCase& c, int64_t n_rows, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const size_t rb = row_bytes(c.type, k);
  std::vector<uint8_t> w(rb * static_cast<size_t>(n_rows));
  if (c.type == TensorType::F32 || c.type == TensorType::F16 || c.type == TensorType::BF16) {
    for (int64_t i = 0; i < n_rows * k; ++i) {
      const float v = uni(rng);
      if (c.type == TensorType::F32) {
        std::memcpy(&w[4 * i], &v, 4);
      } else {
        const uint16_t h = c.type == TensorType::F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
        std::memcpy(&w[2 * i], &h, 2);
      }
    }
    return w;
  }
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  const auto info = *tensor_type_info(c.type);
  std::uniform_real_distribution<float> scale(0.001f, 0.02f);
  for (size_t blk = 0; blk < w.size() / info.block_bytes; ++blk) {
    for (int off : c.fp16_fields) {
      const uint16_t h = fp32_to_fp16(scale(rng));
      std::memcpy(&w[blk * info.block_bytes + off], &h, 2);
    }
  }
  return w;
}

// Activation row in the format's vec_dot_type.
std::vector<uint8_t> quantize_act(const TypeKernels& tk, const std::vector<float>& x) {
  const int64_t k = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(row_bytes(tk.vec_dot_type, k));
  tk.quantize_row_vec(x.data(), q.data(), k);
  return q;
}

std::vector<float> dequant_act(TensorType t, const std::vector<uint8_t>& q, int64_t k) {
  std::vector<float> out(static_cast<size_t>(k));
  switch (t) {
    case TensorType::F32:
      std::memcpy(out.data(), q.data(), k * 4);
      break;
    case TensorType::Q8_0:
      scalar::dequant_q8_0(q.data(), out.data(), k);
      break;
    case TensorType::Q8_1:
      scalar::dequant_q8_1(q.data(), out.data(), k);
      break;
    case TensorType::Q8_K:
      scalar::dequant_q8_k(q.data(), out.data(), k);
      break;
    default:
      ADD_FAILURE() << "unexpected activation type";
  }
  return out;
}

class KernelFormat : public testing::TestWithParam<FormatCase> {};
// Format x tier.
class KernelTier : public testing::TestWithParam<std::tuple<FormatCase, Isa>> {};
std::string tier_case_name(const testing::TestParamInfo<std::tuple<FormatCase, Isa>>& info) {
  return std::string(tensor_type_name(std::get<0>(info.param).type)) + "_" +
         isa_name(std::get<1>(info.param));
}

constexpr int64_t kK = 1024;  // multiple of 256
constexpr int64_t kRows = 8;

TEST_P(KernelTier, DequantizeMatchesScalar) {
  const auto& [c, tier] = GetParam();
  LLMT_REQUIRE_TIER(tier);
  const auto* s = type_kernels(c.type, Isa::kScalar);
  const auto* v = type_kernels(c.type, tier);
  ASSERT_TRUE(s && v);
  const auto w = random_weights(c, kRows, kK, 1);
  std::vector<float> a(kRows * kK), b(kRows * kK);
  s->dequantize_row(w.data(), a.data(), kRows * kK);
  v->dequantize_row(w.data(), b.data(), kRows * kK);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(a[i]), std::bit_cast<uint32_t>(b[i])) << "element " << i;
  }
}

TEST_P(KernelFormat, QuantizeRowVecRoundTrip) {
  const FormatCase& c = GetParam();
  for (Isa isa : all_runnable()) {
    const auto* tk = type_kernels(c.type, isa);
    ASSERT_TRUE(tk);
    auto x = random_floats(kK, 7);
    x[5] = 0.0f;
    std::fill(x.begin() + 256, x.begin() + 512, 0.0f);  // an all-zero block of every size
    const auto q = quantize_act(*tk, x);
    const auto y = dequant_act(tk->vec_dot_type, q, kK);
    const int bs =
        tk->vec_dot_type == TensorType::Q8_K ? 256 : (tk->vec_dot_type == TensorType::F32 ? 1 : 32);
    for (int64_t b0 = 0; b0 < kK; b0 += bs) {
      float amax = 0.0f;
      for (int j = 0; j < bs; ++j) amax = std::max(amax, std::fabs(x[b0 + j]));
      // Half a step of amax/127, plus the fp16 rounding of the scale (2^-11 relative, times 127).
      const float bound = bs == 1 ? 0.0f : amax / 127.0f * (0.5f + 127.0f * 0x1p-11f) * 1.0001f;
      for (int j = 0; j < bs; ++j) {
        ASSERT_LE(std::fabs(y[b0 + j] - x[b0 + j]), bound)
            << isa_name(isa) << " element " << b0 + j;
      }
    }
    if (tk->vec_dot_type == TensorType::Q8_1) {
      const auto* blocks = reinterpret_cast<const BlockQ8_1*>(q.data());
      for (int64_t b = 0; b < kK / 32; ++b) {
        int sum = 0;
        for (int j = 0; j < 32; ++j) sum += blocks[b].qs[j];
        EXPECT_NEAR(fp16_to_fp32(blocks[b].s), fp16_to_fp32(blocks[b].d) * sum,
                    std::fabs(fp16_to_fp32(blocks[b].d) * sum) * 2e-3 + 1e-6);
      }
    }
    if (tk->vec_dot_type == TensorType::Q8_K) {
      const auto* blocks = reinterpret_cast<const BlockQ8K*>(q.data());
      for (int64_t b = 0; b < kK / 256; ++b) {
        for (int g = 0; g < 16; ++g) {
          int sum = 0;
          for (int j = 0; j < 16; ++j) sum += blocks[b].qs[16 * g + j];
          ASSERT_EQ(blocks[b].bsums[g], sum);
        }
      }
    }
  }
  for (Isa isa : runnable_tiers()) {
    const auto x = random_floats(kK, 8);
    const auto qs = quantize_act(*type_kernels(c.type, Isa::kScalar), x);
    const auto qv = quantize_act(*type_kernels(c.type, isa), x);
    EXPECT_EQ(qs, qv) << isa_name(isa) << " activation quantization differs from scalar";
  }
}

// Sum of |w_i * x_i| and the fp64 dot.
std::pair<double, double> ref_dot(const std::vector<float>& w, const std::vector<float>& x,
                                  size_t off) {
  double dot = 0.0, mag = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    dot += static_cast<double>(w[off + i]) * x[i];
    mag += std::fabs(static_cast<double>(w[off + i]) * x[i]);
  }
  return {dot, mag};
}

TEST_P(KernelTier, VecDotAgainstReferenceAndScalar) {
  const auto& [c, tier] = GetParam();
  LLMT_REQUIRE_TIER(tier);
  const auto w = random_weights(c, kRows, kK, 3);
  const auto* s = type_kernels(c.type, Isa::kScalar);
  std::vector<float> wf(kRows * kK);
  s->dequantize_row(w.data(), wf.data(), kRows * kK);
  const size_t rb = row_bytes(c.type, kK);
  for (uint32_t seed = 10; seed < 14; ++seed) {
    const auto x = random_floats(kK, seed);
    const auto q = quantize_act(*s, x);
    const auto xd = dequant_act(s->vec_dot_type, q, kK);
    for (int64_t r = 0; r < kRows; ++r) {
      const auto [ref, mag] = ref_dot(wf, xd, r * kK);
      float got_s = 0.0f;
      s->vec_dot(kK, &got_s, w.data() + r * rb, q.data());
      EXPECT_LE(std::fabs(got_s - ref), c.tol_ref * mag) << "scalar row " << r << " ref " << ref;
      {
        const auto* v = type_kernels(c.type, tier);
        float got_v = 0.0f;
        v->vec_dot(kK, &got_v, w.data() + r * rb, quantize_act(*v, x).data());
        EXPECT_LE(std::fabs(got_v - got_s), c.tol_isa * mag) << isa_name(tier) << " row " << r;
        EXPECT_LE(std::fabs(got_v - ref), c.tol_ref * mag)
            << isa_name(tier) << " row " << r << " ref " << ref;
      }
    }
  }
}

// Runs the two matmul phases for nth simulated threads (sequentially, phase by phase); with
// kernels, the compute phase runs them (matmul_compute_with) instead of isa's.
std::vector<float> run_matmul(TensorType t, Isa isa, const std::vector<uint8_t>& w, int64_t n,
                              int64_t k, const std::vector<float>& x, int64_t m, int nth,
                              const MatmulKernels* kernels = nullptr) {
  std::vector<float> y(static_cast<size_t>(m * n), std::nanf(""));
  const size_t wb = matmul_work_bytes(t, m, k);
  std::vector<uint8_t> storage(wb + 64);
  void* work = storage.data() + (64 - reinterpret_cast<uintptr_t>(storage.data()) % 64) % 64;
  MatmulArgs a{t, w.data(), n, k, x.data(), m, y.data(), work, isa};
  for (int i = 0; i < nth; ++i) matmul_prepare(a, i, nth);
  for (int i = 0; i < nth; ++i) {
    if (kernels) {
      matmul_compute_with(a, *kernels, i, nth);
    } else {
      matmul_compute(a, i, nth);
    }
  }
  return y;
}

// Batch invariance for rows of kKm elements and up to kMaxM (>= 82) tokens, on tier isa or (with
// kernels) on those kernels over isa's activation quantization, named label in messages.
void check_batch_invariance(const FormatCase& c, Isa isa, int64_t kKm, int64_t kMaxM,
                            const MatmulKernels* kernels = nullptr) {
  const std::string label = kernels ? "vnni-twin" : isa_name(isa);
  constexpr int64_t kN = 37;  // not a multiple of the tile
  const auto w = random_weights(c, kN, kKm, 5);
  const auto x = random_floats(kMaxM * kKm, 6);
  {
    const auto* tk = kernels ? kernels->tk : type_kernels(c.type, isa);
    // Per-token reference: M = 1 on each row separately, checked against vec_dot.
    std::vector<float> ref(kMaxM * kN);
    for (int64_t t = 0; t < kMaxM; ++t) {
      std::vector<float> xt(x.begin() + t * kKm, x.begin() + (t + 1) * kKm);
      const auto y1 = run_matmul(c.type, isa, w, kN, kKm, xt, 1, 1, kernels);
      std::copy(y1.begin(), y1.end(), ref.begin() + t * kN);
      const auto q = quantize_act(*tk, xt);
      for (int64_t r = 0; r < kN; ++r) {
        float v = 0.0f;
        tk->vec_dot(kKm, &v, w.data() + r * row_bytes(c.type, kKm), q.data());
        ASSERT_EQ(std::bit_cast<uint32_t>(v), std::bit_cast<uint32_t>(y1[r]))
            << "vec_dot vs matmul";
      }
    }
    for (int64_t m : {1, 3, 4, 5, 8, 9, 16, 33, 70, 512}) {
      if (m > kMaxM) continue;
      for (int nth : {1, 2, 3}) {
        const auto y = run_matmul(c.type, isa, w, kN, kKm, x, m, nth, kernels);
        for (int64_t i = 0; i < m * kN; ++i) {
          ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(ref[i]))
              << label << " m=" << m << " nth=" << nth << " token " << i / kN << " row " << i % kN;
        }
      }
    }
    // Other neighbours: a window of tokens starting mid-tile.
    for (int64_t first : {3, 61}) {
      constexpr int64_t kWin = 21;
      const std::vector<float> xw(x.begin() + first * kKm, x.begin() + (first + kWin) * kKm);
      const auto y = run_matmul(c.type, isa, w, kN, kKm, xw, kWin, 2, kernels);
      for (int64_t i = 0; i < kWin * kN; ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(ref[first * kN + i]))
            << label << " window at " << first << " token " << i / kN << " row " << i % kN;
      }
    }
  }
}

void check_batch_invariance_all(const FormatCase& c, Isa isa,
                                const MatmulKernels* kernels = nullptr) {
  // 512 tokens cross matmul's 64-token block many times.
  check_batch_invariance(c, isa, 512, 512, kernels);
  // 25 blocks of 32: a partial group of 8 blocks in the 32-element formats' GEMM tiles.
  if (tensor_type_info(c.type)->block_size <= 32) check_batch_invariance(c, isa, 800, 96, kernels);
  // Float formats (GEMM tile 2 rows x 3 tokens, K walked in chunks): K = 803 has a partial last
  // chunk and a 3-element scalar tail; K = 13 is the scalar tail alone.
  // K = 816 and 47: the avx512 float tile's masked last step covering one half (16 elements)
  // or a half and a part (15 after a full 32-element step).
  if (tensor_type_info(c.type)->block_size == 1) {
    check_batch_invariance(c, isa, 803, 96, kernels);
    check_batch_invariance(c, isa, 13, 96, kernels);
    check_batch_invariance(c, isa, 816, 96, kernels);
    check_batch_invariance(c, isa, 47, 96, kernels);
  }
}

TEST_P(KernelFormat, MatmulBatchInvarianceScalar) {
  check_batch_invariance_all(GetParam(), Isa::kScalar);
}

// Whether tier i8mm runs exactly the neon tier's code for format t (no i8mm tile, the same table
// entries): its matmul tests would repeat the neon ones call for call.
bool i8mm_is_neon(TensorType t) {
#if defined(__aarch64__)
  const auto* a = type_kernels(t, Isa::kNeon);
  const auto* b = type_kernels(t, Isa::kI8mm);
  return i8mm_gemm_tile(t) == nullptr && a->vec_dot == b->vec_dot &&
         a->vec_dot_rows == b->vec_dot_rows && a->dequantize_row == b->dequantize_row &&
         a->quantize_row_vec == b->quantize_row_vec;
#else
  (void)t;
  return false;
#endif
}

TEST_P(KernelTier, MatmulBatchInvariance) {
  const auto& [c, tier] = GetParam();
  LLMT_REQUIRE_TIER(tier);
  if (tier == Isa::kI8mm && i8mm_is_neon(c.type)) {
    GTEST_SKIP() << "i8mm runs the neon tier's code for " << tensor_type_name(c.type)
                 << " (no i8mm tile): see " << tensor_type_name(c.type) << "_neon";
  }
  check_batch_invariance_all(c, tier);
}

// For the quantized formats the avxvnni and avx512 tiers keep the avx2 tier's float operations
// (kernels.h): matmul results of each and avx2 are bitwise equal for every M (wide tiles, 8-token
// tiles, gemv). The float formats have their own avx512 arithmetic (checked by (b), (d) and
// FloatVecDot instead; avxvnni's are avx2's).
class KernelUpperX86Tier : public KernelTier {};
TEST_P(KernelUpperX86Tier, MatmulEqualsAvx2Tier) {
  const auto& [c, tier] = GetParam();
  LLMT_REQUIRE_TIER(tier);
  constexpr int64_t kN = 45, kKm = 768;
  const auto w = random_weights(c, kN, kKm, 15);
  const auto x = random_floats(200 * kKm, 16);
  for (int64_t m : {1, 5, 16, 23, 64, 200}) {
    const auto a = run_matmul(c.type, Isa::kAvx2, w, kN, kKm, x, m, 2);
    const auto b = run_matmul(c.type, tier, w, kN, kKm, x, m, 2);
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)))
        << isa_name(tier) << " m=" << m;
  }
}

// The i8mm tier's GEMM tile keeps the neon tier's per-pair arithmetic (kernels.h): matmul results
// of the two are bitwise equal for every M (tiles for M >= 4 and the vec_dot_rows tails).
class KernelUpperArmTier : public KernelTier {};
TEST_P(KernelUpperArmTier, MatmulEqualsNeonTier) {
  const auto& [c, tier] = GetParam();
  LLMT_REQUIRE_TIER(tier);
  if (i8mm_is_neon(c.type)) {
    GTEST_SKIP() << "i8mm runs the neon tier's code for " << tensor_type_name(c.type)
                 << " (no i8mm tile)";
  }
  constexpr int64_t kN = 45, kKm = 768;
  const auto w = random_weights(c, kN, kKm, 15);
  const auto x = random_floats(70 * kKm, 16);
  for (int64_t m : {1, 5, 7, 16, 23, 70}) {
    const auto a = run_matmul(c.type, Isa::kNeon, w, kN, kKm, x, m, 2);
    const auto b = run_matmul(c.type, tier, w, kN, kKm, x, m, 2);
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)))
        << isa_name(tier) << " m=" << m;
  }
}

#if defined(__aarch64__)
// Tile output for nrows in {1, 2, 3, 7} (odd counts pair a row with itself), 1..8 tokens (matmul
// only hands it 4..8), several K: each value bitwise equal to the neon vec_dot, nothing written
// outside the nrows x ntok outputs.
void check_i8mm_tile(const FormatCase& c, GemmTileFn tile) {
  const auto* tk = type_kernels(c.type, Isa::kNeon);
  constexpr int64_t kN = 7;
  // 32 blocks of 32 (full groups of 8), one super-block, 25 blocks (a partial group).
  for (int64_t k : {1024, 256, 800}) {
    if (k % tensor_type_info(c.type)->block_size != 0) continue;
    const auto w = random_weights(c, kN, k, 21);
    const size_t rb = row_bytes(c.type, k);
    std::vector<std::vector<uint8_t>> q;
    for (int t = 0; t < kGemmTokens; ++t) q.push_back(quantize_act(*tk, random_floats(k, 30 + t)));
    const size_t xs = q[0].size();
    std::vector<uint8_t> xcat;
    for (const auto& r : q) xcat.insert(xcat.end(), r.begin(), r.end());
    for (int64_t nrows : {int64_t{1}, int64_t{2}, int64_t{3}, kN}) {
      for (int ntok = 1; ntok <= kGemmTokens; ++ntok) {
        constexpr int64_t kYs = kN + 1;  // one spare column per token row
        std::vector<float> y(kYs * kGemmTokens, -7.0f);
        tile(k, w.data(), rb, nrows, xcat.data(), xs, nullptr, y.data(), kYs, ntok);
        for (int t = 0; t < kGemmTokens; ++t) {
          for (int64_t r = 0; r < kYs; ++r) {
            const float got = y[t * kYs + r];
            if (t >= ntok || r >= nrows) {
              ASSERT_EQ(got, -7.0f) << "wrote outside the tile: token " << t << " row " << r;
              continue;
            }
            float want = 0.0f;
            tk->vec_dot(k, &want, w.data() + r * rb, q[t].data());
            ASSERT_EQ(std::bit_cast<uint32_t>(want), std::bit_cast<uint32_t>(got))
                << "k=" << k << " nrows=" << nrows << " ntok=" << ntok << " token " << t << " row "
                << r;
          }
        }
      }
    }
  }
}
#endif

// The i8mm GEMM tile called directly (see check_i8mm_tile).
TEST(KernelI8mm, TileEqualsVecDot) {
  LLMT_REQUIRE_TIER(Isa::kI8mm);
#if defined(__aarch64__)
  // The formats that must have an i8mm tile.
  const TensorType kTiled[] = {TensorType::Q8_0,   TensorType::Q4_0, TensorType::Q5_0,
                               TensorType::IQ4_NL, TensorType::Q4_K, TensorType::Q5_K,
                               TensorType::Q6_K};
  for (const FormatCase& c : format_cases()) {
    if (std::find(std::begin(kTiled), std::end(kTiled), c.type) == std::end(kTiled)) continue;
    SCOPED_TRACE(tensor_type_name(c.type));
    const GemmTileFn tile = i8mm_gemm_tile(c.type);
    ASSERT_NE(tile, nullptr);
    check_i8mm_tile(c, tile);
  }
#else
  FAIL() << "i8mm reported supported on a non-AArch64 build";
#endif
}

INSTANTIATE_TEST_SUITE_P(Formats, KernelFormat, testing::ValuesIn(format_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Tiers, KernelTier,
                         testing::Combine(testing::ValuesIn(format_cases()),
                                          testing::ValuesIn(kTestTiers)),
                         tier_case_name);
std::vector<FormatCase> quantized_format_cases() {
  std::vector<FormatCase> v;
  for (const auto& c : format_cases()) {
    if (tensor_type_info(c.type)->block_size > 1) v.push_back(c);
  }
  return v;
}
std::vector<FormatCase> float_format_cases() {
  std::vector<FormatCase> v;
  for (const auto& c : format_cases()) {
    if (tensor_type_info(c.type)->block_size == 1) v.push_back(c);
  }
  return v;
}

// Float weights (F32, F16, BF16) at awkward row lengths (around the 8/16/32-element steps and
// the tails): each tier's vec_dot and vec_dot_rows (1..4 rows) against the fp64 dot of the
// decoded weights, within (k + 1) u sum |w_i x_i| (u = 2^-24: the bound of any summation order
// of k fused or unfused products), and vec_dot_rows bitwise equal to vec_dot.
class FloatVecDot : public KernelTier {};
TEST_P(FloatVecDot, AwkwardLengthsWithinRoundingBound) {
  const auto& [c, tier] = GetParam();
  LLMT_REQUIRE_TIER(tier);
  const auto* tk = type_kernels(c.type, tier);
  const auto* s = type_kernels(c.type, Isa::kScalar);
  // Every SIMD tier has its own float kernels (the scalar tier has no vec_dot_rows).
  ASSERT_NE(tk->vec_dot_rows, nullptr) << isa_name(tier);
  ASSERT_NE(tk->vec_dot, s->vec_dot) << isa_name(tier) << " runs the scalar float vec_dot";
  for (const int64_t k : {1, 7, 8, 15, 16, 17, 31, 32, 33, 47, 48, 63, 100, 803}) {
    SCOPED_TRACE("k " + std::to_string(k));
    const auto w = random_weights(c, 1, k, 21);
    std::vector<float> wf(k);
    s->dequantize_row(w.data(), wf.data(), k);
    const auto x = random_floats(4 * k, 22);
    float rows[4];
    tk->vec_dot_rows(k, rows, 1, w.data(), x.data(), k * sizeof(float), 4);
    for (int t = 0; t < 4; ++t) {
      const std::vector<float> xt(x.begin() + t * k, x.begin() + (t + 1) * k);
      const auto [ref, mag] = ref_dot(wf, xt, 0);
      float got = 0.0f;
      tk->vec_dot(k, &got, w.data(), xt.data());
      ASSERT_LE(std::abs(got - ref), (k + 1) * 0x1p-24 * mag) << "row " << t;
      ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(rows[t])) << "row " << t;
    }
  }
}
INSTANTIATE_TEST_SUITE_P(Tiers, FloatVecDot,
                         testing::Combine(testing::ValuesIn(float_format_cases()),
                                          testing::ValuesIn(kTestTiers)),
                         tier_case_name);

INSTANTIATE_TEST_SUITE_P(Tiers, KernelUpperX86Tier,
                         testing::Combine(testing::ValuesIn(quantized_format_cases()),
                                          testing::Values(Isa::kAvxVnni, Isa::kAvx512, Isa::kAmx)),
                         tier_case_name);
INSTANTIATE_TEST_SUITE_P(Tiers, KernelUpperArmTier,
                         testing::Combine(testing::ValuesIn(format_cases()),
                                          testing::Values(Isa::kI8mm)),
                         tier_case_name);

// ---- (g) the EVEX twin of the avxvnni kernels ----

// The avxvnni tier's kernel source compiled with EVEX vpdpbusd (avx512_vnni256_*, the avx512
// tier's kernels below its wide tiles), assembled as dispatch and matmul assemble the avxvnni
// tier's: the avx2 TypeKernels with the twin's vec_dot / vec_dot_rows laid over them, and the
// twin's tile and gemv (no wide tile). Not copyable (kernels.tk points into it).
class TwinKernels {
 public:
  explicit TwinKernels(TensorType t) : tk_(*type_kernels(t, Isa::kAvx2)) {
#if defined(__x86_64__)
    const Avx2Entry e = avx512_vnni256_entry(t);
    integer_ = e.vec_dot && e.vec_dot_rows;
    if (integer_) {
      tk_.vec_dot = e.vec_dot;
      tk_.vec_dot_rows = e.vec_dot_rows;
    }
    kernels_ = {&tk_, avx512_vnni256_tile(t), avx512_vnni256_gemv(t), nullptr};
#endif
  }
  TwinKernels(const TwinKernels&) = delete;
  TwinKernels& operator=(const TwinKernels&) = delete;
  const TypeKernels& tk() const {
    return tk_;
  }
  const MatmulKernels& kernels() const {
    return kernels_;
  }
  // Whether the twin has its own dots for the format (every integer format).
  bool integer() const {
    return integer_;
  }

 private:
  TypeKernels tk_;
  MatmulKernels kernels_;
  bool integer_ = false;
};

bool float_format(TensorType t) {
  return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16;
}

// The twin runs the AVX-512 VNNI + VL instructions (it is the avx512 tier's code): the avx512
// tier's features, named in the skip.
#if defined(__x86_64__)
#define LLMT_REQUIRE_VNNI_TWIN() LLMT_REQUIRE_TIER(Isa::kAvx512)
#else
#define LLMT_REQUIRE_VNNI_TWIN() GTEST_SKIP() << "the EVEX twin of avxvnni is built on x86-64 only"
#endif

class KernelVnniTwin : public testing::TestWithParam<FormatCase> {};

TEST_P(KernelVnniTwin, VecDotMatchesScalarAndAvx2Bitwise) {
  const FormatCase& c = GetParam();
  LLMT_REQUIRE_VNNI_TWIN();
  const TwinKernels twin(c.type);
  // Every integer format has twin dots, and a tile where avx2 has one (a nullptr would test avx2
  // against itself).
  ASSERT_EQ(twin.integer(), !float_format(c.type)) << tensor_type_name(c.type);
  ASSERT_EQ(twin.kernels().tile != nullptr, matmul_kernels(c.type, Isa::kAvx2).tile != nullptr);
  ASSERT_EQ(twin.kernels().gemv != nullptr, matmul_kernels(c.type, Isa::kAvx2).gemv != nullptr);
  // The avx512 tier runs them for the integer formats (its vec_dot, tile and gemv).
  if (twin.integer()) {
    const MatmulKernels a5 = matmul_kernels(c.type, Isa::kAvx512);
    EXPECT_EQ(type_kernels(c.type, Isa::kAvx512)->vec_dot, twin.tk().vec_dot);
    EXPECT_EQ(type_kernels(c.type, Isa::kAvx512)->vec_dot_rows, twin.tk().vec_dot_rows);
    EXPECT_EQ(a5.tile, twin.kernels().tile);
    EXPECT_EQ(a5.gemv, twin.kernels().gemv);
  }
  const auto* s = type_kernels(c.type, Isa::kScalar);
  const auto* a2 = type_kernels(c.type, Isa::kAvx2);
  const auto w = random_weights(c, kRows, kK, 23);
  std::vector<float> wf(kRows * kK);
  s->dequantize_row(w.data(), wf.data(), kRows * kK);
  const size_t rb = row_bytes(c.type, kK);
  for (uint32_t seed = 30; seed < 34; ++seed) {
    // kMaxDotRows activation rows, one after another (for vec_dot_rows).
    std::vector<uint8_t> xs;
    std::vector<std::vector<float>> xds;
    for (int t = 0; t < kMaxDotRows; ++t) {
      const auto x = random_floats(kK, seed * 8 + t);
      const auto q = quantize_act(twin.tk(), x);
      ASSERT_EQ(q, quantize_act(*s, x)) << "activation quantization";
      xs.insert(xs.end(), q.begin(), q.end());
      xds.push_back(dequant_act(s->vec_dot_type, q, kK));
    }
    const size_t xrb = xs.size() / kMaxDotRows;
    for (int64_t r = 0; r < kRows; ++r) {
      const uint8_t* wr = w.data() + r * rb;
      for (int t = 0; t < kMaxDotRows; ++t) {
        const auto [ref, mag] = ref_dot(wf, xds[t], r * kK);
        float got_s = 0.0f, got_a = 0.0f, got_t = 0.0f;
        s->vec_dot(kK, &got_s, wr, xs.data() + t * xrb);
        a2->vec_dot(kK, &got_a, wr, xs.data() + t * xrb);
        twin.tk().vec_dot(kK, &got_t, wr, xs.data() + t * xrb);
        EXPECT_LE(std::fabs(got_t - got_s), c.tol_isa * mag) << "twin row " << r;
        EXPECT_LE(std::fabs(got_t - ref), c.tol_ref * mag) << "twin row " << r << " ref " << ref;
        ASSERT_EQ(std::bit_cast<uint32_t>(got_t), std::bit_cast<uint32_t>(got_a))
            << "twin vs avx2, row " << r << " token " << t;
      }
      for (int nx = 1; nx <= kMaxDotRows; ++nx) {
        std::vector<float> out(static_cast<size_t>(2 * nx), std::nanf(""));
        twin.tk().vec_dot_rows(kK, out.data(), 2, wr, xs.data(), xrb, nx);
        for (int t = 0; t < nx; ++t) {
          float one = 0.0f;
          twin.tk().vec_dot(kK, &one, wr, xs.data() + t * xrb);
          ASSERT_EQ(std::bit_cast<uint32_t>(out[2 * t]), std::bit_cast<uint32_t>(one))
              << "vec_dot_rows nx=" << nx << " token " << t;
        }
      }
    }
  }
}

// Extreme codes: every weight byte 0x00, 0x80 or 0xFF (the largest unsigned codes and scales of
// every format; Q8_0 -128 or -1; IQ4_NL -127), activations of equal magnitude (all 127 or -127
// after quantization, or alternating). The largest vpmaddubsw pair sums of the AVX2 path occur
// here: avx2 must still equal the exact integer sums, i.e. the twin (vpdpbusd never saturates)
// bitwise, and scalar within the usual bound.
class KernelVnniTwinInteger : public KernelVnniTwin {};
TEST_P(KernelVnniTwinInteger, ExtremeCodesEqualAvx2) {
  const FormatCase& c = GetParam();
  LLMT_REQUIRE_VNNI_TWIN();
  ASSERT_FALSE(float_format(c.type));
  const TwinKernels twin(c.type);
  const auto* s = type_kernels(c.type, Isa::kScalar);
  const auto* a2 = type_kernels(c.type, Isa::kAvx2);
  constexpr int64_t kN = 5, kKm = 512, kM = 8;
  const size_t rb = row_bytes(c.type, kKm);
  const auto info = *tensor_type_info(c.type);
  for (uint8_t fill : {0x00, 0x80, 0xFF}) {
    std::vector<uint8_t> w(rb * kN, fill);
    for (size_t blk = 0; blk < w.size() / info.block_bytes; ++blk) {
      for (int off : c.fp16_fields) {
        const uint16_t h = fp32_to_fp16(0.01f);
        std::memcpy(&w[blk * info.block_bytes + off], &h, 2);
      }
    }
    std::vector<float> wf(kN * kKm);
    s->dequantize_row(w.data(), wf.data(), kN * kKm);
    std::vector<float> x(kM * kKm);
    for (int64_t t = 0; t < kM; ++t) {
      for (int64_t i = 0; i < kKm; ++i) {
        const float v = t % 3 == 0 ? 1.0f : (t % 3 == 1 ? -1.0f : (i % 2 ? 1.0f : -1.0f));
        x[t * kKm + i] = v;
      }
    }
    // The 8-token tiles and the M = 1 path, twin against avx2.
    for (int64_t m : {int64_t{1}, kM}) {
      const auto ya = run_matmul(c.type, Isa::kAvx2, w, kN, kKm, x, m, 1);
      const auto yt = run_matmul(c.type, Isa::kAvx2, w, kN, kKm, x, m, 1, &twin.kernels());
      ASSERT_EQ(0, std::memcmp(ya.data(), yt.data(), ya.size() * sizeof(float)))
          << "fill " << int{fill} << " m=" << m;
    }
    for (int64_t t = 0; t < kM; ++t) {
      const std::vector<float> xt(x.begin() + t * kKm, x.begin() + (t + 1) * kKm);
      const auto q = quantize_act(*s, xt);
      const auto xd = dequant_act(s->vec_dot_type, q, kKm);
      for (int64_t r = 0; r < kN; ++r) {
        const auto [ref, mag] = ref_dot(wf, xd, r * kKm);
        float got_s = 0.0f, got_a = 0.0f, got_t = 0.0f;
        s->vec_dot(kKm, &got_s, w.data() + r * rb, q.data());
        a2->vec_dot(kKm, &got_a, w.data() + r * rb, q.data());
        twin.tk().vec_dot(kKm, &got_t, w.data() + r * rb, q.data());
        EXPECT_LE(std::fabs(got_a - got_s), c.tol_isa * mag + 1e-6)
            << "avx2, fill " << int{fill} << " token " << t << " row " << r;
        EXPECT_LE(std::fabs(got_t - got_s), c.tol_isa * mag + 1e-6)
            << "twin, fill " << int{fill} << " token " << t << " row " << r;
        ASSERT_EQ(std::bit_cast<uint32_t>(got_t), std::bit_cast<uint32_t>(got_a))
            << "fill " << int{fill} << " token " << t << " row " << r;
      }
    }
  }
}

// (d) for the twin through matmul's walk: every M and thread split bitwise equal to the twin's
// M = 1 results and to its vec_dot; and bitwise equal to the avx2 tier.
TEST_P(KernelVnniTwin, MatmulBatchInvarianceAndEqualsAvx2) {
  const FormatCase& c = GetParam();
  LLMT_REQUIRE_VNNI_TWIN();
  const TwinKernels twin(c.type);
  check_batch_invariance_all(c, Isa::kAvx2, &twin.kernels());
  constexpr int64_t kN = 45, kKm = 768;
  const auto w = random_weights(c, kN, kKm, 25);
  const auto x = random_floats(200 * kKm, 26);
  for (int64_t m : {1, 2, 3, 4, 5, 8, 9, 16, 23, 64, 200}) {
    for (int nth : {1, 2}) {
      const auto a = run_matmul(c.type, Isa::kAvx2, w, kN, kKm, x, m, nth);
      const auto b = run_matmul(c.type, Isa::kAvx2, w, kN, kKm, x, m, nth, &twin.kernels());
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)))
          << "m=" << m << " nth=" << nth;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, KernelVnniTwin, testing::ValuesIn(format_cases()), case_name);
// The integer formats (codes to push to their extremes).
std::vector<FormatCase> integer_format_cases() {
  std::vector<FormatCase> v;
  for (const auto& c : format_cases()) {
    if (!float_format(c.type)) v.push_back(c);
  }
  return v;
}
INSTANTIATE_TEST_SUITE_P(Formats, KernelVnniTwinInteger, testing::ValuesIn(integer_format_cases()),
                         case_name);

TEST(KernelDispatch, TablesAndIsa) {
  EXPECT_NE(isa_name(detect_isa()), nullptr);
  for (const auto& c : format_cases()) {
    for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvxVnni, Isa::kAvx512, Isa::kAmx, Isa::kNeon,
                    Isa::kI8mm}) {
      const auto* tk = type_kernels(c.type, isa);
      ASSERT_TRUE(tk) << tensor_type_name(c.type);
      EXPECT_EQ(tk->type, c.type);
      EXPECT_TRUE(tk->dequantize_row && tk->quantize_row_vec && tk->vec_dot);
    }
  }
  EXPECT_EQ(type_kernels(TensorType::IQ2_XXS, Isa::kScalar), nullptr);
  EXPECT_EQ(type_kernels(TensorType::Q8_K, Isa::kAvx2), nullptr);
}

// LLMT_ISA caps the tier; an unknown or other-architecture name is an error, never ignored.
TEST(KernelDispatch, IsaEnvironmentCap) {
  const char* old = std::getenv("LLMT_ISA");
  const std::string saved = old ? old : "";
  for (Isa isa :
       {Isa::kScalar, Isa::kAvx2, Isa::kAvxVnni, Isa::kAvx512, Isa::kAmx, Isa::kNeon, Isa::kI8mm}) {
    auto p = parse_isa(isa_name(isa));
    ASSERT_TRUE(p.is_ok());
    EXPECT_EQ(p.value(), isa);
  }
  EXPECT_FALSE(parse_isa("avx3").is_ok());
  EXPECT_FALSE(parse_isa("").is_ok());
  EXPECT_TRUE(isa_supported(Isa::kScalar));
  EXPECT_TRUE(isa_supported(best_isa()));
  ::unsetenv("LLMT_ISA");
  ASSERT_TRUE(select_isa().is_ok());
  EXPECT_EQ(select_isa().value(), best_isa());
  const auto tiers = arch_isas();
  for (size_t i = 0; i < tiers.size(); ++i) {
    ::setenv("LLMT_ISA", isa_name(tiers[i]), 1);
    auto r = select_isa();
    ASSERT_TRUE(r.is_ok()) << isa_name(tiers[i]);
    // The highest supported tier at or below the cap.
    Isa want = Isa::kScalar;
    for (size_t j = 0; j <= i; ++j) {
      if (isa_supported(tiers[j])) want = tiers[j];
    }
    EXPECT_EQ(r.value(), want) << "LLMT_ISA=" << isa_name(tiers[i]);
    EXPECT_TRUE(isa_supported(r.value()));
  }
  ::setenv("LLMT_ISA", "sse9", 1);
  auto bad = select_isa();
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("sse9"), std::string::npos) << bad.status().message();
  EXPECT_EQ(detect_isa(), best_isa());
#if defined(__x86_64__)
  ::setenv("LLMT_ISA", "neon", 1);
#else
  ::setenv("LLMT_ISA", "avx2", 1);
#endif
  EXPECT_FALSE(select_isa().is_ok());
  if (old) {
    ::setenv("LLMT_ISA", saved.c_str(), 1);
  } else {
    ::unsetenv("LLMT_ISA");
  }
}

// CPU feature detection against what the runner knows of its CPU: LLMT_TEST_EXPECT_TIER names
// the tier best_isa() must pick (CI sets it per qemu -cpu model: i8mm on max, neon on
// neoverse-n1, scalar on cortex-a53), and the tiers above it must be reported unsupported.
TEST(KernelDispatch, DetectedTierMatchesExpected) {
  const char* want = std::getenv("LLMT_TEST_EXPECT_TIER");
  if (!want || !*want) GTEST_SKIP() << "set LLMT_TEST_EXPECT_TIER to the tier this CPU should get";
  auto parsed = parse_isa(want);
  ASSERT_TRUE(parsed.is_ok()) << parsed.status().message();
  EXPECT_EQ(isa_name(best_isa()), std::string(want));
  bool above = false;
  for (Isa isa : arch_isas()) {
    if (above) {
      EXPECT_FALSE(isa_supported(isa)) << isa_name(isa);
    }
    if (isa == parsed.value()) above = true;
  }
  EXPECT_TRUE(above) << want << " is not a tier of this architecture";
}

// avxvnni is detected from CPUID directly (dispatch.cpp); GCC's runtime CPU model (which also
// checks the OS's ymm state) is an independent reading of the same bit. avxvnni needs avx2.
TEST(KernelDispatch, AvxVnniDetection) {
  if (isa_supported(Isa::kAvxVnni)) {
    EXPECT_TRUE(isa_supported(Isa::kAvx2));
  }
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
  __builtin_cpu_init();
  EXPECT_EQ(isa_supported(Isa::kAvxVnni),
            isa_supported(Isa::kAvx2) && __builtin_cpu_supports("avxvnni") != 0);
#endif
#if !defined(__x86_64__)
  EXPECT_FALSE(isa_supported(Isa::kAvxVnni));
#endif
}

TEST(KernelDispatch, InvalidShapesDoNotCrash) {
  std::vector<float> x(100, 1.0f), y(4, -1.0f);
  std::vector<uint8_t> w(1000);
  MatmulArgs a{TensorType::Q4_K, w.data(), 4, 100, x.data(), 1, y.data(), nullptr, Isa::kScalar};
  EXPECT_EQ(matmul_work_bytes(TensorType::Q4_K, 1, 100), 0u);
  matmul(a);  // K not a multiple of 256: no-op
  EXPECT_EQ(y[0], -1.0f);
}

// ---- real GGUF files: every format's file decodes to nearly the f16 file's values ----

std::vector<float> dequant_tensor(const GgufTensor& t, Isa isa) {
  std::vector<float> out(t.n_elements);
  const auto* tk = type_kernels(t.type, isa);
  if (!tk) return {};
  tk->dequantize_row(t.data, out.data(), static_cast<int64_t>(t.n_elements));
  return out;
}

TEST(KernelGguf, FormatsAgreeWithF16File) {
  LLMT_REQUIRE_DATA("models/synth/synth-tiny-f16.gguf");
  auto base = GgufFile::open(data_path("models/synth/synth-tiny-f16.gguf"));
  ASSERT_TRUE(base.is_ok());
  struct FileCase {
    const char* stem;
    double max_rel_rms;  // bound on ||q - f16|| / ||f16|| per tensor
  };
  const FileCase files[] = {{"bf16", 0.01}, {"q8_0", 0.02},  {"q6_k", 0.05},   {"q5_k_m", 0.1},
                            {"q5_0", 0.1},  {"q5_1", 0.1},   {"q4_k_m", 0.2},  {"q4_0", 0.2},
                            {"q4_1", 0.2},  {"iq4_nl", 0.2}, {"q3_k_m", 0.35}, {"q2_k", 0.6}};
  for (const auto& fc : files) {
    const std::string rel = std::string("models/synth/synth-tiny-") + fc.stem + ".gguf";
    ASSERT_TRUE(std::filesystem::exists(data_path(rel))) << rel;
    auto f = GgufFile::open(data_path(rel));
    ASSERT_TRUE(f.is_ok()) << rel;
    for (const auto& t : (*f)->tensors()) {
      const GgufTensor* b = (*base)->find_tensor(t.name);
      if (!b || b->n_elements != t.n_elements || t.type == b->type) continue;
      const auto* tk = type_kernels(t.type, Isa::kScalar);
      ASSERT_TRUE(tk) << rel << " " << t.name << " type " << tensor_type_name(t.type);
      const auto q = dequant_tensor(t, Isa::kScalar);
      const auto r = dequant_tensor(*b, Isa::kScalar);
      double err = 0.0, norm = 0.0;
      for (size_t i = 0; i < q.size(); ++i) {
        err += (static_cast<double>(q[i]) - r[i]) * (static_cast<double>(q[i]) - r[i]);
        norm += static_cast<double>(r[i]) * r[i];
      }
      const double rel_rms = std::sqrt(err / std::max(norm, 1e-30));
      EXPECT_LE(rel_rms, fc.max_rel_rms)
          << fc.stem << " " << t.name << " (" << tensor_type_name(t.type) << ")";
      if (std::getenv("LLMT_KERNEL_VERBOSE")) {
        std::printf("%-8s %-28s %-7s rel_rms %.5f\n", fc.stem, std::string(t.name).c_str(),
                    tensor_type_name(t.type), rel_rms);
      }
      for (Isa isa : runnable_tiers()) {
        const auto v = dequant_tensor(t, isa);
        ASSERT_EQ(0, std::memcmp(v.data(), q.data(), q.size() * sizeof(float)))
            << isa_name(isa) << " " << t.name;
      }
    }
  }
}

// ---- fp16 / bf16 ----

#if defined(__x86_64__)
__attribute__((target("f16c"))) uint16_t hw_fp32_to_fp16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float hw_fp16_to_fp32(uint16_t h) {
  return _cvtsh_ss(h);
}
#endif

TEST(Fp16, SpecialValues) {
  EXPECT_EQ(fp32_to_fp16(0.0f), 0x0000);
  EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(fp32_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(fp32_to_fp16(-2.0f), 0xC000);
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65519.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(INFINITY), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-INFINITY), 0xFC00);
  EXPECT_EQ(fp32_to_fp16(1e-8f), 0x0000);            // below half the smallest subnormal
  EXPECT_EQ(fp32_to_fp16(0x1p-24f), 0x0001);         // smallest subnormal
  EXPECT_EQ(fp32_to_fp16(0x1p-25f), 0x0000);         // tie rounds to even (zero)
  EXPECT_EQ(fp32_to_fp16(0x1.8p-24f), 0x0002);       // tie rounds to even (2)
  EXPECT_EQ(fp32_to_fp16(0x1p-14f), 0x0400);         // smallest normal
  EXPECT_EQ(fp32_to_fp16(0x1.ff8p-15f), 0x03FF);     // largest subnormal
  EXPECT_EQ(fp32_to_fp16(1.0f + 0x1p-11f), 0x3C00);  // tie to even
  EXPECT_EQ(fp32_to_fp16(1.0f + 0x1.8p-10f), 0x3C02);
  EXPECT_TRUE(std::isnan(fp16_to_fp32(fp32_to_fp16(NAN))));
  EXPECT_EQ(fp16_to_fp32(0x7C00), INFINITY);
  EXPECT_EQ(fp16_to_fp32(0x0001), 0x1p-24f);
  EXPECT_EQ(fp16_to_fp32(0x3555), 0x1.554p-2f);
  // Every finite fp16 survives a round trip.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF)) continue;  // NaN
    ASSERT_EQ(fp32_to_fp16(fp16_to_fp32(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

#if defined(__x86_64__)
TEST(Fp16, MatchesF16cHardware) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "no F16C";
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float a = fp16_to_fp32(static_cast<uint16_t>(h)),
                b = hw_fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(b)) {
      ASSERT_TRUE(std::isnan(a));
    } else {
      ASSERT_EQ(std::bit_cast<uint32_t>(a), std::bit_cast<uint32_t>(b)) << std::hex << h;
    }
  }
  std::mt19937 rng(42);
  for (int i = 0; i < 2000000; ++i) {
    // Random bit patterns concentrated on the fp16 range (exponents 100..150).
    uint32_t bits = rng();
    bits = (bits & 0x807FFFFFu) | ((100u + (rng() % 51)) << 23);
    const float f = std::bit_cast<float>(bits);
    ASSERT_EQ(fp32_to_fp16(f), hw_fp32_to_fp16(f)) << f;
  }
}
#endif  // __x86_64__

TEST(Bf16, SpecialValues) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(fp32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(fp32_to_bf16(INFINITY), 0x7F80);
  EXPECT_EQ(fp32_to_bf16(1.0f + 0x1p-8f), 0x3F80);    // tie to even
  EXPECT_EQ(fp32_to_bf16(1.0f + 0x1.8p-7f), 0x3F82);  // tie to even (up)
  EXPECT_EQ(fp32_to_bf16(3.4028235e38f), 0x7F80);     // rounds up to inf
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_fp32(0x4049), 3.140625f);
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7F80) == 0x7F80 && (h & 0x7F)) continue;
    ASSERT_EQ(fp32_to_bf16(bf16_to_fp32(static_cast<uint16_t>(h))), h);
  }
}

// ---- perf mode ----

TEST(KernelPerf, MatmulThroughput) {
  if (!perf_mode()) GTEST_SKIP() << "set LLMT_KERNEL_PERF=1 (or pass --perf) to run";
  int64_t n = 2048, k = 768;
  if (const char* nk = std::getenv("LLMT_KERNEL_PERF_NK")) std::sscanf(nk, "%ldx%ld", &n, &k);
  const Isa isa = detect_isa();
  std::printf("matmul %ldx%ld, isa %s, 1 thread\n", static_cast<long>(n), static_cast<long>(k),
              isa_name(isa));
  std::printf("%-8s %4s %10s %10s %10s\n", "format", "M", "ms", "GB/s(W)", "GOP/s");
  for (const auto& c : format_cases()) {
    const auto w = random_weights(c, n, k, 9);
    for (int64_t m : {1, 16, 64, 512}) {
      const auto x = random_floats(m * k, 10);
      std::vector<float> y(m * n);
      std::vector<uint8_t> work(matmul_work_bytes(c.type, m, k) + 64);
      MatmulArgs a{c.type, w.data(), n, k, x.data(), m, y.data(), work.data(), isa};
      matmul(a);  // warm up
      // Best of repeated runs (robust to other load on the machine).
      double per = 1e30, total = 0.0;
      do {
        const auto t0 = std::chrono::steady_clock::now();
        matmul(a);
        const double sec =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        per = std::min(per, sec);
        total += sec;
      } while (total < 0.3);
      std::printf("%-8s %4ld %10.3f %10.2f %10.2f\n", tensor_type_name(c.type),
                  static_cast<long>(m), per * 1e3, static_cast<double>(w.size()) / per / 1e9,
                  2.0 * m * n * k / per / 1e9);
    }
  }
}

// The EVEX twin of the avxvnni kernels against the avx2 tier (both 256-bit, one thread), the
// avxvnni speed-up as far as this machine shows it: per format and M, kRounds interleaved rounds
// (avx2, then twin), each the best of repeated runs over >= 0.1 s; prints the median of each and
// the ratio. Formats: LLMT_KERNEL_PERF_TYPES=q4_K,q6_K,... (default q4_K, q6_K, q8_0), matrix as
// MatmulThroughput (LLMT_KERNEL_PERF_NK).
TEST(KernelPerf, VnniTwinVsAvx2) {
  if (!perf_mode()) GTEST_SKIP() << "set LLMT_KERNEL_PERF=1 (or pass --perf) to run";
  LLMT_REQUIRE_VNNI_TWIN();
  int64_t n = 2048, k = 768;
  if (const char* nk = std::getenv("LLMT_KERNEL_PERF_NK")) std::sscanf(nk, "%ldx%ld", &n, &k);
  std::string types = "q4_K,q6_K,q8_0";
  if (const char* t = std::getenv("LLMT_KERNEL_PERF_TYPES")) types = t;
  constexpr int kRounds = 5;
  std::printf(
      "matmul %ldx%ld, avx2 vs vnni-twin (EVEX-256 vpdpbusd/vpdpwssd), 1 thread, median "
      "of %d interleaved rounds\n",
      static_cast<long>(n), static_cast<long>(k), kRounds);
  std::printf("%-8s %4s %12s %12s %8s\n", "format", "M", "avx2 ms", "twin ms", "speedup");
  for (const auto& c : format_cases()) {
    const std::string name = tensor_type_name(c.type);
    if (("," + types + ",").find("," + name + ",") == std::string::npos) continue;
    const TwinKernels twin(c.type);
    const MatmulKernels avx2 = matmul_kernels(c.type, Isa::kAvx2);
    const auto w = random_weights(c, n, k, 9);
    for (int64_t m : {1, 4, 8, 15, 64}) {
      const auto x = random_floats(m * k, 10);
      std::vector<float> y(m * n);
      std::vector<uint8_t> work(matmul_work_bytes(c.type, m, k) + 64);
      MatmulArgs a{c.type, w.data(), n, k, x.data(), m, y.data(), work.data(), Isa::kAvx2};
      auto best_of = [&](const MatmulKernels& kern) {
        matmul_prepare(a, 0, 1);
        matmul_compute_with(a, kern, 0, 1);  // warm up
        double per = 1e30, total = 0.0;
        do {
          const auto t0 = std::chrono::steady_clock::now();
          matmul_prepare(a, 0, 1);
          matmul_compute_with(a, kern, 0, 1);
          const double sec =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          per = std::min(per, sec);
          total += sec;
        } while (total < 0.1);
        return per;
      };
      std::vector<double> ta, tt;
      for (int r = 0; r < kRounds; ++r) {
        ta.push_back(best_of(avx2));
        tt.push_back(best_of(twin.kernels()));
      }
      std::sort(ta.begin(), ta.end());
      std::sort(tt.begin(), tt.end());
      const double ma = ta[kRounds / 2], mt = tt[kRounds / 2];
      std::printf("%-8s %4ld %12.4f %12.4f %8.3f\n", name.c_str(), static_cast<long>(m), ma * 1e3,
                  mt * 1e3, ma / mt);
    }
  }
}

}  // namespace
}  // namespace llmt::kernels
