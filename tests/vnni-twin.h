// Test-only twin of the avxvnni tier's integer kernels (vnni-twin-avx512.cpp): the same kernel
// source (src/kernels/vnni-x86.h) compiled with AVX-512 VNNI + VL flags and the EVEX-encoded
// 256-bit vpdpbusd / vpdpwssd (EvexVnniDot), which compute exactly what AVX-VNNI's VEX
// encodings compute. It lets a CPU with AVX-512 VNNI but without AVX-VNNI (Zen 4) run the
// avxvnni kernel logic; the VEX instructions themselves run only on a CPU with AVX-VNNI.
// Only call these when isa_supported(Isa::kAvx512) (the flags the twin is compiled with).
// Linked into test-kernels only (x86-64 builds; LLMT_HAVE_VNNI_TWIN says so).
#pragma once

#include "kernels/quant-blocks.h"

namespace llmt::kernels::twin {

// avxvnni_entry / avxvnni_gemm_tile / avxvnni_gemv with the EVEX encoding.
Avx2Entry vnni_twin_entry(TensorType t);
GemmTileFn vnni_twin_gemm_tile(TensorType t);
GemmTileFn vnni_twin_gemv(TensorType t);

}  // namespace llmt::kernels::twin
