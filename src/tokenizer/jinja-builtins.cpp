// Operators, attribute/item access, methods of str/list/dict, filters and tests of the Jinja
// subset, with Python's semantics where chat templates depend on them.
#include <algorithm>
#include <charconv>
#include <cmath>

#include "tokenizer/jinja-eval.h"

namespace llmt::jinja {
namespace {

[[noreturn]] void type_error(const std::string& msg) {
  throw Error("TypeError: " + msg);
}

int64_t to_index(const Value& v, const char* what) {
  if (v.type() == Value::Type::kInt || v.type() == Value::Type::kBool) return v.as_int();
  type_error(std::string(what) + " indices must be integers, not " + v.type_name());
}

size_t cp_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string strip_chars(const std::string& s, const Value& chars, bool left, bool right) {
  std::vector<uint32_t> cps = to_cpts(s);
  std::vector<uint32_t> set;
  const bool ws = chars.is_none() || chars.is_undefined();
  if (!ws) {
    if (!chars.is_string()) type_error("strip arg must be None or str");
    set = to_cpts(chars.str());
  }
  auto strip_it = [&](uint32_t c) {
    return ws ? is_py_space(c) : std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_it(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_it(cps[e - 1])) --e;
  }
  return from_cpts(cps.data() + b, e - b);
}

std::string ascii_map(std::string s, int (*f)(int)) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x80) c = static_cast<char>(f(c));
  }
  return s;
}

std::string title_case(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    const bool alpha = std::isalpha(static_cast<unsigned char>(c)) != 0;
    if (alpha) c = static_cast<char>(prev_cased ? std::tolower(c) : std::toupper(c));
    prev_cased = alpha;
  }
  return out;
}

List split(const std::string& s, const Value& sep, int64_t maxsplit) {
  List out;
  if (sep.is_none() || sep.is_undefined()) {
    const std::vector<uint32_t> cps = to_cpts(s);
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && is_py_space(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = cps.size();
        while (e > i && is_py_space(cps[e - 1])) --e;
        out.push_back(Value(from_cpts(cps.data() + i, e - i)));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !is_py_space(cps[j])) ++j;
      out.push_back(Value(from_cpts(cps.data() + i, j - i)));
      i = j;
    }
    return out;
  }
  if (!sep.is_string()) type_error("must be str or None, not " + std::string(sep.type_name()));
  const std::string& d = sep.str();
  if (d.empty()) throw Error("ValueError: empty separator");
  size_t pos = 0;
  while (true) {
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) break;
    const size_t f = s.find(d, pos);
    if (f == std::string::npos) break;
    out.push_back(Value(s.substr(pos, f - pos)));
    pos = f + d.size();
  }
  out.push_back(Value(s.substr(pos)));
  return out;
}

// Python's ordering for sort/min/max and < > <= >=.
int py_cmp(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    const double x = a.as_float(), y = b.as_float();
    if (a.type() != Value::Type::kFloat && b.type() != Value::Type::kFloat) {
      return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
    }
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) return a.str() < b.str() ? -1 : a.str() > b.str() ? 1 : 0;
  if (a.is_list() && b.is_list()) {
    const size_t n = std::min(a.list().size(), b.list().size());
    for (size_t i = 0; i < n; ++i) {
      if (!equals(a.list()[i], b.list()[i])) return py_cmp(a.list()[i], b.list()[i]);
    }
    return a.list().size() < b.list().size() ? -1 : a.list().size() > b.list().size() ? 1 : 0;
  }
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  type_error(std::string("'<' not supported between instances of '") + a.type_name() + "' and '" +
             b.type_name() + "'");
}

std::string lower_str(const Value& v) {
  return ascii_map(to_str(v), [](int c) { return std::tolower(c); });
}

}  // namespace

List iterate(const Value& v) {
  switch (v.type()) {
    case Value::Type::kList:
      return v.list();
    case Value::Type::kDict: {
      List keys;
      for (const auto& kv : v.dict().items) keys.push_back(Value(kv.first));
      return keys;
    }
    case Value::Type::kString: {
      List chars;
      const std::vector<uint32_t> cps = to_cpts(v.str());
      for (uint32_t c : cps) chars.push_back(Value(from_cpts(&c, 1)));
      return chars;
    }
    case Value::Type::kUndefined:
      return {};
    default:
      type_error(std::string("'") + v.type_name() + "' object is not iterable");
  }
}

