// Internal to src/sampling: the compiled form of a GBNF grammar and its byte automaton.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "llmthreads/grammar.h"
#include "llmthreads/status.h"

namespace llmt::grammar_detail {

enum class ElemKind : uint8_t { kEnd, kChar, kRef };

// One element of an alternative: a character class (arg = class id), a rule reference (arg = rule
// id), or the end of the alternative.
struct Elem {
  ElemKind kind = ElemKind::kEnd;
  int32_t arg = 0;
};

// A set of code points: sorted, disjoint, non-adjacent inclusive ranges, plus a bitmap of ASCII.
struct CharClass {
  std::vector<std::pair<uint32_t, uint32_t>> ranges;
  uint64_t ascii[2] = {0, 0};

  bool contains(uint32_t c) const;
  // Whether some code point in [lo, hi] is in the set.
  bool intersects(uint32_t lo, uint32_t hi) const;
};

// Rules flattened: every alternative is a run of elems ending in kEnd. A position is an index
// into elems.
struct Rules {
  std::vector<Elem> elems;
  std::vector<std::vector<int32_t>> alts;  // per rule: start positions of its alternatives
  std::vector<std::string> names;          // per rule
  std::vector<CharClass> classes;
  int32_t root = 0;
};

// GBNF text -> rules (grammar-parser.cpp). Errors are invalid_argument with line and column.
Result<std::unique_ptr<Rules>> parse_gbnf(std::string_view text);

// The byte-level automaton of a grammar, built on demand. A state is a set of pushdown stacks
// (hash-consed: a stack is a node (position, parent node), parent -1 = bottom; the empty stack,
// id -1, means "the grammar may end here") plus a pending partial UTF-8 character. Each state's
// 256 transitions are computed once. Token masks are cached per (state, vocabulary).
//
// Thread-safety: every member but the constructor requires mu() held.
class Automaton {
 public:
  static constexpr int32_t kDead = -2;
  static constexpr int32_t kUnknown = -1;
  // Limits: states (1 KiB of transitions each) and cached mask bytes.
  static constexpr size_t kMaxStates = size_t{1} << 18;
  static constexpr size_t kMaxMaskBytes = size_t{256} << 20;

  explicit Automaton(const Rules& rules);
  std::mutex& mu() { return mu_; }

  int32_t start() const { return start_; }
  // The state after `byte`, kDead, or kOutOfMemory past kMaxStates.
  Result<int32_t> step(int32_t state, uint8_t byte);
  // The state after all of `bytes` (kDead as soon as one byte is rejected).
  Result<int32_t> walk(int32_t state, std::string_view bytes);
  bool accepting(int32_t state) const { return states_[static_cast<size_t>(state)].accepting; }
  bool finished(int32_t state) const { return states_[static_cast<size_t>(state)].finished; }

  // The allowed-token bitset of `state` for `vocab` (see GrammarMatcher::allowed), cached when the
  // cache has room, else written to `scratch`. *n_allowed gets the number of set bits.
  Result<const uint64_t*> mask(int32_t state, const std::shared_ptr<const TokenVocab>& vocab,
                               std::vector<uint64_t>* scratch, int64_t* n_allowed);

  size_t n_states() const { return states_.size(); }

 private:
  struct State {
    int32_t set = 0;               // index into sets_
    uint32_t partial = 0;          // bits of the pending code point
    uint8_t remaining = 0;         // continuation bytes still expected (0 = none pending)
    uint8_t lo = 0x80, hi = 0xBF;  // the range of the next continuation byte
    bool accepting = false;
    bool finished = false;
  };
  struct CachedMask {
    std::weak_ptr<const TokenVocab> vocab;
    const TokenVocab* key = nullptr;
    std::unique_ptr<uint64_t[]> bits;
    int64_t n_allowed = 0;
  };
  struct VecHash {
    size_t operator()(const std::vector<int32_t>& v) const;
  };

  int32_t node(int32_t pos, int32_t parent);
  // Appends the leaf stacks (top is a character, or -1) reachable from stack `id`.
  void expand(int32_t id, std::vector<int32_t>* out);
  // The stacks continuing `id` after its top character matched.
  void expand_after_char(int32_t id, std::vector<int32_t>* out);
  int32_t intern_set(std::vector<int32_t>* stacks);  // sorts and dedupes in place
  Result<int32_t> intern_state(const State& s);
  Result<int32_t> compute_step(int32_t state, uint8_t byte);
  void fill_mask(int32_t state, const TokenVocab& vocab, uint64_t* bits, int64_t* n_allowed);

  const Rules& rules_;
  std::mutex mu_;
  std::vector<std::pair<int32_t, int32_t>> nodes_;  // (position, parent)
  std::unordered_map<uint64_t, int32_t> node_ids_;
  std::vector<uint32_t> visited_;  // per node: the expansion round that saw it
  uint32_t round_ = 0;
  std::vector<std::vector<int32_t>> sets_;
  std::unordered_map<std::vector<int32_t>, int32_t, VecHash> set_ids_;
  std::vector<State> states_;
  std::unordered_map<uint64_t, int32_t> state_ids_;
  std::vector<int32_t> trans_;                  // states_.size() * 256
  std::vector<std::vector<CachedMask>> masks_;  // per state
  size_t mask_bytes_ = 0;
  int32_t start_ = 0;
  std::vector<int32_t> scratch_, walk_states_;
};

}  // namespace llmt::grammar_detail
