// AArch64 NEON variants of the float ops (ops.h OpsTable) for the neon and i8mm tiers (compiled
// with -march=armv8.2-a+dotprod; base ARMv8 NEON only: fmla, fdiv, frintn, fcvtl / fcvtn for F16).
//
// Bitwise contract: every function computes exactly the float operations of its avx2 twin in
// ops-avx2.cpp, in the same order, so neon results equal the avx2 tier's bit for bit (a mixed
// x86 / Arm cluster gives identical outputs). Each 8-lane __m256 is a pair of 4-lane registers
// (lo = lanes 0..3, hi = lanes 4..7, type V8); a fused vfmaq_f32 / vfmsq_f32 stands exactly
// where avx2 has _mm256_fmadd_ps / _mm256_fnmadd_ps and separate multiply / add where avx2 has
// separate ones (the project is built with -ffp-contract=off, see CMakeLists.txt, so the
// compiler fuses nothing on its own); every horizontal sum keeps avx2's
// order; min / max keep x86's (a > b ? a : b) semantics, NaN and signed zeros included; the e^x
// polynomial, its clamp and the 2^n bit construction are avx2's constant by constant; divisions
// and square roots are IEEE correctly rounded on both; F16 conversions round to nearest even
// (the FPCR default, like _mm256_cvtps_ph with rounding 0). Scalar tails and the hd % 8 != 0
// fallbacks call the same scalar code as avx2.
#include <arm_neon.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/attend-rows.h"
#include "kernels/neon-util.h"
#include "kernels/ops.h"

namespace llmt::ops {

namespace {

using kernels::neon::hsum8;

// One avx2 register: lanes 0..3 and 4..7.
struct V8 {
  float32x4_t lo, hi;
};

inline V8 dup8(float x) {
  return {vdupq_n_f32(x), vdupq_n_f32(x)};
}
inline V8 load8(const float* p) {
  return {vld1q_f32(p), vld1q_f32(p + 4)};
}
// Eight F16 K/V elements as f32 (exact, like _mm256_cvtph_ps).
inline V8 load8(const uint16_t* p) {
  const uint16x8_t h = vld1q_u16(p);
  return {vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h))),
          vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h)))};
}
inline void store8(float* p, V8 v) {
  vst1q_f32(p, v.lo);
  vst1q_f32(p + 4, v.hi);
}
// _mm256_fmadd_ps(a, b, c): a * b + c, one rounding.
inline V8 fma8(V8 a, V8 b, V8 c) {
  return {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)};
}
inline V8 add8(V8 a, V8 b) {
  return {vaddq_f32(a.lo, b.lo), vaddq_f32(a.hi, b.hi)};
}
inline V8 mul8(V8 a, V8 b) {
  return {vmulq_f32(a.lo, b.lo), vmulq_f32(a.hi, b.hi)};
}

// x86 maxps / minps: a > b ? a : b and a < b ? a : b (the second operand when either is NaN or
// both are zeros), unlike fmax / fmin.
inline float32x4_t max_x86(float32x4_t a, float32x4_t b) {
  return vbslq_f32(vcgtq_f32(a, b), a, b);
}
inline float32x4_t min_x86(float32x4_t a, float32x4_t b) {
  return vbslq_f32(vcltq_f32(a, b), a, b);
}

// avx2 hmax: max(lo, hi) lanes, then lanes (0, 2), (1, 3), then (0, 1), x86 semantics.
inline float hmax8(V8 v) {
  const float32x4_t s = max_x86(v.lo, v.hi);
  const float32x2_t t =
      vbsl_f32(vcgt_f32(vget_low_f32(s), vget_high_f32(s)), vget_low_f32(s), vget_high_f32(s));
  const float a = vget_lane_f32(t, 0), b = vget_lane_f32(t, 1);
  return a > b ? a : b;
}

