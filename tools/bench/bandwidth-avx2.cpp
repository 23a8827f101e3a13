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

double int8_scaled_dot_loop_avx2(int64_t n_iter, int32_t* sink) {
  // Written in asm so that every step is executed as written: with intrinsics the compiler
  // merges repeated products or spills an accumulator (a store-forwarding chain caps the rate).
  // ymm0 = a (u8), ymm1 = scales (i16), ymm2..5 = multiplicands (s8), ymm6..13 = accumulators.
  // Per step: vpmaddubsw (32 int8 pair products -> i16), vpmaddwd (times the scale, i32 pairs),
  // vpaddd: the inner step of a k-quant dot product.
  alignas(32) int32_t out[8];
  const __m256i a = _mm256_set1_epi8(3);
  const __m256i scale = _mm256_set1_epi16(5);
  const __m256i b0 = _mm256_set1_epi8(1), b1 = _mm256_set1_epi8(2);
  const __m256i b2 = _mm256_set1_epi8(-3), b3 = _mm256_set1_epi8(4);
#define LLMT_SCALED_STEP(b, acc)          \
  "vpmaddubsw %%ymm" #b                   \
  ", %%ymm0, %%ymm14\n\t"                 \
  "vpmaddwd %%ymm1, %%ymm14, %%ymm14\n\t" \
  "vpaddd %%ymm14, %%ymm" #acc ", %%ymm" #acc "\n\t"
  int64_t n = n_iter;
  __asm__ volatile(
      "vmovdqu %[a], %%ymm0\n\t"
      "vmovdqu %[s], %%ymm1\n\t"
      "vmovdqu %[b0], %%ymm2\n\t"
      "vmovdqu %[b1], %%ymm3\n\t"
      "vmovdqu %[b2], %%ymm4\n\t"
      "vmovdqu %[b3], %%ymm5\n\t"
      "vpxor %%ymm6, %%ymm6, %%ymm6\n\t"
      "vpxor %%ymm7, %%ymm7, %%ymm7\n\t"
      "vpxor %%ymm8, %%ymm8, %%ymm8\n\t"
      "vpxor %%ymm9, %%ymm9, %%ymm9\n\t"
      "vpxor %%ymm10, %%ymm10, %%ymm10\n\t"
      "vpxor %%ymm11, %%ymm11, %%ymm11\n\t"
      "vpxor %%ymm12, %%ymm12, %%ymm12\n\t"
      "vpxor %%ymm13, %%ymm13, %%ymm13\n\t"
      "test %[n], %[n]\n\t"
      "jle 2f\n\t"
      "1:\n\t"
      LLMT_SCALED_STEP(2, 6) LLMT_SCALED_STEP(3, 7) LLMT_SCALED_STEP(4, 8) LLMT_SCALED_STEP(5, 9)
      LLMT_SCALED_STEP(2, 10) LLMT_SCALED_STEP(3, 11) LLMT_SCALED_STEP(4, 12) LLMT_SCALED_STEP(5, 13)
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "vpaddd %%ymm7, %%ymm6, %%ymm6\n\t"
      "vpaddd %%ymm9, %%ymm8, %%ymm8\n\t"
      "vpaddd %%ymm11, %%ymm10, %%ymm10\n\t"
      "vpaddd %%ymm13, %%ymm12, %%ymm12\n\t"
      "vpaddd %%ymm8, %%ymm6, %%ymm6\n\t"
      "vpaddd %%ymm12, %%ymm10, %%ymm10\n\t"
      "vpaddd %%ymm10, %%ymm6, %%ymm6\n\t"
      "vmovdqa %%ymm6, %[out]\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(n), [out] "=m"(out)
      : [a] "m"(a), [s] "m"(scale), [b0] "m"(b0), [b1] "m"(b1), [b2] "m"(b2), [b3] "m"(b3)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "cc");
#undef LLMT_SCALED_STEP
  *sink = out[0];
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
