#include "tasks/split.h"

#include <algorithm>
#include <iterator>
#include <string>

#include "llmthreads/tokenizer.h"

namespace llmt::tasks {
namespace {

constexpr uint32_t kBadByte = 0xFFFFFFFFu;  // an invalid UTF-8 byte, taken as one character

struct Char {
  uint32_t cp = kBadByte;
  size_t len = 1;
};

bool is_cont(unsigned char b) {
  return (b & 0xC0) == 0x80;
}

// Decodes the character at s[i] (i < s.size()); an invalid or truncated sequence is one bad byte.
Char decode_at(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1};
  size_t len = 0;
  uint32_t cp = 0;
  uint32_t min = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return {};
  }
  if (i + len > s.size()) return {};
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (!is_cont(b)) return {};
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {};
  return {cp, len};
}

bool is_space(uint32_t cp) {
  return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || cp == 0xA0 || cp == 0x3000;
}

bool is_ascii_terminator(uint32_t cp) {
  return cp == '.' || cp == '!' || cp == '?';
}

bool is_cjk_terminator(uint32_t cp) {
  return cp == 0x3002 || cp == 0xFF01 || cp == 0xFF1F || cp == 0xFF1B || cp == 0xFF0E ||
         cp == 0xFF61;
}

bool is_terminator(uint32_t cp) {
  return is_ascii_terminator(cp) || cp == 0x2026 || is_cjk_terminator(cp);
}

// Closing quotes and brackets that stay with the sentence they follow.
constexpr uint32_t kClosers[] = {'"',    '\'',   ')',    ']',    '}',    0x00BB, 0x2019,
                                 0x201D, 0x203A, 0x3009, 0x300B, 0x300D, 0x300F, 0x3011,
                                 0x3015, 0xFF09, 0xFF3D, 0xFF5D, 0xFF63};

bool is_closer(uint32_t cp) {
  return std::find(std::begin(kClosers), std::end(kClosers), cp) != std::end(kClosers);
}

// Ideographs, kana and hangul: scripts written without spaces between sentences.
bool is_cjk(uint32_t cp) {
  return (cp >= 0x3040 && cp <= 0x30FF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xAC00 && cp <= 0xD7AF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0xFF66 && cp <= 0xFF9F) ||
         (cp >= 0x20000 && cp <= 0x2FFFF);
}

bool is_lower(uint32_t cp) {
  return (cp >= 'a' && cp <= 'z') || (cp >= 0xDF && cp <= 0xFF && cp != 0xF7);
}

bool is_ascii_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_ascii_digit(char c) {
  return c >= '0' && c <= '9';
}

// Narrows [b, e) of s to exclude surrounding whitespace.
void trim(std::string_view s, size_t& b, size_t& e) {
  while (b < e) {
    const Char c = decode_at(s.substr(0, e), b);
    if (!is_space(c.cp)) break;
    b += c.len;
  }
  while (e > b) {
    const auto last = static_cast<unsigned char>(s[e - 1]);
    if (last < 0x80) {
      if (!is_space(last)) break;
      e -= 1;
    } else if (e - b >= 2 && s.substr(e - 2, 2) == "\xC2\xA0") {
      e -= 2;
    } else if (e - b >= 3 && s.substr(e - 3, 3) == "\xE3\x80\x80") {
      e -= 3;
    } else {
      break;
    }
  }
}

bool is_blank(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const Char c = decode_at(s, i);
    if (!is_space(c.cp)) return false;
    i += c.len;
  }
  return true;
}

void push_piece(std::vector<Piece>& out, size_t b, size_t e, PieceLevel level, int32_t parent) {
  Piece p;
  p.index = static_cast<int32_t>(out.size());
  p.begin = b;
  p.end = e;
  p.level = level;
  p.parent = parent;
  out.push_back(p);
}

