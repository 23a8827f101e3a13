// AVX2+FMA variants of the attention inner products (compiled with -mavx2 -mfma).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

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
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

}  // namespace

namespace {

// Eight K/V elements as f32: plain loads for the F32 cache, F16C conversion for the F16 cache.
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Scores of one head for n_rows consecutive key rows k[0..n_rows): sc[r] = scale * q . k[r].
// Rows go four at a time, one at a time in the tail; a row's sum is the same either way.
template <typename T>
inline void head_scores(const float* q, const T* k, int32_t n_rows, int32_t hd, float scale,
                        float* sc) {
  int32_t j = 0;
  for (; j + 4 <= n_rows; j += 4) {
    const T* k0 = k + static_cast<int64_t>(j) * hd;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (int32_t d = 0; d < hd; d += 8) {
      const __m256 qv = _mm256_loadu_ps(q + d);
      a0 = _mm256_fmadd_ps(qv, load8(k0 + d), a0);
      a1 = _mm256_fmadd_ps(qv, load8(k0 + hd + d), a1);
      a2 = _mm256_fmadd_ps(qv, load8(k0 + 2 * hd + d), a2);
      a3 = _mm256_fmadd_ps(qv, load8(k0 + 3 * hd + d), a3);
    }
    sc[j] = hsum(a0) * scale;
    sc[j + 1] = hsum(a1) * scale;
    sc[j + 2] = hsum(a2) * scale;
    sc[j + 3] = hsum(a3) * scale;
  }
  for (; j < n_rows; ++j) {
    const T* kj = k + static_cast<int64_t>(j) * hd;
    __m256 a = _mm256_setzero_ps();
    for (int32_t d = 0; d < hd; d += 8) {
      a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), load8(kj + d), a);
    }
    sc[j] = hsum(a) * scale;
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

// o[0..hd) += sum_{r < n_rows} p[r] v[r] over n_rows consecutive value rows, 32 (then 8) dims
// per pass, rows in order. Each output element is one fused multiply-add chain in row order, so
// splitting the rows over several calls gives the same bits.
template <typename T>
inline void head_values(const float* p, const T* v, int32_t n_rows, int32_t hd, float* o) {
  int32_t d0 = 0;
  for (; d0 + 32 <= hd; d0 += 32) {
    __m256 o0 = _mm256_loadu_ps(o + d0), o1 = _mm256_loadu_ps(o + d0 + 8);
    __m256 o2 = _mm256_loadu_ps(o + d0 + 16), o3 = _mm256_loadu_ps(o + d0 + 24);
    const T* vr = v + d0;
    for (int32_t j = 0; j < n_rows; ++j, vr += hd) {
      const __m256 pj = _mm256_broadcast_ss(p + j);
      o0 = _mm256_fmadd_ps(pj, load8(vr), o0);
      o1 = _mm256_fmadd_ps(pj, load8(vr + 8), o1);
      o2 = _mm256_fmadd_ps(pj, load8(vr + 16), o2);
      o3 = _mm256_fmadd_ps(pj, load8(vr + 24), o3);
    }
    _mm256_storeu_ps(o + d0, o0);
    _mm256_storeu_ps(o + d0 + 8, o1);
    _mm256_storeu_ps(o + d0 + 16, o2);
    _mm256_storeu_ps(o + d0 + 24, o3);
  }
  for (; d0 < hd; d0 += 8) {
    __m256 acc = _mm256_loadu_ps(o + d0);
    const T* vr = v + d0;
    for (int32_t j = 0; j < n_rows; ++j, vr += hd) {
      acc = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), load8(vr), acc);
    }
    _mm256_storeu_ps(o + d0, acc);
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
    for (; j + 8 <= n_kv; j += 8) _mm256_storeu_ps(sc + j, _mm256_mul_ps(_mm256_loadu_ps(sc + j), r));
    for (; j < n_kv; ++j) sc[j] *= _mm256_cvtss_f32(r);
    std::fill(out + static_cast<int64_t>(h) * hd, out + static_cast<int64_t>(h + 1) * hd, 0.0f);
  }
}

// Runs of consecutive K/V rows: rows [j, j + n) of the positions lie at k[0..n), v[0..n).
template <typename T>
struct RowRun {
  const T* k;
  const T* v;
  int32_t n;
};

// The contiguous cache: position j at k + j * hd.
template <typename T>
struct ContiguousRows {
  const T* k;
  const T* v;
  int32_t hd;
  // The run starting at position j, ending at j1 at the latest.
  RowRun<T> run(int32_t j, int32_t j1) const {
    const int64_t off = static_cast<int64_t>(j) * hd;
    return {k + off, v + off, j1 - j};
  }
};

