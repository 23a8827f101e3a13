// Tensor element types as numbered in the GGUF format (the ggml_type enum values), with the
// block geometry of each. Data only: no kernels here (those live in src/kernels).
// Thread-safety: all functions are pure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace llmt {

enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  // 4, 5: removed Q4_2/Q4_3
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};

struct TensorTypeInfo {
  const char* name;    // "q4_K", "f16", ...
  int64_t block_size;  // elements per block (1 for plain types)
  size_t block_bytes;  // bytes per block
  bool compute;        // true when the engine has kernels for it (dequantize + dot)
};

// Geometry of a known type id; nullopt for ids that are not (or no longer) defined.
std::optional<TensorTypeInfo> tensor_type_info(uint32_t type_id);
inline std::optional<TensorTypeInfo> tensor_type_info(TensorType t) {
  return tensor_type_info(static_cast<uint32_t>(t));
}
const char* tensor_type_name(TensorType t);  // "unknown" for undefined ids

// Bytes of a row of n elements, or nullopt when n is not a multiple of the block size.
std::optional<size_t> tensor_row_bytes(TensorType t, int64_t n);

}  // namespace llmt