// Integer arithmetic within int64: Python's integers do not overflow, ours stop with an
// OverflowError (an error value of the render) where the exact result does not fit.
[[noreturn]] void overflow_error() {
  throw Error("OverflowError: integer result does not fit in 64 bits");
}
int64_t int_add(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) overflow_error();
  return r;
}
int64_t int_sub(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_sub_overflow(a, b, &r)) overflow_error();
  return r;
}
int64_t int_mul(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) overflow_error();
  return r;
}
// Python's floor division and modulo (the remainder has the divisor's sign); y != 0.
int64_t int_floordiv(int64_t x, int64_t y) {
  if (y == -1) return int_sub(0, x);
  int64_t q = x / y;
  if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
  return q;
}
int64_t int_mod(int64_t x, int64_t y) {
  if (y == -1) return 0;
  int64_t r = x % y;
  if (r != 0 && ((r < 0) != (y < 0))) r += y;
  return r;
}
// base ** e for e >= 0.
int64_t int_pow(int64_t base, int64_t e) {
  if (base == 0) return e == 0 ? 1 : 0;
  if (base == 1) return 1;
  if (base == -1) return e % 2 == 0 ? 1 : -1;
  int64_t r = 1;
  for (int64_t i = 0; i < e; ++i) r = int_mul(r, base);  // |base| >= 2: throws by i = 63
  return r;
}

Value binary_op(const std::string& op, const Value& a, const Value& b, size_t max_bytes) {
  if (op == "~") {
    std::string s = to_str(a) + to_str(b);
    if (s.size() > max_bytes) throw Error("string too large");
    return Value(std::move(s));
  }
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  const bool nums = a.is_number() && b.is_number();
  const bool floats = nums && (a.type() == Value::Type::kFloat || b.type() == Value::Type::kFloat);
  auto unsupported = [&]() -> Value {
    type_error("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" +
               b.type_name() + "'");
  };
  if (op == "+") {
    if (nums) {
      return floats ? Value(a.as_float() + b.as_float()) : Value(int_add(a.as_int(), b.as_int()));
    }
    if (a.is_string() && b.is_string()) {
      if (a.str().size() + b.str().size() > max_bytes) throw Error("string too large");
      return Value(a.str() + b.str());
    }
    if (a.is_string()) {
      type_error(std::string("can only concatenate str (not \"") + b.type_name() + "\") to str");
    }
    if (a.is_list() && b.is_list()) {
      if ((a.list().size() + b.list().size()) * sizeof(Value) > max_bytes)
        throw Error("list too large");
      List l = a.list();
      l.insert(l.end(), b.list().begin(), b.list().end());
      return Value(std::move(l));
    }
    return unsupported();
  }
  if (op == "*") {
    if (nums) {
      return floats ? Value(a.as_float() * b.as_float()) : Value(int_mul(a.as_int(), b.as_int()));
    }
    const Value* s = a.is_string() || a.is_list() ? &a : &b;
    const Value* n = s == &a ? &b : &a;
    if ((s->is_string() || s->is_list()) &&
        (n->type() == Value::Type::kInt || n->type() == Value::Type::kBool)) {
      const int64_t k = std::max<int64_t>(0, n->as_int());
      const size_t unit = s->is_string() ? s->str().size() : s->list().size() * sizeof(Value);
      if (unit != 0 && static_cast<uint64_t>(k) > max_bytes / unit)
        throw Error("sequence too large");
      if (unit == 0) return s->is_string() ? Value(std::string()) : Value(List());  // no k loop
      if (s->is_string()) {
        std::string out;
        for (int64_t i = 0; i < k; ++i) out += s->str();
        return Value(std::move(out));
      }
      List out;
      for (int64_t i = 0; i < k; ++i) out.insert(out.end(), s->list().begin(), s->list().end());
      return Value(std::move(out));
    }
    return unsupported();
  }
  if (!nums) return unsupported();
  if (op == "-")
    return floats ? Value(a.as_float() - b.as_float()) : Value(int_sub(a.as_int(), b.as_int()));
  if (op == "/") {
    if (b.as_float() == 0) throw Error("ZeroDivisionError: division by zero");
    return Value(a.as_float() / b.as_float());
  }
  if (op == "//" || op == "%") {
    if (b.as_float() == 0) throw Error("ZeroDivisionError: integer division or modulo by zero");
    if (floats) {
      const double q = std::floor(a.as_float() / b.as_float());
      return op == "//" ? Value(q) : Value(a.as_float() - q * b.as_float());
    }
    const int64_t x = a.as_int(), y = b.as_int();
    return op == "//" ? Value(int_floordiv(x, y)) : Value(int_mod(x, y));
  }
  if (op == "**") {
    if (!floats && b.as_int() >= 0) return Value(int_pow(a.as_int(), b.as_int()));
    return Value(std::pow(a.as_float(), b.as_float()));
  }
  return unsupported();
}

