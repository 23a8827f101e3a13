// Q8_0 / Q4_0 / Q5_0 / IQ4_NL weight x Q8_0 activation kernels for matmul, as 256-bit x86 source
// compiled once per tier: the single-row dot (vec_dot) and the GEMM tile (one weight row x 8
// tokens per pass; each group of 8 weight blocks is decoded once and serves the 8 tokens).
// Included by gemm-q8-avx2.cpp and the avxvnni tier's file (and vnni256-avx512.cpp, the EVEX build
// of the avxvnni kernels), each of which first defines `IntDot` (int-dot-x86.h) in llmt::kernels'
// anonymous namespace: the integer dot step of its tier. Everything here has internal linkage
// (namespace gemm_q8).
//
// Per-pair arithmetic (the batch-invariance contract, shared by vec_dot and the tile): blocks
// are taken in groups of 8 (the last group padded with zero blocks); for group g the exact
// integer dots isum[j] of blocks 8g + j form an 8-lane int vector (computed by any means), and
//   acc = fma(dw * dx, float(isum), acc)      (8 lanes, acc starts at +0.0f)
// with dw[j], dx[j] the weight and activation block scales (fp16 -> fp32; 0 for padding). The
// result is the fixed-order horizontal sum of acc (avx2::hsum). The tiers differ only in how the
// exact int32 block dots are formed (IntDot::dpbusd), so their results are bitwise equal.
//
// Why IntDot::dpbusd is exact on AVX2 too (vpmaddubsw pair sums must fit int16): Q8_0 activation
// bytes lie in [-127, 127] (amax / 127 scaling). Signed weights (Q8_0: any byte, -128 included;
// IQ4_NL: [-127, 113]) are dotted as |w| (<= 128) x sign(y, w) (|.| <= 127): a pair sum is at
// most 2 * 128 * 127 = 32512 < 32767. Unsigned codes of Q4_0 (<= 15) and Q5_0 (<= 31) with the
// offset applied afterwards: at most 2 * 31 * 127 = 7874.
#pragma once

#include <immintrin.h>

#include <cstring>

#include "kernels/int-dot-x86.h"
#include "kernels/quant-blocks.h"

