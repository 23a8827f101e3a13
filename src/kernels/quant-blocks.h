// Block layouts of the quantized formats, byte-exact with the GGUF/ggml on-disk definitions, and
// the internal per-format kernel entry points that dispatch.cpp assembles into TypeKernels tables.
// Internal header: only src/kernels and its tests include it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "kernels/kernels.h"

namespace llmt::kernels {

inline constexpr int kQK = 32;    // elements per block of the 32-element formats
inline constexpr int kQKK = 256;  // elements per k-quant super-block

// Q4_0: x = d * (q - 8), q a 4-bit code; element j in low nibble of qs[j], element j+16 in high.
struct BlockQ4_0 {
  uint16_t d;  // fp16
  uint8_t qs[kQK / 2];
};
// Q4_1: x = d * q + m.
struct BlockQ4_1 {
  uint16_t d;  // fp16
  uint16_t m;  // fp16
  uint8_t qs[kQK / 2];
};
// Q5_0: x = d * (q - 16), q = nibble | (bit j of qh) << 4 (element j, j+16 use bits j, j+16).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];  // little-endian uint32
  uint8_t qs[kQK / 2];
};
// Q5_1: x = d * q + m with the Q5_0 code layout.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// Q8_0: x = d * q.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
// Q8_1 (activations only): x = d * q, s = d * sum(q).
struct BlockQ8_1 {
  uint16_t d;
  uint16_t s;
  int8_t qs[kQK];
};
// IQ4_NL: x = d * kIq4nlValues[code], codes laid out as Q4_0.
struct BlockIq4Nl {
  uint16_t d;
  uint8_t qs[kQK / 2];
};

// Q2_K: 16 groups of 16; scales[g] low nibble = scale, high nibble = min; x = d*sc*q - dmin*m.
struct BlockQ2K {
  uint8_t scales[kQKK / 16];
  uint8_t qs[kQKK / 4];
  uint16_t d;
  uint16_t dmin;
};
// Q3_K: 16 groups of 16 with 6-bit signed (biased by 32) scales packed in 12 bytes; 2 low bits
// in qs, the third bit in hmask (bit clear means subtract 4).
struct BlockQ3K {
  uint8_t hmask[kQKK / 8];
  uint8_t qs[kQKK / 4];
  uint8_t scales[12];
  uint16_t d;
};
// Q4_K: 8 groups of 32 with 6-bit scales and mins packed in 12 bytes; x = d*sc*q - dmin*m.
struct BlockQ4K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQKK / 2];
};
// Q5_K: as Q4_K plus a fifth bit per element in qh.
struct BlockQ5K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
// Q6_K: 16 groups of 16 with int8 scales; x = d * sc * (q - 32), q 6-bit (4 in ql, 2 in qh).
struct BlockQ6K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};
// Q8_K (activations only): x = d * q; bsums[g] = sum of q over group g of 16.
struct BlockQ8K {
  float d;
  int8_t qs[kQKK];
  int16_t bsums[kQKK / 16];
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockIq4Nl) == 18);
static_assert(sizeof(BlockQ2K) == 84);
static_assert(sizeof(BlockQ3K) == 110);
static_assert(sizeof(BlockQ4K) == 144);
static_assert(sizeof(BlockQ5K) == 176);
static_assert(sizeof(BlockQ6K) == 210);
static_assert(sizeof(BlockQ8K) == 292);