// The paged cache: position j in block block_table[j / block_size], row j % block_size.
template <typename T>
struct PagedRows {
  const uint8_t* k_base;
  const uint8_t* v_base;
  const int32_t* block_table;
  size_t block_stride;
  int32_t block_size;
  int32_t hd;
  RowRun<T> run(int32_t j, int32_t j1) const {
    const int32_t r = j % block_size;
    const size_t off = static_cast<size_t>(block_table[j / block_size]) * block_stride +
                       static_cast<size_t>(r) * hd * sizeof(T);
    return {reinterpret_cast<const T*>(k_base + off), reinterpret_cast<const T*>(v_base + off),
            std::min(j1 - j, block_size - r)};
  }
};

// attend_avx2 / attend_f16_avx2 / attend_paged*_avx2 body; hd % 8 == 0. Key/value rows are
// walked in chunks of kAttendBlock positions, small enough to stay in L1 while every head of the
// group uses them, so each row is fetched from memory once per group; a chunk is cut further
// where the layout has a block boundary. Neither cut changes any result: a score depends on its
// row alone, and the V sum of an output element is one chain in position order.
template <typename T, typename Rows>
void attend_impl(const float* q, int32_t n_q, const Rows& rows, int32_t n_kv, int32_t hd,
                 float scale, float* scores, float* out) {
  constexpr int32_t kBlock = kAttendBlock;
  RowRun<T> runs[kBlock];
  int32_t starts[kBlock];
  auto chunk_runs = [&](int32_t j0, int32_t j1) {
    int32_t n_runs = 0;
    for (int32_t j = j0; j < j1; ++n_runs) {
      starts[n_runs] = j;
      runs[n_runs] = rows.run(j, j1);
      j += runs[n_runs].n;
    }
    return n_runs;
  };
  for (int32_t j0 = 0; j0 < n_kv; j0 += kBlock) {
    const int32_t j1 = std::min(j0 + kBlock, n_kv);
    const int32_t n_runs = chunk_runs(j0, j1);
    for (int32_t h = 0; h < n_q; ++h) {
      float* sc = scores + static_cast<int64_t>(h) * n_kv;
      for (int32_t r = 0; r < n_runs; ++r) {
        head_scores(q + static_cast<int64_t>(h) * hd, runs[r].k, runs[r].n, hd, scale,
                    sc + starts[r]);
      }
    }
  }
  normalize_scores(n_q, n_kv, hd, scores, out);
  for (int32_t j0 = 0; j0 < n_kv; j0 += kBlock) {
    const int32_t j1 = std::min(j0 + kBlock, n_kv);
    const int32_t n_runs = chunk_runs(j0, j1);
    for (int32_t h = 0; h < n_q; ++h) {
      const float* p = scores + static_cast<int64_t>(h) * n_kv;
      for (int32_t r = 0; r < n_runs; ++r) {
        head_values(p + starts[r], runs[r].v, runs[r].n, hd, out + static_cast<int64_t>(h) * hd);
      }
    }
  }
}

}  // namespace

void attend_avx2(const float* q, int32_t n_q, const float* k, const float* v, int32_t n_kv,
                 int32_t hd, float scale, float* scores, float* out) {
  if (hd % 8 != 0) {
    attend_scalar(q, n_q, k, v, n_kv, hd, scale, scores, out);
    return;
  }
  attend_impl<float>(q, n_q, ContiguousRows<float>{k, v, hd}, n_kv, hd, scale, scores, out);
}

void attend_f16_avx2(const float* q, int32_t n_q, const uint16_t* k, const uint16_t* v,
                     int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  if (hd % 8 != 0) {
    attend_f16_scalar(q, n_q, k, v, n_kv, hd, scale, scores, out);
    return;
  }
  // Rows are converted (F16C) as they are loaded, once per head: measured faster than
  // converting each block once into a scratch buffer shared by the heads.
  attend_impl<uint16_t>(q, n_q, ContiguousRows<uint16_t>{k, v, hd}, n_kv, hd, scale, scores,
                        out);
}

void attend_paged_avx2(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                       const int32_t* block_table, size_t block_stride, int32_t block_size,
                       int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  if (hd % 8 != 0) {
    attend_paged_scalar(q, n_q, k_base, v_base, block_table, block_stride, block_size, n_kv, hd,
                        scale, scores, out);
    return;
  }
  const PagedRows<float> rows{static_cast<const uint8_t*>(k_base),
                              static_cast<const uint8_t*>(v_base),
                              block_table,
                              block_stride,
                              block_size,
                              hd};
  attend_impl<float>(q, n_q, rows, n_kv, hd, scale, scores, out);
}

void attend_paged_f16_avx2(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                           const int32_t* block_table, size_t block_stride, int32_t block_size,
                           int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  if (hd % 8 != 0) {
    attend_paged_f16_scalar(q, n_q, k_base, v_base, block_table, block_stride, block_size, n_kv,
                            hd, scale, scores, out);
    return;
  }
  const PagedRows<uint16_t> rows{static_cast<const uint8_t*>(k_base),
                                 static_cast<const uint8_t*>(v_base),
                                 block_table,
                                 block_stride,
                                 block_size,
                                 hd};
  attend_impl<uint16_t>(q, n_q, rows, n_kv, hd, scale, scores, out);
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
