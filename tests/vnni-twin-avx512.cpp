// The EVEX twin of the avxvnni kernels (see vnni-twin.h): vnni-x86.h compiled with
// EvexVnniDot. Built with the avx512 tier's flags (the -avx512.cpp suffix, llmt_isa_sources).
#include "vnni-twin.h"

#include "kernels/int-dot-x86.h"

namespace llmt::kernels {
namespace {
using IntDot = EvexVnniDot;  // the integer dot step of the *-x86.h bodies in this file
}  // namespace
}  // namespace llmt::kernels

#include "kernels/vnni-x86.h"

namespace llmt::kernels::twin {

Avx2Entry vnni_twin_entry(TensorType t) {
  return vnni256::entry(t);
}

GemmTileFn vnni_twin_gemm_tile(TensorType t) {
  return vnni256::tile(t);
}

GemmTileFn vnni_twin_gemv(TensorType t) {
  return vnni256::gemv(t);
}

}  // namespace llmt::kernels::twin
