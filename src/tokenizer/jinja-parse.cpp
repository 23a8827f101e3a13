// Lexer and parser of the Jinja subset: python3-jinja2's syntax with the settings transformers
// uses (trim_blocks, lstrip_blocks, one trailing newline dropped, "\r\n" read as "\n").
#include <cstring>

#include "tokenizer/jinja-ast.h"

namespace llmt::jinja {
namespace {

struct Tok {
  enum Type {
    kText,
    kVarBegin,
    kVarEnd,
    kBlockBegin,
    kBlockEnd,
    kName,
    kString,
    kInt,
    kFloat,
    kOp,
    kEof
  };
  Type type;
  std::string s;
  int64_t i = 0;
  double f = 0;
  int line = 0;
};

struct SyntaxError {
  int line;
  std::string message;
};

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

void append_cp(uint32_t cp, std::string& out) {
  out += from_cpts(&cp, 1);
}

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {}

  std::vector<Tok> run() {
    size_t pos = 0;
    bool line_starting = true;
    const size_t n = src_.size();
    while (pos < n) {
      size_t tag = pos;
      while (true) {
        tag = src_.find('{', tag);
        if (tag == std::string::npos || tag + 1 >= n) {
          tag = std::string::npos;
          break;
        }
        const char k = src_[tag + 1];
        if (k == '{' || k == '%' || k == '#') break;
        ++tag;
      }
      std::string text = src_.substr(pos, tag == std::string::npos ? std::string::npos : tag - pos);
      if (tag == std::string::npos) {
        emit_text(std::move(text), pos);
        break;
      }
      const char kind = src_[tag + 1];
      size_t p = tag + 2;
      const char lsign = p < n && (src_[p] == '-' || src_[p] == '+') ? src_[p] : 0;
      if (lsign) ++p;
      if (lsign == '-') {
        size_t e = text.size();
        while (e > 0 && is_ws(text[e - 1])) --e;
        text.resize(e);
      } else if (lsign != '+' && kind != '{') {
        // lstrip_blocks: spaces/tabs between the line start and a block or comment tag go.
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if (l_pos > 0 || line_starting) {
          if (text.find_first_not_of(" \t", l_pos) == std::string::npos) text.resize(l_pos);
        }
      }
      emit_text(std::move(text), pos);
      line_ = line_at(tag);
      char rsign = 0;
      if (kind == '#') {
        const size_t end = src_.find("#}", p);
        if (end == std::string::npos) throw SyntaxError{line_, "unterminated comment"};
        if (end > p && (src_[end - 1] == '-' || src_[end - 1] == '+')) rsign = src_[end - 1];
        p = end + 2;
      } else {
        toks_.push_back(Tok{kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin, "", 0, 0, line_});
        const char* close = kind == '{' ? "}}" : "%}";
        p = lex_tag(p, close, &rsign);
        toks_.push_back(Tok{kind == '{' ? Tok::kVarEnd : Tok::kBlockEnd, "", 0, 0, line_});
        if (kind == '%') p = maybe_raw(p, &rsign);
      }
      const size_t end_start = p;
      if (rsign == '-') {
        while (p < n && is_ws(src_[p])) ++p;
      } else if (rsign != '+' && kind != '{' && p < n && src_[p] == '\n') {
        ++p;  // trim_blocks
      }
      line_starting = p > end_start ? src_[p - 1] == '\n' : false;
      pos = p;
    }
    toks_.push_back(Tok{Tok::kEof, "", 0, 0, line_});
    return std::move(toks_);
  }

 private:
  int line_at(size_t pos) {
    while (line_pos_ < pos && line_pos_ < src_.size()) {
      if (src_[line_pos_] == '\n') ++line_count_;
      ++line_pos_;
    }
    return line_count_;
  }

  void emit_text(std::string text, size_t at) {
    if (!text.empty()) toks_.push_back(Tok{Tok::kText, std::move(text), 0, 0, line_at(at)});
  }