// Paragraph spans (trimmed) of text.
std::vector<std::pair<size_t, size_t>> paragraph_spans(std::string_view text) {
  std::vector<std::pair<size_t, size_t>> spans;
  size_t para_begin = std::string_view::npos;  // start of the current run of non-blank lines
  size_t para_end = 0;                         // end of its last non-blank line
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find_first_of("\r\n", pos);
    if (eol == std::string_view::npos) eol = text.size();
    size_t next = eol;
    if (next < text.size())
      next += (text[next] == '\r' && next + 1 < text.size() && text[next + 1] == '\n') ? 2 : 1;
    if (is_blank(text.substr(pos, eol - pos))) {
      if (para_begin != std::string_view::npos) spans.emplace_back(para_begin, para_end);
      para_begin = std::string_view::npos;
    } else {
      if (para_begin == std::string_view::npos) para_begin = pos;
      para_end = eol;
    }
    pos = next;
  }
  if (para_begin != std::string_view::npos) spans.emplace_back(para_begin, para_end);
  for (auto& [b, e] : spans) trim(text, b, e);
  return spans;
}

constexpr std::string_view kAbbreviations[] = {
    "mr",   "mrs", "ms",  "dr",   "prof", "sr",   "jr",  "st",   "mt",  "rev", "gen",
    "col",  "lt",  "sgt", "capt", "hon",  "vs",   "etc", "al",   "cf",  "ca",  "approx",
    "dept", "est", "vol", "fig",  "inc",  "ltd",  "co",  "corp", "jan", "feb", "mar",
    "apr",  "jun", "jul", "aug",  "sep",  "sept", "oct", "nov",  "dec"};

// Whether the "." at s[dot] (with text from `sentence_begin`) follows an abbreviation, an
// initial, dotted single letters or a list number. `next_word` is the first character after the
// following whitespace (kBadByte at the end).
bool dot_continues(std::string_view s, size_t sentence_begin, size_t dot, uint32_t next_word) {
  size_t ws = dot;
  while (ws > sentence_begin && (is_ascii_letter(s[ws - 1]) || s[ws - 1] == '.')) --ws;
  while (ws < dot && s[ws] == '.') ++ws;
  // The word must start at a boundary (not glued to a digit or a non-ASCII letter).
  const bool boundary = ws == sentence_begin || (static_cast<unsigned char>(s[ws - 1]) < 0x80 &&
                                                 !is_ascii_digit(s[ws - 1]));
  const std::string_view word = s.substr(ws, dot - ws);
  if (word.empty()) {
    // "1." / "12." as the whole sentence so far: a list number.
    size_t d = dot;
    while (d > sentence_begin && is_ascii_digit(s[d - 1])) --d;
    return d == sentence_begin && dot - d >= 1 && dot - d <= 3;
  }
  if (!boundary) return false;
  if (word.size() == 1 && word[0] >= 'A' && word[0] <= 'Z') return true;  // initial
  if (word.find('.') != std::string_view::npos) {
    // Dotted single letters: e.g, i.e, U.S, a.m, U.S.A.
    bool single_letters = true;
    size_t run = 0;
    for (char c : word) {
      if (c == '.') {
        if (run != 1) single_letters = false;
        run = 0;
      } else {
        ++run;
      }
    }
    return single_letters && run == 1;
  }
  std::string lower(word);
  for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (lower == "no") return next_word < 0x80 && is_ascii_digit(static_cast<char>(next_word));
  return std::find(std::begin(kAbbreviations), std::end(kAbbreviations), lower) !=
         std::end(kAbbreviations);
}

