#include "tokenizer/vocab.h"

#include <algorithm>
#include <limits>

#include "llmthreads/gguf.h"

namespace llmt::tok {
namespace {

constexpr std::string_view kKeyModel = "tokenizer.ggml.model";
constexpr std::string_view kKeyPre = "tokenizer.ggml.pre";
constexpr std::string_view kKeyTokens = "tokenizer.ggml.tokens";
constexpr std::string_view kKeyScores = "tokenizer.ggml.scores";
constexpr std::string_view kKeyTypes = "tokenizer.ggml.token_type";
constexpr std::string_view kKeyMerges = "tokenizer.ggml.merges";

// Texts that llama.cpp recognizes as end-of-turn when tokenizer.ggml.eot_token_id is absent
// (first present one wins). The source is UTF-8: "｜" is U+FF5C and "▁" U+2581.
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>",         "<|im_end|>", "<|end|>", "<end_of_turn>",
    "<|endoftext|>",      "<EOT>",      "_<EOT>",  "<｜end▁of▁sentence｜>" /* DeepSeek */,
    "<end_of_utterance>",
};
// Texts that always end generation when present.
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>",    "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",        "<end_of_turn>",
    "<|endoftext|>", "<|eom_id|>", "<EOT>",   "_<EOT>",     "<|end_of_text|>", "<end_of_utterance>",
};
// Fill-in-the-middle markers: llama.cpp treats them as control tokens; pad/repo/file-separator
// markers also end generation.
constexpr std::string_view kFimControlTexts[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>",  "<SUF>", "▁<SUF>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>",   "<MID>", "▁<MID>",
};
constexpr std::string_view kFimEogTexts[] = {
    "<|fim_pad|>",   "<fim-pad>",  "<fim_pad>", "<|fim_repo|>",
    "<|repo_name|>", "<fim-repo>", "<REPO>",    "<|file_sep|>",
};

// BPE pre-tokenizers for which llama.cpp adds BOS by default.
constexpr std::string_view kBpeAddBosPres[] = {"llama3", "llama-v3", "llama-bpe", "falcon3"};

TokenType to_token_type(int64_t v) {
  if (v >= 1 && v <= 6) return static_cast<TokenType>(v);
  return TokenType::kUndefined;
}

}  // namespace

Status Vocab::load(const GgufFile& gguf) {
  LLMT_ASSIGN_OR_RETURN(auto model, gguf.get_string(kKeyModel));
  if (!model)
    return not_found(gguf.path() + ": tokenizer key '" + std::string(kKeyModel) + "' is absent");
  model_name_ = std::string(*model);
  if (model_name_ == "llama") {
    kind_ = TokenizerKind::kSpm;
  } else if (model_name_ == "gpt2") {
    kind_ = TokenizerKind::kBpe;
  } else if (model_name_ == "bert") {
    kind_ = TokenizerKind::kWpm;
  } else {
    return unsupported(gguf.path() + ": tokenizer.ggml.model '" + model_name_ +
                       "' is not supported (supported: llama, gpt2, bert)");
  }
  LLMT_ASSIGN_OR_RETURN(auto pre, gguf.get_string(kKeyPre));
  if (pre) pre_name_ = std::string(*pre);

  LLMT_RETURN_IF_ERROR(load_tokens(gguf));

  // Per-kind defaults (llama.cpp's), then the keys.
  if (kind_ == TokenizerKind::kSpm) {
    bos_id_ = 1;
    eos_id_ = 2;
    unk_id_ = 0;
    add_bos_ = true;
    add_eos_ = false;
    add_space_prefix_ = true;
  } else if (kind_ == TokenizerKind::kWpm) {
    // llama.cpp's BERT defaults: [CLS] 101 as BOS, [UNK] 100, [SEP] 102 appended.
    bos_id_ = 101;
    eos_id_ = -1;
    unk_id_ = 100;
    sep_id_ = 102;
    add_bos_ = true;
    add_sep_ = true;
    add_eos_ = false;
    add_space_prefix_ = false;
  } else {
    bos_id_ = 11;
    eos_id_ = 11;
    unk_id_ = -1;
    add_bos_ = std::find(std::begin(kBpeAddBosPres), std::end(kBpeAddBosPres), pre_name_) !=
               std::end(kBpeAddBosPres);
    add_eos_ = false;
    add_space_prefix_ = false;
  }
  LLMT_RETURN_IF_ERROR(load_special_ids(gguf));

  struct BoolKey {
    std::string_view key;
    bool* dst;
  };
  for (const BoolKey& bk : {BoolKey{"tokenizer.ggml.add_bos_token", &add_bos_},
                            BoolKey{"tokenizer.ggml.add_eos_token", &add_eos_},
                            BoolKey{"tokenizer.ggml.add_space_prefix", &add_space_prefix_}}) {
    LLMT_ASSIGN_OR_RETURN(auto v, gguf.get_bool(bk.key));
    if (v) *bk.dst = *v;
  }

  detect_special_by_text();

  for (int32_t id = 0; id < n_tokens(); ++id) {
    TokenType t = types_[id];
    if ((t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown) &&
        lengths_[id] > 0) {
      special_tokens_.push_back(id);
    }
  }
  std::stable_sort(special_tokens_.begin(), special_tokens_.end(),
                   [&](int32_t a, int32_t b) { return lengths_[a] > lengths_[b]; });

  static const char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    char buf[6] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
    int32_t id = find(std::string_view(buf, 6));
    if (id < 0) {
      char c = static_cast<char>(b);
      id = find(std::string_view(&c, 1));
    }
    byte_tokens_[b] = id >= 0 ? id : unk_id_;
  }
  return Status::ok();
}

