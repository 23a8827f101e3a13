// The integer kernels of a 256-bit VNNI tier (avxvnni; and the avx512 tier's EVEX twin of it): the
// *-x86.h kernel bodies compiled with the including file's `IntDot` (VexVnniDot or EvexVnniDot,
// defined in llmt::kernels' anonymous namespace before the include), assembled into that tier's
// entries. Internal linkage (namespace vnni256); the including file exports them under its own
// names. The per-pair float arithmetic is the avx2 tier's, so results are bitwise equal to it.
#pragma once

#include "kernels/block32-x86.h"
#include "kernels/gemm-k-x86.h"
#include "kernels/gemm-q8-x86.h"
#include "kernels/quant-blocks.h"

namespace llmt::kernels {

namespace {
namespace vnni256 {

// vec_dot / vec_dot_rows of every integer format (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL,
// Q2_K..Q6_K); all nullptr for the float formats (they keep the avx2 entries).
inline Avx2Entry entry(TensorType t) {
  switch (t) {
    case TensorType::Q4_1:
      return avx2::entry_of<block32::Dot<block32::PolicyQ4_1>>(nullptr, nullptr);
    case TensorType::Q5_1:
      return avx2::entry_of<block32::Dot<block32::PolicyQ5_1>>(nullptr, nullptr);
    default:
      break;
  }
  const Avx2Entry q8 = gemm_q8::entry(t);
  return q8.vec_dot ? q8 : gemm_k::entry(t);
}

// The 8-token GEMM tile (the avx2 float tiles for F32 / F16 / BF16).
inline GemmTileFn tile(TensorType t) {
  if (const GemmTileFn f = gemm_k::tile(t)) return f;
  if (const GemmTileFn f = gemm_q8::tile(t)) return f;
  return avx2_gemm_tile_float(t);
}

// The few-token gemv (Q4_K, Q6_K; nullptr otherwise).
inline GemmTileFn gemv(TensorType t) {
  return gemm_k::gemv(t);
}

}  // namespace vnni256
}  // namespace

}  // namespace llmt::kernels
