// GBNF text -> flattened rules (grammar-internal.h). Groups and repetitions become synthetic
// rules: X* is S ::= X S | "", X{m,n} is m copies of X then a chain of n-m optional copies.
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>

#include "sampling/grammar-internal.h"

namespace llmt::grammar_detail {

namespace {

constexpr uint32_t kMaxCodepoint = 0x10FFFF;
constexpr int kMaxRepeat = 10000;
constexpr size_t kMaxRules = size_t{1} << 18;  // synthetic ones included

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

using Seq = std::vector<Elem>;
using Alts = std::vector<Seq>;

class Parser {
 public:
  explicit Parser(std::string_view src) : src_(src) {}

  Result<std::unique_ptr<Rules>> run();

 private:
  Status error(const std::string& what, size_t at) const {
    int line = 1, col = 1;
    for (size_t i = 0; i < at && i < src_.size(); ++i) {
      if (src_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return invalid_argument("grammar: line " + std::to_string(line) + ", col " +
                            std::to_string(col) + ": " + what);
  }
  bool eof() const { return pos_ >= src_.size(); }
  char peek(size_t ahead = 0) const {
    return pos_ + ahead < src_.size() ? src_[pos_ + ahead] : '\0';
  }
  void skip_space();
  std::string_view read_name();
  // True when a `name ::=` starts at pos_ (the end of the current rule).
  bool at_rule_start() const;
  int32_t rule_id(std::string_view name, size_t used_at);
  int32_t new_rule(const std::string& base);
  int32_t class_id(std::vector<std::pair<uint32_t, uint32_t>> ranges, bool negated);
  Result<uint32_t> read_char();  // one code point, escapes decoded
  Status parse_alts(int32_t rule, Alts* out);
  Status parse_seq(int32_t rule, Seq* out);
  Status parse_postfix(int32_t rule, Seq atom, Seq* out);
  Status check_left_recursion() const;

  std::string_view src_;
  size_t pos_ = 0;
  std::vector<Alts> alts_;
  std::vector<std::string> names_;
  std::vector<bool> defined_;
  std::vector<size_t> first_use_;
  std::map<std::string, int32_t, std::less<>> ids_;
  std::map<std::vector<std::pair<uint32_t, uint32_t>>, int32_t> class_ids_;
  std::vector<CharClass> classes_;
  int synth_ = 0;
  bool too_many_ = false;  // past kMaxRules (reported at the end)
};

void Parser::skip_space() {
  while (!eof()) {
    const char c = peek();
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++pos_;
    } else if (c == '#') {
      while (!eof() && peek() != '\n') ++pos_;
    } else {
      break;
    }
  }
}

std::string_view Parser::read_name() {
  const size_t b = pos_;
  while (!eof() && is_name_char(peek())) ++pos_;
  return src_.substr(b, pos_ - b);
}

bool Parser::at_rule_start() const {
  size_t p = pos_;
  if (p >= src_.size() || !is_name_char(src_[p])) return false;
  while (p < src_.size() && is_name_char(src_[p])) ++p;
  while (p < src_.size() &&
         (src_[p] == ' ' || src_[p] == '\t' || src_[p] == '\n' || src_[p] == '\r'))
    ++p;
  return src_.substr(p, 3) == "::=";
}

int32_t Parser::rule_id(std::string_view name, size_t used_at) {
  auto it = ids_.find(name);
  if (it != ids_.end()) return it->second;
  const auto id = static_cast<int32_t>(names_.size());
  names_.emplace_back(name);
  alts_.emplace_back();
  defined_.push_back(false);
  first_use_.push_back(used_at);
  ids_.emplace(std::string(name), id);
  return id;
}

int32_t Parser::new_rule(const std::string& base) {
  std::string name;
  do {
    name = base + "/" + std::to_string(++synth_);  // "/" cannot appear in a user name
  } while (ids_.count(name));
  const int32_t id = rule_id(name, pos_);
  defined_[static_cast<size_t>(id)] = true;
  if (names_.size() > kMaxRules) too_many_ = true;
  return id;
}

int32_t Parser::class_id(std::vector<std::pair<uint32_t, uint32_t>> ranges, bool negated) {
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<uint32_t, uint32_t>> merged;
  for (const auto& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second + 1) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  if (negated) {
    std::vector<std::pair<uint32_t, uint32_t>> comp;
    uint32_t next = 0;
    for (const auto& r : merged) {
      if (r.first > next) comp.emplace_back(next, r.first - 1);
      next = r.second + 1;
    }
    if (next <= kMaxCodepoint) comp.emplace_back(next, kMaxCodepoint);
    merged = std::move(comp);
  }
  auto it = class_ids_.find(merged);
  if (it != class_ids_.end()) return it->second;
  CharClass cc;
  cc.ranges = merged;
  for (const auto& [lo, hi] : merged)
    for (uint32_t c = lo; c <= hi && c < 128; ++c) cc.ascii[c / 64] |= uint64_t{1} << (c % 64);
  const auto id = static_cast<int32_t>(classes_.size());
  classes_.push_back(std::move(cc));
  class_ids_.emplace(std::move(merged), id);
  return id;
}

Result<uint32_t> Parser::read_char() {
  const size_t at = pos_;
  if (eof()) return error("unexpected end of text", at);
  const auto c = static_cast<unsigned char>(peek());
  if (c == '\\') {
    ++pos_;
    if (eof()) return error("unfinished escape", at);
    const char e = peek();
    ++pos_;
    switch (e) {
      case 'n':
        return uint32_t{'\n'};
      case 'r':
        return uint32_t{'\r'};
      case 't':
        return uint32_t{'\t'};
      case '\\':
      case '"':
      case '[':
      case ']':
      case '-':
      case '^':
      case '/':
      case '\'':
        return static_cast<uint32_t>(e);
      case 'x':
      case 'u':
      case 'U': {
        const int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        uint32_t v = 0;
        for (int i = 0; i < n; ++i) {
          const int h = hex_value(peek());
          if (h < 0)
            return error(std::string("\\") + e + " needs " + std::to_string(n) + " hex digits", at);
          v = v * 16 + static_cast<uint32_t>(h);
          ++pos_;
        }
        if (v > kMaxCodepoint) return error("code point past U+10FFFF", at);
        return v;
      }
      default:
        return error(std::string("unknown escape \\") + e, at);
    }
  }
  // A raw UTF-8 character.
  int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || pos_ + static_cast<size_t>(len) > src_.size())
    return error("invalid UTF-8 in the grammar text", at);
  uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (int i = 1; i < len; ++i) {
    const auto b = static_cast<unsigned char>(src_[pos_ + static_cast<size_t>(i)]);
    if ((b & 0xC0) != 0x80) return error("invalid UTF-8 in the grammar text", at);
    v = (v << 6) | (b & 0x3F);
  }
  pos_ += static_cast<size_t>(len);
  return v;
}

Status Parser::parse_alts(int32_t rule, Alts* out) {
  for (;;) {
    Seq seq;
    LLMT_RETURN_IF_ERROR(parse_seq(rule, &seq));
    out->push_back(std::move(seq));
    skip_space();
    if (peek() != '|') return Status::ok();
    ++pos_;
  }
}

Status Parser::parse_seq(int32_t rule, Seq* out) {
  for (;;) {
    skip_space();
    if (eof() || peek() == '|' || peek() == ')' || at_rule_start()) return Status::ok();
    const size_t at = pos_;
    const char c = peek();
    Seq atom;
    if (c == '"') {
      ++pos_;
      for (;;) {
        if (eof() || peek() == '\n') return error("unterminated literal", at);
        if (peek() == '"') {
          ++pos_;
          break;
        }
        LLMT_ASSIGN_OR_RETURN(uint32_t cp, read_char());
        atom.push_back({ElemKind::kChar, class_id({{cp, cp}}, false)});
      }
      if (atom.empty()) continue;  // "" matches the empty string
    } else if (c == '[') {
      ++pos_;
      bool negated = false;
      if (peek() == '^') {
        negated = true;
        ++pos_;
      }
      std::vector<std::pair<uint32_t, uint32_t>> ranges;
      for (;;) {
        if (eof() || peek() == '\n') return error("unterminated character class", at);
        if (peek() == ']') {
          ++pos_;
          break;
        }
        LLMT_ASSIGN_OR_RETURN(uint32_t lo, read_char());
        uint32_t hi = lo;
        if (peek() == '-' && peek(1) != ']' && pos_ + 1 < src_.size()) {
          ++pos_;
          LLMT_ASSIGN_OR_RETURN(hi, read_char());
          if (hi < lo) return error("character range is reversed", at);
        }
        ranges.emplace_back(lo, hi);
      }
      if (ranges.empty() && !negated) return error("empty character class", at);
      atom.push_back({ElemKind::kChar, class_id(std::move(ranges), negated)});
    } else if (c == '.') {
      ++pos_;
      atom.push_back({ElemKind::kChar, class_id({{0, kMaxCodepoint}}, false)});
    } else if (c == '(') {
      ++pos_;
      const int32_t g = new_rule(names_[static_cast<size_t>(rule)]);
      Alts alts;
      LLMT_RETURN_IF_ERROR(parse_alts(g, &alts));
      skip_space();
      if (peek() != ')') return error("expected ')'", pos_);
      ++pos_;
      alts_[static_cast<size_t>(g)] = std::move(alts);
      atom.push_back({ElemKind::kRef, g});
    } else if (is_name_char(c)) {
      const std::string_view name = read_name();
      atom.push_back({ElemKind::kRef, rule_id(name, at)});
    } else {
      return error(std::string("unexpected character '") + c + "'", at);
    }
    LLMT_RETURN_IF_ERROR(parse_postfix(rule, std::move(atom), out));
  }
}

Status Parser::parse_postfix(int32_t rule, Seq atom, Seq* out) {
  // Spaces before a postfix operator are allowed (llama.cpp allows them too).
  const size_t save = pos_;
  while (peek() == ' ' || peek() == '\t') ++pos_;
  const size_t at = pos_;
  int lo = 1, hi = 1;  // hi -1 = unbounded
  const char c = peek();
  if (c == '*') {
    lo = 0, hi = -1, ++pos_;
  } else if (c == '+') {
    lo = 1, hi = -1, ++pos_;
  } else if (c == '?') {
    lo = 0, hi = 1, ++pos_;
  } else if (c == '{') {
    ++pos_;
    auto read_int = [&](int* v) {
      if (!(peek() >= '0' && peek() <= '9')) return false;
      long long x = 0;
      while (peek() >= '0' && peek() <= '9') {
        x = x * 10 + (peek() - '0');
        if (x > kMaxRepeat) x = kMaxRepeat + 1;
        ++pos_;
      }
      *v = static_cast<int>(x);
      return true;
    };
    while (peek() == ' ') ++pos_;
    if (!read_int(&lo)) return error("expected a number after '{'", at);
    while (peek() == ' ') ++pos_;
    if (peek() == ',') {
      ++pos_;
      while (peek() == ' ') ++pos_;
      if (!read_int(&hi)) hi = -1;
    } else {
      hi = lo;
    }
    while (peek() == ' ') ++pos_;
    if (peek() != '}') return error("expected '}'", pos_);
    ++pos_;
    if (lo > kMaxRepeat || hi > kMaxRepeat)
      return error("repetition bound past " + std::to_string(kMaxRepeat), at);
    if (hi >= 0 && hi < lo) return error("repetition {m,n} needs m <= n", at);
  } else {
    pos_ = save;
    out->insert(out->end(), atom.begin(), atom.end());
    return Status::ok();
  }
  // Repeat a single element; a longer atom (a literal) becomes a rule first.
  Elem x = atom[0];
  if (atom.size() > 1) {
    const int32_t g = new_rule(names_[static_cast<size_t>(rule)]);
    alts_[static_cast<size_t>(g)] = {atom};
    x = {ElemKind::kRef, g};
  }
  for (int i = 0; i < lo; ++i) out->push_back(x);
  if (hi < 0) {
    const int32_t s = new_rule(names_[static_cast<size_t>(rule)]);
    alts_[static_cast<size_t>(s)] = {{x, {ElemKind::kRef, s}}, {}};
    out->push_back({ElemKind::kRef, s});
  } else if (hi > lo) {
    int32_t prev = -1;
    for (int k = 1; k <= hi - lo; ++k) {
      const int32_t o = new_rule(names_[static_cast<size_t>(rule)]);
      Seq first = {x};
      if (prev >= 0) first.push_back({ElemKind::kRef, prev});
      alts_[static_cast<size_t>(o)] = {first, {}};
      prev = o;
    }
    out->push_back({ElemKind::kRef, prev});
  }
  return Status::ok();
}

Status Parser::check_left_recursion() const {
  const size_t n = alts_.size();
  std::vector<bool> nullable(n, false);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < n; ++r) {
      if (nullable[r]) continue;
      for (const Seq& s : alts_[r]) {
        bool all = std::all_of(s.begin(), s.end(), [&](const Elem& e) {
          return e.kind == ElemKind::kRef && nullable[static_cast<size_t>(e.arg)];
        });
        if (all) {
          nullable[r] = true;
          changed = true;
          break;
        }
      }
    }
  }
  // Edges r -> q when q can start r; a cycle is left recursion. Iterative DFS with colours.
  std::vector<std::vector<int32_t>> first(n);
  for (size_t r = 0; r < n; ++r)
    for (const Seq& s : alts_[r])
      for (const Elem& e : s) {
        if (e.kind != ElemKind::kRef) break;
        first[r].push_back(e.arg);
        if (!nullable[static_cast<size_t>(e.arg)]) break;
      }
  std::vector<uint8_t> colour(n, 0);  // 0 new, 1 on the path, 2 done
  for (size_t r0 = 0; r0 < n; ++r0) {
    if (colour[r0]) continue;
    std::vector<std::pair<size_t, size_t>> path = {{r0, 0}};
    colour[r0] = 1;
    while (!path.empty()) {
      auto& [r, i] = path.back();
      if (i == first[r].size()) {
        colour[r] = 2;
        path.pop_back();
        continue;
      }
      const auto q = static_cast<size_t>(first[r][i++]);
      if (colour[q] == 1) {
        // Report the user-visible rule of the cycle (synthetic names contain the parent's).
        return invalid_argument("grammar: rule '" + names_[q] + "' is left-recursive");
      }
      if (colour[q] == 0) {
        colour[q] = 1;
        path.emplace_back(q, 0);
      }
    }
  }
  return Status::ok();
}

