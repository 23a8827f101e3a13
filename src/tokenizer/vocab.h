// Vocabulary tables read from the tokenizer.* keys of a GGUF: token texts, scores, types, the
// text -> id map, special token ids and the BOS/EOS/space-prefix flags, with llama.cpp's defaults
// and its rules for bad metadata (a special id outside the vocabulary is ignored and the default
// kept; arrays whose lengths disagree with the token list are a kCorrupt error).
//
// Thread-safety: immutable after load(); const methods may be called concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "llmthreads/status.h"
#include "llmthreads/tokenizer.h"

namespace llmt {
class GgufFile;
}

namespace llmt::tok {

class Vocab {
 public:
  Vocab() = default;
  // Views handed out point into this object: it is neither copied nor moved.
  Vocab(const Vocab&) = delete;
  Vocab& operator=(const Vocab&) = delete;

  // Reads the vocabulary; errors name the offending key. Call once on a fresh object.
  Status load(const GgufFile& gguf);

  TokenizerKind kind() const { return kind_; }
  std::string_view model_name() const { return model_name_; }
  std::string_view pre_name() const { return pre_name_; }
  int32_t n_tokens() const { return static_cast<int32_t>(offsets_.size()); }
  bool valid(int32_t id) const { return id >= 0 && id < n_tokens(); }

  // Token text / score / type; id must be valid().
  std::string_view text(int32_t id) const {
    return std::string_view(arena_).substr(offsets_[id], lengths_[id]);
  }
  float score(int32_t id) const { return scores_[id]; }
  TokenType type(int32_t id) const { return types_[id]; }
  // All token texts in id order (views into this object).
  const std::vector<std::string_view>& texts() const { return text_views_; }
  // BPE merges ("a b" strings, views into this object); empty for SPM.
  const std::vector<std::string_view>& merges() const { return merges_; }

  // Exact lookup; -1 when absent. When several ids share a text the highest id wins (as in
  // llama.cpp, whose map insertion overwrites).
  int32_t find(std::string_view text) const;

  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t eot_id() const { return eot_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t sep_id() const { return sep_id_; }
  bool add_sep() const { return add_sep_; }  // WordPiece: append sep_id() with add_special
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  bool is_eog(int32_t id) const;

  // Ids matched as whole units before the encoder runs (control, user-defined and unknown
  // tokens with non-empty text), longest text first (ties: lower id first).
  const std::vector<int32_t>& special_tokens() const { return special_tokens_; }

  // SPM byte fallback: the id of "<0xNN>" (or of the one-byte text), else unk_id() (may be -1).
  int32_t byte_to_token(uint8_t byte) const { return byte_tokens_[byte]; }

 private:
  Status load_tokens(const GgufFile& gguf);
  Status load_special_ids(const GgufFile& gguf);
  void detect_special_by_text();

  TokenizerKind kind_ = TokenizerKind::kSpm;
  std::string model_name_;
  std::string pre_name_ = "default";

  std::string arena_;  // all token texts, then all merges
  std::vector<uint32_t> offsets_;
  std::vector<uint32_t> lengths_;
  std::vector<std::string_view> text_views_;
  std::vector<std::string_view> merges_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::unordered_map<std::string_view, int32_t> text_to_id_;

  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  int32_t eot_id_ = -1;
  int32_t eom_id_ = -1;
  int32_t unk_id_ = -1;
  int32_t sep_id_ = -1;
  bool add_sep_ = false;
  bool add_bos_ = false;
  bool add_eos_ = false;
  bool add_space_prefix_ = false;
  std::vector<int32_t> eog_ids_;  // sorted
  std::vector<int32_t> special_tokens_;
  int32_t byte_tokens_[256] = {};
};

}  // namespace llmt::tok
