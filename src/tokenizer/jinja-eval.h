// The Jinja subset interpreter: renders a parsed Template with a context of variables.
//
// Thread-safety: an Interp is one render (single thread); several may run on one Template.
#pragma once

#include <ctime>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/jinja-ast.h"

namespace llmt::jinja {

class Interp {
 public:
  // `now` is what strftime_now formats (local time fields).
  Interp(const Template& tmpl, const std::tm& now);
  // Renders with `context` (a dict of variables). Throws Error.
  std::string render(const Value& context);

  // Used by builtins.
  Value call(const Value& fn, Args& args);
  void step();
  void check_size(size_t n) const;
  const std::tm& now() const { return now_; }
  Value apply_filter(const std::string& name, const Value& v, Args& args);
  // The two halves of apply_filter: nullopt when the name is not theirs.
  std::optional<Value> scalar_filter(const std::string& name, const Value& v, Args& args);
  std::optional<Value> sequence_filter(const std::string& name, const Value& v, Args& args);
  bool apply_test(const std::string& name, const Value& v, Args& args);

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  using Scope = std::unordered_map<std::string, Value>;

  Flow exec(const Body& body, std::string& out);
  Flow exec(const Stmt& s, std::string& out);
  Flow exec_for(const Stmt& s, std::string& out);
  Value eval(const Expr& e);
  Value eval_call(const Expr& e);
  void eval_args(const CallArgs& a, Args& out);
  Value lookup(const std::string& name) const;
  void assign(const Stmt& s, Value v);
  Value call_macro(const Stmt& m, Args& args);

  const Template& tmpl_;
  std::tm now_;
  std::vector<Scope> scopes_;
  uint64_t steps_ = 0;
  int depth_ = 0;
};

// Python operators and helpers shared by the interpreter and the builtins (jinja-builtins.cpp).
Value binary_op(const std::string& op, const Value& a, const Value& b, size_t max_bytes);
bool compare_op(const std::string& op, const Value& a, const Value& b);
bool contains(const Value& container, const Value& item);
Value get_attr(const Value& obj, const std::string& name);
Value get_item(const Value& obj, const Value& key);
Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
// Iteration as a for loop sees it (dict: keys, string: characters, undefined: nothing).
List iterate(const Value& v);
// Calls a method of a builtin type (str.strip, dict.items, ...); false when there is none.
bool call_method(Interp& in, const Value& obj, const std::string& name, Args& args, Value* out);
Value make_globals_range(Args& args);
[[noreturn]] void undefined_error(const Value& v);

}  // namespace llmt::jinja
