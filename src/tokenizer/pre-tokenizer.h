// Pre-tokenization for byte-level BPE: splits text into the pieces ("words") that BPE merges
// never cross, with the regex lists that llama.cpp uses for each `tokenizer.ggml.pre` value.
//
// Semantics follow llama.cpp (the golden `.out` files are the truth), not the Hugging Face
// regexes they were derived from:
//  * the regexes of a pre type are applied in order; each one splits every piece produced so
//    far, and text between two matches (unmatched text) is kept as a piece of its own;
//  * each regex sees one piece as its whole subject, so `$`, `\z` and lookaheads stop at the
//    piece's end;
//  * `\s` means the Unicode White_Space set (U+0009..U+000D, U+0020, U+0085, U+00A0, U+1680,
//    U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000), as in llama.cpp's tables;
//  * llama.cpp's literal (non-\p{..}) regexes never match non-ASCII whitespace with a literal
//    range (it folds such characters to U+000B first), so those ranges exclude whitespace here;
//  * case-insensitive contractions are written out (`'[sS]`), as llama.cpp does.
// Matching uses PCRE2 (UTF + UCP, JIT when available).
//
// Thread-safety: a PreTokenizer is immutable after create(); split() may be called from any
// number of threads concurrently (each call uses its own match data).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"

namespace llmt::tok {

// A half-open byte range [begin, end) of the text given to PreTokenizer::split().
struct TextSpan {
  size_t begin = 0;
  size_t end = 0;
};

class PreTokenizer {
 public:
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // `pre` is the value of tokenizer.ggml.pre ("default" when the key is absent). Unknown names
  // give kUnsupported naming the value; a regex that fails to compile gives kInternal.
  static Result<std::unique_ptr<PreTokenizer>> create(std::string_view pre);

  const std::string& name() const { return name_; }
  // True for pre types where llama.cpp looks a whole piece up in the vocabulary before merging
  // (llama3 family, tekken): a piece that is itself a token is emitted as that token.
  bool ignore_merges() const { return ignore_merges_; }

  // Appends the pieces of `text`, in order; together they cover `text` exactly and none is
  // empty. `text` must be valid UTF-8 (see sanitize_utf8()). Never fails: if PCRE2 gives up on
  // a piece (resource limits on pathological input), the rest of that piece is kept whole.
  void split(std::string_view text, std::vector<TextSpan>& out) const;

  // Implementation detail: one compiled regex (defined in pre-tokenizer.cpp).
  struct Regex;

 private:
  PreTokenizer() = default;

  std::string name_;
  bool ignore_merges_ = false;
  std::vector<std::unique_ptr<Regex>> regexes_;
};

// Invalid UTF-8 handling, as llama.cpp does it: text is decoded leniently (a lead byte followed
// by the right number of continuation bytes is accepted, even when overlong) and re-encoded;
// every byte that does not start such a sequence becomes U+FFFD and decoding resumes at the next
// byte. Decoded surrogates and values above U+10FFFF also become U+FFFD (llama.cpp would emit
// the surrogate's bytes or throw). Returns false and leaves `out` untouched when `text` is
// already well-formed UTF-8; otherwise writes the repaired text to `out`.
bool sanitize_utf8(std::string_view text, std::string& out);

// Length in bytes of the well-formed UTF-8 sequence at text[pos], or 0 when it is not one.
size_t utf8_sequence_length(std::string_view text, size_t pos);

}  // namespace llmt::tok