// Appends the sentences of the paragraph text[pb, pe).
void scan_sentences(std::string_view text, size_t pb, size_t pe, PieceLevel level, int32_t parent,
                    std::vector<Piece>& out) {
  const std::string_view s = text.substr(0, pe);
  size_t start = pb;
  size_t i = pb;
  auto emit = [&](size_t b, size_t e) {
    trim(s, b, e);
    if (e > b) push_piece(out, b, e, level, parent);
  };
  while (i < pe) {
    const Char c = decode_at(s, i);
    if (!is_terminator(c.cp)) {
      i += c.len;
      continue;
    }
    // The run of terminators.
    const size_t rs = i;
    bool cjk = false, bang = false;
    size_t n_dots = 0, n_ellipsis = 0, n_chars = 0;
    size_t j = i;
    while (j < pe) {
      const Char t = decode_at(s, j);
      if (!is_terminator(t.cp)) break;
      cjk |= is_cjk_terminator(t.cp);
      bang |= t.cp == '!' || t.cp == '?';
      n_dots += t.cp == '.';
      n_ellipsis += t.cp == 0x2026;
      ++n_chars;
      j += t.len;
    }
    // Closing quotes and brackets.
    bool closed = false;
    while (j < pe) {
      const Char t = decode_at(s, j);
      if (!is_closer(t.cp)) break;
      closed = true;
      j += t.len;
    }
    const size_t ce = j;
    bool ends = false;
    if (cjk || ce == pe) {
      ends = true;
    } else {
      const uint32_t after = decode_at(s, ce).cp;
      ends = is_space(after) || is_cjk(after);
    }
    if (ends && !cjk) {
      size_t w = ce;
      while (w < pe) {
        const Char t = decode_at(s, w);
        if (!is_space(t.cp)) break;
        w += t.len;
      }
      const uint32_t next_word = w < pe ? decode_at(s, w).cp : kBadByte;
      const bool ellipsis = !bang && (n_dots >= 2 || n_ellipsis > 0);
      if ((ellipsis || closed) && is_lower(next_word)) ends = false;
      if (ends && n_chars == 1 && n_dots == 1 && !closed) {
        size_t sb = start;
        while (sb < rs) {
          const Char t = decode_at(s, sb);
          if (!is_space(t.cp)) break;
          sb += t.len;
        }
        if (dot_continues(s, sb, rs, next_word)) ends = false;
      }
    }
    if (ends) {
      emit(start, ce);
      start = ce;
    }
    i = ce;
  }
  emit(start, pe);
}

// Appends window pieces over the tokens of text[base, ...) described by `offsets` (relative to
// base; `local` is that text).
void push_windows(std::string_view local, size_t base, const std::vector<size_t>& offsets,
                  int32_t n_window, int32_t n_overlap, int32_t parent, std::vector<Piece>& out) {
  const int64_t n = static_cast<int64_t>(offsets.size()) - 1;
  const int64_t step = static_cast<int64_t>(n_window) - n_overlap;
  for (int64_t first = 0; first < n; first += step) {
    const int64_t last = std::min<int64_t>(first + n_window, n);
    size_t b = offsets[static_cast<size_t>(first)];
    size_t e = offsets[static_cast<size_t>(last)];
    for (int k = 0;
         k < 3 && b > 0 && b < local.size() && is_cont(static_cast<unsigned char>(local[b])); ++k)
      --b;
    for (int k = 0; k < 3 && e < local.size() && is_cont(static_cast<unsigned char>(local[e])); ++k)
      ++e;
    if (e > b) {
      push_piece(out, base + b, base + e, PieceLevel::kWindow, parent);
      out.back().n_tokens = static_cast<int32_t>(last - first);
    }
    if (last == n) break;
  }
}

Status check_window(int32_t n_window, int32_t n_overlap, const char* what) {
  if (n_window < 1) {
    return invalid_argument(std::string(what) + " must be at least 1 token, got " +
                            std::to_string(n_window));
  }
  if (n_overlap < 0 || n_overlap >= n_window) {
    return invalid_argument("token overlap must be in [0, " + std::to_string(n_window) + "), got " +
                            std::to_string(n_overlap));
  }
  return Status::ok();
}

void count_children(std::vector<Piece>& pieces) {
  for (const Piece& p : pieces) {
    if (p.parent >= 0) ++pieces[static_cast<size_t>(p.parent)].n_children;
  }
}

}  // namespace

