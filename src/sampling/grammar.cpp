// The grammar automaton, the vocabulary trie and the per-thread matcher (see grammar.h).
#include "llmthreads/grammar.h"

#include <algorithm>
#include <cstring>

#include "llmthreads/tokenizer.h"
#include "sampling/grammar-internal.h"

namespace llmt {

namespace grammar_detail {

namespace {

constexpr uint32_t kMaxCodepoint = 0x10FFFF;

uint64_t state_key(int32_t set, uint32_t partial, uint8_t remaining, uint8_t lo, uint8_t hi) {
  // set < 2^28 (kMaxStates bounds the sets), partial < 2^21, remaining < 4.
  return (static_cast<uint64_t>(set) << 36) | (static_cast<uint64_t>(partial) << 15) |
         (static_cast<uint64_t>(remaining) << 13) | (static_cast<uint64_t>(lo & 0x3F) << 6) |
         static_cast<uint64_t>(hi & 0x3F);
}

}  // namespace

size_t Automaton::VecHash::operator()(const std::vector<int32_t>& v) const {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int32_t x : v) {
    h ^= static_cast<uint32_t>(x);
    h *= 0x100000001b3ull;
    h ^= h >> 29;
  }
  return static_cast<size_t>(h);
}

Automaton::Automaton(const Rules& rules) : rules_(rules) {
  std::vector<int32_t> stacks;
  ++round_;
  for (int32_t alt : rules_.alts[static_cast<size_t>(rules_.root)]) {
    if (rules_.elems[static_cast<size_t>(alt)].kind == ElemKind::kEnd) {
      stacks.push_back(-1);
    } else {
      expand(node(alt, -1), &stacks);
    }
  }
  State s;
  s.set = intern_set(&stacks);
  // Cannot fail: the first state.
  start_ = intern_state(s).value();
}

int32_t Automaton::node(int32_t pos, int32_t parent) {
  const uint64_t key =
      (static_cast<uint64_t>(static_cast<uint32_t>(pos)) << 32) | static_cast<uint32_t>(parent + 1);
  auto [it, fresh] = node_ids_.try_emplace(key, static_cast<int32_t>(nodes_.size()));
  if (fresh) {
    nodes_.emplace_back(pos, parent);
    visited_.push_back(0);
  }
  return it->second;
}

void Automaton::expand(int32_t id, std::vector<int32_t>* out) {
  if (id < 0) {
    out->push_back(-1);
    return;
  }
  if (visited_[static_cast<size_t>(id)] == round_) return;  // its leaves are already in `out`
  visited_[static_cast<size_t>(id)] = round_;
  const auto [pos, parent] = nodes_[static_cast<size_t>(id)];
  const Elem e = rules_.elems[static_cast<size_t>(pos)];
  if (e.kind == ElemKind::kChar) {
    out->push_back(id);
    return;
  }
  // A rule reference: continue after it once one of its alternatives is done.
  const bool last = rules_.elems[static_cast<size_t>(pos) + 1].kind == ElemKind::kEnd;
  const int32_t base = last ? parent : node(pos + 1, parent);
  for (int32_t alt : rules_.alts[static_cast<size_t>(e.arg)]) {
    if (rules_.elems[static_cast<size_t>(alt)].kind == ElemKind::kEnd) {
      expand(base, out);
    } else {
      expand(node(alt, base), out);
    }
  }
}

void Automaton::expand_after_char(int32_t id, std::vector<int32_t>* out) {
  const auto [pos, parent] = nodes_[static_cast<size_t>(id)];
  if (rules_.elems[static_cast<size_t>(pos) + 1].kind == ElemKind::kEnd) {
    expand(parent, out);
  } else {
    expand(node(pos + 1, parent), out);
  }
}

int32_t Automaton::intern_set(std::vector<int32_t>* stacks) {
  std::sort(stacks->begin(), stacks->end());
  stacks->erase(std::unique(stacks->begin(), stacks->end()), stacks->end());
  auto it = set_ids_.find(*stacks);
  if (it != set_ids_.end()) return it->second;
  const auto id = static_cast<int32_t>(sets_.size());
  sets_.push_back(*stacks);
  set_ids_.emplace(*stacks, id);
  return id;
}

Result<int32_t> Automaton::intern_state(const State& s0) {
  const uint64_t key = state_key(s0.set, s0.partial, s0.remaining, s0.lo, s0.hi);
  auto it = state_ids_.find(key);
  if (it != state_ids_.end()) return it->second;
  if (states_.size() >= kMaxStates)
    return Status(StatusCode::kOutOfMemory, "grammar: the automaton passed its limit of " +
                                                std::to_string(kMaxStates) + " states");
  State s = s0;
  const auto& set = sets_[static_cast<size_t>(s.set)];
  const bool has_empty = !set.empty() && set[0] == -1;
  s.accepting = s.remaining == 0 && has_empty;
  s.finished = s.accepting && set.size() == 1;
  const auto id = static_cast<int32_t>(states_.size());
  states_.push_back(s);
  state_ids_.emplace(key, id);
  trans_.resize(trans_.size() + 256, kUnknown);
  masks_.emplace_back();
  return id;
}

Result<int32_t> Automaton::compute_step(int32_t state, uint8_t b) {
  const State cur = states_[static_cast<size_t>(state)];
  State next;
  uint32_t cp = 0;
  bool complete = false;
  if (cur.remaining > 0) {
    if (b < cur.lo || b > cur.hi) return kDead;
    cp = (cur.partial << 6) | (b & 0x3Fu);
    next.remaining = static_cast<uint8_t>(cur.remaining - 1);
    complete = next.remaining == 0;
  } else if (b < 0x80) {
    cp = b;
    complete = true;
  } else if (b >= 0xC2 && b <= 0xDF) {
    cp = b & 0x1Fu, next.remaining = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    cp = b & 0x0Fu, next.remaining = 2;
    if (b == 0xE0) next.lo = 0xA0;  // no overlongs
    if (b == 0xED) next.hi = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    cp = b & 0x07u, next.remaining = 3;
    if (b == 0xF0) next.lo = 0x90;
    if (b == 0xF4) next.hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return kDead;
  }
  scratch_.clear();
  const std::vector<int32_t>& set = sets_[static_cast<size_t>(cur.set)];
  if (complete) {
    ++round_;
    for (int32_t id : set) {
      if (id < 0) continue;
      const Elem e = rules_.elems[static_cast<size_t>(nodes_[static_cast<size_t>(id)].first)];
      if (rules_.classes[static_cast<size_t>(e.arg)].contains(cp)) expand_after_char(id, &scratch_);
    }
  } else {
    // Keep the stacks whose class meets some character this prefix can still become: the next
    // byte is in [next.lo, next.hi], any bytes after it are free (so no overlong or surrogate
    // counts).
    const unsigned rest = 6u * (next.remaining - 1u);
    const uint32_t lo = ((cp << 6) | (next.lo & 0x3Fu)) << rest;
    const uint32_t hi =
        std::min((((cp << 6) | (next.hi & 0x3Fu)) << rest) | ((1u << rest) - 1), kMaxCodepoint);
    for (int32_t id : set) {
      if (id < 0) continue;
      const Elem e = rules_.elems[static_cast<size_t>(nodes_[static_cast<size_t>(id)].first)];
      if (rules_.classes[static_cast<size_t>(e.arg)].intersects(lo, hi)) scratch_.push_back(id);
    }
    next.partial = cp;
  }
  if (scratch_.empty()) return kDead;
  std::vector<int32_t> stacks = scratch_;
  next.set = intern_set(&stacks);
  return intern_state(next);
}

Result<int32_t> Automaton::step(int32_t state, uint8_t byte) {
  const size_t slot = static_cast<size_t>(state) * 256 + byte;
  int32_t t = trans_[slot];
  if (t != kUnknown) return t;
  LLMT_ASSIGN_OR_RETURN(t, compute_step(state, byte));
  trans_[slot] = t;
  return t;
}

Result<int32_t> Automaton::walk(int32_t state, std::string_view bytes) {
  for (char c : bytes) {
    LLMT_ASSIGN_OR_RETURN(state, step(state, static_cast<uint8_t>(c)));
    if (state == kDead) return kDead;
  }
  return state;
}

void Automaton::fill_mask(int32_t state, const TokenVocab& vocab, uint64_t* bits,
                          int64_t* n_allowed) {
  // Preorder walk of the trie; walk_states_[d] is the state after the first d bytes of the
  // current path. A dead node skips its whole subtree.
  const auto& bytes = vocab.trie_bytes();
  const auto& depth = vocab.trie_depth();
  const auto& end = vocab.trie_end();
  const auto& tok_begin = vocab.trie_tok_begin();
  const auto& ids = vocab.trie_ids();
  const size_t n = vocab.n_nodes();
  int64_t count = 0;
  walk_states_.resize(1);
  walk_states_[0] = state;
  size_t i = 1;
  while (i < n) {
    const uint16_t d = depth[i];
    const int32_t prev = walk_states_[d - 1];
    const size_t slot = static_cast<size_t>(prev) * 256 + bytes[i];
    int32_t t = trans_[slot];
    if (t == kUnknown) {
      Result<int32_t> r = compute_step(prev, bytes[i]);
      // Past the state limit: treat the subtree as not allowed (the caller sees fewer tokens).
      t = r.is_ok() ? *r : kDead;
      if (r.is_ok()) trans_[slot] = t;
    }
    if (t == kDead) {
      i = end[i];
      continue;
    }
    if (walk_states_.size() <= d) walk_states_.resize(d + 1u);
    walk_states_[d] = t;
    for (uint32_t k = tok_begin[i]; k < tok_begin[i + 1]; ++k) {
      const auto id = static_cast<uint32_t>(ids[k]);
      bits[id / 64] |= uint64_t{1} << (id % 64);
      ++count;
    }
    ++i;
  }
  if (accepting(state)) {
    for (int32_t id : vocab.eog_ids()) {
      const auto u = static_cast<uint32_t>(id);
      if (!((bits[u / 64] >> (u % 64)) & 1)) ++count;
      bits[u / 64] |= uint64_t{1} << (u % 64);
    }
  }
  *n_allowed = count;
}

Result<const uint64_t*> Automaton::mask(int32_t state,
                                        const std::shared_ptr<const TokenVocab>& vocab,
                                        std::vector<uint64_t>* scratch, int64_t* n_allowed) {
  const size_t n_words = (static_cast<size_t>(vocab->n_vocab()) + 63) / 64;
  auto& cached = masks_[static_cast<size_t>(state)];
  for (auto it = cached.begin(); it != cached.end();) {
    if (it->vocab.expired()) {
      mask_bytes_ -= n_words * 8;  // approximate: vocabularies of one size
      it = cached.erase(it);
      continue;
    }
    if (it->key == vocab.get()) {
      *n_allowed = it->n_allowed;
      return static_cast<const uint64_t*>(it->bits.get());
    }
    ++it;
  }
  uint64_t* bits = nullptr;
  std::unique_ptr<uint64_t[]> owned;
  if (mask_bytes_ + n_words * 8 <= kMaxMaskBytes) {
    owned = std::make_unique<uint64_t[]>(n_words);  // zeroed
    bits = owned.get();
  } else {
    scratch->assign(n_words, 0);
    bits = scratch->data();
  }
  fill_mask(state, *vocab, bits, n_allowed);
  if (owned) {
    mask_bytes_ += n_words * 8;
    // fill_mask may have added states (masks_ grew): index again.
    masks_[static_cast<size_t>(state)].push_back(
        {vocab, vocab.get(), std::move(owned), *n_allowed});
  }
  return static_cast<const uint64_t*>(bits);
}

}  // namespace grammar_detail

