// Helpers shared by the AArch64 kernel files (*-neon.cpp, *-neon-i8mm.cpp); include only from
// files compiled with at least -march=armv8.2-a+dotprod. Internal header.
#pragma once

#include <arm_neon.h>

#include <cstddef>
#include <cstdint>

#include "kernels/quant-blocks.h"

namespace llmt::kernels::neon {

// fp32 values of 4 fp16 scale fields (exact, as fp16_to_fp32).
inline float32x4_t fp16x4(uint16_t a, uint16_t b, uint16_t c, uint16_t d) {
  const uint16_t h[4] = {a, b, c, d};
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}

// Sum of 8 float lanes lo = [a0..a3], hi = [a4..a7] in the order of avx2::hsum:
// ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
inline float hsum8(float32x4_t lo, float32x4_t hi) {
  const float32x4_t s = vaddq_f32(lo, hi);
  const float32x2_t p = vadd_f32(vget_low_f32(s), vget_high_f32(s));
  return vget_lane_f32(p, 0) + vget_lane_f32(p, 1);
}

// [sum(a), sum(b), sum(c), sum(d)] (exact integer sums).
inline int32x4_t hsum4x4(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
  return vpaddq_s32(vpaddq_s32(a, b), vpaddq_s32(c, d));
}

// Byte i (0..15) = 0x10 when bit i of the 16-bit little-endian word at p is set, else 0.
inline uint8x16_t bits_to_0x10(const uint8_t* p) {
  const uint8x16_t bytes = vcombine_u8(vdup_n_u8(p[0]), vdup_n_u8(p[1]));
  const uint8x16_t bit = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  return vandq_u8(vtstq_u8(bytes, bit), vdupq_n_u8(0x10));
}

// Signed codes of a weight block of the Q8_0-activation formats, as two 16-byte halves in element
// order (elements 0..15, 16..31); Block is the weight block type.
struct CodesQ8_0 {
  using Block = BlockQ8_0;
  static void codes(const Block& b, int8x16_t* c0, int8x16_t* c1) {
    *c0 = vld1q_s8(b.qs);
    *c1 = vld1q_s8(b.qs + 16);
  }
};
struct CodesQ4_0 {
  using Block = BlockQ4_0;
  static void codes(const Block& b, int8x16_t* c0, int8x16_t* c1) {
    const uint8x16_t q = vld1q_u8(b.qs);
    *c0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), vdupq_n_s8(8));
    *c1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), vdupq_n_s8(8));
  }
};
struct CodesQ5_0 {
  using Block = BlockQ5_0;
  static void codes(const Block& b, int8x16_t* c0, int8x16_t* c1) {
    const uint8x16_t q = vld1q_u8(b.qs);
    const uint8x16_t lo = vorrq_u8(vandq_u8(q, vdupq_n_u8(0x0F)), bits_to_0x10(b.qh));
    const uint8x16_t hi = vorrq_u8(vshrq_n_u8(q, 4), bits_to_0x10(b.qh + 2));
    *c0 = vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8(16));
    *c1 = vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8(16));
  }
};
struct CodesIq4Nl {
  using Block = BlockIq4Nl;
  static void codes(const Block& b, int8x16_t* c0, int8x16_t* c1) {
    const int8x16_t table = vld1q_s8(kIq4nlValues);
    const uint8x16_t q = vld1q_u8(b.qs);
    *c0 = vqtbl1q_s8(table, vandq_u8(q, vdupq_n_u8(0x0F)));
    *c1 = vqtbl1q_s8(table, vshrq_n_u8(q, 4));
  }
};

template <class T>
const T* row_at(const void* x, size_t x_stride, int t) {
  return reinterpret_cast<const T*>(static_cast<const uint8_t*>(x) +
                                    static_cast<size_t>(t) * x_stride);
}

// Adapters from a kernel K with `template <int NT> static void run(n, out, out_stride, w, x,
// x_stride)` (NT tokens against one weight row, the row decoded once) to the table's function
// types. Every NT instantiation runs the same per-pair arithmetic, so vec_dot and vec_dot_rows
// agree bitwise.
template <class K>
void dot_one(int64_t n, float* out, const void* w, const void* x) {
  K::template run<1>(n, out, 1, w, x, 0);
}
template <class K>
void dot_rows(int64_t n, float* out, int64_t out_stride, const void* w, const void* x,
              size_t x_stride, int nx) {
  switch (nx) {
    case 1:
      K::template run<1>(n, out, out_stride, w, x, x_stride);
      break;
    case 2:
      K::template run<2>(n, out, out_stride, w, x, x_stride);
      break;
    case 3:
      K::template run<3>(n, out, out_stride, w, x, x_stride);
      break;
    default:
      K::template run<4>(n, out, out_stride, w, x, x_stride);
      break;
  }
}
template <class K>
Avx2Entry entry_of() {
  return {nullptr, nullptr, dot_one<K>, dot_rows<K>};
}

}  // namespace llmt::kernels::neon
