// ISA detection and the per-format kernel tables. Tables are immutable after their first use
// (function-local statics, thread-safe initialization).
#include <array>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include "kernels/quant-blocks.h"

namespace llmt::kernels {

namespace {

#if defined(__x86_64__)
constexpr Isa kArchIsas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvxVnni, Isa::kAvx512, Isa::kAmx};
#elif defined(__aarch64__)
constexpr Isa kArchIsas[] = {Isa::kScalar, Isa::kNeon, Isa::kI8mm};
#else
constexpr Isa kArchIsas[] = {Isa::kScalar};
#endif

// Position of a tier in this architecture's chain, or -1 when it is another architecture's.
int arch_rank(Isa isa) {
  for (size_t i = 0; i < std::size(kArchIsas); ++i) {
    if (kArchIsas[i] == isa) return static_cast<int>(i);
  }
  return -1;
}

#if defined(__x86_64__)
// F16C (CPUID.1:ECX bit 29), read directly: clang's __builtin_cpu_supports has no "f16c".
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
  return ((c >> 29) & 1u) != 0;
}
bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
}
// AVX-VNNI (VEX-encoded vpdpbusd / vpdpwssd on ymm): CPUID.(EAX=7,ECX=1):EAX bit 4, read
// directly (not every compiler's __builtin_cpu_supports knows "avxvnni"); sub-leaf 1 exists when
// CPUID.(7,0):EAX >= 1. The ymm state: XCR0 bits 1 (SSE) and 2 (AVX) set, OSXSAVE
// (CPUID.1:ECX bit 27) for xgetbv; cpu_has_avx2 checks them too, stated here for the contract.
bool cpu_has_avxvnni() {
  if (!cpu_has_avx2()) return false;
  unsigned a = 0, b = 0, c = 0, d = 0;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
  if (((c >> 27) & 1u) == 0) return false;
  unsigned xlo = 0, xhi = 0;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  if ((xlo & 0x6u) != 0x6u) return false;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
  if (a < 7) return false;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  if (a < 1) return false;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
  return ((a >> 4) & 1u) != 0;
}
// __builtin_cpu_supports also checks that the OS saves the zmm state (XCR0).
bool cpu_has_avx512() {
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vnni");
}
#endif

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvxVnni:
      return "avxvnni";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAmx:
      return "amx";
    case Isa::kNeon:
      return "neon";
    case Isa::kI8mm:
      return "i8mm";
  }
  return "unknown";
}

std::span<const Isa> arch_isas() {
  return kArchIsas;
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return true;
#if defined(__x86_64__)
    case Isa::kAvx2:
      return cpu_has_avx2();
    case Isa::kAvxVnni:
      return cpu_has_avxvnni();
    case Isa::kAvx512:
      return cpu_has_avx512();
#endif
#if defined(__aarch64__)
    case Isa::kNeon:
      return (getauxval(AT_HWCAP) & HWCAP_ASIMD) && (getauxval(AT_HWCAP) & HWCAP_ASIMDDP);
    case Isa::kI8mm:
      return isa_supported(Isa::kNeon) && (getauxval(AT_HWCAP2) & HWCAP2_I8MM);
#endif
    default:
      break;  // kAmx: no AMX kernels are built; other architectures' tiers
  }
  return false;
}

Isa best_isa() {
  Isa best = Isa::kScalar;
  for (Isa isa : kArchIsas) {
    if (isa_supported(isa)) best = isa;
  }
  return best;
}

Result<Isa> parse_isa(std::string_view name) {
  for (Isa isa :
       {Isa::kScalar, Isa::kAvx2, Isa::kAvxVnni, Isa::kAvx512, Isa::kAmx, Isa::kNeon, Isa::kI8mm}) {
    if (name == isa_name(isa)) return isa;
  }
  return invalid_argument("unknown ISA tier '" + std::string(name) +
                          "' (expected scalar, avx2, avxvnni, avx512, amx, neon or i8mm)");
}

Result<Isa> select_isa() {
  const char* env = std::getenv("LLMT_ISA");
  if (!env || !*env) return best_isa();
  Result<Isa> parsed = parse_isa(env);
  if (!parsed) return invalid_argument("LLMT_ISA: " + parsed.status().message());
  const Isa cap = parsed.value();
  const int cap_rank = arch_rank(cap);
  if (cap_rank < 0) {
    std::string tiers;
    for (Isa isa : kArchIsas) tiers += std::string(tiers.empty() ? "" : ", ") + isa_name(isa);
    return invalid_argument(std::string("LLMT_ISA=") + env +
                            " is not a tier of this architecture (tiers: " + tiers + ")");
  }
  Isa chosen = Isa::kScalar;
  for (int i = 0; i <= cap_rank; ++i) {
    if (isa_supported(kArchIsas[i])) chosen = kArchIsas[i];
  }
  return chosen;
}

Isa detect_isa() {
  Result<Isa> r = select_isa();
  return r ? r.value() : best_isa();
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

// Lays the non-null fields of e over k (vec_dot and vec_dot_rows only together: they must come
// from the same implementation, the bitwise contract).
void overlay(TypeKernels& k, const Avx2Entry& e) {
  if (e.dequantize_row) k.dequantize_row = e.dequantize_row;
  if (e.quantize_row_vec) k.quantize_row_vec = e.quantize_row_vec;
  if (e.vec_dot && e.vec_dot_rows) {
    k.vec_dot = e.vec_dot;
    k.vec_dot_rows = e.vec_dot_rows;
  }
}

Table build_table(Isa isa) {
  Table table{};
  for (int i = 0; i < kNumFormats; ++i) {
    TypeKernels k = scalar_kernels(kFormats[i]);
#if defined(__x86_64__)
    if (isa == Isa::kAvx2 || isa == Isa::kAvxVnni || isa == Isa::kAvx512 || isa == Isa::kAmx)
      overlay(k, avx2_entry(kFormats[i]));
    // avx512 lays over avx2, not avxvnni: an AVX-512 CPU need not have AVX-VNNI's VEX encoding.
    if (isa == Isa::kAvxVnni) overlay(k, avxvnni_entry(kFormats[i]));
    if (isa == Isa::kAvx512 || isa == Isa::kAmx) {
      overlay(k, avx512_vnni256_entry(kFormats[i]));  // integer formats
      overlay(k, avx512_entry(kFormats[i]));          // float formats
    }
#endif
#if defined(__aarch64__)
    if (isa == Isa::kNeon || isa == Isa::kI8mm) overlay(k, neon_entry(kFormats[i]));
#endif
    table[i] = k;
  }
  return table;
}

}  // namespace

const TypeKernels* type_kernels(TensorType t, Isa isa) {
  const int i = format_index(t);
  if (i < 0) return nullptr;
  // Indexed by the Isa value (enum order).
  static const Table tables[] = {build_table(Isa::kScalar),  build_table(Isa::kAvx2),
                                 build_table(Isa::kAvxVnni), build_table(Isa::kAvx512),
                                 build_table(Isa::kAmx),     build_table(Isa::kNeon),
                                 build_table(Isa::kI8mm)};
  const auto tier = static_cast<size_t>(isa);
  return tier < std::size(tables) ? &tables[tier][i] : nullptr;
}

}  // namespace llmt::kernels