using grammar_detail::Automaton;

// ---------------------------------------------------------------------------------------------
// Grammar

Grammar::~Grammar() = default;

Result<std::shared_ptr<const Grammar>> Grammar::parse(std::string_view gbnf) {
  LLMT_ASSIGN_OR_RETURN(auto rules, grammar_detail::parse_gbnf(gbnf));
  std::shared_ptr<Grammar> g(new Grammar());
  g->text_ = std::string(gbnf);
  g->rules_ = std::move(rules);
  g->automaton_ = std::make_unique<Automaton>(*g->rules_);
  return std::shared_ptr<const Grammar>(std::move(g));
}

Result<std::shared_ptr<const Grammar>> Grammar::from_json_schema(std::string_view schema_json) {
  LLMT_ASSIGN_OR_RETURN(std::string gbnf, json_schema_to_gbnf(schema_json));
  return parse(gbnf);
}

int32_t Grammar::n_rules() const {
  return static_cast<int32_t>(rules_->names.size());
}

bool Grammar::matches(std::string_view text) const {
  std::lock_guard<std::mutex> lock(automaton_->mu());
  Result<int32_t> s = automaton_->walk(automaton_->start(), text);
  return s.is_ok() && *s != Automaton::kDead && automaton_->accepting(*s);
}

