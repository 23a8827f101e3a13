// AVX-512 VNNI wide GEMM tiles for the k-quant formats (Q4_K, Q5_K, Q6_K weights x Q8_K
// activations): 16 weight rows (one per int32 lane) x up to kWideTokens tokens per call.
//
// Per super-block of the 16 rows, the weight codes are decoded and transposed once into an L1
// scratch of 64 vectors: vector G holds, for every row, the 4 unsigned codes of elements
// 4G..4G+3 (a "k4 group"). A token then costs one vpdpbusd per k4 group (the 4 activation bytes
// broadcast as the signed operand), 64 per super-block for 16 rows, instead of AVX2's
// maddubs + madd + add per 32 bytes of one row. Sub-block (group) sums are exact int32 lanes,
// multiplied by their integer scales (vpmulld), summed (exact in any order); the min term comes
// from the activation group sums in the Q8KGroup headers (vpdpwssd).
//
// Per-pair arithmetic: the exact integer sums isum_i (and imin_i) of the AVX2 kernels
// (gemm-k-avx2.cpp) and then the same float operations in the same order, one row per lane:
//   acc = fma(d_i * dx_i, float(isum_i), acc), accm = fma(dmin_i * dx_i, float(imin_i), accm),
// result acc - accm (Q4_K/Q5_K) or acc (Q6_K). So every value is bitwise equal to the AVX2
// tile's and vec_dot's (the avx512 tier keeps the AVX2 vec_dot).
//
// Exactness of the integer parts: a k4 lane sums 4 products of a code (< 64) and a q8 (|q| <=
// 128), a group sum stays below 2^17 and its product with a scale below 2^24; vpdpbusd does not
// saturate.
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/quant-blocks.h"
#include "kernels/tile-avx512.h"

namespace llmt::kernels {

namespace {

using avx512::kLanes;
using avx512::transpose16;

// Loads 64 bytes at byte offset `off` of each of the 16 rows' super-block i (rows past nrows
// repeat the last row; their lanes are never stored) and transposes them: c[j] lane r = dword j
// of row r's bytes.
template <class Block>
inline void load_transposed(const void* w, size_t w_stride, int64_t nrows, int64_t i, size_t off,
                            __m512i c[16]) {
  __m512i r[16];
  for (int l = 0; l < kLanes; ++l) {
    const auto* b = row_at<Block>(w, w_stride, l < nrows ? l : nrows - 1) + i;
    r[l] = _mm512_loadu_si512(reinterpret_cast<const uint8_t*>(b) + off);
  }
  transpose16(r, c);
}

// Stores lanes [0, nrows) of v at y.
inline void store_rows(float* y, __m512 v, int64_t nrows) {
  _mm512_mask_storeu_ps(y, static_cast<__mmask16>(nrows >= 16 ? 0xFFFF : (1u << nrows) - 1), v);
}

// Float accumulators of the tile: [kWideTokens][16 rows].
struct alignas(64) Acc {
  float v[kWideTokens][kLanes];
};

// ---------------------------------------------------------------- Q4_K / Q5_K

template <bool kFive>
using BlockQ45K = std::conditional_t<kFive, BlockQ5K, BlockQ4K>;

// Decoded super-block of 16 Q4_K/Q5_K rows.
struct alignas(64) Q45Scratch {
  __m512i codes[64];  // k4 group G = 8 * sub-block + q: elements 32 s + 4 q .. + 3
  __m512i sc[8];      // int32 scale of sub-block s per row
  __m512i mn[4];      // int16 pairs (min 2p, min 2p + 1) per row
  __m512 d, dmin;
};

template <bool kFive>
inline void decode_q45(const void* w, size_t w_stride, int64_t nrows, int64_t i, Q45Scratch& s) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  // qs dword D = 8j + q: low nibbles -> sub-block 2j, k4 q; high nibbles -> sub-block 2j + 1.
  __m512i qd[32];
  const size_t qs_off = offsetof(BlockQ45K<kFive>, qs);
  load_transposed<BlockQ45K<kFive>>(w, w_stride, nrows, i, qs_off, qd);
  load_transposed<BlockQ45K<kFive>>(w, w_stride, nrows, i, qs_off + 64, qd + 16);
  [[maybe_unused]] __m512i hd[16];
  if constexpr (kFive) {
    // qh is 32 bytes: dwords 0..7 useful (the load reads on into qs, still inside the block).
    load_transposed<BlockQ5K>(w, w_stride, nrows, i, offsetof(BlockQ5K, qh), hd);
  }
  for (int j = 0; j < 4; ++j) {
    for (int q = 0; q < 8; ++q) {
      const __m512i v = qd[8 * j + q];
      __m512i lo = _mm512_and_si512(v, m4);
      __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
      if constexpr (kFive) {
        // Bit 2j of qh byte l is bit 4 of element 64j + l's code, bit 2j + 1 of element 64j + 32 +
        // l.
        const __m512i bit = _mm512_set1_epi8(0x01);
        lo = _mm512_or_si512(
            lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hd[q], 2 * j), bit), 4));
        hi = _mm512_or_si512(
            hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hd[q], 2 * j + 1), bit), 4));
      }
      s.codes[8 * (2 * j) + q] = lo;
      s.codes[8 * (2 * j + 1) + q] = hi;
    }
  }
  alignas(64) int32_t sc[8][kLanes], mn[4][kLanes];
  alignas(64) uint16_t d[kLanes], dmin[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    const auto& b = row_at<BlockQ45K<kFive>>(w, w_stride, l < nrows ? l : nrows - 1)[i];
    uint8_t scs[8], mns[8];
    k4_scales_mins(b.scales, scs, mns);
    for (int t = 0; t < 8; ++t) sc[t][l] = scs[t];
    for (int p = 0; p < 4; ++p)
      mn[p][l] = static_cast<int32_t>(mns[2 * p] | (static_cast<uint32_t>(mns[2 * p + 1]) << 16));
    d[l] = b.d;
    dmin[l] = b.dmin;
  }
  for (int t = 0; t < 8; ++t) s.sc[t] = _mm512_load_si512(sc[t]);
  for (int p = 0; p < 4; ++p) s.mn[p] = _mm512_load_si512(mn[p]);
  s.d = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(d)));
  s.dmin = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(dmin)));
}

