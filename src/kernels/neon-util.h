// Helpers shared by the AArch64 kernel files (*-neon.cpp, *-neon-i8mm.cpp); include only from
// files compiled with at least -march=armv8.2-a+dotprod. Internal header.
#pragma once

#include <arm_neon.h>

#include <cstddef>
#include <cstdint>

#include "kernels/quant-blocks.h"

namespace llmt::kernels::neon {
// Internal linkage: the neon and i8mm files include these with different -march flags, and an
// out-of-line copy compiled for i8mm must never be the one a neon-tier file calls.
namespace {

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

// Codes of elements 64j + [0, 16), [16, 32), [32, 48), [48, 64) of a Q4_K (kFive false) or Q5_K
// super-block (qh: the Q5_K fifth bits, unused for Q4_K); elements 64j..64j+31 form sub-block 2j,
// the next 32 sub-block 2j + 1.
template <bool kFive>
inline void q45k_codes(const uint8_t* qs, const uint8_t* qh, int j, uint8x16_t c[4]) {
  const uint8x16_t m4 = vdupq_n_u8(0x0F);
  const uint8x16_t q0 = vld1q_u8(qs + 32 * j), q1 = vld1q_u8(qs + 32 * j + 16);
  c[0] = vandq_u8(q0, m4), c[1] = vandq_u8(q1, m4);
  c[2] = vshrq_n_u8(q0, 4), c[3] = vshrq_n_u8(q1, 4);
  if constexpr (kFive) {
    // Bit 2j of qh byte l -> bit 4 of element 64j + l, bit 2j + 1 -> element 64j + 32 + l.
    const uint8x16_t bit = vdupq_n_u8(0x10);
    const uint8x16_t h0 = vld1q_u8(qh), h1 = vld1q_u8(qh + 16);
    const int8x16_t sl = vdupq_n_s8(static_cast<int8_t>(4 - 2 * j));
    const int8x16_t sh = vdupq_n_s8(static_cast<int8_t>(3 - 2 * j));
    c[0] = vorrq_u8(c[0], vandq_u8(vshlq_u8(h0, sl), bit));
    c[1] = vorrq_u8(c[1], vandq_u8(vshlq_u8(h1, sl), bit));
    c[2] = vorrq_u8(c[2], vandq_u8(vshlq_u8(h0, sh), bit));
    c[3] = vorrq_u8(c[3], vandq_u8(vshlq_u8(h1, sh), bit));
  }
}

// Signed codes (-32..31) of a Q6_K super-block's elements 128h + 32 run + 16 half + [0, 16) for
// run = 0..3 (group 8h + 2 run + half): low 4 bits from ql[64h + 32 (run & 1) + 16 half + l] (low
// nibble for runs 0, 1; high for 2, 3), high 2 bits from qh[32h + 16 half + l] >> 2 run.
inline void q6k_codes(const BlockQ6K& b, int h, int half, int8x16_t c[4]) {
  const uint8x16_t m4 = vdupq_n_u8(0x0F), m3 = vdupq_n_u8(0x03);
  const uint8x16_t l0 = vld1q_u8(b.ql + 64 * h + 16 * half);
  const uint8x16_t l1 = vld1q_u8(b.ql + 64 * h + 32 + 16 * half);
  const uint8x16_t qh = vld1q_u8(b.qh + 32 * h + 16 * half);
  const uint8x16_t lows[4] = {vandq_u8(l0, m4), vandq_u8(l1, m4), vshrq_n_u8(l0, 4),
                              vshrq_n_u8(l1, 4)};
  const uint8x16_t highs[4] = {vandq_u8(qh, m3), vandq_u8(vshrq_n_u8(qh, 2), m3),
                               vandq_u8(vshrq_n_u8(qh, 4), m3), vshrq_n_u8(qh, 6)};
  for (int run = 0; run < 4; ++run) {
    c[run] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lows[run], vshlq_n_u8(highs[run], 4))),
                      vdupq_n_s8(32));
  }
}

// sum_s mins[s] * (bsums[2s] + bsums[2s + 1]) over the 8 sub-blocks of 32 (exact).
inline int32_t min_dot8(const uint8_t mn[8], const int16_t* bsums) {
  const int16x8_t pair = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));
  const int16x8_t m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mn)));
  const int32x4_t p = vmull_s16(vget_low_s16(m), vget_low_s16(pair));
  return vaddvq_s32(vmlal_s16(p, vget_high_s16(m), vget_high_s16(pair)));
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

}  // namespace
}  // namespace llmt::kernels::neon