bool contains(const Value& c, const Value& item) {
  switch (c.type()) {
    case Value::Type::kString:
      if (!item.is_string()) {
        type_error(std::string("'in <string>' requires string as left operand, not ") +
                   item.type_name());
      }
      return c.str().find(item.str()) != std::string::npos;
    case Value::Type::kList:
      for (const Value& v : c.list()) {
        if (equals(v, item)) return true;
      }
      return false;
    case Value::Type::kDict:
    case Value::Type::kNamespace:
      return item.is_string() && c.dict().find(item.str()) != nullptr;
    case Value::Type::kUndefined:
      return false;
    default:
      type_error(std::string("argument of type '") + c.type_name() + "' is not iterable");
  }
}

bool compare_op(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return equals(a, b);
  if (op == "!=") return !equals(a, b);
  if (op == "in") return contains(b, a);
  if (op == "notin") return !contains(b, a);
  const int c = py_cmp(a, b);
  if (op == "<") return c < 0;
  if (op == ">") return c > 0;
  if (op == "<=") return c <= 0;
  return c >= 0;
}

Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) undefined_error(obj);
  if (obj.is_dict()) {
    if (const Value* v = obj.dict().find(name)) return *v;
  }
  return Value::undefined(name);
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) undefined_error(obj);
  if (obj.is_dict()) {
    if (key.is_string()) {
      if (const Value* v = obj.dict().find(key.str())) return *v;
    }
    return Value::undefined(key.is_string() ? key.str() : to_str(key));
  }
  if (obj.is_list() || obj.is_string()) {
    if (key.is_list()) type_error("indices must be integers or slices");
    if (!key.is_number() || key.type() == Value::Type::kFloat) return Value::undefined(to_str(key));
    int64_t i = key.as_int();
    if (obj.is_list()) {
      const int64_t n = static_cast<int64_t>(obj.list().size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined();
      return obj.list()[static_cast<size_t>(i)];
    }
    const std::vector<uint32_t> cps = to_cpts(obj.str());
    const int64_t n = static_cast<int64_t>(cps.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value::undefined();
    return Value(from_cpts(&cps[static_cast<size_t>(i)], 1));
  }
  return Value::undefined(to_str(key));
}

Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step_v) {
  if (obj.is_undefined()) undefined_error(obj);
  if (!obj.is_list() && !obj.is_string())
    type_error(std::string("'") + obj.type_name() + "' object is not subscriptable");
  std::vector<uint32_t> cps;
  int64_t n;
  if (obj.is_list()) {
    n = static_cast<int64_t>(obj.list().size());
  } else {
    cps = to_cpts(obj.str());
    n = static_cast<int64_t>(cps.size());
  }
  const int64_t step = step_v.is_none() ? 1 : to_index(step_v, "slice");
  if (step == 0) throw Error("ValueError: slice step cannot be zero");
  auto norm = [&](const Value& v, int64_t def, bool is_start) {
    if (v.is_none()) return def;
    int64_t i = to_index(v, "slice");
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    (void)is_start;
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  const int64_t b = norm(start, step > 0 ? 0 : n - 1, true);
  const int64_t e = norm(stop, step > 0 ? n : -1, false);
  List out;
  std::vector<uint32_t> out_cps;
  // A 128-bit index: b and e are within [-1, n], but b + step may pass int64 (a huge step).
  for (__int128 i = b; step > 0 ? i < e : i > e; i += step) {
    if (obj.is_list()) {
      out.push_back(obj.list()[static_cast<size_t>(i)]);
    } else {
      out_cps.push_back(cps[static_cast<size_t>(i)]);
    }
  }
  if (obj.is_list()) return Value(std::move(out));
  return Value(from_cpts(out_cps.data(), out_cps.size()));
}

Value make_globals_range(Args& a) {
  int64_t start = 0, stop = 0, step = 1;
  if (a.pos.size() == 1) {
    stop = to_index(a.pos[0], "range");
  } else if (a.pos.size() >= 2) {
    start = to_index(a.pos[0], "range");
    stop = to_index(a.pos[1], "range");
    if (a.pos.size() >= 3) step = to_index(a.pos[2], "range");
  } else {
    type_error("range expected at least 1 argument");
  }
  if (step == 0) throw Error("ValueError: range() arg 3 must not be zero");
  // In 128 bits: stop - start and the step's magnitude may pass int64.
  const __int128 span =
      step > 0 ? static_cast<__int128>(stop) - start : static_cast<__int128>(start) - stop;
  const __int128 mag = step > 0 ? static_cast<__int128>(step) : -static_cast<__int128>(step);
  const __int128 count128 = span > 0 ? (span + mag - 1) / mag : 0;
  if (count128 > 1'000'000) throw Error("OverflowError: range too big (over 1000000 items)");
  const auto count = static_cast<int64_t>(count128);  // start + i * step stays in [start, stop)
  List l;
  l.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) l.push_back(Value(start + i * step));
  return Value(std::move(l));
}

