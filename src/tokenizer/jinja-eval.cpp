#include "tokenizer/jinja-eval.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_set>

namespace llmt::jinja {

[[noreturn]] void undefined_error(const Value& v) {
  throw Error("UndefinedError: " + (v.str().empty() ? std::string("value") : "'" + v.str() + "'") +
              " is undefined");
}

namespace {

Value native(const char* name, NativeFn fn) {
  return Value::callable(name, std::move(fn));
}

}  // namespace

Interp::Interp(const Template& tmpl, const std::tm& now) : tmpl_(tmpl), now_(now) {
  Scope globals;
  globals["range"] = native("range", [](Interp&, Args& a) { return make_globals_range(a); });
  globals["namespace"] = native("namespace", [](Interp&, Args& a) {
    Dict d;
    for (const Value& p : a.pos) {
      if (!p.is_dict()) throw Error("TypeError: namespace() takes a mapping");
      for (const auto& kv : p.dict().items) d.set(kv.first, kv.second);
    }
    for (auto& kv : a.kw) d.set(kv.first, kv.second);
    return Value(std::move(d), /*is_namespace=*/true);
  });
  globals["dict"] = native("dict", [](Interp&, Args& a) {
    Dict d;
    for (const Value& p : a.pos) {
      if (!p.is_dict()) throw Error("TypeError: dict() takes a mapping");
      for (const auto& kv : p.dict().items) d.set(kv.first, kv.second);
    }
    for (auto& kv : a.kw) d.set(kv.first, kv.second);
    return Value(std::move(d));
  });
  globals["raise_exception"] = native("raise_exception", [](Interp&, Args& a) -> Value {
    throw Error("TemplateError: " + (a.pos.empty() ? std::string() : to_str(a.pos[0])));
  });
  globals["strftime_now"] = native("strftime_now", [](Interp& in, Args& a) {
    const std::string fmt = a.pos.empty() ? std::string() : to_str(a.pos[0]);
    if (fmt.size() > 256) throw Error("ValueError: strftime format too long");
    char buf[1024];
    const size_t n = fmt.empty() ? 0 : std::strftime(buf, sizeof(buf), fmt.c_str(), &in.now());
    return Value(std::string(buf, n));
  });
  scopes_.push_back(std::move(globals));
}

void Interp::step() {
  if (++steps_ > tmpl_.limits().max_steps) {
    throw Error("chat template ran too long (more than " +
                std::to_string(tmpl_.limits().max_steps) + " steps)");
  }
}

void Interp::check_size(size_t n) const {
  if (n > tmpl_.limits().max_output_bytes) {
    throw Error("chat template output too large (over " +
                std::to_string(tmpl_.limits().max_output_bytes) + " bytes)");
  }
}

std::string Interp::render(const Value& context) {
  if (context.is_dict()) {
    for (const auto& kv : context.dict().items) scopes_[0][kv.first] = kv.second;
  }
  std::string out;
  exec(tmpl_.body(), out);
  return out;
}

Interp::Flow Interp::exec(const Body& body, std::string& out) {
  for (const StmtPtr& s : body) {
    const Flow f = exec(*s, out);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Interp::Flow Interp::exec(const Stmt& s, std::string& out) {
  step();
  switch (s.kind) {
    case Stmt::Kind::kText:
      check_size(out.size() + s.text.size());
      out += s.text;
      return Flow::kNormal;
    case Stmt::Kind::kOutput: {
      const std::string text = to_str(eval(*s.expr));
      check_size(out.size() + text.size());
      out += text;
      return Flow::kNormal;
    }
    case Stmt::Kind::kIf:
      for (size_t i = 0; i < s.conds.size(); ++i) {
        if (eval(*s.conds[i]).truthy()) return exec(s.bodies[i], out);
      }
      return exec(s.else_body, out);
    case Stmt::Kind::kFor:
      return exec_for(s, out);
    case Stmt::Kind::kSet:
      assign(s, eval(*s.expr));
      return Flow::kNormal;
    case Stmt::Kind::kSetBlock: {
      std::string text;
      exec(s.body, text);
      assign(s, Value(std::move(text)));
      return Flow::kNormal;
    }
    case Stmt::Kind::kMacro: {
      const Stmt* m = &s;
      scopes_.back()[s.text] =
          Value::callable(s.text, [m](Interp& in, Args& a) { return in.call_macro(*m, a); });
      return Flow::kNormal;
    }
    case Stmt::Kind::kBreak:
      return Flow::kBreak;
    case Stmt::Kind::kContinue:
      return Flow::kContinue;
    case Stmt::Kind::kBlock:
      return exec(s.body, out);
  }
  return Flow::kNormal;
}

Interp::Flow Interp::exec_for(const Stmt& s, std::string& out) {
  const Value seq = eval(*s.expr);
  if (seq.is_none() || seq.is_number() || seq.is_callable()) {
    throw Error(std::string("TypeError: '") + seq.type_name() + "' object is not iterable");
  }
  List items = iterate(seq);
  if (s.cond) {
    List kept;
    for (Value& v : items) {
      step();
      scopes_.emplace_back();
      Scope& sc = scopes_.back();
      if (s.targets.size() == 1) {
        sc[s.targets[0]] = v;
      } else if (v.is_list() && v.list().size() == s.targets.size()) {
        for (size_t k = 0; k < s.targets.size(); ++k) sc[s.targets[k]] = v.list()[k];
      }
      const bool keep = eval(*s.cond).truthy();
      scopes_.pop_back();
      if (keep) kept.push_back(std::move(v));
    }
    items = std::move(kept);
  }
  if (items.empty()) return exec(s.else_body, out);
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    step();
    scopes_.emplace_back();
    Dict loop;
    loop.items.reserve(9);
    loop.set("index", Value(i + 1));
    loop.set("index0", Value(i));
    loop.set("revindex", Value(n - i));
    loop.set("revindex0", Value(n - i - 1));
    loop.set("first", Value(i == 0));
    loop.set("last", Value(i == n - 1));
    loop.set("length", Value(n));
    loop.set("previtem", i > 0 ? items[i - 1] : Value::undefined("previtem"));
    loop.set("nextitem", i + 1 < n ? items[i + 1] : Value::undefined("nextitem"));
    const Value& v = items[i];
    {
      Scope& sc = scopes_.back();
      sc["loop"] = Value(std::move(loop));
      if (s.targets.size() == 1) {
        sc[s.targets[0]] = v;
      } else {
        if (!v.is_list() || v.list().size() != s.targets.size()) {
          scopes_.pop_back();
          throw Error("ValueError: cannot unpack " + std::string(v.type_name()) + " into " +
                      std::to_string(s.targets.size()) + " loop variables");
        }
        for (size_t k = 0; k < s.targets.size(); ++k) sc[s.targets[k]] = v.list()[k];
      }
    }
    Flow f;
    try {
      f = exec(s.body, out);
    } catch (...) {
      scopes_.pop_back();
      throw;
    }
    scopes_.pop_back();
    if (f == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

namespace {

// Whether `v` holds the dict `target` (itself, or inside its lists, dicts and namespaces, at any
// depth). Iterative, and each shared container is visited once, so deep or heavily shared values
// cost their number of containers.
bool holds_dict(const Value& v, const Dict* target) {
  std::vector<const Value*> todo = {&v};
  std::unordered_set<const void*> seen;
  while (!todo.empty()) {
    const Value* cur = todo.back();
    todo.pop_back();
    if (cur->is_dict()) {
      if (&cur->dict() == target) return true;
      if (!seen.insert(&cur->dict()).second) continue;
      for (const auto& kv : cur->dict().items) todo.push_back(&kv.second);
    } else if (cur->is_list()) {
      if (!seen.insert(&cur->list()).second) continue;
      for (const Value& x : cur->list()) todo.push_back(&x);
    }
  }
  return false;
}

}  // namespace

void Interp::assign(const Stmt& s, Value v) {
  if (!s.attr.empty()) {
    Value ns = lookup(s.targets[0]);
    if (ns.type() != Value::Type::kNamespace) {
      throw Error("TemplateRuntimeError: cannot assign attribute on non-namespace object");
    }
    // Values share their containers, so this would make a cycle: it would never be freed (and
    // printing it would never end). python3-jinja2 allows it; no chat template needs it.
    if (holds_dict(v, &ns.dict())) {
      throw Error("TemplateRuntimeError: a namespace cannot contain itself (" + s.targets[0] + "." +
                  s.attr + ")");
    }
    ns.dict().set(s.attr, std::move(v));
    return;
  }
  if (s.targets.size() == 1) {
    scopes_.back()[s.targets[0]] = std::move(v);
    return;
  }
  if (!v.is_list() || v.list().size() != s.targets.size()) {
    throw Error("ValueError: cannot unpack into " + std::to_string(s.targets.size()) + " names");
  }
  for (size_t k = 0; k < s.targets.size(); ++k) scopes_.back()[s.targets[k]] = v.list()[k];
}

Value Interp::lookup(const std::string& name) const {
  for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
    auto f = it->find(name);
    if (f != it->end()) return f->second;
  }
  return Value::undefined(name);
}

Value Interp::call_macro(const Stmt& m, Args& args) {
  if (++depth_ > tmpl_.limits().max_depth) {
    --depth_;
    throw Error("chat template recursion too deep (over " +
                std::to_string(tmpl_.limits().max_depth) + " macro calls)");
  }
  // A macro sees the template's top-level names and its own arguments.
  std::vector<Scope> saved;
  saved.swap(scopes_);
  scopes_.push_back(std::move(saved[0]));
  scopes_.emplace_back();
  auto restore = [&]() {
    saved[0] = std::move(scopes_[0]);
    scopes_.swap(saved);
    --depth_;
  };
  std::string out;
  try {
    if (args.pos.size() > m.targets.size()) {
      throw Error("TypeError: macro '" + m.text + "' takes not more than " +
                  std::to_string(m.targets.size()) + " arguments");
    }
    for (size_t k = 0; k < m.targets.size(); ++k) {
      Value v = Value::undefined(m.targets[k]);
      bool found = false;
      if (k < args.pos.size()) {
        v = args.pos[k];
        found = true;
      }
      for (auto& kv : args.kw) {
        if (kv.first == m.targets[k]) {
          v = kv.second;
          found = true;
        }
      }
      if (!found && m.defaults[k]) v = eval(*m.defaults[k]);
      scopes_.back()[m.targets[k]] = std::move(v);
    }
    exec(m.body, out);
  } catch (...) {
    restore();
    throw;
  }
  restore();
  return Value(std::move(out));
}

Value Interp::call(const Value& fn, Args& args) {
  if (!fn.is_callable()) {
    if (fn.is_undefined()) undefined_error(fn);
    throw Error(std::string("TypeError: '") + fn.type_name() + "' object is not callable");
  }
  step();
  return fn.fn()(*this, args);
}

void Interp::eval_args(const CallArgs& a, Args& out) {
  for (const ExprPtr& e : a.pos) out.pos.push_back(eval(*e));
  for (const auto& kv : a.kw) out.kw.emplace_back(kv.first, eval(*kv.second));
}

Value Interp::eval_call(const Expr& e) {
  Args args;
  if (e.a->kind == Expr::Kind::kAttr) {
    const Value obj = eval(*e.a->a);
    if (obj.is_undefined()) undefined_error(obj);
    eval_args(e.args, args);
    const std::string& name = e.a->name;
    if (obj.is_dict()) {
      if (const Value* member = obj.dict().find(name); member && member->is_callable()) {
        return call(*member, args);
      }
    }
    Value out;
    step();
    if (call_method(*this, obj, name, args, &out)) return out;
    throw Error("UndefinedError: '" +
                (obj.is_none() ? std::string("None") : std::string(obj.type_name()) + " object") +
                "' has no attribute '" + name + "'");
  }
  const Value fn = eval(*e.a);
  eval_args(e.args, args);
  return call(fn, args);
}

Value Interp::eval(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.value;
    case Expr::Kind::kName:
      return lookup(e.name);
    case Expr::Kind::kList: {
      List l;
      l.reserve(e.items.size());
      for (const ExprPtr& x : e.items) l.push_back(eval(*x));
      return e.value.truthy() ? Value::tuple(std::move(l)) : Value(std::move(l));
    }
    case Expr::Kind::kDict: {
      Dict d;
      for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
        const Value k = eval(*e.items[i]);
        d.set(k.is_string() ? k.str() : to_str(k), eval(*e.items[i + 1]));
      }
      return Value(std::move(d));
    }
    case Expr::Kind::kUnary: {
      const Value a = eval(*e.a);
      if (e.name == "not") return Value(!a.truthy());
      if (a.is_undefined()) undefined_error(a);
      if (!a.is_number()) {
        throw Error("TypeError: bad operand type for unary " + e.name + ": '" + a.type_name() +
                    "'");
      }
      if (e.name == "+") return a.type() == Value::Type::kBool ? Value(a.as_int()) : a;
      if (a.type() == Value::Type::kFloat) return Value(-a.as_float());
      if (a.as_int() == std::numeric_limits<int64_t>::min()) {
        throw Error("OverflowError: integer result does not fit in 64 bits");
      }
      return Value(-a.as_int());
    }
    case Expr::Kind::kBinary: {
      if (e.name == "and") {
        Value a = eval(*e.a);
        return a.truthy() ? eval(*e.b) : a;
      }
      if (e.name == "or") {
        Value a = eval(*e.a);
        return a.truthy() ? a : eval(*e.b);
      }
      const Value a = eval(*e.a);
      const Value b = eval(*e.b);
      return binary_op(e.name, a, b, tmpl_.limits().max_output_bytes);
    }
    case Expr::Kind::kCompare: {
      Value left = eval(*e.a);
      for (size_t i = 0; i < e.ops.size(); ++i) {
        Value right = eval(*e.items[i]);
        if (!compare_op(e.ops[i], left, right)) return Value(false);
        left = std::move(right);
      }
      return Value(true);
    }
    case Expr::Kind::kCond:
      if (eval(*e.b).truthy()) return eval(*e.a);
      return e.c ? eval(*e.c) : Value::undefined();
    case Expr::Kind::kAttr:
      return get_attr(eval(*e.a), e.name);
    case Expr::Kind::kItem:
      return get_item(eval(*e.a), eval(*e.b));
    case Expr::Kind::kSlice: {
      const Value obj = eval(*e.a);
      const Value start = e.b ? eval(*e.b) : Value::none();
      const Value stop = e.c ? eval(*e.c) : Value::none();
      const Value st = e.d ? eval(*e.d) : Value::none();
      return slice(obj, start, stop, st);
    }
    case Expr::Kind::kCall:
      return eval_call(e);
    case Expr::Kind::kFilter: {
      const Value v = eval(*e.a);
      Args args;
      eval_args(e.args, args);
      step();
      return apply_filter(e.name, v, args);
    }
    case Expr::Kind::kTest: {
      const Value v = eval(*e.a);
      Args args;
      eval_args(e.args, args);
      const bool r = apply_test(e.name, v, args);
      return Value(e.negated ? !r : r);
    }
  }
  return Value::undefined();
}

}  // namespace llmt::jinja
