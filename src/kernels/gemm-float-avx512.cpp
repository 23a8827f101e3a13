// AVX-512 kernels for the float weight formats (F32, F16 via vcvtph2ps, BF16 via a 16-bit shift)
// x F32 activations: vec_dot / vec_dot_rows and the GEMM tile of the avx512 tier (AVX-512 F+BW;
// only called for tiers kAvx512 / kAmx).
//
// Per-pair arithmetic (the same in vec_dot, vec_dot_rows and the tile, whatever the tile shape,
// so matmul equals vec_dot bitwise for every M): two 16-lane accumulators, a0 over the elements
// with i % 32 < 16 and a1 over the others, one fma per 16 elements in element order over the
// k32 = k - k % 32 leading elements; then the last k % 32 elements as one or two masked steps
// (a0 takes [k32, k32 + 16), a1 the rest; lanes past k add +0); the result is row_sum(a0 + a1)
// (the fixed lane order of ops-avx512.cpp's row_sum). No scalar tail.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/quant-blocks.h"

namespace llmt::kernels {

namespace {

constexpr int64_t kLanes = 16;

inline __mmask16 first_lanes(int64_t n) {
  return static_cast<__mmask16>((1u << n) - 1u);
}

// ((l_i + l_{i+8}) + (l_{i+4} + l_{i+12}))_{i<4} summed as (s0 + s1) + (s2 + s3).
inline float row_sum(__m512 a) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 t = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// Sixteen weights as f32 from element i of a row (masked: lanes outside m are +0, not read).
struct LoadF32 {
  static __m512 load16(const void* w, int64_t i) {
    return _mm512_loadu_ps(static_cast<const float*>(w) + i);
  }
  static __m512 load16(const void* w, int64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(w) + i);
  }
};
struct LoadF16 {
  static __m512 load16(const void* w, int64_t i) {
    return _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i)));
  }
  static __m512 load16(const void* w, int64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(w) + i));
  }
};
struct LoadBF16 {
  static __m512 widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static __m512 load16(const void* w, int64_t i) {
    return widen(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i)));
  }
  static __m512 load16(const void* w, int64_t i, __mmask16 m) {
    return widen(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(w) + i));
  }
};

// The masked last step(s) of one pair over elements [k32, k) and the final reduction.
template <class L>
inline float finish_pair(const void* w, const float* x, int64_t k32, int64_t k, __m512 a0,
                         __m512 a1) {
  if (k32 < k) {
    const __mmask16 m0 = first_lanes(std::min(kLanes, k - k32));
    a0 = _mm512_fmadd_ps(L::load16(w, k32, m0), _mm512_maskz_loadu_ps(m0, x + k32), a0);
    if (k32 + kLanes < k) {
      const int64_t i = k32 + kLanes;
      const __mmask16 m1 = first_lanes(k - i);
      a1 = _mm512_fmadd_ps(L::load16(w, i, m1), _mm512_maskz_loadu_ps(m1, x + i), a1);
    }
  }
  return row_sum(_mm512_add_ps(a0, a1));
}

// vec_dot / vec_dot_rows: NX activation rows against one weight row.
template <class L>
struct FloatDot {
  template <int NX>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    const float* xr[NX];
    __m512 a0[NX], a1[NX];
    for (int t = 0; t < NX; ++t) {
      xr[t] = row_at<float>(x, xs, t);
      a0[t] = _mm512_setzero_ps();
      a1[t] = _mm512_setzero_ps();
    }
    const int64_t k32 = n / 32 * 32;
    for (int64_t i = 0; i < k32; i += 32) {
      const __m512 w0 = L::load16(w, i);
      const __m512 w1 = L::load16(w, i + kLanes);
      for (int t = 0; t < NX; ++t) {
        a0[t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xr[t] + i), a0[t]);
        a1[t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xr[t] + i + kLanes), a1[t]);
      }
    }
    for (int t = 0; t < NX; ++t) out[t * os] = finish_pair<L>(w, xr[t], k32, n, a0[t], a1[t]);
  }
};

