// AArch64 NEON + dotprod (sdot) dot products of the k-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (x Q8_K
// activations); only called for tiers kNeon and up. vec_dot_rows runs up to kMaxDotRows tokens
// against one weight row per pass (each super-block decoded once for all of them); vec_dot is its
// one-token instance.
//
// Per-pair arithmetic (the batch-invariance contract): for each super-block i the exact integer
// dot isum_i (and, for the formats with mins, imin_i = sum over sub-blocks of min * the token's
// q8 sum there) is computed in int32 by any means, then
//   acc  = fma(d_i * dx_i, float(isum_i), acc)         (acc, accm start at +0.0f)
//   accm = fma(dmin_i * dx_i, float(imin_i), accm)     (Q2_K, Q4_K, Q5_K)
// result acc - accm (or acc for Q3_K, Q6_K): the float operations of the AVX2 kernels
// (gemm-k-avx2.cpp), so neon results equal the avx2 tier's bitwise.
#include <cmath>

#include "kernels/neon-util.h"

namespace llmt::kernels {

namespace {

inline float h2f(uint16_t h) {
  return fp16_to_fp32(h);
}

inline int32x4_t sdot(int32x4_t acc, uint8x16_t codes, const int8_t* y) {
  return vdotq_s32(acc, vreinterpretq_s8_u8(codes), vld1q_s8(y));
}

// sum_g m16[g] * bsums[g] over the 16 groups of 16 (exact).
inline int32_t min_dot16(int16x8_t m_lo, int16x8_t m_hi, const int16_t* bsums) {
  const int16x8_t b0 = vld1q_s16(bsums), b1 = vld1q_s16(bsums + 8);
  int32x4_t p = vmull_s16(vget_low_s16(m_lo), vget_low_s16(b0));
  p = vmlal_s16(p, vget_high_s16(m_lo), vget_high_s16(b0));
  p = vmlal_s16(p, vget_low_s16(m_hi), vget_low_s16(b1));
  p = vmlal_s16(p, vget_high_s16(m_hi), vget_high_s16(b1));
  return vaddvq_s32(p);
}

// Final per-token results from the two chains.
template <int NT, bool kHasMin>
inline void store(float* out, int64_t os, const float acc[NT], const float accm[NT]) {
  for (int t = 0; t < NT; ++t) out[t * os] = kHasMin ? acc[t] - accm[t] : acc[t];
}

// ---------------------------------------------------------------- Q4_K / Q5_K

template <bool kFive>
struct KQ45 {
  template <int NT>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    const BlockQ8K* xb[NT];
    float acc[NT], accm[NT];
    for (int t = 0; t < NT; ++t) {
      xb[t] = row_at<BlockQ8K>(x, xs, t);
      acc[t] = accm[t] = 0.0f;
    }
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
      int32x4_t isum[NT];
      for (int t = 0; t < NT; ++t) isum[t] = vdupq_n_s32(0);
      for (int j = 0; j < 4; ++j) {
        uint8x16_t c[4];  // lo0, lo1, hi0, hi1
        neon::q45k_codes<kFive>(qs, qh, j, c);
        for (int t = 0; t < NT; ++t) {
          const int8_t* y = xb[t][i].qs + 64 * j;
          const int32x4_t dl = sdot(sdot(vdupq_n_s32(0), c[0], y), c[1], y + 16);
          const int32x4_t dh = sdot(sdot(vdupq_n_s32(0), c[2], y + 32), c[3], y + 48);
          isum[t] = vmlaq_n_s32(isum[t], dl, sc[2 * j]);
          isum[t] = vmlaq_n_s32(isum[t], dh, sc[2 * j + 1]);
        }
      }
      const float fd = h2f(d), fdmin = h2f(dmin);
      for (int t = 0; t < NT; ++t) {
        const float dx = xb[t][i].d;
        const int32_t imin = neon::min_dot8(mn, xb[t][i].bsums);
        acc[t] = std::fma(fd * dx, static_cast<float>(vaddvq_s32(isum[t])), acc[t]);
        accm[t] = std::fma(fdmin * dx, static_cast<float>(imin), accm[t]);
      }
    }
    store<NT, true>(out, os, acc, accm);
  }
};

// ---------------------------------------------------------------- Q6_K

struct KQ6 {
  template <int NT>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    const auto* wb = static_cast<const BlockQ6K*>(w);
    const BlockQ8K* xb[NT];
    float acc[NT];
    for (int t = 0; t < NT; ++t) {
      xb[t] = row_at<BlockQ8K>(x, xs, t);
      acc[t] = 0.0f;
    }
    for (int64_t i = 0; i < n / kQKK; ++i) {
      const BlockQ6K& b = wb[i];
      int32x4_t isum[NT];
      for (int t = 0; t < NT; ++t) isum[t] = vdupq_n_s32(0);
      for (int h = 0; h < 2; ++h) {
        for (int half = 0; half < 2; ++half) {
          int8x16_t code[4];
          neon::q6k_codes(b, h, half, code);
          for (int run = 0; run < 4; ++run) {
            const int e = 128 * h + 32 * run + 16 * half;
            for (int t = 0; t < NT; ++t) {
              const int32x4_t dp = vdotq_s32(vdupq_n_s32(0), code[run], vld1q_s8(xb[t][i].qs + e));
              isum[t] = vmlaq_n_s32(isum[t], dp, b.scales[e / 16]);
            }
          }
        }
      }
      const float fd = h2f(b.d);
      for (int t = 0; t < NT; ++t) {
        acc[t] = std::fma(fd * xb[t][i].d, static_cast<float>(vaddvq_s32(isum[t])), acc[t]);
      }
    }
    store<NT, false>(out, os, acc, nullptr);
  }
};

