// JSON Schema -> GBNF (see grammar.h for the supported subset). Every value rule matches the value
// alone; whitespace (bounded) lives between the tokens of objects and arrays.
#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "llmthreads/grammar.h"
#include "sampling/json-schema-internal.h"

namespace llmt {

namespace {

using json = nlohmann::ordered_json;
namespace jd = json_schema_detail;

constexpr int kMaxDepth = 128;

// The building blocks, emitted only when used. "jchar" is one character of a JSON string; a \u
// escape never names a surrogate (nlohmann and most parsers reject lone surrogates).
const std::map<std::string, std::string>& primitives() {
  static const std::map<std::string, std::string> kRules = {
      {"ws", R"(| " " | "\n" [ \t]{0,8})"},
      {"jhex", R"([0-9a-fA-F])"},
      {"jesc", R"(["\\/bfnrt] | "u" ([0-9a-cA-Ce-fE-F] jhex{3} | [dD] [0-7] jhex{2}))"},
      {"jchar", R"([^"\\\x00-\x1F] | "\\" jesc)"},
      {"jplain", R"([^"\\\x00-\x1F])"},
      {"string", R"("\"" jchar* "\"")"},
      {"integer", R"("-"? ("0" | [1-9] [0-9]{0,15}))"},
      {"number", R"("-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})?)"},
      {"boolean", R"("true" | "false")"},
      {"null", R"("null")"},
      {"value", R"(object | array | string | number | boolean | null)"},
      {"member", R"(string ws ":" ws value)"},
      {"object", R"("{" ws (member (ws "," ws member)* ws)? "}")"},
      {"array", R"("[" ws (value (ws "," ws value)* ws)? "]")"},
      {"jdigit2", R"([0-9] [0-9])"},
      {"jdate",
       R"([0-9]{4} "-" (("0" [13578] | "1" [02]) "-" ("0" [1-9] | [12] [0-9] | "3" [01]) | ("0" [469] | "11") "-" ("0" [1-9] | [12] [0-9] | "30") | "02-" ("0" [1-9] | [12] [0-9])))"},
      {"jtime",
       R"(([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,9})? ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9]))"},
      {"juuid", R"(jhex{8} "-" jhex{4} "-" jhex{4} "-" jhex{4} "-" jhex{12})"},
  };
  return kRules;
}

const std::map<std::string, std::vector<std::string>>& primitive_deps() {
  static const std::map<std::string, std::vector<std::string>> kDeps = {
      {"jesc", {"jhex"}},
      {"jchar", {"jesc"}},
      {"string", {"jchar"}},
      {"value", {"object", "array", "string", "number", "boolean", "null"}},
      {"member", {"string", "ws", "value"}},
      {"object", {"ws", "member"}},
      {"array", {"ws", "value"}},
      {"juuid", {"jhex"}},
  };
  return kDeps;
}

// A GBNF literal for raw bytes (UTF-8 passes through; quotes, backslashes, controls escaped).
std::string literal(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string class_char(uint32_t c) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "\\U%08X", c);
  return buf;
}

// Code points of a UTF-8 string (input is valid: it came from nlohmann).
std::vector<uint32_t> code_points(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < len && i + static_cast<size_t>(k) < s.size(); ++k)
      v = (v << 6) | (static_cast<unsigned char>(s[i + static_cast<size_t>(k)]) & 0x3F);
    out.push_back(v);
    i += static_cast<size_t>(len);
  }
  return out;
}

class Converter {
 public:
  explicit Converter(const json& root)
      : root_(root), root_plain_(nlohmann::json::parse(root.dump())) {}
  Result<std::string> run();

 private:
  // A GBNF expression matching the instances of `schema`.
  Result<std::string> visit(const json& schema, const std::string& path, const std::string& hint,
                            int depth);
  Result<std::string> visit_object(const json& schema, const std::string& path,
                                   const std::string& hint, int depth);
  Result<std::string> visit_array(const json& schema, const std::string& path,
                                  const std::string& hint, int depth);
  Result<std::string> visit_string(const json& schema, const std::string& path,
                                   const std::string& hint);
  Result<std::string> visit_type(const json& schema, const std::string& type,
                                 const std::string& path, const std::string& hint, int depth);
  // The keys that are not in `names` (plain characters only, so no escape spells a known key).
  std::string key_not_in(const std::vector<std::string>& names, const std::string& hint);
  std::string use(const std::string& primitive);
  std::string add_rule(const std::string& hint, const std::string& body);
  std::string fresh_name(const std::string& hint);