  // After `{% raw %}`: the text up to `{% endraw %}` is literal.
  size_t maybe_raw(size_t p, char* rsign) {
    const size_t k = toks_.size();
    if (k < 3 || toks_[k - 2].type != Tok::kName || toks_[k - 2].s != "raw" ||
        toks_[k - 3].type != Tok::kBlockBegin) {
      return p;
    }
    toks_.resize(k - 3);
    size_t search = p;
    while (true) {
      const size_t b = src_.find("{%", search);
      if (b == std::string::npos) throw SyntaxError{line_, "unterminated raw block"};
      size_t q = b + 2;
      const bool strip = q < src_.size() && src_[q] == '-';
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) ++q;
      while (q < src_.size() && is_ws(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") == 0) {
        q += 6;
        while (q < src_.size() && is_ws(src_[q])) ++q;
        *rsign = 0;
        if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) *rsign = src_[q++];
        if (src_.compare(q, 2, "%}") == 0) {
          std::string text = src_.substr(p, b - p);
          if (strip) {
            while (!text.empty() && is_ws(text.back())) text.pop_back();
          }
          emit_text(std::move(text), p);
          return q + 2;
        }
      }
      search = b + 2;
    }
  }

  // Tokens inside a tag up to `close` (optionally preceded by a sign); returns the position
  // after `close`.
  size_t lex_tag(size_t p, const char* close, char* rsign) {
    const size_t n = src_.size();
    while (true) {
      while (p < n && is_ws(src_[p])) {
        if (src_[p] == '\n') ++line_;
        ++p;
      }
      if (p >= n)
        throw SyntaxError{line_,
                          std::string("unexpected end of template, expected '") + close + "'"};
      if ((src_[p] == '-' || src_[p] == '+') && src_.compare(p + 1, 2, close) == 0) {
        *rsign = src_[p];
        return p + 3;
      }
      if (src_.compare(p, 2, close) == 0) return p + 2;
      const char c = src_[p];
      if (is_name_start(c)) {
        size_t e = p;
        while (e < n && (is_name_start(src_[e]) || is_digit(src_[e]))) ++e;
        toks_.push_back(Tok{Tok::kName, src_.substr(p, e - p), 0, 0, line_});
        p = e;
      } else if (is_digit(c)) {
        size_t e = p;
        bool is_float = false;
        while (e < n && (is_digit(src_[e]) || src_[e] == '_')) ++e;
        if (e + 1 < n && src_[e] == '.' && is_digit(src_[e + 1])) {
          is_float = true;
          ++e;
          while (e < n && (is_digit(src_[e]) || src_[e] == '_')) ++e;
        }
        if (e < n && (src_[e] == 'e' || src_[e] == 'E')) {
          size_t q = e + 1;
          if (q < n && (src_[q] == '+' || src_[q] == '-')) ++q;
          if (q < n && is_digit(src_[q])) {
            is_float = true;
            e = q;
            while (e < n && is_digit(src_[e])) ++e;
          }
        }
        std::string num;
        for (size_t k = p; k < e; ++k) {
          if (src_[k] != '_') num += src_[k];
        }
        Tok t{is_float ? Tok::kFloat : Tok::kInt, num, 0, 0, line_};
        try {
          if (is_float) {
            t.f = std::stod(num);
          } else {
            t.i = std::stoll(num);
          }
        } catch (...) {
          throw SyntaxError{line_, "number out of range: " + num};
        }
        toks_.push_back(std::move(t));
        p = e;
      } else if (c == '\'' || c == '"') {
        p = lex_string(p);
      } else {
        static const char* kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*",
                                     "/",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
                                     "]",  "{",  "}",  ",",  ".",  ":",  "|"};
        bool found = false;
        for (const char* op : kOps) {
          const size_t len = std::strlen(op);
          if (src_.compare(p, len, op) == 0) {
            toks_.push_back(Tok{Tok::kOp, op, 0, 0, line_});
            p += len;
            found = true;
            break;
          }
        }
        if (!found) throw SyntaxError{line_, std::string("unexpected character '") + c + "'"};
      }
    }
  }

  size_t lex_string(size_t p) {
    const char q = src_[p++];
    std::string out;
    const size_t n = src_.size();
    while (true) {
      if (p >= n) throw SyntaxError{line_, "unterminated string literal"};
      const char c = src_[p];
      if (c == q) {
        ++p;
        break;
      }
      if (c == '\n') ++line_;
      if (c != '\\' || p + 1 >= n) {
        out += c;
        ++p;
        continue;
      }
      const char e = src_[p + 1];
      p += 2;
      auto hex = [&](int digits) {
        uint32_t v = 0;
        for (int k = 0; k < digits; ++k) {
          if (p >= n || !std::isxdigit(static_cast<unsigned char>(src_[p]))) {
            throw SyntaxError{line_, "bad escape in string literal"};
          }
          const char h = src_[p++];
          v = v * 16 + static_cast<uint32_t>(is_digit(h) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        return v;
      };
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case 'a':
          out += '\a';
          break;
        case '0':
          out += '\0';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case '\n':
          break;
        case 'x':
          append_cp(hex(2), out);
          break;
        case 'u':
          append_cp(hex(4), out);
          break;
        case 'U':
          append_cp(hex(8), out);
          break;
        default:
          out += '\\';
          out += e;
      }
    }
    // Adjacent literals concatenate ("a" "b").
    if (!toks_.empty() && toks_.back().type == Tok::kString &&
        last_was_string_end_ == toks_.size()) {
      toks_.back().s += out;
    } else {
      toks_.push_back(Tok{Tok::kString, std::move(out), 0, 0, line_});
    }
    last_was_string_end_ = toks_.size();
    return p;
  }

  std::string src_;
  std::vector<Tok> toks_;
  int line_ = 1;
  size_t line_pos_ = 0;
  int line_count_ = 1;
  size_t last_was_string_end_ = 0;
};