// avx2 exp_ps lane by lane: the clamp to [-87, 88], n = round-to-nearest-even(x log2 e),
// r = x - n ln 2 in two fused steps, the degree-6 polynomial, times 2^n built in the exponent
// bits (n is in [-126, 127], so the int conversion is exact).
inline float32x4_t exp4(float32x4_t x) {
  x = min_x86(max_x86(x, vdupq_n_f32(-87.0f)), vdupq_n_f32(88.0f));
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
  p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
  p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
  p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(e));
}
inline V8 exp8(V8 x) {
  return {exp4(x.lo), exp4(x.hi)};
}

// avx2 row_sum: ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).
inline float row_sum(V8 a) {
  const float32x4_t l = vpaddq_f32(a.lo, a.lo), h = vpaddq_f32(a.hi, a.hi);
  return (vgetq_lane_f32(l, 0) + vgetq_lane_f32(l, 1)) +
         (vgetq_lane_f32(h, 0) + vgetq_lane_f32(h, 1));
}

// row_sum of four accumulators at once: lane r is row_sum(a[r]) bit for bit.
inline float32x4_t row_sum4(const V8 a[4]) {
  const float32x4_t l = vpaddq_f32(vpaddq_f32(a[0].lo, a[1].lo), vpaddq_f32(a[2].lo, a[3].lo));
  const float32x4_t h = vpaddq_f32(vpaddq_f32(a[0].hi, a[1].hi), vpaddq_f32(a[2].hi, a[3].hi));
  return vaddq_f32(l, h);
}

// Scores of NH heads over n_rows consecutive key rows, avx2 group_scores' operations: per score
// an fma chain over d in steps of 8 (lane l takes d + l) from +0, row_sum, times scale. The row
// grouping (kRows, the prefetch distance) is avx2's; it changes no bits. Prefetch as avx2 does
// (key rows ahead, the value rows the value pass reads next).
constexpr int32_t kPrefetchKeyRows = 16;

template <typename T>
inline void prefetch_rows(const T* rows, int32_t n, int32_t hd) {
  const char* b = reinterpret_cast<const char*>(rows);
  const size_t bytes = static_cast<size_t>(n) * hd * sizeof(T);
  for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(b + o, 0, 3);
}

template <int NH, typename T>
inline void group_scores(const float* q, const T* k, const T* v, int32_t n_rows, int32_t hd,
                         float scale, float* sc, int64_t sc_stride) {
  constexpr int kRows = NH == 1 ? 8 : 4;
  const float32x4_t vs = vdupq_n_f32(scale);
  int32_t j = 0;
  for (; j + kRows <= n_rows; j += kRows) {
    prefetch_rows(v + static_cast<int64_t>(j) * hd, kRows, hd);
    if (j + kPrefetchKeyRows + kRows <= n_rows) {
      prefetch_rows(k + static_cast<int64_t>(j + kPrefetchKeyRows) * hd, kRows, hd);
    }
    const T* kj = k + static_cast<int64_t>(j) * hd;
    V8 acc[NH][kRows];
    for (int h = 0; h < NH; ++h) {
      for (int r = 0; r < kRows; ++r) acc[h][r] = dup8(0.0f);
    }
    for (int32_t d = 0; d < hd; d += 8) {
      for (int r = 0; r < kRows; ++r) {
        const V8 kv = load8(kj + static_cast<int64_t>(r) * hd + d);
        for (int h = 0; h < NH; ++h) {
          acc[h][r] = fma8(load8(q + static_cast<int64_t>(h) * hd + d), kv, acc[h][r]);
        }
      }
    }
    for (int h = 0; h < NH; ++h) {
      float* out = sc + h * sc_stride + j;
      vst1q_f32(out, vmulq_f32(row_sum4(acc[h]), vs));
      if constexpr (kRows == 8) vst1q_f32(out + 4, vmulq_f32(row_sum4(acc[h] + 4), vs));
    }
  }
  for (; j < n_rows; ++j) {
    const T* kj = k + static_cast<int64_t>(j) * hd;
    V8 acc[NH];
    for (int h = 0; h < NH; ++h) acc[h] = dup8(0.0f);
    for (int32_t d = 0; d < hd; d += 8) {
      const V8 kv = load8(kj + d);
      for (int h = 0; h < NH; ++h) {
        acc[h] = fma8(load8(q + static_cast<int64_t>(h) * hd + d), kv, acc[h]);
      }
    }
    for (int h = 0; h < NH; ++h) sc[h * sc_stride + j] = row_sum(acc[h]) * scale;
  }
}