// ---------------------------------------------------------------- Q2_K / Q3_K

// Per half h (0, 1) and run k (0..3) of both formats: 2-bit codes at bits 2k..2k+1 of
// qs[32h + l] for elements 128h + 32k + l, group 8h + 2k (l < 16) or 8h + 2k + 1 (l >= 16).
// Q2_K: x = d * sc * q - dmin * m (sc, m the low / high nibbles of scales[group]).
// Q3_K: x = d * sc * (q - 4 * (hmask bit 4h + k of byte l clear)), sc the signed 6-bit scale.
template <bool kThree>
struct KQ23 {
  template <int NT>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    const BlockQ8K* xb[NT];
    float acc[NT], accm[NT];
    for (int t = 0; t < NT; ++t) {
      xb[t] = row_at<BlockQ8K>(x, xs, t);
      acc[t] = accm[t] = 0.0f;
    }
    const uint8x16_t m3 = vdupq_n_u8(0x03);
    for (int64_t i = 0; i < n / kQKK; ++i) {
      const uint8_t* qs;
      int8_t sc[16];
      uint8x16_t hm0 = vdupq_n_u8(0), hm1 = vdupq_n_u8(0);
      [[maybe_unused]] int16x8_t mins_lo, mins_hi;
      uint16_t d, dmin = 0;
      if constexpr (kThree) {
        const auto& b = static_cast<const BlockQ3K*>(w)[i];
        qs = b.qs, d = b.d;
        k3_scales(b.scales, sc);
        hm0 = vld1q_u8(b.hmask), hm1 = vld1q_u8(b.hmask + 16);
      } else {
        const auto& b = static_cast<const BlockQ2K*>(w)[i];
        qs = b.qs, d = b.d, dmin = b.dmin;
        const uint8x16_t s = vld1q_u8(b.scales);
        vst1q_s8(sc, vreinterpretq_s8_u8(vandq_u8(s, vdupq_n_u8(0x0F))));
        const uint8x16_t m = vshrq_n_u8(s, 4);
        mins_lo = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(m)));
        mins_hi = vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(m)));
      }
      int32x4_t isum[NT];
      for (int t = 0; t < NT; ++t) isum[t] = vdupq_n_s32(0);
      for (int h = 0; h < 2; ++h) {
        const uint8x16_t q0 = vld1q_u8(qs + 32 * h), q1 = vld1q_u8(qs + 32 * h + 16);
        for (int k = 0; k < 4; ++k) {
          const int8x16_t sh = vdupq_n_s8(static_cast<int8_t>(-2 * k));
          int8x16_t c0 = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(q0, sh), m3));
          int8x16_t c1 = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(q1, sh), m3));
          if constexpr (kThree) {
            // -4 where the high bit is clear: (bit - 1) & -4, i.e. ((bit << 2) - 4).
            const int8x16_t hs = vdupq_n_s8(static_cast<int8_t>(-(4 * h + k)));
            const uint8x16_t b0 = vandq_u8(vshlq_u8(hm0, hs), vdupq_n_u8(1));
            const uint8x16_t b1 = vandq_u8(vshlq_u8(hm1, hs), vdupq_n_u8(1));
            c0 = vaddq_s8(c0, vreinterpretq_s8_u8(vsubq_u8(vshlq_n_u8(b0, 2), vdupq_n_u8(4))));
            c1 = vaddq_s8(c1, vreinterpretq_s8_u8(vsubq_u8(vshlq_n_u8(b1, 2), vdupq_n_u8(4))));
          }
          const int g = 8 * h + 2 * k;
          for (int t = 0; t < NT; ++t) {
            const int8_t* y = xb[t][i].qs + 128 * h + 32 * k;
            const int32x4_t p0 = vdotq_s32(vdupq_n_s32(0), c0, vld1q_s8(y));
            const int32x4_t p1 = vdotq_s32(vdupq_n_s32(0), c1, vld1q_s8(y + 16));
            isum[t] = vmlaq_n_s32(vmlaq_n_s32(isum[t], p0, sc[g]), p1, sc[g + 1]);
          }
        }
      }
      const float fd = h2f(d);
      for (int t = 0; t < NT; ++t) {
        const float dx = xb[t][i].d;
        acc[t] = std::fma(fd * dx, static_cast<float>(vaddvq_s32(isum[t])), acc[t]);
        if constexpr (!kThree) {
          const int32_t imin = min_dot16(mins_lo, mins_hi, xb[t][i].bsums);
          accm[t] = std::fma(h2f(dmin) * dx, static_cast<float>(imin), accm[t]);
        }
      }
    }
    store<NT, !kThree>(out, os, acc, accm);
  }
};

}  // namespace

Avx2Entry neon_entry_k(TensorType t) {
  using neon::entry_of;
  switch (t) {
    case TensorType::Q2_K:
      return entry_of<KQ23<false>>();
    case TensorType::Q3_K:
      return entry_of<KQ23<true>>();
    case TensorType::Q4_K:
      return entry_of<KQ45<false>>();
    case TensorType::Q5_K:
      return entry_of<KQ45<true>>();
    case TensorType::Q6_K:
      return entry_of<KQ6>();
    default:
      break;
  }
  return {nullptr, nullptr, nullptr, nullptr};
}

}  // namespace llmt::kernels
