// The avx2 tier's k-quant (Q2_K..Q6_K) dots, 8-token GEMM tiles and gemv: gemm-k-x86.h compiled
// with the AVX2 integer dot step (vpmaddubsw + vpmaddwd + vpaddd).
#include "kernels/int-dot-x86.h"
#include "kernels/quant-blocks.h"

namespace llmt::kernels {
namespace {
using IntDot = MaddubsDot;  // the integer dot step of gemm-k-x86.h in this file
}  // namespace
}  // namespace llmt::kernels

#include "kernels/gemm-k-x86.h"

namespace llmt::kernels {

Avx2Entry avx2_entry_gemm_k(TensorType t) {
  return gemm_k::entry(t);
}

GemmTileFn avx2_gemv(TensorType t) {
  return gemm_k::gemv(t);
}

GemmTileFn avx2_gemm_tile(TensorType t) {
  if (const GemmTileFn f = gemm_k::tile(t)) return f;
  if (const GemmTileFn f = avx2_gemm_tile_q8(t)) return f;
  return avx2_gemm_tile_float(t);
}

}  // namespace llmt::kernels