// sc[j] = e^(sc[j] - max) in place; returns the sum (avx2 exp_shifted: vector max and sum over
// steps of 8, hsum, the scalar tail with std::exp).
inline float exp_shifted(float* sc, int32_t n) {
  V8 vmax = dup8(-INFINITY);
  int32_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const V8 x = load8(sc + j);
    vmax = {max_x86(vmax.lo, x.lo), max_x86(vmax.hi, x.hi)};
  }
  float max = hmax8(vmax);
  for (; j < n; ++j) max = sc[j] > max ? sc[j] : max;
  const V8 mv = dup8(max);
  V8 vsum = dup8(0.0f);
  j = 0;
  for (; j + 8 <= n; j += 8) {
    const V8 x = load8(sc + j);
    const V8 e = exp8({vsubq_f32(x.lo, mv.lo), vsubq_f32(x.hi, mv.hi)});
    store8(sc + j, e);
    vsum = add8(vsum, e);
  }
  float sum = hsum8(vsum.lo, vsum.hi);
  for (; j < n; ++j) {
    sc[j] = std::exp(sc[j] - max);
    sum += sc[j];
  }
  return sum;
}

// avx2 group_values_slice / group_values: each output element one fma chain in row order, 32
// (then 8) dims per pass, rows in slices of kValueSlice.
constexpr int32_t kValueSlice = 32;

template <int NH, typename T>
inline void group_values_slice(const float* p, int64_t p_stride, const T* v, int32_t n_rows,
                               int32_t hd, float* o) {
  int32_t d0 = 0;
  for (; d0 + 32 <= hd; d0 += 32) {
    V8 acc[NH][4];
    for (int h = 0; h < NH; ++h) {
      for (int c = 0; c < 4; ++c) acc[h][c] = load8(o + h * hd + d0 + 8 * c);
    }
    const T* vr = v + d0;
    for (int32_t j = 0; j < n_rows; ++j, vr += hd) {
      V8 pj[NH];
      for (int h = 0; h < NH; ++h) pj[h] = dup8(p[h * p_stride + j]);
      for (int c = 0; c < 4; ++c) {
        const V8 vv = load8(vr + 8 * c);
        for (int h = 0; h < NH; ++h) acc[h][c] = fma8(pj[h], vv, acc[h][c]);
      }
    }
    for (int h = 0; h < NH; ++h) {
      for (int c = 0; c < 4; ++c) store8(o + h * hd + d0 + 8 * c, acc[h][c]);
    }
  }
  for (; d0 < hd; d0 += 8) {
    V8 acc[NH];
    for (int h = 0; h < NH; ++h) acc[h] = load8(o + h * hd + d0);
    const T* vr = v + d0;
    for (int32_t j = 0; j < n_rows; ++j, vr += hd) {
      const V8 vv = load8(vr);
      for (int h = 0; h < NH; ++h) acc[h] = fma8(dup8(p[h * p_stride + j]), vv, acc[h]);
    }
    for (int h = 0; h < NH; ++h) store8(o + h * hd + d0, acc[h]);
  }
}

template <int NH, typename T>
inline void group_values(const float* p, int64_t p_stride, const T* v, int32_t n_rows, int32_t hd,
                         float* o) {
  for (int32_t j = 0; j < n_rows; j += kValueSlice) {
    group_values_slice<NH>(p + j, p_stride, v + static_cast<int64_t>(j) * hd,
                           std::min(kValueSlice, n_rows - j), hd, o);
  }
}

