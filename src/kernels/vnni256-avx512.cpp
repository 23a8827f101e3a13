// The avx512 tier's 256-bit integer kernels: vnni-x86.h (the avxvnni tier's kernel source)
// compiled with EvexVnniDot, the EVEX-encoded 256-bit vpdpbusd / vpdpwssd of AVX-512 VNNI + VL.
// The tier runs them wherever its 512-bit wide tiles do not: vec_dot / vec_dot_rows, the 8-token
// GEMM tile and the gemv, i.e. M < kMinWideTokens (1.1-1.25x the AVX2 maddubs kernels there, at
// 2048x768 on Zen 4). Bitwise equal to the avx2 tier, as vnni-x86.h's kernels are, so the
// avx512 tier's quantized matmul still equals avx2's. They also run the avxvnni kernel logic on
// CPUs that have AVX-512 VNNI but not AVX-VNNI's VEX encoding (test-kernels' KernelVnniTwin).
// Only called when isa_supported(Isa::kAvx512).
#include "kernels/int-dot-x86.h"
#include "kernels/quant-blocks.h"

namespace llmt::kernels {
namespace {
using IntDot = EvexVnniDot;  // the integer dot step of the *-x86.h bodies in this file
}  // namespace
}  // namespace llmt::kernels

#include "kernels/vnni-x86.h"

namespace llmt::kernels {

Avx2Entry avx512_vnni256_entry(TensorType t) {
  return vnni256::entry(t);
}

GemmTileFn avx512_vnni256_tile(TensorType t) {
  return vnni256::tile(t);
}

GemmTileFn avx512_vnni256_gemv(TensorType t) {
  return vnni256::gemv(t);
}

}  // namespace llmt::kernels
