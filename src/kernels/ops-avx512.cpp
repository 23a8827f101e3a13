// AVX-512 variants of the attention and elementwise ops (compiled with the avx512 tier's flags;
// uses AVX-512 F, BW and VL only). Vectors of 16 floats; a row's last n % 16 elements go through
// the same vector code with masked loads and stores (never a scalar tail, so any hd works and no
// scalar fallback exists). Every value is a function of its own row and index: the ops are batch
// invariant within the tier. Their float results differ from the avx2 tier's in rounding (other
// lane sums, the masked tails), never in the functions computed.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/attend-rows.h"
#include "kernels/ops.h"

namespace llmt::ops {

namespace {

constexpr int64_t kLanes = 16;

// The lanes [0, n) for 0 <= n <= 16.
inline __mmask16 first_lanes(int64_t n) {
  return static_cast<__mmask16>((1u << n) - 1u);
}

// Sixteen floats (masked: lanes outside m read as +0 and touch no memory): plain loads for f32,
// vcvtph2ps for IEEE half.
// The upper 8 lanes (AVX-512 F only; vextractf32x8 would need DQ).
inline __m256 upper8(__m512 a) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
}

inline __m512 load16(const float* p, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, p);
}
inline __m512 load16(const uint16_t* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
inline __m512 load16(const float* p) {
  return _mm512_loadu_ps(p);
}
inline __m512 load16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The sum of one accumulator's lanes l0..l15, always in this order (alone or transposed with
// others, see row_sum8): s_i = (l_i + l_{i+8}) + (l_{i+4} + l_{i+12}) for i < 4, then
// (s0 + s1) + (s2 + s3).
inline float row_sum(__m512 a) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a), upper8(a));
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 t = _mm_hadd_ps(s, s);  // [s0 + s1, s2 + s3, ..]
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// row_sum of eight accumulators at once: lane r is row_sum(a[r]) bit for bit. Each step adds the
// same pairs of partial sums as row_sum, with the rows moved between lanes by shuffles.
inline __m256 row_sum8(const __m512 a[8]) {
  __m512 t[4], u[2];
  // t[p] quarters: [A.Q0 + A.Q2, A.Q1 + A.Q3, B.Q0 + B.Q2, B.Q1 + B.Q3], A = a[2p], B = a[2p+1]
  // (Q: 128-bit quarters; lane i of the first two is l_i + l_{i+8}).
  for (int p = 0; p < 4; ++p) {
    t[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // u[p] quarter q: s_0..s_3 of row 4p + q.
  for (int p = 0; p < 2; ++p) {
    u[p] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * p], t[2 * p + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(t[2 * p], t[2 * p + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  // v quarter q: [s0 + s1, s2 + s3] of row q, then of row q + 4.
  const __m512 v = _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
  // w quarter q: the sums of rows q and q + 4 in its lanes 0 and 1.
  const __m512 w = _mm512_add_ps(_mm512_shuffle_ps(v, v, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(v, v, _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_castps512_ps256(_mm512_permutexvar_ps(order, w));
}

// e^x as the AVX2 exp_ps (ops-avx2.cpp) in 16 lanes, the same operations lane by lane: x clamped
// to [-87, 88], 2^n * e^r with n = round(x / ln 2), a degree-6 polynomial for e^r. Relative error
// about 2e-7.
inline __m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

// ---- attention passes (attend_impl in attend-rows.h) ----

// Key rows prefetched ahead of the score pass and value rows of the rows it scores (see the
// AVX2 passes for the reason and the measurement).
constexpr int32_t kPrefetchKeyRows = 16;

template <typename T>
inline void prefetch_rows(const T* rows, int32_t n, int32_t hd) {
  const char* b = reinterpret_cast<const char*>(rows);
  const size_t bytes = static_cast<size_t>(n) * hd * sizeof(T);
  for (size_t o = 0; o < bytes; o += 64) _mm_prefetch(b + o, _MM_HINT_T0);
}

// acc[h][r] = fma(q[h][d..d+16), k[r][d..d+16), acc[h][r]) for NH heads and R key rows (row
// stride hd); lanes outside m add +0.
template <int NH, int R, typename T>
inline void score_step(__m512 (&acc)[NH][R], const float* q, const T* k, int32_t hd, int32_t d,
                       __mmask16 m) {
  for (int r = 0; r < R; ++r) {
    // Pinned to a register: otherwise the compiler folds the load into each head's FMA.
    __m512 kv = load16(k + static_cast<int64_t>(r) * hd + d, m);
    asm("" : "+v"(kv));
    for (int h = 0; h < NH; ++h) {
      acc[h][r] = _mm512_fmadd_ps(load16(q + static_cast<int64_t>(h) * hd + d, m), kv, acc[h][r]);
    }
  }
}

// acc[h][r] = the fma chain over d = 0, 16, 32, .. (the last step masked to hd) of q[h] times
// k[r], from +0.
template <int NH, int R, typename T>
inline void score_dots(__m512 (&acc)[NH][R], const float* q, const T* k, int32_t hd) {
  for (int h = 0; h < NH; ++h) {
    for (int r = 0; r < R; ++r) acc[h][r] = _mm512_setzero_ps();
  }
  int32_t d = 0;
  for (; d + kLanes <= hd; d += kLanes) score_step(acc, q, k, hd, d, 0xFFFF);
  if (d < hd) score_step(acc, q, k, hd, d, first_lanes(hd - d));
}

// Scores of NH heads for n_rows consecutive key rows: sc[h * sc_stride + r] = scale *
// row_sum(score_dots). Rows go 8 at a time (NH x 8 accumulators, reduced together by row_sum8)
// and one at a time in the tail; a score's bits depend only on its own q and k row.
template <int NH, typename T>
inline void group_scores(const float* q, const T* k, const T* v, int32_t n_rows, int32_t hd,
                         float scale, float* sc, int64_t sc_stride) {
  constexpr int kRows = 8;
  int32_t j = 0;
  for (; j + kRows <= n_rows; j += kRows) {
    prefetch_rows(v + static_cast<int64_t>(j) * hd, kRows, hd);
    if (j + kPrefetchKeyRows + kRows <= n_rows) {
      prefetch_rows(k + static_cast<int64_t>(j + kPrefetchKeyRows) * hd, kRows, hd);
    }
    __m512 acc[NH][kRows];
    score_dots(acc, q, k + static_cast<int64_t>(j) * hd, hd);
    for (int h = 0; h < NH; ++h) {
      _mm256_storeu_ps(sc + h * sc_stride + j,
                       _mm256_mul_ps(row_sum8(acc[h]), _mm256_set1_ps(scale)));
    }
  }
  for (; j < n_rows; ++j) {
    __m512 acc[NH][1];
    score_dots(acc, q, k + static_cast<int64_t>(j) * hd, hd);
    for (int h = 0; h < NH; ++h) sc[h * sc_stride + j] = row_sum(acc[h][0]) * scale;
  }
}

// sc[j] = e^(sc[j] - max) in place; returns the sum (16 lane sums, then row_sum).
inline float exp_shifted(float* sc, int32_t n) {
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  int32_t j = 0;
  for (; j + kLanes <= n; j += kLanes) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(sc + j));
  const __mmask16 mt = first_lanes(n - j);
  vmax = _mm512_mask_max_ps(vmax, mt, vmax, _mm512_maskz_loadu_ps(mt, sc + j));
  const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));  // exact in any order
  __m512 vsum = _mm512_setzero_ps();
  for (j = 0; j + kLanes <= n; j += kLanes) {
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(sc + j), mv));
    _mm512_storeu_ps(sc + j, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  if (mt) {
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mt, sc + j), mv));
    _mm512_mask_storeu_ps(sc + j, mt, e);
    vsum = _mm512_mask_add_ps(vsum, mt, vsum, e);
  }
  return row_sum(vsum);
}

// Softmax of each head's scores row, and zeroed outputs.
void normalize_scores(int32_t n_q, int32_t n_kv, int32_t hd, float* scores, float* out) {
  for (int32_t h = 0; h < n_q; ++h) {
    float* sc = scores + static_cast<int64_t>(h) * n_kv;
    const __m512 r = _mm512_set1_ps(1.0f / exp_shifted(sc, n_kv));
    int32_t j = 0;
    for (; j + kLanes <= n_kv; j += kLanes) {
      _mm512_storeu_ps(sc + j, _mm512_mul_ps(_mm512_loadu_ps(sc + j), r));
    }
    const __mmask16 mt = first_lanes(n_kv - j);
    _mm512_mask_storeu_ps(sc + j, mt, _mm512_mul_ps(_mm512_maskz_loadu_ps(mt, sc + j), r));
    std::fill(out + static_cast<int64_t>(h) * hd, out + static_cast<int64_t>(h + 1) * hd, 0.0f);
  }
}

// For each of NH heads: o[h][0..hd) += sum_{r < n_rows} p[h * p_stride + r] v[r] over n_rows
// consecutive value rows, rows in order, 64 (then 16, the last one masked) dims per pass; each
// value vector is loaded (F16: converted) once for all NH heads. Rows go in slices of
// kValueSlice so the dim passes over a slice re-read it from L1. Each output element is one
// fused multiply-add chain in row order (through o between slices): neither NH, the slicing nor
// splitting the rows over several calls changes its bits.
constexpr int32_t kValueSlice = 32;

template <int NH, typename T>
inline void group_values_slice(const float* p, int64_t p_stride, const T* v, int32_t n_rows,
                               int32_t hd, float* o) {
  int32_t d0 = 0;
  for (; d0 + 4 * kLanes <= hd; d0 += 4 * kLanes) {
    __m512 acc[NH][4];
    for (int h = 0; h < NH; ++h) {
      for (int c = 0; c < 4; ++c) acc[h][c] = _mm512_loadu_ps(o + h * hd + d0 + kLanes * c);
    }
    const T* vr = v + d0;
    for (int32_t j = 0; j < n_rows; ++j, vr += hd) {
      __m512 pj[NH];
      for (int h = 0; h < NH; ++h) pj[h] = _mm512_set1_ps(p[h * p_stride + j]);
      for (int c = 0; c < 4; ++c) {
        const __m512 vv = load16(vr + kLanes * c);
        for (int h = 0; h < NH; ++h) acc[h][c] = _mm512_fmadd_ps(pj[h], vv, acc[h][c]);
      }
    }
    for (int h = 0; h < NH; ++h) {
      for (int c = 0; c < 4; ++c) _mm512_storeu_ps(o + h * hd + d0 + kLanes * c, acc[h][c]);
    }
  }
  for (; d0 < hd; d0 += kLanes) {
    const __mmask16 m = first_lanes(std::min<int64_t>(kLanes, hd - d0));
    __m512 acc[NH];
    for (int h = 0; h < NH; ++h) acc[h] = _mm512_maskz_loadu_ps(m, o + h * hd + d0);
    const T* vr = v + d0;
    for (int32_t j = 0; j < n_rows; ++j, vr += hd) {
      const __m512 vv = load16(vr, m);
      for (int h = 0; h < NH; ++h) {
        acc[h] = _mm512_fmadd_ps(_mm512_set1_ps(p[h * p_stride + j]), vv, acc[h]);
      }
    }
    for (int h = 0; h < NH; ++h) _mm512_mask_storeu_ps(o + h * hd + d0, m, acc[h]);
  }
}

// The AVX-512 passes of attend_impl (attend-rows.h).
struct Avx512Passes {
  template <int NH, typename T>
  static void scores(const float* q, const T* k, const T* v, int32_t n_rows, int32_t hd,
                     float scale, float* sc, int64_t sc_stride) {
    group_scores<NH>(q, k, v, n_rows, hd, scale, sc, sc_stride);
  }
  static void normalize(int32_t n_q, int32_t n_kv, int32_t hd, float* scores, float* out) {
    normalize_scores(n_q, n_kv, hd, scores, out);
  }
  template <int NH, typename T>
  static void values(const float* p, int64_t p_stride, const T* v, int32_t n_rows, int32_t hd,
                     float* o) {
    for (int32_t j = 0; j < n_rows; j += kValueSlice) {
      group_values_slice<NH>(p + j, p_stride, v + static_cast<int64_t>(j) * hd,
                             std::min(kValueSlice, n_rows - j), hd, o);
    }
  }
};

}  // namespace

void attend_avx512(const float* q, int32_t n_q, const float* k, const float* v, int32_t n_kv,
                   int32_t hd, float scale, float* scores, float* out) {
  attend_impl<float, Avx512Passes>(q, n_q, ContiguousRows<float>{k, v, hd}, n_kv, hd, scale, scores,
                                   out);
}

void attend_f16_avx512(const float* q, int32_t n_q, const uint16_t* k, const uint16_t* v,
                       int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  attend_impl<uint16_t, Avx512Passes>(q, n_q, ContiguousRows<uint16_t>{k, v, hd}, n_kv, hd, scale,
                                      scores, out);
}

void attend_paged_avx512(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                         const int32_t* block_table, size_t block_stride, int32_t block_size,
                         int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  attend_impl<float, Avx512Passes>(
      q, n_q, paged_rows<float>(k_base, v_base, block_table, block_stride, block_size, hd, 0), n_kv,
      hd, scale, scores, out);
}

void attend_paged_f16_avx512(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                             const int32_t* block_table, size_t block_stride, int32_t block_size,
                             int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  attend_impl<uint16_t, Avx512Passes>(
      q, n_q, paged_rows<uint16_t>(k_base, v_base, block_table, block_stride, block_size, hd, 0),
      n_kv, hd, scale, scores, out);
}

void attend_window_avx512(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                          const int32_t* block_table, size_t block_stride, int32_t block_size,
                          int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                          float* out) {
  attend_impl<float, Avx512Passes>(
      q, n_q, paged_rows<float>(k_base, v_base, block_table, block_stride, block_size, hd, p0),
      p1 - p0, hd, scale, scores, out);
}

void attend_window_f16_avx512(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                              const int32_t* block_table, size_t block_stride, int32_t block_size,
                              int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                              float* out) {
  attend_impl<uint16_t, Avx512Passes>(
      q, n_q, paged_rows<uint16_t>(k_base, v_base, block_table, block_stride, block_size, hd, p0),
      p1 - p0, hd, scale, scores, out);
}

// ---- elementwise ----

namespace {

// Applies f to x[i] (and u[i]) 16 lanes at a time, the last n % 16 masked: y = f(x, u).
template <typename F>
inline void map16(float* x, const float* u, int64_t n, F f) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm512_storeu_ps(x + i, f(_mm512_loadu_ps(x + i), u ? _mm512_loadu_ps(u + i) : __m512{}));
  }
  if (i < n) {
    const __mmask16 m = first_lanes(n - i);
    const __m512 ui = u ? _mm512_maskz_loadu_ps(m, u + i) : __m512{};
    _mm512_mask_storeu_ps(x + i, m, f(_mm512_maskz_loadu_ps(m, x + i), ui));
  }
}

