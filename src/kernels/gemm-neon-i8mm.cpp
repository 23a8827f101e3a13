// AArch64 i8mm GEMM tiles (SMMLA, vmmlaq_s32: a 2x8 int8 matrix times an 8x2 int8 matrix into a
// 2x2 int32 accumulator) for Q8_0 / Q4_0 / Q5_0 / IQ4_NL (x Q8_0) and Q4_K / Q6_K (x Q8_K)
// weights: two weight rows x two tokens per SMMLA, each pair of weight blocks decoded (and
// interleaved 8 bytes at a time) once for all of the tile's tokens. The only file compiled with
// +i8mm; matmul calls its tile only for tier kI8mm (isa_supported checks HWCAP2_I8MM).
//
// Per-pair arithmetic: SMMLA's int32 lanes are the exact integer block (or sub-block) dots, the
// same integers the neon tier's sdot kernels compute; they feed the float operations of those
// kernels (quants-neon.cpp, quants-k-neon.cpp) lane-wise, one (row, token) pair per lane (lane
// order r0t0, r0t1, r1t0, r1t1), so every result is bitwise equal to the neon vec_dot.
// An odd last row or token is paired with itself and its duplicate lanes are dropped.
#include <cmath>

#include "kernels/neon-util.h"

namespace llmt::kernels {

namespace {

using neon::row_at;

// [a bytes 0..7, b bytes 0..7] and [a bytes 8..15, b bytes 8..15]: the SMMLA operand layout of
// two rows' 16 elements.
inline void zip_rows(int8x16_t a, int8x16_t b, int8x16_t* lo, int8x16_t* hi) {
  *lo = vreinterpretq_s8_s64(vzip1q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
  *hi = vreinterpretq_s8_s64(vzip2q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}

// acc += the 2x2 dots of 16 interleaved weight elements (w_lo, w_hi from zip_rows) with the
// 16 bytes at y0 (token 0) and y1 (token 1).
inline int32x4_t mm16(int32x4_t acc, int8x16_t w_lo, int8x16_t w_hi, const int8_t* y0,
                      const int8_t* y1) {
  int8x16_t y_lo, y_hi;
  zip_rows(vld1q_s8(y0), vld1q_s8(y1), &y_lo, &y_hi);
  return vmmlaq_s32(vmmlaq_s32(acc, w_lo, y_lo), w_hi, y_hi);
}

// Lanes [a, b, a, b] and [a, a, b, b].
inline float32x4_t per_token(float a, float b) {
  const float v[4] = {a, b, a, b};
  return vld1q_f32(v);
}
inline float32x4_t per_row(float a, float b) {
  const float v[4] = {a, a, b, b};
  return vld1q_f32(v);
}

// Stores lane (2 ri + ti) of v to y[t ti * ys + r ri] for the distinct rows / tokens.
inline void store_2x2(float32x4_t v, float* y, int64_t ys, int64_t r0, bool two_rows, int t0,
                      bool two_tok) {
  y[t0 * ys + r0] = vgetq_lane_f32(v, 0);
  if (two_tok) y[(t0 + 1) * ys + r0] = vgetq_lane_f32(v, 1);
  if (two_rows) {
    y[t0 * ys + r0 + 1] = vgetq_lane_f32(v, 2);
    if (two_tok) y[(t0 + 1) * ys + r0 + 1] = vgetq_lane_f32(v, 3);
  }
}

constexpr int kPairs = kGemmTokens / 2;  // token pairs per tile

// ---------------------------------------------------------------- Q8_0 / Q4_0 / Q5_0 / IQ4_NL

// Per pair as Blocks8 (quants-neon.cpp): groups of 8 blocks, lane j of the group accumulator
// acc_j = fma(dw_j * dx_j, float(isum_j), acc_j), result ((a0 + a4) + (a2 + a6)) +
// ((a1 + a5) + (a3 + a7)). Here acc[p][j] holds block lane j of token pair p for the 2x2 pairs.
template <class P>
void gemm_blocks(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
                 size_t x_stride, const void* /*aux*/, float* y, int64_t y_stride, int ntok) {
  using Block = typename P::Block;
  const int64_t nb = k / kQK;
  const int n_pairs = (ntok + 1) / 2;
  const BlockQ8_0* xb[kGemmTokens];
  for (int t = 0; t < kGemmTokens; ++t) xb[t] = row_at<BlockQ8_0>(x, x_stride, t < ntok ? t : 0);
  for (int64_t r0 = 0; r0 < nrows; r0 += 2) {
    const bool two_rows = r0 + 1 < nrows;
    const Block* w0 = row_at<Block>(w, w_stride, static_cast<int>(r0));
    const Block* w1 = row_at<Block>(w, w_stride, static_cast<int>(two_rows ? r0 + 1 : r0));
    float32x4_t acc[kPairs][8];
    for (int p = 0; p < n_pairs; ++p) {
      for (int j = 0; j < 8; ++j) acc[p][j] = vdupq_n_f32(0.0f);
    }
    for (int64_t g = 0; g < nb; g += 8) {
      const int cnt = static_cast<int>(nb - g < 8 ? nb - g : 8);
      int8x16_t wi[8][4];  // block j: elements 0..7, 8..15, 16..23, 24..31 of both rows
      float dw0[8], dw1[8];
      for (int j = 0; j < cnt; ++j) {
        int8x16_t a0, a1, b0, b1;
        P::codes(w0[g + j], &a0, &a1);
        P::codes(w1[g + j], &b0, &b1);
        zip_rows(a0, b0, &wi[j][0], &wi[j][1]);
        zip_rows(a1, b1, &wi[j][2], &wi[j][3]);
        dw0[j] = fp16_to_fp32(w0[g + j].d);
        dw1[j] = fp16_to_fp32(w1[g + j].d);
      }
      for (int p = 0; p < n_pairs; ++p) {
        const BlockQ8_0* x0 = xb[2 * p] + g;
        const BlockQ8_0* x1 = xb[2 * p + 1 < ntok ? 2 * p + 1 : 2 * p] + g;
        // Padding lanes j >= cnt: isum = 0 and scale 0, so fma leaves acc unchanged.
        for (int j = 0; j < cnt; ++j) {
          int32x4_t is = mm16(vdupq_n_s32(0), wi[j][0], wi[j][1], x0[j].qs, x1[j].qs);
          is = mm16(is, wi[j][2], wi[j][3], x0[j].qs + 16, x1[j].qs + 16);
          const float dx0 = fp16_to_fp32(x0[j].d), dx1 = fp16_to_fp32(x1[j].d);
          const float32x4_t s = vmulq_f32(per_row(dw0[j], dw1[j]), per_token(dx0, dx1));
          acc[p][j] = vfmaq_f32(acc[p][j], s, vcvtq_f32_s32(is));
        }
      }
    }
    for (int p = 0; p < n_pairs; ++p) {
      const float32x4_t(&a)[8] = acc[p];
      const float32x4_t v = vaddq_f32(vaddq_f32(vaddq_f32(a[0], a[4]), vaddq_f32(a[2], a[6])),
                                      vaddq_f32(vaddq_f32(a[1], a[5]), vaddq_f32(a[3], a[7])));
      store_2x2(v, y, y_stride, r0, two_rows, 2 * p, 2 * p + 1 < ntok);
    }
  }
}

}  // namespace

GemmTileFn i8mm_gemm_tile(TensorType t) {
  switch (t) {
    case TensorType::Q8_0:
      return gemm_blocks<neon::CodesQ8_0>;
    case TensorType::Q4_0:
      return gemm_blocks<neon::CodesQ4_0>;
    case TensorType::Q5_0:
      return gemm_blocks<neon::CodesQ5_0>;
    case TensorType::IQ4_NL:
      return gemm_blocks<neon::CodesIq4Nl>;
    default:
      break;
  }
  return nullptr;
}

}  // namespace llmt::kernels
