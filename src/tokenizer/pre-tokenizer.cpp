// Pre-tokenizer regex tables and the PCRE2-based splitter. See pre-tokenizer.h for the contract.
#include "tokenizer/pre-tokenizer.h"
#include "tokenizer/utf8.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>

namespace llmt::tok {

namespace {

// ---------------------------------------------------------------------------------------------
// Regex lists per pre type. Patterns are PCRE2 syntax, except that `\s` and `\S` are expanded by
// expand_whitespace() to explicit classes of llama.cpp's whitespace set (see the header).
// Non-ASCII characters are written as \x{...} escapes.
// ---------------------------------------------------------------------------------------------

// GPT-2. llama.cpp runs this one through a hand-written matcher that also takes a trailing `\s+`.
constexpr const char* kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Llama 3 (tiktoken cl100k style), with the case-insensitive contractions written out.
constexpr const char* kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|)"
    R"(\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Qwen2 / StableLM2: Llama 3 with single digits.
constexpr const char* kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|)"
    R"(\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Seed-Coder: like Qwen2, but punctuation runs do not take trailing newlines.
constexpr const char* kSeedCoder =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|)"
    R"(\p{N}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Bailing MoE: possessive quantifiers of the original turned greedy, as llama.cpp does.
constexpr const char* kBailingMoe =
    R"('(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)";

// Tekken (Mistral NeMo). llama.cpp's `((?=[\p{L}])([^a-z]))*` ("a letter that is not a-z") is
// written as the equivalent class `[^\P{L}a-z]`, which PCRE2 repeats without stack growth.
constexpr const char* kTekken =
    R"([^\r\n\p{L}\p{N}]?[^\P{L}a-z]*[^\P{L}A-Z]+|[^\r\n\p{L}\p{N}]?[^\P{L}a-z]+[^\P{L}A-Z]*|)"
    R"(\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// GPT-4o (o200k) / Llama 4, in llama.cpp's adapted form (non-ASCII letters count as both cases).
constexpr const char* kGpt4o = R"([^\r\n\p{L}\p{N}]?[^\P{L}a-z]*[^\P{L}A-Z]+)"
                               R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|)"
                               R"([^\r\n\p{L}\p{N}]?[^\P{L}a-z]+[^\P{L}A-Z]*)"
                               R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|)"
                               R"(\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// DeepSeek LLM. The letter class is the list of cased-letter ranges from its tokenizer.json.
constexpr const char* kDeepseekLlmLetters =
    R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293})"
    R"(\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A})"
    R"(\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556})"
    R"(\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF})"
    R"(\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D})"
    R"(\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D})"
    R"(\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4})"
    R"(\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4})"
    R"(\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124})"
    R"(\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F})"
    R"(\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4})"
    R"(\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F})"
    R"(\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17})"
    R"(\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB})"
    R"(\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)";
// ASCII and full-width punctuation, quotes U+2018..U+201F and U+3000..U+3002 (U+3000 is
// whitespace, which llama.cpp's literal ranges never match, so the range starts at U+3001).
constexpr const char* kDeepseekLlmPunct =
    R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3001}-\x{3002}]+)";
// CJK U+4E00..U+9FA5, U+0800..U+4E00 and Hangul U+AC00..U+D7FF, minus whitespace.
constexpr const char* kDeepseekCjk =
    R"([\x{4E00}-\x{9FA5}\x{800}-\x{167F}\x{1681}-\x{1FFF}\x{200B}-\x{2027}\x{202A}-\x{202E})"
    R"(\x{2030}-\x{205E}\x{2060}-\x{2FFF}\x{3001}-\x{4E00}\x{AC00}-\x{D7FF}]+)";

// DeepSeek V3 (third regex). llama.cpp matches it on its "collapsed" text, where the ASCII
// members of \p{S} are $+<=>^`| only: '~' counts as neither punctuation nor symbol there.
constexpr const char* kDeepseekV3 =
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|(?:~|[^\r\n\p{L}\p{P}\p{S}])?[\p{L}\p{M}]+|)"
    R"( ?(?:(?!~)[\p{P}\p{S}])+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Poro / BLOOM / GPT-3 Finnish: the class literally contains '(', '|' and ')'.
constexpr const char* kPoro =
    R"( ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C})]+)";

struct PreSpec {
  std::initializer_list<const char*> names;
  std::initializer_list<const char*> regexes;
  bool ignore_merges;
};

