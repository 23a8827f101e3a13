// Q2_K / Q3_K / Q4_K / Q5_K / Q6_K weight x Q8_K activation kernels for matmul, as 256-bit x86
// source compiled once per tier: the single-row dot (vec_dot) and the register-tiled GEMM tile
// (one weight row x 8 tokens per pass, weights decoded once per 8 tokens, 8 int32x8 accumulators
// in registers). Included by gemm-k-avx2.cpp and gemm-k-avxvnni.cpp (and vnni256-avx512.cpp, the
// EVEX build of the avxvnni kernels), each of which first defines `IntDot` (int-dot-x86.h) in
// llmt::kernels' anonymous namespace: the integer dot step of its tier. Everything here has
// internal linkage (per-file copies, in namespace gemm_k so one file can include the other *-x86.h
// bodies too).
//
// Per-pair arithmetic (the batch-invariance contract, shared by vec_dot and every tile):
// for each super-block i, the exact integer dot isum_i (and for Q4_K the exact min term
// imin_i = sum_s min_s * (sum of the token's q8 over sub-block s)) is computed in int32 by any
// means (integer addition is exact), then
//   acc  = fma(d_i * dx_i, float(isum_i), acc)         (acc, accm start at +0.0f)
//   accm = fma(dmin_i * dx_i, float(imin_i), accm)     (Q4_K only)
// with d_i, dmin_i the weight super-block scales and dx_i the token's Q8_K scale; the result is
// acc - accm (Q4_K) or acc (Q6_K). Two chains halve the fma latency per super-block. The tile
// evaluates the same sequence with one token per vector lane. The tiers differ only in how the
// exact int32 sums are formed, so their results are bitwise equal.
//
// Integer steps: codes x q8 bytes go through vpmaddubsw (int16 pair sums) on every tier, then
// IntDot::dpwssd multiplies the pairs by the int16 (sub-)block scales and accumulates (AVX2:
// vpmaddwd + vpaddd; VNNI: one vpdpwssd). vpmaddubsw never saturates here: the unsigned codes
// are at most 3 (Q2_K), 7 (Q3_K), 15 (Q4_K), 31 (Q5_K), 63 (Q6_K) and Q8_K bytes lie in
// [-127, 127] (quantize_q8_k clamps), so a pair sum is at most 2 * 63 * 127 = 16002 < 2^15.
// Scale products: |scale| <= 63 (Q4_K/Q5_K, unsigned 6-bit), 15 (Q2_K), 32 (Q3_K), 128 (Q6_K)
// times a pair sum or a 16-element q8 sum (<= 2032) stay far below 2^31 per lane.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <type_traits>

#include "kernels/int-dot-x86.h"
#include "kernels/quant-blocks.h"

namespace llmt::kernels {

namespace {
namespace gemm_k {

using avx2::fp16;
using avx2::load256;
using avx2::reduce8;

// Exact integer horizontal sum of 8 int32 lanes.
inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// Lane 0 = exact sum of a's lanes, lane 1 = exact sum of b's lanes.
inline __m128i hsum2_i32(__m256i a, __m256i b) {
  const __m256i p = _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
  const __m128i q = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
  return _mm_add_epi32(q, _mm_shuffle_epi32(q, 0x4E));
}

// Stores lanes [0, ntok) of v to y[t * ys].
inline void store_lanes(__m256 v, float* y, int64_t ys, int ntok) {
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  for (int t = 0; t < ntok; ++t) y[t * ys] = tmp[t];
}

// ---------------------------------------------------------------- Q4_K / Q5_K

// Adds the Q4_K code x q8 products of super-block b for NT tokens (q8 rows y[t]) into sumi[t]:
// lane l of sumi[t] collects elements 4l..4l+3 of every 32-element sub-block, times its scale.
template <bool kFive>
using BlockQ45K = std::conditional_t<kFive, BlockQ5K, BlockQ4K>;

// Adds the Q4_K (Q5_K: with the fifth bit from qh) code x q8 products of super-block b for NT
// tokens (q8 rows y[t]) into sumi[t]: lane l of sumi[t] collects elements 4l..4l+3 of every
// 32-element sub-block, times its scale.
template <bool kFive, int NT>
inline void q45k_block(const BlockQ45K<kFive>& b, const uint8_t sc[8], const int8_t* const y[NT],
                       __m256i sumi[NT]) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  [[maybe_unused]] __m256i hbits;
  if constexpr (kFive) hbits = load256(b.qh);
  for (int j = 0; j < 4; ++j) {
    const __m256i q = load256(b.qs + 32 * j);
    __m256i lo = _mm256_and_si256(q, m4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    if constexpr (kFive) {
      const __m256i bit4 = _mm256_set1_epi8(0x10);
      // Bit 2j of qh byte l -> element 64j + l (bit 4 of the code), bit 2j + 1 -> 64j + 32 + l.
      lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(hbits, 4), bit4));
      hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(hbits, 3), bit4));
      hbits = _mm256_srli_epi16(hbits, 2);
    }
    const __m256i s_lo = _mm256_set1_epi16(sc[2 * j]);
    const __m256i s_hi = _mm256_set1_epi16(sc[2 * j + 1]);
    for (int t = 0; t < NT; ++t) {
      sumi[t] = IntDot::dpwssd(sumi[t], _mm256_maddubs_epi16(lo, load256(y[t] + 64 * j)), s_lo);
      sumi[t] =
          IntDot::dpwssd(sumi[t], _mm256_maddubs_epi16(hi, load256(y[t] + 64 * j + 32)), s_hi);
      asm("" : "+x"(sumi[t]));  // no reassociation into spilled product trees
    }
  }
}