// The IQ4_NL non-linear code book.
inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// Scale j (0..7) and min of a Q4_K/Q5_K 12-byte packed scale field.
inline void k4_scale_min(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}
// All 8 scales and mins of a Q4_K/Q5_K 12-byte packed field at once (same values as
// k4_scale_min), using 32-bit word operations.
inline void k4_scales_mins(const uint8_t* q, uint8_t sc[8], uint8_t mn[8]) {
  uint32_t w[3];
  std::memcpy(w, q, 12);
  const uint32_t s0 = w[0] & 0x3F3F3F3Fu;
  const uint32_t s1 = (w[2] & 0x0F0F0F0Fu) | (((w[0] >> 6) & 0x03030303u) << 4);
  const uint32_t m0 = w[1] & 0x3F3F3F3Fu;
  const uint32_t m1 = ((w[2] >> 4) & 0x0F0F0F0Fu) | (((w[1] >> 6) & 0x03030303u) << 4);
  std::memcpy(sc, &s0, 4);
  std::memcpy(sc + 4, &s1, 4);
  std::memcpy(mn, &m0, 4);
  std::memcpy(mn + 4, &m1, 4);
}
// The 16 signed scales (-32..31) of a Q3_K 12-byte packed field: scale i has its low 4 bits in
// byte i (i < 8, low nibble) or byte i - 8 (high nibble), and its high 2 bits in byte 8 + i % 4
// at bit 2 * (i / 4).
inline void k3_scales(const uint8_t* s, int8_t out[16]) {
  uint32_t w[3];
  std::memcpy(w, s, 12);
  uint32_t v[4];
  v[0] = (w[0] & 0x0F0F0F0Fu) | ((w[2] & 0x03030303u) << 4);
  v[1] = (w[1] & 0x0F0F0F0Fu) | (((w[2] >> 2) & 0x03030303u) << 4);
  v[2] = ((w[0] >> 4) & 0x0F0F0F0Fu) | (((w[2] >> 4) & 0x03030303u) << 4);
  v[3] = ((w[1] >> 4) & 0x0F0F0F0Fu) | (((w[2] >> 6) & 0x03030303u) << 4);
  uint8_t u[16];
  std::memcpy(u, v, 16);
  for (int i = 0; i < 16; ++i) out[i] = static_cast<int8_t>(u[i] - 32);
}

// Multi-row dot: out[t * out_stride] = dot(w, x_t) for t in [0, nx), nx in [1, kMaxDotRows],
// x_t at byte offset t * x_stride from x. Bitwise equal to vec_dot for each pair.
using VecDotRowsFn = void (*)(int64_t n, float* out, int64_t out_stride, const void* w,
                              const void* x, size_t x_stride, int nx);
inline constexpr int kMaxDotRows = 4;

// Row t of rows x_stride bytes apart from x (activation rows, weight rows, outputs). Internal
// linkage, like every helper here that files of several ISA tiers include.
namespace {
template <class T>
const T* row_at(const void* x, size_t x_stride, int64_t t) {
  return reinterpret_cast<const T*>(static_cast<const uint8_t*>(x) +
                                    static_cast<size_t>(t) * x_stride);
}
}  // namespace

// Scalar reference kernels (quants-scalar*.cpp). Names: dequant_<fmt>, quantize_<fmt>,
// dot_<wfmt> (weights x the format's vec_dot_type).
namespace scalar {
void dequant_f32(const void* src, float* dst, int64_t n);
void dequant_f16(const void* src, float* dst, int64_t n);
void dequant_bf16(const void* src, float* dst, int64_t n);
void dequant_q8_0(const void* src, float* dst, int64_t n);
void dequant_q8_1(const void* src, float* dst, int64_t n);
void dequant_q8_k(const void* src, float* dst, int64_t n);
void dequant_q4_0(const void* src, float* dst, int64_t n);
void dequant_q4_1(const void* src, float* dst, int64_t n);
void dequant_q5_0(const void* src, float* dst, int64_t n);
void dequant_q5_1(const void* src, float* dst, int64_t n);
void dequant_iq4_nl(const void* src, float* dst, int64_t n);
void dequant_q2_k(const void* src, float* dst, int64_t n);
void dequant_q3_k(const void* src, float* dst, int64_t n);
void dequant_q4_k(const void* src, float* dst, int64_t n);
void dequant_q5_k(const void* src, float* dst, int64_t n);
void dequant_q6_k(const void* src, float* dst, int64_t n);

void quantize_f32(const float* src, void* dst, int64_t n);  // plain copy
void quantize_q8_0(const float* src, void* dst, int64_t n);
void quantize_q8_1(const float* src, void* dst, int64_t n);
void quantize_q8_k(const float* src, void* dst, int64_t n);

void dot_f32(int64_t n, float* out, const void* w, const void* x);
void dot_f16(int64_t n, float* out, const void* w, const void* x);
void dot_bf16(int64_t n, float* out, const void* w, const void* x);
void dot_q8_0(int64_t n, float* out, const void* w, const void* x);
void dot_q4_0(int64_t n, float* out, const void* w, const void* x);
void dot_q4_1(int64_t n, float* out, const void* w, const void* x);
void dot_q5_0(int64_t n, float* out, const void* w, const void* x);
void dot_q5_1(int64_t n, float* out, const void* w, const void* x);
void dot_iq4_nl(int64_t n, float* out, const void* w, const void* x);
void dot_q2_k(int64_t n, float* out, const void* w, const void* x);
void dot_q3_k(int64_t n, float* out, const void* w, const void* x);
void dot_q4_k(int64_t n, float* out, const void* w, const void* x);
void dot_q5_k(int64_t n, float* out, const void* w, const void* x);
void dot_q6_k(int64_t n, float* out, const void* w, const void* x);
}  // namespace scalar

