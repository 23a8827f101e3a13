// AVX2 + FMA + F16C kernels for the float formats and the 32-element block formats, plus the
// Q8_0/Q8_1 activation quantizers (byte-identical to the scalar ones). Compiled with those flags
// and only called when detect_isa() reported them.
//
// Dot kernels are templates over NX (activation rows sharing one pass over the weight row); the
// per-pair arithmetic (accumulator layout, order, explicit fma) is the same for every NX, which
// is what makes matmul batch-invariant. Scalar tails use std::fma explicitly so that no
// compiler contraction choice can differ between instantiations.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/int-dot-x86.h"
#include "kernels/quant-blocks.h"

namespace llmt::kernels {
namespace {
using IntDot = MaddubsDot;  // the integer dot step of block32-x86.h in this file
}  // namespace
}  // namespace llmt::kernels

#include "kernels/block32-x86.h"

namespace llmt::kernels {

namespace {

using avx2::fp16;
using avx2::hsum;

// ---------------------------------------------------------------- float formats

struct LoadF32 {
  static __m256 load8(const void* w, int64_t i) {
    return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  }
  static float at(const void* w, int64_t i) { return static_cast<const float*>(w)[i]; }
};
struct LoadF16 {
  static __m256 load8(const void* w, int64_t i) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i)));
  }
  static float at(const void* w, int64_t i) { return fp16(static_cast<const uint16_t*>(w)[i]); }
};
struct LoadBF16 {
  static __m256 load8(const void* w, int64_t i) {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static float at(const void* w, int64_t i) {
    return bf16_to_fp32(static_cast<const uint16_t*>(w)[i]);
  }
};

// Float weights x float activations: two 8-lane accumulators over 16-element steps, then a
// scalar tail, then a fixed horizontal sum.
template <class L>
struct FloatDot {
  template <int NX>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    const float* xr[NX];
    __m256 a0[NX], a1[NX];
    float tail[NX];
    for (int t = 0; t < NX; ++t) {
      xr[t] = row_at<float>(x, xs, t);
      a0[t] = _mm256_setzero_ps();
      a1[t] = _mm256_setzero_ps();
      tail[t] = 0.0f;
    }
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m256 w0 = L::load8(w, i);
      const __m256 w1 = L::load8(w, i + 8);
      for (int t = 0; t < NX; ++t) {
        a0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr[t] + i), a0[t]);
        a1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr[t] + i + 8), a1[t]);
      }
    }
    for (; i < n; ++i) {
      const float wi = L::at(w, i);
      for (int t = 0; t < NX; ++t) tail[t] = std::fma(wi, xr[t][i], tail[t]);
    }
    for (int t = 0; t < NX; ++t) out[t * os] = hsum(_mm256_add_ps(a0[t], a1[t])) + tail[t];
  }
};