template <bool kFive>
void dot_q45_k(int64_t n, float* out, const void* w, const void* x) {
  const auto* wb = static_cast<const BlockQ45K<kFive>*>(w);
  const auto* xb = static_cast<const BlockQ8K*>(x);
  // Lane 0 is acc, lane 1 is accm (one fma serves both chains).
  __m128 acc = _mm_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    alignas(8) uint8_t sc[8];
    alignas(8) uint8_t mn[8];
    k4_scales_mins(wb[i].scales, sc, mn);
    __m256i sumi[1] = {_mm256_setzero_si256()};
    const int8_t* y[1] = {xb[i].qs};
    q45k_block<kFive, 1>(wb[i], sc, y, sumi);
    // Each sub-block's min covers two bsums groups: duplicate every min.
    const __m128i m8 = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn)));
    const __m256i mins16 = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
    const __m128 f =
        _mm_cvtepi32_ps(hsum2_i32(sumi[0], _mm256_madd_epi16(mins16, load256(xb[i].bsums))));
    uint32_t d_dmin;  // d and dmin are adjacent fp16 fields
    std::memcpy(&d_dmin, &wb[i].d, 4);
    const __m128 scales =
        _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(d_dmin))), _mm_set1_ps(xb[i].d));
    acc = _mm_fmadd_ps(scales, f, acc);
  }
  *out = _mm_cvtss_f32(_mm_sub_ss(acc, _mm_movehdup_ps(acc)));
}

template <bool kFive>
void gemm_q45_k(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
                size_t x_stride, const void* aux, float* y, int64_t y_stride, int ntok) {
  const auto* hdr = static_cast<const Q8KGroup*>(aux);
  const int64_t nsb = k / kQKK;
  const BlockQ8K* xb[8];
  for (int t = 0; t < 8; ++t) xb[t] = row_at<BlockQ8K>(x, x_stride, t < ntok ? t : 0);
  for (int64_t r = 0; r < nrows; ++r) {
    const auto* wb = row_at<BlockQ45K<kFive>>(w, w_stride, static_cast<int>(r));
    __m256 acc = _mm256_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < nsb; ++i) {
      const BlockQ45K<kFive>& b = wb[i];
      alignas(8) uint8_t sc[8];
      alignas(8) uint8_t mn[8];
      k4_scales_mins(b.scales, sc, mn);
      __m256i sumi[8];
      const int8_t* yq[8];
      for (int t = 0; t < 8; ++t) {
        sumi[t] = _mm256_setzero_si256();
        yq[t] = xb[t][i].qs;
      }
      q45k_block<kFive, 8>(b, sc, yq, sumi);
      const __m256i isum = reduce8(sumi);
      // imin for the 8 tokens: pairs of sub-block mins x the header's transposed sub-block sums.
      const __m256i mm = _mm256_broadcastsi128_si256(
          _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn))));
      const Q8KGroup& h = hdr[i];
      __m256i imin = _mm256_madd_epi16(_mm256_shuffle_epi32(mm, 0x00), load256(h.bs[0]));
      imin = IntDot::dpwssd(imin, _mm256_shuffle_epi32(mm, 0x55), load256(h.bs[1]));
      imin = IntDot::dpwssd(imin, _mm256_shuffle_epi32(mm, 0xAA), load256(h.bs[2]));
      imin = IntDot::dpwssd(imin, _mm256_shuffle_epi32(mm, 0xFF), load256(h.bs[3]));
      const __m256 dx = _mm256_loadu_ps(h.d);
      acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(fp16(b.d)), dx), _mm256_cvtepi32_ps(isum),
                            acc);
      accm = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(fp16(b.dmin)), dx),
                             _mm256_cvtepi32_ps(imin), accm);
    }
    store_lanes(_mm256_sub_ps(acc, accm), y + r, y_stride, ntok);
  }
}