namespace {

// The str methods of call_method(): false when s has no method called name.
bool call_string_method(Interp& in, const std::string& s, const std::string& name, Args& a,
                        Value* out) {
  static const Value kNone = Value::none();
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    *out = Value(strip_chars(s, a.get(0, "chars", kNone), name != "rstrip", name != "lstrip"));
  } else if (name == "split") {
    const Value& mx = a.get(1, "maxsplit", Value(-1));
    *out = Value(split(s, a.get(0, "sep", kNone), mx.as_int()));
  } else if (name == "startswith" || name == "endswith") {
    const Value& p = a.get(0, "prefix", kNone);
    List cands = p.is_list() ? p.list() : List{p};
    bool r = false;
    for (const Value& c : cands) {
      if (!c.is_string()) type_error(name + " first arg must be str or a tuple of str");
      const std::string& t = c.str();
      r = r || (t.size() <= s.size() &&
                (name == "startswith" ? s.compare(0, t.size(), t) == 0
                                      : s.compare(s.size() - t.size(), t.size(), t) == 0));
    }
    *out = Value(r);
  } else if (name == "upper") {
    *out = Value(ascii_map(s, [](int c) { return std::toupper(c); }));
  } else if (name == "lower") {
    *out = Value(ascii_map(s, [](int c) { return std::tolower(c); }));
  } else if (name == "title") {
    *out = Value(title_case(s));
  } else if (name == "capitalize") {
    std::string r = ascii_map(s, [](int c) { return std::tolower(c); });
    if (!r.empty()) r[0] = static_cast<char>(std::toupper(r[0]));
    *out = Value(std::move(r));
  } else if (name == "replace") {
    const Value& from = a.get(0, "old", kNone);
    const Value& to = a.get(1, "new", kNone);
    if (!from.is_string() || !to.is_string()) type_error("replace() arguments must be str");
    int64_t count = a.get(2, "count", Value(-1)).as_int();
    std::string r;
    size_t pos = 0;
    if (from.str().empty()) {
      r = s;
    } else {
      while (count != 0) {
        const size_t f = s.find(from.str(), pos);
        if (f == std::string::npos) break;
        r.append(s, pos, f - pos);
        r += to.str();
        in.check_size(r.size());
        pos = f + from.str().size();
        --count;
      }
      r.append(s, pos, std::string::npos);
    }
    *out = Value(std::move(r));
  } else if (name == "find" || name == "count" || name == "index" || name == "rfind") {
    const Value& t = a.get(0, "sub", kNone);
    if (!t.is_string()) type_error("must be str, not " + std::string(t.type_name()));
    if (name == "count") {
      int64_t c = 0;
      if (!t.str().empty()) {
        for (size_t p = s.find(t.str()); p != std::string::npos;
             p = s.find(t.str(), p + t.str().size()))
          ++c;
      } else {
        c = static_cast<int64_t>(cp_length(s)) + 1;
      }
      *out = Value(c);
    } else {
      const size_t f = name == "rfind" ? s.rfind(t.str()) : s.find(t.str());
      if (f == std::string::npos && name == "index") throw Error("ValueError: substring not found");
      *out = Value(f == std::string::npos ? int64_t{-1}
                                          : static_cast<int64_t>(cp_length(s.substr(0, f))));
    }
  } else if (name == "join") {
    std::string r;
    bool first = true;
    for (const Value& v : iterate(a.get(0, "iterable", kNone))) {
      if (!v.is_string())
        type_error("sequence item: expected str instance, " + std::string(v.type_name()) +
                   " found");
      if (!first) r += s;
      first = false;
      r += v.str();
      in.check_size(r.size());
    }
    *out = Value(std::move(r));
  } else if (name == "splitlines") {
    List l;
    size_t pos = 0;
    while (pos < s.size()) {
      size_t f = s.find('\n', pos);
      if (f == std::string::npos) f = s.size();
      l.push_back(Value(s.substr(pos, f - pos)));
      pos = f + 1;
    }
    *out = Value(std::move(l));
  } else if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isalnum" ||
             name == "islower" || name == "isupper") {
    bool r = !s.empty();
    for (unsigned char c : s) {
      const bool ok = name == "isdigit"   ? std::isdigit(c) != 0
                      : name == "isalpha" ? std::isalpha(c) != 0
                      : name == "isspace" ? std::isspace(c) != 0
                      : name == "isalnum" ? std::isalnum(c) != 0
                      : name == "islower" ? !std::isupper(c)
                                          : !std::islower(c);
      r = r && ok;
    }
    *out = Value(r);
  } else {
    return false;
  }
  return true;
}