// Softmax of each head's scores row (times the float reciprocal of the sum, as avx2), and zeroed
// outputs.
void normalize_scores(int32_t n_q, int32_t n_kv, int32_t hd, float* scores, float* out) {
  for (int32_t h = 0; h < n_q; ++h) {
    float* sc = scores + static_cast<int64_t>(h) * n_kv;
    const float r = 1.0f / exp_shifted(sc, n_kv);
    const V8 rv = dup8(r);
    int32_t j = 0;
    for (; j + 8 <= n_kv; j += 8) store8(sc + j, mul8(load8(sc + j), rv));
    for (; j < n_kv; ++j) sc[j] *= r;
    std::fill(out + static_cast<int64_t>(h) * hd, out + static_cast<int64_t>(h + 1) * hd, 0.0f);
  }
}

// The NEON passes of attend_impl (attend-rows.h).
struct NeonPasses {
  template <int NH, typename T>
  static void scores(const float* q, const T* k, const T* v, int32_t n_rows, int32_t hd,
                     float scale, float* sc, int64_t sc_stride) {
    group_scores<NH>(q, k, v, n_rows, hd, scale, sc, sc_stride);
  }
  static void normalize(int32_t n_q, int32_t n_kv, int32_t hd, float* scores, float* out) {
    normalize_scores(n_q, n_kv, hd, scores, out);
  }
  template <int NH, typename T>
  static void values(const float* p, int64_t p_stride, const T* v, int32_t n_rows, int32_t hd,
                     float* o) {
    group_values<NH>(p, p_stride, v, n_rows, hd, o);
  }
};

// attend_window_neon / _f16_neon for K/V elements of type T; `scalar` when hd is not a multiple
// of 8 (as avx2).
template <typename T, typename Scalar>
void attend_window_rows_neon(Scalar scalar, const float* q, int32_t n_q, const void* k_base,
                             const void* v_base, const int32_t* block_table, size_t block_stride,
                             int32_t block_size, int32_t p0, int32_t p1, int32_t hd, float scale,
                             float* scores, float* out) {
  if (hd % 8 != 0) {
    scalar(q, n_q, k_base, v_base, block_table, block_stride, block_size, p0, p1, hd, scale, scores,
           out);
    return;
  }
  attend_impl<T, NeonPasses>(
      q, n_q, paged_rows<T>(k_base, v_base, block_table, block_stride, block_size, hd, p0), p1 - p0,
      hd, scale, scores, out);
}

}  // namespace

void attend_neon(const float* q, int32_t n_q, const float* k, const float* v, int32_t n_kv,
                 int32_t hd, float scale, float* scores, float* out) {
  if (hd % 8 != 0) {
    attend_scalar(q, n_q, k, v, n_kv, hd, scale, scores, out);
    return;
  }
  attend_impl<float, NeonPasses>(q, n_q, ContiguousRows<float>{k, v, hd}, n_kv, hd, scale, scores,
                                 out);
}

void attend_f16_neon(const float* q, int32_t n_q, const uint16_t* k, const uint16_t* v,
                     int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  if (hd % 8 != 0) {
    attend_f16_scalar(q, n_q, k, v, n_kv, hd, scale, scores, out);
    return;
  }
  attend_impl<uint16_t, NeonPasses>(q, n_q, ContiguousRows<uint16_t>{k, v, hd}, n_kv, hd, scale,
                                    scores, out);
}

void attend_paged_neon(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                       const int32_t* block_table, size_t block_stride, int32_t block_size,
                       int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  if (hd % 8 != 0) {
    attend_paged_scalar(q, n_q, k_base, v_base, block_table, block_stride, block_size, n_kv, hd,
                        scale, scores, out);
    return;
  }
  attend_impl<float, NeonPasses>(
      q, n_q, paged_rows<float>(k_base, v_base, block_table, block_stride, block_size, hd, 0), n_kv,
      hd, scale, scores, out);
}