// ---------------------------------------------------------------- Q6_K

// Adds the Q6_K (code - 32) x q8 products of super-block b for NT tokens into sumi[t]: lane l
// collects elements 4l..4l+3 of every 32-element run, times its group scale; the -32 offset is
// removed with the activation group sums (one vpmaddwd of the scales times -32 with the token's
// 16 bsums, added like another run).
template <int NT>
inline void q6k_block(const BlockQ6K& b, const BlockQ8K* const xb[NT], __m256i sumi[NT]) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i m30 = _mm256_set1_epi8(0x30);
  // Per half h: int16 scales of its even groups in the low 128-bit lane and of its odd groups in
  // the high lane, so a per-lane word broadcast gives run r's pair (group 2r low, 2r + 1 high).
  const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales));
  const __m256i pair_scs[2] = {
      _mm256_cvtepi8_epi16(
          _mm_shuffle_epi8(sc8, _mm_setr_epi8(0, 2, 4, 6, 0, 0, 0, 0, 1, 3, 5, 7, 0, 0, 0, 0))),
      _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
          sc8, _mm_setr_epi8(8, 10, 12, 14, 0, 0, 0, 0, 9, 11, 13, 15, 0, 0, 0, 0))),
  };
  for (int h = 0; h < 2; ++h) {
    const __m256i pair_sc = pair_scs[h];
    for (int run = 0; run < 4; ++run) {
      // Loaded per run (L1 hits) rather than held: keeps the 8 token accumulators in registers.
      const __m256i lq = load256(b.ql + 64 * h + 32 * (run & 1));
      const __m256i qh = load256(b.qh + 32 * h);
      const __m256i low =
          run < 2 ? _mm256_and_si256(lq, m4) : _mm256_and_si256(_mm256_srli_epi16(lq, 4), m4);
      __m256i high;
      if (run == 0)
        high = _mm256_slli_epi16(qh, 4);
      else if (run == 1)
        high = _mm256_slli_epi16(qh, 2);
      else if (run == 2)
        high = qh;
      else
        high = _mm256_srli_epi16(qh, 2);
      const __m256i codes = _mm256_or_si256(low, _mm256_and_si256(high, m30));
      const __m256i s = _mm256_shuffle_epi8(
          pair_sc, _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * run)));
      for (int t = 0; t < NT; ++t) {
        sumi[t] = IntDot::dpwssd(
            sumi[t], _mm256_maddubs_epi16(codes, load256(xb[t]->qs + 128 * h + 32 * run)), s);
        // Keeps the compiler from reassociating the 8 adds into a tree of spilled products.
        asm("" : "+x"(sumi[t]));
      }
    }
  }
  // -32 * scale fits int16 (|scale| <= 128); integer sums are exact in any order.
  const __m256i sc16m =
      _mm256_slli_epi16(_mm256_sub_epi16(_mm256_setzero_si256(), _mm256_cvtepi8_epi16(sc8)), 5);
  for (int t = 0; t < NT; ++t) {
    sumi[t] = IntDot::dpwssd(sumi[t], sc16m, load256(xb[t]->bsums));
  }
}

void dot_q6_k(int64_t n, float* out, const void* w, const void* x) {
  const auto* wb = static_cast<const BlockQ6K*>(w);
  const auto* xb = static_cast<const BlockQ8K*>(x);
  __m128 acc = _mm_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    __m256i sumi[1] = {_mm256_setzero_si256()};
    const BlockQ8K* xr[1] = {&xb[i]};
    q6k_block<1>(wb[i], xr, sumi);
    const __m128 f = _mm_cvtepi32_ps(hsum2_i32(sumi[0], _mm256_setzero_si256()));
    acc = _mm_fmadd_ss(_mm_set_ss(fp16(wb[i].d) * xb[i].d), f, acc);
  }
  *out = _mm_cvtss_f32(acc);
}