// The table of known pre types (names as written by llama.cpp's converter).
const std::array<PreSpec, 16>& pre_specs() {
  static const std::array<PreSpec, 16> specs = {{
      {{"default"}, {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", R"([0-9][0-9][0-9])"}, false},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"},
       {kLlama3},
       true},
      {{"dbrx", "smaug-bpe", "chatglm-bpe", "glm4"}, {kLlama3}, false},
      {{"deepseek-llm"},
       {R"([\r\n])", kDeepseekLlmLetters, kDeepseekLlmPunct, R"(\s+\z)", kDeepseekCjk, R"(\p{N}+)"},
       false},
      {{"deepseek-coder"},
       {R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, R"(\p{N})"},
       false},
      {{"deepseek-v3", "hunyuan-dense"},
       {R"(\p{N}{1,3})", R"([\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+)", kDeepseekV3},
       false},
      {{"falcon"}, {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, R"([0-9][0-9][0-9])"}, false},
      {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"},
       {R"(\p{N})", kGpt2},
       false},
      {{"gpt-2", "gpt2", "mpt", "olmo", "jais", "phi-2", "jina-es", "jina-de", "gigachat",
        "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code", "roberta-bpe", "a.x-4.0",
        "mellum", "trillion", "granite-docling", "exaone4"},
       {kGpt2},
       false},
      {{"qwen2", "qwen2.5", "qwen-2.5", "deepseek-r1-qwen", "kormo", "stablelm2", "megrez",
        "hunyuan", "grok-2"},
       {kQwen2},
       false},
      {{"poro-chat", "bloom", "gpt3-finnish"}, {kPoro}, false},
      {{"viking"}, {kPoro, R"(\p{N})"}, false},
      {{"tekken"}, {kTekken}, true},
      {{"gpt-4o", "llama4"}, {kGpt4o}, false},
      {{"seed-coder"}, {kSeedCoder}, false},
      {{"bailingmoe", "bailingmoe2", "llada-moe"}, {kBailingMoe}, false},
  }};
  return specs;
}

// llama.cpp's whitespace set as the inside of a character class.
constexpr std::string_view kWhitespaceClass =
    R"(\x{9}-\x{D}\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F})"
    R"(\x{3000})";

// Replaces `\s` / `\S` by explicit classes (inside a class, `\s` by the class body). Other
// escapes are copied unchanged. Patterns here never put `\S` inside a class.
std::string expand_whitespace(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      ++i;
      if (e == 's') {
        if (in_class) {
          out += kWhitespaceClass;
        } else {
          out += '[';
          out += kWhitespaceClass;
          out += ']';
        }
      } else if (e == 'S' && !in_class) {
        out += "[^";
        out += kWhitespaceClass;
        out += ']';
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') {
        out += '^';
        ++i;
      }
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') {
        out += ']';
        ++i;
      }
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

uint32_t decode_lenient(std::string_view text, size_t pos, size_t* n_bytes) {
  const auto b0 = static_cast<uint8_t>(text[pos]);
  const size_t n = text.size();
  auto cont = [&](size_t k) {
    return pos + k < n && (static_cast<uint8_t>(text[pos + k]) & 0xC0) == 0x80;
  };
  auto cb = [&](size_t k) {
    return static_cast<uint32_t>(static_cast<uint8_t>(text[pos + k]) & 0x3F);
  };
  if (b0 < 0x80) {
    *n_bytes = 1;
    return b0;
  }
  if (b0 < 0xC0) {
    *n_bytes = 0;
    return 0;
  }
  if (b0 < 0xE0) {
    if (!cont(1)) return *n_bytes = 0, 0;
    *n_bytes = 2;
    return ((b0 & 0x1Fu) << 6) | cb(1);
  }
  if (b0 < 0xF0) {
    if (!cont(1) || !cont(2)) return *n_bytes = 0, 0;
    *n_bytes = 3;
    return ((b0 & 0x0Fu) << 12) | (cb(1) << 6) | cb(2);
  }
  if (b0 < 0xF8) {
    if (!cont(1) || !cont(2) || !cont(3)) return *n_bytes = 0, 0;
    *n_bytes = 4;
    return ((b0 & 0x07u) << 18) | (cb(1) << 12) | (cb(2) << 6) | cb(3);
  }
  *n_bytes = 0;
  return 0;
}

}  // namespace

size_t utf8_sequence_length(std::string_view text, size_t pos) {
  size_t n = 0;
  const uint32_t cp = decode_lenient(text, pos, &n);
  if (n == 0) return 0;
  // Well-formed: shortest form, no surrogates, at most U+10FFFF.
  static constexpr uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMinForLength[n]) return 0;
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
  if (cp > 0x10FFFF) return 0;
  return n;
}

bool sanitize_utf8(std::string_view text, std::string& out) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const size_t n = utf8_sequence_length(text, pos);
    if (n == 0) break;
    pos += n;
  }
  if (pos == text.size()) return false;

  std::string fixed;
  fixed.reserve(text.size() + 16);
  fixed.append(text.data(), pos);
  while (pos < text.size()) {
    size_t n = 0;
    uint32_t cp = decode_lenient(text, pos, &n);
    if (n == 0) {
      cp = 0xFFFD;
      n = 1;
    } else if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
      cp = 0xFFFD;
    }
    append_utf8(cp, fixed);
    pos += n;
  }
  out = std::move(fixed);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Compiled regex