  const json& root_;
  const nlohmann::json root_plain_;                         // for the validator
  std::vector<std::pair<std::string, std::string>> rules_;  // in emission order
  std::set<std::string> names_;
  std::set<std::string> used_primitives_;
  std::map<std::string, std::string> ref_rules_;  // $ref -> rule name
};

std::string Converter::fresh_name(const std::string& hint) {
  std::string base;
  for (char c : hint) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    base += ok ? c : '-';
  }
  if (base.empty()) base = "r";
  base = "s-" + base;
  std::string name = base;
  for (int i = 2; names_.count(name) || primitives().count(name); ++i)
    name = base + "-" + std::to_string(i);
  names_.insert(name);
  return name;
}

std::string Converter::add_rule(const std::string& hint, const std::string& body) {
  const std::string name = fresh_name(hint);
  rules_.emplace_back(name, body);
  return name;
}

std::string Converter::use(const std::string& p) {
  if (used_primitives_.insert(p).second) {
    auto it = primitive_deps().find(p);
    if (it != primitive_deps().end())
      for (const std::string& d : it->second) use(d);
  }
  return p;
}

std::string Converter::key_not_in(const std::vector<std::string>& names, const std::string& hint) {
  // A trie of the names over code points; rule N(p) matches the tails t with p + t not a name.
  struct Node {
    std::map<uint32_t, int> kids;
    bool terminal = false;
  };
  std::vector<Node> trie(1);
  for (const std::string& n : names) {
    int at = 0;
    for (uint32_t c : code_points(n)) {
      auto it = trie[static_cast<size_t>(at)].kids.find(c);
      if (it == trie[static_cast<size_t>(at)].kids.end()) {
        trie.push_back({});
        const int id = static_cast<int>(trie.size() - 1);
        trie[static_cast<size_t>(at)].kids.emplace(c, id);
        at = id;
      } else {
        at = it->second;
      }
    }
    trie[static_cast<size_t>(at)].terminal = true;
  }
  use("jplain");
  std::vector<std::string> rule_of(trie.size());
  for (size_t i = 0; i < trie.size(); ++i) rule_of[i] = fresh_name(hint + "-key");
  for (size_t i = 0; i < trie.size(); ++i) {
    const Node& n = trie[i];
    std::vector<std::string> alts;
    if (!n.terminal) alts.push_back("\"\"");
    std::string other = "[^\"\\\\\\x00-\\x1F";
    for (const auto& [c, kid] : n.kids) other += class_char(c);
    other += "] jplain*";
    alts.push_back(other);
    for (const auto& [c, kid] : n.kids)
      alts.push_back("[" + class_char(c) + "] " + rule_of[static_cast<size_t>(kid)]);
    std::string body;
    for (size_t a = 0; a < alts.size(); ++a) body += (a ? " | " : "") + alts[a];
    rules_.emplace_back(rule_of[i], body);
  }
  return "\"\\\"\" " + rule_of[0] + " \"\\\"\"";
}

Result<std::string> Converter::visit_string(const json& schema, const std::string& path,
                                            const std::string& hint) {
  if (auto f = schema.find("format"); f != schema.end()) {
    if (!f->is_string()) return invalid_argument("json schema: format must be a string at " + path);
    const std::string fmt = f->get<std::string>();
    std::string body;
    if (fmt == "date") {
      body = use("jdate");
    } else if (fmt == "time") {
      body = use("jtime");
    } else if (fmt == "date-time") {
      body = use("jdate") + " \"T\" " + use("jtime");
    } else if (fmt == "uuid") {
      body = use("juuid");
    } else {
      return invalid_argument("json schema: unsupported format '" + fmt + "' at " + path +
                              " (supported: date, time, date-time, uuid)");
    }
    if (schema.contains("minLength") || schema.contains("maxLength"))
      return invalid_argument("json schema: minLength/maxLength with format at " + path +
                              " is unsupported");
    return "\"\\\"\" " + body + " \"\\\"\"";
  }
  int64_t lo = 0, hi = -1;
  for (const char* k : {"minLength", "maxLength"}) {
    auto it = schema.find(k);
    if (it == schema.end()) continue;
    if (!it->is_number_unsigned() || it->get<uint64_t>() > 10000)
      return invalid_argument(std::string("json schema: ") + k +
                              " must be an integer in [0, 10000] at " + path);
    (k[1] == 'i' ? lo : hi) = static_cast<int64_t>(it->get<uint64_t>());
  }
  if (lo == 0 && hi < 0) return use("string");
  if (hi >= 0 && hi < lo) return invalid_argument("json schema: maxLength < minLength at " + path);
  use("jchar");
  const std::string rep = hi < 0 ? "{" + std::to_string(lo) + ",}"
                                 : "{" + std::to_string(lo) + "," + std::to_string(hi) + "}";
  return "\"\\\"\" jchar" + rep + " \"\\\"\"";
}

