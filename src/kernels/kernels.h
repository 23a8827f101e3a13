// Compute kernels for weight formats: dequantize, activation quantization, dot products and the
// batched matmul used by the model. One scalar reference implementation per format plus an AVX2
// variant (files *-avx2.cpp, the only ones compiled with ISA flags). The ISA is chosen once at run
// time by CPU feature detection (detect_isa()); callers hold the returned const table.
//
// Reduction order contract (batch invariance): the result for one (weight row, activation row)
// pair never depends on how many activation rows are in the call, on the other rows, or on how
// rows are split over threads. matmul's register-tiled GEMM paths (AVX2 Q2_K..Q6_K, Q8_0,
// Q4_0, Q5_0, IQ4_NL: 8 tokens per weight-row pass; F32, F16, BF16: 2 rows x 3 tokens) evaluate
// per (row, token) pair exactly the float operations of that format's vec_dot, so matmul with
// any M equals vec_dot bitwise.
//
// Thread-safety: all functions are pure or write only to caller-provided disjoint outputs; the
// tables are immutable.
#pragma once

#include <cstddef>
#include <cstdint>

#include "llmthreads/tensor-type.h"

namespace llmt::kernels {

enum class Isa { kScalar, kAvx2 };
const char* isa_name(Isa isa);
// Best ISA this CPU supports (AVX2 needs AVX2+FMA+F16C); the LLMT_ISA=scalar environment variable
// forces the scalar path.
Isa detect_isa();

// Per-weight-format kernels.
struct TypeKernels {
  TensorType type;
  // Activation format that vec_dot consumes (e.g. Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1 for
  // Q4_1/Q5_1, Q8_K for k-quants, F32 for F32/F16/BF16).
  TensorType vec_dot_type;
  // dst[0..n) = dequantized src; n is a multiple of the block size.
  void (*dequantize_row)(const void* src, float* dst, int64_t n);
  // Quantize n floats into vec_dot_type blocks (a plain copy when vec_dot_type is F32).
  void (*quantize_row_vec)(const float* src, void* dst, int64_t n);
  // *out = dot(weight row w, activation row x), both n elements long.
  void (*vec_dot)(int64_t n, float* out, const void* w, const void* x);
  // Several activation rows against one weight row (decodes the weight once):
  // out[t * out_stride] = dot(w, x_t) for t in [0, nx), 1 <= nx <= 4, x_t at byte offset
  // t * x_stride from x (rows in vec_dot_type). Bitwise equal to vec_dot for every pair.
  void (*vec_dot_rows)(int64_t n, float* out, int64_t out_stride, const void* w, const void* x,
                       size_t x_stride, int nx);
};

// Kernels for a weight format on an ISA; nullptr when the format has no kernels.
// For ISA kAvx2, formats without an AVX2 variant fall back to the scalar entries.
const TypeKernels* type_kernels(TensorType t, Isa isa);

// Batched matmul: Y[M, N] = X[M, K] · W[N, K]^T, W in weight format `wtype` with rows of K
// elements (row stride = tensor_row_bytes(wtype, K)), X and Y row-major float32.
struct MatmulArgs {
  TensorType wtype;
  const void* w;   // [N, K] in wtype
  int64_t n;       // N: output features (weight rows)
  int64_t k;       // K: input features
  const float* x;  // [M, K]
  int64_t m;       // M: tokens
  float* y;        // [M, N]
  void* work;      // at least matmul_work_bytes(wtype, m, k) bytes, 64-byte aligned
  Isa isa;
};
// Bytes of work buffer the matmul needs (0 when X is used as is, e.g. float weights): the
// quantized activation rows plus small per-token / per-8-token tables the GEMM tiles read.
size_t matmul_work_bytes(TensorType wtype, int64_t m, int64_t k);
// Phase 1: quantize this thread's share of X's rows (split in groups of 8 tokens) into work.
// Work-buffer contract: the layout and every byte written depend only on (wtype, m, k, X), never
// on (ith, nth): running prepare for all ith of any nth, or prepare(a, 0, 1) alone (e.g. each
// thread into its own buffer), yields the same buffer. Shares of different ith are disjoint.
void matmul_prepare(const MatmulArgs& a, int ith, int nth);
// Phase 2 (after the prepare phase filled work): compute this thread's share of Y (a contiguous
// range of weight rows). Each Y value is bitwise independent of M, of the other tokens and of
// (ith, nth); see the reduction order contract above.
void matmul_compute(const MatmulArgs& a, int ith, int nth);
// Both phases on the calling thread (tests, small ops).
void matmul(const MatmulArgs& a);

// fp16 / bf16 <-> fp32 conversions (exact, round-to-nearest-even on the way down).
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

}  // namespace llmt::kernels