std::vector<Piece> split_sentences(std::string_view text) {
  std::vector<Piece> out;
  for (auto [b, e] : paragraph_spans(text))
    scan_sentences(text, b, e, PieceLevel::kSentence, -1, out);
  return out;
}

std::vector<Piece> split_paragraphs(std::string_view text) {
  std::vector<Piece> out;
  for (auto [b, e] : paragraph_spans(text)) push_piece(out, b, e, PieceLevel::kParagraph, -1);
  return out;
}

std::vector<Piece> split_none(std::string_view text) {
  std::vector<Piece> out;
  size_t b = 0, e = text.size();
  trim(text, b, e);
  if (e > b) push_piece(out, b, e, PieceLevel::kParagraph, -1);
  return out;
}

namespace {

constexpr size_t kNoMatch = std::string_view::npos;
constexpr size_t kMaxRun = 64;     // most tokens one resynchronization may skip
constexpr size_t kCheckAhead = 4;  // tokens that must match after a resynchronization point

// Bytes of `text` at `pos` that a token with `piece` stands for: the piece itself, the piece
// without the space SentencePiece inserts (before the text, after special tokens), nothing for
// such a space alone or for an empty non-unknown token; kNoMatch otherwise.
size_t match_at(std::string_view text, size_t pos, std::string_view piece, bool empty_ok) {
  const std::string_view rest = text.substr(pos);
  if (!piece.empty() && rest.starts_with(piece)) return piece.size();
  if (piece.size() > 1 && piece[0] == ' ' && rest.starts_with(piece.substr(1))) {
    return piece.size() - 1;
  }
  if (piece == " " || (piece.empty() && empty_ok)) return 0;
  return kNoMatch;
}

}  // namespace

Result<TokenOffsets> tokenize_with_offsets(const Tokenizer& tok, std::string_view text) {
  TokenizeOptions options;
  options.add_special = false;
  options.parse_special = false;
  TokenOffsets r;
  r.ids = tok.encode(text, options);
  const size_t n = r.ids.size();
  std::vector<std::string> pieces(n);
  std::vector<char> empty_ok(n);
  for (size_t k = 0; k < n; ++k) {
    pieces[k] = tok.token_to_piece(r.ids[k]);
    empty_ok[k] = tok.token_type(r.ids[k]) != TokenType::kUnknown;
  }
  auto match = [&](size_t k, size_t pos) { return match_at(text, pos, pieces[k], empty_ok[k]); };
  // Whether tokens j, j+1, ... (up to kCheckAhead of them, or all the rest reaching the end of
  // the text) match in sequence from `pos`.
  auto matches_from = [&](size_t j, size_t pos) {
    const size_t stop = std::min(n, j + kCheckAhead);
    for (size_t k = j; k < stop; ++k) {
      const size_t m = match(k, pos);
      if (m == kNoMatch) return false;
      pos += m;
    }
    return stop < n || pos == text.size();
  };
  r.offsets.reserve(n + 1);
  r.offsets.push_back(0);
  size_t cursor = 0;
  for (size_t i = 0; i < n;) {
    const size_t m = match(i, cursor);
    if (m != kNoMatch) {
      cursor += m;
      r.offsets.push_back(cursor);
      ++i;
      continue;
    }
    // Tokens i, ... do not spell the text here: an unknown token, or bytes the tokenizer
    // replaced (invalid UTF-8 becomes U+FFFD). Find the first later token j and the first
    // position q where the text is spelled again; tokens i .. j-1 share text[cursor, q).
    size_t j = i + 1, q = kNoMatch;
    size_t limit = cursor;
    for (; j < n && j - i <= kMaxRun; ++j) {
      limit = std::min(text.size(), limit + std::max<size_t>(pieces[j - 1].size(), 4));
      for (size_t pos = cursor; pos <= limit; ++pos) {
        if (matches_from(j, pos)) {
          q = pos;
          break;
        }
      }
      if (q != kNoMatch) break;
    }
    if (j == n) q = text.size();  // no later token matches: the run takes the rest
    if (q == kNoMatch) {
      return unsupported("the tokens of the text do not map back to its bytes (lost at byte " +
                         std::to_string(cursor) + " of " + std::to_string(text.size()) + ")");
    }
    // One character per token, the last token of the run takes what is left.
    for (size_t k = i; k < j; ++k) {
      if (k + 1 == j) {
        cursor = q;
      } else if (cursor < q) {
        cursor += std::min(decode_at(text, cursor).len, q - cursor);
      }
      r.offsets.push_back(cursor);
    }
    i = j;
  }
  if (cursor != text.size()) {
    return unsupported("the tokens of the text do not map back to its bytes (they end at byte " +
                       std::to_string(cursor) + " of " + std::to_string(text.size()) + ")");
  }
  return r;
}

