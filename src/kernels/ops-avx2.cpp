// AVX2+FMA variants of the attention inner products (compiled with -mavx2 -mfma).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/attend-rows.h"
#include "kernels/ops.h"

namespace llmt::ops {

namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// e^x for x in about [-87, 88] (smaller x give 2^-126-ish tiny values, never NaN): 2^n * e^r with
// n = round(x / ln 2), r = x - n ln 2 split in two parts, e^r by a degree-6 polynomial (the
// classic minimax coefficients for |r| <= ln2/2). Relative error about 2e-7.
inline __m256 exp_ps(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

}  // namespace

namespace {

// Eight K/V elements as f32: plain loads for the F32 cache, F16C conversion for the F16 cache.
inline __m256 load8(const float* p) {
  return _mm256_loadu_ps(p);
}
inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// The sum of one score accumulator's lanes, always in this order (whether a row is reduced alone
// or transposed with others): ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).
inline float row_sum(__m256 a) {
  const __m256 h = _mm256_hadd_ps(a, a);   // [l0+l1, l2+l3, .. | l4+l5, l6+l7, ..]
  const __m256 hh = _mm256_hadd_ps(h, h);  // [l0..3, .. | l4..7, ..]
  return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(hh), _mm256_extractf128_ps(hh, 1)));
}

// row_sum of four accumulators at once: lane r is row_sum(a[r]) bit for bit.
inline __m128 row_sum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// row_sum of eight accumulators at once: lane r is row_sum(a[r]) bit for bit.
inline __m256 row_sum8(const __m256 a[8]) {
  const __m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
}

// Scores of NH heads (queries q + h * hd) for n_rows consecutive key rows k[0..n_rows) (v: the
// value rows of the same positions, only prefetched):
//   sc[h * sc_stride + r] = scale * row_sum(acc), acc = fma chain over d in order of q[h][d..d+8)
//   times k[r][d..d+8), starting from +0.
// Each key row is loaded (and for F16 converted) once for all NH heads. Rows go kRows at a time
// (all NH x kRows accumulators in registers, reduced together by a transpose) and one at a time
// in the tail; a score's bits depend only on its own q and k row, never on NH, the row grouping
// or where a run starts.
//
// Prefetch: in decode every sequence's K/V rows come from DRAM once per step, so the pass also
// prefetches the key rows kPrefetchKeyRows ahead (within the run) and the value rows v[j..] of
// the rows it scores, which the value pass reads next (measured: about 1.5x faster per call on
// DRAM-resident rows than no prefetch).
constexpr int32_t kPrefetchKeyRows = 16;

template <typename T>
inline void prefetch_rows(const T* rows, int32_t n, int32_t hd) {
  const char* b = reinterpret_cast<const char*>(rows);
  const size_t bytes = static_cast<size_t>(n) * hd * sizeof(T);
  for (size_t o = 0; o < bytes; o += 64) _mm_prefetch(b + o, _MM_HINT_T0);
}

template <int NH, typename T>
inline void group_scores(const float* q, const T* k, const T* v, int32_t n_rows, int32_t hd,
                         float scale, float* sc, int64_t sc_stride) {
  constexpr int kRows = NH == 1 ? 8 : 4;
  int32_t j = 0;
  for (; j + kRows <= n_rows; j += kRows) {
    prefetch_rows(v + static_cast<int64_t>(j) * hd, kRows, hd);
    if (j + kPrefetchKeyRows + kRows <= n_rows) {
      prefetch_rows(k + static_cast<int64_t>(j + kPrefetchKeyRows) * hd, kRows, hd);
    }
    const T* kj = k + static_cast<int64_t>(j) * hd;
    __m256 acc[NH][kRows];
    for (int h = 0; h < NH; ++h) {
      for (int r = 0; r < kRows; ++r) acc[h][r] = _mm256_setzero_ps();
    }
    for (int32_t d = 0; d < hd; d += 8) {
      for (int r = 0; r < kRows; ++r) {
        const __m256 kv = load8(kj + static_cast<int64_t>(r) * hd + d);
        for (int h = 0; h < NH; ++h) {
          acc[h][r] =
              _mm256_fmadd_ps(_mm256_loadu_ps(q + static_cast<int64_t>(h) * hd + d), kv, acc[h][r]);
        }
      }
    }
    for (int h = 0; h < NH; ++h) {
      float* out = sc + h * sc_stride + j;
      if constexpr (kRows == 8) {
        _mm256_storeu_ps(out, _mm256_mul_ps(row_sum8(acc[h]), _mm256_set1_ps(scale)));
      } else {
        _mm_storeu_ps(out, _mm_mul_ps(row_sum4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]),
                                      _mm_set1_ps(scale)));
      }
    }
  }
  for (; j < n_rows; ++j) {
    const T* kj = k + static_cast<int64_t>(j) * hd;
    __m256 acc[NH];
    for (int h = 0; h < NH; ++h) acc[h] = _mm256_setzero_ps();
    for (int32_t d = 0; d < hd; d += 8) {
      const __m256 kv = load8(kj + d);
      for (int h = 0; h < NH; ++h) {
        acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + static_cast<int64_t>(h) * hd + d), kv, acc[h]);
      }
    }
    for (int h = 0; h < NH; ++h) sc[h * sc_stride + j] = row_sum(acc[h]) * scale;
  }
}