// The dict methods of call_method(): false when d has no method called name.
bool call_dict_method(const Dict& d, const std::string& name, Args& a, Value* out) {
  static const Value kNone = Value::none();
  if (name == "items") {
    List l;
    for (const auto& kv : d.items) l.push_back(Value::tuple(List{Value(kv.first), kv.second}));
    *out = Value(std::move(l));
  } else if (name == "keys") {
    List l;
    for (const auto& kv : d.items) l.push_back(Value(kv.first));
    *out = Value(std::move(l));
  } else if (name == "values") {
    List l;
    for (const auto& kv : d.items) l.push_back(kv.second);
    *out = Value(std::move(l));
  } else if (name == "get") {
    const Value& k = a.get(0, "key", kNone);
    const Value* v = k.is_string() ? d.find(k.str()) : nullptr;
    *out = v ? *v : a.get(1, "default", kNone);
  } else {
    return false;
  }
  return true;
}

// The list methods of call_method(): false when l has no method called name.
bool call_list_method(const List& l, const std::string& name, Args& a, Value* out) {
  static const Value kNone = Value::none();
  if (name == "index") {
    const Value& x = a.get(0, "value", kNone);
    for (size_t i = 0; i < l.size(); ++i) {
      if (equals(l[i], x)) {
        *out = Value(static_cast<int64_t>(i));
        return true;
      }
    }
    throw Error("ValueError: value is not in list");
  }
  if (name == "count") {
    int64_t c = 0;
    for (const Value& v : l) c += equals(v, a.get(0, "value", kNone));
    *out = Value(c);
    return true;
  }
  return false;
}

}  // namespace

bool call_method(Interp& in, const Value& obj, const std::string& name, Args& a, Value* out) {
  if (obj.is_string()) return call_string_method(in, obj.str(), name, a, out);
  if (obj.type() == Value::Type::kDict) return call_dict_method(obj.dict(), name, a, out);
  if (obj.is_list()) return call_list_method(obj.list(), name, a, out);
  return false;
}

namespace {

// The attribute path "a.b" of an item (selectattr/map/sort attribute=...).
Value attr_path(const Value& item, const std::string& path) {
  Value v = item;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t dot = path.find('.', pos);
    if (dot == std::string::npos) dot = path.size();
    const std::string part = path.substr(pos, dot - pos);
    if (v.is_undefined()) return v;
    if (!part.empty() && std::all_of(part.begin(), part.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c));
        })) {
      // An index past int64 names no item (std::stoll would throw).
      int64_t index = 0;
      const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), index);
      if (ec != std::errc() || end != part.data() + part.size()) return Value::undefined(part);
      v = get_item(v, Value(index));
    } else {
      v = get_attr(v, part);
    }
    pos = dot + 1;
  }
  return v;
}

}  // namespace

