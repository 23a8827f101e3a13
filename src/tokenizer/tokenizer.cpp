// The Tokenizer facade: special-token partitioning, BOS/EOS, the SPM space prefix, pieces and
// decoding, over a Vocab and an SpmEncoder or BpeEncoder.
#include "llmthreads/tokenizer.h"

#include <memory>
#include <string>
#include <utility>

#include "llmthreads/gguf.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pre-tokenizer.h"
#include "tokenizer/spm.h"
#include "tokenizer/vocab.h"
#include "tokenizer/wpm.h"

namespace llmt {
namespace {

using tok::Vocab;

// One piece of the input after special-token partitioning: raw text (token < 0) or a token.
struct Fragment {
  int32_t token;
  size_t offset;
  size_t length;
};

// Parses "<0xNN>" (hex digits of either case); -1 when `text` has another form.
int parse_byte_token(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int value = 0;
  for (char c : text.substr(3, 2)) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + d;
  }
  return value;
}

bool is_special_type(TokenType t) {
  return t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown;
}

class VocabTokenizer final : public Tokenizer {
 public:
  VocabTokenizer() : vocab_(std::make_unique<Vocab>()), spm_(*vocab_) {}

  Status init(const GgufFile& gguf) {
    LLMT_RETURN_IF_ERROR(vocab_->load(gguf));
    if (vocab_->kind() == TokenizerKind::kBpe) {
      auto bpe = tok::BpeEncoder::create(vocab_->texts(), vocab_->merges(), vocab_->pre_name());
      if (!bpe.is_ok()) {
        return Status(bpe.status().code(), gguf.path() + ": " + bpe.status().message());
      }
      bpe_ = std::move(bpe).value();
    }
    if (vocab_->kind() == TokenizerKind::kWpm) wpm_ = std::make_unique<tok::WpmEncoder>(*vocab_);
    return Status::ok();
  }

  TokenizerKind kind() const override { return vocab_->kind(); }
  std::string_view model_name() const override { return vocab_->model_name(); }
  std::string_view pre_name() const override { return vocab_->pre_name(); }
  int32_t n_vocab() const override { return vocab_->n_tokens(); }
  int32_t bos_id() const override { return vocab_->bos_id(); }
  int32_t eos_id() const override { return vocab_->eos_id(); }
  int32_t eot_id() const override { return vocab_->eot_id(); }
  int32_t unk_id() const override { return vocab_->unk_id(); }
  int32_t sep_id() const override { return vocab_->sep_id(); }
  bool add_bos() const override { return vocab_->add_bos(); }
  bool add_eos() const override { return vocab_->add_eos(); }
  bool is_eog(int32_t id) const override { return vocab_->is_eog(id); }
  TokenType token_type(int32_t id) const override {
    return vocab_->valid(id) ? vocab_->type(id) : TokenType::kUndefined;
  }
  std::string_view token_text(int32_t id) const override {
    return vocab_->valid(id) ? vocab_->text(id) : std::string_view();
  }
  int32_t find_token(std::string_view text) const override { return vocab_->find(text); }

  std::vector<int32_t> encode(std::string_view text, const TokenizeOptions& options) const override;
  std::string token_to_piece(int32_t id, bool render_special) const override;
  std::string decode(const std::vector<int32_t>& ids, bool render_special) const override;

 private:
  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const;

  std::unique_ptr<Vocab> vocab_;  // heap-held: the encoders keep pointers/views into it
  tok::SpmEncoder spm_;
  std::unique_ptr<tok::BpeEncoder> bpe_;  // kBpe only
  std::unique_ptr<tok::WpmEncoder> wpm_;  // kWpm only
};

// Splits `text` at occurrences of special token texts, as llama.cpp does: for each special token
// in order (longest text first), every occurrence inside the still-raw fragments becomes a token
// fragment (leftmost first, non-overlapping).
std::vector<Fragment> VocabTokenizer::partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back(Fragment{-1, 0, text.size()});
  std::vector<Fragment> next;
  for (int32_t id : vocab_->special_tokens()) {
    const TokenType type = vocab_->type(id);
    if (!parse_special && (type == TokenType::kControl || type == TokenType::kUnknown)) continue;
    const std::string_view special = vocab_->text(id);
    if (text.find(special) == std::string_view::npos) continue;  // cheap global filter
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      const std::string_view region = text.substr(0, f.offset + f.length);
      size_t pos = f.offset;
      while (pos < region.size()) {
        size_t match = region.find(special, pos);
        if (match == std::string_view::npos) break;
        if (match > pos) next.push_back(Fragment{-1, pos, match - pos});
        next.push_back(Fragment{id, match, special.size()});
        pos = match + special.size();
      }
      if (pos < region.size()) next.push_back(Fragment{-1, pos, region.size() - pos});
    }
    frags.swap(next);
  }
  return frags;
}

