// StreamDecoder: incremental detokenization that only ever emits complete, valid UTF-8.
#include "llmthreads/tokenizer.h"

namespace llmt {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

bool is_cont(uint8_t c) {
  return (c & 0xC0) == 0x80;
}

// Classifies the sequence starting at s[i]: returns its length when it is a complete valid
// character, 0 when it is a valid but incomplete prefix (more bytes could complete it), and -1
// when s[i] cannot start a valid character here.
int classify(std::string_view s, size_t i) {
  const uint8_t c = static_cast<uint8_t>(s[i]);
  if (c < 0x80) return 1;
  int len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong forms
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return -1;
  }
  for (int k = 1; k < len; ++k) {
    if (i + k >= s.size()) return 0;
    const uint8_t b = static_cast<uint8_t>(s[i + k]);
    if (k == 1 ? (b < lo || b > hi) : !is_cont(b)) return -1;
  }
  return len;
}

}  // namespace

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_->token_to_piece(id, render_special_);
  return drain(/*final=*/false);
}

std::string StreamDecoder::flush() {
  return drain(/*final=*/true);
}

std::string StreamDecoder::drain(bool final) {
  std::string out;
  const std::string_view s(pending_);
  size_t i = 0;
  bool in_bad_run = false;
  while (i < s.size()) {
    const int r = classify(s, i);
    if (r > 0) {
      out.append(s.substr(i, r));
      i += r;
      in_bad_run = false;
    } else if (r == 0 && !final) {
      break;  // hold the incomplete character
    } else {
      // An invalid byte, or (at the end of the stream) an incomplete character.
      if (!in_bad_run) out.append(kReplacement);
      in_bad_run = r < 0;
      i += r < 0 ? 1 : s.size() - i;
    }
  }
  pending_.erase(0, i);
  return out;
}

}  // namespace llmt