Result<std::string> Converter::visit_array(const json& schema, const std::string& path,
                                           const std::string& hint, int depth) {
  std::string item = use("value");
  if (auto it = schema.find("items"); it != schema.end()) {
    if (it->is_array())
      return invalid_argument("json schema: tuple 'items' (an array) at " + path +
                              " is unsupported");
    LLMT_ASSIGN_OR_RETURN(item, visit(*it, path + "/items", hint + "-item", depth + 1));
  }
  int64_t lo = 0, hi = -1;
  for (const char* k : {"minItems", "maxItems"}) {
    auto it = schema.find(k);
    if (it == schema.end()) continue;
    if (!it->is_number_unsigned() || it->get<uint64_t>() > 10000)
      return invalid_argument(std::string("json schema: ") + k +
                              " must be an integer in [0, 10000] at " + path);
    (k[1] == 'i' ? lo : hi) = static_cast<int64_t>(it->get<uint64_t>());
  }
  if (hi >= 0 && hi < lo) return invalid_argument("json schema: maxItems < minItems at " + path);
  use("ws");
  const std::string item_rule = add_rule(hint + "-item", item);
  const std::string more = "(ws \",\" ws " + item_rule + ")";
  std::string list;
  if (hi == 0) {
    return std::string("\"[\" ws \"]\"");
  }
  const int64_t more_lo = std::max<int64_t>(lo - 1, 0);
  const std::string rep = hi < 0
                              ? "{" + std::to_string(more_lo) + ",}"
                              : "{" + std::to_string(more_lo) + "," + std::to_string(hi - 1) + "}";
  list = item_rule + " " + more + rep + " ws";
  if (lo == 0) list = "(" + list + ")?";
  return "\"[\" ws " + list + " \"]\"";
}