void attend_paged_f16_neon(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                           const int32_t* block_table, size_t block_stride, int32_t block_size,
                           int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  if (hd % 8 != 0) {
    attend_paged_f16_scalar(q, n_q, k_base, v_base, block_table, block_stride, block_size, n_kv, hd,
                            scale, scores, out);
    return;
  }
  attend_impl<uint16_t, NeonPasses>(
      q, n_q, paged_rows<uint16_t>(k_base, v_base, block_table, block_stride, block_size, hd, 0),
      n_kv, hd, scale, scores, out);
}

void attend_window_neon(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                        const int32_t* block_table, size_t block_stride, int32_t block_size,
                        int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                        float* out) {
  attend_window_rows_neon<float>(attend_window_scalar, q, n_q, k_base, v_base, block_table,
                                 block_stride, block_size, p0, p1, hd, scale, scores, out);
}

void attend_window_f16_neon(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                            const int32_t* block_table, size_t block_stride, int32_t block_size,
                            int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                            float* out) {
  attend_window_rows_neon<uint16_t>(attend_window_f16_scalar, q, n_q, k_base, v_base, block_table,
                                    block_stride, block_size, p0, p1, hd, scale, scores, out);
}

namespace {

// avx2 gelu_ps: v / (1 + e^t), t = v * (c1 v^2 + c0) (one fma), the same constants.
inline float32x4_t gelu4(float32x4_t v) {
  const float32x4_t v2 = vmulq_f32(v, v);
  const float32x4_t c0 = vdupq_n_f32(-1.5957691216057308f);
  const float32x4_t c1 = vdupq_n_f32(-1.5957691216057308f * 0.044715f);
  const float32x4_t t = vmulq_f32(v, vfmaq_f32(c0, c1, v2));
  return vdivq_f32(v, vaddq_f32(vdupq_n_f32(1.0f), exp4(t)));
}

}  // namespace

void gelu_neon(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    vst1q_f32(x + i, gelu4(vld1q_f32(x + i)));
    vst1q_f32(x + i + 4, gelu4(vld1q_f32(x + i + 4)));
  }
  if (i < n) gelu(x + i, n - i);
}

void gelu_mul_neon(float* g, const float* u, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    vst1q_f32(g + i, vmulq_f32(gelu4(vld1q_f32(g + i)), vld1q_f32(u + i)));
    vst1q_f32(g + i + 4, vmulq_f32(gelu4(vld1q_f32(g + i + 4)), vld1q_f32(u + i + 4)));
  }
  if (i < n) gelu_mul(g + i, u + i, n - i);
}

namespace {

// One __m256d as two double pairs (lanes 0, 1 and 2, 3).
struct D4 {
  float64x2_t lo, hi;
};

// avx2 hsum_pd: (l0 + l2) + (l1 + l3).
inline double hsum_pd(D4 v) {
  const float64x2_t s = vaddq_f64(v.lo, v.hi);
  return vgetq_lane_f64(s, 0) + vgetq_lane_f64(s, 1);
}

// The f64 values of 4 floats (exact, _mm256_cvtps_pd).
inline D4 widen(float32x4_t v) {
  return {vcvt_f64_f32(vget_low_f32(v)), vcvt_high_f64_f32(v)};
}

inline D4 add4d(D4 a, D4 b) {
  return {vaddq_f64(a.lo, b.lo), vaddq_f64(a.hi, b.hi)};
}

}  // namespace

