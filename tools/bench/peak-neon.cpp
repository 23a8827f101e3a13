// AArch64 NEON + dotprod register-only peak loops of the bench, for the neon tier (and the i8mm
// tier's scaled and f32 figures); only built on AArch64 (the -neon.cpp suffix gives them the neon
// tier's flags) and only called when that tier is in use.
#include <arm_neon.h>

#include "bench.h"
#include "peak-neon.h"

namespace llmt::bench {

double int8_dot_loop_neon(int64_t n_iter, int32_t* sink) {
  // sdot: 16 s8 x s8 products (32 ops) into 4 int32 lanes.
  return int8_chain_loop(n_iter, sink, 16.0, [](int32x4_t acc, int8x16_t a, int8x16_t b) {
    return vdotq_s32(acc, a, b);
  });
}

double int8_scaled_dot_loop_neon(int64_t n_iter, int32_t* sink) {
  // The neon k-quant inner step (quants-k-neon.cpp): two sdot into fresh accumulators (32
  // products), each multiplied by its sub-block scale and added into the sums (mla by scalar).
  int8x16_t a = vdupq_n_s8(3);
  const int8x16_t b0 = vdupq_n_s8(1), b1 = vdupq_n_s8(-2);
  constexpr int kSums = 6;
  int32x4_t sum[kSums];
  for (int j = 0; j < kSums; ++j) sum[j] = vdupq_n_s32(0);
  for (int64_t i = 0; i < n_iter; ++i) {
    __asm__ volatile("" : "+w"(a));
    for (int j = 0; j < kSums; ++j) {
      const int32x4_t p0 = vdotq_s32(vdupq_n_s32(0), a, b0);
      const int32x4_t p1 = vdotq_s32(vdupq_n_s32(0), a, b1);
      sum[j] = vmlaq_n_s32(vmlaq_n_s32(sum[j], p0, 5), p1, 7);
    }
  }
  int32x4_t s = sum[0];
  for (int j = 1; j < kSums; ++j) s = vaddq_s32(s, sum[j]);
  *sink = vgetq_lane_s32(s, 0);
  return static_cast<double>(n_iter) * kSums * 32.0 * 2.0;
}

double fma_loop_neon(int64_t n_iter, float* sink) {
  // fmla: 4 lanes (8 ops).
  float32x4_t x = vdupq_n_f32(0.999f);
  const float32x4_t y = vdupq_n_f32(1e-7f);
  float32x4_t acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = vdupq_n_f32(static_cast<float>(j));
  for (int64_t i = 0; i < n_iter; ++i) {
    __asm__ volatile("" : "+w"(x));
    for (int j = 0; j < kChains; ++j) acc[j] = vfmaq_f32(y, acc[j], x);
  }
  float32x4_t s = acc[0];
  for (int j = 1; j < kChains; ++j) s = vaddq_f32(s, acc[j]);
  *sink = vgetq_lane_f32(s, 0);
  return static_cast<double>(n_iter) * kChains * 4.0 * 2.0;
}

}  // namespace llmt::bench