inline __m512i bcast32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

template <bool kFive>
void wide_q45_k(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
                size_t x_stride, const void* aux, float* y, int64_t y_stride, int ntok) {
  const auto* hdr = static_cast<const Q8KGroup*>(aux);
  const int64_t nsb = k / kQKK;
  Acc acc, accm;
  Q45Scratch s;
  for (int64_t i = 0; i < nsb; ++i) {
    decode_q45<kFive>(w, w_stride, nrows, i, s);
    for (int t = 0; t < ntok; ++t) {
      const int8_t* xq = row_at<BlockQ8K>(x, x_stride, t)[i].qs;
      __m512i sum[8];
      for (int sb = 0; sb < 8; ++sb) sum[sb] = _mm512_setzero_si512();
      for (int q = 0; q < 8; ++q) {
        for (int sb = 0; sb < 8; ++sb) {
          sum[sb] =
              _mm512_dpbusd_epi32(sum[sb], s.codes[8 * sb + q], bcast32(xq + 32 * sb + 4 * q));
        }
      }
      __m512i isum = _mm512_mullo_epi32(sum[0], s.sc[0]);
      for (int sb = 1; sb < 8; ++sb)
        isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(sum[sb], s.sc[sb]));
      const Q8KGroup& h = hdr[(t / kGemmTokens) * nsb + i];
      const int e = t % kGemmTokens;
      __m512i imin = _mm512_setzero_si512();
      for (int p = 0; p < 4; ++p)
        imin = _mm512_dpwssd_epi32(imin, s.mn[p], bcast32(&h.bs[p][2 * e]));
      const __m512 dx = _mm512_set1_ps(h.d[e]);
      const __m512 a0 = i == 0 ? _mm512_setzero_ps() : _mm512_load_ps(acc.v[t]);
      const __m512 m0 = i == 0 ? _mm512_setzero_ps() : _mm512_load_ps(accm.v[t]);
      _mm512_store_ps(acc.v[t],
                      _mm512_fmadd_ps(_mm512_mul_ps(s.d, dx), _mm512_cvtepi32_ps(isum), a0));
      _mm512_store_ps(accm.v[t],
                      _mm512_fmadd_ps(_mm512_mul_ps(s.dmin, dx), _mm512_cvtepi32_ps(imin), m0));
    }
  }
  for (int t = 0; t < ntok; ++t) {
    store_rows(y + t * y_stride, _mm512_sub_ps(_mm512_load_ps(acc.v[t]), _mm512_load_ps(accm.v[t])),
               nrows);
  }
}

// ---------------------------------------------------------------- Q6_K

// Decoded super-block of 16 Q6_K rows.
struct alignas(64) Q6Scratch {
  __m512i codes[64];  // k4 group G: elements 4G..4G+3 (group of 16 = G / 4), unsigned 0..63
  __m512i sc[16];     // int32 scale of group g per row
  __m512i sc32[8];    // int16 pairs (-32 * scale 2p, -32 * scale 2p + 1) per row
  __m512 d;
};

