// AArch64 NEON kernels of the float weight formats F32, F16 and BF16 x F32 activations: vec_dot,
// vec_dot_rows and the F16 / BF16 dequantizers. Only called for tiers kNeon and kI8mm (the file
// gets the neon tier's flags; these kernels use base ARMv8 NEON only: fcvtl for F16, a 16-bit
// shift for BF16).
//
// Per-pair arithmetic (the batch-invariance contract), the same for every token count NX, so
// vec_dot and vec_dot_rows agree bitwise; it is the avx2 tier's FloatDot (quants-avx2.cpp) in
// 4-lane registers, so neon float results equal avx2's bitwise too: over 16-element steps, lane
// l of accumulator j (j = 0..3) takes elements 16s + 4j + l, each an fma in element order (j = 0,
// 1 are avx2's a0, j = 2, 3 its a1); then a scalar std::fma tail over the last n % 16 elements;
// result hsum8(acc0 + acc2, acc1 + acc3) (avx2::hsum's order) plus the tail. Not bitwise equal
// to the scalar tier, within its rounding bound (tests/test-kernels.cpp, FloatVecDot).
#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "kernels/neon-util.h"

namespace llmt::kernels {

namespace {

using neon::hsum8;

struct LoadF32 {
  static float32x4_t load4(const void* w, int64_t i) {
    return vld1q_f32(static_cast<const float*>(w) + i);
  }
  static float at(const void* w, int64_t i) { return static_cast<const float*>(w)[i]; }
};
struct LoadF16 {
  static float32x4_t load4(const void* w, int64_t i) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(static_cast<const uint16_t*>(w) + i)));
  }
  static float at(const void* w, int64_t i) {
    return fp16_to_fp32(static_cast<const uint16_t*>(w)[i]);
  }
};
struct LoadBF16 {
  static float32x4_t load4(const void* w, int64_t i) {
    const uint16x4_t h = vld1_u16(static_cast<const uint16_t*>(w) + i);
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
  }
  static float at(const void* w, int64_t i) {
    return bf16_to_fp32(static_cast<const uint16_t*>(w)[i]);
  }
};

template <class L>
struct FloatDot {
  template <int NX>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    const float* xr[NX];
    float32x4_t a[NX][4];
    float tail[NX];
    for (int t = 0; t < NX; ++t) {
      xr[t] = row_at<float>(x, xs, t);
      for (int j = 0; j < 4; ++j) a[t][j] = vdupq_n_f32(0.0f);
      tail[t] = 0.0f;
    }
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      float32x4_t wv[4];
      for (int j = 0; j < 4; ++j) wv[j] = L::load4(w, i + 4 * j);
      for (int t = 0; t < NX; ++t) {
        for (int j = 0; j < 4; ++j) {
          a[t][j] = vfmaq_f32(a[t][j], wv[j], vld1q_f32(xr[t] + i + 4 * j));
        }
      }
    }
    for (; i < n; ++i) {
      const float wi = L::at(w, i);
      for (int t = 0; t < NX; ++t) tail[t] = std::fma(wi, xr[t][i], tail[t]);
    }
    for (int t = 0; t < NX; ++t) {
      out[t * os] = hsum8(vaddq_f32(a[t][0], a[t][2]), vaddq_f32(a[t][1], a[t][3])) + tail[t];
    }
  }
};

template <class L>
void dequant(const void* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, L::load4(src, i));
  for (; i < n; ++i) dst[i] = L::at(src, i);
}

}  // namespace

Avx2Entry neon_entry_float(TensorType t) {
  using neon::dot_one;
  using neon::dot_rows;
  switch (t) {
    case TensorType::F32:
      return {nullptr, nullptr, dot_one<FloatDot<LoadF32>>, dot_rows<FloatDot<LoadF32>>};
    case TensorType::F16:
      return {dequant<LoadF16>, nullptr, dot_one<FloatDot<LoadF16>>, dot_rows<FloatDot<LoadF16>>};
    case TensorType::BF16:
      return {dequant<LoadBF16>, nullptr, dot_one<FloatDot<LoadBF16>>,
              dot_rows<FloatDot<LoadBF16>>};
    default:
      break;
  }
  return {nullptr, nullptr, nullptr, nullptr};
}

}  // namespace llmt::kernels