class Parser {
 public:
  Parser(std::vector<Tok> toks, const Limits& limits) : toks_(std::move(toks)), limits_(limits) {}

  Body parse_template() {
    std::string end;
    Body b = parse_body({}, &end);
    if (cur().type != Tok::kEof) fail("unexpected tag '" + end + "'");
    return b;
  }

 private:
  const Tok& cur() const { return toks_[pos_]; }
  const Tok& peek(size_t k = 1) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
  [[noreturn]] void fail(const std::string& msg) const { throw SyntaxError{cur().line, msg}; }
  bool is_op(const char* op) const { return cur().type == Tok::kOp && cur().s == op; }
  bool is_name(const char* name) const { return cur().type == Tok::kName && cur().s == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    ++pos_;
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    ++pos_;
    return true;
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(std::string("expected '") + op + "', got " + describe());
  }
  std::string expect_name() {
    if (cur().type != Tok::kName) fail("expected a name, got " + describe());
    return toks_[pos_++].s;
  }
  void expect_block_end() {
    if (cur().type != Tok::kBlockEnd) fail("expected end of tag '%}', got " + describe());
    ++pos_;
  }
  std::string describe() const {
    switch (cur().type) {
      case Tok::kEof:
        return "end of template";
      case Tok::kBlockEnd:
        return "'%}'";
      case Tok::kVarEnd:
        return "'}}'";
      case Tok::kText:
        return "text";
      default:
        return "'" + cur().s + "'";
    }
  }

  struct Depth {
    Depth(Parser* p) : p_(p) {
      if (++p_->depth_ > p_->limits_.max_depth) p_->fail("template nested too deeply");
    }
    ~Depth() { --p_->depth_; }
    Parser* p_;
  };