Result<std::vector<Piece>> split_token_windows(std::string_view text, const Tokenizer& tok,
                                               int32_t n_window, int32_t n_overlap) {
  LLMT_RETURN_IF_ERROR(check_window(n_window, n_overlap, "window size"));
  LLMT_ASSIGN_OR_RETURN(TokenOffsets t, tokenize_with_offsets(tok, text));
  std::vector<Piece> out;
  push_windows(text, 0, t.offsets, n_window, n_overlap, -1, out);
  return out;
}

Result<std::vector<Piece>> split_hierarchical(std::string_view text, const Tokenizer* tok,
                                              int32_t max_tokens, int32_t n_overlap) {
  if (tok) LLMT_RETURN_IF_ERROR(check_window(max_tokens, n_overlap, "max_tokens"));
  std::vector<Piece> out;
  std::vector<Piece> sentences;
  for (auto [pb, pe] : paragraph_spans(text)) {
    const int32_t para = static_cast<int32_t>(out.size());
    push_piece(out, pb, pe, PieceLevel::kParagraph, -1);
    sentences.clear();
    scan_sentences(text, pb, pe, PieceLevel::kSentence, para, sentences);
    for (const Piece& s : sentences) {
      const int32_t sentence = static_cast<int32_t>(out.size());
      push_piece(out, s.begin, s.end, PieceLevel::kSentence, para);
      if (!tok) continue;
      const std::string_view local = s.text(text);
      LLMT_ASSIGN_OR_RETURN(TokenOffsets t, tokenize_with_offsets(*tok, local));
      out.back().n_tokens = static_cast<int32_t>(t.ids.size());
      if (t.ids.size() > static_cast<size_t>(max_tokens)) {
        push_windows(local, s.begin, t.offsets, max_tokens, n_overlap, sentence, out);
      }
    }
  }
  count_children(out);
  return out;
}

std::vector<int32_t> leaf_indices(const std::vector<Piece>& pieces) {
  std::vector<int32_t> leaves;
  for (const Piece& p : pieces) {
    if (p.is_leaf()) leaves.push_back(p.index);
  }
  return leaves;
}

namespace {

constexpr int64_t kMaxSpecNumber = int64_t{1} << 24;

Result<int32_t> parse_number(std::string_view value, std::string_view field, std::string_view s) {
  if (s.empty()) {
    return invalid_argument("--split '" + std::string(value) + "': " + std::string(field) +
                            " is empty");
  }
  int64_t v = 0;
  for (char c : s) {
    if (!is_ascii_digit(c)) {
      return invalid_argument("--split '" + std::string(value) + "': " + std::string(field) + " '" +
                              std::string(s) + "' is not a non-negative integer");
    }
    v = v * 10 + (c - '0');
    if (v > kMaxSpecNumber) {
      return invalid_argument("--split '" + std::string(value) + "': " + std::string(field) +
                              " is larger than " + std::to_string(kMaxSpecNumber));
    }
  }
  return static_cast<int32_t>(v);
}

}  // namespace