// GEMM register tile for the float formats: R weight rows x T tokens per pass, each (row, token)
// pair with its own two accumulators, so the per-pair arithmetic is exactly FloatDot's (a0 over
// elements i % 16 < 8, a1 over the rest, fma in element order; the caller adds the same scalar
// std::fma tail and hsum(a0 + a1) + tail). A weight vector is loaded (and converted) once per
// pass and serves T tokens; an activation vector serves R rows. The pass covers elements
// [i0, i1) (multiples of 16): the accumulators are loaded from and stored back to acc (exact),
// so K can be walked in cache-sized chunks without changing any pair's operation order.
// x: token t's elements [i0, i1) at x + t * xs; acc: pair (r, t) at acc[(r * kFloatTileT + t) * 2].
constexpr int kFloatTileT = kGemmTokens;
// Pins a loaded vector to a register: without it the compiler folds the load into every FMA
// that uses it (T or R loads instead of one), and the tile becomes load-bound again.
inline __m256 in_reg(__m256 v) {
  asm("" : "+x"(v));
  return v;
}
template <class L, int R, int T>
inline void float_tile(const uint8_t* w, size_t ws, const float* x, int64_t xs, int64_t i0,
                       int64_t i1, __m256* acc) {
  const void* wr[R];
  for (int r = 0; r < R; ++r) wr[r] = w + static_cast<size_t>(r) * ws;
  __m256 a0[R][T], a1[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      a0[r][t] = acc[(r * kFloatTileT + t) * 2];
      a1[r][t] = acc[(r * kFloatTileT + t) * 2 + 1];
    }
  }
  const float* xi = x - i0;
  for (int64_t i = i0; i < i1; i += 16) {
    __m256 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = in_reg(L::load8(wr[r], i));
    for (int t = 0; t < T; ++t) {
      const __m256 xv = in_reg(_mm256_loadu_ps(xi + t * xs + i));
      for (int r = 0; r < R; ++r) a0[r][t] = _mm256_fmadd_ps(wv[r], xv, a0[r][t]);
    }
    for (int r = 0; r < R; ++r) wv[r] = in_reg(L::load8(wr[r], i + 8));
    for (int t = 0; t < T; ++t) {
      const __m256 xv = in_reg(_mm256_loadu_ps(xi + t * xs + i + 8));
      for (int r = 0; r < R; ++r) a1[r][t] = _mm256_fmadd_ps(wv[r], xv, a1[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      acc[(r * kFloatTileT + t) * 2] = a0[r][t];
      acc[(r * kFloatTileT + t) * 2 + 1] = a1[r][t];
    }
  }
}

// Rows [0, nrows) x tokens [0, ntok) over elements [i0, i1): rows in pairs x tokens in threes,
// then the leftover tokens, then a single-row pass for an odd last row.
template <class L>
inline void float_block(const uint8_t* w, size_t ws, int64_t nrows, const float* x, int64_t xs,
                        int ntok, int64_t i0, int64_t i1, __m256* acc) {
  int64_t r = 0;
  for (; r + 2 <= nrows; r += 2) {
    const uint8_t* wr = w + static_cast<size_t>(r) * ws;
    __m256* ar = acc + r * kFloatTileT * 2;
    int t = 0;
    for (; t + 3 <= ntok; t += 3) float_tile<L, 2, 3>(wr, ws, x + t * xs, xs, i0, i1, ar + t * 2);
    if (ntok - t == 2) float_tile<L, 2, 2>(wr, ws, x + t * xs, xs, i0, i1, ar + t * 2);
    if (ntok - t == 1) float_tile<L, 2, 1>(wr, ws, x + t * xs, xs, i0, i1, ar + t * 2);
  }
  if (r < nrows) {
    const uint8_t* wr = w + static_cast<size_t>(r) * ws;
    __m256* ar = acc + r * kFloatTileT * 2;
    int t = 0;
    for (; t + 4 <= ntok; t += 4) float_tile<L, 1, 4>(wr, ws, x + t * xs, xs, i0, i1, ar + t * 2);
    switch (ntok - t) {
      case 3:
        float_tile<L, 1, 3>(wr, ws, x + t * xs, xs, i0, i1, ar + t * 2);
        break;
      case 2:
        float_tile<L, 1, 2>(wr, ws, x + t * xs, xs, i0, i1, ar + t * 2);
        break;
      case 1:
        float_tile<L, 1, 1>(wr, ws, x + t * xs, xs, i0, i1, ar + t * 2);
        break;
      default:
        break;
    }
  }
}

// GemmTileFn for F32/F16/BF16 weights x F32 activations (aux unused). Blocks of 16 weight rows;
// K walked in chunks of kFloatKc elements whose activations are first copied into a packed L1
// buffer (power-of-two row strides would otherwise map every token's chunk onto the same cache
// sets); then per pair FloatDot's scalar tail and horizontal sum.
constexpr int64_t kFloatKc = 384;  // multiple of 16; 8 packed tokens = 12 KiB
template <class L>
void gemm_float(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
                size_t x_stride, const void* /*aux*/, float* y, int64_t y_stride, int ntok) {
  constexpr int64_t kRows = 16;
  const auto* wb = static_cast<const uint8_t*>(w);
  const float* xr[kFloatTileT];
  for (int t = 0; t < ntok; ++t) xr[t] = row_at<float>(x, x_stride, t);
  const int64_t k16 = k / 16 * 16;
  alignas(32) float xp[kFloatTileT * kFloatKc];
  alignas(32) __m256 acc[kRows * kFloatTileT * 2];
  for (int64_t r0 = 0; r0 < nrows; r0 += kRows) {
    const int64_t rows = std::min(kRows, nrows - r0);
    const uint8_t* wr = wb + static_cast<size_t>(r0) * w_stride;
    for (int64_t j = 0; j < rows * kFloatTileT * 2; ++j) acc[j] = _mm256_setzero_ps();
    for (int64_t i0 = 0; i0 < k16; i0 += kFloatKc) {
      const int64_t i1 = std::min(k16, i0 + kFloatKc);
      for (int t = 0; t < ntok; ++t)
        std::memcpy(xp + t * kFloatKc, xr[t] + i0, static_cast<size_t>(i1 - i0) * sizeof(float));
      float_block<L>(wr, w_stride, rows, xp, kFloatKc, ntok, i0, i1, acc);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const void* wrow = wr + static_cast<size_t>(r) * w_stride;
      for (int t = 0; t < ntok; ++t) {
        float tail = 0.0f;
        for (int64_t i = k16; i < k; ++i) tail = std::fma(L::at(wrow, i), xr[t][i], tail);
        const __m256* a = acc + (r * kFloatTileT + t) * 2;
        y[t * y_stride + r0 + r] = hsum(_mm256_add_ps(a[0], a[1])) + tail;
      }
    }
  }
}

void dequant_f16(const void* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, LoadF16::load8(src, i));
  for (; i < n; ++i) dst[i] = LoadF16::at(src, i);
}