void gemm_q6_k(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
               size_t x_stride, const void* aux, float* y, int64_t y_stride, int ntok) {
  const auto* hdr = static_cast<const Q8KGroup*>(aux);
  const int64_t nsb = k / kQKK;
  const BlockQ8K* xb[8];
  for (int t = 0; t < 8; ++t) xb[t] = row_at<BlockQ8K>(x, x_stride, t < ntok ? t : 0);
  for (int64_t r = 0; r < nrows; ++r) {
    const auto* wb = row_at<BlockQ6K>(w, w_stride, static_cast<int>(r));
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nsb; ++i) {
      __m256i sumi[8];
      const BlockQ8K* xr[8];
      for (int t = 0; t < 8; ++t) {
        sumi[t] = _mm256_setzero_si256();
        xr[t] = &xb[t][i];
      }
      q6k_block<8>(wb[i], xr, sumi);
      const __m256 dx = _mm256_loadu_ps(hdr[i].d);
      acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(fp16(wb[i].d)), dx),
                            _mm256_cvtepi32_ps(reduce8(sumi)), acc);
    }
    store_lanes(acc, y + r, y_stride, ntok);
  }
}

// ---------------------------------------------------------------- Q2_K / Q3_K

// Per half h and run k (0..3) of both formats: 2-bit codes at bits 2k..2k+1 of qs[32h + l] for
// elements 128h + 32k + l, groups 8h + 2k (l < 16) and 8h + 2k + 1 (l >= 16).
// pair_scales(sc16, h): int16 scales of half h with even groups in the low 128-bit lane and odd
// groups in the high lane (a per-lane word broadcast then gives run k's scale pair).
inline __m256i pair_scales(__m128i sc8, int h) {
  const __m128i split = h == 0
                            ? _mm_setr_epi8(0, 2, 4, 6, 0, 0, 0, 0, 1, 3, 5, 7, 0, 0, 0, 0)
                            : _mm_setr_epi8(8, 10, 12, 14, 0, 0, 0, 0, 9, 11, 13, 15, 0, 0, 0, 0);
  return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, split));
}
inline __m256i run_scale(__m256i pair_sc, int k) {
  return _mm256_shuffle_epi8(pair_sc, _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * k)));
}

// Q2_K: x = d * sc * q - dmin * m; sumi gets sc * q x q8, summ the min dot m x bsums.
struct KQ2 {
  using Block = BlockQ2K;
  static constexpr bool kHasMin = true;
  template <int NT>
  static void block(const Block& b, const BlockQ8K* const xb[NT], __m256i sumi[NT],
                    __m256i summ[NT]) {
    const __m256i m3 = _mm256_set1_epi8(0x03);
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales));
    const __m128i lo4 = _mm_and_si128(sc8, _mm_set1_epi8(0x0F));
    for (int h = 0; h < 2; ++h) {
      const __m256i pair_sc = pair_scales(lo4, h);
      const __m256i q = load256(b.qs + 32 * h);
      for (int k = 0; k < 4; ++k) {
        const __m256i codes = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m3);
        const __m256i s = run_scale(pair_sc, k);
        for (int t = 0; t < NT; ++t) {
          sumi[t] = IntDot::dpwssd(
              sumi[t], _mm256_maddubs_epi16(codes, load256(xb[t]->qs + 128 * h + 32 * k)), s);
          asm("" : "+x"(sumi[t]));
        }
      }
    }
    const __m256i mins16 =
        _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0x0F)));
    for (int t = 0; t < NT; ++t) summ[t] = _mm256_madd_epi16(mins16, load256(xb[t]->bsums));
  }
};