// GEMM register tile: R weight rows x T tokens, each pair with its own a0 / a1 (so exactly
// FloatDot's per-pair operations), over the elements [i0, i1) (multiples of 32). A weight vector
// is loaded (converted) once per step for T tokens, an activation vector once for R rows. The
// accumulators go through acc between K chunks (exact). x: token t's elements [i0, i1) at
// x + t * xs; pair (r, t) at acc[(r * kTileT + t) * 2].
constexpr int kTileT = kGemmTokens;
// Keeps a loaded vector in a register (otherwise the compiler folds the load into each FMA).
inline __m512 in_reg(__m512 v) {
  asm("" : "+v"(v));
  return v;
}
template <class L, int R, int T>
inline void float_tile(const uint8_t* w, size_t ws, const float* x, int64_t xs, int64_t i0,
                       int64_t i1, __m512* acc) {
  const void* wr[R];
  for (int r = 0; r < R; ++r) wr[r] = w + static_cast<size_t>(r) * ws;
  __m512 a0[R][T], a1[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      a0[r][t] = acc[(r * kTileT + t) * 2];
      a1[r][t] = acc[(r * kTileT + t) * 2 + 1];
    }
  }
  const float* xi = x - i0;
  for (int64_t i = i0; i < i1; i += 32) {
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = in_reg(L::load16(wr[r], i));
    for (int t = 0; t < T; ++t) {
      const __m512 xv = in_reg(_mm512_loadu_ps(xi + t * xs + i));
      for (int r = 0; r < R; ++r) a0[r][t] = _mm512_fmadd_ps(wv[r], xv, a0[r][t]);
    }
    for (int r = 0; r < R; ++r) wv[r] = in_reg(L::load16(wr[r], i + kLanes));
    for (int t = 0; t < T; ++t) {
      const __m512 xv = in_reg(_mm512_loadu_ps(xi + t * xs + i + kLanes));
      for (int r = 0; r < R; ++r) a1[r][t] = _mm512_fmadd_ps(wv[r], xv, a1[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      acc[(r * kTileT + t) * 2] = a0[r][t];
      acc[(r * kTileT + t) * 2 + 1] = a1[r][t];
    }
  }
}

// Tokens [0, ntok) of R rows in tiles of 3 tokens (then 2 or 1).
template <class L, int R>
inline void float_rows(const uint8_t* w, size_t ws, const float* x, int64_t xs, int ntok,
                       int64_t i0, int64_t i1, __m512* acc) {
  int t = 0;
  for (; t + 3 <= ntok; t += 3) float_tile<L, R, 3>(w, ws, x + t * xs, xs, i0, i1, acc + t * 2);
  if (ntok - t == 2) float_tile<L, R, 2>(w, ws, x + t * xs, xs, i0, i1, acc + t * 2);
  if (ntok - t == 1) float_tile<L, R, 1>(w, ws, x + t * xs, xs, i0, i1, acc + t * 2);
}

// Rows [0, nrows) in groups of 4 (24 accumulators + 4 weight vectors in the 32 registers), then
// the 1..3 leftover rows.
template <class L>
inline void float_block(const uint8_t* w, size_t ws, int64_t nrows, const float* x, int64_t xs,
                        int ntok, int64_t i0, int64_t i1, __m512* acc) {
  int64_t r = 0;
  for (; r + 4 <= nrows; r += 4) {
    float_rows<L, 4>(w + r * ws, ws, x, xs, ntok, i0, i1, acc + r * kTileT * 2);
  }
  __m512* ar = acc + r * kTileT * 2;
  switch (nrows - r) {
    case 3:
      float_rows<L, 3>(w + r * ws, ws, x, xs, ntok, i0, i1, ar);
      break;
    case 2:
      float_rows<L, 2>(w + r * ws, ws, x, xs, ntok, i0, i1, ar);
      break;
    case 1:
      float_rows<L, 1>(w + r * ws, ws, x, xs, ntok, i0, i1, ar);
      break;
    default:
      break;
  }
}

// GemmTileFn (1 <= ntok <= kGemmTokens, aux unused). Blocks of 16 weight rows; K walked in
// chunks of kKc elements whose activations are first packed into an L1 buffer (as the AVX2 tile
// does, against power-of-two row strides aliasing in the cache); then per pair finish_pair.
constexpr int64_t kKc = 384;  // multiple of 32; 8 packed tokens = 12 KiB
template <class L>
void gemm_float(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
                size_t x_stride, const void* /*aux*/, float* y, int64_t y_stride, int ntok) {
  constexpr int64_t kRows = 16;
  const auto* wb = static_cast<const uint8_t*>(w);
  const float* xr[kTileT];
  for (int t = 0; t < ntok; ++t) xr[t] = row_at<float>(x, x_stride, t);
  const int64_t k32 = k / 32 * 32;
  alignas(64) float xp[kTileT * kKc];
  alignas(64) __m512 acc[kRows * kTileT * 2];
  for (int64_t r0 = 0; r0 < nrows; r0 += kRows) {
    const int64_t rows = std::min(kRows, nrows - r0);
    const uint8_t* wr = wb + static_cast<size_t>(r0) * w_stride;
    for (int64_t j = 0; j < rows * kTileT * 2; ++j) acc[j] = _mm512_setzero_ps();
    for (int64_t i0 = 0; i0 < k32; i0 += kKc) {
      const int64_t i1 = std::min(k32, i0 + kKc);
      for (int t = 0; t < ntok; ++t) {
        std::memcpy(xp + t * kKc, xr[t] + i0, static_cast<size_t>(i1 - i0) * sizeof(float));
      }
      float_block<L>(wr, w_stride, rows, xp, kKc, ntok, i0, i1, acc);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const void* wrow = wr + static_cast<size_t>(r) * w_stride;
      for (int t = 0; t < ntok; ++t) {
        const __m512* a = acc + (r * kTileT + t) * 2;
        y[t * y_stride + r0 + r] = finish_pair<L>(wrow, xr[t], k32, k, a[0], a[1]);
      }
    }
  }
}

}  // namespace

Avx2Entry avx512_entry_float(TensorType t) {
  switch (t) {
    case TensorType::F32:
      return avx2::entry_of<FloatDot<LoadF32>>(nullptr, nullptr);
    case TensorType::F16:
      return avx2::entry_of<FloatDot<LoadF16>>(nullptr, nullptr);
    case TensorType::BF16:
      return avx2::entry_of<FloatDot<LoadBF16>>(nullptr, nullptr);
    default:
      break;
  }
  return {nullptr, nullptr, nullptr, nullptr};
}

GemmTileFn avx512_gemm_tile_float(TensorType t) {
  switch (t) {
    case TensorType::F32:
      return gemm_float<LoadF32>;
    case TensorType::F16:
      return gemm_float<LoadF16>;
    case TensorType::BF16:
      return gemm_float<LoadBF16>;
    default:
      break;
  }
  return nullptr;
}

}  // namespace llmt::kernels
