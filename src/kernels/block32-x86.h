// The 32-element block formats as 256-bit x86 source compiled once per tier: code policies (the
// 32 codes of a block in element order, shared with the AVX2 dequantizers) and the dot of
// Q4_1 / Q5_1 weights with Q8_1 activations. Included by quants-avx2.cpp and the avxvnni tier's
// file (and vnni256-avx512.cpp, the EVEX build of the avxvnni kernels), each of which first defines
// `IntDot` (int-dot-x86.h) in llmt::kernels' anonymous namespace. Internal linkage (namespace
// block32).
//
// The dot is a template over NX (activation rows sharing one pass over the weight row); the
// per-pair arithmetic (accumulator layout, order, explicit fma) is the same for every NX and every
// tier (only the exact int32 block dots are formed by IntDot), so matmul is batch-invariant and
// the tiers are bitwise equal.
// Why IntDot::dpbusd is exact on AVX2 too (vpmaddubsw pair sums must fit int16): Q8_1 / Q8_0
// activation bytes lie in [-127, 127]; unsigned Q4_1 / Q5_1 codes are at most 31 (pair sums
// <= 2 * 31 * 127); signed codes enter as |q| <= 128 times |y| <= 127 (<= 32512 < 32767).
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels/int-dot-x86.h"
#include "kernels/quant-blocks.h"

namespace llmt::kernels {

namespace {
namespace block32 {

using avx2::fp16;
using avx2::hsum;

// Policies: Block type, activation block type, whether codes are signed, whether the format has
// an additive min (Q4_1/Q5_1), and codes(): the 32 codes in element order.
struct PolicyQ8_0 {
  using Block = BlockQ8_0;
  using Act = BlockQ8_0;
  static constexpr bool kSigned = true, kHasMin = false;
  static __m256i codes(const Block& b) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  }
};
struct PolicyQ4_0 {
  using Block = BlockQ4_0;
  using Act = BlockQ8_0;
  static constexpr bool kSigned = true, kHasMin = false;
  static __m256i codes(const Block& b) {
    return _mm256_sub_epi8(avx2::nibbles_32(b.qs), _mm256_set1_epi8(8));
  }
};
struct PolicyQ4_1 {
  using Block = BlockQ4_1;
  using Act = BlockQ8_1;
  static constexpr bool kSigned = false, kHasMin = true;
  static __m256i codes(const Block& b) { return avx2::nibbles_32(b.qs); }
};
struct PolicyQ5_0 {
  using Block = BlockQ5_0;
  using Act = BlockQ8_0;
  static constexpr bool kSigned = true, kHasMin = false;
  static __m256i codes(const Block& b) {
    const __m256i hi = _mm256_and_si256(avx2::bits_to_bytes_32(b.qh), _mm256_set1_epi8(0x10));
    return _mm256_sub_epi8(_mm256_or_si256(avx2::nibbles_32(b.qs), hi), _mm256_set1_epi8(16));
  }
};
struct PolicyQ5_1 {
  using Block = BlockQ5_1;
  using Act = BlockQ8_1;
  static constexpr bool kSigned = false, kHasMin = true;
  static __m256i codes(const Block& b) {
    const __m256i hi = _mm256_and_si256(avx2::bits_to_bytes_32(b.qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(avx2::nibbles_32(b.qs), hi);
  }
};
struct PolicyIq4Nl {
  using Block = BlockIq4Nl;
  using Act = BlockQ8_0;
  static constexpr bool kSigned = true, kHasMin = false;
  static __m256i codes(const Block& b) {
    const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues));
    return _mm256_shuffle_epi8(_mm256_set_m128i(table, table), avx2::nibbles_32(b.qs));
  }
};

// Weight blocks x Q8_0/Q8_1 blocks: per block an exact int32x8 dot (IntDot::dpbusd; signed codes
// through the sign trick |q| x sign(y, q)), scaled by d_w * d_x into one of two float
// accumulators (even / odd blocks); the min term of Q4_1/Q5_1 accumulates in a scalar via fma.
// The table uses it for Q4_1 / Q5_1 (the other formats' dots are gemm-q8-x86.h's).
template <class P>
struct Dot {
  template <int NX>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    using Act = typename P::Act;
    const auto* wb = static_cast<const typename P::Block*>(w);
    const Act* xb[NX];
    __m256 acc[NX][2];
    float accm[NX];
    for (int t = 0; t < NX; ++t) {
      xb[t] = row_at<Act>(x, xs, t);
      acc[t][0] = acc[t][1] = _mm256_setzero_ps();
      accm[t] = 0.0f;
    }
    const int64_t nb = n / kQK;
    for (int64_t i = 0; i < nb; ++i) {
      const __m256i q = P::codes(wb[i]);
      const float dw = fp16(wb[i].d);
      for (int t = 0; t < NX; ++t) {
        const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb[t][i].qs));
        const __m256i p = P::kSigned
                              ? IntDot::dpbusd(_mm256_setzero_si256(), _mm256_sign_epi8(q, q),
                                               _mm256_sign_epi8(y, q))
                              : IntDot::dpbusd(_mm256_setzero_si256(), q, y);
        __m256& a = acc[t][i & 1];
        a = _mm256_fmadd_ps(_mm256_set1_ps(dw * fp16(xb[t][i].d)), _mm256_cvtepi32_ps(p), a);
        if constexpr (P::kHasMin) accm[t] = std::fma(fp16(wb[i].m), fp16(xb[t][i].s), accm[t]);
      }
    }
    for (int t = 0; t < NX; ++t) out[t * os] = hsum(_mm256_add_ps(acc[t][0], acc[t][1])) + accm[t];
  }
};

}  // namespace block32
}  // namespace

}  // namespace llmt::kernels
