#include "tokenizer/wpm.h"

#include <algorithm>
#include <string>

#include "tokenizer/unicode-wpm.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab.h"

namespace llmt::tok {
namespace {

using namespace wpm_data;

bool is_whitespace(uint32_t c) {
  return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// The CJK ranges of BERT's BasicTokenizer (with its 0x2B920 quirk, as llama.cpp).
bool is_chinese_char(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

uint32_t nfd_first(uint32_t c) {
  if (c < 0xC0) return c;
  const NfdRange* end = kNfd + kNfdCount;
  const NfdRange* it =
      std::upper_bound(kNfd, end, c, [](uint32_t v, const NfdRange& r) { return v < r.first; });
  if (it == kNfd) return c;
  --it;
  return c <= it->last ? it->value : c;
}

int char_class(uint32_t c) {
  const ClassRun* end = kClassRuns + kClassRunCount;
  const ClassRun* it = std::upper_bound(kClassRuns, end, c,
                                        [](uint32_t v, const ClassRun& r) { return v < r.first; });
  return it == kClassRuns ? 0 : (it - 1)->cls;
}

uint32_t to_lower(uint32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  const CaseMap* end = kLower + kLowerCount;
  const CaseMap* it =
      std::lower_bound(kLower, end, c, [](const CaseMap& m, uint32_t v) { return m.from < v; });
  return (it != end && it->from == c) ? it->to : c;
}

// Decodes the well-formed UTF-8 sequence at text[pos]; advances pos.
uint32_t next_cpt(std::string_view text, size_t& pos) {
  const auto b0 = static_cast<uint8_t>(text[pos]);
  auto cb = [&](size_t k) {
    return static_cast<uint32_t>(static_cast<uint8_t>(text[pos + k]) & 0x3F);
  };
  uint32_t c;
  size_t n;
  if (b0 < 0x80) {
    c = b0, n = 1;
  } else if (b0 < 0xE0) {
    c = ((b0 & 0x1Fu) << 6) | cb(1), n = 2;
  } else if (b0 < 0xF0) {
    c = ((b0 & 0x0Fu) << 12) | (cb(1) << 6) | cb(2), n = 3;
  } else {
    c = ((b0 & 0x07u) << 18) | (cb(1) << 12) | (cb(2) << 6) | cb(3), n = 4;
  }
  pos += std::min(n, text.size() - pos);
  return c;
}

constexpr std::string_view kPhantomSpace = "\xE2\x96\x81";

}  // namespace

WpmEncoder::WpmEncoder(const Vocab& vocab) : vocab_(&vocab) {
  for (std::string_view t : vocab.texts()) max_token_len_ = std::max(max_token_len_, t.size());
}

void WpmEncoder::encode(std::string_view text, std::vector<int32_t>& out) const {
  // Words, each already prefixed with the phantom space.
  std::vector<std::string> words;
  std::string cur;
  auto finish = [&]() {
    if (!cur.empty()) words.push_back(std::string(kPhantomSpace) + cur);
    cur.clear();
  };
  for (size_t pos = 0; pos < text.size();) {
    const uint32_t c = nfd_first(next_cpt(text, pos));
    if (is_whitespace(c)) {
      finish();
      continue;
    }
    const int cls = char_class(c);
    if (c == 0 || c == 0xFFFD || cls == 1) continue;
    const uint32_t lower = to_lower(c);
    if (cls == 2 || (c < 0x7F && cls == 3) || is_chinese_char(c)) {
      finish();
      append_utf8(lower, cur);
      finish();
    } else {
      append_utf8(lower, cur);
    }
  }
  finish();

  for (const std::string& word : words) {
    const size_t start = out.size();
    const size_t n = word.size();
    bool ok = true;
    for (size_t i = 0; i < n && ok;) {
      ok = false;
      for (size_t j = std::min(n, i + max_token_len_); j > i; --j) {
        const int32_t id = vocab_->find(std::string_view(word).substr(i, j - i));
        if (id >= 0) {
          out.push_back(id);
          i = j;
          ok = true;
          break;
        }
      }
    }
    if (!ok) out.resize(start);
    if (out.size() == start && vocab_->unk_id() >= 0) out.push_back(vocab_->unk_id());
  }
}

}  // namespace llmt::tok