// Filters of strings and numbers (trim ... round); nullopt for other names.
std::optional<Value> Interp::scalar_filter(const std::string& name, const Value& v, Args& a) {
  static const Value kNone = Value::none();
  static const Value kUndef = Value::undefined();
  if (name == "trim") {
    return Value(strip_chars(to_str(v), a.get(0, "chars", kNone), true, true));
  }
  if (name == "length" || name == "count") {
    switch (v.type()) {
      case Value::Type::kString:
        return Value(static_cast<int64_t>(cp_length(v.str())));
      case Value::Type::kList:
        return Value(static_cast<int64_t>(v.list().size()));
      case Value::Type::kDict:
      case Value::Type::kNamespace:
        return Value(static_cast<int64_t>(v.dict().items.size()));
      case Value::Type::kUndefined:
        return Value(int64_t{0});
      default:
        type_error(std::string("object of type '") + v.type_name() + "' has no len()");
    }
  }
  if (name == "tojson") {
    const Value& ind = a.get(0, "indent", kNone);
    const int indent =
        ind.is_none() ? -1 : static_cast<int>(std::clamp<int64_t>(ind.as_int(), 0, 64));
    const std::string s = to_json(v, indent, a.get(1, "ensure_ascii", Value(false)).truthy(),
                                  a.get(3, "sort_keys", Value(false)).truthy());
    check_size(s.size());
    return Value(s);
  }
  if (name == "string") return Value(to_str(v));
  if (name == "safe") return v;
  if (name == "list" && v.is_list()) return Value(v.list());
  if (name == "list") return Value(iterate(v));
  if (name == "upper") return Value(ascii_map(to_str(v), [](int c) { return std::toupper(c); }));
  if (name == "lower") return Value(lower_str(v));
  if (name == "title") return Value(title_case(to_str(v)));
  if (name == "capitalize") {
    std::string r = lower_str(v);
    if (!r.empty()) r[0] = static_cast<char>(std::toupper(r[0]));
    return Value(std::move(r));
  }
  if (name == "default" || name == "d") {
    const bool boolean = a.get(1, "boolean", Value(false)).truthy();
    if (v.is_undefined() || (boolean && !v.truthy())) return a.get(0, "default_value", Value(""));
    return v;
  }
  if (name == "first" || name == "last") {
    List l = iterate(v);
    if (l.empty()) return Value::undefined();
    return name == "first" ? l.front() : l.back();
  }
  if (name == "join") {
    const Value& sep = a.get(0, "d", Value(""));
    const Value& attr = a.get(1, "attribute", kNone);
    std::string r;
    bool first = true;
    for (const Value& item : iterate(v)) {
      if (!first) r += to_str(sep);
      first = false;
      r += to_str(attr.is_none() ? item : attr_path(item, to_str(attr)));
      check_size(r.size());
    }
    return Value(std::move(r));
  }
  if (name == "replace") {
    Value out;
    Value s(to_str(v));
    call_method(*this, s, "replace", a, &out);
    return out;
  }
  if (name == "int") {
    if (v.type() == Value::Type::kFloat && !(std::fabs(v.as_float()) < 9223372036854775808.0)) {
      throw Error(std::isnan(v.as_float()) ? "ValueError: cannot convert float NaN to integer"
                                           : "OverflowError: float too large for int");
    }
    if (v.is_number()) return Value(v.as_int());
    if (v.is_string()) {
      try {
        size_t used = 0;
        const std::string t = strip_chars(v.str(), kNone, true, true);
        const int64_t i = std::stoll(t, &used);
        if (used == t.size()) return Value(i);
      } catch (...) {
      }
    }
    return a.get(0, "default", Value(int64_t{0}));
  }
  if (name == "float") {
    if (v.is_number()) return Value(v.as_float());
    if (v.is_string()) {
      try {
        size_t used = 0;
        const std::string t = strip_chars(v.str(), kNone, true, true);
        const double f = std::stod(t, &used);
        if (used == t.size()) return Value(f);
      } catch (...) {
      }
    }
    return a.get(0, "default", Value(0.0));
  }
  if (name == "abs") {
    if (!v.is_number())
      type_error(std::string("bad operand type for abs(): '") + v.type_name() + "'");
    if (v.type() == Value::Type::kFloat) return Value(std::fabs(v.as_float()));
    const int64_t i = v.as_int();
    return Value(i < 0 ? int_sub(0, i) : i);
  }
  if (name == "round") {
    const int64_t prec = a.get(0, "precision", Value(int64_t{0})).as_int();
    const double m = std::pow(10.0, static_cast<double>(prec));
    return Value(std::round(v.as_float() * m) / m);
  }
  return std::nullopt;
}