// AVX2 kernels (quants-avx2*.cpp); called for the avx2 tier and the tiers laid over it (avxvnni,
// avx512, amx), so only on CPUs with AVX2+FMA+F16C. Each format's table entry fields are nullptr
// where there is no AVX2 variant (dispatch falls back to scalar).
struct Avx2Entry {
  void (*dequantize_row)(const void* src, float* dst, int64_t n);
  void (*quantize_row_vec)(const float* src, void* dst, int64_t n);
  void (*vec_dot)(int64_t n, float* out, const void* w, const void* x);
  VecDotRowsFn vec_dot_rows;
};
// Per super-block header for a group of kGemmTokens consecutive Q8_K activation rows, built by
// matmul_prepare: d[t] = token t's scale, bs[p][2t + e] = token t's q8 sum over 32-element
// sub-block 2p + e (sum of bsums[2s] and bsums[2s + 1]). Lanes of tokens past M are zero.
inline constexpr int kGemmTokens = 8;
struct alignas(32) Q8KGroup {
  float d[kGemmTokens];
  int16_t bs[4][2 * kGemmTokens];
};
static_assert(sizeof(Q8KGroup) == 160);

// Per-token table for Q8_0 activations, built by matmul_prepare: with nbp = K/32 rounded up to a
// multiple of 8, nbp fp32 block scales then nbp int32 block sums of the q8 bytes (both
// zero-padded).
// Bytes per token:
inline int64_t q80_table_bytes(int64_t k) {
  return (k / kQK + 7) / 8 * 8 * 8;
}

// GEMM tile: for r in [0, nrows), t in [0, ntok) (1 <= ntok <= kGemmTokens):
// y[t * y_stride + r] = dot(weight row r, token t), weight row r at byte offset r * w_stride from
// w, token t's activation row at byte offset t * x_stride from x. aux: for Q8_K activations the
// group's K/256 Q8KGroup headers; for Q8_0 activations the first token's q80 table (next tokens
// q80_table_bytes(k) apart). Bitwise equal to the format's vec_dot for every pair.
using GemmTileFn = void (*)(int64_t k, const void* w, size_t w_stride, int64_t nrows, const void* x,
                            size_t x_stride, const void* aux, float* y, int64_t y_stride, int ntok);

// Returns the AVX2 entries for a weight format (all nullptr when none, or when the library was
// built without AVX2 sources).
Avx2Entry avx2_entry(TensorType t);
// The k-quant part of avx2_entry (quants-k-avx2.cpp).
Avx2Entry avx2_entry_k(TensorType t);
// vec_dot / vec_dot_rows of the k-quant formats (Q2_K..Q6_K, gemm-k-avx2.cpp; the other
// fields nullptr), and the tile itself (nullptr for other formats). Only valid with ISA kAvx2.
Avx2Entry avx2_entry_gemm_k(TensorType t);
GemmTileFn avx2_gemm_tile(TensorType t);
// Few-token gemv for matmul's token tails below the tile minimum (Q4_K, Q6_K; nullptr for
// other formats): GemmTileFn contract with aux unused, any ntok >= 1, results bitwise equal to
// vec_dot (rows one at a time through vec_dot, the weight stream software-prefetched a few rows
// ahead).
GemmTileFn avx2_gemv(TensorType t);
// Same for Q8_0 / Q4_0 / Q5_0 / IQ4_NL (gemm-q8-avx2.cpp).
Avx2Entry avx2_entry_gemm_q8(TensorType t);
GemmTileFn avx2_gemm_tile_q8(TensorType t);
// Same for F32 / F16 / BF16 (quants-avx2.cpp; F32 activations read from X directly, aux unused):
// 2 weight rows x 3 tokens per pass with FloatDot's per-pair arithmetic.
GemmTileFn avx2_gemm_tile_float(TensorType t);