Result<std::unique_ptr<Rules>> Parser::run() {
  for (;;) {
    skip_space();
    if (eof()) break;
    const size_t at = pos_;
    const std::string_view name = read_name();
    if (name.empty()) return error(std::string("expected a rule name, got '") + peek() + "'", at);
    skip_space();
    if (src_.substr(pos_, 3) != "::=")
      return error("expected '::=' after '" + std::string(name) + "'", pos_);
    pos_ += 3;
    const int32_t r = rule_id(name, at);
    if (defined_[static_cast<size_t>(r)])
      return error("rule '" + std::string(name) + "' is defined twice", at);
    defined_[static_cast<size_t>(r)] = true;
    Alts alts;
    LLMT_RETURN_IF_ERROR(parse_alts(r, &alts));
    skip_space();
    if (!eof() && !at_rule_start()) return error(std::string("unexpected '") + peek() + "'", pos_);
    alts_[static_cast<size_t>(r)] = std::move(alts);
  }
  if (too_many_)
    return invalid_argument("grammar: more than " + std::to_string(kMaxRules) +
                            " rules after expanding repetitions");
  for (size_t r = 0; r < names_.size(); ++r)
    if (!defined_[r])
      return error("rule '" + names_[r] + "' is used but not defined", first_use_[r]);
  auto root = ids_.find(std::string_view("root"));
  if (root == ids_.end()) return invalid_argument("grammar: no 'root' rule");
  LLMT_RETURN_IF_ERROR(check_left_recursion());

  auto rules = std::make_unique<Rules>();
  rules->root = root->second;
  rules->names = names_;
  rules->classes = std::move(classes_);
  rules->alts.resize(alts_.size());
  for (size_t r = 0; r < alts_.size(); ++r) {
    for (const Seq& s : alts_[r]) {
      rules->alts[r].push_back(static_cast<int32_t>(rules->elems.size()));
      rules->elems.insert(rules->elems.end(), s.begin(), s.end());
      rules->elems.push_back({ElemKind::kEnd, 0});
    }
  }
  return rules;
}

}  // namespace

bool CharClass::contains(uint32_t c) const {
  if (c < 128) return (ascii[c / 64] >> (c % 64)) & 1;
  auto it = std::upper_bound(ranges.begin(), ranges.end(), std::make_pair(c, UINT32_MAX));
  if (it == ranges.begin()) return false;
  --it;
  return c >= it->first && c <= it->second;
}

bool CharClass::intersects(uint32_t lo, uint32_t hi) const {
  // First range whose end reaches lo.
  auto it = std::lower_bound(
      ranges.begin(), ranges.end(), lo,
      [](const std::pair<uint32_t, uint32_t>& r, uint32_t v) { return r.second < v; });
  return it != ranges.end() && it->first <= hi;
}

Result<std::unique_ptr<Rules>> parse_gbnf(std::string_view text) {
  return Parser(text).run();
}

}  // namespace llmt::grammar_detail
