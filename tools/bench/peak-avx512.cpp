// AVX-512 (F+BW+VL+VNNI) register-only peak loops of the bench, for the avx512 tier; only built on
// x86-64 and only called when that tier is in use.
#include <immintrin.h>

#include "bench.h"

namespace llmt::bench {

double int8_dot_loop_avx512(int64_t n_iter, int32_t* sink) {
  // Written in asm so every vpdpbusd (64 u8 x s8 products into 16 int32, 128 ops) runs as written.
  // zmm0 = a (u8), zmm1..4 = multiplicands (s8), zmm6..15 = 10 independent accumulators (the
  // 5-cycle latency at up to 2 per cycle).
  alignas(64) int32_t out[16];
  const __m512i a = _mm512_set1_epi8(3);
  const __m512i b0 = _mm512_set1_epi8(1), b1 = _mm512_set1_epi8(2);
  const __m512i b2 = _mm512_set1_epi8(-3), b3 = _mm512_set1_epi8(4);
#define LLMT_DP(b, acc) "vpdpbusd %%zmm" #b ", %%zmm0, %%zmm" #acc "\n\t"
  int64_t n = n_iter;
  __asm__ volatile(
      "vmovdqu64 %[a], %%zmm0\n\t"
      "vmovdqu64 %[b0], %%zmm1\n\t"
      "vmovdqu64 %[b1], %%zmm2\n\t"
      "vmovdqu64 %[b2], %%zmm3\n\t"
      "vmovdqu64 %[b3], %%zmm4\n\t"
      "vpxord %%zmm6, %%zmm6, %%zmm6\n\t"
      "vpxord %%zmm7, %%zmm7, %%zmm7\n\t"
      "vpxord %%zmm8, %%zmm8, %%zmm8\n\t"
      "vpxord %%zmm9, %%zmm9, %%zmm9\n\t"
      "vpxord %%zmm10, %%zmm10, %%zmm10\n\t"
      "vpxord %%zmm11, %%zmm11, %%zmm11\n\t"
      "vpxord %%zmm12, %%zmm12, %%zmm12\n\t"
      "vpxord %%zmm13, %%zmm13, %%zmm13\n\t"
      "vpxord %%zmm14, %%zmm14, %%zmm14\n\t"
      "vpxord %%zmm15, %%zmm15, %%zmm15\n\t"
      "test %[n], %[n]\n\t"
      "jle 2f\n\t"
      "1:\n\t"
      LLMT_DP(1, 6) LLMT_DP(2, 7) LLMT_DP(3, 8) LLMT_DP(4, 9) LLMT_DP(1, 10)
      LLMT_DP(2, 11) LLMT_DP(3, 12) LLMT_DP(4, 13) LLMT_DP(1, 14) LLMT_DP(2, 15)
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "vpaddd %%zmm7, %%zmm6, %%zmm6\n\t"
      "vpaddd %%zmm9, %%zmm8, %%zmm8\n\t"
      "vpaddd %%zmm11, %%zmm10, %%zmm10\n\t"
      "vpaddd %%zmm13, %%zmm12, %%zmm12\n\t"
      "vpaddd %%zmm15, %%zmm14, %%zmm14\n\t"
      "vpaddd %%zmm8, %%zmm6, %%zmm6\n\t"
      "vpaddd %%zmm12, %%zmm10, %%zmm10\n\t"
      "vpaddd %%zmm14, %%zmm10, %%zmm10\n\t"
      "vpaddd %%zmm10, %%zmm6, %%zmm6\n\t"
      "vmovdqa64 %%zmm6, %[out]\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(n), [out] "=m"(out)
      : [a] "m"(a), [b0] "m"(b0), [b1] "m"(b1), [b2] "m"(b2), [b3] "m"(b3)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm12", "xmm13", "xmm14", "xmm15", "cc");
#undef LLMT_DP
  *sink = out[0];
  return static_cast<double>(n_iter) * 10.0 * 64.0 * 2.0;
}

double int8_scaled_dot_loop_avx512(int64_t n_iter, int32_t* sink) {
  // The inner step of the wide k-quant tiles (gemm-k-avx512.cpp): per 32-element sub-block and
  // 16 weight rows, 8 vpdpbusd into a fresh accumulator, then vpmulld by the sub-block scales
  // and vpaddd into the row sums (512 int8 products, 1024 ops). Two sub-blocks per step keep
  // the chains independent.
  alignas(64) int32_t out[16];
  const __m512i a = _mm512_set1_epi8(3);
  const __m512i s = _mm512_set1_epi32(5);
  const __m512i b0 = _mm512_set1_epi8(1), b1 = _mm512_set1_epi8(2);
#define LLMT_SUB(acc, sum)                                                                 \
  "vpxord %%zmm" #acc ", %%zmm" #acc ", %%zmm" #acc "\n\t" LLMT_DP(2, acc) LLMT_DP(3, acc) \
      LLMT_DP(2, acc) LLMT_DP(3, acc) LLMT_DP(2, acc) LLMT_DP(3, acc) LLMT_DP(2, acc)      \
          LLMT_DP(3, acc) "vpmulld %%zmm1, %%zmm" #acc ", %%zmm" #acc                      \
                          "\n\t"                                                           \
                          "vpaddd %%zmm" #acc ", %%zmm" #sum ", %%zmm" #sum "\n\t"
#define LLMT_DP(b, acc) "vpdpbusd %%zmm" #b ", %%zmm0, %%zmm" #acc "\n\t"
  int64_t n = n_iter;
  __asm__ volatile(
      "vmovdqu64 %[a], %%zmm0\n\t"
      "vmovdqu64 %[s], %%zmm1\n\t"
      "vmovdqu64 %[b0], %%zmm2\n\t"
      "vmovdqu64 %[b1], %%zmm3\n\t"
      "vpxord %%zmm10, %%zmm10, %%zmm10\n\t"
      "vpxord %%zmm11, %%zmm11, %%zmm11\n\t"
      "vpxord %%zmm12, %%zmm12, %%zmm12\n\t"
      "vpxord %%zmm13, %%zmm13, %%zmm13\n\t"
      "test %[n], %[n]\n\t"
      "jle 2f\n\t"
      "1:\n\t"
      LLMT_SUB(4, 10) LLMT_SUB(5, 11) LLMT_SUB(6, 12) LLMT_SUB(7, 13)
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "vpaddd %%zmm11, %%zmm10, %%zmm10\n\t"
      "vpaddd %%zmm13, %%zmm12, %%zmm12\n\t"
      "vpaddd %%zmm12, %%zmm10, %%zmm10\n\t"
      "vmovdqa64 %%zmm10, %[out]\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(n), [out] "=m"(out)
      : [a] "m"(a), [s] "m"(s), [b0] "m"(b0), [b1] "m"(b1)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm10", "xmm11", "xmm12",
        "xmm13", "cc");
#undef LLMT_DP
#undef LLMT_SUB
  *sink = out[0];
  return static_cast<double>(n_iter) * 4.0 * 8.0 * 64.0 * 2.0;
}

double fma_loop_avx512(int64_t n_iter, float* sink) {
  __m512 x = _mm512_set1_ps(0.999f);
  const __m512 y = _mm512_set1_ps(1e-7f);
  __m512 acc[10];
  for (int j = 0; j < 10; ++j) acc[j] = _mm512_set1_ps(static_cast<float>(j));
  for (int64_t i = 0; i < n_iter; ++i) {
    __asm__ volatile("" : "+v"(x));
    for (int j = 0; j < 10; ++j) acc[j] = _mm512_fmadd_ps(acc[j], x, y);
  }
  __m512 s = acc[0];
  for (int j = 1; j < 10; ++j) s = _mm512_add_ps(s, acc[j]);
  *sink = _mm512_reduce_add_ps(s);
  return static_cast<double>(n_iter) * 10.0 * 16.0 * 2.0;
}

}  // namespace llmt::bench
