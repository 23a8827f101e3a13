#include "llmthreads/tensor-type.h"

namespace llmt {

namespace {
constexpr int64_t QK_K = 256;
}

std::optional<TensorTypeInfo> tensor_type_info(uint32_t id) {
  switch (static_cast<TensorType>(id)) {
    case TensorType::F32:
      return TensorTypeInfo{"f32", 1, 4, true};
    case TensorType::F16:
      return TensorTypeInfo{"f16", 1, 2, true};
    case TensorType::BF16:
      return TensorTypeInfo{"bf16", 1, 2, true};
    case TensorType::Q4_0:
      return TensorTypeInfo{"q4_0", 32, 2 + 16, true};
    case TensorType::Q4_1:
      return TensorTypeInfo{"q4_1", 32, 2 + 2 + 16, true};
    case TensorType::Q5_0:
      return TensorTypeInfo{"q5_0", 32, 2 + 4 + 16, true};
    case TensorType::Q5_1:
      return TensorTypeInfo{"q5_1", 32, 2 + 2 + 4 + 16, true};
    case TensorType::Q8_0:
      return TensorTypeInfo{"q8_0", 32, 2 + 32, true};
    case TensorType::Q8_1:
      return TensorTypeInfo{"q8_1", 32, 4 + 32, false};
    case TensorType::Q2_K:
      return TensorTypeInfo{"q2_K", QK_K, QK_K / 16 + QK_K / 4 + 2 + 2, true};
    case TensorType::Q3_K:
      return TensorTypeInfo{"q3_K", QK_K, QK_K / 8 + QK_K / 4 + 12 + 2, true};
    case TensorType::Q4_K:
      return TensorTypeInfo{"q4_K", QK_K, 2 + 2 + 12 + QK_K / 2, true};
    case TensorType::Q5_K:
      return TensorTypeInfo{"q5_K", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2, true};
    case TensorType::Q6_K:
      return TensorTypeInfo{"q6_K", QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, true};
    case TensorType::Q8_K:
      return TensorTypeInfo{"q8_K", QK_K, 4 + QK_K + QK_K / 16 * 2, false};
    case TensorType::IQ2_XXS:
      return TensorTypeInfo{"iq2_xxs", QK_K, 2 + QK_K / 8 * 2, false};
    case TensorType::IQ2_XS:
      return TensorTypeInfo{"iq2_xs", QK_K, 2 + QK_K / 8 * 2 + QK_K / 32, false};
    case TensorType::IQ3_XXS:
      return TensorTypeInfo{"iq3_xxs", QK_K, 2 + QK_K / 4 + QK_K / 8, false};
    case TensorType::IQ1_S:
      return TensorTypeInfo{"iq1_s", QK_K, 2 + QK_K / 8 + QK_K / 16, false};
    case TensorType::IQ4_NL:
      return TensorTypeInfo{"iq4_nl", 32, 2 + 16, true};
    case TensorType::IQ3_S:
      return TensorTypeInfo{"iq3_s", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4, false};
    case TensorType::IQ2_S:
      return TensorTypeInfo{"iq2_s", QK_K, 2 + QK_K / 4 + QK_K / 16, false};
    case TensorType::IQ4_XS:
      return TensorTypeInfo{"iq4_xs", QK_K, 2 + 2 + QK_K / 64 + QK_K / 2, false};
    case TensorType::I8:
      return TensorTypeInfo{"i8", 1, 1, false};
    case TensorType::I16:
      return TensorTypeInfo{"i16", 1, 2, false};
    case TensorType::I32:
      return TensorTypeInfo{"i32", 1, 4, false};
    case TensorType::I64:
      return TensorTypeInfo{"i64", 1, 8, false};
    case TensorType::F64:
      return TensorTypeInfo{"f64", 1, 8, false};
    case TensorType::IQ1_M:
      return TensorTypeInfo{"iq1_m", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32, false};
    case TensorType::TQ1_0:
      return TensorTypeInfo{"tq1_0", QK_K, 2 + 4 * 13 + QK_K / 64, false};
    case TensorType::TQ2_0:
      return TensorTypeInfo{"tq2_0", QK_K, 2 + QK_K / 4, false};
    case TensorType::MXFP4:
      return TensorTypeInfo{"mxfp4", 32, 1 + 16, false};
  }
  return std::nullopt;
}

const char* tensor_type_name(TensorType t) {
  auto info = tensor_type_info(t);
  return info ? info->name : "unknown";
}

std::optional<size_t> tensor_row_bytes(TensorType t, int64_t n) {
  auto info = tensor_type_info(t);
  if (!info || n < 0 || n % info->block_size != 0) return std::nullopt;
  return static_cast<size_t>(n / info->block_size) * info->block_bytes;
}

}  // namespace llmt