Result<std::string> Converter::visit_object(const json& schema, const std::string& path,
                                            const std::string& hint, int depth) {
  struct Prop {
    std::string name;
    std::string rule;  // "\"name\"" ws ":" ws value
    bool required = false;
  };
  std::vector<Prop> props;
  std::set<std::string> required;
  if (auto it = schema.find("required"); it != schema.end()) {
    if (!it->is_array())
      return invalid_argument("json schema: required must be an array at " + path);
    for (const auto& r : *it) {
      if (!r.is_string())
        return invalid_argument("json schema: required entries must be strings at " + path);
      required.insert(r.get<std::string>());
    }
  }
  use("ws");
  std::vector<std::string> names;
  auto add_prop = [&](const std::string& name, const json& sub) -> Status {
    LLMT_ASSIGN_OR_RETURN(std::string value,
                          visit(sub, path + "/properties/" + name, hint + "-" + name, depth + 1));
    const std::string key = literal(json(name).dump());
    props.push_back({name, add_rule(hint + "-" + name + "-kv", key + " ws \":\" ws " + value),
                     required.count(name) > 0});
    names.push_back(name);
    return Status::ok();
  };
  if (auto it = schema.find("properties"); it != schema.end()) {
    if (!it->is_object())
      return invalid_argument("json schema: properties must be an object at " + path);
    // Keep the schema's order (nlohmann sorts keys; ordered_json keeps them: see run()).
    for (const auto& [name, sub] : it->items()) LLMT_RETURN_IF_ERROR(add_prop(name, sub));
  }
  for (const std::string& r : required) {
    if (std::find(names.begin(), names.end(), r) == names.end())
      LLMT_RETURN_IF_ERROR(add_prop(r, json::object()));
  }
  // Extra members: absent/true = any value, a schema = that schema, false = none.
  std::string extra;
  if (auto it = schema.find("additionalProperties");
      it == schema.end() || !it->is_boolean() || it->get<bool>()) {
    std::string value = use("value");
    if (it != schema.end() && !it->is_boolean()) {
      LLMT_ASSIGN_OR_RETURN(value,
                            visit(*it, path + "/additionalProperties", hint + "-extra", depth + 1));
    }
    extra = add_rule(hint + "-extra-kv", key_not_in(names, hint) + " ws \":\" ws " + value);
  }
  // tail[i][first]: members i.. in order, `first` = nothing written yet (no comma before).
  const size_t k = props.size();
  std::vector<std::array<std::string, 2>> tail(k + 1);
  for (int f = 0; f < 2; ++f) {
    std::string body;
    if (extra.empty()) {
      body = "\"\"";
    } else if (f == 1) {
      body = "(" + extra + " (ws \",\" ws " + extra + ")*)?";
    } else {
      body = "(ws \",\" ws " + extra + ")*";
    }
    tail[k][static_cast<size_t>(f)] = add_rule(hint + "-tail", body);
  }
  for (size_t i = k; i-- > 0;) {
    for (int f = 0; f < 2; ++f) {
      const std::string sep = f == 1 ? "" : "ws \",\" ws ";
      std::string body = sep + props[i].rule + " " + tail[i + 1][0];
      if (!props[i].required) body += " | " + tail[i + 1][static_cast<size_t>(f)];
      tail[i][static_cast<size_t>(f)] = add_rule(hint + "-tail", body);
    }
  }
  return "\"{\" ws " + tail[0][1] + " ws \"}\"";
}

Result<std::string> Converter::visit_type(const json& schema, const std::string& type,
                                          const std::string& path, const std::string& hint,
                                          int depth) {
  if (type == "string") return visit_string(schema, path, hint);
  if (type == "integer") return use("integer");
  if (type == "number") return use("number");
  if (type == "boolean") return use("boolean");
  if (type == "null") return use("null");
  if (type == "object") return visit_object(schema, path, hint, depth);
  if (type == "array") return visit_array(schema, path, hint, depth);
  return invalid_argument("json schema: unknown type '" + type + "' at " + path);
}

