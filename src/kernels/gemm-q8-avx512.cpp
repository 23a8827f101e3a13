// AVX-512 VNNI wide GEMM tiles for the 32-element block formats with Q8_0 activations (Q8_0, Q4_0,
// Q5_0, IQ4_NL weights): 16 weight rows (one per int32 lane) x up to kWideTokens tokens per call.
//
// Blocks are walked in groups of 8 (as the AVX2 kernels do). Per group, the 16 rows' codes are
// decoded once as unsigned bytes u = code + offset (Q4_0: +8, Q5_0: +16, Q8_0 and IQ4_NL: +128)
// and transposed into 4-byte k4 groups (vector lane r = row r); a token then costs one vpdpbusd
// per k4 group (its 4 activation bytes broadcast as the signed operand), and the exact block dot
// is isum = sum(u * q) - offset * (block sum of q), the sums coming from the token's q80 table.
//
// Per-pair arithmetic: the exact isum of each block and then the float operations of the AVX2
// kernels (gemm-q8-avx2.cpp) in their order, one row per lane: lane j of a group of 8 blocks
// acc_j = fma(dw_j * dx_j, float(isum_j), acc_j); the result is the AVX2 hsum order
// ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)). Bitwise equal to the AVX2 tile and vec_dot.
#include <immintrin.h>

#include <cstring>

#include "kernels/quant-blocks.h"
#include "kernels/tile-avx512.h"

namespace llmt::kernels {

namespace {

using avx512::kLanes;
using avx512::transpose16;

inline __m256i load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// 32 nibbles of qs[0..15]: low nibbles then high nibbles (element order).
inline __m256i nibbles_32(const uint8_t* qs) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}

// Unsigned codes u = code + kOffset of a block, in element order.
struct Q80 {
  using Block = BlockQ8_0;
  static constexpr int kOffset = 128;
  static __m256i ucodes(const Block& b) {
    return _mm256_xor_si256(load256(b.qs), _mm256_set1_epi8(-128));
  }
};
struct Q40 {
  using Block = BlockQ4_0;
  static constexpr int kOffset = 8;
  static __m256i ucodes(const Block& b) { return nibbles_32(b.qs); }
};
struct Q50 {
  using Block = BlockQ5_0;
  static constexpr int kOffset = 16;
  static __m256i ucodes(const Block& b) {
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    // Bit j of qh is bit 4 of element j's code.
    const __m256i hi = _mm256_maskz_set1_epi8(static_cast<__mmask32>(qh), 0x10);
    return _mm256_or_si256(nibbles_32(b.qs), hi);
  }
};
struct Iq4Nl {
  using Block = BlockIq4Nl;
  static constexpr int kOffset = 128;
  static __m256i ucodes(const Block& b) {
    const __m128i table = _mm_xor_si128(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)), _mm_set1_epi8(-128));
    return _mm256_shuffle_epi8(_mm256_set_m128i(table, table), nibbles_32(b.qs));
  }
};

// Float accumulators: [token][block lane j of the group][16 rows].
struct alignas(64) Acc8 {
  float v[kWideTokens][8][kLanes];
};

template <class P>
void wide_blocks(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
                 size_t x_stride, const void* aux, float* y, int64_t y_stride, int ntok) {
  const int64_t nb = k / kQK;
  const size_t tstride = static_cast<size_t>(q80_table_bytes(k));
  const int64_t nbp = (nb + 7) / 8 * 8;  // table: nbp fp32 scales, then nbp int32 block sums
  Acc8 acc;                              // 32 KiB of the stack
  alignas(64) __m512i codes[8][8];       // [block j][k4 group q]
  __m512 dw[8];
  for (int t = 0; t < ntok; ++t) {
    for (int j = 0; j < 8; ++j) _mm512_store_ps(acc.v[t][j], _mm512_setzero_ps());
  }
  for (int64_t g = 0; g < nb; g += 8) {
    const int cnt = static_cast<int>(nb - g < 8 ? nb - g : 8);
    // Decode: rows' blocks j, j + 1 side by side in one vector per row, then transposed.
    for (int j = 0; j < 8; j += 2) {
      __m512i r[16], c[16];
      for (int l = 0; l < kLanes; ++l) {
        const auto* wb = row_at<typename P::Block>(w, w_stride, l < nrows ? l : nrows - 1) + g;
        const __m256i a = j < cnt ? P::ucodes(wb[j]) : _mm256_setzero_si256();
        const __m256i b = j + 1 < cnt ? P::ucodes(wb[j + 1]) : _mm256_setzero_si256();
        r[l] = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
      }
      transpose16(r, c);
      for (int q = 0; q < 8; ++q) {
        codes[j][q] = c[q];
        codes[j + 1][q] = c[8 + q];
      }
    }
    for (int j = 0; j < 8; ++j) {
      alignas(32) uint16_t d[kLanes];
      for (int l = 0; l < kLanes; ++l) {
        d[l] = j < cnt ? row_at<typename P::Block>(w, w_stride, l < nrows ? l : nrows - 1)[g + j].d
                       : 0;
      }
      dw[j] = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(d)));
    }
    for (int t = 0; t < ntok; ++t) {
      const auto* xb = row_at<BlockQ8_0>(x, x_stride, t) + g;
      const auto* dx =
          reinterpret_cast<const float*>(static_cast<const uint8_t*>(aux) + t * tstride) + g;
      const auto* sy =
          reinterpret_cast<const int32_t*>(
              reinterpret_cast<const float*>(static_cast<const uint8_t*>(aux) + t * tstride) +
              nbp) +
          g;
      for (int j = 0; j < cnt; ++j) {
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        int32_t v[8];
        std::memcpy(v, xb[j].qs, 32);
        for (int q = 0; q < 8; q += 2) {
          s0 = _mm512_dpbusd_epi32(s0, codes[j][q], _mm512_set1_epi32(v[q]));
          s1 = _mm512_dpbusd_epi32(s1, codes[j][q + 1], _mm512_set1_epi32(v[q + 1]));
        }
        const __m512i isum =
            _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(P::kOffset * sy[j]));
        const __m512 s = _mm512_mul_ps(dw[j], _mm512_set1_ps(dx[j]));
        _mm512_store_ps(acc.v[t][j],
                        _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(isum), _mm512_load_ps(acc.v[t][j])));
      }
      // Lanes j >= cnt: fma(0, 0, acc) = acc (the AVX2 padding), nothing to do.
    }
  }
  const __mmask16 mask = static_cast<__mmask16>(nrows >= 16 ? 0xFFFF : (1u << nrows) - 1);
  for (int t = 0; t < ntok; ++t) {
    const auto a = [&](int j) { return _mm512_load_ps(acc.v[t][j]); };
    const __m512 lo = _mm512_add_ps(_mm512_add_ps(a(0), a(4)), _mm512_add_ps(a(2), a(6)));
    const __m512 hi = _mm512_add_ps(_mm512_add_ps(a(1), a(5)), _mm512_add_ps(a(3), a(7)));
    _mm512_mask_storeu_ps(y + t * y_stride, mask, _mm512_add_ps(lo, hi));
  }
}

}  // namespace

GemmTileFn avx512_wide_tile_q8(TensorType t) {
  switch (t) {
    case TensorType::Q8_0:
      return wide_blocks<Q80>;
    case TensorType::Q4_0:
      return wide_blocks<Q40>;
    case TensorType::Q5_0:
      return wide_blocks<Q50>;
    case TensorType::IQ4_NL:
      return wide_blocks<Iq4Nl>;
    default:
      break;
  }
  return nullptr;
}

}  // namespace llmt::kernels
