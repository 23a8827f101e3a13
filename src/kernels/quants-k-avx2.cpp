// AVX2 kernels for the k-quant formats (Q2_K..Q6_K weights x Q8_K activations) and the Q8_K
// activation quantizer (byte-identical to the scalar one). Same NX-template scheme as
// quants-avx2.cpp: one pass over a weight super-block serves NX activation rows, with identical
// per-pair arithmetic for every NX.
//
// Per super-block and activation row the integer part is exact: codes (unsigned) x q8 via
// maddubs, times the group scale via madd, into int32x8; offsets of signed codes (-32 for Q6_K,
// -4 for Q3_K) are removed exactly with the activation group sums (bsums). The float part is one
// fma per super-block (plus one for the min term of Q2_K/Q4_K/Q5_K, kept in its own vector).
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels/quant-blocks.h"

namespace llmt::kernels {

namespace {

using avx2::fp16;
using avx2::hsum;

template <class T>
const T* row_at(const void* x, size_t x_stride, int t) {
  return reinterpret_cast<const T*>(static_cast<const uint8_t*>(x) + static_cast<size_t>(t) * x_stride);
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Per-lane int32 partial sums of sum_g w16[g] * bsums[g] over the 16 groups (w16: 16 int16).
inline __m256i group_dot(__m256i w16, const int16_t* bsums) { return _mm256_madd_epi16(w16, load256(bsums)); }

// int16 scale vector: low 128-bit lane = s0, high lane = s1.
inline __m256i scale_pair(int s0, int s1) {
  return _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(s1)), _mm_set1_epi16(static_cast<int16_t>(s0)));
}

// codes (u8, 32) x activation bytes (s8, 32) x per-lane int16 scales -> int32x8.
inline __m256i scaled_dot(__m256i codes, const int8_t* y, __m256i scales) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(codes, load256(y)), scales);
}

// Shared driver state for NX activation rows.
template <int NX>
struct Rows {
  const BlockQ8K* xb[NX];
  __m256 acc[NX];
  __m256 accm[NX];  // min terms (Q2_K/Q4_K/Q5_K), subtracted at the end
  Rows(const void* x, size_t xs) {
    for (int t = 0; t < NX; ++t) {
      xb[t] = row_at<BlockQ8K>(x, xs, t);
      acc[t] = _mm256_setzero_ps();
      accm[t] = _mm256_setzero_ps();
    }
  }
  void store(float* out, int64_t os) const {
    for (int t = 0; t < NX; ++t) out[t * os] = hsum(acc[t]) - hsum(accm[t]);
  }
};

// ---------------------------------------------------------------- Q4_K / Q5_K

template <bool kFive>
struct DotQ45K {
  template <int NX>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    Rows<NX> r(x, xs);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i one = _mm256_set1_epi8(0x01);
    for (int64_t i = 0; i < n / kQKK; ++i) {
      const uint8_t* scales;
      const uint8_t* qs;
      const uint8_t* qh = nullptr;
      float d, dmin;
      if constexpr (kFive) {
        const auto& b = static_cast<const BlockQ5K*>(w)[i];
        scales = b.scales, qs = b.qs, qh = b.qh, d = fp16(b.d), dmin = fp16(b.dmin);
      } else {
        const auto& b = static_cast<const BlockQ4K*>(w)[i];
        scales = b.scales, qs = b.qs, d = fp16(b.d), dmin = fp16(b.dmin);
      }
      alignas(8) uint8_t sc[8];
      alignas(8) uint8_t mn[8];
      k4_scales_mins(scales, sc, mn);
      // Each sub-block's min covers two bsums groups: duplicate every min.
      const __m128i m8 = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn)));
      const __m256i mins16 = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
      __m256i sumi[NX];
      for (int t = 0; t < NX; ++t) sumi[t] = _mm256_setzero_si256();
      const __m256i hbits = kFive ? load256(qh) : _mm256_setzero_si256();
      for (int j = 0; j < 4; ++j) {
        const __m256i q = load256(qs + 32 * j);
        __m256i lo = _mm256_and_si256(q, m4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if constexpr (kFive) {
          lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j), one), 4));
          hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j + 1), one), 4));
        }
        const __m256i s_lo = _mm256_set1_epi16(sc[2 * j]);
        const __m256i s_hi = _mm256_set1_epi16(sc[2 * j + 1]);
        for (int t = 0; t < NX; ++t) {
          const int8_t* y = r.xb[t][i].qs + 64 * j;
          sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(scaled_dot(lo, y, s_lo), scaled_dot(hi, y + 32, s_hi)));
        }
      }
      for (int t = 0; t < NX; ++t) {
        const __m256i summ = group_dot(mins16, r.xb[t][i].bsums);
        const float dx = r.xb[t][i].d;
        r.acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(sumi[t]), r.acc[t]);
        r.accm[t] = _mm256_fmadd_ps(_mm256_set1_ps(dmin * dx), _mm256_cvtepi32_ps(summ), r.accm[t]);
      }
    }
    r.store(out, os);
  }
};

