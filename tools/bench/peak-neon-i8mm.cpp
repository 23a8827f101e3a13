// AArch64 i8mm register-only peak loop of the bench, for the i8mm tier's int8 figure; only built
// on AArch64 (the -neon-i8mm.cpp suffix gives it +i8mm) and only called when that tier is in use.
#include <arm_neon.h>

#include "bench.h"
#include "peak-neon.h"

namespace llmt::bench {

double int8_dot_loop_i8mm(int64_t n_iter, int32_t* sink) {
  // smmla: a 2x8 s8 matrix times an 8x2 one into 2x2 int32 (32 products, 64 ops).
  return int8_chain_loop(n_iter, sink, 32.0, [](int32x4_t acc, int8x16_t a, int8x16_t b) {
    return vmmlaq_s32(acc, a, b);
  });
}

}  // namespace llmt::bench