// ---------------------------------------------------------------------------------------------
// TokenVocab

std::shared_ptr<const TokenVocab> TokenVocab::from_tokenizer(const Tokenizer& tok) {
  std::vector<std::string> pieces(static_cast<size_t>(tok.n_vocab()));
  std::vector<int32_t> eog;
  for (int32_t id = 0; id < tok.n_vocab(); ++id) {
    if (tok.is_eog(id)) {
      eog.push_back(id);
    } else {
      pieces[static_cast<size_t>(id)] = tok.token_to_piece(id, false);
    }
  }
  return from_pieces(std::move(pieces), std::move(eog));
}

std::shared_ptr<const TokenVocab> TokenVocab::from_pieces(std::vector<std::string> pieces,
                                                          std::vector<int32_t> eog_ids) {
  std::shared_ptr<TokenVocab> v(new TokenVocab());
  v->pieces_ = std::move(pieces);
  v->is_eog_.assign(v->pieces_.size(), 0);
  for (int32_t id : eog_ids) {
    if (id < 0 || static_cast<size_t>(id) >= v->pieces_.size()) continue;
    if (!v->is_eog_[static_cast<size_t>(id)]) v->eog_ids_.push_back(id);
    v->is_eog_[static_cast<size_t>(id)] = 1;
  }
  v->build_trie();
  return v;
}

