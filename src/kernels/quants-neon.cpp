// AArch64 NEON + dotprod (sdot) dot products of Q4_K, Q5_K, Q6_K (x Q8_K) and Q8_0, Q4_0 (x Q8_0)
// weights; only called for tier kNeon. Quantizers and dequantizers stay scalar (the AVX2 ones
// are byte-identical to them anyway).
//
// Per-pair arithmetic: the exact integer block sums (sdot, then integer multiply-adds by the
// block scales: exact in any order) feed the same float operations in the same order as the
// AVX2 kernels (gemm-k-avx2.cpp, gemm-q8-avx2.cpp), so neon results equal the avx2 tier's
// bitwise:
//   k-quants: per super-block acc = fma(d * dx, float(isum), acc) (and accm with dmin and the
//   min sum for Q4_K/Q5_K); result acc - accm (or acc).
//   Q8_0/Q4_0: blocks in groups of 8 lanes, lane j: acc_j = fma(dw_j * dx_j, float(isum_j),
//   acc_j); result ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
// vec_dot_rows is vec_dot per token (the bitwise contract trivially holds).
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "kernels/quant-blocks.h"

namespace llmt::kernels {

namespace {

inline float h2f(uint16_t h) {
  return fp16_to_fp32(h);
}

// ---------------------------------------------------------------- Q4_K / Q5_K

template <bool kFive>
void dot_q45_k(int64_t n, float* out, const void* w, const void* x) {
  const auto* xb = static_cast<const BlockQ8K*>(x);
  const uint8x16_t m4 = vdupq_n_u8(0x0F);
  const uint8x16_t bit = vdupq_n_u8(0x10);
  float acc = 0.0f, accm = 0.0f;
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* scales;
    const uint8_t* qs;
    const uint8_t* qh = nullptr;
    uint16_t d, dmin;
    if constexpr (kFive) {
      const auto& b = static_cast<const BlockQ5K*>(w)[i];
      scales = b.scales, qs = b.qs, qh = b.qh, d = b.d, dmin = b.dmin;
    } else {
      const auto& b = static_cast<const BlockQ4K*>(w)[i];
      scales = b.scales, qs = b.qs, d = b.d, dmin = b.dmin;
    }
    uint8_t sc[8], mn[8];
    k4_scales_mins(scales, sc, mn);
    const int8_t* y = xb[i].qs;
    int32x4_t isum = vdupq_n_s32(0);
    uint8x16_t h0 = vdupq_n_u8(0), h1 = vdupq_n_u8(0);
    if constexpr (kFive) h0 = vld1q_u8(qh), h1 = vld1q_u8(qh + 16);
    for (int j = 0; j < 4; ++j) {
      const uint8x16_t q0 = vld1q_u8(qs + 32 * j), q1 = vld1q_u8(qs + 32 * j + 16);
      uint8x16_t lo0 = vandq_u8(q0, m4), lo1 = vandq_u8(q1, m4);
      uint8x16_t hi0 = vshrq_n_u8(q0, 4), hi1 = vshrq_n_u8(q1, 4);
      if constexpr (kFive) {
        // Bit 2j of qh byte l -> bit 4 of element 64j + l, bit 2j + 1 -> element 64j + 32 + l.
        lo0 =
            vorrq_u8(lo0, vandq_u8(vshlq_u8(h0, vdupq_n_s8(static_cast<int8_t>(4 - 2 * j))), bit));
        lo1 =
            vorrq_u8(lo1, vandq_u8(vshlq_u8(h1, vdupq_n_s8(static_cast<int8_t>(4 - 2 * j))), bit));
        hi0 =
            vorrq_u8(hi0, vandq_u8(vshlq_u8(h0, vdupq_n_s8(static_cast<int8_t>(3 - 2 * j))), bit));
        hi1 =
            vorrq_u8(hi1, vandq_u8(vshlq_u8(h1, vdupq_n_s8(static_cast<int8_t>(3 - 2 * j))), bit));
      }
      int32x4_t dl = vdotq_s32(vdupq_n_s32(0), vreinterpretq_s8_u8(lo0), vld1q_s8(y + 64 * j));
      dl = vdotq_s32(dl, vreinterpretq_s8_u8(lo1), vld1q_s8(y + 64 * j + 16));
      int32x4_t dh = vdotq_s32(vdupq_n_s32(0), vreinterpretq_s8_u8(hi0), vld1q_s8(y + 64 * j + 32));
      dh = vdotq_s32(dh, vreinterpretq_s8_u8(hi1), vld1q_s8(y + 64 * j + 48));
      isum = vmlaq_n_s32(isum, dl, sc[2 * j]);
      isum = vmlaq_n_s32(isum, dh, sc[2 * j + 1]);
    }
    int32_t imin = 0;
    for (int s = 0; s < 8; ++s) imin += mn[s] * (xb[i].bsums[2 * s] + xb[i].bsums[2 * s + 1]);
    const float dx = xb[i].d;
    acc = std::fma(h2f(d) * dx, static_cast<float>(vaddvq_s32(isum)), acc);
    accm = std::fma(h2f(dmin) * dx, static_cast<float>(imin), accm);
  }
  *out = acc - accm;
}

// ---------------------------------------------------------------- Q6_K

void dot_q6_k(int64_t n, float* out, const void* w, const void* x) {
  const auto* wb = static_cast<const BlockQ6K*>(w);
  const auto* xb = static_cast<const BlockQ8K*>(x);
  const uint8x16_t m4 = vdupq_n_u8(0x0F), m3 = vdupq_n_u8(0x03);
  const int8x16_t off = vdupq_n_s8(32);
  float acc = 0.0f;
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const BlockQ6K& b = wb[i];
    int32x4_t isum = vdupq_n_s32(0);
    // Element 128h + 32 run + l: low 4 bits from ql[64h + 32 (run & 1) + l] (low nibble for runs
    // 0, 1; high for 2, 3), high 2 bits from qh[32h + l] >> 2 run; group (16) = element / 16.
    for (int h = 0; h < 2; ++h) {
      for (int half = 0; half < 2; ++half) {  // l in [16 half, 16 half + 16)
        const uint8x16_t l0 = vld1q_u8(b.ql + 64 * h + 16 * half);
        const uint8x16_t l1 = vld1q_u8(b.ql + 64 * h + 32 + 16 * half);
        const uint8x16_t qh = vld1q_u8(b.qh + 32 * h + 16 * half);
        const uint8x16_t lows[4] = {vandq_u8(l0, m4), vandq_u8(l1, m4), vshrq_n_u8(l0, 4),
                                    vshrq_n_u8(l1, 4)};
        const uint8x16_t highs[4] = {vandq_u8(qh, m3), vandq_u8(vshrq_n_u8(qh, 2), m3),
                                     vandq_u8(vshrq_n_u8(qh, 4), m3), vshrq_n_u8(qh, 6)};
        for (int run = 0; run < 4; ++run) {
          const int8x16_t code =
              vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lows[run], vshlq_n_u8(highs[run], 4))), off);
          const int e = 128 * h + 32 * run + 16 * half;
          const int32x4_t dp = vdotq_s32(vdupq_n_s32(0), code, vld1q_s8(xb[i].qs + e));
          isum = vmlaq_n_s32(isum, dp, b.scales[e / 16]);
        }
      }
    }
    acc = std::fma(h2f(b.d) * xb[i].d, static_cast<float>(vaddvq_s32(isum)), acc);
  }
  *out = acc;
}