// ---------------------------------------------------------------------------------------------

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
};

PreTokenizer::~PreTokenizer() = default;

Result<std::unique_ptr<PreTokenizer>> PreTokenizer::create(std::string_view pre) {
  const PreSpec* spec = nullptr;
  for (const PreSpec& s : pre_specs()) {
    for (const char* name : s.names) {
      if (pre == name) spec = &s;
    }
    if (spec) break;
  }
  if (!spec) {
    return unsupported("tokenizer.ggml.pre: unsupported BPE pre-tokenizer type '" +
                       std::string(pre) + "'");
  }
  std::unique_ptr<PreTokenizer> p(new PreTokenizer());
  p->name_ = std::string(pre);
  p->ignore_merges_ = spec->ignore_merges;
  for (const char* pattern : spec->regexes) {
    const std::string expanded = expand_whitespace(pattern);
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(expanded.data()), expanded.size(),
                                     PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      return internal_error("pre-tokenizer '" + std::string(pre) +
                            "': regex failed to compile at " + std::to_string(err_offset) + ": " +
                            reinterpret_cast<const char*>(msg));
    }
    auto rx = std::make_unique<Regex>();
    rx->code = code;
    rx->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    p->regexes_.push_back(std::move(rx));
  }
  return p;
}

namespace {

// Per-call PCRE2 state: match data sized for the largest pattern, plus a JIT stack that is
// created only when the default machine stack is not enough.
class MatchState {
 public:
  MatchState() = default;
  MatchState(const MatchState&) = delete;
  MatchState& operator=(const MatchState&) = delete;
  ~MatchState() {
    if (md_) pcre2_match_data_free(md_);
    if (mctx_) pcre2_match_context_free(mctx_);
    if (jit_stack_) pcre2_jit_stack_free(jit_stack_);
  }

  // Finds the first match of `rx` in subject[offset..len). Returns false when there is none or
  // PCRE2 gives up; sets [*mb, *me) otherwise.
  bool find(const PreTokenizer::Regex& rx, const char* subject, size_t len, size_t offset,
            size_t* mb, size_t* me) {
    if (!md_) {
      md_ = pcre2_match_data_create(8, nullptr);
      if (!md_) return false;
    }
    const auto* s = reinterpret_cast<PCRE2_SPTR>(subject);
    int rc = pcre2_match(rx.code, s, len, offset, PCRE2_NO_UTF_CHECK, md_, mctx_);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && rx.jit) {
      if (!jit_stack_) {
        jit_stack_ = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
        if (!mctx_) mctx_ = pcre2_match_context_create(nullptr);
        if (jit_stack_ && mctx_) pcre2_jit_stack_assign(mctx_, nullptr, jit_stack_);
      }
      rc = pcre2_match(rx.code, s, len, offset, PCRE2_NO_UTF_CHECK, md_, mctx_);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        // The interpreter keeps its backtracking frames on the heap.
        rc = pcre2_match(rx.code, s, len, offset, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md_, mctx_);
      }
    }
    if (rc < 0) return false;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md_);
    *mb = ov[0];
    *me = ov[1];
    return *me >= *mb && *me <= len;
  }

 private:
  pcre2_match_data* md_ = nullptr;
  pcre2_match_context* mctx_ = nullptr;
  pcre2_jit_stack* jit_stack_ = nullptr;
};

}  // namespace

void PreTokenizer::split(std::string_view text, std::vector<TextSpan>& out) const {
  if (text.empty()) return;
  std::vector<TextSpan> spans{{0, text.size()}};
  std::vector<TextSpan> next;
  MatchState state;
  for (const auto& rx : regexes_) {
    next.clear();
    next.reserve(spans.size() * 2);
    for (const TextSpan& span : spans) {
      const char* subject = text.data() + span.begin;
      const size_t len = span.end - span.begin;
      size_t prev = 0;    // end of the last piece emitted, relative to the span
      size_t offset = 0;  // where the next search starts
      while (offset < len) {
        size_t mb = 0, me = 0;
        if (!state.find(*rx, subject, len, offset, &mb, &me)) break;
        if (me == mb) {
          // Empty match: emit nothing and move on by one character.
          size_t step = utf8_sequence_length(std::string_view(subject, len), mb);
          offset = mb + (step ? step : 1);
          continue;
        }
        if (mb > prev) next.push_back({span.begin + prev, span.begin + mb});
        next.push_back({span.begin + mb, span.begin + me});
        prev = me;
        offset = me;
      }
      if (prev < len) next.push_back({span.begin + prev, span.end});
    }
    spans.swap(next);
  }
  out.insert(out.end(), spans.begin(), spans.end());
}

}  // namespace llmt::tok
