// The parsed form of a Jinja template (jinja-parse.cpp builds it, jinja-eval.cpp runs it).
//
// Thread-safety: immutable after parse(); one tree may be rendered by many threads at once.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llmthreads/status.h"
#include "tokenizer/jinja-value.h"

namespace llmt::jinja {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct CallArgs {
  std::vector<ExprPtr> pos;
  std::vector<std::pair<std::string, ExprPtr>> kw;
};

struct Expr {
  enum class Kind {
    kLiteral,  // value
    kName,     // name
    kList,     // items (value.truthy(): a tuple)
    kDict,     // keys/items pairs: items[2k] key, items[2k+1] value
    kUnary,    // op ("-", "+", "not"), a
    kBinary,   // op, a, b ("+", "-", "*", "/", "//", "%", "**", "~", "and", "or")
    kCompare,  // a, then ops/items chain: a op0 items[0] op1 items[1] ...
    kCond,     // a if b else c (c may be null)
    kAttr,     // a.name
    kItem,     // a[b]
    kSlice,    // a[b:c:d] (any may be null)
    kCall,     // a(args)
    kFilter,   // a | name(args)
    kTest,     // a is [not] name(args)
  };
  Kind kind;
  int line = 0;
  Value value;
  std::string name;  // names, attributes, operators, filters, tests
  ExprPtr a, b, c, d;
  std::vector<ExprPtr> items;
  std::vector<std::string> ops;  // kCompare
  CallArgs args;
  bool negated = false;  // kTest
};

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // expr
    kIf,        // conds[i] -> bodies[i]; else_body
    kFor,       // targets in expr [if cond]; body; else_body
    kSet,       // targets (or ns.attr: target_ns + attr) = expr
    kSetBlock,  // targets[0] = rendered body
    kMacro,     // name(params = defaults) body
    kBreak,
    kContinue,
    kBlock,  // body (generation, and other pass-through blocks)
  };
  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr, cond;
  std::vector<ExprPtr> conds;
  std::vector<Body> bodies;
  Body body, else_body;
  std::vector<std::string> targets;
  std::string attr;               // kSet on a namespace attribute: targets[0].attr
  std::vector<ExprPtr> defaults;  // kMacro: per target (null = required)
};

struct Limits {
  size_t max_output_bytes = 8u << 20;
  uint64_t max_steps = 20'000'000;  // statements run + loop iterations + calls
  int max_depth = 200;              // nesting of expressions / statements / macro calls
};

class Template {
 public:
  // Syntax errors -> kInvalidArgument "template syntax error (line N): ...".
  static Result<std::shared_ptr<const Template>> parse(std::string_view source,
                                                       const Limits& limits);
  const Body& body() const { return body_; }
  const Limits& limits() const { return limits_; }

 private:
  Body body_;
  Limits limits_;
};

}  // namespace llmt::jinja