// Filters of lists and dicts (items ... select/reject); nullopt for other names.
std::optional<Value> Interp::sequence_filter(const std::string& name, const Value& v, Args& a) {
  static const Value kNone = Value::none();
  static const Value kUndef = Value::undefined();
  if (name == "items") {
    if (v.is_undefined()) return Value(List{});
    Value out;
    Args none;
    if (!v.is_dict() || !call_method(*this, v, "items", none, &out))
      type_error("items filter needs a mapping");
    return out;
  }
  if (name == "dictsort") {
    if (!v.is_dict()) type_error("dictsort needs a mapping");
    List l;
    for (const auto& kv : v.dict().items)
      l.push_back(Value::tuple(List{Value(kv.first), kv.second}));
    const bool by_value = to_str(a.get(1, "by", Value("key"))) == "value";
    const bool reverse = a.get(2, "reverse", Value(false)).truthy();
    std::stable_sort(l.begin(), l.end(), [&](const Value& x, const Value& y) {
      const int c = py_cmp(x.list()[by_value], y.list()[by_value]);
      return reverse ? c > 0 : c < 0;
    });
    return Value(std::move(l));
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::vector<uint32_t> c = to_cpts(v.str());
      std::reverse(c.begin(), c.end());
      return Value(from_cpts(c.data(), c.size()));
    }
    List l = iterate(v);
    std::reverse(l.begin(), l.end());
    return Value(std::move(l));
  }
  if (name == "sort") {
    List l = iterate(v);
    const bool reverse = a.get(0, "reverse", Value(false)).truthy();
    const Value& attr = a.get(2, "attribute", kNone);
    std::stable_sort(l.begin(), l.end(), [&](const Value& x, const Value& y) {
      const Value& xa = attr.is_none() ? x : attr_path(x, to_str(attr));
      const Value& ya = attr.is_none() ? y : attr_path(y, to_str(attr));
      const int c = py_cmp(xa, ya);
      return reverse ? c > 0 : c < 0;
    });
    return Value(std::move(l));
  }
  if (name == "unique") {
    List out;
    for (const Value& x : iterate(v)) {
      if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return equals(x, y); }))
        out.push_back(x);
    }
    return Value(std::move(out));
  }
  if (name == "min" || name == "max") {
    List l = iterate(v);
    if (l.empty()) return Value::undefined();
    Value best = l[0];
    for (const Value& x : l) {
      const int c = py_cmp(x, best);
      if (name == "min" ? c < 0 : c > 0) best = x;
    }
    return best;
  }
  if (name == "sum") {
    Value acc = a.get(1, "start", Value(int64_t{0}));
    const Value& attr = a.get(0, "attribute", kNone);
    for (const Value& x : iterate(v)) {
      acc = binary_op("+", acc, attr.is_none() ? x : attr_path(x, to_str(attr)), SIZE_MAX);
    }
    return acc;
  }
  if (name == "map") {
    List out;
    const Value& attr = a.get(99, "attribute", kUndef);
    if (!attr.is_undefined()) {
      const Value& def = a.get(99, "default", kUndef);
      for (const Value& x : iterate(v)) {
        Value r = attr_path(x, to_str(attr));
        out.push_back(r.is_undefined() && !def.is_undefined() ? def : r);
      }
      return Value(std::move(out));
    }
    if (a.pos.empty()) type_error("map needs a filter name or attribute=");
    const std::string filter = to_str(a.pos[0]);
    Args rest;
    rest.pos.assign(a.pos.begin() + 1, a.pos.end());
    rest.kw = a.kw;
    for (const Value& x : iterate(v)) {
      Args copy = rest;
      out.push_back(apply_filter(filter, x, copy));
    }
    return Value(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool want = name == "select" || name == "selectattr";
    size_t k = 0;
    std::string attr;
    if (by_attr) {
      if (a.pos.empty()) type_error(name + " needs an attribute name");
      attr = to_str(a.pos[k++]);
    }
    std::string test;
    if (k < a.pos.size()) test = to_str(a.pos[k++]);
    Args targs;
    targs.pos.assign(a.pos.begin() + static_cast<std::ptrdiff_t>(std::min(k, a.pos.size())),
                     a.pos.end());
    List out;
    for (const Value& x : iterate(v)) {
      const Value subject = by_attr ? attr_path(x, attr) : x;
      Args copy = targs;
      const bool r = test.empty() ? subject.truthy() : apply_test(test, subject, copy);
      if (r == want) out.push_back(x);
    }
    return Value(std::move(out));
  }
  return std::nullopt;
}

