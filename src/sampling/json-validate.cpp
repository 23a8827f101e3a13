// JSON Schema validation for the keyword set of json_schema_to_gbnf (see grammar.h).
#include <cmath>
#include <cstring>

#include "llmthreads/grammar.h"
#include "sampling/json-schema-internal.h"

namespace llmt {

namespace json_schema_detail {

namespace {

using nlohmann::json;

constexpr int kMaxDepth = 256;

constexpr const char* kAnnotations[] = {"title",    "description", "$schema", "$id",
                                        "$comment", "examples",    "default", "deprecated",
                                        "readOnly", "writeOnly"};
constexpr const char* kSupported[] = {
    "type",     "properties",  "required",  "additionalProperties",
    "enum",     "const",       "items",     "minItems",
    "maxItems", "anyOf",       "oneOf",     "$ref",
    "$defs",    "definitions", "minLength", "maxLength",
    "format",   "uniqueItems"};

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool digits(const std::string& s, size_t at, size_t n) {
  if (at + n > s.size()) return false;
  for (size_t i = at; i < at + n; ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

int num(const std::string& s, size_t at, size_t n) {
  return std::stoi(s.substr(at, n));
}

// YYYY-MM-DD with the month's day count (February: 29, in every year, as the grammar allows).
bool is_date(const std::string& s, size_t at) {
  if (!digits(s, at, 4) || s[at + 4] != '-' || !digits(s, at + 5, 2) || s[at + 7] != '-' ||
      !digits(s, at + 8, 2))
    return false;
  static constexpr int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const int m = num(s, at + 5, 2), d = num(s, at + 8, 2);
  return m >= 1 && m <= 12 && d >= 1 && d <= kDays[m - 1];
}

// HH:MM:SS(.f{1,9})?(Z|[+-]HH:MM); returns the length matched or 0.
size_t time_length(const std::string& s, size_t at) {
  if (!digits(s, at, 2) || s.size() < at + 8 || s[at + 2] != ':' || !digits(s, at + 3, 2) ||
      s[at + 5] != ':' || !digits(s, at + 6, 2))
    return 0;
  if (num(s, at, 2) > 23 || num(s, at + 3, 2) > 59 || num(s, at + 6, 2) > 59) return 0;
  size_t p = at + 8;
  if (p < s.size() && s[p] == '.') {
    size_t q = p + 1;
    while (q < s.size() && s[q] >= '0' && s[q] <= '9') ++q;
    if (q == p + 1 || q - p - 1 > 9) return 0;
    p = q;
  }
  if (p < s.size() && s[p] == 'Z') return p + 1 - at;
  if (p < s.size() && (s[p] == '+' || s[p] == '-') && digits(s, p + 1, 2) && s.size() > p + 5 &&
      s[p + 3] == ':' && digits(s, p + 4, 2) && num(s, p + 1, 2) <= 23 && num(s, p + 4, 2) <= 59)
    return p + 6 - at;
  return 0;
}

bool is_uuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < 36; ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    const char c = s[i];
    if (dash ? c != '-' : !std::isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool type_matches(const json& inst, const std::string& t) {
  if (t == "string") return inst.is_string();
  if (t == "boolean") return inst.is_boolean();
  if (t == "null") return inst.is_null();
  if (t == "object") return inst.is_object();
  if (t == "array") return inst.is_array();
  if (t == "number") return inst.is_number();
  if (t == "integer") {
    if (inst.is_number_integer()) return true;
    if (!inst.is_number_float()) return false;
    const double v = inst.get<double>();
    return std::isfinite(v) && std::floor(v) == v;
  }
  return false;
}

Status fail(const std::string& path, const std::string& what) {
  return invalid_argument("json: " + (path.empty() ? std::string("/") : path) + ": " + what);
}

}  // namespace

bool is_annotation(std::string_view key) {
  for (const char* k : kAnnotations)
    if (key == k) return true;
  return false;
}

bool is_supported(std::string_view key) {
  if (is_annotation(key)) return true;
  for (const char* k : kSupported)
    if (key == k) return true;
  return false;
}

Status validate(const json& inst, const json& schema, const json& root, const std::string& path,
                int depth) {
  if (depth > kMaxDepth) return fail(path, "schema nesting (or $ref recursion) too deep");
  if (schema.is_boolean()) {
    if (schema.get<bool>()) return Status::ok();
    return fail(path, "schema 'false' matches nothing");
  }
  if (!schema.is_object())
    return invalid_argument("json schema: a schema must be an object at " + path);
  LLMT_RETURN_IF_ERROR(check_keywords(schema, path));
  if (auto it = schema.find("$ref"); it != schema.end()) {
    if (!it->is_string()) return invalid_argument("json schema: $ref must be a string");
    LLMT_ASSIGN_OR_RETURN(const json* target, resolve_ref(root, it->get<std::string>(), path));
    LLMT_RETURN_IF_ERROR(validate(inst, *target, root, path, depth + 1));
  }
  if (auto it = schema.find("type"); it != schema.end()) {
    bool ok = false;
    if (it->is_string()) {
      ok = type_matches(inst, it->get<std::string>());
    } else if (it->is_array()) {
      for (const auto& t : *it)
        ok = ok || (t.is_string() && type_matches(inst, t.get<std::string>()));
    }
    if (!ok)
      return fail(path,
                  "'type' " + it->dump() + " does not match " + std::string(inst.type_name()));
  }
  if (auto it = schema.find("enum"); it != schema.end()) {
    bool ok = false;
    if (it->is_array())
      for (const auto& v : *it) ok = ok || v == inst;
    if (!ok) return fail(path, "not one of 'enum' " + it->dump());
  }
  if (auto it = schema.find("const"); it != schema.end() && *it != inst)
    return fail(path, "not the 'const' " + it->dump());
  if (inst.is_string()) {
    const std::string& s = inst.get_ref<const std::string&>();
    const size_t len = utf8_length(s);
    if (auto it = schema.find("minLength");
        it != schema.end() && it->is_number() && static_cast<double>(len) < it->get<double>())
      return fail(path, "shorter than 'minLength' " + it->dump());
    if (auto it = schema.find("maxLength");
        it != schema.end() && it->is_number() && static_cast<double>(len) > it->get<double>())
      return fail(path, "longer than 'maxLength' " + it->dump());
    if (auto it = schema.find("format"); it != schema.end() && it->is_string()) {
      const std::string f = it->get<std::string>();
      bool ok = true;
      if (f == "date") {
        ok = s.size() == 10 && is_date(s, 0);
      } else if (f == "time") {
        ok = time_length(s, 0) == s.size() && !s.empty();
      } else if (f == "date-time") {
        ok = s.size() > 11 && is_date(s, 0) && s[10] == 'T' && time_length(s, 11) == s.size() - 11;
      } else if (f == "uuid") {
        ok = is_uuid(s);
      } else {
        return invalid_argument("json schema: unsupported format '" + f + "' at " + path);
      }
      if (!ok) return fail(path, "not a '" + f + "' string");
    }
  }
  if (inst.is_object()) {
    const json* props = nullptr;
    if (auto it = schema.find("properties"); it != schema.end() && it->is_object()) props = &*it;
    if (auto it = schema.find("required"); it != schema.end() && it->is_array()) {
      for (const auto& r : *it)
        if (r.is_string() && !inst.contains(r.get<std::string>()))
          return fail(path, "'required' property '" + r.get<std::string>() + "' is missing");
    }
    const auto add = schema.find("additionalProperties");
    for (const auto& [k, v] : inst.items()) {
      const std::string sub = path + "/" + k;
      if (props && props->contains(k)) {
        LLMT_RETURN_IF_ERROR(validate(v, (*props)[k], root, sub, depth + 1));
      } else if (add != schema.end()) {
        if (add->is_boolean() && !add->get<bool>())
          return fail(sub, "not allowed ('additionalProperties' false)");
        LLMT_RETURN_IF_ERROR(validate(v, *add, root, sub, depth + 1));
      }
    }
  }
  if (inst.is_array()) {
    const size_t n = inst.size();
    if (auto it = schema.find("minItems");
        it != schema.end() && it->is_number() && static_cast<double>(n) < it->get<double>())
      return fail(path, "fewer items than 'minItems' " + it->dump());
    if (auto it = schema.find("maxItems");
        it != schema.end() && it->is_number() && static_cast<double>(n) > it->get<double>())
      return fail(path, "more items than 'maxItems' " + it->dump());
    if (auto it = schema.find("items"); it != schema.end()) {
      for (size_t i = 0; i < n; ++i)
        LLMT_RETURN_IF_ERROR(
            validate(inst[i], *it, root, path + "/" + std::to_string(i), depth + 1));
    }
  }
  if (auto it = schema.find("anyOf"); it != schema.end() && it->is_array()) {
    bool ok = false;
    for (const auto& s : *it) ok = ok || validate(inst, s, root, path, depth + 1).is_ok();
    if (!ok) return fail(path, "matches no 'anyOf' branch");
  }
  if (auto it = schema.find("oneOf"); it != schema.end() && it->is_array()) {
    int n_ok = 0;
    for (const auto& s : *it) n_ok += validate(inst, s, root, path, depth + 1).is_ok() ? 1 : 0;
    if (n_ok != 1)
      return fail(path, "matches " + std::to_string(n_ok) + " 'oneOf' branches, not 1");
  }
  return Status::ok();
}

}  // namespace json_schema_detail

Status validate_json(std::string_view instance_json, std::string_view schema_json) {
  nlohmann::json schema, inst;
  try {
    schema = nlohmann::json::parse(schema_json);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(std::string("json schema: not JSON: ") + e.what());
  }
  try {
    inst = nlohmann::json::parse(instance_json);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(std::string("json: not JSON: ") + e.what());
  }
  return json_schema_detail::validate(inst, schema, schema, "");
}

}  // namespace llmt
