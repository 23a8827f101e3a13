// Internal to src/sampling: the JSON Schema keyword set shared by the converter and the validator.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "llmthreads/status.h"

namespace llmt::json_schema_detail {

// Keywords with no effect on which instances are valid.
bool is_annotation(std::string_view key);
// Keywords the converter and the validator implement.
bool is_supported(std::string_view key);
// "unsupported keyword 'x' at /path" unless every key of `schema` is supported (and uniqueItems,
// if present, is false). J is nlohmann::json or nlohmann::ordered_json.
template <class J>
Status check_keywords(const J& schema, const std::string& path) {
  if (!schema.is_object()) return Status::ok();
  const std::string where = path.empty() ? "/" : path;
  for (const auto& [k, v] : schema.items()) {
    if (!is_supported(k))
      return invalid_argument("json schema: unsupported keyword '" + k + "' at " + where);
    if (k == "uniqueItems" && !(v.is_boolean() && !v.template get<bool>()))
      return invalid_argument("json schema: unsupported keyword 'uniqueItems' (true) at " + where);
  }
  return Status::ok();
}

// Resolves "#" and local JSON pointers ("#/$defs/x", "#/definitions/x") in the root document.
template <class J>
Result<const J*> resolve_ref(const J& root, const std::string& ref, const std::string& path) {
  if (ref == "#") return &root;
  if (ref.rfind("#/", 0) != 0)
    return invalid_argument("json schema: only local $ref ('#/...') is supported, got '" + ref +
                            "' at " + path);
  try {
    const typename J::json_pointer ptr(ref.substr(1));
    if (!root.contains(ptr))
      return invalid_argument("json schema: $ref '" + ref + "' at " + path + " points nowhere");
    return &root.at(ptr);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument("json schema: bad $ref '" + ref + "' at " + path + ": " + e.what());
  }
}

// Validates `inst` against `schema` (a subschema of `root`); errors name `path` in the instance.
Status validate(const nlohmann::json& inst, const nlohmann::json& schema,
                const nlohmann::json& root, const std::string& path, int depth = 0);

}  // namespace llmt::json_schema_detail
