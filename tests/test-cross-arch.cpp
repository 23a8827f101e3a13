// Cross-architecture bitwise contract: the neon and i8mm tiers (AArch64) compute the avx2 tier's
// (x86-64) float operations in the same order, for every matmul weight format and every ops
// table entry, so their results are bitwise equal (kernels.h, ops.h). One binary cannot run both
// architectures, so this test works in two runs over one file of digests (64-bit hashes of the
// output bits on fixed inputs):
//   LLMT_XARCH_WRITE=F   on x86-64 with AVX2: computes the avx2 and the scalar tiers' digests
//                        and writes them to F (reported as skipped: it compares nothing);
//   LLMT_XARCH_DIGESTS=F on AArch64 (under qemu in CI): computes the digests on every Arm SIMD
//                        tier the CPU has and compares them with F's avx2 ones, and the scalar
//                        tier's with F's scalar ones (the same scalar code on both).
// Without either it skips. CI runs the first after the x86 tests and the second under qemu.
// The inputs come from an integer generator (no libm, no std distributions), so both runs see
// the same bits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "llmthreads/tensor-type.h"

namespace llmt::kernels {
namespace {

// xorshift64: the same sequence on every platform.
struct Rng {
  uint64_t s;
  uint32_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<uint32_t>(s >> 32);
  }
  // Uniform in [lo, hi) from 24 random bits (exact float arithmetic).
  float uni(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>(next() >> 8) * 0x1p-24f;
  }
  std::vector<float> floats(int64_t n, float lo, float hi) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = uni(lo, hi);
    return v;
  }
};

