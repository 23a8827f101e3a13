// Float32 elementwise and attention helpers used by the model's forward pass. Vectors are plain
// contiguous float arrays; n is their length. Scalar code plus AVX2 (ops-avx2.cpp, the avx2 and
// avxvnni tiers), AVX-512 (ops-avx512.cpp, the avx512 and amx tiers) and NEON (ops-neon.cpp, the
// neon and i8mm tiers) variants, chosen through ops_table(). Every entry's results are batch
// invariant within a tier; tiers differ from each other in rounding, except that the neon
// versions compute the avx2 versions' float operations in the same order, so neon / i8mm and
// avx2 / avxvnni results are bitwise equal (everything is built with -ffp-contract=off, so
// only the written fused multiply-adds are fused; the one libm call of the tails, std::exp,
// rounds alike on both with glibc: checked by hand, not testable in one binary).
//
// Thread-safety: all functions are pure or write only to their output arguments.
#pragma once

#include <cstdint>

#include "kernels/kernels.h"

namespace llmt::ops {

// y[i] = x[i] * w[i] / sqrt(mean(x^2) + eps). x and y may alias. Sum of squares accumulated in
// double, in four interleaved partial sums (see ops.cpp): a fixed order for each n.
void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps);

// In-place softmax of x[0..n). Returns nothing; x sums to 1 afterwards (n >= 1).
void softmax(float* x, int64_t n);

// g[i] = silu(g[i]) * u[i], silu(v) = v / (1 + exp(-v)).
void silu_mul(float* g, const float* u, int64_t n);

// y[i] += x[i].
void add(float* y, const float* x, int64_t n);

// Rotary embedding of one token's n_heads heads, x [n_heads, head_dim], in place.
// cs holds n_rot/2 (cos, sin) pairs for this token's position: cs[2i] = cos(theta_i),
// cs[2i+1] = sin(theta_i). neox false: pairs (2i, 2i+1); neox true: pairs (i, i + n_rot/2).
// Dimensions >= n_rot are left unchanged.
void rope(float* x, int32_t n_heads, int32_t head_dim, int32_t n_rot, const float* cs, bool neox);