// sc[j] = e^(sc[j] - max) in place; returns the sum.
inline float exp_shifted(float* sc, int32_t n) {
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  int32_t j = 0;
  for (; j + 8 <= n; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(sc + j));
  float max = hmax(vmax);
  for (; j < n; ++j) max = sc[j] > max ? sc[j] : max;
  const __m256 mv = _mm256_set1_ps(max);
  __m256 vsum = _mm256_setzero_ps();
  j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(sc + j), mv));
    _mm256_storeu_ps(sc + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = hsum(vsum);
  for (; j < n; ++j) {
    sc[j] = std::exp(sc[j] - max);
    sum += sc[j];
  }
  return sum;
}

// For each of NH heads: o[h][0..hd) += sum_{r < n_rows} p[h * p_stride + r] v[r] over n_rows
// consecutive value rows (o[h] at o + h * hd), rows in order, 32 (then 8) dims per pass; each
// value vector is loaded (and for F16 converted) once for all NH heads. The rows go in slices of
// kValueSlice so that the dim passes over a slice re-read it from L1 (the rows stream from
// memory once). Each output element is one fused multiply-add chain in row order (the
// accumulator only goes through o between slices), so neither NH nor the slicing nor splitting
// the rows over several calls changes its bits.
constexpr int32_t kValueSlice = 32;

template <int NH, typename T>
inline void group_values_slice(const float* p, int64_t p_stride, const T* v, int32_t n_rows,
                               int32_t hd, float* o) {
  int32_t d0 = 0;
  for (; d0 + 32 <= hd; d0 += 32) {
    __m256 acc[NH][4];
    for (int h = 0; h < NH; ++h) {
      for (int c = 0; c < 4; ++c) acc[h][c] = _mm256_loadu_ps(o + h * hd + d0 + 8 * c);
    }
    const T* vr = v + d0;
    for (int32_t j = 0; j < n_rows; ++j, vr += hd) {
      __m256 pj[NH];
      for (int h = 0; h < NH; ++h) pj[h] = _mm256_broadcast_ss(p + h * p_stride + j);
      for (int c = 0; c < 4; ++c) {
        const __m256 vv = load8(vr + 8 * c);
        for (int h = 0; h < NH; ++h) acc[h][c] = _mm256_fmadd_ps(pj[h], vv, acc[h][c]);
      }
    }
    for (int h = 0; h < NH; ++h) {
      for (int c = 0; c < 4; ++c) _mm256_storeu_ps(o + h * hd + d0 + 8 * c, acc[h][c]);
    }
  }
  for (; d0 < hd; d0 += 8) {
    __m256 acc[NH];
    for (int h = 0; h < NH; ++h) acc[h] = _mm256_loadu_ps(o + h * hd + d0);
    const T* vr = v + d0;
    for (int32_t j = 0; j < n_rows; ++j, vr += hd) {
      const __m256 vv = load8(vr);
      for (int h = 0; h < NH; ++h) {
        acc[h] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + h * p_stride + j), vv, acc[h]);
      }
    }
    for (int h = 0; h < NH; ++h) _mm256_storeu_ps(o + h * hd + d0, acc[h]);
  }
}

