// Byte-level BPE encoder. See bpe.h for the contract.
#include "tokenizer/bpe.h"

#include <algorithm>
#include <array>
#include <climits>

namespace llmt::tok {

namespace {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68 bytes
// (controls, space, DEL, NBSP, soft hyphen, ...) map in order to U+0100..U+0143.
constexpr bool is_self_mapped(int b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

constexpr std::array<uint16_t, 256> make_byte_to_cp() {
  std::array<uint16_t, 256> t{};
  int n = 0;
  for (int b = 0; b < 256; ++b) t[b] = is_self_mapped(b) ? b : static_cast<uint16_t>(256 + n++);
  return t;
}

constexpr int kAlphabetEnd = 256 + 68;  // code points >= this are not in the alphabet

constexpr std::array<int16_t, kAlphabetEnd> make_cp_to_byte() {
  std::array<int16_t, kAlphabetEnd> t{};
  for (auto& v : t) v = -1;
  const auto fwd = make_byte_to_cp();
  for (int b = 0; b < 256; ++b) t[fwd[b]] = static_cast<int16_t>(b);
  return t;
}

constexpr std::array<uint16_t, 256> kByteToCp = make_byte_to_cp();
constexpr std::array<int16_t, kAlphabetEnd> kCpToByte = make_cp_to_byte();

void append_alphabet_char(uint8_t byte, std::string& out) {
  const uint16_t cp = kByteToCp[byte];
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A candidate merge of the symbol at `left` with its right neighbour. It is stale (skipped) when
// either symbol changed since it was queued.
struct Candidate {
  int32_t rank;
  int32_t left;
  int32_t left_sym;
  int32_t right_sym;
  int32_t result;  // symbol of the merged pair
};

// Min-heap order for std::*_heap (which build max-heaps): lowest rank, then leftmost, on top.
struct CandidateAfter {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
  }
};

}  // namespace

struct BpeEncoder::Scratch {
  std::vector<int32_t> sym;   // symbol at each position; -1 once merged into its left neighbour
  std::vector<int32_t> prev;  // linked list over live positions
  std::vector<int32_t> next;
  std::vector<Candidate> heap;
  std::vector<TextSpan> pieces;
  std::string encoded;
};

BpeEncoder::~BpeEncoder() = default;

std::string BpeEncoder::encode_bytes(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) append_alphabet_char(static_cast<uint8_t>(c), out);
  return out;
}

std::string BpeEncoder::decode_token_text(std::string_view token_text) {
  std::string out;
  out.reserve(token_text.size());
  size_t pos = 0;
  while (pos < token_text.size()) {
    const size_t n = utf8_sequence_length(token_text, pos);
    if (n == 0 || n > 2) return std::string(token_text);
    uint32_t cp = static_cast<uint8_t>(token_text[pos]);
    if (n == 2) {
      cp = ((cp & 0x1Fu) << 6) | (static_cast<uint8_t>(token_text[pos + 1]) & 0x3Fu);
    }
    if (cp >= static_cast<uint32_t>(kAlphabetEnd) || kCpToByte[cp] < 0) {
      return std::string(token_text);
    }
    out += static_cast<char>(kCpToByte[cp]);
    pos += n;
  }
  return out;
}

int32_t BpeEncoder::intern(std::string_view s) {
  auto [it, inserted] = text_to_sym_.try_emplace(std::string(s), 0);
  if (inserted) {
    it->second = n_vocab_ + static_cast<int32_t>(extra_text_.size());
    extra_text_.emplace_back(s);
  }
  return it->second;
}

namespace {
inline uint64_t merge_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}
inline uint64_t merge_hash(uint64_t key) {
  uint64_t h = key * 0x9E3779B97F4A7C15ull;
  return h ^ (h >> 31);
}
}  // namespace

const BpeEncoder::MergeEntry* BpeEncoder::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = merge_key(left, right);
  for (uint64_t i = merge_hash(key) & merge_mask_;; i = (i + 1) & merge_mask_) {
    const MergeEntry& e = merge_table_[i];
    if (e.key == key) return &e;
    if (e.key == kEmptyKey) return nullptr;
  }
}

void BpeEncoder::insert_merge(int32_t left, int32_t right, int32_t rank, int32_t result) {
  const uint64_t key = merge_key(left, right);
  for (uint64_t i = merge_hash(key) & merge_mask_;; i = (i + 1) & merge_mask_) {
    MergeEntry& e = merge_table_[i];
    if (e.key == key) return;  // the first (lowest) rank wins
    if (e.key == kEmptyKey) {
      e = MergeEntry{key, rank, result};
      return;
    }
  }
}

