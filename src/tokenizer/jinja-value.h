// Values of the Jinja subset interpreter (see include/llmthreads/chat-template.h): Python's
// semantics as python3-jinja2 gives them to chat templates (None vs undefined, str of values,
// truthiness, ordered dicts), JSON in and out.
//
// Thread-safety: Values share list/dict storage through shared_ptr; one render at a time owns
// the values it creates. Nothing here is global.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmt::jinja {

// A render-time error (raise_exception, type errors, undefined access, limits). Caught at the
// render boundary and turned into a Status; never escapes the library.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Value;
using List = std::vector<Value>;
struct Dict {
  std::vector<std::pair<std::string, Value>> items;  // insertion order, unique keys
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  void set(std::string key, Value v);
};
struct Args;
class Interp;
using NativeFn = std::function<Value(Interp&, Args&)>;

class Value {
 public:
  enum class Type : uint8_t {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kCallable
  };

  Value() = default;
  static Value none() { return Value(Type::kNone); }
  static Value undefined(std::string name = {}) {
    Value v(Type::kUndefined);
    v.str_ = std::move(name);
    return v;
  }
  Value(bool b) : type_(Type::kBool), i_(b) {}
  Value(int64_t i) : type_(Type::kInt), i_(i) {}
  Value(int i) : type_(Type::kInt), i_(i) {}
  Value(double f) : type_(Type::kFloat), f_(f) {}
  Value(std::string s) : type_(Type::kString), str_(std::move(s)) {}
  Value(const char* s) : type_(Type::kString), str_(s) {}
  Value(List l) : type_(Type::kList), list_(std::make_shared<List>(std::move(l))) {}
  Value(Dict d, bool is_namespace = false)
      : type_(is_namespace ? Type::kNamespace : Type::kDict),
        dict_(std::make_shared<Dict>(std::move(d))) {}
  // A tuple: a list that prints as (a, b).
  static Value tuple(List l) {
    Value v(std::move(l));
    v.is_tuple_ = true;
    return v;
  }
  bool is_tuple() const { return is_tuple_; }
  static Value callable(std::string name, NativeFn fn) {
    Value v(Type::kCallable);
    v.str_ = std::move(name);
    v.fn_ = std::make_shared<NativeFn>(std::move(fn));
    return v;
  }

  Type type() const { return type_; }
  bool is_undefined() const { return type_ == Type::kUndefined; }
  bool is_none() const { return type_ == Type::kNone; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_number() const {
    return type_ == Type::kInt || type_ == Type::kFloat || type_ == Type::kBool;
  }
  bool is_list() const { return type_ == Type::kList; }
  bool is_dict() const { return type_ == Type::kDict || type_ == Type::kNamespace; }
  bool is_callable() const { return type_ == Type::kCallable; }

  bool as_bool() const { return i_ != 0; }
  // A float is truncated toward zero and clamped to the int64 range (NaN gives 0): never UB.
  int64_t as_int() const { return type_ == Type::kFloat ? float_to_int(f_) : i_; }
  static int64_t float_to_int(double f) {
    constexpr double kTwo63 = 9223372036854775808.0;
    if (f != f) return 0;
    if (f >= kTwo63) return std::numeric_limits<int64_t>::max();
    if (f <= -kTwo63) return std::numeric_limits<int64_t>::min();
    return static_cast<int64_t>(f);
  }
  double as_float() const { return type_ == Type::kFloat ? f_ : static_cast<double>(i_); }
  const std::string& str() const { return str_; }  // kString; the name of an undefined/callable
  const List& list() const { return *list_; }
  List& list() { return *list_; }
  const Dict& dict() const { return *dict_; }
  Dict& dict() { return *dict_; }
  const NativeFn& fn() const { return *fn_; }

  bool truthy() const;
  // Python's type name ("str", "NoneType", "dict", ...), for error messages.
  const char* type_name() const;

 private:
  explicit Value(Type t) : type_(t) {}
  Type type_ = Type::kUndefined;
  bool is_tuple_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::string str_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<NativeFn> fn_;
};

// Call arguments: positional, then keyword.
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // The i-th positional or the keyword `name`; `def` when absent.
  Value get(size_t i, std::string_view name, const Value& def) const;
};

// str(v) as Python prints it ({{ v }}): undefined -> "", None -> "None", True, 1.5, repr of
// lists and dicts.
std::string to_str(const Value& v);
// repr(v) (strings quoted).
std::string to_repr(const Value& v);
// json.dumps(v, ensure_ascii=..., indent=..., sort_keys=...); indent < 0: none. Undefined and
// callables are not serializable (Error).
std::string to_json(const Value& v, int indent, bool ensure_ascii, bool sort_keys);
Value from_json(const nlohmann::ordered_json& j);
// Python ==.
bool equals(const Value& a, const Value& b);

// UTF-8 helpers: code points of a string and back (strings are indexed by code point).
std::vector<uint32_t> to_cpts(std::string_view s);
std::string from_cpts(const uint32_t* p, size_t n);
bool is_py_space(uint32_t c);

}  // namespace llmt::jinja
