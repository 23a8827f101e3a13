// AArch64 i8mm GEMM tiles (SMMLA, vmmlaq_s32: a 2x8 int8 matrix times an 8x2 int8 matrix into a
// 2x2 int32 accumulator) for Q8_0 / Q4_0 / Q5_0 / IQ4_NL (x Q8_0) and Q4_K / Q5_K / Q6_K (x Q8_K)
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
#include <type_traits>

#include "kernels/neon-util.h"

namespace llmt::kernels {

namespace {

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

// ---------------------------------------------------------------- Q4_K / Q5_K / Q6_K

// Per pair as KQ45 / KQ6 (quants-k-neon.cpp): per super-block i the exact isum_i (and imin_i),
// then acc = fma(d_i * dx_i, float(isum_i), acc), accm = fma(dmin_i * dx_i, float(imin_i), accm);
// result acc - accm (Q4_K, Q5_K) or acc (Q6_K). Here one lane per (row, token) pair.

// A super-block of both rows, decoded once for all the tile's tokens: kRuns runs of 16 elements
// (w[run]: the SMMLA operands of the run's elements 0..7 and 8..15 of both rows, at the format's
// run_offset(run) in the Q8_K row), each with its per-lane sub-block scale [s0, s0, s1, s1];
// the fp32 super-block scales and (Q4_K / Q5_K) the 8 mins of each row.
template <int kRuns>
struct PairBlock {
  int8x16_t w[kRuns][2];
  int32x4_t scale[kRuns];
  float d[2], dmin[2];
  uint8_t mn[2][8];
};

template <bool kFive>
struct TileQ45 {
  using Block = std::conditional_t<kFive, BlockQ5K, BlockQ4K>;
  static constexpr int kRuns = 16;  // run r: elements 16 r .. 16 r + 15, sub-block r / 2
  static constexpr bool kHasMin = true;
  static void decode(const Block* const b[2], PairBlock<kRuns>* pb) {
    uint8x16_t c[2][4];
    uint8_t sc[2][8];
    for (int r = 0; r < 2; ++r) {
      k4_scales_mins(b[r]->scales, sc[r], pb->mn[r]);
      pb->d[r] = fp16_to_fp32(b[r]->d);
      pb->dmin[r] = fp16_to_fp32(b[r]->dmin);
    }
    for (int j = 0; j < 4; ++j) {
      for (int r = 0; r < 2; ++r) {
        const uint8_t* qh = nullptr;
        if constexpr (kFive) qh = b[r]->qh;
        neon::q45k_codes<kFive>(b[r]->qs, qh, j, c[r]);
      }
      for (int e = 0; e < 4; ++e) {  // elements 64j + 16e: run 4j + e, sub-block 2j + e / 2
        const int run = 4 * j + e, sub = 2 * j + e / 2;
        zip_rows(vreinterpretq_s8_u8(c[0][e]), vreinterpretq_s8_u8(c[1][e]), &pb->w[run][0],
                 &pb->w[run][1]);
        const int32_t s4[4] = {sc[0][sub], sc[0][sub], sc[1][sub], sc[1][sub]};
        pb->scale[run] = vld1q_s32(s4);
      }
    }
  }
  static int run_offset(int run) { return 16 * run; }
};

struct TileQ6 {
  using Block = BlockQ6K;
  static constexpr int kRuns = 16;  // run 4 (2h + half) + k: elements 128h + 32k + 16 half ..
  static constexpr bool kHasMin = false;
  static int run_offset(int run) {
    const int hh = run / 4, k = run % 4;
    return 128 * (hh / 2) + 32 * k + 16 * (hh % 2);
  }
  static void decode(const Block* const b[2], PairBlock<kRuns>* pb) {
    for (int r = 0; r < 2; ++r) pb->d[r] = fp16_to_fp32(b[r]->d);
    for (int h = 0; h < 2; ++h) {
      for (int half = 0; half < 2; ++half) {
        int8x16_t c[2][4];
        neon::q6k_codes(*b[0], h, half, c[0]);
        neon::q6k_codes(*b[1], h, half, c[1]);
        for (int k = 0; k < 4; ++k) {
          const int run = 4 * (2 * h + half) + k;
          const int g = run_offset(run) / 16;
          zip_rows(c[0][k], c[1][k], &pb->w[run][0], &pb->w[run][1]);
          const int32_t s4[4] = {b[0]->scales[g], b[0]->scales[g], b[1]->scales[g],
                                 b[1]->scales[g]};
          pb->scale[run] = vld1q_s32(s4);
        }
      }
    }
  }
};

template <class K>
void gemm_k(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
            size_t x_stride, const void* /*aux*/, float* y, int64_t y_stride, int ntok) {
  using Block = typename K::Block;
  const int64_t nsb = k / kQKK;
  const int n_pairs = (ntok + 1) / 2;
  const BlockQ8K* xb[kGemmTokens];
  for (int t = 0; t < kGemmTokens; ++t) xb[t] = row_at<BlockQ8K>(x, x_stride, t < ntok ? t : 0);
  for (int64_t r0 = 0; r0 < nrows; r0 += 2) {
    const bool two_rows = r0 + 1 < nrows;
    const Block* w0 = row_at<Block>(w, w_stride, static_cast<int>(r0));
    const Block* w1 = row_at<Block>(w, w_stride, static_cast<int>(two_rows ? r0 + 1 : r0));
    float32x4_t acc[kPairs], accm[kPairs];
    for (int p = 0; p < n_pairs; ++p) acc[p] = accm[p] = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < nsb; ++i) {
      PairBlock<K::kRuns> pb;
      const Block* const b[2] = {w0 + i, w1 + i};
      K::decode(b, &pb);
      for (int p = 0; p < n_pairs; ++p) {
        const BlockQ8K& x0 = xb[2 * p][i];
        const BlockQ8K& x1 = xb[2 * p + 1 < ntok ? 2 * p + 1 : 2 * p][i];
        int32x4_t isum = vdupq_n_s32(0);
        for (int run = 0; run < K::kRuns; ++run) {
          const int off = K::run_offset(run);
          const int32x4_t m =
              mm16(vdupq_n_s32(0), pb.w[run][0], pb.w[run][1], x0.qs + off, x1.qs + off);
          isum = vmlaq_s32(isum, m, pb.scale[run]);
        }
        const float32x4_t dx = per_token(x0.d, x1.d);
        acc[p] = vfmaq_f32(acc[p], vmulq_f32(per_row(pb.d[0], pb.d[1]), dx), vcvtq_f32_s32(isum));
        if constexpr (K::kHasMin) {
          const int32_t im[4] = {
              neon::min_dot8(pb.mn[0], x0.bsums), neon::min_dot8(pb.mn[0], x1.bsums),
              neon::min_dot8(pb.mn[1], x0.bsums), neon::min_dot8(pb.mn[1], x1.bsums)};
          accm[p] = vfmaq_f32(accm[p], vmulq_f32(per_row(pb.dmin[0], pb.dmin[1]), dx),
                              vcvtq_f32_s32(vld1q_s32(im)));
        }
      }
    }
    for (int p = 0; p < n_pairs; ++p) {
      const float32x4_t v = K::kHasMin ? vsubq_f32(acc[p], accm[p]) : acc[p];
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
    case TensorType::Q4_K:
      return gemm_k<TileQ45<false>>;
    case TensorType::Q5_K:
      return gemm_k<TileQ45<true>>;
    case TensorType::Q6_K:
      return gemm_k<TileQ6>;
    default:
      break;
  }
  return nullptr;
}

}  // namespace llmt::kernels