  ExprPtr make(Expr::Kind k) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = cur().line;
    return e;
  }

  // Statements until a block tag whose name is in `stop` (left unconsumed after the name,
  // which is returned in *end) or the end of the template.
  Body parse_body(std::initializer_list<const char*> stop, std::string* end) {
    Depth depth(this);
    Body body;
    while (true) {
      const Tok& t = cur();
      if (t.type == Tok::kEof) {
        if (stop.size() != 0)
          fail(std::string("unexpected end of template, expected '") + *stop.begin() + "'");
        return body;
      }
      if (t.type == Tok::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->text = t.s;
        body.push_back(std::move(s));
        ++pos_;
      } else if (t.type == Tok::kVarBegin) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kOutput;
        s->line = t.line;
        ++pos_;
        s->expr = parse_tuple();
        if (cur().type != Tok::kVarEnd)
          fail("expected end of print statement '}}', got " + describe());
        ++pos_;
        body.push_back(std::move(s));
      } else if (t.type == Tok::kBlockBegin) {
        ++pos_;
        if (cur().type != Tok::kName) fail("expected a tag name, got " + describe());
        for (const char* st : stop) {
          if (cur().s == st) {
            *end = cur().s;
            ++pos_;
            return body;
          }
        }
        body.push_back(parse_statement());
      } else {
        fail("unexpected " + describe());
      }
    }
  }

  StmtPtr parse_statement() {
    auto s = std::make_unique<Stmt>();
    s->line = cur().line;
    const std::string tag = expect_name();
    std::string end;
    if (tag == "if") {
      s->kind = Stmt::Kind::kIf;
      s->conds.push_back(parse_tuple());
      expect_block_end();
      while (true) {
        s->bodies.push_back(parse_body({"elif", "else", "endif"}, &end));
        if (end == "elif") {
          s->conds.push_back(parse_tuple());
          expect_block_end();
        } else if (end == "else") {
          expect_block_end();
          s->else_body = parse_body({"endif"}, &end);
          expect_block_end();
          break;
        } else {
          expect_block_end();
          break;
        }
      }
    } else if (tag == "for") {
      s->kind = Stmt::Kind::kFor;
      s->targets.push_back(expect_name());
      while (skip_op(",")) s->targets.push_back(expect_name());
      if (!skip_name("in")) fail("expected 'in' in for loop, got " + describe());
      s->expr = parse_tuple(/*with_cond=*/false);
      if (skip_name("if")) s->cond = parse_expr();
      if (skip_name("recursive")) fail("recursive for loops are not supported");
      expect_block_end();
      ++loop_depth_;
      s->body = parse_body({"else", "endfor"}, &end);
      --loop_depth_;
      expect_block_end();
      if (end == "else") {
        s->else_body = parse_body({"endfor"}, &end);
        expect_block_end();
      }
    } else if (tag == "set") {
      s->targets.push_back(expect_name());
      if (skip_op(".")) {
        s->attr = expect_name();
      } else {
        while (skip_op(",")) s->targets.push_back(expect_name());
      }
      if (skip_op("=")) {
        s->kind = Stmt::Kind::kSet;
        s->expr = parse_tuple();
        expect_block_end();
      } else {
        if (s->targets.size() != 1 || !s->attr.empty()) fail("expected '=' in set");
        s->kind = Stmt::Kind::kSetBlock;
        expect_block_end();
        s->body = parse_body({"endset"}, &end);
        expect_block_end();
      }
    } else if (tag == "macro") {
      s->kind = Stmt::Kind::kMacro;
      s->text = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        s->targets.push_back(expect_name());
        s->defaults.push_back(skip_op("=") ? parse_expr() : nullptr);
        if (!skip_op(",")) break;
      }
      expect_op(")");
      expect_block_end();
      const int saved_loops = loop_depth_;
      loop_depth_ = 0;
      s->body = parse_body({"endmacro"}, &end);
      loop_depth_ = saved_loops;
      if (cur().type == Tok::kName) ++pos_;  // {% endmacro name %}
      expect_block_end();
    } else if (tag == "break" || tag == "continue") {
      if (loop_depth_ <= 0) fail("'" + tag + "' outside a loop");
      s->kind = tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      expect_block_end();
    } else if (tag == "generation") {
      s->kind = Stmt::Kind::kBlock;
      expect_block_end();
      s->body = parse_body({"endgeneration"}, &end);
      expect_block_end();
    } else {
      fail("unknown or unsupported tag '" + tag + "'");
    }
    return s;
  }

  // An expression, or several separated by commas (a tuple, as a list).
  ExprPtr parse_tuple(bool with_cond = true) {
    ExprPtr first = with_cond ? parse_expr() : parse_or();
    if (!is_op(",")) return first;
    auto t = make(Expr::Kind::kList);
    t->value = Value(true);
    t->items.push_back(std::move(first));
    while (skip_op(",")) {
      if (cur().type == Tok::kBlockEnd || cur().type == Tok::kVarEnd || is_op(")")) break;
      t->items.push_back(with_cond ? parse_expr() : parse_or());
    }
    return t;
  }

  ExprPtr parse_expr() {
    Depth depth(this);
    ExprPtr e = parse_or();
    while (skip_name("if")) {
      auto c = make(Expr::Kind::kCond);
      c->b = parse_or();
      if (skip_name("else")) c->c = parse_expr();
      c->a = std::move(e);
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(const char* op, ExprPtr a, ExprPtr b) {
    auto e = make(Expr::Kind::kBinary);
    e->name = op;
    e->a = std::move(a);
    e->b = std::move(b);
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (skip_name("or")) e = binary("or", std::move(e), parse_and());
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (skip_name("and")) e = binary("and", std::move(e), parse_not());
    return e;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      Depth depth(this);
      ++pos_;
      auto e = make(Expr::Kind::kUnary);
      e->name = "not";
      e->a = parse_not();
      return e;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    ExprPtr e = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::kOp && (cur().s == "==" || cur().s == "!=" || cur().s == "<" ||
                                     cur().s == ">" || cur().s == "<=" || cur().s == ">=")) {
        op = cur().s;
        ++pos_;
      } else if (is_name("in")) {
        op = "in";
        ++pos_;
      } else if (is_name("not") && peek().type == Tok::kName && peek().s == "in") {
        op = "notin";
        pos_ += 2;
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(Expr::Kind::kCompare);
        cmp->a = std::move(e);
      }
      cmp->ops.push_back(op);
      cmp->items.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(e);
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = toks_[pos_++].s;
      e = binary(op.c_str(), std::move(e), parse_concat());
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (skip_op("~")) e = binary("~", std::move(e), parse_math2());
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = toks_[pos_++].s;
      e = binary(op.c_str(), std::move(e), parse_pow());
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (skip_op("**")) e = binary("**", std::move(e), parse_unary(true));
    return e;
  }
  ExprPtr parse_unary(bool with_filter) {
    Depth depth(this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      e = make(Expr::Kind::kUnary);
      e->name = toks_[pos_++].s;
      e->a = parse_unary(false);
    } else {
      e = parse_postfix(parse_primary());
    }
    if (with_filter) e = parse_filters(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    Depth depth(this);
    const Tok& t = cur();
    if (t.type == Tok::kName) {
      auto e = make(Expr::Kind::kLiteral);
      if (t.s == "true" || t.s == "True") {
        e->value = Value(true);
      } else if (t.s == "false" || t.s == "False") {
        e->value = Value(false);
      } else if (t.s == "none" || t.s == "None") {
        e->value = Value::none();
      } else {
        e->kind = Expr::Kind::kName;
        e->name = t.s;
      }
      ++pos_;
      return e;
    }
    if (t.type == Tok::kString || t.type == Tok::kInt || t.type == Tok::kFloat) {
      auto e = make(Expr::Kind::kLiteral);
      e->value = t.type == Tok::kString ? Value(t.s)
                 : t.type == Tok::kInt  ? Value(t.i)
                                        : Value(t.f);
      ++pos_;
      return e;
    }
    if (skip_op("(")) {
      if (skip_op(")")) {
        auto t = make(Expr::Kind::kList);
        t->value = Value(true);
        return t;
      }
      ExprPtr first = parse_expr();
      if (!is_op(",")) {
        expect_op(")");
        return first;
      }
      auto l = make(Expr::Kind::kList);
      l->value = Value(true);
      l->items.push_back(std::move(first));
      while (skip_op(",")) {
        if (is_op(")")) break;
        l->items.push_back(parse_expr());
      }
      expect_op(")");
      return l;
    }
    if (skip_op("[")) {
      auto l = make(Expr::Kind::kList);
      while (!is_op("]")) {
        l->items.push_back(parse_expr());
        if (!skip_op(",")) break;
      }
      expect_op("]");
      return l;
    }
    if (skip_op("{")) {
      auto d = make(Expr::Kind::kDict);
      while (!is_op("}")) {
        d->items.push_back(parse_expr());
        expect_op(":");
        d->items.push_back(parse_expr());
        if (!skip_op(",")) break;
      }
      expect_op("}");
      return d;
    }
    fail("unexpected " + describe());
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (skip_op(".")) {
        if (cur().type == Tok::kInt) {
          auto it = make(Expr::Kind::kItem);
          auto lit = make(Expr::Kind::kLiteral);
          lit->value = Value(cur().i);
          ++pos_;
          it->a = std::move(e);
          it->b = std::move(lit);
          e = std::move(it);
          continue;
        }
        auto a = make(Expr::Kind::kAttr);
        a->name = expect_name();
        a->a = std::move(e);
        e = std::move(a);
      } else if (skip_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr obj) {
    ExprPtr parts[3];
    int n_colons = 0;
    while (true) {
      if (is_op("]")) break;
      if (skip_op(":")) {
        if (++n_colons > 2) fail("bad slice");
        continue;
      }
      if (parts[n_colons]) fail("expected ']' or ':', got " + describe());
      parts[n_colons] = parse_expr();
    }
    expect_op("]");
    if (n_colons == 0) {
      if (!parts[0]) fail("empty subscript");
      auto it = make(Expr::Kind::kItem);
      it->a = std::move(obj);
      it->b = std::move(parts[0]);
      return it;
    }
    auto s = make(Expr::Kind::kSlice);
    s->a = std::move(obj);
    s->b = std::move(parts[0]);
    s->c = std::move(parts[1]);
    s->d = std::move(parts[2]);
    return s;
  }

  void parse_args(CallArgs& args) {
    expect_op("(");
    while (!is_op(")")) {
      if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().s == "=") {
        std::string k = toks_[pos_].s;
        pos_ += 2;
        args.kw.emplace_back(std::move(k), parse_expr());
      } else {
        if (!args.kw.empty()) fail("positional argument after keyword argument");
        args.pos.push_back(parse_expr());
      }
      if (!skip_op(",")) break;
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto c = make(Expr::Kind::kCall);
    c->a = std::move(callee);
    parse_args(c->args);
    return c;
  }

  ExprPtr parse_filters(ExprPtr e) {
    while (true) {
      if (skip_op("|")) {
        auto f = make(Expr::Kind::kFilter);
        f->name = expect_name();
        while (skip_op(".")) f->name += "." + expect_name();
        if (is_op("(")) parse_args(f->args);
        f->a = std::move(e);
        e = std::move(f);
      } else if (is_name("is")) {
        ++pos_;
        auto t = make(Expr::Kind::kTest);
        t->negated = skip_name("not");
        t->name = expect_name();
        if (is_op("(")) {
          parse_args(t->args);
        } else if (cur().type == Tok::kString || cur().type == Tok::kInt ||
                   cur().type == Tok::kFloat || is_op("[") || is_op("{") ||
                   (cur().type == Tok::kName && cur().s != "else" && cur().s != "or" &&
                    cur().s != "and" && cur().s != "if" && cur().s != "in" && cur().s != "not" &&
                    cur().s != "is")) {
          t->args.pos.push_back(parse_postfix(parse_primary()));
        }
        t->a = std::move(e);
        e = std::move(t);
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  std::vector<Tok> toks_;
  const Limits& limits_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Result<std::shared_ptr<const Template>> Template::parse(std::string_view source,
                                                        const Limits& limits) {
  // As jinja2: "\r\n" and "\r" read as "\n"; one trailing newline is dropped.
  std::string src;
  src.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      src += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      src += source[i];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  try {
    auto t = std::make_shared<Template>();
    t->limits_ = limits;
    Parser parser(Lexer(std::move(src)).run(), limits);
    t->body_ = parser.parse_template();
    return std::shared_ptr<const Template>(std::move(t));
  } catch (const SyntaxError& e) {
    return invalid_argument("chat template syntax error (line " + std::to_string(e.line) +
                            "): " + e.message);
  }
}

}  // namespace llmt::jinja