// AVX-VNNI kernels (quants-avxvnni.cpp: the avx2 kernel source with VEX vpdpbusd / vpdpwssd);
// only called for tier kAvxVnni, laid over the AVX2 entries (vec_dot / vec_dot_rows of the
// integer formats; nullptr fields keep the AVX2 entry). Bitwise equal to the avx2 tier.
Avx2Entry avxvnni_entry(TensorType t);
// The tier's 8-token GEMM tile (GemmTileFn contract; the AVX2 float tiles for F32/F16/BF16) and
// few-token gemv (avx2_gemv's contract: Q4_K, Q6_K; nullptr otherwise).
GemmTileFn avxvnni_gemm_tile(TensorType t);
GemmTileFn avxvnni_gemv(TensorType t);

// AVX-512 (F+BW+VL+VNNI) kernels (*-avx512.cpp); only called for tiers kAvx512 / kAmx, laid
// over the AVX2 entries (fields nullptr where the AVX2 entry stays). Not over avxvnni's: an
// AVX-512 CPU need not have the VEX AVX-VNNI encoding (Zen 4 has not).
Avx2Entry avx512_entry(TensorType t);
// The avxvnni kernels with the EVEX encoding (vnni256-avx512.cpp): the avx512 tier's vec_dot /
// vec_dot_rows of the integer formats (laid over the AVX2 entries, under avx512_entry), its
// 8-token tile and gemv (the contracts of avxvnni_entry / avxvnni_gemm_tile / avxvnni_gemv).
// Bitwise equal to the avx2 tier.
Avx2Entry avx512_vnni256_entry(TensorType t);
GemmTileFn avx512_vnni256_tile(TensorType t);
GemmTileFn avx512_vnni256_gemv(TensorType t);
// Wide GEMM tile (GemmTileFn signature) for M >= kMinWideTokens: nrows <= 16 weight rows (one
// per int32 lane) x 1 <= ntok <= kWideTokens tokens; aux = the Q8KGroup headers of the
// ceil(ntok / 8) consecutive token groups (group g's at aux + g * (k / 256)), or for Q8_0
// activations the first token's q80 table (as the 8-token tile). Weights are decoded and
// transposed once per 16 rows x 256 elements and serve all ntok tokens. Per-pair float
// arithmetic equal to the AVX2 tile and vec_dot (bitwise). nullptr for formats without one.
inline constexpr int kWideTokens = 64;
inline constexpr int kMinWideTokens = 16;
GemmTileFn avx512_wide_tile(TensorType t);
// The Q8_0 / Q4_0 / Q5_0 / IQ4_NL part of avx512_wide_tile (gemm-q8-avx512.cpp).
GemmTileFn avx512_wide_tile_q8(TensorType t);
// F32 / F16 / BF16 (gemm-float-avx512.cpp): the avx512 tier's vec_dot / vec_dot_rows (the other
// entry fields nullptr) and its GEMM tile (GemmTileFn contract, 1 <= ntok <= kGemmTokens, aux
// unused, X read as is), both with one per-pair arithmetic of 16-lane accumulators: bitwise equal
// to each other, not to the avx2 tier (other lane sums, masked tails instead of a scalar one).
Avx2Entry avx512_entry_float(TensorType t);
GemmTileFn avx512_gemm_tile_float(TensorType t);
// AArch64 NEON+dotprod kernels (*-neon.cpp); only called for tiers kNeon and kI8mm, laid over
// the scalar entries. vec_dot_rows decodes the weight row once for its nx tokens.
Avx2Entry neon_entry(TensorType t);
// The k-quant part of neon_entry (quants-k-neon.cpp).
Avx2Entry neon_entry_k(TensorType t);
// The F32 / F16 / BF16 part of neon_entry (float-neon.cpp): vec_dot, vec_dot_rows and the F16 /
// BF16 dequantizers.
Avx2Entry neon_entry_float(TensorType t);
// AArch64 i8mm (SMMLA) GEMM tile (gemm-neon-i8mm.cpp, GemmTileFn contract: any nrows >= 1,
// 1 <= ntok <= kGemmTokens, aux unused): 2 weight rows x 2 tokens per SMMLA, bitwise equal to the
// neon tier's vec_dot for every pair (exact integer block sums, the same float operations).
// nullptr for formats without one; only call it for tier kI8mm.
GemmTileFn i8mm_gemm_tile(TensorType t);