Result<std::string> Converter::visit(const json& schema, const std::string& path,
                                     const std::string& hint, int depth) {
  if (depth > kMaxDepth) return invalid_argument("json schema: nested too deeply at " + path);
  if (schema.is_boolean()) {
    if (schema.get<bool>()) return use("value");
    return invalid_argument("json schema: schema 'false' at " + path + " matches nothing");
  }
  if (!schema.is_object())
    return invalid_argument("json schema: a schema must be an object at " + path);
  LLMT_RETURN_IF_ERROR(jd::check_keywords(schema, path));
  const auto ref = schema.find("$ref");
  const auto any = schema.find("anyOf");
  const auto one = schema.find("oneOf");
  const bool combinator = ref != schema.end() || any != schema.end() || one != schema.end();
  if (combinator) {
    // No sibling keyword may narrow a combinator: that would need an intersection.
    int n = 0;
    for (const auto& [k, v] : schema.items()) {
      if (jd::is_annotation(k) || k == "$defs" || k == "definitions") continue;
      if (k == "$ref" || k == "anyOf" || k == "oneOf") {
        ++n;
        continue;
      }
      return invalid_argument("json schema: keyword '" + k + "' beside $ref/anyOf/oneOf at " +
                              path + " is unsupported");
    }
    if (n > 1) return invalid_argument("json schema: more than one of $ref/anyOf/oneOf at " + path);
  }
  if (ref != schema.end()) {
    if (!ref->is_string()) return invalid_argument("json schema: $ref must be a string at " + path);
    const std::string r = ref->get<std::string>();
    auto known = ref_rules_.find(r);
    if (known != ref_rules_.end()) return known->second;
    LLMT_ASSIGN_OR_RETURN(const json* target, jd::resolve_ref(root_, r, path));
    // Name the rule before visiting, so recursive references resolve to it.
    const std::string name = fresh_name("ref" + r.substr(1));
    ref_rules_.emplace(r, name);
    const size_t slot = rules_.size();
    rules_.emplace_back(name, "");
    LLMT_ASSIGN_OR_RETURN(std::string body, visit(*target, r.substr(1), name, depth + 1));
    rules_[slot].second = body;
    return name;
  }
  if (any != schema.end() || one != schema.end()) {
    const json& list = any != schema.end() ? *any : *one;
    const char* kw = any != schema.end() ? "anyOf" : "oneOf";
    if (!list.is_array() || list.empty())
      return invalid_argument(std::string("json schema: ") + kw + " must be a non-empty array at " +
                              path);
    std::string body;
    for (size_t i = 0; i < list.size(); ++i) {
      LLMT_ASSIGN_OR_RETURN(std::string alt,
                            visit(list[i], path + "/" + kw + "/" + std::to_string(i),
                                  hint + "-" + std::to_string(i), depth + 1));
      body += (i ? " | " : "") + alt;
    }
    return add_rule(hint, body);
  }
  const auto en = schema.find("enum");
  const auto co = schema.find("const");
  if (en != schema.end() || co != schema.end()) {
    if (en != schema.end() && co != schema.end())
      return invalid_argument("json schema: enum with const at " + path + " is unsupported");
    json values = co != schema.end() ? json::array({*co}) : *en;
    if (!values.is_array() || values.empty())
      return invalid_argument("json schema: enum must be a non-empty array at " + path);
    // Only the values the rest of the schema admits (e.g. "type").
    nlohmann::json rest = nlohmann::json::parse(schema.dump());
    rest.erase("enum");
    rest.erase("const");
    std::string body;
    for (const auto& v : values) {
      if (!jd::validate(nlohmann::json::parse(v.dump()), rest, root_plain_, path).is_ok()) continue;
      body += (body.empty() ? "" : " | ") + literal(v.dump());
    }
    if (body.empty())
      return invalid_argument("json schema: no enum/const value at " + path + " fits the schema");
    return add_rule(hint, body);
  }
  const auto type = schema.find("type");
  if (type == schema.end()) {
    if (schema.contains("properties") || schema.contains("required") ||
        schema.contains("additionalProperties"))
      return visit_object(schema, path, hint, depth);
    if (schema.contains("items") || schema.contains("minItems") || schema.contains("maxItems"))
      return visit_array(schema, path, hint, depth);
    if (schema.contains("minLength") || schema.contains("maxLength") || schema.contains("format"))
      return visit_string(schema, path, hint);
    return use("value");
  }
  if (type->is_string()) return visit_type(schema, type->get<std::string>(), path, hint, depth);
  if (type->is_array() && !type->empty()) {
    std::string body;
    for (const auto& t : *type) {
      if (!t.is_string())
        return invalid_argument("json schema: type entries must be strings at " + path);
      LLMT_ASSIGN_OR_RETURN(std::string alt, visit_type(schema, t.get<std::string>(), path,
                                                        hint + "-" + t.get<std::string>(), depth));
      body += (body.empty() ? "" : " | ") + alt;
    }
    return add_rule(hint, body);
  }
  return invalid_argument("json schema: type must be a string or a non-empty array at " + path);
}

Result<std::string> Converter::run() {
  LLMT_ASSIGN_OR_RETURN(std::string top, visit(root_, "", "root", 0));
  std::string out = "root ::= " + top + "\n";
  for (const auto& [name, body] : rules_) out += name + " ::= " + body + "\n";
  for (const auto& [name, body] : primitives())
    if (used_primitives_.count(name)) out += name + " ::= " + body + "\n";
  return out;
}

}  // namespace

Result<std::string> json_schema_to_gbnf(std::string_view schema_json) {
  json schema;
  try {
    schema = json::parse(schema_json);
  } catch (const json::exception& e) {
    return invalid_argument(std::string("json schema: not JSON: ") + e.what());
  }
  return Converter(schema).run();
}

std::string json_value_gbnf(bool object_only) {
  std::string out = std::string("root ::= ") + (object_only ? "object" : "value") + "\n";
  for (const char* p : {"ws", "jhex", "jesc", "jchar", "string", "integer", "number", "boolean",
                        "null", "value", "member", "object", "array"})
    out += std::string(p) + " ::= " + primitives().at(p) + "\n";
  return out;
}

}  // namespace llmt
