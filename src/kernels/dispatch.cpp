// ISA detection and the per-format kernel tables. Tables are immutable after their first use
// (function-local statics, thread-safe initialization).
#include <array>
#include <cstdlib>
#include <cstring>

#include "kernels/quant-blocks.h"

namespace llmt::kernels {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
  }
  return "unknown";
}

#if defined(__x86_64__) || defined(__i386__)
// F16C (CPUID.1:ECX bit 29), read directly: clang's __builtin_cpu_supports has no "f16c".
static bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
  return (c >> 29) & 1u;
}
#endif

Isa detect_isa() {
  if (const char* env = std::getenv("LLMT_ISA"); env && std::strcmp(env, "scalar") == 0) {
    return Isa::kScalar;
  }
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c()) {
    return Isa::kAvx2;
  }
#endif
  return Isa::kScalar;
}

namespace {

// Index of a weight format in the tables, or -1.
constexpr TensorType kFormats[] = {
    TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q8_0,   TensorType::Q4_0,
    TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::IQ4_NL, TensorType::Q2_K,
    TensorType::Q3_K, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};
constexpr int kNumFormats = static_cast<int>(sizeof(kFormats) / sizeof(kFormats[0]));

int format_index(TensorType t) {
  for (int i = 0; i < kNumFormats; ++i) {
    if (kFormats[i] == t) return i;
  }
  return -1;
}

TypeKernels scalar_kernels(TensorType t) {
  using namespace scalar;
  switch (t) {
    case TensorType::F32:
      return {t, TensorType::F32, dequant_f32, quantize_f32, dot_f32, nullptr};
    case TensorType::F16:
      return {t, TensorType::F32, dequant_f16, quantize_f32, dot_f16, nullptr};
    case TensorType::BF16:
      return {t, TensorType::F32, dequant_bf16, quantize_f32, dot_bf16, nullptr};
    case TensorType::Q8_0:
      return {t, TensorType::Q8_0, dequant_q8_0, quantize_q8_0, dot_q8_0, nullptr};
    case TensorType::Q4_0:
      return {t, TensorType::Q8_0, dequant_q4_0, quantize_q8_0, dot_q4_0, nullptr};
    case TensorType::Q4_1:
      return {t, TensorType::Q8_1, dequant_q4_1, quantize_q8_1, dot_q4_1, nullptr};
    case TensorType::Q5_0:
      return {t, TensorType::Q8_0, dequant_q5_0, quantize_q8_0, dot_q5_0, nullptr};
    case TensorType::Q5_1:
      return {t, TensorType::Q8_1, dequant_q5_1, quantize_q8_1, dot_q5_1, nullptr};
    case TensorType::IQ4_NL:
      return {t, TensorType::Q8_0, dequant_iq4_nl, quantize_q8_0, dot_iq4_nl, nullptr};
    case TensorType::Q2_K:
      return {t, TensorType::Q8_K, dequant_q2_k, quantize_q8_k, dot_q2_k, nullptr};
    case TensorType::Q3_K:
      return {t, TensorType::Q8_K, dequant_q3_k, quantize_q8_k, dot_q3_k, nullptr};
    case TensorType::Q4_K:
      return {t, TensorType::Q8_K, dequant_q4_k, quantize_q8_k, dot_q4_k, nullptr};
    case TensorType::Q5_K:
      return {t, TensorType::Q8_K, dequant_q5_k, quantize_q8_k, dot_q5_k, nullptr};
    case TensorType::Q6_K:
      return {t, TensorType::Q8_K, dequant_q6_k, quantize_q8_k, dot_q6_k, nullptr};
    default:
      break;
  }
  return {t, t, nullptr, nullptr, nullptr, nullptr};
}

using Table = std::array<TypeKernels, kNumFormats>;

Table build_table(Isa isa) {
  Table table{};
  for (int i = 0; i < kNumFormats; ++i) {
    TypeKernels k = scalar_kernels(kFormats[i]);
#if defined(__x86_64__)
    if (isa == Isa::kAvx2) {
      const Avx2Entry e = avx2_entry(kFormats[i]);
      if (e.dequantize_row) k.dequantize_row = e.dequantize_row;
      if (e.quantize_row_vec) k.quantize_row_vec = e.quantize_row_vec;
      // vec_dot and vec_dot_rows must come from the same implementation (bitwise contract).
      if (e.vec_dot && e.vec_dot_rows) {
        k.vec_dot = e.vec_dot;
        k.vec_dot_rows = e.vec_dot_rows;
      }
    }
#endif
    table[i] = k;
  }
  return table;
}

}  // namespace

const TypeKernels* type_kernels(TensorType t, Isa isa) {
  const int i = format_index(t);
  if (i < 0) return nullptr;
  if (isa == Isa::kAvx2) {
    static const Table avx2 = build_table(Isa::kAvx2);
    return &avx2[i];
  }
  static const Table scalar_table = build_table(Isa::kScalar);
  return &scalar_table[i];
}

}  // namespace llmt::kernels