namespace llmt::kernels {

namespace {
namespace gemm_q8 {
using avx2::hsum;
using avx2::load256;
using avx2::reduce8;

// fp32 scales of blocks [0, nb) of an array of blocks (nb <= 8, other lanes 0).
template <class Block>
inline __m256 block_scales(const Block* b, int nb) {
  if (nb == 8) {  // in registers (a store + wide load would stall store forwarding)
    __m128i h = _mm_cvtsi32_si128(b[0].d);
    h = _mm_insert_epi16(h, b[1].d, 1);
    h = _mm_insert_epi16(h, b[2].d, 2);
    h = _mm_insert_epi16(h, b[3].d, 3);
    h = _mm_insert_epi16(h, b[4].d, 4);
    h = _mm_insert_epi16(h, b[5].d, 5);
    h = _mm_insert_epi16(h, b[6].d, 6);
    h = _mm_insert_epi16(h, b[7].d, 7);
    return _mm256_cvtph_ps(h);
  }
  alignas(16) uint16_t h[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int j = 0; j < nb; ++j) h[j] = b[j].d;
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
}

// Signed codes (element order) of a weight block.
// kOffset > 0: codes() = ucodes() - kOffset with ucodes() unsigned; the tile then dots the
// unsigned codes and subtracts kOffset * (block sum of the activation bytes) from the table.
struct Q80 {
  using Block = BlockQ8_0;
  static constexpr int kOffset = 0;
  static __m256i codes(const Block& b) { return load256(b.qs); }
  static __m256i ucodes(const Block& b) { return codes(b); }
};
struct Q40 {
  using Block = BlockQ4_0;
  static constexpr int kOffset = 8;
  static __m256i ucodes(const Block& b) { return avx2::nibbles_32(b.qs); }
  static __m256i codes(const Block& b) { return _mm256_sub_epi8(ucodes(b), _mm256_set1_epi8(8)); }
};
struct Q50 {
  using Block = BlockQ5_0;
  static constexpr int kOffset = 16;
  static __m256i ucodes(const Block& b) {
    const __m256i hi = _mm256_and_si256(avx2::bits_to_bytes_32(b.qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(avx2::nibbles_32(b.qs), hi);
  }
  static __m256i codes(const Block& b) { return _mm256_sub_epi8(ucodes(b), _mm256_set1_epi8(16)); }
};
struct Iq4Nl {
  using Block = BlockIq4Nl;
  static constexpr int kOffset = 0;
  static __m256i ucodes(const Block& b) { return codes(b); }
  static __m256i codes(const Block& b) {
    const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues));
    return _mm256_shuffle_epi8(_mm256_set_m128i(table, table), avx2::nibbles_32(b.qs));
  }
};

// Exact int32x8 partial dot of signed codes w (abs_w = |w|) with activation bytes y.
inline __m256i block_dot(__m256i abs_w, __m256i w, const int8_t* y) {
  return IntDot::dpbusd(_mm256_setzero_si256(), abs_w, _mm256_sign_epi8(load256(y), w));
}

template <class P>
void dot_blocks(int64_t n, float* out, const void* w, const void* x) {
  const auto* wb = static_cast<const typename P::Block*>(w);
  const auto* xb = static_cast<const BlockQ8_0*>(x);
  const int64_t nb = n / kQK;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t g = 0; g < nb; g += 8) {
    const int cnt = static_cast<int>(nb - g < 8 ? nb - g : 8);
    __m256i p[8];
    for (int j = 0; j < 8; ++j) {
      if (j < cnt) {
        const __m256i q = P::codes(wb[g + j]);
        p[j] = block_dot(_mm256_sign_epi8(q, q), q, xb[g + j].qs);
      } else {
        p[j] = _mm256_setzero_si256();
      }
    }
    const __m256 s = _mm256_mul_ps(block_scales(wb + g, cnt), block_scales(xb + g, cnt));
    acc = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(reduce8(p)), acc);
  }
  *out = hsum(acc);
}

// Tile: token t's row at x + t * x_stride; aux = the per-token scale tables (q80_table_bytes)
// of the group's first token, consecutive tokens q80_table_bytes(k) bytes apart.
template <class P>
void gemm_blocks(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
                 size_t x_stride, const void* aux, float* y, int64_t y_stride, int ntok) {
  const int64_t nb = k / kQK;
  const size_t tstride = q80_table_bytes(k);
  const int64_t nbp = (nb + 7) / 8 * 8;  // table: nbp fp32 scales, then nbp int32 block sums
  const BlockQ8_0* xb[8];
  const float* dx[8];
  for (int t = 0; t < 8; ++t) {
    const int tt = t < ntok ? t : 0;
    xb[t] = reinterpret_cast<const BlockQ8_0*>(static_cast<const uint8_t*>(x) + tt * x_stride);
    dx[t] = reinterpret_cast<const float*>(static_cast<const uint8_t*>(aux) + tt * tstride);
  }
  for (int64_t r = 0; r < nrows; ++r) {
    const auto* wb =
        reinterpret_cast<const typename P::Block*>(static_cast<const uint8_t*>(w) + r * w_stride);
    __m256 acc[8];
    for (int t = 0; t < 8; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < nb; g += 8) {
      const int cnt = static_cast<int>(nb - g < 8 ? nb - g : 8);
      // Decode the group's weights once into L1 scratch.
      alignas(32) __m256i wq[8], wa[8];
      for (int j = 0; j < 8; ++j) {
        if constexpr (P::kOffset > 0) {
          wa[j] = j < cnt ? P::ucodes(wb[g + j]) : _mm256_setzero_si256();
        } else {
          const __m256i q = j < cnt ? P::codes(wb[g + j]) : _mm256_setzero_si256();
          wq[j] = q;
          wa[j] = _mm256_sign_epi8(q, q);
        }
      }
      const __m256 dw = block_scales(wb + g, cnt);
      for (int t = 0; t < 8; ++t) {
        __m256i p[8];
        for (int j = 0; j < 8; ++j) {
          if (j >= cnt) {
            p[j] = _mm256_setzero_si256();
          } else if constexpr (P::kOffset > 0) {
            p[j] = IntDot::dpbusd(_mm256_setzero_si256(), wa[j], load256(xb[t][g + j].qs));
          } else {
            p[j] = block_dot(wa[j], wq[j], xb[t][g + j].qs);
          }
        }
        __m256i isum = reduce8(p);
        if constexpr (P::kOffset > 0) {
          // Block sums of the activation bytes follow the scales in the token's table.
          const __m256i sy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dx[t] + nbp + g));
          isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sy, P::kOffset == 8 ? 3 : 4));
        }
        const __m256 s = _mm256_mul_ps(dw, _mm256_loadu_ps(dx[t] + g));
        acc[t] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(isum), acc[t]);
      }
    }
    for (int t = 0; t < ntok; ++t) y[t * y_stride + r] = hsum(acc[t]);
  }
}

template <class P>
void dot_rows_loop(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs,
                   int nx) {
  for (int t = 0; t < nx; ++t)
    dot_blocks<P>(n, out + t * os, w, static_cast<const uint8_t*>(x) + t * xs);
}

// The vec_dot / vec_dot_rows of a format (other fields nullptr; all nullptr for other formats).
inline Avx2Entry entry(TensorType t) {
  switch (t) {
    case TensorType::Q8_0:
      return {nullptr, nullptr, dot_blocks<Q80>, dot_rows_loop<Q80>};
    case TensorType::Q4_0:
      return {nullptr, nullptr, dot_blocks<Q40>, dot_rows_loop<Q40>};
    case TensorType::Q5_0:
      return {nullptr, nullptr, dot_blocks<Q50>, dot_rows_loop<Q50>};
    case TensorType::IQ4_NL:
      return {nullptr, nullptr, dot_blocks<Iq4Nl>, dot_rows_loop<Iq4Nl>};
    default:
      break;
  }
  return {nullptr, nullptr, nullptr, nullptr};
}

// The 8-token tile of a format (nullptr for other formats).
inline GemmTileFn tile(TensorType t) {
  switch (t) {
    case TensorType::Q8_0:
      return gemm_blocks<Q80>;
    case TensorType::Q4_0:
      return gemm_blocks<Q40>;
    case TensorType::Q5_0:
      return gemm_blocks<Q50>;
    case TensorType::IQ4_NL:
      return gemm_blocks<Iq4Nl>;
    default:
      break;
  }
  return nullptr;
}

}  // namespace gemm_q8
}  // namespace

}  // namespace llmt::kernels