// gelu(v) = v / (1 + e^(-2a)), a = sqrt(2/pi) (v + 0.044715 v^3) (the AVX2 gelu_ps's operations).
inline __m512 gelu_ps(__m512 v) {
  const __m512 v2 = _mm512_mul_ps(v, v);
  const __m512 c0 = _mm512_set1_ps(-1.5957691216057308f);
  const __m512 c1 = _mm512_set1_ps(-1.5957691216057308f * 0.044715f);
  const __m512 t = _mm512_mul_ps(v, _mm512_fmadd_ps(c1, v2, c0));
  return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), exp_ps(t)));
}

}  // namespace

void gelu_avx512(float* x, int64_t n) {
  map16(x, nullptr, n, [](__m512 v, __m512) { return gelu_ps(v); });
}

void gelu_mul_avx512(float* g, const float* u, int64_t n) {
  map16(g, u, n, [](__m512 v, __m512 w) { return _mm512_mul_ps(gelu_ps(v), w); });
}

void silu_mul_avx512(float* g, const float* u, int64_t n) {
  map16(g, u, n, [](__m512 v, __m512 w) {
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), v));  // e^-v
    return _mm512_mul_ps(_mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), w);
  });
}

void to_f16_avx512(const float* x, uint16_t* y, int64_t n) {
  // vcvtps2ph rounds to nearest even like fp32_to_fp16: the result is exact, the same on every
  // tier.
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(x + i), kRound));
  }
  if (i < n) {
    const __mmask16 m = first_lanes(n - i);
    _mm256_mask_storeu_epi16(y + i, m, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), kRound));
  }
}