void VocabTokenizer::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
  if (vocab_->kind() == TokenizerKind::kSpm) {
    spm_.encode(tok::escape_whitespace(text), out);
    return;
  }
  if (wpm_) {
    std::string fixed;
    wpm_->encode(tok::sanitize_utf8(text, fixed) ? std::string_view(fixed) : text, out);
    return;
  }
  if (bpe_) bpe_->encode(text, out);
}

std::vector<int32_t> VocabTokenizer::encode(std::string_view text,
                                            const TokenizeOptions& options) const {
  std::vector<int32_t> out;
  const std::vector<Fragment> frags = partition(text, options.parse_special);
  const bool add_bos = options.add_special && vocab_->add_bos() && vocab_->bos_id() >= 0;
  const bool add_eos = options.add_special && vocab_->add_eos() && vocab_->eos_id() >= 0;
  if (add_bos) out.push_back(vocab_->bos_id());

  if (vocab_->kind() == TokenizerKind::kSpm) {
    // A space is prefixed to the text at the start and after every special token.
    bool prev_special = true;
    std::string buf;
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        out.push_back(f.token);
        prev_special = true;
        continue;
      }
      buf.clear();
      if (vocab_->add_space_prefix() && prev_special) buf += ' ';
      buf.append(text.substr(f.offset, f.length));
      encode_plain(buf, out);
      prev_special = false;
    }
  } else {
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        out.push_back(f.token);
      } else {
        encode_plain(text.substr(f.offset, f.length), out);
      }
    }
  }

  if (add_eos) out.push_back(vocab_->eos_id());
  if (options.add_special && vocab_->add_sep() && vocab_->sep_id() >= 0) {
    out.push_back(vocab_->sep_id());
  }
  return out;
}

std::string VocabTokenizer::token_to_piece(int32_t id, bool render_special) const {
  if (!vocab_->valid(id)) return {};
  const TokenType type = vocab_->type(id);
  const std::string_view text = vocab_->text(id);
  switch (type) {
    case TokenType::kControl:
    case TokenType::kUnknown:
      return render_special ? std::string(text) : std::string();
    case TokenType::kUserDefined:
      return std::string(text);
    case TokenType::kNormal:
      if (vocab_->kind() != TokenizerKind::kBpe) {
        std::string out;
        out.reserve(text.size());
        for (size_t i = 0; i < text.size();) {
          if (text.compare(i, 3, "\xE2\x96\x81") == 0) {
            out += ' ';
            i += 3;
          } else {
            out += text[i++];
          }
        }
        return out;
      }
      return tok::BpeEncoder::decode_token_text(text);
    case TokenType::kByte: {
      if (vocab_->kind() != TokenizerKind::kSpm) return {};
      int byte = parse_byte_token(text);
      if (byte < 0) return {};
      return std::string(1, static_cast<char>(byte));
    }
    case TokenType::kUndefined:
    case TokenType::kUnused:
      return {};
  }
  return {};
}

std::string VocabTokenizer::decode(const std::vector<int32_t>& ids, bool render_special) const {
  const bool strip_prefix = (vocab_->kind() == TokenizerKind::kSpm && vocab_->add_space_prefix()) ||
                            vocab_->kind() == TokenizerKind::kWpm;
  if (!strip_prefix) {
    return Tokenizer::decode(ids, render_special);
  }
  std::string out;
  bool strip = true;  // at the start or right after a special token
  for (int32_t id : ids) {
    std::string piece = token_to_piece(id, render_special);
    const bool special = vocab_->valid(id) && is_special_type(vocab_->type(id));
    if (special) {
      out += piece;
      strip = true;
      continue;
    }
    if (piece.empty()) continue;
    if (strip && piece[0] == ' ') {
      out.append(piece, 1, std::string::npos);
    } else {
      out += piece;
    }
    strip = false;
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_gguf(const GgufFile& gguf) {
  auto tok = std::make_unique<VocabTokenizer>();
  LLMT_RETURN_IF_ERROR(tok->init(gguf));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool render_special) const {
  std::string out;
  for (int32_t id : ids) out += token_to_piece(id, render_special);
  return out;
}

}  // namespace llmt
