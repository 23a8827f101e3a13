// The int8 peak loop shared by the AArch64 bench files (peak-neon.cpp, peak-neon-i8mm.cpp), over
// the instruction each measures. Include only from files built with at least the neon tier's
// flags. Internal linkage: the two files are built with different -march flags.
#pragma once

#include <arm_neon.h>

#include <cstdint>

namespace llmt::bench {
namespace {

constexpr int kChains = 12;  // independent accumulators: latency 3-4 x up to 4 per cycle

// kChains independent int32x4 accumulators stepped n_iter
// times by acc = step(acc, a, b) with `a` opaque to the compiler; returns the ops performed
// (products_per_step multiplies and as many adds per step and chain), *sink keeps the work
// observable.
template <class Step>
double int8_chain_loop(int64_t n_iter, int32_t* sink, double products_per_step, Step step) {
  int8x16_t a = vdupq_n_s8(3);
  int8x16_t b[4];
  int32x4_t acc[kChains];
  for (int j = 0; j < 4; ++j) b[j] = vdupq_n_s8(static_cast<int8_t>(j + 1));
  for (int j = 0; j < kChains; ++j) acc[j] = vdupq_n_s32(0);
  for (int64_t i = 0; i < n_iter; ++i) {
    // The empty asm makes `a` opaque, so the products cannot be hoisted out of the loop.
    __asm__ volatile("" : "+w"(a));
    for (int j = 0; j < kChains; ++j) acc[j] = step(acc[j], a, b[j % 4]);
  }
  int32x4_t s = acc[0];
  for (int j = 1; j < kChains; ++j) s = vaddq_s32(s, acc[j]);
  *sink = vgetq_lane_s32(s, 0);
  return static_cast<double>(n_iter) * kChains * products_per_step * 2.0;
}

}  // namespace
}  // namespace llmt::bench