Result<SplitSpec> parse_split_spec(std::string_view value) {
  std::vector<std::string_view> parts;
  for (size_t pos = 0;;) {
    const size_t colon = value.find(':', pos);
    parts.push_back(value.substr(pos, colon == std::string_view::npos ? colon : colon - pos));
    if (colon == std::string_view::npos) break;
    pos = colon + 1;
  }
  const std::string quoted = "--split '" + std::string(value) + "'";
  const std::string_view name = parts[0];
  SplitSpec spec;
  auto no_args = [&](SplitKind kind) -> Result<SplitSpec> {
    if (parts.size() != 1)
      return invalid_argument(quoted + ": '" + std::string(name) + "' takes no parameters");
    spec.kind = kind;
    return spec;
  };
  if (name == "none") return no_args(SplitKind::kNone);
  if (name == "sentence") return no_args(SplitKind::kSentence);
  if (name == "paragraph") return no_args(SplitKind::kParagraph);
  if (name == "window") {
    if (parts.size() < 2 || parts.size() > 3) {
      return invalid_argument(quoted +
                              ": expected window:N or window:N:M (N tokens per window, "
                              "M tokens of overlap)");
    }
    spec.kind = SplitKind::kWindow;
    LLMT_ASSIGN_OR_RETURN(spec.n_window, parse_number(value, "window size N", parts[1]));
    if (parts.size() == 3) {
      LLMT_ASSIGN_OR_RETURN(spec.n_overlap, parse_number(value, "overlap M", parts[2]));
    }
    if (spec.n_window < 1) return invalid_argument(quoted + ": window size N must be at least 1");
    if (spec.n_overlap >= spec.n_window) {
      return invalid_argument(quoted + ": overlap M must be less than the window size N");
    }
    return spec;
  }
  if (name == "hierarchical") {
    if (parts.size() > 2)
      return invalid_argument(quoted + ": expected hierarchical or hierarchical:MAX_TOKENS");
    spec.kind = SplitKind::kHierarchical;
    if (parts.size() == 2) {
      LLMT_ASSIGN_OR_RETURN(spec.max_tokens, parse_number(value, "max_tokens", parts[1]));
      if (spec.max_tokens < 1) return invalid_argument(quoted + ": max_tokens must be at least 1");
    }
    return spec;
  }
  return invalid_argument(quoted + ": unknown splitter '" + std::string(name) +
                          "' (expected none, sentence, paragraph, window:N[:M] or "
                          "hierarchical[:MAX_TOKENS])");
}

std::string to_string(const SplitSpec& spec) {
  switch (spec.kind) {
    case SplitKind::kNone:
      return "none";
    case SplitKind::kSentence:
      return "sentence";
    case SplitKind::kParagraph:
      return "paragraph";
    case SplitKind::kWindow:
      return "window:" + std::to_string(spec.n_window) + ":" + std::to_string(spec.n_overlap);
    case SplitKind::kHierarchical:
      return "hierarchical:" + std::to_string(spec.max_tokens);
  }
  return "none";
}

bool needs_tokenizer(const SplitSpec& spec) {
  return spec.kind == SplitKind::kWindow || spec.kind == SplitKind::kHierarchical;
}

Result<std::vector<Piece>> split(std::string_view text, const SplitSpec& spec,
                                 const Tokenizer* tok) {
  switch (spec.kind) {
    case SplitKind::kNone:
      return split_none(text);
    case SplitKind::kSentence:
      return split_sentences(text);
    case SplitKind::kParagraph:
      return split_paragraphs(text);
    case SplitKind::kWindow:
      if (!tok) return invalid_argument("the window splitter needs a tokenizer");
      return split_token_windows(text, *tok, spec.n_window, spec.n_overlap);
    case SplitKind::kHierarchical:
      return split_hierarchical(text, tok, spec.max_tokens, 0);
  }
  return invalid_argument("unknown split kind");
}

}  // namespace llmt::tasks
