// The avxvnni tier's integer kernels (AVX2 + AVX-VNNI, 256-bit VEX vpdpbusd / vpdpwssd):
// vnni-x86.h compiled with VexVnniDot. Only called when isa_supported(Isa::kAvxVnni).
#include "kernels/int-dot-x86.h"
#include "kernels/quant-blocks.h"

namespace llmt::kernels {
namespace {
using IntDot = VexVnniDot;  // the integer dot step of the *-x86.h bodies in this file
}  // namespace
}  // namespace llmt::kernels

#include "kernels/vnni-x86.h"

namespace llmt::kernels {

Avx2Entry avxvnni_entry(TensorType t) {
  return vnni256::entry(t);
}

GemmTileFn avxvnni_gemm_tile(TensorType t) {
  return vnni256::tile(t);
}

GemmTileFn avxvnni_gemv(TensorType t) {
  return vnni256::gemv(t);
}

}  // namespace llmt::kernels
