// The avx2 tier's Q8_0 / Q4_0 / Q5_0 / IQ4_NL dots and 8-token GEMM tiles: gemm-q8-x86.h compiled
// with the AVX2 integer dot step (vpmaddubsw + vpmaddwd).
#include "kernels/int-dot-x86.h"
#include "kernels/quant-blocks.h"

namespace llmt::kernels {
namespace {
using IntDot = MaddubsDot;  // the integer dot step of gemm-q8-x86.h in this file
}  // namespace
}  // namespace llmt::kernels

#include "kernels/gemm-q8-x86.h"

namespace llmt::kernels {

Avx2Entry avx2_entry_gemm_q8(TensorType t) {
  return gemm_q8::entry(t);
}

GemmTileFn avx2_gemm_tile_q8(TensorType t) {
  return gemm_q8::tile(t);
}

}  // namespace llmt::kernels