// Inner-product kernels for attention, per ISA.
struct OpsTable {
  float (*dot)(const float* a, const float* b, int64_t n);         // sum a[i]*b[i]
  void (*axpy)(float alpha, const float* x, float* y, int64_t n);  // y[i] += alpha * x[i]
  // n_q query heads sharing one KV head, over n_kv cached positions (n_kv >= 1):
  //   out[h][hd] = sum_j softmax_j(scale * q[h] . k[j]) v[j]
  // q [n_q, hd]; k, v [n_kv, hd] (row stride hd); scores: scratch of n_q * n_kv floats;
  // out [n_q, hd]. Each head's result depends only on its own inputs: not on n_q, threads or
  // batching (grouping heads only lets them share the K/V reads).
  void (*attend)(const float* q, int32_t n_q, const float* k, const float* v, int32_t n_kv,
                 int32_t hd, float scale, float* scores, float* out);
  // The same over an F16 cache (k, v [n_kv, hd] IEEE half); the same reduction order, so the
  // result equals attend's on the f32 values of the half rows.
  void (*attend_f16)(const float* q, int32_t n_q, const uint16_t* k, const uint16_t* v,
                     int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
  // g[i] = silu(g[i]) * u[i] (see silu_mul; the AVX2 / NEON version uses a polynomial e^x with
  // about 2e-7 relative error). Vector lanes for i < n - n % 8, scalar for the tail (AVX-512: 16
  // lanes, the tail masked, the same polynomial): callers that need batch invariance call it per
  // token row, so a value depends only on its row and index.
  void (*silu_mul)(float* g, const float* u, int64_t n);
  // y[i] = half(x[i]), round to nearest even (the F16 cache store).
  void (*to_f16)(const float* x, uint16_t* y, int64_t n);
  // attend / attend_f16 over a cache split in blocks of block_size rows (the paged KV cache).
  // The K row of position j (0 <= j < n_kv) is hd elements (float, or IEEE half for the _f16
  // variant) at
  //   k_base + block_table[j / block_size] * block_stride + (j % block_size) * hd * elem_bytes
  // bytes, and the V row likewise from v_base; k_base / v_base are already offset to the layer
  // and KV head inside block 0, block_stride is the byte distance between blocks. block_table
  // has at least (n_kv - 1) / block_size + 1 entries (block ids >= 0, any order, repeats
  // allowed). Same reduction order as attend / attend_f16 (scores per position, one softmax over
  // all n_kv positions, V accumulated in position order), so the result is bitwise equal to
  // theirs on the same rows laid out contiguously, for any block_size and placement.
  void (*attend_paged)(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                       const int32_t* block_table, size_t block_stride, int32_t block_size,
                       int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
  void (*attend_paged_f16)(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                           const int32_t* block_table, size_t block_stride, int32_t block_size,
                           int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
  // attend_paged / attend_paged_f16 over the positions [p0, p1) only (0 <= p0 < p1; a sliding
  // window): the same layout (position j in block block_table[j / block_size]), scores scratch
  // of n_q * (p1 - p0) floats, and the same reduction order, so the result is bitwise equal to
  // attend_paged's on the rows p0..p1-1 placed at positions 0..p1-p0-1.
  void (*attend_window)(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                        const int32_t* block_table, size_t block_stride, int32_t block_size,
                        int32_t p0, int32_t p1, int32_t hd, float scale, float* scores, float* out);
  void (*attend_window_f16)(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                            const int32_t* block_table, size_t block_stride, int32_t block_size,
                            int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                            float* out);
  // x[i] = gelu(x[i]) and g[i] = gelu(g[i]) * u[i], GELU's tanh approximation (see ops::gelu).
  // The AVX2 and NEON versions compute it as v / (1 + e^(-2 sqrt(2/pi) (v + 0.044715 v^3))) with
  // the polynomial e^x (the same function; about 3e-7 relative error) in vector lanes for
  // i < n - n % 8 and with the scalar code for the tail: like silu_mul, call them per token row
  // for batch invariance.
  void (*gelu)(float* x, int64_t n);
  void (*gelu_mul)(float* g, const float* u, int64_t n);
  // ops::layer_norm (mean and variance accumulated in double; the AVX2 / NEON version sums in
  // vector lanes, a fixed order for each n, and normalizes with the scalar code's float
  // operations).
  void (*layer_norm)(const float* x, const float* w, const float* b, float* y, int64_t n,
                     float eps);
};
const OpsTable& ops_table(kernels::Isa isa);

// Scalar versions (reference).
float dot_scalar(const float* a, const float* b, int64_t n);
void axpy_scalar(float alpha, const float* x, float* y, int64_t n);
void attend_scalar(const float* q, int32_t n_q, const float* k, const float* v, int32_t n_kv,
                   int32_t hd, float scale, float* scores, float* out);
void attend_f16_scalar(const float* q, int32_t n_q, const uint16_t* k, const uint16_t* v,
                       int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
void attend_paged_scalar(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                         const int32_t* block_table, size_t block_stride, int32_t block_size,
                         int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
void attend_paged_f16_scalar(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                             const int32_t* block_table, size_t block_stride, int32_t block_size,
                             int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
void attend_window_scalar(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                          const int32_t* block_table, size_t block_stride, int32_t block_size,
                          int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                          float* out);
void attend_window_f16_scalar(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                              const int32_t* block_table, size_t block_stride, int32_t block_size,
                              int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                              float* out);
void to_f16_scalar(const float* x, uint16_t* y, int64_t n);
#if defined(__x86_64__) || defined(_M_X64)
float dot_avx2(const float* a, const float* b, int64_t n);
void axpy_avx2(float alpha, const float* x, float* y, int64_t n);
void attend_avx2(const float* q, int32_t n_q, const float* k, const float* v, int32_t n_kv,
                 int32_t hd, float scale, float* scores, float* out);
void attend_f16_avx2(const float* q, int32_t n_q, const uint16_t* k, const uint16_t* v,
                     int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
void attend_paged_avx2(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                       const int32_t* block_table, size_t block_stride, int32_t block_size,
                       int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
void attend_paged_f16_avx2(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                           const int32_t* block_table, size_t block_stride, int32_t block_size,
                           int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
void attend_window_avx2(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                        const int32_t* block_table, size_t block_stride, int32_t block_size,
                        int32_t p0, int32_t p1, int32_t hd, float scale, float* scores, float* out);
void attend_window_f16_avx2(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                            const int32_t* block_table, size_t block_stride, int32_t block_size,
                            int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                            float* out);
void to_f16_avx2(const float* x, uint16_t* y, int64_t n);
void silu_mul_avx2(float* g, const float* u, int64_t n);
void gelu_avx2(float* x, int64_t n);
void gelu_mul_avx2(float* g, const float* u, int64_t n);
void layer_norm_avx2(const float* x, const float* w, const float* b, float* y, int64_t n,
                     float eps);
// The avx512 tier's versions (ops-avx512.cpp): 16 lanes, row tails masked (any n and hd; no
// scalar fallback); the same contracts, batch invariant within the tier, rounding differently
// from the avx2 versions.
float dot_avx512(const float* a, const float* b, int64_t n);
void axpy_avx512(float alpha, const float* x, float* y, int64_t n);
void attend_avx512(const float* q, int32_t n_q, const float* k, const float* v, int32_t n_kv,
                   int32_t hd, float scale, float* scores, float* out);
void attend_f16_avx512(const float* q, int32_t n_q, const uint16_t* k, const uint16_t* v,
                       int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
void attend_paged_avx512(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                         const int32_t* block_table, size_t block_stride, int32_t block_size,
                         int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
void attend_paged_f16_avx512(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                             const int32_t* block_table, size_t block_stride, int32_t block_size,
                             int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
void attend_window_avx512(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                          const int32_t* block_table, size_t block_stride, int32_t block_size,
                          int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                          float* out);
void attend_window_f16_avx512(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                              const int32_t* block_table, size_t block_stride, int32_t block_size,
                              int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                              float* out);
void to_f16_avx512(const float* x, uint16_t* y, int64_t n);
void silu_mul_avx512(float* g, const float* u, int64_t n);
void gelu_avx512(float* x, int64_t n);
void gelu_mul_avx512(float* g, const float* u, int64_t n);
void layer_norm_avx512(const float* x, const float* w, const float* b, float* y, int64_t n,
                       float eps);
#endif
#if defined(__aarch64__)
// The neon and i8mm tiers' versions (ops-neon.cpp): avx2's float operations in the same order
// (8-lane steps as two 4-lane halves, the same scalar tails and hd % 8 != 0 fallbacks), so every
// entry's result is bitwise equal to the avx2 version's.
float dot_neon(const float* a, const float* b, int64_t n);
void axpy_neon(float alpha, const float* x, float* y, int64_t n);
void attend_neon(const float* q, int32_t n_q, const float* k, const float* v, int32_t n_kv,
                 int32_t hd, float scale, float* scores, float* out);
void attend_f16_neon(const float* q, int32_t n_q, const uint16_t* k, const uint16_t* v,
                     int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
void attend_paged_neon(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                       const int32_t* block_table, size_t block_stride, int32_t block_size,
                       int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
void attend_paged_f16_neon(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                           const int32_t* block_table, size_t block_stride, int32_t block_size,
                           int32_t n_kv, int32_t hd, float scale, float* scores, float* out);
void attend_window_neon(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                        const int32_t* block_table, size_t block_stride, int32_t block_size,
                        int32_t p0, int32_t p1, int32_t hd, float scale, float* scores, float* out);
void attend_window_f16_neon(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                            const int32_t* block_table, size_t block_stride, int32_t block_size,
                            int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                            float* out);
void to_f16_neon(const float* x, uint16_t* y, int64_t n);
void silu_mul_neon(float* g, const float* u, int64_t n);
void gelu_neon(float* x, int64_t n);
void gelu_mul_neon(float* g, const float* u, int64_t n);
void layer_norm_neon(const float* x, const float* w, const float* b, float* y, int64_t n,
                     float eps);
#endif

}  // namespace llmt::ops

// ---- Extra scalar ops for the non-llama architectures (ops-extra.cpp). Plain loops the
// compiler can vectorize; every result depends only on its own row (batch invariance).
namespace llmt::ops {

// y[i] = (x[i] - mean) / sqrt(var + eps) * w[i] + b[i]; w and/or b may be nullptr (1 / 0).
// Mean and variance accumulated in double. x and y may alias.
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t n, float eps);

// x[i] = gelu(x[i]), the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))),
// computed as x / (1 + e^(-2 sqrt(2/pi) x (1 + 0.044715 x^2))) with std::exp (the same bits on
// x86-64 and AArch64 with glibc, unlike std::tanh).
void gelu(float* x, int64_t n);

// g[i] = gelu(g[i]) * u[i] (GELU-tanh GLU, Gemma).
void gelu_mul(float* g, const float* u, int64_t n);

// x[i] = cap * tanh(x[i] / cap) (soft-capping, Gemma 2); cap > 0.
void softcap(float* x, int64_t n, float cap);

// x[i] *= s.
void scale(float* x, int64_t n, float s);

// Attention of n_q query heads sharing one KV head over the cached positions [p0, p1)
// (p0 < p1), with optional score soft-capping (cap > 0: s = cap * tanh(s / cap) after the
// scale). The K row of position j is hd elements (float, or IEEE half when f16) at
//   k_base + block_table[j / block_size] * block_stride + (j % block_size) * row_stride
// bytes and the V row likewise from v_base. Covers the paged cache (row_stride = hd * elem) and
// a contiguous activation buffer (block_size >= p1, block_table {0}, row_stride = its row
// pitch). q, out [n_q, hd]; scores: scratch of p1 - p0 floats. Scores per position in order, one
// softmax (sum in double), V accumulated in position order: each head depends on its inputs only
// (and on the dot / axpy chosen).
struct AttendSpan {
  const void* k_base = nullptr;
  const void* v_base = nullptr;
  const int32_t* block_table = nullptr;
  size_t block_stride = 0;
  int32_t block_size = 1;
  size_t row_stride = 0;
  bool f16 = false;
  int32_t hd = 0;
  float scale = 1.0f;
  float softcap = 0.0f;
  // Inner products (an ISA's OpsTable::dot / axpy; the scalar ones by default).
  float (*dot)(const float* a, const float* b, int64_t n) = dot_scalar;
  void (*axpy)(float alpha, const float* x, float* y, int64_t n) = axpy_scalar;
};
// With f16, hd must be <= 1024 (the row conversion scratch; the output is zeroed otherwise).
void attend_span(const AttendSpan& a, const float* q, int32_t n_q, int32_t p0, int32_t p1,
                 float* scores, float* out);

}  // namespace llmt::ops