void dequant_bf16(const void* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, LoadBF16::load8(src, i));
  for (; i < n; ++i) dst[i] = LoadBF16::at(src, i);
}

// ---------------------------------------------------------------- 32-element block formats
// (code policies and the Q4_1 / Q5_1 dot: block32-x86.h)

using block32::PolicyIq4Nl;
using block32::PolicyQ4_0;
using block32::PolicyQ4_1;
using block32::PolicyQ5_0;
using block32::PolicyQ5_1;
using block32::PolicyQ8_0;

// Dequantize: codes to floats, times d (then + m), in the scalar kernels' operation order.
template <class P>
void dequant_block32(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const typename P::Block*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, dst += kQK) {
    const __m256i q = P::codes(b[i]);
    const __m256 d = _mm256_set1_ps(fp16(b[i].d));
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int j = 0; j < 4; ++j) {
      const __m256i v =
          P::kSigned ? _mm256_cvtepi8_epi32(parts[j]) : _mm256_cvtepu8_epi32(parts[j]);
      __m256 f = _mm256_mul_ps(d, _mm256_cvtepi32_ps(v));
      if constexpr (P::kHasMin) f = _mm256_add_ps(f, _mm256_set1_ps(fp16(b[i].m)));
      _mm256_storeu_ps(dst + 8 * j, f);
    }
  }
}

// ---------------------------------------------------------------- activation quantizers

// Quantizes 32 floats with multiplier id (round half to even) into qs; returns sum of codes.
inline int quantize32(const float* src, float id, int8_t* qs) {
  const __m256 m = _mm256_set1_ps(id);
  __m256i v[4];
  for (int j = 0; j < 4; ++j) {
    const __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(src + 8 * j), m),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v[j] = _mm256_cvtps_epi32(r);
  }
  const __m256i s = _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
  const __m256i p16a = _mm256_packs_epi32(v[0], v[1]);
  const __m256i p16b = _mm256_packs_epi32(v[2], v[3]);
  const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
  const __m256i ordered =
      _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), ordered);
  return _mm_cvtsi128_si32(s4);
}

inline float amax32(const float* src) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 m = _mm256_and_ps(_mm256_loadu_ps(src), abs_mask);
  for (int j = 1; j < 4; ++j)
    m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(src + 8 * j), abs_mask));
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

void quantize_q8_0(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, src += kQK) {
    const float d = amax32(src) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = fp32_to_fp16(d);
    quantize32(src, id, b[i].qs);
  }
}

void quantize_q8_1(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, src += kQK) {
    const float d = amax32(src) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int sum = quantize32(src, id, b[i].qs);
    b[i].d = fp32_to_fp16(d);
    b[i].s = fp32_to_fp16(d * static_cast<float>(sum));
  }
}

}  // namespace

Avx2Entry avx2_entry(TensorType t) {
  using avx2::entry_of;
  switch (t) {
    case TensorType::F32:
      return entry_of<FloatDot<LoadF32>>(nullptr, nullptr);
    case TensorType::F16:
      return entry_of<FloatDot<LoadF16>>(dequant_f16, nullptr);
    case TensorType::BF16:
      return entry_of<FloatDot<LoadBF16>>(dequant_bf16, nullptr);
    case TensorType::Q8_0: {
      // Dots from the GEMM file (its tile and vec_dot share one arithmetic).
      const Avx2Entry g = avx2_entry_gemm_q8(t);
      return {dequant_block32<PolicyQ8_0>, quantize_q8_0, g.vec_dot, g.vec_dot_rows};
    }
    case TensorType::Q4_0: {
      // Dots from the GEMM file (its tile and vec_dot share one arithmetic).
      const Avx2Entry g = avx2_entry_gemm_q8(t);
      return {dequant_block32<PolicyQ4_0>, quantize_q8_0, g.vec_dot, g.vec_dot_rows};
    }
    case TensorType::Q4_1:
      return entry_of<block32::Dot<PolicyQ4_1>>(dequant_block32<PolicyQ4_1>, quantize_q8_1);
    case TensorType::Q5_0: {
      const Avx2Entry g = avx2_entry_gemm_q8(t);
      return {dequant_block32<PolicyQ5_0>, quantize_q8_0, g.vec_dot, g.vec_dot_rows};
    }
    case TensorType::Q5_1:
      return entry_of<block32::Dot<PolicyQ5_1>>(dequant_block32<PolicyQ5_1>, quantize_q8_1);
    case TensorType::IQ4_NL: {
      const Avx2Entry g = avx2_entry_gemm_q8(t);
      return {dequant_block32<PolicyIq4Nl>, quantize_q8_0, g.vec_dot, g.vec_dot_rows};
    }
    default:
      break;
  }
  return avx2_entry_k(t);
}

GemmTileFn avx2_gemm_tile_float(TensorType t) {
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
