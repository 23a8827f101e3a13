#include "tokenizer/spm.h"

#include <algorithm>
#include <queue>

#include "tokenizer/vocab.h"

namespace llmt::tok {
namespace {

// Byte length of a UTF-8 sequence judged from its first byte only (continuation and invalid
// lead bytes count as 1), as SentencePiece's splitter does.
size_t utf8_len_from_lead(uint8_t c) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[c >> 4];
}

struct Symbol {
  int32_t prev;
  int32_t next;
  size_t offset;  // into the text
  size_t n;       // bytes; 0 once merged into its left neighbour
};

struct Bigram {
  int32_t left;
  int32_t right;
  float score;
  size_t size;  // bytes of the merged text, to detect stale entries
};

// Highest score on top; among equal scores the leftmost pair.
struct BigramLess {
  bool operator()(const Bigram& l, const Bigram& r) const {
    return l.score < r.score || (l.score == r.score && l.left > r.left);
  }
};

}  // namespace

std::string escape_whitespace(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 4);
  for (char c : text) {
    if (c == ' ') {
      out += "\xE2\x96\x81";
    } else {
      out += c;
    }
  }
  return out;
}

void SpmEncoder::encode(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  const Vocab& vocab = *vocab_;

  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t offs = 0; offs < text.size();) {
    size_t n = std::min(utf8_len_from_lead(static_cast<uint8_t>(text[offs])), text.size() - offs);
    int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{index - 1, offs + n == text.size() ? -1 : index + 1, offs, n});
    offs += n;
  }

  std::priority_queue<Bigram, std::vector<Bigram>, BigramLess> queue;
  auto try_add_bigram = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    std::string_view merged = text.substr(symbols[left].offset, symbols[left].n + symbols[right].n);
    int32_t id = vocab.find(merged);
    if (id < 0) return;
    queue.push(Bigram{left, right, vocab.score(id), merged.size()});
  };

  for (size_t i = 1; i < symbols.size(); ++i) {
    try_add_bigram(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  }

  while (!queue.empty()) {
    Bigram bigram = queue.top();
    queue.pop();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    // Skip pairs made stale by an earlier merge.
    if (left.n == 0 || right.n == 0 || left.n + right.n != bigram.size) continue;
    left.n += right.n;
    right.n = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    try_add_bigram(left.prev, bigram.left);
    try_add_bigram(bigram.left, left.next);
  }

  for (int32_t i = 0; i != -1; i = symbols[i].next) {
    std::string_view piece = text.substr(symbols[i].offset, symbols[i].n);
    int32_t id = vocab.find(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    // Byte fallback (merged symbols are always in the vocabulary, so only single characters
    // get here).
    for (char c : piece) {
      int32_t b = vocab.byte_to_token(static_cast<uint8_t>(c));
      if (b >= 0) out.push_back(b);
    }
  }
}

}  // namespace llmt::tok
