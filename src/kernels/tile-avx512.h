// Helpers shared by the AVX-512 GEMM tiles (gemm-k-avx512.cpp, gemm-q8-avx512.cpp). Include only
// from files built with the avx512 tier's flags.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace llmt::kernels::avx512 {

constexpr int kLanes = 16;  // weight rows per tile (one per 32-bit lane)

// In-register transpose of a 16 x 16 matrix of 32-bit values: on return c[j] lane i = r[i] lane j.
inline void transpose16(const __m512i r[16], __m512i c[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + j] lane L = column 4L + j of rows 4g..4g+3.
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  // 4 x 4 transpose of 128-bit lanes for each j.
  for (int j = 0; j < 4; ++j) {
    const __m512i p0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x44);
    const __m512i p1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xEE);
    const __m512i p2 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x44);
    const __m512i p3 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xEE);
    c[j] = _mm512_shuffle_i32x4(p0, p2, 0x88);
    c[4 + j] = _mm512_shuffle_i32x4(p0, p2, 0xDD);
    c[8 + j] = _mm512_shuffle_i32x4(p1, p3, 0x88);
    c[12 + j] = _mm512_shuffle_i32x4(p1, p3, 0xDD);
  }
}

}  // namespace llmt::kernels::avx512