inline void decode_q6(const void* w, size_t w_stride, int64_t nrows, int64_t i, Q6Scratch& s) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i m3 = _mm512_set1_epi8(0x03);
  __m512i ql[32], qh[16];
  load_transposed<BlockQ6K>(w, w_stride, nrows, i, offsetof(BlockQ6K, ql), ql);
  load_transposed<BlockQ6K>(w, w_stride, nrows, i, offsetof(BlockQ6K, ql) + 64, ql + 16);
  load_transposed<BlockQ6K>(w, w_stride, nrows, i, offsetof(BlockQ6K, qh), qh);
  // Element 128h + 32 run + l: low bits from ql[64h + 32 (run & 1) + l] (low nibble for runs
  // 0, 1, high for 2, 3), high 2 bits from qh[32h + l] >> 2 run.
  for (int h = 0; h < 2; ++h) {
    for (int run = 0; run < 4; ++run) {
      for (int q = 0; q < 8; ++q) {
        const __m512i l = ql[16 * h + 8 * (run & 1) + q];
        const __m512i low =
            run < 2 ? _mm512_and_si512(l, m4) : _mm512_and_si512(_mm512_srli_epi16(l, 4), m4);
        const __m512i high = _mm512_and_si512(_mm512_srli_epi16(qh[8 * h + q], 2 * run), m3);
        s.codes[32 * h + 8 * run + q] = _mm512_or_si512(low, _mm512_slli_epi16(high, 4));
      }
    }
  }
  alignas(64) int32_t sc[16][kLanes], sc32[8][kLanes];
  alignas(64) uint16_t d[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    const BlockQ6K& b = row_at<BlockQ6K>(w, w_stride, l < nrows ? l : nrows - 1)[i];
    for (int g = 0; g < 16; ++g) sc[g][l] = b.scales[g];
    for (int p = 0; p < 8; ++p) {
      const auto lo = static_cast<uint16_t>(static_cast<int16_t>(-32 * b.scales[2 * p]));
      const auto hi = static_cast<uint16_t>(static_cast<int16_t>(-32 * b.scales[2 * p + 1]));
      sc32[p][l] = static_cast<int32_t>(lo | (static_cast<uint32_t>(hi) << 16));
    }
    d[l] = b.d;
  }
  for (int g = 0; g < 16; ++g) s.sc[g] = _mm512_load_si512(sc[g]);
  for (int p = 0; p < 8; ++p) s.sc32[p] = _mm512_load_si512(sc32[p]);
  s.d = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(d)));
}

void wide_q6_k(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
               size_t x_stride, const void* aux, float* y, int64_t y_stride, int ntok) {
  const auto* hdr = static_cast<const Q8KGroup*>(aux);
  const int64_t nsb = k / kQKK;
  Acc acc;
  Q6Scratch s;
  for (int64_t i = 0; i < nsb; ++i) {
    decode_q6(w, w_stride, nrows, i, s);
    for (int t = 0; t < ntok; ++t) {
      const BlockQ8K& xb = row_at<BlockQ8K>(x, x_stride, t)[i];
      __m512i isum = _mm512_setzero_si512();
      // -32 offset: sum over groups of -32 * scale * (group sum of q8), via the bsums pairs.
      for (int p = 0; p < 8; ++p)
        isum = _mm512_dpwssd_epi32(isum, s.sc32[p], bcast32(&xb.bsums[2 * p]));
      for (int g0 = 0; g0 < 16; g0 += 8) {
        __m512i sum[8];
        for (int g = 0; g < 8; ++g) sum[g] = _mm512_setzero_si512();
        for (int q = 0; q < 4; ++q) {
          for (int g = 0; g < 8; ++g) {
            const int G = 4 * (g0 + g) + q;
            sum[g] = _mm512_dpbusd_epi32(sum[g], s.codes[G], bcast32(xb.qs + 4 * G));
          }
        }
        for (int g = 0; g < 8; ++g)
          isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(sum[g], s.sc[g0 + g]));
      }
      const __m512 dx = _mm512_set1_ps(hdr[(t / kGemmTokens) * nsb + i].d[t % kGemmTokens]);
      const __m512 a0 = i == 0 ? _mm512_setzero_ps() : _mm512_load_ps(acc.v[t]);
      _mm512_store_ps(acc.v[t],
                      _mm512_fmadd_ps(_mm512_mul_ps(s.d, dx), _mm512_cvtepi32_ps(isum), a0));
    }
  }
  for (int t = 0; t < ntok; ++t) store_rows(y + t * y_stride, _mm512_load_ps(acc.v[t]), nrows);
}

}  // namespace

GemmTileFn avx512_wide_tile(TensorType t) {
  switch (t) {
    case TensorType::Q4_K:
      return wide_q45_k<false>;
    case TensorType::Q5_K:
      return wide_q45_k<true>;
    case TensorType::Q6_K:
      return wide_q6_k;
    default:
      break;
  }
  return avx512_wide_tile_q8(t);
}

Avx2Entry avx512_entry(TensorType t) {
  // The quantized formats keep the AVX2 vec_dot (the wide tiles reproduce it); the float formats
  // have their own.
  return avx512_entry_float(t);
}

}  // namespace llmt::kernels