// Q3_K: x = d * sc * (q - 4), sc signed; the -4 offset is removed with the bsums.
struct KQ3 {
  using Block = BlockQ3K;
  static constexpr bool kHasMin = false;
  template <int NT>
  static void block(const Block& b, const BlockQ8K* const xb[NT], __m256i sumi[NT],
                    __m256i* /*summ*/) {
    const __m256i m3 = _mm256_set1_epi8(0x03);
    const __m256i one = _mm256_set1_epi8(0x01);
    uint32_t w3[3];
    std::memcpy(w3, b.scales, 12);
    const __m128i sc8 = _mm_sub_epi8(
        _mm_setr_epi32(
            static_cast<int>((w3[0] & 0x0F0F0F0Fu) | ((w3[2] & 0x03030303u) << 4)),
            static_cast<int>((w3[1] & 0x0F0F0F0Fu) | (((w3[2] >> 2) & 0x03030303u) << 4)),
            static_cast<int>(((w3[0] >> 4) & 0x0F0F0F0Fu) | (((w3[2] >> 4) & 0x03030303u) << 4)),
            static_cast<int>(((w3[1] >> 4) & 0x0F0F0F0Fu) | (((w3[2] >> 6) & 0x03030303u) << 4))),
        _mm_set1_epi8(32));
    const __m256i hm = load256(b.hmask);
    for (int h = 0; h < 2; ++h) {
      const __m256i pair_sc = pair_scales(sc8, h);
      const __m256i q = load256(b.qs + 32 * h);
      for (int k = 0; k < 4; ++k) {
        // Unsigned code 0..7 = low 2 bits | high bit << 2; the true value is code - 4.
        const __m256i hbit = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), one);
        const __m256i codes = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m3),
                                              _mm256_slli_epi16(hbit, 2));
        const __m256i s = run_scale(pair_sc, k);
        for (int t = 0; t < NT; ++t) {
          sumi[t] = IntDot::dpwssd(
              sumi[t], _mm256_maddubs_epi16(codes, load256(xb[t]->qs + 128 * h + 32 * k)), s);
          asm("" : "+x"(sumi[t]));
        }
      }
    }
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    for (int t = 0; t < NT; ++t) {
      sumi[t] = _mm256_sub_epi32(
          sumi[t], _mm256_slli_epi32(_mm256_madd_epi16(sc16, load256(xb[t]->bsums)), 2));
    }
  }
};

// vec_dot for KQ2/KQ3 (same per-pair arithmetic as Q4_K / Q6_K above; Q2_K's d and dmin are
// adjacent fp16 fields).
template <class K>
void dot_k23(int64_t n, float* out, const void* w, const void* x) {
  const auto* wb = static_cast<const typename K::Block*>(w);
  const auto* xb = static_cast<const BlockQ8K*>(x);
  __m128 acc = _mm_setzero_ps();  // lane 0: acc, lane 1: accm
  for (int64_t i = 0; i < n / kQKK; ++i) {
    __m256i sumi[1] = {_mm256_setzero_si256()};
    __m256i summ[1] = {_mm256_setzero_si256()};
    const BlockQ8K* xr[1] = {&xb[i]};
    K::template block<1>(wb[i], xr, sumi, summ);
    const __m128 f = _mm_cvtepi32_ps(hsum2_i32(sumi[0], summ[0]));
    __m128 scales;
    if constexpr (K::kHasMin) {
      uint32_t d_dmin;
      std::memcpy(&d_dmin, &wb[i].d, 4);
      scales = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(d_dmin))),
                          _mm_set1_ps(xb[i].d));
    } else {
      scales = _mm_set_ss(fp16(wb[i].d) * xb[i].d);
    }
    acc = _mm_fmadd_ps(scales, f, acc);
  }
  *out = K::kHasMin ? _mm_cvtss_f32(_mm_sub_ss(acc, _mm_movehdup_ps(acc))) : _mm_cvtss_f32(acc);
}

template <class K>
void gemm_k23(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
              size_t x_stride, const void* aux, float* y, int64_t y_stride, int ntok) {
  const auto* hdr = static_cast<const Q8KGroup*>(aux);
  const int64_t nsb = k / kQKK;
  const BlockQ8K* xb[8];
  for (int t = 0; t < 8; ++t) xb[t] = row_at<BlockQ8K>(x, x_stride, t < ntok ? t : 0);
  for (int64_t r = 0; r < nrows; ++r) {
    const auto* wb = row_at<typename K::Block>(w, w_stride, static_cast<int>(r));
    __m256 acc = _mm256_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < nsb; ++i) {
      __m256i sumi[8], summ[8];
      const BlockQ8K* xr[8];
      for (int t = 0; t < 8; ++t) {
        sumi[t] = summ[t] = _mm256_setzero_si256();
        xr[t] = &xb[t][i];
      }
      K::template block<8>(wb[i], xr, sumi, summ);
      const __m256 dx = _mm256_loadu_ps(hdr[i].d);
      acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(fp16(wb[i].d)), dx),
                            _mm256_cvtepi32_ps(reduce8(sumi)), acc);
      if constexpr (K::kHasMin) {
        accm = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(fp16(wb[i].dmin)), dx),
                               _mm256_cvtepi32_ps(reduce8(summ)), accm);
      }
    }
    store_lanes(K::kHasMin ? _mm256_sub_ps(acc, accm) : acc, y + r, y_stride, ntok);
  }
}

