// SentencePiece-style (tokenizer.ggml.model = "llama") encoder, reproducing llama.cpp's
// llm_tokenizer_spm: the text is split into UTF-8 characters (length from the lead byte only, so
// invalid UTF-8 is handled byte-wise and never rejected), then the adjacent pair whose
// concatenation is a vocabulary token with the highest score is merged repeatedly (ties: the
// leftmost pair); finally each symbol is emitted as its token, or, when it is not in the
// vocabulary, as its byte tokens <0xNN> (unk where no byte token exists).
//
// Thread-safety: immutable; encode() may be called concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llmt::tok {

class Vocab;

class SpmEncoder {
 public:
  // `vocab` must outlive the encoder.
  explicit SpmEncoder(const Vocab& vocab) : vocab_(&vocab) {}

  // Appends the ids of `text` to `out`. `text` must already be escaped (spaces replaced by
  // U+2581 and the space prefix added by the caller); it contains no special-token text.
  void encode(std::string_view text, std::vector<int32_t>& out) const;

 private:
  const Vocab* vocab_;
};

// Replaces every ' ' by U+2581 ("▁"), as SentencePiece does before encoding.
std::string escape_whitespace(std::string_view text);

}  // namespace llmt::tok