// The kernels matmul_compute runs for one weight format on one tier (matmul_kernels), and
// matmul_compute over explicitly given ones: tests run kernel variants that are no tier of
// this CPU (the avxvnni kernels as the avx512 tier's EVEX build gives them) through matmul's own
// walk. tk is the format's TypeKernels (vec_dot_type, vec_dot, vec_dot_rows); tile / gemv / wide
// may be nullptr (see matmul.cpp for when each is used). matmul_compute_with's results obey
// matmul_compute's contract when the kernels obey their GemmTileFn contracts.
struct MatmulKernels {
  const TypeKernels* tk = nullptr;
  GemmTileFn tile = nullptr;  // 8-token tile (kGemmTokens), for token runs >= 4
  GemmTileFn gemv = nullptr;  // token tails below 4
  GemmTileFn wide = nullptr;  // avx512 wide tile, for token blocks >= kMinWideTokens
};
MatmulKernels matmul_kernels(TensorType t, Isa isa);
void matmul_compute_with(const MatmulArgs& a, const MatmulKernels& kernels, int ith, int nth);

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
// Helpers shared by the *-avx2.cpp files (visible only where those flags are on). Internal
// linkage: files of several tiers include them with their own ISA flags, and an out-of-line copy
// compiled with AVX-512 flags must never be the one an AVX2 file calls.
namespace avx2 {
namespace {

inline float fp16(uint16_t h) {
  return _cvtsh_ss(h);
}

// Horizontal sum of 8 floats in a fixed order.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 32 nibbles: low nibbles of qs[0..15] then high nibbles of qs[0..15].
inline __m256i nibbles_32(const uint8_t* qs) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

// Byte i = 0xFF when bit i of the little-endian 32-bit word at p is set, else 0.
inline __m256i bits_to_bytes_32(const uint8_t* p) {
  uint32_t w;
  std::memcpy(&w, p, 4);
  const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101,
                                         0x0000000000000000);
  const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(w)), shuf);
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  return _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
}

// Adapters from a kernel K with `template <int NX> static void run(n, out, out_stride, w, x,
// x_stride)` to the table's function types. Every NX instantiation runs the same per-pair
// arithmetic, so vec_dot and vec_dot_rows agree bitwise.
template <class K>
void dot_one(int64_t n, float* out, const void* w, const void* x) {
  K::template run<1>(n, out, 1, w, x, 0);
}
template <class K>
void dot_rows(int64_t n, float* out, int64_t out_stride, const void* w, const void* x,
              size_t x_stride, int nx) {
  switch (nx) {
    case 1:
      K::template run<1>(n, out, out_stride, w, x, x_stride);
      break;
    case 2:
      K::template run<2>(n, out, out_stride, w, x, x_stride);
      break;
    case 3:
      K::template run<3>(n, out, out_stride, w, x, x_stride);
      break;
    default:
      K::template run<4>(n, out, out_stride, w, x, x_stride);
      break;
  }
}
template <class K>
Avx2Entry entry_of(void (*dequant)(const void*, float*, int64_t),
                   void (*quant)(const float*, void*, int64_t)) {
  return {dequant, quant, dot_one<K>, dot_rows<K>};
}

inline __m256i load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// Lane t of the result = exact sum of the 8 lanes of v[t].
inline __m256i reduce8(const __m256i v[8]) {
  __m256i p[4];
  for (int i = 0; i < 4; ++i) {
    const __m256i a = v[2 * i], b = v[2 * i + 1];
    // [a0+a2, b0+b2, a1+a3, b1+b3 | same for the high half]
    p[i] = _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
  }
  // [v0, v1, v2, v3 | high halves] sums of each 128-bit half
  const __m256i q0 =
      _mm256_add_epi32(_mm256_unpacklo_epi64(p[0], p[1]), _mm256_unpackhi_epi64(p[0], p[1]));
  const __m256i q1 =
      _mm256_add_epi32(_mm256_unpacklo_epi64(p[2], p[3]), _mm256_unpackhi_epi64(p[2], p[3]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20),
                          _mm256_permute2x128_si256(q0, q1, 0x31));
}

}  // namespace
}  // namespace avx2
#endif

}  // namespace llmt::kernels