// ---------------------------------------------------------------- Q6_K

struct DotQ6K {
  template <int NX>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    Rows<NX> r(x, xs);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i m2 = _mm256_set1_epi8(0x03);
    const auto* wb = static_cast<const BlockQ6K*>(w);
    for (int64_t i = 0; i < n / kQKK; ++i) {
      const BlockQ6K& b = wb[i];
      __m256i sumi[NX];
      for (int t = 0; t < NX; ++t) sumi[t] = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = load256(b.ql + 64 * h);
        const __m256i ql1 = load256(b.ql + 64 * h + 32);
        const __m256i qh = load256(b.qh + 32 * h);
        const int8_t* sc = b.scales + 8 * h;
        const __m256i runs[4] = {
            _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4)),
            _mm256_or_si256(_mm256_and_si256(ql1, m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4)),
        };
        for (int run = 0; run < 4; ++run) {
          const __m256i s = scale_pair(sc[2 * run], sc[2 * run + 1]);
          for (int t = 0; t < NX; ++t) {
            sumi[t] = _mm256_add_epi32(sumi[t], scaled_dot(runs[run], r.xb[t][i].qs + 128 * h + 32 * run, s));
          }
        }
      }
      const float d = fp16(b.d);
      const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
      for (int t = 0; t < NX; ++t) {
        // Remove the -32 code offset: 32 * sum_g sc_g * bsum_g.
        const __m256i corr = _mm256_slli_epi32(group_dot(sc16, r.xb[t][i].bsums), 5);
        const __m256i total = _mm256_sub_epi32(sumi[t], corr);
        r.acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * r.xb[t][i].d), _mm256_cvtepi32_ps(total), r.acc[t]);
      }
    }
    r.store(out, os);
  }
};

// ---------------------------------------------------------------- Q2_K / Q3_K

// Both: per half h, 32 code bytes; run k (0..3) takes bits 2k..2k+1 of each byte for elements
// 128h + 32k + l, groups 8h + 2k (l < 16) and 8h + 2k + 1.
struct DotQ2K {
  template <int NX>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    Rows<NX> r(x, xs);
    const __m256i m2 = _mm256_set1_epi8(0x03);
    const auto* wb = static_cast<const BlockQ2K*>(w);
    for (int64_t i = 0; i < n / kQKK; ++i) {
      const BlockQ2K& b = wb[i];
      __m256i sumi[NX];
      for (int t = 0; t < NX; ++t) sumi[t] = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {
        const __m256i q = load256(b.qs + 32 * h);
        for (int k = 0; k < 4; ++k) {
          const __m256i codes = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m2);
          const int g = 8 * h + 2 * k;
          const __m256i s = scale_pair(b.scales[g] & 0x0F, b.scales[g + 1] & 0x0F);
          for (int t = 0; t < NX; ++t) {
            sumi[t] = _mm256_add_epi32(sumi[t], scaled_dot(codes, r.xb[t][i].qs + 128 * h + 32 * k, s));
          }
        }
      }
      const float d = fp16(b.d), dmin = fp16(b.dmin);
      const __m256i mins16 = _mm256_cvtepu8_epi16(
          _mm_and_si128(_mm_srli_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)), 4),
                        _mm_set1_epi8(0x0F)));
      for (int t = 0; t < NX; ++t) {
        const __m256i summ = group_dot(mins16, r.xb[t][i].bsums);
        const float dx = r.xb[t][i].d;
        r.acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(sumi[t]), r.acc[t]);
        r.accm[t] = _mm256_fmadd_ps(_mm256_set1_ps(dmin * dx), _mm256_cvtepi32_ps(summ), r.accm[t]);
      }
    }
    r.store(out, os);
  }
};

