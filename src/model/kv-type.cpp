// The names of KvType (include/llmthreads/model.h): one table for name and parse.
#include <string>

#include "core/name-table.h"
#include "llmthreads/model.h"

namespace llmt {

namespace {

constexpr NameTable<KvType> kKvTypeNames[] = {{KvType::kF32, "f32"}, {KvType::kF16, "f16"}};

}  // namespace

const char* kv_type_name(KvType t) {
  return name_of(kKvTypeNames, t);
}
Result<KvType> parse_kv_type(const std::string& name) {
  return parse_of(kKvTypeNames, name, "KV type");
}

}  // namespace llmt
