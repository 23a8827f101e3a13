// Compute kernels for weight formats: dequantize, activation quantization, dot products and the
// batched matmul used by the model. One scalar reference implementation per format plus ISA
// variants in files named by their tier (*-avx2.cpp, *-avxvnni.cpp, *-avx512.cpp, *-neon.cpp: the
// only files compiled with ISA flags). The tier is chosen once at run time by CPU feature detection
// (select_isa()); callers hold the returned const tables.
//
// CPU tiers, lowest first: x86-64 scalar < avx2 (AVX2+FMA+F16C) < avxvnni (avx2 + AVX-VNNI, the
// 256-bit VEX vpdpbusd of Alder Lake .. Arrow Lake, Sierra Forest) < avx512 (AVX-512
// F+BW+VL+VNNI, on top of avx2) < amx (not built yet: no AMX kernels, never selected);
// AArch64 scalar < neon (ASIMD + dotprod) < i8mm (neon + the int8 matrix multiply SMMLA, a GEMM
// tile bitwise equal to the neon tier). A tier's tables are the next lower tier's with its own
// entries laid over them, except that avx512 lays over avx2 (an AVX-512 CPU need not have
// AVX-VNNI: Zen 4 has not; LLMT_ISA=avxvnni then gives avx2).
//
// Reduction order contract (batch invariance): the result for one (weight row, activation row)
// pair never depends on how many activation rows are in the call, on the other rows, or on how
// rows are split over threads. matmul's register-tiled GEMM paths (AVX2 Q2_K..Q6_K, Q8_0,
// Q4_0, Q5_0, IQ4_NL: 8 tokens per weight-row pass; F32, F16, BF16: 2 rows x 3 tokens, on
// avx512 4 rows x 3 tokens of 16-lane accumulators; AVX-512 wide tiles: 16 weight rows x up to
// 64 tokens; neon vec_dot_rows: 4 tokens per weight-row pass, every format; i8mm SMMLA tiles,
// Q8_0, Q4_0, Q5_0, IQ4_NL, Q4_K..Q6_K: 2 rows x 2 tokens per instruction, up to 8 tokens per
// pass) evaluate per (row, token) pair exactly the float operations of that tier's vec_dot for
// the format, so matmul with any M equals vec_dot bitwise. The invariance holds within a tier;
// results of different tiers differ in rounding, with two exceptions: for the quantized formats
// the avx512 tier keeps the avx2 tier's float operations (only the exact integer block sums are
// computed differently), so their avx2 and avx512 matmul results are bitwise equal (as are
// avxvnni's: the avx2 kernel source with vpdpbusd / vpdpwssd for the integer steps); and i8mm
// keeps the neon tier's (neon and i8mm bitwise equal); neon's kernels (float formats included)
// and its ops (ops.h: attention, elementwise; ops-neon.cpp, shared by i8mm) keep avx2's float
// operations, so matmul and the ops on neon equal avx2 bitwise. The avx512 tier's float formats
// (F32/F16/BF16) and its ops have their own 16-lane arithmetic and round differently from avx2.
//
// Thread-safety: all functions are pure or write only to caller-provided disjoint outputs; the
// tables are immutable. select_isa()/detect_isa() read the environment (call them at start-up,
// not concurrently with setenv).
#pragma once

#include <cstddef>
#include <cstdint>

#include <span>
#include <string_view>

#include "llmthreads/status.h"
#include "llmthreads/tensor-type.h"

namespace llmt::kernels {

enum class Isa { kScalar, kAvx2, kAvxVnni, kAvx512, kAmx, kNeon, kI8mm };
// "scalar", "avx2", "avxvnni", "avx512", "amx", "neon", "i8mm".
const char* isa_name(Isa isa);
// Whether this build has kernels for tier isa and this CPU can run them.
bool isa_supported(Isa isa);
// The best tier isa_supported() accepts (ignores LLMT_ISA).
Isa best_isa();
// Every tier of this build's architecture, lowest first (scalar, avx2, avxvnni, avx512, amx on
// x86-64; scalar, neon, i8mm on AArch64), whether or not this CPU supports it.
std::span<const Isa> arch_isas();
// Parses a tier name (as isa_name writes it); an error for other names.
Result<Isa> parse_isa(std::string_view name);
// The tier to run: best_isa(), capped by the LLMT_ISA environment variable when it is set and
// non-empty (the highest supported tier at or below the one named). An error when LLMT_ISA is
// not a tier name or names a tier of another architecture.
Result<Isa> select_isa();
// select_isa()'s tier; when LLMT_ISA is invalid, best_isa() (for callers without an error
// channel: tests and tools that also load a model, whose load reports the error).
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

// Kernels for a weight format on a tier; nullptr when the format has no kernels. Entries the tier
// has no variant of come from the next lower tier (down to scalar). Only call the returned
// functions when isa_supported(isa).
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