// ---------------------------------------------------------------- Q8_0 / Q4_0

// Signed codes of a block (two 16-byte halves in element order).
struct Q80 {
  using Block = BlockQ8_0;
  static void codes(const Block& b, int8x16_t* c0, int8x16_t* c1) {
    *c0 = vld1q_s8(b.qs);
    *c1 = vld1q_s8(b.qs + 16);
  }
};
struct Q40 {
  using Block = BlockQ4_0;
  static void codes(const Block& b, int8x16_t* c0, int8x16_t* c1) {
    const uint8x16_t q = vld1q_u8(b.qs);
    *c0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), vdupq_n_s8(8));
    *c1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), vdupq_n_s8(8));
  }
};

template <class P>
void dot_blocks(int64_t n, float* out, const void* w, const void* x) {
  const auto* wb = static_cast<const typename P::Block*>(w);
  const auto* xb = static_cast<const BlockQ8_0*>(x);
  const int64_t nb = n / kQK;
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t g = 0; g < nb; g += 8) {
    const int cnt = static_cast<int>(nb - g < 8 ? nb - g : 8);
    for (int j = 0; j < cnt; ++j) {
      int8x16_t c0, c1;
      P::codes(wb[g + j], &c0, &c1);
      int32x4_t dp = vdotq_s32(vdupq_n_s32(0), c0, vld1q_s8(xb[g + j].qs));
      dp = vdotq_s32(dp, c1, vld1q_s8(xb[g + j].qs + 16));
      acc[j] =
          std::fma(h2f(wb[g + j].d) * h2f(xb[g + j].d), static_cast<float>(vaddvq_s32(dp)), acc[j]);
    }
    // Padding lanes of a partial group add fma(0, 0, acc) = acc: nothing to do.
  }
  *out = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

template <void (*Dot)(int64_t, float*, const void*, const void*)>
void dot_rows_loop(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs,
                   int nx) {
  for (int t = 0; t < nx; ++t) Dot(n, out + t * os, w, static_cast<const uint8_t*>(x) + t * xs);
}

}  // namespace

Avx2Entry neon_entry(TensorType t) {
  switch (t) {
    case TensorType::Q4_K:
      return {nullptr, nullptr, dot_q45_k<false>, dot_rows_loop<dot_q45_k<false>>};
    case TensorType::Q5_K:
      return {nullptr, nullptr, dot_q45_k<true>, dot_rows_loop<dot_q45_k<true>>};
    case TensorType::Q6_K:
      return {nullptr, nullptr, dot_q6_k, dot_rows_loop<dot_q6_k>};
    case TensorType::Q8_0:
      return {nullptr, nullptr, dot_blocks<Q80>, dot_rows_loop<dot_blocks<Q80>>};
    case TensorType::Q4_0:
      return {nullptr, nullptr, dot_blocks<Q40>, dot_rows_loop<dot_blocks<Q40>>};
    default:
      break;
  }
  return {nullptr, nullptr, nullptr, nullptr};
}

}  // namespace llmt::kernels
