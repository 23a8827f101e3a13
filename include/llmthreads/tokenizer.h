// Tokenizers built from GGUF metadata alone: SentencePiece-style (`tokenizer.ggml.model = llama`),
// byte-level BPE (`gpt2`, with the pre-tokenizer chosen by `tokenizer.ggml.pre`) and WordPiece
// (`bert`: BERT-style normalization, [CLS] ... [SEP] as the special tokens added).
// Token ids are int32_t (llama.cpp's llama_token).
//
// Thread-safety: a Tokenizer is immutable after creation; every const method may be called from
// any number of threads concurrently. A StreamDecoder is per-stream state: one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"

namespace llmt {

class GgufFile;

enum class TokenizerKind { kSpm, kBpe, kWpm };

// Token attributes from `tokenizer.ggml.token_type` (values as in GGUF).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct TokenizeOptions {
  // Add BOS/EOS as the vocabulary's metadata asks (add_bos_token / add_eos_token and their
  // per-kind defaults; WordPiece adds its [CLS] as BOS and its [SEP] at the end). false
  // reproduces the `.out` golden files.
  bool add_special = true;
  // Recognize control and unknown token texts (e.g. "<s>", "<|im_start|>") inside the text and
  // emit their ids (longest token text first). When false, such text is tokenized as ordinary
  // characters. User-defined tokens (GGUF token type 4) are matched either way, as llama.cpp
  // and Hugging Face tokenizers do.
  bool parse_special = false;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Builds from the tokenizer.* keys of a GGUF (works on vocab-only files). Errors name the key.
  static Result<std::unique_ptr<Tokenizer>> from_gguf(const GgufFile& gguf);

  virtual TokenizerKind kind() const = 0;
  virtual std::string_view model_name()
      const = 0;                                  // tokenizer.ggml.model ("llama", "gpt2", "bert")
  virtual std::string_view pre_name() const = 0;  // tokenizer.ggml.pre ("default" when absent)
  virtual int32_t n_vocab() const = 0;

  virtual int32_t bos_id() const = 0;            // -1 when none
  virtual int32_t eos_id() const = 0;            // -1 when none
  virtual int32_t eot_id() const = 0;            // -1 when none
  virtual int32_t unk_id() const = 0;            // -1 when none
  virtual int32_t sep_id() const { return -1; }  // WordPiece [SEP]; -1 when none
  virtual bool add_bos() const = 0;
  virtual bool add_eos() const = 0;
  // End of generation: EOS, EOT, EOM and the tokens llama.cpp recognizes by text ("<|im_end|>",
  // "<|eot_id|>", "<|end|>", "<|endoftext|>", "<end_of_turn>", ...); those become control tokens.
  virtual bool is_eog(int32_t id) const = 0;
  virtual TokenType token_type(int32_t id) const = 0;

  virtual std::vector<int32_t> encode(std::string_view text,
                                      const TokenizeOptions& options = {}) const = 0;
  // The raw vocabulary string of a token ("▁the", "Ġthe", "<0x0A>").
  virtual std::string_view token_text(int32_t id) const = 0;
  // The bytes a token stands for in generated text ("▁the" -> " the", "<0x0A>" -> "\n").
  // Control and unknown tokens give "" unless render_special; user-defined tokens give their
  // text; unused / undefined tokens and out-of-range ids give "" (as llama.cpp).
  virtual std::string token_to_piece(int32_t id, bool render_special = false) const = 0;
  // Concatenated pieces (raw bytes; may be invalid UTF-8 when ids split a character). For SPM
  // vocabularies with a space prefix, the one space that tokenization adds before the text at
  // the start and after every special token (control / user-defined / unknown) is removed, so
  // decode(encode(s)) == s. WordPiece output drops the phantom space before its first word
  // likewise (its normalization is lossy, so decode(encode(s)) is s only for normalized s). No
  // other clean-up (llama.cpp's clean_spaces is not applied).
  virtual std::string decode(const std::vector<int32_t>& ids, bool render_special = false) const;
  // Looks up an exact token text; -1 when absent.
  virtual int32_t find_token(std::string_view text) const = 0;
};

// Streaming detokenizer: emits text as soon as it is complete UTF-8; a token that ends in the
// middle of a multi-byte character is held until the character completes.
class StreamDecoder {
 public:
  // `tok` must outlive the decoder. render_special as in Tokenizer::token_to_piece.
  explicit StreamDecoder(const Tokenizer& tok, bool render_special = false)
      : tok_(&tok), render_special_(render_special) {}
  // Returns the newly completed text (possibly empty). The output is always valid UTF-8: bytes
  // that can never form a character are replaced by one U+FFFD per run of such bytes.
  std::string push(int32_t id);
  // Returns what is still held (an incomplete character is emitted as one U+FFFD) and resets.
  std::string flush();
  // Bytes held back waiting for the rest of a character (0..3).
  size_t n_pending() const { return pending_.size(); }

 private:
  // Moves the complete characters of pending_ to the result; with `final`, also the rest.
  std::string drain(bool final);

  const Tokenizer* tok_;
  bool render_special_;
  std::string pending_;
};

}  // namespace llmt
