// AVX2 kernels for the k-quant formats: dequantize for Q4_K..Q6_K and the Q8_K activation
// quantizer (byte-identical to the scalar one). The dots of all k-quant formats live in
// gemm-k-avx2.cpp with their GEMM tiles; this file assembles the table entries.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels/quant-blocks.h"

namespace llmt::kernels {

namespace {

using avx2::fp16;

inline __m256i load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// ---------------------------------------------------------------- dequantize

// 32 unsigned codes -> floats d*code - m (or d*code when !kMin), scalar operation order.
template <bool kMin>
inline void store_codes(__m256i codes, __m256 d, __m256 m, float* dst) {
  const __m128i lo = _mm256_castsi256_si128(codes), hi = _mm256_extracti128_si256(codes, 1);
  const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
  for (int j = 0; j < 4; ++j) {
    __m256 f = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[j])));
    if constexpr (kMin) f = _mm256_sub_ps(f, m);
    _mm256_storeu_ps(dst + 8 * j, f);
  }
}

template <bool kFive>
void dequant_q45_k(const void* src, float* dst, int64_t n) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i one = _mm256_set1_epi8(0x01);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* scales;
    const uint8_t* qs;
    const uint8_t* qh = nullptr;
    float d, dmin;
    if constexpr (kFive) {
      const auto& b = static_cast<const BlockQ5K*>(src)[i];
      scales = b.scales, qs = b.qs, qh = b.qh, d = fp16(b.d), dmin = fp16(b.dmin);
    } else {
      const auto& b = static_cast<const BlockQ4K*>(src)[i];
      scales = b.scales, qs = b.qs, d = fp16(b.d), dmin = fp16(b.dmin);
    }
    const __m256i hbits = kFive ? load256(qh) : _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j, dst += 64) {
      const __m256i q = load256(qs + 32 * j);
      __m256i lo = _mm256_and_si256(q, m4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (kFive) {
        lo = _mm256_or_si256(
            lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j), one), 4));
        hi = _mm256_or_si256(
            hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j + 1), one), 4));
      }
      uint8_t sc, m;
      k4_scale_min(2 * j, scales, &sc, &m);
      store_codes<true>(lo, _mm256_set1_ps(d * sc), _mm256_set1_ps(dmin * m), dst);
      k4_scale_min(2 * j + 1, scales, &sc, &m);
      store_codes<true>(hi, _mm256_set1_ps(d * sc), _mm256_set1_ps(dmin * m), dst + 32);
    }
  }
}

void dequant_q6_k(const void* src, float* dst, int64_t n) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i m2 = _mm256_set1_epi8(0x03);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const BlockQ6K& b = static_cast<const BlockQ6K*>(src)[i];
    const float d = fp16(b.d);
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = load256(b.ql + 64 * h);
      const __m256i ql1 = load256(b.ql + 64 * h + 32);
      const __m256i qh = load256(b.qh + 32 * h);
      const __m256i runs[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, m4),
                          _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4)),
          _mm256_or_si256(_mm256_and_si256(ql1, m4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4)),
      };
      for (int run = 0; run < 4; ++run, dst += 32) {
        // Scalar order: (d * sc) * (code - 32).
        const __m256i v = _mm256_sub_epi8(runs[run], _mm256_set1_epi8(32));
        const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
        const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int j = 0; j < 4; ++j) {
          const __m256 ds =
              _mm256_set1_ps(d * static_cast<float>(b.scales[8 * h + 2 * run + j / 2]));
          _mm256_storeu_ps(dst + 8 * j,
                           _mm256_mul_ps(ds, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[j]))));
        }
      }
    }
  }
}

// ---------------------------------------------------------------- Q8_K quantizer

void quantize_q8_k(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8K*>(dst);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  for (int64_t i = 0; i < n / kQKK; ++i, src += kQKK) {
    __m256 mv = _mm256_setzero_ps();
    for (int j = 0; j < kQKK; j += 8)
      mv = _mm256_max_ps(mv, _mm256_and_ps(_mm256_loadu_ps(src + j), abs_mask));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    const float amax = _mm_cvtss_f32(s);
    if (amax == 0.0f) {
      std::memset(&b[i], 0, sizeof(BlockQ8K));
      continue;
    }
    float max = 0.0f;  // first element of largest magnitude, as in the scalar quantizer
    const __m256 amax_v = _mm256_set1_ps(amax);
    for (int j = 0; j < kQKK; j += 8) {
      const __m256 eq =
          _mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(src + j), abs_mask), amax_v, _CMP_EQ_OQ);
      const int bits = _mm256_movemask_ps(eq);
      if (bits != 0) {
        max = src[j + __builtin_ctz(static_cast<unsigned>(bits))];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const __m256 m = _mm256_set1_ps(iscale);
    const __m256i lim = _mm256_set1_epi32(127);
    const __m256i nlim = _mm256_set1_epi32(-127);
    for (int j = 0; j < kQKK; j += 32) {
      __m256i v[4];
      for (int k = 0; k < 4; ++k) {
        const __m256 r = _mm256_round_ps(_mm256_mul_ps(m, _mm256_loadu_ps(src + j + 8 * k)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v[k] = _mm256_max_epi32(nlim, _mm256_min_epi32(lim, _mm256_cvtps_epi32(r)));
      }
      const __m256i p8 =
          _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      const __m256i ordered =
          _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(b[i].qs + j), ordered);
      // Group sums of the two 16-element groups: maddubs with ones gives pair sums (i16), madd
      // gives quads (i32); add within each 128-bit lane.
      const __m256i pairs = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), ordered),
                                              _mm256_set1_epi16(1));
      __m256i t = _mm256_hadd_epi32(pairs, pairs);
      t = _mm256_hadd_epi32(t, t);
      b[i].bsums[j / 16] = static_cast<int16_t>(_mm256_extract_epi32(t, 0));
      b[i].bsums[j / 16 + 1] = static_cast<int16_t>(_mm256_extract_epi32(t, 4));
    }
    b[i].d = 1.0f / iscale;
  }
}

}  // namespace

Avx2Entry avx2_entry_k(TensorType t) {
  switch (t) {
    case TensorType::Q2_K: {
      const Avx2Entry g = avx2_entry_gemm_k(t);
      return {nullptr, quantize_q8_k, g.vec_dot, g.vec_dot_rows};
    }
    case TensorType::Q3_K: {
      const Avx2Entry g = avx2_entry_gemm_k(t);
      return {nullptr, quantize_q8_k, g.vec_dot, g.vec_dot_rows};
    }
    case TensorType::Q4_K: {
      // Dots from the GEMM file (its tile and vec_dot share one arithmetic).
      const Avx2Entry g = avx2_entry_gemm_k(t);
      return {dequant_q45_k<false>, quantize_q8_k, g.vec_dot, g.vec_dot_rows};
    }
    case TensorType::Q5_K: {
      const Avx2Entry g = avx2_entry_gemm_k(t);
      return {dequant_q45_k<true>, quantize_q8_k, g.vec_dot, g.vec_dot_rows};
    }
    case TensorType::Q6_K: {
      const Avx2Entry g = avx2_entry_gemm_k(t);
      return {dequant_q6_k, quantize_q8_k, g.vec_dot, g.vec_dot_rows};
    }
    default:
      break;
  }
  return {nullptr, nullptr, nullptr, nullptr};
}

}  // namespace llmt::kernels