Status Vocab::load_tokens(const GgufFile& gguf) {
  const std::string where = gguf.path() + ": ";
  LLMT_ASSIGN_OR_RETURN(auto tokens, gguf.get_string_array(kKeyTokens));
  if (!tokens)
    return not_found(where + "tokenizer key '" + std::string(kKeyTokens) + "' is absent");
  if (tokens->empty()) return corrupt(where + std::string(kKeyTokens) + " is empty");
  if (tokens->size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return corrupt(where + std::string(kKeyTokens) + " has too many entries");
  }
  const size_t n = tokens->size();

  LLMT_ASSIGN_OR_RETURN(auto scores, gguf.get_float_array(kKeyScores));
  if (scores && scores->size() != n) {
    return corrupt(where + std::string(kKeyScores) + " has " + std::to_string(scores->size()) +
                   " entries but there are " + std::to_string(n) + " tokens");
  }
  LLMT_ASSIGN_OR_RETURN(auto types, gguf.get_int_array(kKeyTypes));
  if (types && types->size() != n) {
    return corrupt(where + std::string(kKeyTypes) + " has " + std::to_string(types->size()) +
                   " entries but there are " + std::to_string(n) + " tokens");
  }
  std::optional<std::vector<std::string_view>> merges;
  if (kind_ == TokenizerKind::kBpe) {
    LLMT_ASSIGN_OR_RETURN(merges, gguf.get_string_array(kKeyMerges));
    if (!merges) {
      return not_found(where + "tokenizer key '" + std::string(kKeyMerges) +
                       "' is absent (required for gpt2 tokenizers)");
    }
  }

  uint64_t total = 0;
  for (std::string_view t : *tokens) total += t.size();
  if (merges) {
    for (std::string_view m : *merges) total += m.size();
  }
  if (total > std::numeric_limits<uint32_t>::max()) {
    return corrupt(where + "tokenizer texts are larger than 4 GiB");
  }

  arena_.reserve(total);
  offsets_.resize(n);
  lengths_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    offsets_[i] = static_cast<uint32_t>(arena_.size());
    lengths_[i] = static_cast<uint32_t>((*tokens)[i].size());
    arena_.append((*tokens)[i]);
  }
  std::vector<std::pair<uint32_t, uint32_t>> merge_spans;
  if (merges) {
    merge_spans.reserve(merges->size());
    for (std::string_view m : *merges) {
      merge_spans.emplace_back(static_cast<uint32_t>(arena_.size()),
                               static_cast<uint32_t>(m.size()));
      arena_.append(m);
    }
  }
  // The arena is final: views may now be taken.
  const std::string_view arena(arena_);
  text_views_.resize(n);
  text_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    text_views_[i] = arena.substr(offsets_[i], lengths_[i]);
    text_to_id_[text_views_[i]] = static_cast<int32_t>(i);
  }
  merges_.reserve(merge_spans.size());
  for (auto [off, len] : merge_spans) merges_.push_back(arena.substr(off, len));

  scores_.assign(n, 0.0f);
  if (scores) scores_ = std::move(*scores);
  types_.assign(n, TokenType::kNormal);
  if (types) {
    for (size_t i = 0; i < n; ++i) types_[i] = to_token_type((*types)[i]);
  }
  return Status::ok();
}

