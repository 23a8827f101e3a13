// Constrained decoding: a GBNF grammar (llama.cpp's `grammar` text form) compiled to a pushdown
// recognizer, a byte-level automaton built lazily from it, and a per-LLM-thread matcher that
// says which vocabulary tokens may come next.
//
// GBNF as accepted here:
//   rule     ::= name "::=" alts            (a rule ends where the next `name ::=` starts)
//   alts     ::= seq ("|" seq)*
//   seq      ::= (item postfix?)*           (an empty sequence matches the empty string)
//   item     ::= "literal" | [class] | [^class] | name | ( alts ) | .
//   postfix  ::= * | + | ? | {m} | {m,} | {m,n}
// Literals and classes take the escapes \n \r \t \\ \" \[ \] \- \^ \xHH \uHHHH \UHHHHHHHH; names
// are [A-Za-z0-9_-]+; `#` starts a comment. The start rule is "root". Undefined rules, a missing
// root, left recursion and malformed text are invalid_argument errors naming the line and column.
//
// How matching works: a grammar state is a set of pushdown stacks (positions in the rules); a
// token is allowed when its bytes, fed one by one (UTF-8 decoded, strictly: no overlongs,
// surrogates or code points past U+10FFFF), leave at least one stack alive. States are
// hash-consed, so each (state, byte) transition is computed once per grammar and vocabulary (a
// lazily built DFA shared by every matcher of that grammar); the token mask of a state walks the
// vocabulary as a byte trie (a shared prefix is checked once, a dead prefix prunes its subtree)
// and is cached per state. End-of-generation tokens are allowed only where the grammar may end;
// other tokens with no bytes (control tokens) are never allowed.
//
// Thread-safety: Grammar and TokenVocab are immutable after creation and may be shared by any
// number of threads; a Grammar holds an internal mutex-protected memo (the automaton and masks)
// that its matchers share. A GrammarMatcher is per LLM thread: one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"

namespace llmt {

class Tokenizer;

namespace grammar_detail {
struct Rules;     // the compiled rules (grammar-internal.h)
class Automaton;  // the lazily built byte automaton and the per-vocabulary mask cache
}  // namespace grammar_detail

class Grammar {
 public:
  // Parses and compiles GBNF text. Errors are invalid_argument ("grammar: line 3, col 7: ...").
  static Result<std::shared_ptr<const Grammar>> parse(std::string_view gbnf);
  // Compiles a JSON Schema (JSON text) through json_schema_to_gbnf().
  static Result<std::shared_ptr<const Grammar>> from_json_schema(std::string_view schema_json);

  const std::string& text() const { return text_; }  // the source GBNF
  int32_t n_rules() const;

  // Whether the whole of `text` is a sentence of the grammar (for tests and tools; walks the
  // pushdown stacks directly, no vocabulary involved).
  bool matches(std::string_view text) const;

  ~Grammar();
  Grammar(const Grammar&) = delete;
  Grammar& operator=(const Grammar&) = delete;

  // Internal.
  const grammar_detail::Rules& rules() const { return *rules_; }
  grammar_detail::Automaton& automaton() const { return *automaton_; }

 private:
  Grammar() = default;
  std::string text_;
  std::unique_ptr<grammar_detail::Rules> rules_;
  std::unique_ptr<grammar_detail::Automaton> automaton_;
};

// The bytes of every token and a byte trie over them, built once per vocabulary.
class TokenVocab {
 public:
  // Pieces are Tokenizer::token_to_piece(id) (no special rendering); EOG ids are is_eog().
  static std::shared_ptr<const TokenVocab> from_tokenizer(const Tokenizer& tok);
  // For tests: explicit pieces (index = token id) and end-of-generation ids.
  static std::shared_ptr<const TokenVocab> from_pieces(std::vector<std::string> pieces,
                                                       std::vector<int32_t> eog_ids);

  int32_t n_vocab() const { return static_cast<int32_t>(pieces_.size()); }
  const std::string& piece(int32_t id) const { return pieces_[static_cast<size_t>(id)]; }
  bool is_eog(int32_t id) const { return is_eog_[static_cast<size_t>(id)] != 0; }
  const std::vector<int32_t>& eog_ids() const { return eog_ids_; }

