// Splitters of the tasks layer: cut a document into pieces (sentences, paragraphs, token windows,
// or a paragraph -> sentence -> window hierarchy) that the engine can process as separate LLM
// threads. Model-free apart from an optional Tokenizer for token-based cuts.
//
// Every piece is a byte span [begin, end) of the input document; the piece's text is exactly
// doc.substr(begin, end - begin) (Piece::text). Pieces are listed in document order (for the
// hierarchy: parents before their children, depth first, so the leaves are in document order)
// and carry their position in that list as `index`.
//
// Whitespace, for trimming and for "blank": ASCII space, \t, \n, \v, \f, \r, U+00A0 (no-break
// space) and U+3000 (ideographic space).
//
// UTF-8: spans of the sentence, paragraph and none splitters start and end on character
// boundaries. Invalid bytes never stop a splitter: each one is an ordinary one-byte, non-space
// character.
//
// Thread-safety: every function here is a pure function of its arguments; any number of threads
// may call them concurrently (a shared Tokenizer is only used through its const methods).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"

namespace llmt {
class Tokenizer;
}

namespace llmt::tasks {

// Level of a piece in the hierarchical split; the flat splitters use kParagraph for "none" and
// "paragraph", kSentence for "sentence" and kWindow for "window".
enum class PieceLevel : int32_t { kParagraph = 0, kSentence = 1, kWindow = 2 };

struct Piece {
  int32_t index = 0;  // position in the returned list (0, 1, 2, ...)
  size_t begin = 0;   // byte offset of the first byte in the document
  size_t end = 0;     // byte offset one past the last byte (end > begin)
  PieceLevel level = PieceLevel::kParagraph;
  int32_t parent = -1;     // index of the enclosing piece (hierarchical split), else -1
  int32_t n_children = 0;  // pieces whose parent is this one; 0 for a leaf
  // Tokens the piece stands for when the splitter counted them (window pieces: the exact
  // number of document tokens in the window), -1 when not counted.
  int32_t n_tokens = -1;

