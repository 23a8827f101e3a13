// AVX2 loops of the bench: streaming float sum (read bandwidth) and register-only peak loops.
// Built with -mavx2 -mfma -mf16c; called only after run-time detection said AVX2 is present.
#include <immintrin.h>

#include "bench.h"

namespace llmt::bench {

float sum_floats_avx2(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  __m256 a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (size_t i = 0; i < n; i += 64) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    a4 = _mm256_add_ps(a4, _mm256_load_ps(p + i + 32));
    a5 = _mm256_add_ps(a5, _mm256_load_ps(p + i + 40));
    a6 = _mm256_add_ps(a6, _mm256_load_ps(p + i + 48));
    a7 = _mm256_add_ps(a7, _mm256_load_ps(p + i + 56));
  }
  const __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                                 _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  float total = 0.0f;
  for (float v : lanes) total += v;
  return total;
}

double int8_dot_loop_avx2(int64_t n_iter, int32_t* sink) {
  __m256i a = _mm256_set1_epi8(3);
  __m256i b[8], acc[8];
  for (int j = 0; j < 8; ++j) {
    b[j] = _mm256_set1_epi8(static_cast<char>(j + 1));
    acc[j] = _mm256_setzero_si256();
  }
  for (int64_t i = 0; i < n_iter; ++i) {
    // The empty asm makes `a` opaque, so the products cannot be hoisted out of the loop.
    __asm__ volatile("" : "+x"(a));
    for (int j = 0; j < 8; ++j) {
      acc[j] = _mm256_add_epi16(acc[j], _mm256_maddubs_epi16(a, b[j]));
    }
  }
  __m256i s = acc[0];
  for (int j = 1; j < 8; ++j) s = _mm256_add_epi16(s, acc[j]);
  *sink = _mm256_extract_epi16(s, 0);
  return static_cast<double>(n_iter) * 8.0 * 32.0 * 2.0;
}

double fma_loop_avx2(int64_t n_iter, float* sink) {
  __m256 x = _mm256_set1_ps(0.999f);
  const __m256 y = _mm256_set1_ps(1e-7f);
  __m256 acc[10];
  for (int j = 0; j < 10; ++j) acc[j] = _mm256_set1_ps(static_cast<float>(j));
  for (int64_t i = 0; i < n_iter; ++i) {
    __asm__ volatile("" : "+x"(x));
    for (int j = 0; j < 10; ++j) acc[j] = _mm256_fmadd_ps(acc[j], x, y);
  }
  __m256 s = acc[0];
  for (int j = 1; j < 10; ++j) s = _mm256_add_ps(s, acc[j]);
  *sink = _mm256_cvtss_f32(s);
  return static_cast<double>(n_iter) * 10.0 * 8.0 * 2.0;
}

}  // namespace llmt::bench
