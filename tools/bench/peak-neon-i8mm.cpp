// AArch64 i8mm register-only peak loop of the bench, for the i8mm tier's int8 figure; only built
// on AArch64 (the -neon-i8mm.cpp suffix gives it +i8mm) and only called when that tier is in use.
#include <arm_neon.h>

#include "bench.h"

namespace llmt::bench {

double int8_dot_loop_i8mm(int64_t n_iter, int32_t* sink) {
  // smmla: a 2x8 s8 matrix times an 8x2 one into 2x2 int32 (32 products, 64 ops).
  constexpr int kChains = 12;
  int8x16_t a = vdupq_n_s8(3);
  int8x16_t b[4];
  int32x4_t acc[kChains];
  for (int j = 0; j < 4; ++j) b[j] = vdupq_n_s8(static_cast<int8_t>(j + 1));
  for (int j = 0; j < kChains; ++j) acc[j] = vdupq_n_s32(0);
  for (int64_t i = 0; i < n_iter; ++i) {
    // The empty asm makes `a` opaque, so the products cannot be hoisted out of the loop.
    __asm__ volatile("" : "+w"(a));
    for (int j = 0; j < kChains; ++j) acc[j] = vmmlaq_s32(acc[j], a, b[j % 4]);
  }
  int32x4_t s = acc[0];
  for (int j = 1; j < kChains; ++j) s = vaddq_s32(s, acc[j]);
  *sink = vgetq_lane_s32(s, 0);
  return static_cast<double>(n_iter) * kChains * 32.0 * 2.0;
}

}  // namespace llmt::bench
