// AArch64 NEON + dotprod (sdot) dot products of the 32-element block formats: Q8_0, Q4_0, Q5_0,
// IQ4_NL (x Q8_0) and Q4_1, Q5_1 (x Q8_1); the k-quants are in quants-k-neon.cpp. Only called for
// tiers kNeon and up. Quantizers and dequantizers stay scalar (the AVX2 ones are byte-identical to
// them anyway).
//
// vec_dot_rows runs up to kMaxDotRows tokens against one weight row per pass (each weight block
// decoded once for all of them); vec_dot is its one-token instance.
//
// Per-pair arithmetic (the batch-invariance contract): the exact integer block sums (sdot: exact
// in any order) feed the same float operations in the same order as the AVX2 kernels
// (gemm-q8-avx2.cpp, quants-avx2.cpp), so neon results equal the avx2 tier's bitwise:
//   Q8_0/Q4_0/Q5_0/IQ4_NL: blocks in groups of 8 lanes, lane j: acc_j = fma(dw_j * dx_j,
//   float(isum_j), acc_j); result ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
//   Q4_1/Q5_1: per block, lane l (0..7) of the 8 int32 partial sums of elements 4l..4l+3 is
//   accumulated as acc[i & 1]_l = fma(dw * dx, float(p_l), acc[i & 1]_l) (even / odd blocks);
//   the min term as accm = fma(m, s, accm); result hsum8(acc[0] + acc[1]) + accm.
#include <cmath>

#include "kernels/neon-util.h"

namespace llmt::kernels {

namespace {

using neon::fp16x4;
using neon::hsum4x4;
using neon::hsum8;

inline float h2f(uint16_t h) {
  return fp16_to_fp32(h);
}

// ---------------------------------------------------------------- Q8_0 / Q4_0 / Q5_0 / IQ4_NL

// NT tokens x one weight row of P (a neon::Codes* policy) x Q8_0 activations.
template <class P>
struct Blocks8 {
  template <int NT>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    const auto* wb = static_cast<const typename P::Block*>(w);
    const BlockQ8_0* xb[NT];
    float32x4_t acc_lo[NT], acc_hi[NT];  // lanes 0..3 and 4..7 of the group accumulator
    for (int t = 0; t < NT; ++t) {
      xb[t] = row_at<BlockQ8_0>(x, xs, t);
      acc_lo[t] = acc_hi[t] = vdupq_n_f32(0.0f);
    }
    const int64_t nb = n / kQK;
    for (int64_t g = 0; g < nb; g += 8) {
      const int cnt = static_cast<int>(nb - g < 8 ? nb - g : 8);
      int32x4_t dp[NT][8];
      uint16_t dw16[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int j = 0; j < 8; ++j) {
        if (j >= cnt) {
          for (int t = 0; t < NT; ++t) dp[t][j] = vdupq_n_s32(0);
          continue;
        }
        int8x16_t c0, c1;
        P::codes(wb[g + j], &c0, &c1);
        dw16[j] = wb[g + j].d;
        for (int t = 0; t < NT; ++t) {
          const int8_t* y = xb[t][g + j].qs;
          dp[t][j] = vdotq_s32(vdotq_s32(vdupq_n_s32(0), c0, vld1q_s8(y)), c1, vld1q_s8(y + 16));
        }
      }
      // Padding lanes: dw = 0 and isum = 0, so fma leaves acc unchanged.
      const float32x4_t dw_lo = fp16x4(dw16[0], dw16[1], dw16[2], dw16[3]);
      const float32x4_t dw_hi = fp16x4(dw16[4], dw16[5], dw16[6], dw16[7]);
      for (int t = 0; t < NT; ++t) {
        uint16_t dx16[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int j = 0; j < cnt; ++j) dx16[j] = xb[t][g + j].d;
        const float32x4_t s_lo = vmulq_f32(dw_lo, fp16x4(dx16[0], dx16[1], dx16[2], dx16[3]));
        const float32x4_t s_hi = vmulq_f32(dw_hi, fp16x4(dx16[4], dx16[5], dx16[6], dx16[7]));
        const int32x4_t i_lo = hsum4x4(dp[t][0], dp[t][1], dp[t][2], dp[t][3]);
        const int32x4_t i_hi = hsum4x4(dp[t][4], dp[t][5], dp[t][6], dp[t][7]);
        acc_lo[t] = vfmaq_f32(acc_lo[t], s_lo, vcvtq_f32_s32(i_lo));
        acc_hi[t] = vfmaq_f32(acc_hi[t], s_hi, vcvtq_f32_s32(i_hi));
      }
    }
    for (int t = 0; t < NT; ++t) out[t * os] = hsum8(acc_lo[t], acc_hi[t]);
  }
};

// ---------------------------------------------------------------- Q4_1 / Q5_1

// Unsigned codes (0..31, as int8) of a Q4_1 / Q5_1 block, element order.
struct CodesQ4_1 {
  using Block = BlockQ4_1;
  static void codes(const Block& b, int8x16_t* c0, int8x16_t* c1) {
    const uint8x16_t q = vld1q_u8(b.qs);
    *c0 = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F)));
    *c1 = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
  }
};
struct CodesQ5_1 {
  using Block = BlockQ5_1;
  static void codes(const Block& b, int8x16_t* c0, int8x16_t* c1) {
    const uint8x16_t q = vld1q_u8(b.qs);
    *c0 = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, vdupq_n_u8(0x0F)), neon::bits_to_0x10(b.qh)));
    *c1 = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q, 4), neon::bits_to_0x10(b.qh + 2)));
  }
};

