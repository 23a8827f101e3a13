// Internal interface of `llmthreads bench` (tools/bench): statistics over repetitions, memory
// read bandwidth, peak compute rates and the matmul kernel micro-benchmarks. The CLI itself lives
// in cmd-bench.cpp; timed loops here never log or format.
//
// Thread-safety: every function drives the ThreadPool it is given from the calling thread only
// (the pool's owner); nothing here holds global state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "llmthreads/tensor-type.h"
#include "threading/thread-pool.h"

namespace llmt::bench {

// Summary of one figure over the repetitions (after the warm-up, which is not included).
struct Stats {
  double median = 0.0;  // middle value (mean of the two middle values for an even count)
  double min = 0.0;
  double max = 0.0;
  double mean = 0.0;
  int32_t n = 0;  // number of repetitions summarized
};
// Summarizes `values` (may be empty: all zeros).
Stats summarize(std::vector<double> values);

// ---- memory bandwidth (bandwidth.cpp, loop in bandwidth-avx2.cpp) ----

struct BandwidthResult {
  size_t bytes = 0;  // buffer size read per pass
  Stats gbs;         // per-pass read rate, 1e9 bytes/s
};
// Reads a `bytes`-long buffer (touched before timing) once per pass with all of the pool's
// threads, each summing a contiguous slice with AVX2 loads (scalar on other CPUs): one warm-up
// pass, then `passes` timed passes. Returns an error message in *error on allocation failure.
BandwidthResult measure_read_bandwidth(ThreadPool& pool, size_t bytes, int32_t passes,
                                       std::string* error);

// Peak arithmetic rates of tight register-only loops on all the pool's threads, in 1e9 ops/s
// (multiply and add counted as 2 ops), with the loops of the kernels' tier. 0 for the scalar
// tier (no peak loops; tier stays "scalar").
struct ComputePeak {
  const char* tier = "scalar";  // whose loops were measured
  // The int8 ceiling: the tier's plain int8 dot instruction, its products counted.
  double int8_gops = 0.0;
  // The ceiling of a k-quant dot product: the tier's int8 dot plus the per-sub-block scale
  // multiply every k-quant kernel needs.
  double int8_scaled_gops = 0.0;
  double f32_gops = 0.0;  // the tier's widest FMA
  // Per tier (int8 / int8_scaled / f32):
  //   avx2     vpmaddubsw + vpaddw (64 ops per 32 products) / vpmaddubsw + vpmaddwd + vpaddd /
  //            256-bit FMA
  //   avxvnni  {vex} vpdpbusd ymm (64 ops per 32 products) / vpmaddubsw + {vex} vpdpwssd (the
  //            avxvnni k-quant step) / 256-bit FMA
  //   avx512, amx  vpdpbusd zmm (128 ops per 64 products) / 8 vpdpbusd + vpmulld + vpaddd per
  //            512 products (the wide k-quant tiles' inner step) / 512-bit FMA
  //   neon     sdot (32 ops per 16 products) / 2 sdot + 2 mla-by-scalar per 32 products (the
  //            neon k-quant step) / fmla (8 ops)
  //   i8mm     smmla (64 ops per 32 products) / as neon / as neon
};
ComputePeak measure_compute_peak(ThreadPool& pool, int32_t passes, kernels::Isa tier);

// The AVX2 loops (bandwidth-avx2.cpp; only built on x86-64, only called when detect_isa() says
// AVX2). sum_floats_avx2: sum of p[0..n), n a multiple of 64, p 32-byte aligned.
// The peak loops (int8_dot_loop_*, int8_scaled_dot_loop_*, fma_loop_*) run n_iter iterations and
// return the ops performed; the checksum written to *sink only keeps the work observable. Each
// is built only on its architecture and called only when its tier is in use.
float sum_floats_avx2(const float* p, size_t n);
double int8_dot_loop_avx2(int64_t n_iter, int32_t* sink);
double int8_scaled_dot_loop_avx2(int64_t n_iter, int32_t* sink);
double fma_loop_avx2(int64_t n_iter, float* sink);
// avxvnni (peak-avxvnni.cpp; its f32 figure is fma_loop_avx2's).
double int8_dot_loop_avxvnni(int64_t n_iter, int32_t* sink);
double int8_scaled_dot_loop_avxvnni(int64_t n_iter, int32_t* sink);
// avx512 and amx (peak-avx512.cpp).
double int8_dot_loop_avx512(int64_t n_iter, int32_t* sink);
double int8_scaled_dot_loop_avx512(int64_t n_iter, int32_t* sink);
double fma_loop_avx512(int64_t n_iter, float* sink);
// neon (peak-neon.cpp) and i8mm (peak-neon-i8mm.cpp: its int8 figure; the others are neon's).
double int8_dot_loop_neon(int64_t n_iter, int32_t* sink);
double int8_scaled_dot_loop_neon(int64_t n_iter, int32_t* sink);
double fma_loop_neon(int64_t n_iter, float* sink);
double int8_dot_loop_i8mm(int64_t n_iter, int32_t* sink);

// ---- matmul kernel micro-benchmarks (kernel-bench.cpp) ----

struct KernelCase {
  TensorType type;
  int64_t n_rows;    // N (weight rows)
  int64_t row_len;   // K
  int64_t n_tokens;  // M
};
struct KernelResult {
  KernelCase c;
  size_t weight_bytes = 0;
  Stats seconds;  // per matmul call (prepare + compute over the pool)
  Stats gbs;      // weight_bytes / seconds
  Stats gops;     // 2*N*K*M / seconds
};
// Weight formats the kernel bench can generate (names as tensor_type_name: "q4_K", "f16", ...).
const std::vector<TensorType>& kernel_bench_types();
// Parses a type name; false when unknown or not benchmarkable.
bool parse_kernel_type(const std::string& name, TensorType* out);
// Rows of `row_len` elements so that the weight matrix holds at least target_bytes (a multiple of
// 64 rows), for a matrix larger than the caches.
int64_t rows_for_bytes(TensorType type, int64_t row_len, size_t target_bytes);
// Times Y = X·W^T for random weights of the case's format (valid, finite fp16 scales) and random
// N(0,1) activations: prepare and compute phases over `pool`, one warm-up call, then
// `repetitions` timed samples, each the mean of as many calls as fit in about 50 ms (at least
// one). Returns false with *error on allocation failure or unsupported format.
bool run_kernel_case(ThreadPool& pool, kernels::Isa isa, const KernelCase& c, int32_t repetitions,
                     KernelResult* out, std::string* error);

}  // namespace llmt::bench