Result<std::unique_ptr<BpeEncoder>> BpeEncoder::create(const std::vector<std::string_view>& tokens,
                                                       const std::vector<std::string_view>& merges,
                                                       std::string_view pre) {
  if (tokens.empty()) return invalid_argument("tokenizer.ggml.tokens: empty vocabulary");
  if (tokens.size() > static_cast<size_t>(INT32_MAX / 4)) {
    return invalid_argument("tokenizer.ggml.tokens: too many tokens (" +
                            std::to_string(tokens.size()) + ")");
  }
  if (merges.size() > static_cast<size_t>(INT32_MAX / 4)) {
    return invalid_argument("tokenizer.ggml.merges: too many merges (" +
                            std::to_string(merges.size()) + ")");
  }
  LLMT_ASSIGN_OR_RETURN(auto pre_tok, PreTokenizer::create(pre));

  std::unique_ptr<BpeEncoder> enc(new BpeEncoder());
  enc->pre_ = std::move(pre_tok);
  enc->n_vocab_ = static_cast<int32_t>(tokens.size());
  enc->text_to_sym_.reserve(tokens.size() + merges.size() / 4 + 300);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i].empty()) continue;
    enc->text_to_sym_.insert_or_assign(std::string(tokens[i]), static_cast<int32_t>(i));
  }
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    append_alphabet_char(static_cast<uint8_t>(b), ch);
    enc->byte_sym_[b] = enc->intern(ch);
  }

  uint64_t capacity = 16;
  while (capacity < merges.size() * 2 + 16) capacity *= 2;
  enc->merge_table_.assign(capacity, MergeEntry{kEmptyKey, 0, 0});
  enc->merge_mask_ = capacity - 1;
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string_view m = merges[rank];
    const size_t space = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
    if (space == std::string_view::npos) continue;
    const std::string_view left = m.substr(0, space);
    const std::string_view right = m.substr(space + 1);
    if (right.empty()) continue;
    const int32_t l = enc->intern(left);
    const int32_t r = enc->intern(right);
    joined.assign(left);
    joined.append(right);
    const int32_t res = enc->intern(joined);
    enc->insert_merge(l, r, static_cast<int32_t>(rank), res);
  }
  return enc;
}

void BpeEncoder::emit_symbol(int32_t sym, std::vector<int32_t>& out) const {
  if (sym < n_vocab_) {
    out.push_back(sym);
    return;
  }
  // Not a token: llama.cpp looks up each byte of the symbol's text as a one-byte string.
  const std::string& text = extra_text_[static_cast<size_t>(sym - n_vocab_)];
  for (char c : text) {
    auto it = text_to_sym_.find(std::string(1, c));
    if (it != text_to_sym_.end() && it->second < n_vocab_) out.push_back(it->second);
  }
}

void BpeEncoder::encode_piece(std::string_view piece, std::vector<int32_t>& out, Scratch& s) const {
  const auto n = static_cast<int32_t>(piece.size());
  if (n == 0) return;
  if (pre_->ignore_merges()) {
    s.encoded.clear();
    for (char c : piece) append_alphabet_char(static_cast<uint8_t>(c), s.encoded);
    auto it = text_to_sym_.find(s.encoded);
    if (it != text_to_sym_.end() && it->second < n_vocab_) {
      out.push_back(it->second);
      return;
    }
  }
  if (n == 1) {
    emit_symbol(byte_sym_[static_cast<uint8_t>(piece[0])], out);
    return;
  }

  s.sym.resize(static_cast<size_t>(n));
  s.prev.resize(static_cast<size_t>(n));
  s.next.resize(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    s.sym[i] = byte_sym_[static_cast<uint8_t>(piece[static_cast<size_t>(i)])];
    s.prev[i] = i - 1;
    s.next[i] = i + 1 < n ? i + 1 : -1;
  }

  s.heap.clear();
  auto push_candidate = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = s.next[left];
    if (right < 0) return;
    const MergeEntry* e = find_merge(s.sym[left], s.sym[right]);
    if (!e) return;
    s.heap.push_back(Candidate{e->rank, left, s.sym[left], s.sym[right], e->result});
    std::push_heap(s.heap.begin(), s.heap.end(), CandidateAfter{});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_candidate(i);

  while (!s.heap.empty()) {
    std::pop_heap(s.heap.begin(), s.heap.end(), CandidateAfter{});
    const Candidate c = s.heap.back();
    s.heap.pop_back();
    const int32_t left = c.left;
    if (s.sym[left] != c.left_sym) continue;  // merged away or grown since queued
    const int32_t right = s.next[left];
    if (right < 0 || s.sym[right] != c.right_sym) continue;

    s.sym[left] = c.result;
    s.sym[right] = -1;
    const int32_t after = s.next[right];
    s.next[left] = after;
    if (after >= 0) s.prev[after] = left;

    push_candidate(s.prev[left]);
    push_candidate(left);
  }

  for (int32_t i = 0; i >= 0; i = s.next[i]) emit_symbol(s.sym[i], out);
}

void BpeEncoder::encode(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string repaired;
  if (sanitize_utf8(text, repaired)) text = repaired;

  Scratch scratch;
  scratch.pieces.reserve(text.size() / 4 + 4);
  pre_->split(text, scratch.pieces);
  out.reserve(out.size() + text.size() / 3 + 4);
  for (const TextSpan& span : scratch.pieces) {
    encode_piece(text.substr(span.begin, span.end - span.begin), out, scratch);
  }
}

}  // namespace llmt::tok