void layer_norm_neon(const float* x, const float* w, const float* b, float* y, int64_t n,
                     float eps) {
  // avx2 layer_norm: sum and squared deviations in double, elements 0..3 of each step of 8 in
  // accumulator s0, 4..7 in s1, then hsum_pd(s0 + s1) and the tail in order.
  const float64x2_t z = vdupq_n_f64(0.0);
  D4 s0 = {z, z}, s1 = {z, z};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 = add4d(s0, widen(vld1q_f32(x + i)));
    s1 = add4d(s1, widen(vld1q_f32(x + i + 4)));
  }
  double sum = hsum_pd(add4d(s0, s1));
  for (int64_t j = i; j < n; ++j) sum += x[j];
  const double mean = sum / static_cast<double>(n);
  const float64x2_t md = vdupq_n_f64(mean);
  s0 = {z, z};
  s1 = {z, z};
  for (i = 0; i + 8 <= n; i += 8) {
    const D4 a = widen(vld1q_f32(x + i)), c = widen(vld1q_f32(x + i + 4));
    const D4 d0 = {vsubq_f64(a.lo, md), vsubq_f64(a.hi, md)};
    const D4 d1 = {vsubq_f64(c.lo, md), vsubq_f64(c.hi, md)};
    s0 = {vfmaq_f64(s0.lo, d0.lo, d0.lo), vfmaq_f64(s0.hi, d0.hi, d0.hi)};
    s1 = {vfmaq_f64(s1.lo, d1.lo, d1.lo), vfmaq_f64(s1.hi, d1.hi, d1.hi)};
  }
  double var = hsum_pd(add4d(s0, s1));
  for (int64_t j = i; j < n; ++j) {
    const double d = x[j] - mean;
    var += d * d;
  }
  var /= static_cast<double>(n);
  const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
  const float m = static_cast<float>(mean);
  // (x - m) * inv (* w) (+ b): the scalar code's operations, unfused.
  const float32x4_t mv = vdupq_n_f32(m), iv = vdupq_n_f32(inv);
  for (i = 0; i + 8 <= n; i += 8) {
    for (int64_t l = i; l < i + 8; l += 4) {
      float32x4_t v = vmulq_f32(vsubq_f32(vld1q_f32(x + l), mv), iv);
      if (w) v = vmulq_f32(v, vld1q_f32(w + l));
      if (b) v = vaddq_f32(v, vld1q_f32(b + l));
      vst1q_f32(y + l, v);
    }
  }
  for (; i < n; ++i) {
    float v = (x[i] - m) * inv;
    if (w) v *= w[i];
    if (b) v += b[i];
    y[i] = v;
  }
}

void silu_mul_neon(float* g, const float* u, int64_t n) {
  const float32x4_t one = vdupq_n_f32(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int64_t l = i; l < i + 8; l += 4) {
      const float32x4_t v = vld1q_f32(g + l);
      const float32x4_t e = exp4(vnegq_f32(v));  // e^-v (a sign flip, as avx2's xor)
      const float32x4_t s = vdivq_f32(v, vaddq_f32(one, e));
      vst1q_f32(g + l, vmulq_f32(s, vld1q_f32(u + l)));
    }
  }
  if (i < n) silu_mul(g + i, u + i, n - i);
}

void to_f16_neon(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    vst1_u16(y + i + 4, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i + 4))));
  }
  for (; i < n; ++i) y[i] = kernels::fp32_to_fp16(x[i]);
}

float dot_neon(const float* a, const float* b, int64_t n) {
  // avx2 dot: two 8-lane fma accumulators over steps of 16, then steps of 8 into the first,
  // hsum(acc0 + acc1), the scalar tail added in order.
  V8 acc0 = dup8(0.0f), acc1 = dup8(0.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = fma8(load8(a + i), load8(b + i), acc0);
    acc1 = fma8(load8(a + i + 8), load8(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = fma8(load8(a + i), load8(b + i), acc0);
  acc0 = add8(acc0, acc1);
  float sum = hsum8(acc0.lo, acc0.hi);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void axpy_neon(float alpha, const float* x, float* y, int64_t n) {
  const float32x4_t va = vdupq_n_f32(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), va, vld1q_f32(x + i)));
    vst1q_f32(y + i + 4, vfmaq_f32(vld1q_f32(y + i + 4), va, vld1q_f32(x + i + 4)));
  }
  for (; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace llmt::ops
