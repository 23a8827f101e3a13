// Byte-level BPE encoder (the `gpt2` tokenizer model of GGUF), reproducing llama.cpp's
// tokenization of text that contains no special tokens.
//
// encode(): the text is pre-tokenized (see pre-tokenizer.h); each piece's bytes are mapped to
// the GPT-2 byte-level alphabet (one vocabulary character per byte); adjacent symbols are then
// merged, lowest merge rank first (ties: leftmost pair first), until no ranked pair is left; each
// final symbol is looked up in the vocabulary. A final symbol that is not a token (possible only
// with inconsistent merges) is looked up byte by byte of its byte-level text, and bytes with no
// token are dropped, as llama.cpp does.
//
// Invalid UTF-8 never fails: it is repaired with sanitize_utf8() (each bad byte becomes U+FFFD,
// as in llama.cpp) before pre-tokenization.
//
// Thread-safety: a BpeEncoder is immutable after create(); encode() may be called from any number
// of threads concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "llmthreads/status.h"
#include "tokenizer/pre-tokenizer.h"

namespace llmt::tok {

class BpeEncoder {
 public:
  ~BpeEncoder();
  BpeEncoder(const BpeEncoder&) = delete;
  BpeEncoder& operator=(const BpeEncoder&) = delete;

  // tokens: vocabulary strings in id order (byte-level encoded, e.g. "Ġthe"); merges: "left right"
  // strings in rank order (tokenizer.ggml.merges); pre: tokenizer.ggml.pre ("default" if absent).
  // Unknown pre names -> kUnsupported naming the value. Duplicate token strings: the last id
  // wins (as in llama.cpp); empty token strings are never produced. Duplicate merges: the first
  // (lowest) rank wins; merge lines without a separating space are ignored.
  static Result<std::unique_ptr<BpeEncoder>> create(const std::vector<std::string_view>& tokens,
                                                    const std::vector<std::string_view>& merges,
                                                    std::string_view pre);

  // Appends the ids of `text` (which contains no special tokens).
  void encode(std::string_view text, std::vector<int32_t>& out) const;

  // Byte-level decode of one vocabulary string ("Ġthe" -> " the"); strings that are not
  // byte-level encoded (a character outside the 256-character alphabet, or invalid UTF-8) are
  // returned unchanged.
  static std::string decode_token_text(std::string_view token_text);

  // Byte-level encode of raw bytes (" the" -> "Ġthe").
  static std::string encode_bytes(std::string_view bytes);

  const PreTokenizer& pre_tokenizer() const { return *pre_; }
  int32_t n_vocab() const { return n_vocab_; }

 private:
  BpeEncoder() = default;

  // Symbols are interned strings: ids < n_vocab_ are vocabulary tokens (the id a lookup of the
  // string gives); larger ids are strings that occur only in merges (extra_text_).
  struct MergeEntry {
    uint64_t key;  // (left symbol << 32) | right symbol; kEmptyKey when the slot is free
    int32_t rank;
    int32_t result;  // symbol of left+right
  };
  static constexpr uint64_t kEmptyKey = ~uint64_t{0};

  int32_t intern(std::string_view s);
  const MergeEntry* find_merge(int32_t left, int32_t right) const;
  void insert_merge(int32_t left, int32_t right, int32_t rank, int32_t result);
  struct Scratch;  // per-call work buffers (bpe.cpp)
  void encode_piece(std::string_view piece, std::vector<int32_t>& out, Scratch& scratch) const;
  void emit_symbol(int32_t sym, std::vector<int32_t>& out) const;

  int32_t n_vocab_ = 0;
  std::unique_ptr<PreTokenizer> pre_;
  std::unordered_map<std::string, int32_t> text_to_sym_;  // vocabulary and merge strings
  std::vector<std::string> extra_text_;                   // symbol n_vocab_ + i
  int32_t byte_sym_[256] = {};                            // symbol of each byte's character
  std::vector<MergeEntry> merge_table_;                   // open addressing, power-of-2 size
  uint64_t merge_mask_ = 0;
};

}  // namespace llmt::tok