struct DotQ3K {
  template <int NX>
  static void run(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs) {
    Rows<NX> r(x, xs);
    const __m256i m2 = _mm256_set1_epi8(0x03);
    const __m256i one = _mm256_set1_epi8(0x01);
    const auto* wb = static_cast<const BlockQ3K*>(w);
    for (int64_t i = 0; i < n / kQKK; ++i) {
      const BlockQ3K& b = wb[i];
      // Scales as in k3_scales(), assembled in a vector (avoids a store-forwarding stall).
      uint32_t w3[3];
      std::memcpy(w3, b.scales, 12);
      const __m128i sc8 = _mm_sub_epi8(
          _mm_setr_epi32(static_cast<int>((w3[0] & 0x0F0F0F0Fu) | ((w3[2] & 0x03030303u) << 4)),
                         static_cast<int>((w3[1] & 0x0F0F0F0Fu) | (((w3[2] >> 2) & 0x03030303u) << 4)),
                         static_cast<int>(((w3[0] >> 4) & 0x0F0F0F0Fu) | (((w3[2] >> 4) & 0x03030303u) << 4)),
                         static_cast<int>(((w3[1] >> 4) & 0x0F0F0F0Fu) | (((w3[2] >> 6) & 0x03030303u) << 4))),
          _mm_set1_epi8(32));
      alignas(16) int8_t sc[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(sc), sc8);
      const __m256i hm = load256(b.hmask);
      __m256i sumi[NX];
      for (int t = 0; t < NX; ++t) sumi[t] = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {
        const __m256i q = load256(b.qs + 32 * h);
        for (int k = 0; k < 4; ++k) {
          // Unsigned code 0..7 = low 2 bits | high bit << 2; the true value is code - 4.
          const __m256i hbit = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), one);
          const __m256i codes = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m2),
                                                _mm256_slli_epi16(hbit, 2));
          const int g = 8 * h + 2 * k;
          const __m256i s = scale_pair(sc[g], sc[g + 1]);
          for (int t = 0; t < NX; ++t) {
            sumi[t] = _mm256_add_epi32(sumi[t], scaled_dot(codes, r.xb[t][i].qs + 128 * h + 32 * k, s));
          }
        }
      }
      const float d = fp16(b.d);
      const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
      for (int t = 0; t < NX; ++t) {
        // Remove the -4 code offset: 4 * sum_g sc_g * bsum_g.
        const __m256i corr = _mm256_slli_epi32(group_dot(sc16, r.xb[t][i].bsums), 2);
        const __m256i total = _mm256_sub_epi32(sumi[t], corr);
        r.acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * r.xb[t][i].d), _mm256_cvtepi32_ps(total), r.acc[t]);
      }
    }
    r.store(out, os);
  }
};

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
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j + 1), one), 4));
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
          _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4)),
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
          const __m256 ds = _mm256_set1_ps(d * static_cast<float>(b.scales[8 * h + 2 * run + j / 2]));
          _mm256_storeu_ps(dst + 8 * j, _mm256_mul_ps(ds, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[j]))));
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
    for (int j = 0; j < kQKK; j += 8) mv = _mm256_max_ps(mv, _mm256_and_ps(_mm256_loadu_ps(src + j), abs_mask));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    const float amax = _mm_cvtss_f32(s);
    if (amax == 0.0f) {
      std::memset(&b[i], 0, sizeof(BlockQ8K));
      continue;
    }
    float max = 0.0f;  // first element of largest magnitude, as in the scalar quantizer
    for (int j = 0; j < kQKK; ++j) {
      if (std::fabs(src[j]) == amax) {
        max = src[j];
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
      const __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      const __m256i ordered = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(b[i].qs + j), ordered);
      // Group sums of the two 16-element groups: maddubs with ones gives pair sums (i16), madd
      // gives quads (i32); add within each 128-bit lane.
      const __m256i pairs = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), ordered), _mm256_set1_epi16(1));
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
  using avx2::entry_of;
  switch (t) {
    case TensorType::Q2_K: return entry_of<DotQ2K>(nullptr, quantize_q8_k);
    case TensorType::Q3_K: return entry_of<DotQ3K>(nullptr, quantize_q8_k);
    case TensorType::Q4_K: return entry_of<DotQ45K<false>>(dequant_q45_k<false>, quantize_q8_k);
    case TensorType::Q5_K: return entry_of<DotQ45K<true>>(dequant_q45_k<true>, quantize_q8_k);
    case TensorType::Q6_K: return entry_of<DotQ6K>(dequant_q6_k, quantize_q8_k);
    default: break;
  }
  return {nullptr, nullptr, nullptr, nullptr};
}

}  // namespace llmt::kernels
