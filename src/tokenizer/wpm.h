// WordPiece encoder (tokenizer.ggml.model = "bert"), reproducing llama.cpp's llm_tokenizer_wpm.
//
// Pre-processing, per code point: NFD keeps only the first code point of a decomposition
// (accents are dropped); whitespace ends a word; NUL, U+FFFD and control characters (Cc, Cf,
// Co, Cs) are dropped; the rest is lowercased (simple mapping); punctuation, ASCII symbols and
// CJK ideographs form single-character words. Each word gets the phantom-space prefix U+2581
// (the GGUF converter writes word-initial pieces as "▁word" and continuation pieces without
// "##") and is split greedily into the longest vocabulary tokens from the left; a word with any
// part that matches nothing becomes one unknown token.
//
// Thread-safety: immutable after construction; encode() may be called concurrently.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace llmt::tok {

class Vocab;

class WpmEncoder {
 public:
  // `vocab` must outlive the encoder.
  explicit WpmEncoder(const Vocab& vocab);

  // Appends the ids of `text` (well-formed UTF-8 without special-token text) to `out`.
  void encode(std::string_view text, std::vector<int32_t>& out) const;

 private:
  const Vocab* vocab_;
  size_t max_token_len_ = 0;  // bytes
};

}  // namespace llmt::tok