  // The trie in preorder: node 0 is the root (no byte). For node i > 0: byte_[i] is its edge,
  // depth_[i] its depth (>= 1), end_[i] one past its subtree, and the tokens whose piece ends
  // exactly there are ids_[tok_begin_[i], tok_begin_[i + 1]).
  size_t n_nodes() const { return byte_.size(); }
  const std::vector<uint8_t>& trie_bytes() const { return byte_; }
  const std::vector<uint16_t>& trie_depth() const { return depth_; }
  const std::vector<uint32_t>& trie_end() const { return end_; }
  const std::vector<uint32_t>& trie_tok_begin() const { return tok_begin_; }
  const std::vector<int32_t>& trie_ids() const { return ids_; }

 private:
  TokenVocab() = default;
  void build_trie();

  std::vector<std::string> pieces_;
  std::vector<uint8_t> is_eog_;
  std::vector<int32_t> eog_ids_;
  std::vector<uint8_t> byte_;
  std::vector<uint16_t> depth_;
  std::vector<uint32_t> end_;
  std::vector<uint32_t> tok_begin_;  // n_nodes + 1 entries
  std::vector<int32_t> ids_;
};

// The grammar state of one LLM thread.
class GrammarMatcher {
 public:
  // Starts at the grammar's root. Fails if the vocabularies' sizes are unusable.
  static Result<GrammarMatcher> create(std::shared_ptr<const Grammar> grammar,
                                       std::shared_ptr<const TokenVocab> vocab);

  // The tokens allowed next, as a bitset (bit i of word i / 64 = token i), n_vocab bits. The
  // span stays valid until the next call on this matcher. Fails (invalid_argument) when no token
  // can continue the output: the grammar can no longer be satisfied with this vocabulary; the
  // message says how many bytes were accepted. Fails (kOutOfMemory) when the automaton passes
  // its state limit.
  Result<std::span<const uint64_t>> allowed();
  // Whether `token` is allowed next (cheaper than allowed() for one token).
  bool is_allowed(int32_t token);

  // Advances by a token. A token that is not allowed is invalid_argument and changes nothing.
  Status accept(int32_t token);

  // The grammar may end here (EOG is allowed).
  bool can_end() const;
  // The grammar has ended: nothing but end-of-generation may follow.
  bool is_finished() const;
  int64_t n_bytes_accepted() const { return n_bytes_; }

  GrammarMatcher(GrammarMatcher&&) noexcept;
  GrammarMatcher& operator=(GrammarMatcher&&) noexcept;
  ~GrammarMatcher();

 private:
  GrammarMatcher() = default;
  std::shared_ptr<const Grammar> grammar_;
  std::shared_ptr<const TokenVocab> vocab_;
  int32_t state_ = 0;   // automaton state
  bool ended_ = false;  // an EOG token was accepted
  int64_t n_bytes_ = 0;
  std::vector<uint64_t> scratch_;  // a mask that the automaton could not cache
};

// JSON Schema (draft 2020-12 subset) -> GBNF. Supported: type (string, integer, number, boolean,
// null, object, array, or a list of them), properties, required, additionalProperties (false,
// true or a schema; absent = any extra property as JSON Schema says), enum, const, items,
// minItems, maxItems, anyOf, oneOf (compiled as anyOf: the grammar cannot enforce exclusivity),
// $ref to "#", "#/$defs/..." and "#/definitions/...", $defs/definitions, minLength, maxLength,
// format (date, time, date-time, uuid). Annotations (title, description, $schema, $id, $comment,
// examples, default, deprecated, readOnly, writeOnly) are ignored. Anything else is
// invalid_argument naming the keyword and where it is ("json schema: unsupported keyword
// 'pattern' at /properties/name"). Objects emit their properties in `properties` order;
// whitespace between tokens is bounded (at most a newline and 8 blanks); integers have at most 16
// digits.
Result<std::string> json_schema_to_gbnf(std::string_view schema_json);

// The grammar of any JSON value (response_format json_object uses an object at the top).
std::string json_value_gbnf(bool object_only);

// Validates a JSON instance against a schema, for the same keyword set as json_schema_to_gbnf
// (oneOf checked exactly; date/time formats checked for shape). OK, or invalid_argument naming the
// instance path and the failed keyword ("json: /items/2: 'maxLength' 5 exceeded"). Unparseable
// text is invalid_argument too.
Status validate_json(std::string_view instance_json, std::string_view schema_json);

}  // namespace llmt