template <int NH, typename T>
inline void group_values(const float* p, int64_t p_stride, const T* v, int32_t n_rows, int32_t hd,
                         float* o) {
  for (int32_t j = 0; j < n_rows; j += kValueSlice) {
    group_values_slice<NH>(p + j, p_stride, v + static_cast<int64_t>(j) * hd,
                           std::min(kValueSlice, n_rows - j), hd, o);
  }
}

}  // namespace

namespace {

// Softmax of each head's scores row (max-shifted, so stable), and zeroed outputs.
void normalize_scores(int32_t n_q, int32_t n_kv, int32_t hd, float* scores, float* out) {
  for (int32_t h = 0; h < n_q; ++h) {
    float* sc = scores + static_cast<int64_t>(h) * n_kv;
    const __m256 r = _mm256_set1_ps(1.0f / exp_shifted(sc, n_kv));
    int32_t j = 0;
    for (; j + 8 <= n_kv; j += 8)
      _mm256_storeu_ps(sc + j, _mm256_mul_ps(_mm256_loadu_ps(sc + j), r));
    for (; j < n_kv; ++j) sc[j] *= _mm256_cvtss_f32(r);
    std::fill(out + static_cast<int64_t>(h) * hd, out + static_cast<int64_t>(h + 1) * hd, 0.0f);
  }
}

// The AVX2 passes of attend_impl (attend-rows.h).
struct Avx2Passes {
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
    group_values<NH>(p, p_stride, v, n_rows, hd, o);
  }
};

}  // namespace

void attend_avx2(const float* q, int32_t n_q, const float* k, const float* v, int32_t n_kv,
                 int32_t hd, float scale, float* scores, float* out) {
  if (hd % 8 != 0) {
    attend_scalar(q, n_q, k, v, n_kv, hd, scale, scores, out);
    return;
  }
  attend_impl<float, Avx2Passes>(q, n_q, ContiguousRows<float>{k, v, hd}, n_kv, hd, scale, scores,
                                 out);
}

void attend_f16_avx2(const float* q, int32_t n_q, const uint16_t* k, const uint16_t* v,
                     int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  if (hd % 8 != 0) {
    attend_f16_scalar(q, n_q, k, v, n_kv, hd, scale, scores, out);
    return;
  }
  // Rows are converted (F16C) as they are loaded, once per group of up to 3 heads.
  attend_impl<uint16_t, Avx2Passes>(q, n_q, ContiguousRows<uint16_t>{k, v, hd}, n_kv, hd, scale,
                                    scores, out);
}

void attend_paged_avx2(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                       const int32_t* block_table, size_t block_stride, int32_t block_size,
                       int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  if (hd % 8 != 0) {
    attend_paged_scalar(q, n_q, k_base, v_base, block_table, block_stride, block_size, n_kv, hd,
                        scale, scores, out);
    return;
  }
  attend_impl<float, Avx2Passes>(
      q, n_q, paged_rows<float>(k_base, v_base, block_table, block_stride, block_size, hd, 0), n_kv,
      hd, scale, scores, out);
}

void attend_paged_f16_avx2(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                           const int32_t* block_table, size_t block_stride, int32_t block_size,
                           int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  if (hd % 8 != 0) {
    attend_paged_f16_scalar(q, n_q, k_base, v_base, block_table, block_stride, block_size, n_kv, hd,
                            scale, scores, out);
    return;
  }
  attend_impl<uint16_t, Avx2Passes>(
      q, n_q, paged_rows<uint16_t>(k_base, v_base, block_table, block_stride, block_size, hd, 0),
      n_kv, hd, scale, scores, out);
}

namespace {

// attend_window_avx2 / _f16_avx2 for K/V elements of type T; `scalar` when hd is not a multiple
// of 8.
template <typename T, typename Scalar>
void attend_window_rows_avx2(Scalar scalar, const float* q, int32_t n_q, const void* k_base,
                             const void* v_base, const int32_t* block_table, size_t block_stride,
                             int32_t block_size, int32_t p0, int32_t p1, int32_t hd, float scale,
                             float* scores, float* out) {
  if (hd % 8 != 0) {
    scalar(q, n_q, k_base, v_base, block_table, block_stride, block_size, p0, p1, hd, scale, scores,
           out);
    return;
  }
  attend_impl<T, Avx2Passes>(
      q, n_q, paged_rows<T>(k_base, v_base, block_table, block_stride, block_size, hd, p0), p1 - p0,
      hd, scale, scores, out);
}

}  // namespace