Status Vocab::load_special_ids(const GgufFile& gguf) {
  struct IdKey {
    std::string_view key;
    int32_t* dst;
  };
  for (const IdKey& k : {IdKey{"tokenizer.ggml.bos_token_id", &bos_id_},
                         IdKey{"tokenizer.ggml.eos_token_id", &eos_id_},
                         IdKey{"tokenizer.ggml.eot_token_id", &eot_id_},
                         IdKey{"tokenizer.ggml.eom_token_id", &eom_id_},
                         IdKey{"tokenizer.ggml.unknown_token_id", &unk_id_},
                         // (sic: the GGUF key is spelled so)
                         IdKey{"tokenizer.ggml.seperator_token_id", &sep_id_},
                         // BERT converters write [CLS] here; llama.cpp uses it as BOS.
                         IdKey{"tokenizer.ggml.cls_token_id", &bos_id_}}) {
    LLMT_ASSIGN_OR_RETURN(auto v, gguf.get_int(k.key));
    // As llama.cpp: an id outside the vocabulary (e.g. 4294967295 meaning "none") is ignored
    // and the default kept.
    if (v && *v >= 0 && *v < n_tokens()) *k.dst = static_cast<int32_t>(*v);
  }
  for (int32_t* id : {&bos_id_, &eos_id_, &eot_id_, &eom_id_, &unk_id_, &sep_id_}) {
    if (!valid(*id)) *id = -1;
  }
  return Status::ok();
}

void Vocab::detect_special_by_text() {
  auto make_control = [&](int32_t id) {
    if (types_[id] != TokenType::kControl) types_[id] = TokenType::kControl;
  };
  if (eot_id_ < 0) {
    for (std::string_view t : kEotTexts) {
      int32_t id = find(t);
      if (id >= 0) {
        eot_id_ = id;
        make_control(id);
        break;
      }
    }
  }
  if (eom_id_ < 0) {
    int32_t id = find("<|eom_id|>");
    if (id >= 0) {
      eom_id_ = id;
      make_control(id);
    }
  }
  for (std::string_view t : kFimControlTexts) {
    int32_t id = find(t);
    if (id >= 0) make_control(id);
  }
  for (int32_t id : {eos_id_, eot_id_, eom_id_}) {
    if (id >= 0) eog_ids_.push_back(id);
  }
  for (std::string_view t : kEogTexts) {
    int32_t id = find(t);
    if (id >= 0) {
      eog_ids_.push_back(id);
      make_control(id);
    }
  }
  for (std::string_view t : kFimEogTexts) {
    int32_t id = find(t);
    if (id >= 0) {
      eog_ids_.push_back(id);
      make_control(id);
    }
  }
  std::sort(eog_ids_.begin(), eog_ids_.end());
  eog_ids_.erase(std::unique(eog_ids_.begin(), eog_ids_.end()), eog_ids_.end());
}

int32_t Vocab::find(std::string_view text) const {
  auto it = text_to_id_.find(text);
  return it == text_to_id_.end() ? -1 : it->second;
}

bool Vocab::is_eog(int32_t id) const {
  return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
}

}  // namespace llmt::tok