Value Interp::apply_filter(const std::string& name, const Value& v, Args& a) {
  static const Value kNone = Value::none();
  if (std::optional<Value> r = scalar_filter(name, v, a)) return std::move(*r);
  if (std::optional<Value> r = sequence_filter(name, v, a)) return std::move(*r);
  if (name == "indent") {
    const Value& w = a.get(0, "width", Value(int64_t{4}));
    const std::string pad =
        w.is_string()
            ? w.str()
            : std::string(static_cast<size_t>(std::clamp<int64_t>(w.as_int(), 0, 256)), ' ');
    const bool first = a.get(1, "first", Value(false)).truthy();
    const bool blank = a.get(2, "blank", Value(false)).truthy();
    const std::string s = to_str(v);
    std::string r;
    size_t pos = 0;
    bool is_first = true;
    while (true) {
      size_t nl = s.find('\n', pos);
      const std::string line =
          s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      if ((!is_first || first) && (blank || !line.empty())) r += pad;
      r += line;
      check_size(r.size());
      if (nl == std::string::npos) break;
      r += '\n';
      pos = nl + 1;
      is_first = false;
    }
    return Value(std::move(r));
  }
  if (name == "wordcount") return Value(static_cast<int64_t>(split(to_str(v), kNone, -1).size()));
  if (name == "e" || name == "escape" || name == "forceescape") {
    std::string r;
    for (char c : to_str(v)) {
      switch (c) {
        case '&':
          r += "&amp;";
          break;
        case '<':
          r += "&lt;";
          break;
        case '>':
          r += "&gt;";
          break;
        case '"':
          r += "&#34;";
          break;
        case '\'':
          r += "&#39;";
          break;
        default:
          r += c;
      }
    }
    return Value(std::move(r));
  }
  if (name == "attr") return get_attr(v, to_str(a.get(0, "name", kNone)));
  throw Error("TemplateAssertionError: no filter named '" + name + "'");
}

bool Interp::apply_test(const std::string& name, const Value& v, Args& a) {
  static const Value kNone = Value::none();
  using T = Value::Type;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "boolean") return v.type() == T::kBool;
  if (name == "true") return v.type() == T::kBool && v.as_bool();
  if (name == "false") return v.type() == T::kBool && !v.as_bool();
  if (name == "integer") return v.type() == T::kInt;
  if (name == "float") return v.type() == T::kFloat;
  if (name == "number") return v.is_number();
  if (name == "mapping") return v.is_dict();
  if (name == "sequence") return v.is_list() || v.is_string() || v.type() == T::kDict;
  if (name == "iterable") return v.is_list() || v.is_string() || v.is_dict() || v.is_undefined();
  if (name == "callable") return v.is_callable();
  if (name == "lower") return v.is_string() && lower_str(v) == v.str();
  if (name == "upper") {
    return v.is_string() && ascii_map(v.str(), [](int c) { return std::toupper(c); }) == v.str();
  }
  if (name == "even" || name == "odd" || name == "divisibleby") {
    if (v.type() != T::kInt && v.type() != T::kBool) type_error("test needs an integer");
    const int64_t d = name == "divisibleby" ? a.get(0, "num", Value(int64_t{1})).as_int() : 2;
    if (d == 0) throw Error("ZeroDivisionError: integer division or modulo by zero");
    const int64_t r = int_mod(v.as_int(), d);
    return name == "odd" ? r == 1 : r == 0;
  }
  const Value& other = a.get(0, "b", kNone);
  if (name == "eq" || name == "equalto" || name == "==") return equals(v, other);
  if (name == "ne" || name == "!=") return !equals(v, other);
  if (name == "lt" || name == "lessthan" || name == "<") return compare_op("<", v, other);
  if (name == "le" || name == "<=") return compare_op("<=", v, other);
  if (name == "gt" || name == "greaterthan" || name == ">") return compare_op(">", v, other);
  if (name == "ge" || name == ">=") return compare_op(">=", v, other);
  if (name == "in") return contains(other, v);
  if (name == "sameas") {
    return v.type() == other.type() && (v.is_none() || v.is_undefined() || equals(v, other));
  }
  throw Error("TemplateAssertionError: no test named '" + name + "'");
}

}  // namespace llmt::jinja