void TokenVocab::build_trie() {
  // Insert the non-empty, non-EOG pieces in sorted order: each new node then comes after every
  // node of the subtrees to its left, which is preorder.
  std::vector<int32_t> order;
  for (size_t i = 0; i < pieces_.size(); ++i)
    if (!is_eog_[i] && !pieces_[i].empty()) order.push_back(static_cast<int32_t>(i));
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    const auto& pa = pieces_[static_cast<size_t>(a)];
    const auto& pb = pieces_[static_cast<size_t>(b)];
    return pa != pb ? pa < pb : a < b;
  });
  byte_ = {0};
  depth_ = {0};
  end_ = {0};
  std::vector<uint32_t> n_tok = {0};
  std::vector<uint32_t> path = {0};  // path[d] = node at depth d
  const std::string* prev = nullptr;
  for (int32_t id : order) {
    const std::string& p = pieces_[static_cast<size_t>(id)];
    size_t common = 0;
    if (prev) {
      while (common < p.size() && common < prev->size() && p[common] == (*prev)[common]) ++common;
    }
    // Close the subtrees deeper than the common prefix.
    while (path.size() > common + 1) {
      end_[path.back()] = static_cast<uint32_t>(byte_.size());
      path.pop_back();
    }
    for (size_t d = common; d < p.size(); ++d) {
      byte_.push_back(static_cast<uint8_t>(p[d]));
      depth_.push_back(static_cast<uint16_t>(std::min<size_t>(d + 1, UINT16_MAX)));
      end_.push_back(0);
      n_tok.push_back(0);
      path.push_back(static_cast<uint32_t>(byte_.size() - 1));
    }
    ++n_tok[path.back()];
    prev = &p;
  }
  while (!path.empty()) {
    end_[path.back()] = static_cast<uint32_t>(byte_.size());
    path.pop_back();
  }
  // Token lists in node order: the sorted order already groups them by node.
  tok_begin_.assign(byte_.size() + 1, 0);
  for (size_t i = 0; i < byte_.size(); ++i) tok_begin_[i + 1] = tok_begin_[i] + n_tok[i];
  ids_ = std::move(order);
}

