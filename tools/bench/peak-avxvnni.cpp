// AVX-VNNI (VEX-encoded, 256-bit) register-only peak loops of the bench, for the avxvnni tier;
// only built on x86-64 (the -avxvnni.cpp suffix gives them -mavxvnni) and only called when that
// tier is in use. Written in asm with the {vex} prefix so the VEX encodings the avxvnni kernels
// use are what is timed (the EVEX forms need AVX-512 VL).
#include <immintrin.h>

#include "bench.h"

namespace llmt::bench {

double int8_dot_loop_avxvnni(int64_t n_iter, int32_t* sink) {
  // ymm0 = a (u8), ymm1..4 = multiplicands (s8), ymm6..15 = 10 independent accumulators (the
  // 5-cycle latency of vpdpbusd at 2 per cycle). 32 u8 x s8 products (64 ops) each.
  alignas(32) int32_t out[8];
  const __m256i a = _mm256_set1_epi8(3);
  const __m256i b0 = _mm256_set1_epi8(1), b1 = _mm256_set1_epi8(2);
  const __m256i b2 = _mm256_set1_epi8(-3), b3 = _mm256_set1_epi8(4);
#define LLMT_DP(b, acc) "%{vex%} vpdpbusd %%ymm" #b ", %%ymm0, %%ymm" #acc "\n\t"
  int64_t n = n_iter;
  __asm__ volatile(
      "vmovdqu %[a], %%ymm0\n\t"
      "vmovdqu %[b0], %%ymm1\n\t"
      "vmovdqu %[b1], %%ymm2\n\t"
      "vmovdqu %[b2], %%ymm3\n\t"
      "vmovdqu %[b3], %%ymm4\n\t"
      "vpxor %%ymm6, %%ymm6, %%ymm6\n\t"
      "vpxor %%ymm7, %%ymm7, %%ymm7\n\t"
      "vpxor %%ymm8, %%ymm8, %%ymm8\n\t"
      "vpxor %%ymm9, %%ymm9, %%ymm9\n\t"
      "vpxor %%ymm10, %%ymm10, %%ymm10\n\t"
      "vpxor %%ymm11, %%ymm11, %%ymm11\n\t"
      "vpxor %%ymm12, %%ymm12, %%ymm12\n\t"
      "vpxor %%ymm13, %%ymm13, %%ymm13\n\t"
      "vpxor %%ymm14, %%ymm14, %%ymm14\n\t"
      "vpxor %%ymm15, %%ymm15, %%ymm15\n\t"
      "test %[n], %[n]\n\t"
      "jle 2f\n\t"
      "1:\n\t"
      LLMT_DP(1, 6) LLMT_DP(2, 7) LLMT_DP(3, 8) LLMT_DP(4, 9) LLMT_DP(1, 10)
      LLMT_DP(2, 11) LLMT_DP(3, 12) LLMT_DP(4, 13) LLMT_DP(1, 14) LLMT_DP(2, 15)
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "vpaddd %%ymm7, %%ymm6, %%ymm6\n\t"
      "vpaddd %%ymm9, %%ymm8, %%ymm8\n\t"
      "vpaddd %%ymm11, %%ymm10, %%ymm10\n\t"
      "vpaddd %%ymm13, %%ymm12, %%ymm12\n\t"
      "vpaddd %%ymm15, %%ymm14, %%ymm14\n\t"
      "vpaddd %%ymm8, %%ymm6, %%ymm6\n\t"
      "vpaddd %%ymm12, %%ymm10, %%ymm10\n\t"
      "vpaddd %%ymm14, %%ymm10, %%ymm10\n\t"
      "vpaddd %%ymm10, %%ymm6, %%ymm6\n\t"
      "vmovdqa %%ymm6, %[out]\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(n), [out] "=m"(out)
      : [a] "m"(a), [b0] "m"(b0), [b1] "m"(b1), [b2] "m"(b2), [b3] "m"(b3)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm12", "xmm13", "xmm14", "xmm15", "cc");
#undef LLMT_DP
  *sink = out[0];
  return static_cast<double>(n_iter) * 10.0 * 32.0 * 2.0;
}

double int8_scaled_dot_loop_avxvnni(int64_t n_iter, int32_t* sink) {
  // The avxvnni k-quant inner step (gemm-k-x86.h with VexVnniDot): vpmaddubsw (32 int8 pair
  // products -> i16), then {vex} vpdpwssd by the int16 sub-block scales into the i32 sums.
  // ymm0 = a (u8), ymm1 = scales (i16), ymm2..5 = multiplicands (s8), ymm6..13 = accumulators.
  alignas(32) int32_t out[8];
  const __m256i a = _mm256_set1_epi8(3);
  const __m256i scale = _mm256_set1_epi16(5);
  const __m256i b0 = _mm256_set1_epi8(1), b1 = _mm256_set1_epi8(2);
  const __m256i b2 = _mm256_set1_epi8(-3), b3 = _mm256_set1_epi8(4);
#define LLMT_SCALED_STEP(b, acc) \
  "vpmaddubsw %%ymm" #b          \
  ", %%ymm0, %%ymm14\n\t"        \
  "%{vex%} vpdpwssd %%ymm1, %%ymm14, %%ymm" #acc "\n\t"
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

}  // namespace llmt::bench