// FNV-1a over bytes.
struct Digest {
  uint64_t h = 1469598103934665603ull;
  void add(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  template <typename T>
  void add(const std::vector<T>& v) {
    add(v.data(), v.size() * sizeof(T));
  }
};

using Digests = std::map<std::string, uint64_t>;

// Offsets of the fp16 scale fields in a block, set to small positive scales (random bytes
// elsewhere).
struct Format {
  TensorType type;
  std::vector<int> fp16_fields;
};
const std::vector<Format>& formats() {
  static const std::vector<Format> v = {
      {TensorType::F32, {}},        {TensorType::F16, {}},      {TensorType::BF16, {}},
      {TensorType::Q8_0, {0}},      {TensorType::Q4_0, {0}},    {TensorType::Q5_0, {0}},
      {TensorType::Q4_1, {0, 2}},   {TensorType::Q5_1, {0, 2}}, {TensorType::IQ4_NL, {0}},
      {TensorType::Q2_K, {80, 82}}, {TensorType::Q3_K, {108}},  {TensorType::Q4_K, {0, 2}},
      {TensorType::Q5_K, {0, 2}},   {TensorType::Q6_K, {208}},
  };
  return v;
}

std::vector<uint8_t> weights(const Format& f, int64_t n, int64_t k, Rng& rng) {
  const size_t rb = *tensor_row_bytes(f.type, k);
  std::vector<uint8_t> w(rb * static_cast<size_t>(n));
  if (f.type == TensorType::F32 || f.type == TensorType::F16 || f.type == TensorType::BF16) {
    const size_t es = f.type == TensorType::F32 ? 4 : 2;
    for (size_t i = 0; i < w.size() / es; ++i) {
      const float v = rng.uni(-1.0f, 1.0f);
      if (es == 4) {
        std::memcpy(&w[4 * i], &v, 4);
      } else {
        const uint16_t h = f.type == TensorType::F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
        std::memcpy(&w[2 * i], &h, 2);
      }
    }
    return w;
  }
  for (auto& b : w) b = static_cast<uint8_t>(rng.next());
  const size_t bb = tensor_type_info(f.type)->block_bytes;
  for (size_t blk = 0; blk < w.size() / bb; ++blk) {
    for (int off : f.fp16_fields) {
      const uint16_t h = fp32_to_fp16(rng.uni(0.001f, 0.02f));
      std::memcpy(&w[blk * bb + off], &h, 2);
    }
  }
  return w;
}

// Matmul of every format for M = 1 .. 70 (gemv, vec_dot_rows, the tiles and their tails).
void matmul_digests(Isa isa, Digests* out) {
  constexpr int64_t kN = 37, kK = 768;
  for (const Format& f : formats()) {
    Rng rng{0x9E3779B97F4A7C15ull + static_cast<uint64_t>(f.type)};
    const auto w = weights(f, kN, kK, rng);
    Digest d;
    for (int64_t m : {1, 3, 5, 8, 11, 16, 70}) {
      const auto x = rng.floats(m * kK, -2.0f, 2.0f);
      std::vector<float> y(static_cast<size_t>(m * kN));
      std::vector<uint8_t> work(matmul_work_bytes(f.type, m, kK) + 64);
      void* wp = work.data() + (64 - reinterpret_cast<uintptr_t>(work.data()) % 64) % 64;
      matmul({f.type, w.data(), kN, kK, x.data(), m, y.data(), wp, isa});
      d.add(y);
    }
    (*out)[std::string("matmul_") + tensor_type_name(f.type)] = d.h;
  }
}

// Every ops table entry: the elementwise ones over lengths with and without vector tails, the
// attention ones over contiguous, paged (shuffled blocks) and window layouts, f32 and f16.
void ops_digests(Isa isa, Digests* out) {
  const ops::OpsTable& t = ops::ops_table(isa);
  Digest dot, axpy, silu, gelu, gelu_mul, ln, f16;
  for (int64_t n : {1, 7, 8, 15, 17, 100, 1003, 4096}) {
    Rng rng{0xC0FFEEull + static_cast<uint64_t>(n)};
    const auto x = rng.floats(n, -8.0f, 8.0f), u = rng.floats(n, -2.0f, 2.0f);
    const auto w = rng.floats(n, -1.0f, 1.0f), b = rng.floats(n, -1.0f, 1.0f);
    const float dv = t.dot(x.data(), u.data(), n);
    dot.add(&dv, sizeof dv);
    auto y = u;
    t.axpy(0.37f, x.data(), y.data(), n);
    axpy.add(y);
    y = x;
    t.silu_mul(y.data(), u.data(), n);
    silu.add(y);
    y = x;
    t.gelu(y.data(), n);
    gelu.add(y);
    y = x;
    t.gelu_mul(y.data(), u.data(), n);
    gelu_mul.add(y);
    t.layer_norm(x.data(), w.data(), b.data(), y.data(), n, 1e-5f);
    ln.add(y);
    std::vector<uint16_t> h(static_cast<size_t>(n));
    const auto big = rng.floats(n, -70000.0f, 70000.0f);
    t.to_f16(big.data(), h.data(), n);
    f16.add(h);
  }
  (*out)["ops_dot"] = dot.h;
  (*out)["ops_axpy"] = axpy.h;
  (*out)["ops_silu_mul"] = silu.h;
  (*out)["ops_gelu"] = gelu.h;
  (*out)["ops_gelu_mul"] = gelu_mul.h;
  (*out)["ops_layer_norm"] = ln.h;
  (*out)["ops_to_f16"] = f16.h;

  Digest att, att16, paged, paged16, win, win16;
  constexpr int32_t kBlock = 16;
  for (int32_t hd : {64, 128}) {
    for (int32_t n_q : {1, 3}) {
      for (int32_t n_kv : {1, 9, 33, 130}) {
        Rng rng{0xABCDEFull + static_cast<uint64_t>(hd * 10000 + n_q * 1000 + n_kv)};
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
        const auto q = rng.floats(int64_t{n_q} * hd, -3.0f, 3.0f);
        const auto k = rng.floats(int64_t{n_kv} * hd, -2.0f, 2.0f);
        const auto v = rng.floats(int64_t{n_kv} * hd, -1.0f, 1.0f);
        std::vector<uint16_t> k16(k.size()), v16(v.size());
        t.to_f16(k.data(), k16.data(), static_cast<int64_t>(k.size()));
        t.to_f16(v.data(), v16.data(), static_cast<int64_t>(v.size()));
        std::vector<float> scores(static_cast<size_t>(n_q) * n_kv), o(q.size());
        t.attend(q.data(), n_q, k.data(), v.data(), n_kv, hd, scale, scores.data(), o.data());
        att.add(o);
        t.attend_f16(q.data(), n_q, k16.data(), v16.data(), n_kv, hd, scale, scores.data(),
                     o.data());
        att16.add(o);
        // Paged: the rows in blocks of kBlock, blocks stored in reverse order.
        const int32_t n_blocks = (n_kv + kBlock - 1) / kBlock;
        std::vector<int32_t> table(static_cast<size_t>(n_blocks));
        std::vector<float> kp(static_cast<size_t>(n_blocks) * kBlock * hd);
        std::vector<float> vp(kp.size());
        std::vector<uint16_t> kp16(kp.size()), vp16(kp.size());
        for (int32_t j = 0; j < n_kv; ++j) {
          const int32_t blk = n_blocks - 1 - j / kBlock;
          table[static_cast<size_t>(j / kBlock)] = blk;
          const size_t dst = (static_cast<size_t>(blk) * kBlock + j % kBlock) * hd;
          std::memcpy(&kp[dst], &k[static_cast<size_t>(j) * hd], hd * sizeof(float));
          std::memcpy(&vp[dst], &v[static_cast<size_t>(j) * hd], hd * sizeof(float));
          std::memcpy(&kp16[dst], &k16[static_cast<size_t>(j) * hd], hd * sizeof(uint16_t));
          std::memcpy(&vp16[dst], &v16[static_cast<size_t>(j) * hd], hd * sizeof(uint16_t));
        }
        const size_t stride32 = size_t{kBlock} * hd * sizeof(float);
        const size_t stride16 = size_t{kBlock} * hd * sizeof(uint16_t);
        t.attend_paged(q.data(), n_q, kp.data(), vp.data(), table.data(), stride32, kBlock, n_kv,
                       hd, scale, scores.data(), o.data());
        paged.add(o);
        t.attend_paged_f16(q.data(), n_q, kp16.data(), vp16.data(), table.data(), stride16, kBlock,
                           n_kv, hd, scale, scores.data(), o.data());
        paged16.add(o);
        const int32_t p0 = n_kv / 3;
        t.attend_window(q.data(), n_q, kp.data(), vp.data(), table.data(), stride32, kBlock, p0,
                        n_kv, hd, scale, scores.data(), o.data());
        win.add(o);
        t.attend_window_f16(q.data(), n_q, kp16.data(), vp16.data(), table.data(), stride16, kBlock,
                            p0, n_kv, hd, scale, scores.data(), o.data());
        win16.add(o);
      }
    }
  }
  (*out)["ops_attend"] = att.h;
  (*out)["ops_attend_f16"] = att16.h;
  (*out)["ops_attend_paged"] = paged.h;
  (*out)["ops_attend_paged_f16"] = paged16.h;
  (*out)["ops_attend_window"] = win.h;
  (*out)["ops_attend_window_f16"] = win16.h;
}

Digests all_digests(Isa isa) {
  Digests d;
  matmul_digests(isa, &d);
  ops_digests(isa, &d);
  return d;
}

// The digests of the written file: the avx2 tier's under "avx2/", the scalar tier's (the same
// scalar code on both architectures) under "scalar/".
Digests written_digests() {
  Digests d;
  for (const auto& [name, h] : all_digests(Isa::kAvx2)) d["avx2/" + name] = h;
  for (const auto& [name, h] : all_digests(Isa::kScalar)) d["scalar/" + name] = h;
  return d;
}

// Compares the digests got on tier isa with the file's entries under prefix.
void expect_digests(Isa isa, const Digests& got, const std::string& prefix, const Digests& want) {
  for (const auto& [name, h] : got) {
    const auto it = want.find(prefix + name);
    ASSERT_NE(it, want.end()) << prefix + name << " is not in the file";
    EXPECT_EQ(h, it->second) << name << " on " << isa_name(isa) << " differs from " << prefix;
  }
}

TEST(KernelCrossArch, Avx2AndNeonDigestsAgree) {
  if (const char* path = std::getenv("LLMT_XARCH_WRITE"); path && *path) {
    if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "tier avx2 is not available on this CPU/build";
    std::ofstream f(path);
    ASSERT_TRUE(f) << "cannot write " << path;
    for (const auto& [name, h] : written_digests()) f << name << ' ' << h << '\n';
    f.close();
    ASSERT_TRUE(f) << "writing " << path << " failed";
    GTEST_SKIP() << "wrote the avx2 and scalar digests to " << path << " (compared on AArch64)";
  }
  const char* path = std::getenv("LLMT_XARCH_DIGESTS");
  if (!path || !*path) {
    GTEST_SKIP() << "set LLMT_XARCH_WRITE (x86-64) or LLMT_XARCH_DIGESTS (AArch64)";
  }
  std::ifstream f(path);
  ASSERT_TRUE(f) << "cannot read " << path;
  Digests want;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream ls(line);
    std::string name;
    uint64_t h = 0;
    ASSERT_TRUE(ls >> name >> h) << "bad line in " << path << ": " << line;
    want[name] = h;
  }
  const Digests scalar = all_digests(Isa::kScalar);
  ASSERT_EQ(want.size(), 2 * scalar.size()) << "digest names differ";
  expect_digests(Isa::kScalar, scalar, "scalar/", want);
  int n_tiers = 0;
  for (Isa isa : {Isa::kNeon, Isa::kI8mm}) {
    if (!isa_supported(isa)) continue;
    ++n_tiers;
    expect_digests(isa, all_digests(isa), "avx2/", want);
  }
  if (n_tiers == 0) GTEST_SKIP() << "tiers neon and i8mm are not available on this CPU/build";
}

}  // namespace
}  // namespace llmt::kernels