  size_t size() const { return end - begin; }
  bool is_leaf() const { return n_children == 0; }
  // The piece's text inside `doc`, which must be the document the split was made of.
  std::string_view text(std::string_view doc) const { return doc.substr(begin, end - begin); }
};

// Sentences, within each paragraph (see split_paragraphs: a blank line always ends a sentence; a
// single line break does not). A sentence ends after a run of terminators (. ! ? U+2026 and the
// CJK / full-width U+3002 U+FF01 U+FF1F U+FF1B U+FF0E U+FF61), followed by any closing quotes
// and brackets (" ' ) ] } and U+00BB U+2019 U+201D U+203A U+3009 U+300B U+300D U+300F U+3011
// U+3015 U+FF09 U+FF3D U+FF5D U+FF63), which stay with the sentence. A run of only ASCII
// terminators or U+2026 ends a sentence only when followed by whitespace, the end of the
// paragraph, or a CJK character (ideograph, kana, hangul); a run containing a CJK terminator
// needs nothing after it. Not an end:
//   - "." after a known abbreviation (case-insensitive: Mr Mrs Ms Dr Prof Sr Jr St Mt Rev Gen Col
//     Lt Sgt Capt Hon vs etc al cf ca approx dept est vol Fig Inc Ltd Co Corp Jan Feb Mar Apr Jun
//     Jul Aug Sep Sept Oct Nov Dec; "No" only when the next word starts with a digit), after a
//     single capital letter ("J. K. Rowling") and after single letters joined by dots ("e.g."
//     "i.e." "U.S." "a.m."). These never end a sentence, even where one does end ("... at 5
//     p.m. Then ..." stays one piece): merging two sentences is the cheaper mistake;
//   - "." inside a number or a name (3.14, $4.50, example.com, a@b.org): no whitespace follows;
//   - an ellipsis ("..." or U+2026) followed by a word starting with a lowercase letter;
//   - a run followed by a closing quote and then a lowercase word ("Really?" she asked.);
//   - the "." of a list number of 1-3 digits ("1. ", "12. ") at the start of a sentence.
// Pieces are trimmed of surrounding whitespace, never empty, never whitespace-only. A text that is
// empty or only whitespace gives no pieces.
std::vector<Piece> split_sentences(std::string_view text);

// Paragraphs: maximal runs of non-blank lines; a blank line is a line of only whitespace (\r\n,
// \n and a lone \r end lines). Pieces trimmed of surrounding whitespace.
std::vector<Piece> split_paragraphs(std::string_view text);

// One piece: the whole text trimmed (none when only whitespace).
std::vector<Piece> split_none(std::string_view text);

// The tokenization of a text (no BOS/EOS, special token texts not parsed) with the byte span of
// each token: token i stands for text[offsets[i], offsets[i + 1]); offsets has ids.size() + 1
// entries, offsets[0] == 0 and offsets.back() == text.size(). A byte-level BPE token can end
// inside a UTF-8 character, so an offset may fall inside one.
struct TokenOffsets {
  std::vector<int32_t> ids;
  std::vector<size_t> offsets;
};

// Tokenizes `text` and maps every token back to its bytes by walking the token pieces
// (token_to_piece) along the text: a piece that matches the text at the cursor takes its bytes; a
// piece starting with the space SentencePiece inserts (before the text, after special tokens)
// matches without that space, and that space alone takes no bytes. Where the pieces stop spelling
// the text (an unknown token; invalid UTF-8 that the tokenizer replaced by U+FFFD or re-encoded),
// the walk resynchronizes at the first later token from which the next 4 tokens (or all the rest,
// ending exactly at the end of the text) spell the text again; the skipped tokens share the bytes
// in between, one character each, the last one taking the remainder. kUnsupported when no
// resynchronization is found within 64 tokens (a tokenizer that normalizes text).
Result<TokenOffsets> tokenize_with_offsets(const Tokenizer& tok, std::string_view text);

// Token windows: windows of n_window tokens of the tokenization of `text` (as in
// tokenize_with_offsets), window k starting at token k * (n_window - n_overlap); the last
// window ends at the last token (it may be shorter; no window lies wholly inside the previous
// one). Each piece spans exactly the bytes of its tokens, widened to whole UTF-8 characters when
// a byte-level token boundary falls inside one; it is not trimmed (a token's leading space stays).
// A window whose tokens stand for no bytes is left out. n_tokens is the window's token count.
// kInvalidArgument unless n_window >= 1 and 0 <= n_overlap < n_window.
Result<std::vector<Piece>> split_token_windows(std::string_view text, const Tokenizer& tok,
                                               int32_t n_window, int32_t n_overlap);

// Hierarchical: paragraphs (level kParagraph, parent -1), each with its sentences (kSentence,
// parent = the paragraph); when `tok` is given, a sentence of more than max_tokens tokens also
// gets token windows of max_tokens tokens overlapping by n_overlap (kWindow, parent = the
// sentence; windows of the sentence's own tokenization, spans in document coordinates). Listed
// depth first (paragraph, its first sentence, that sentence's windows, next sentence, ...).
// kInvalidArgument unless max_tokens >= 1 and 0 <= n_overlap < max_tokens (checked only when
// `tok` is given).
Result<std::vector<Piece>> split_hierarchical(std::string_view text, const Tokenizer* tok,
                                              int32_t max_tokens, int32_t n_overlap = 0);

// Indices of the leaves of a split, in document order.
std::vector<int32_t> leaf_indices(const std::vector<Piece>& pieces);

// The CLI's --split value.
enum class SplitKind { kNone, kSentence, kParagraph, kWindow, kHierarchical };

struct SplitSpec {
  static constexpr int32_t kDefaultMaxTokens = 512;

  SplitKind kind = SplitKind::kNone;
  int32_t n_window = 0;                    // kWindow: tokens per window
  int32_t n_overlap = 0;                   // kWindow: tokens shared by consecutive windows
  int32_t max_tokens = kDefaultMaxTokens;  // kHierarchical: longest sentence before windowing
};

// Parses "none" | "sentence" | "paragraph" | "window:N" | "window:N:M" | "hierarchical" |
// "hierarchical:MAX" (N >= 1, 0 <= M < N, MAX >= 1; decimal, at most 2^24). kInvalidArgument
// naming the value and what is wrong.
Result<SplitSpec> parse_split_spec(std::string_view value);
// The canonical text of a spec ("window:128:16", "hierarchical:512"); parses back to the same.
std::string to_string(const SplitSpec& spec);
// Whether the spec needs a tokenizer (window; hierarchical windows long sentences only with one).
bool needs_tokenizer(const SplitSpec& spec);

// Runs the splitter a spec names. kWindow without a tokenizer is kInvalidArgument;
// kHierarchical without one splits paragraphs and sentences only.
Result<std::vector<Piece>> split(std::string_view text, const SplitSpec& spec,
                                 const Tokenizer* tok);

}  // namespace llmt::tasks