// ---------------------------------------------------------------------------------------------
// GrammarMatcher

GrammarMatcher::GrammarMatcher(GrammarMatcher&&) noexcept = default;
GrammarMatcher& GrammarMatcher::operator=(GrammarMatcher&&) noexcept = default;
GrammarMatcher::~GrammarMatcher() = default;

Result<GrammarMatcher> GrammarMatcher::create(std::shared_ptr<const Grammar> grammar,
                                              std::shared_ptr<const TokenVocab> vocab) {
  if (!grammar || !vocab) return invalid_argument("grammar: matcher needs a grammar and a vocab");
  if (vocab->n_vocab() < 1) return invalid_argument("grammar: empty vocabulary");
  GrammarMatcher m;
  m.state_ = grammar->automaton().start();
  m.grammar_ = std::move(grammar);
  m.vocab_ = std::move(vocab);
  return m;
}

Result<std::span<const uint64_t>> GrammarMatcher::allowed() {
  const size_t n_words = (static_cast<size_t>(vocab_->n_vocab()) + 63) / 64;
  if (ended_) return invalid_argument("grammar: the output has already ended");
  Automaton& a = grammar_->automaton();
  int64_t n_allowed = 0;
  const uint64_t* bits = nullptr;
  {
    std::lock_guard<std::mutex> lock(a.mu());
    LLMT_ASSIGN_OR_RETURN(bits, a.mask(state_, vocab_, &scratch_, &n_allowed));
  }
  if (n_allowed == 0) {
    return invalid_argument("grammar: no token can continue the output after " +
                            std::to_string(n_bytes_) +
                            " bytes; the grammar cannot be satisfied with this vocabulary");
  }
  return std::span<const uint64_t>(bits, n_words);
}

bool GrammarMatcher::is_allowed(int32_t token) {
  if (ended_ || token < 0 || token >= vocab_->n_vocab()) return false;
  Automaton& a = grammar_->automaton();
  std::lock_guard<std::mutex> lock(a.mu());
  if (vocab_->is_eog(token)) return a.accepting(state_);
  const std::string& p = vocab_->piece(token);
  if (p.empty()) return false;
  Result<int32_t> s = a.walk(state_, p);
  return s.is_ok() && *s != Automaton::kDead;
}

Status GrammarMatcher::accept(int32_t token) {
  if (ended_) return invalid_argument("grammar: the output has already ended");
  if (token < 0 || token >= vocab_->n_vocab())
    return invalid_argument("grammar: token " + std::to_string(token) +
                            " is outside the vocabulary");
  Automaton& a = grammar_->automaton();
  std::lock_guard<std::mutex> lock(a.mu());
  if (vocab_->is_eog(token)) {
    if (!a.accepting(state_))
      return invalid_argument("grammar: end of generation where the grammar cannot end");
    ended_ = true;
    return Status::ok();
  }
  const std::string& p = vocab_->piece(token);
  if (p.empty())
    return invalid_argument("grammar: token " + std::to_string(token) + " has no text");
  LLMT_ASSIGN_OR_RETURN(int32_t s, a.walk(state_, p));
  if (s == Automaton::kDead)
    return invalid_argument("grammar: token " + std::to_string(token) + " is not allowed here");
  state_ = s;
  n_bytes_ += static_cast<int64_t>(p.size());
  return Status::ok();
}

bool GrammarMatcher::can_end() const {
  Automaton& a = grammar_->automaton();
  std::lock_guard<std::mutex> lock(a.mu());
  return !ended_ && a.accepting(state_);
}

bool GrammarMatcher::is_finished() const {
  Automaton& a = grammar_->automaton();
  std::lock_guard<std::mutex> lock(a.mu());
  return ended_ || a.finished(state_);
}

}  // namespace llmt