// ---------------------------------------------------------------- few-token (M < 4) gemv

// Gemv (GemmTileFn signature, aux unused): every token separately, rows one at a time through
// Dot (one sequential weight stream), each row's bytes software-prefetched kSeqAhead rows ahead:
// a thread's row range is short at decode sizes (K = 768: 432 B rows) and the hardware
// prefetcher alone ramps up too late. Same per-pair results as Dot (Dot computes every value).
// Interleaving several rows per pass (shared activation loads) measured slower here: it breaks
// the sequential stream and does not lower the vector-port work per weight byte.
template <void (*Dot)(int64_t, float*, const void*, const void*), int kSeqAhead = 8>
void gemv_seq(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
              size_t x_stride, const void* /*aux*/, float* y, int64_t y_stride, int ntok) {
  for (int t = 0; t < ntok; ++t) {
    const auto* xt = row_at<uint8_t>(x, x_stride, t);
    float* yt = y + t * y_stride;
    for (int64_t r = 0; r < nrows; ++r) {
      const auto* wr = row_at<char>(w, w_stride, static_cast<int>(r));
      // An address (prefetches past the matrix never fault), not a pointer into the matrix.
      const uintptr_t ahead = reinterpret_cast<uintptr_t>(wr) + kSeqAhead * w_stride;
      for (size_t o = 0; o < w_stride; o += 64)
        _mm_prefetch(reinterpret_cast<const char*>(ahead + o), _MM_HINT_T0);
      Dot(k, yt + r, wr, xt);
    }
  }
}

template <void (*Dot)(int64_t, float*, const void*, const void*)>
void dot_rows_loop(int64_t n, float* out, int64_t os, const void* w, const void* x, size_t xs,
                   int nx) {
  for (int t = 0; t < nx; ++t) Dot(n, out + t * os, w, row_at<uint8_t>(x, xs, t));
}

// The vec_dot / vec_dot_rows of a k-quant format (other fields nullptr; all nullptr for other
// formats).
inline Avx2Entry entry(TensorType t) {
  switch (t) {
    case TensorType::Q4_K:
      return {nullptr, nullptr, dot_q45_k<false>, dot_rows_loop<dot_q45_k<false>>};
    case TensorType::Q5_K:
      return {nullptr, nullptr, dot_q45_k<true>, dot_rows_loop<dot_q45_k<true>>};
    case TensorType::Q6_K:
      return {nullptr, nullptr, dot_q6_k, dot_rows_loop<dot_q6_k>};
    case TensorType::Q2_K:
      return {nullptr, nullptr, dot_k23<KQ2>, dot_rows_loop<dot_k23<KQ2>>};
    case TensorType::Q3_K:
      return {nullptr, nullptr, dot_k23<KQ3>, dot_rows_loop<dot_k23<KQ3>>};
    default:
      break;
  }
  return {nullptr, nullptr, nullptr, nullptr};
}

// The few-token gemv (Q4_K, Q6_K; nullptr otherwise).
inline GemmTileFn gemv(TensorType t) {
  switch (t) {
    case TensorType::Q4_K:
      return gemv_seq<dot_q45_k<false>>;
    case TensorType::Q6_K:
      return gemv_seq<dot_q6_k>;
    default:
      break;
  }
  return nullptr;
}

// The 8-token tile of a k-quant format (nullptr otherwise).
inline GemmTileFn tile(TensorType t) {
  switch (t) {
    case TensorType::Q4_K:
      return gemm_q45_k<false>;
    case TensorType::Q5_K:
      return gemm_q45_k<true>;
    case TensorType::Q6_K:
      return gemm_q6_k;
    case TensorType::Q2_K:
      return gemm_k23<KQ2>;
    case TensorType::Q3_K:
      return gemm_k23<KQ3>;
    default:
      break;
  }
  return nullptr;
}

}  // namespace gemm_k
}  // namespace

}  // namespace llmt::kernels