template <class P>
struct BlocksMin {
  template <int NT>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    const auto* wb = static_cast<const typename P::Block*>(w);
    const BlockQ8_1* xb[NT];
    float32x4_t acc[NT][2][2];  // [token][block parity][lanes 0..3, 4..7]
    float accm[NT];
    for (int t = 0; t < NT; ++t) {
      xb[t] = row_at<BlockQ8_1>(x, xs, t);
      acc[t][0][0] = acc[t][0][1] = acc[t][1][0] = acc[t][1][1] = vdupq_n_f32(0.0f);
      accm[t] = 0.0f;
    }
    for (int64_t i = 0; i < n / kQK; ++i) {
      int8x16_t c0, c1;
      P::codes(wb[i], &c0, &c1);
      const float dw = h2f(wb[i].d), mw = h2f(wb[i].m);
      for (int t = 0; t < NT; ++t) {
        const BlockQ8_1& y = xb[t][i];
        const int32x4_t p_lo = vdotq_s32(vdupq_n_s32(0), c0, vld1q_s8(y.qs));
        const int32x4_t p_hi = vdotq_s32(vdupq_n_s32(0), c1, vld1q_s8(y.qs + 16));
        const float32x4_t s = vdupq_n_f32(dw * h2f(y.d));
        float32x4_t* a = acc[t][i & 1];
        a[0] = vfmaq_f32(a[0], s, vcvtq_f32_s32(p_lo));
        a[1] = vfmaq_f32(a[1], s, vcvtq_f32_s32(p_hi));
        accm[t] = std::fma(mw, h2f(y.s), accm[t]);
      }
    }
    for (int t = 0; t < NT; ++t) {
      out[t * os] =
          hsum8(vaddq_f32(acc[t][0][0], acc[t][1][0]), vaddq_f32(acc[t][0][1], acc[t][1][1])) +
          accm[t];
    }
  }
};

}  // namespace

Avx2Entry neon_entry(TensorType t) {
  using neon::entry_of;
  switch (t) {
    case TensorType::Q8_0:
      return entry_of<Blocks8<neon::CodesQ8_0>>();
    case TensorType::Q4_0:
      return entry_of<Blocks8<neon::CodesQ4_0>>();
    case TensorType::Q5_0:
      return entry_of<Blocks8<neon::CodesQ5_0>>();
    case TensorType::IQ4_NL:
      return entry_of<Blocks8<neon::CodesIq4Nl>>();
    case TensorType::Q4_1:
      return entry_of<BlocksMin<CodesQ4_1>>();
    case TensorType::Q5_1:
      return entry_of<BlocksMin<CodesQ5_1>>();
    case TensorType::F32:
    case TensorType::F16:
    case TensorType::BF16:
      return neon_entry_float(t);
    default:
      break;
  }
  return neon_entry_k(t);
}

}  // namespace llmt::kernels