namespace {

inline double hsum_pd(__m512d v) {
  const __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

}  // namespace

void layer_norm_avx512(const float* x, const float* w, const float* b, float* y, int64_t n,
                       float eps) {
  // Sum and squared deviations in double, 16 elements a step in two 8-lane accumulators (the
  // last step masked: its empty lanes add +0), then hsum_pd: a fixed order for each n.
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += kLanes) {
    const __m512 v = load16(x + i, first_lanes(std::min(kLanes, n - i)));
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(upper8(v)));
  }
  const double mean = hsum_pd(_mm512_add_pd(s0, s1)) / static_cast<double>(n);
  const __m512d md = _mm512_set1_pd(mean);
  s0 = _mm512_setzero_pd();
  s1 = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = first_lanes(std::min(kLanes, n - i));
    const __m512 v = load16(x + i, m);
    const __m512d d0 = _mm512_maskz_sub_pd(static_cast<__mmask8>(m),
                                           _mm512_cvtps_pd(_mm512_castps512_ps256(v)), md);
    const __m512d d1 =
        _mm512_maskz_sub_pd(static_cast<__mmask8>(m >> 8), _mm512_cvtps_pd(upper8(v)), md);
    s0 = _mm512_fmadd_pd(d0, d0, s0);
    s1 = _mm512_fmadd_pd(d1, d1, s1);
  }
  const double var = hsum_pd(_mm512_add_pd(s0, s1)) / static_cast<double>(n);
  const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
  // (x - m) * inv (* w) (+ b): the scalar code's operations, unfused.
  const __m512 mv = _mm512_set1_ps(static_cast<float>(mean)), iv = _mm512_set1_ps(inv);
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = first_lanes(std::min(kLanes, n - i));
    __m512 v = _mm512_mul_ps(_mm512_sub_ps(load16(x + i, m), mv), iv);
    if (w) v = _mm512_mul_ps(v, load16(w + i, m));
    if (b) v = _mm512_add_ps(v, load16(b + i, m));
    _mm512_mask_storeu_ps(y + i, m, v);
  }
}

float dot_avx512(const float* a, const float* b, int64_t n) {
  // Two accumulators over 32-element steps, then one 16-element step, then the masked rest into
  // the first; their sum reduced by row_sum.
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + kLanes), _mm512_loadu_ps(b + i + kLanes), acc1);
  }
  for (; i < n; i += kLanes) {
    const __mmask16 m = first_lanes(std::min(kLanes, n - i));
    acc0 = _mm512_fmadd_ps(load16(a + i, m), load16(b + i, m), acc0);
  }
  return row_sum(_mm512_add_ps(acc0, acc1));
}

void axpy_avx512(float alpha, const float* x, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = first_lanes(std::min(kLanes, n - i));
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, load16(x + i, m), load16(y + i, m)));
  }
}

}  // namespace llmt::ops