void attend_window_avx2(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                        const int32_t* block_table, size_t block_stride, int32_t block_size,
                        int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                        float* out) {
  attend_window_rows_avx2<float>(attend_window_scalar, q, n_q, k_base, v_base, block_table,
                                 block_stride, block_size, p0, p1, hd, scale, scores, out);
}

void attend_window_f16_avx2(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                            const int32_t* block_table, size_t block_stride, int32_t block_size,
                            int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                            float* out) {
  attend_window_rows_avx2<uint16_t>(attend_window_f16_scalar, q, n_q, k_base, v_base, block_table,
                                    block_stride, block_size, p0, p1, hd, scale, scores, out);
}

namespace {

// gelu(v) = 0.5 v (1 + tanh(a)) = v / (1 + e^(-2a)), a = sqrt(2/pi) (v + 0.044715 v^3); exp_ps
// clamps its argument, so large |v| give v or -0-ish values, never NaN.
inline __m256 gelu_ps(__m256 v) {
  const __m256 v2 = _mm256_mul_ps(v, v);
  // -2a = v * (c0 + c1 v^2), c0 = -2 sqrt(2/pi), c1 = c0 * 0.044715.
  const __m256 c0 = _mm256_set1_ps(-1.5957691216057308f);
  const __m256 c1 = _mm256_set1_ps(-1.5957691216057308f * 0.044715f);
  const __m256 t = _mm256_mul_ps(v, _mm256_fmadd_ps(c1, v2, c0));
  return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), exp_ps(t)));
}

}  // namespace

void gelu_avx2(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu_ps(_mm256_loadu_ps(x + i)));
  if (i < n) gelu(x + i, n - i);
}

void gelu_mul_avx2(float* g, const float* u, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(g + i, _mm256_mul_ps(gelu_ps(_mm256_loadu_ps(g + i)), _mm256_loadu_ps(u + i)));
  }
  if (i < n) gelu_mul(g + i, u + i, n - i);
}

namespace {

inline double hsum_pd(__m256d v) {
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

}  // namespace

void layer_norm_avx2(const float* x, const float* w, const float* b, float* y, int64_t n,
                     float eps) {
  // Sum and squared deviations in double, 8 elements a step in two 4-lane accumulators, then the
  // tail in order.
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  double sum = hsum_pd(_mm256_add_pd(s0, s1));
  for (int64_t j = i; j < n; ++j) sum += x[j];
  const double mean = sum / static_cast<double>(n);
  const __m256d md = _mm256_set1_pd(mean);
  s0 = _mm256_setzero_pd();
  s1 = _mm256_setzero_pd();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), md);
    const __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), md);
    s0 = _mm256_fmadd_pd(d0, d0, s0);
    s1 = _mm256_fmadd_pd(d1, d1, s1);
  }
  double var = hsum_pd(_mm256_add_pd(s0, s1));
  for (int64_t j = i; j < n; ++j) {
    const double d = x[j] - mean;
    var += d * d;
  }
  var /= static_cast<double>(n);
  const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
  const float m = static_cast<float>(mean);
  // (x - m) * inv (* w) (+ b): the scalar code's operations, unfused.
  const __m256 mv = _mm256_set1_ps(m), iv = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), iv);
    if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
    if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + i));
    _mm256_storeu_ps(y + i, v);
  }
  for (; i < n; ++i) {
    float v = (x[i] - m) * inv;
    if (w) v *= w[i];
    if (b) v += b[i];
    y[i] = v;
  }
}

void silu_mul_avx2(float* g, const float* u, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(g + i);
    const __m256 e = exp_ps(_mm256_xor_ps(v, sign));  // e^-v
    const __m256 s = _mm256_div_ps(v, _mm256_add_ps(one, e));
    _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
  }
  if (i < n) silu_mul(g + i, u + i, n - i);
}

void to_f16_avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) y[i] = kernels::fp32_to_fp16(x[i]);
}

float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps();
  __m256 acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  }
  acc0 = _mm256_add_ps(acc0, acc1);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  float sum = _mm_cvtss_f32(s);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void axpy_avx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace llmt::ops
