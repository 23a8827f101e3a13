// The integer dot-product steps of the 256-bit x86 kernels, one struct per instruction set, so the
// same kernel source (gemm-k-x86.h, gemm-q8-x86.h, block32-x86.h) is compiled once per tier with
// its file's step (the including file names it `IntDot`):
//   MaddubsDot  AVX2: vpmaddubsw + vpmaddwd + vpaddd            (*-avx2.cpp)
//   VexVnniDot  AVX-VNNI, VEX-encoded vpdpbusd / vpdpwssd       (*-avxvnni.cpp)
//   EvexVnniDot AVX-512 VNNI + VL, EVEX-encoded at 256 bits     (vnni256-avx512.cpp: the avx512
//               tier's kernels below its wide tiles; the same operations as VexVnniDot, so a
//               machine with AVX-512 VNNI but without AVX-VNNI exercises the avxvnni logic)
//
// Contract of every step (int32 lanes l = 0..7 of the 256-bit vectors):
//   dpbusd(acc, u, s)[l] = acc[l] + sum_{i<4} u8(u[4l+i]) * s8(s[4l+i])
//   dpwssd(acc, a, b)[l] = acc[l] + a16[2l] * b16[2l] + a16[2l+1] * b16[2l+1]
// (int32 wrap-around; every caller keeps sums far below 2^31, so they are exact). vpdpbusd and
// vpdpwssd compute exactly that. MaddubsDot::dpbusd does too only while each pair sum
// u[2j]*s[2j] + u[2j+1]*s[2j+1] fits int16 (vpmaddubsw saturates): callers state per format why
// theirs do (|u| * |s| * 2 <= 32767 for the code and activation ranges), and the tests compare the
// tiers bitwise on extreme codes. MaddubsDot::dpwssd is exact (vpmaddwd never saturates for the
// int16 ranges used: no -32768 * -32768 pair).
#pragma once

#include <immintrin.h>

namespace llmt::kernels {

// Internal linkage: each tier's file gets its own copy, compiled with its own flags (an inline
// function with external linkage could be merged across files with different ISA flags).
namespace {

#if defined(__AVX2__)
struct MaddubsDot {
  static __m256i dpbusd(__m256i acc, __m256i u, __m256i s) {
    return _mm256_add_epi32(acc,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
  }
  static __m256i dpwssd(__m256i acc, __m256i a, __m256i b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
  }
};
#endif

#if defined(__AVXVNNI__)
struct VexVnniDot {
  static __m256i dpbusd(__m256i acc, __m256i u, __m256i s) {
    return _mm256_dpbusd_avx_epi32(acc, u, s);
  }
  static __m256i dpwssd(__m256i acc, __m256i a, __m256i b) {
    return _mm256_dpwssd_avx_epi32(acc, a, b);
  }
};
#endif

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
struct EvexVnniDot {
  static __m256i dpbusd(__m256i acc, __m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(acc, u, s);
  }
  static __m256i dpwssd(__m256i acc, __m256i a, __m256i b) {
    return _mm256_dpwssd_epi32(acc, a, b);
  }
};
#endif

}  // namespace

}  // namespace llmt::kernels
