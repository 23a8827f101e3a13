// Paged KV-cache block manager. See kv-manager.h for the contract.
//
// Per-block state lives in parallel arrays indexed by block id. The free list is intrusive: two
// doubly-linked lists threaded through prev_/next_ with one sentinel node each (ids n_blocks and
// n_blocks + 1), one for free blocks (no hash) and one for cached blocks (computed hash), both in
// release order (pushed at the tail, taken from the head). Taking a block tries the free list
// first, then evicts the head of the cached list (least recently released); reviving a cached
// block unlinks it in O(1).
//
// Prefix cache identity. A registered block stores its hash, its parent hash, its tokens and the
// identity of its parent: the parent's block id and the registration serial the parent held when
// the child was registered (every registration takes a fresh serial, so a parent that was evicted
// and registered again is a different parent). A block is registered only when the sequence's
// previous block is itself the registered holder of the previous hash, so walking the map from
// block 0 and checking, at each step, stored tokens, parent hash and parent identity proves that
// the whole token context of a matched block equals the query's: even a full 64-bit collision of
// two chained hashes cannot share wrong K/V.
#include "kv/kv-manager.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>

namespace llmt::kv {
namespace {

constexpr uint64_t kRootHash = 0x6A09E667F3BCC908ull;  // parent hash of block 0
constexpr uint64_t kMulA = 0x9E3779B97F4A7C15ull;      // odd multipliers
constexpr uint64_t kMulB = 0xBF58476D1CE4E5B9ull;
constexpr uint64_t kMulC = 0x94D049BB133111EBull;

// A bijective 64-bit finalizer (xor-shift / multiply rounds).
inline uint64_t finalize(uint64_t x) {
  x ^= x >> 30;
  x *= kMulB;
  x ^= x >> 27;
  x *= kMulC;
  x ^= x >> 31;
  return x;
}

// Chained hash of one full block: H(parent, tokens). Each token step is a bijection of the state
// for a fixed token, and a bijection of the token for a fixed state.
uint64_t block_hash(uint64_t parent, const int32_t* tokens, int32_t n) {
  uint64_t h = finalize(parent ^ kMulA);
  for (int32_t i = 0; i < n; ++i) {
    h ^= static_cast<uint64_t>(static_cast<uint32_t>(tokens[i])) * kMulC;
    h = std::rotl(h, 27) * kMulA + 0x52DCE729ull;
  }
  return finalize(h ^ static_cast<uint64_t>(n));
}

// Doubly-linked lists threaded through prev / next over ids [0, n) plus sentinel ids >= n.
struct Links {
  std::vector<int32_t> prev, next;
  void init(size_t n_ids) {
    prev.assign(n_ids, 0);
    next.assign(n_ids, 0);
  }
  void make_head(int32_t h) { prev[h] = next[h] = h; }
  void push_back(int32_t head, int32_t b) {
    const int32_t last = prev[head];
    prev[b] = last;
    next[b] = head;
    next[last] = b;
    prev[head] = b;
  }
  void push_front(int32_t head, int32_t b) {
    const int32_t first = next[head];
    prev[b] = head;
    next[b] = first;
    prev[first] = b;
    next[head] = b;
  }
  void unlink(int32_t b) {
    next[prev[b]] = next[b];
    prev[next[b]] = prev[b];
    prev[b] = next[b] = b;
  }
};

}  // namespace

struct KvManager::Impl {
  struct Seq {
    std::vector<int32_t> table;  // block per block-index
    // Chained hashes of the first chain.size() full blocks, from the tokens seen so far. A
    // sequence's tokens only grow, so hashed positions are not read again (prepare_write() of a
    // committed position, a rewrite, truncates it).
    std::vector<uint64_t> chain;
    int64_t n_committed = 0;  // positions [0, n_committed) hold computed K/V
    // Window slots: table[i] for i >= n_released has a slot and counts this sequence in its
    // wref (the window reaches it); the blocks before were let go.
    int32_t n_released = 0;
  };

  int32_t n_blocks;
  int32_t block_size;
  bool prefix_caching;

  // Per block.
  std::vector<int32_t> ref;
  std::vector<uint8_t> hashed;    // registered: map[hash[b]] == b
  std::vector<uint8_t> computed;  // registered and computed (matchable)
  std::vector<uint64_t> hash;
  std::vector<uint64_t> parent_hash;
  std::vector<int32_t> parent_block;    // -1 for block index 0
  std::vector<uint64_t> parent_serial;  // serial of parent_block when this one was registered
  std::vector<uint64_t> serial;         // registration serial (0 when not registered)
  std::vector<int32_t> tokens;          // n_blocks * block_size
  // Partial entries: a private, not (yet) full block whose first pvalid[b] positions are
  // committed (0: not a partial entry). Listed in `children` under its parent's serial like a
  // registered block, so a prompt sharing the start of a block that is still being filled can
  // copy those rows (positions below pvalid are never written again by their owner).
  std::vector<int32_t> pvalid;
  std::vector<uint64_t> pkey;  // the children key of a partial entry

  // Intrusive lists: ids [0, n_blocks) are blocks, free_head / cached_head the sentinels.
  Links blk;
  int32_t free_head;    // sentinel id of the free (no hash) list
  int32_t cached_head;  // sentinel id of the cached (LRU) list
  int32_t n_free = 0;
  int32_t n_cached = 0;

  // Window slots (none when n_slots == 0): per block its slot (-1) and the sequences whose
  // window reaches it; per slot its block; free and idle (wref 0, bytes kept) slot lists.
  int32_t n_slots = 0;
  int32_t window = 0;
  std::vector<int32_t> slot;        // [n_blocks]
  std::vector<int32_t> wref;        // [n_blocks]
  std::vector<int32_t> slot_block;  // [n_slots]
  Links sl;                         // ids [0, n_slots) slots, then the two sentinels
  int32_t slot_free_head = 0, slot_idle_head = 0;
  int32_t n_slot_free = 0, n_slot_idle = 0;
  uint64_t n_slot_evictions = 0;

  std::unordered_map<uint64_t, int32_t> map;  // registered hash -> block
  // Registered blocks by their parent's registration serial (0: first blocks), for partial
  // matches of the block after a matched run.
  std::unordered_multimap<uint64_t, int32_t> children;
  std::unordered_map<SeqId, Seq> seqs;
  uint64_t next_serial = 1;

  uint64_t n_evictions = 0;
  uint64_t n_query_tokens = 0;
  uint64_t n_hit_tokens = 0;

  explicit Impl(const KvManagerOptions& o)
      : n_blocks(std::max(o.n_blocks, 1)),
        block_size(std::max(o.block_size, 1)),
        prefix_caching(o.prefix_caching) {
    const size_t n = static_cast<size_t>(n_blocks);
    ref.assign(n, 0);
    hashed.assign(n, 0);
    computed.assign(n, 0);
    hash.assign(n, 0);
    parent_hash.assign(n, 0);
    parent_block.assign(n, -1);
    parent_serial.assign(n, 0);
    serial.assign(n, 0);
    tokens.assign(n * static_cast<size_t>(block_size), 0);
    pvalid.assign(n, 0);
    pkey.assign(n, 0);
    blk.init(n + 2);
    free_head = n_blocks;
    cached_head = n_blocks + 1;
    for (int32_t h : {free_head, cached_head}) blk.make_head(h);
    for (int32_t b = 0; b < n_blocks; ++b) blk.push_back(free_head, b);
    n_free = n_blocks;
    slot.assign(n, -1);
    wref.assign(n, 0);
    if (o.n_window_slots > 0 && o.window > 0) {
      n_slots = o.n_window_slots;
      window = o.window;
      slot_block.assign(static_cast<size_t>(n_slots), -1);
      sl.init(static_cast<size_t>(n_slots) + 2);
      slot_free_head = n_slots;
      slot_idle_head = n_slots + 1;
      for (int32_t h : {slot_free_head, slot_idle_head}) sl.make_head(h);
      for (int32_t x = 0; x < n_slots; ++x) sl.push_back(slot_free_head, x);
      n_slot_free = n_slots;
    }
  }

  // ---- window slots ----
  bool windowed() const { return n_slots > 0; }
  int32_t first_window(int64_t n_next) const {
    if (!windowed()) return 0;
    const int64_t p = n_next + 1 - window;
    return p <= 0 ? 0 : static_cast<int32_t>(p / block_size);
  }
  int32_t slots_available() const { return n_slot_free + n_slot_idle; }
  // Gives block b a slot reached by one window (the caller checked slots_available() > 0): a
  // free one, else the least recently idle one, taken from its block.
  void take_slot(int32_t b) {
    int32_t x;
    if (n_slot_free > 0) {
      x = sl.next[slot_free_head];
      --n_slot_free;
    } else {
      x = sl.next[slot_idle_head];
      --n_slot_idle;
      slot[slot_block[x]] = -1;
      ++n_slot_evictions;
    }
    sl.unlink(x);
    slot[b] = x;
    slot_block[x] = b;
    wref[b] = 1;
  }
  // One more window reaches b (which has a slot).
  void win_acquire(int32_t b) {
    if (wref[b]++ == 0) {
      sl.unlink(slot[b]);
      --n_slot_idle;
    }
  }
  // One window fewer reaches b: with none left its slot is idle (bytes kept).
  void win_release(int32_t b) {
    if (--wref[b] == 0) {
      sl.push_back(slot_idle_head, slot[b]);
      ++n_slot_idle;
    }
  }
  // b's contents are gone (freed, or taken for new data): its idle slot becomes free.
  void drop_slot(int32_t b) {
    if (slot[b] < 0) return;
    sl.unlink(slot[b]);
    --n_slot_idle;
    sl.push_back(slot_free_head, slot[b]);
    ++n_slot_free;
    slot[b] = -1;
  }
  // Whether the blocks the window of position k * block_size reaches, of blocks[0, k), all have
  // slots; *missing gets the last index without one.
  bool window_covered(std::span<const int32_t> blocks, size_t k, size_t* missing) const {
    for (size_t i = k;
         i-- > static_cast<size_t>(first_window(static_cast<int64_t>(k) * block_size));) {
      if (slot[blocks[i]] < 0) {
        *missing = i;
        return false;
      }
    }
    return true;
  }
  // Lets go of the window of the blocks of s that its next position no longer reaches.
  void release_window(Seq& s) {
    if (!windowed()) return;
    const int32_t fw =
        std::min<int32_t>(first_window(s.n_committed), static_cast<int32_t>(s.table.size()));
    for (int32_t i = s.n_released; i < fw; ++i) win_release(s.table[i]);
    s.n_released = std::max(s.n_released, fw);
  }

  // ---- registry ----
  void erase_child(uint64_t key, int32_t b) {
    auto range = children.equal_range(key);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second == b) {
        children.erase(it);
        return;
      }
    }
  }
  void drop_partial(int32_t b) {
    if (pvalid[b] == 0) return;
    erase_child(pkey[b], b);
    pvalid[b] = 0;
  }
  // Records that the first n_valid (0 < n_valid < block_size) positions of private block b,
  // block index i of a sequence whose previous block is `parent`, hold K/V of toks[0, n_valid).
  void set_partial(int32_t b, int32_t parent, const int32_t* toks, int32_t n_valid) {
    if (!prefix_caching || hashed[b] || ref[b] != 1) return;
    if (parent >= 0 && !hashed[parent]) return;  // unreachable through a match
    const uint64_t key = parent >= 0 ? serial[parent] : 0;
    if (pvalid[b] == 0 || pkey[b] != key) {
      drop_partial(b);
      children.emplace(key, b);
      pkey[b] = key;
    }
    parent_block[b] = parent;
    parent_serial[b] = parent >= 0 ? serial[parent] : 0;
    pvalid[b] = n_valid;
    std::memcpy(&tokens[static_cast<size_t>(b) * block_size], toks,
                sizeof(int32_t) * static_cast<size_t>(n_valid));
  }

  void unregister(int32_t b) {
    if (!hashed[b]) return;
    map.erase(hash[b]);
    erase_child(parent_serial[b], b);
    hashed[b] = 0;
    computed[b] = 0;
    serial[b] = 0;
  }

  // Registers b (block index i of some sequence whose previous block is `parent`, -1 for i == 0)
  // under hash h with the given tokens, unless h is taken or the parent is not the registered
  // holder of parent_h. Returns whether b was registered.
  bool try_register(int32_t b, uint64_t h, uint64_t parent_h, int32_t parent, const int32_t* toks,
                    bool is_computed) {
    if (!prefix_caching || hashed[b]) return false;
    drop_partial(b);
    if (parent >= 0) {
      if (!hashed[parent] || hash[parent] != parent_h) return false;
    }
    if (!map.emplace(h, b).second) return false;
    hashed[b] = 1;
    computed[b] = is_computed ? 1 : 0;
    hash[b] = h;
    parent_hash[b] = parent_h;
    parent_block[b] = parent;
    parent_serial[b] = parent >= 0 ? serial[parent] : 0;
    serial[b] = next_serial++;
    children.emplace(parent_serial[b], b);
    std::memcpy(&tokens[static_cast<size_t>(b) * block_size], toks,
                sizeof(int32_t) * static_cast<size_t>(block_size));
    return true;
  }

  // The registered block for block index i of a token sequence whose previous block matched
  // `parent` (-1 for i == 0) with hash parent_h, or -1. Verifies tokens and parent identity.
  int32_t lookup(uint64_t h, uint64_t parent_h, int32_t parent, const int32_t* toks) const {
    auto it = map.find(h);
    if (it == map.end()) return -1;
    const int32_t b = it->second;
    if (parent_hash[b] != parent_h || parent_block[b] != parent) return -1;
    if (parent >= 0 && parent_serial[b] != serial[parent]) return -1;
    if (std::memcmp(&tokens[static_cast<size_t>(b) * block_size], toks,
                    sizeof(int32_t) * static_cast<size_t>(block_size)) != 0) {
      return -1;
    }
    return b;
  }

  // ---- blocks ----
  // Takes a block off the free list (free first, then the least recently released cached one);
  // the caller checked n_available() > 0. The block comes back with ref 1 and no hash.
  int32_t take() {
    int32_t b;
    if (n_free > 0) {
      b = blk.next[free_head];
      --n_free;
    } else {
      b = blk.next[cached_head];
      --n_cached;
      unregister(b);
      drop_partial(b);
      drop_slot(b);
      ++n_evictions;
    }
    blk.unlink(b);
    ref[b] = 1;
    return b;
  }

  // A block with no references stays in the prefix cache (the cached list) when it holds a
  // registered computed full block or a partial entry.
  bool cacheable(int32_t b) const { return (hashed[b] && computed[b]) || pvalid[b] > 0; }

  void add_ref(int32_t b) {
    if (ref[b] == 0) {
      blk.unlink(b);
      if (cacheable(b)) {
        --n_cached;
      } else {
        --n_free;
      }
    }
    ++ref[b];
    if (ref[b] > 1) drop_partial(b);  // shared: no longer one owner's growing block
  }

  void release(int32_t b) {
    if (--ref[b] > 0) return;
    if (cacheable(b)) {
      if (hashed[b]) {
        blk.push_back(cached_head, b);  // most recently released: evicted last
      } else {
        blk.push_front(cached_head, b);  // a partial entry is only worth keeping briefly
      }
      ++n_cached;
    } else {
      unregister(b);
      drop_partial(b);
      drop_slot(b);
      blk.push_back(free_head, b);
      ++n_free;
    }
  }

  // Extends s.chain from `toks` up to min(n_full, toks.size() / block_size) blocks.
  void extend_chain(Seq& s, std::span<const int32_t> toks, size_t n_full) const {
    n_full = std::min(n_full, toks.size() / static_cast<size_t>(block_size));
    while (s.chain.size() < n_full) {
      const size_t i = s.chain.size();
      const uint64_t parent = i == 0 ? kRootHash : s.chain[i - 1];
      s.chain.push_back(block_hash(parent, toks.data() + i * block_size, block_size));
    }
  }

  int64_t needed(const Seq* s, int64_t n_tokens) const {
    if (n_tokens <= 0) return 0;
    const int64_t want = (n_tokens + block_size - 1) / block_size;
    const int64_t have = s ? static_cast<int64_t>(s->table.size()) : 0;
    return std::max<int64_t>(0, want - have);
  }
};

KvManager::KvManager(const KvManagerOptions& options) : impl_(std::make_unique<Impl>(options)) {}
KvManager::~KvManager() = default;
KvManager::KvManager(KvManager&&) noexcept = default;
KvManager& KvManager::operator=(KvManager&&) noexcept = default;

int32_t KvManager::block_size() const {
  return impl_->block_size;
}
int32_t KvManager::n_blocks() const {
  return impl_->n_blocks;
}

PrefixMatch KvManager::match_prefix(std::span<const int32_t> tokens) const {
  const Impl& m = *impl_;
  PrefixMatch out;
  if (!m.prefix_caching || tokens.empty()) return out;
  const size_t bs = static_cast<size_t>(m.block_size);
  const size_t n_max = (tokens.size() - 1) / bs;
  uint64_t parent_h = kRootHash;
  int32_t parent = -1;
  bool pending = false;
  for (size_t i = 0; i < n_max; ++i) {
    const int32_t* toks = tokens.data() + i * bs;
    const uint64_t h = block_hash(parent_h, toks, m.block_size);
    const int32_t b = m.lookup(h, parent_h, parent, toks);
    if (b < 0) break;
    if (m.computed[b]) {
      if (pending) break;  // only pending blocks are counted after the computed run
      out.blocks.push_back(b);
    } else {
      pending = true;
      ++out.n_pending;
    }
    parent_h = h;
    parent = b;
  }
  if (m.windowed()) {
    // Only as far as the blocks the window of the match's end reaches still have slots.
    size_t k = out.blocks.size(), missing = 0;
    while (k > 0 && !m.window_covered(out.blocks, k, &missing)) k = missing;
    if (k < out.blocks.size()) {
      out.blocks.resize(k);
      out.n_pending = 0;
      return out;
    }
  }
  if (out.n_pending > 0) return out;
  // Partial match of the next block: the registered child of the last matched block (or a first
  // block) sharing the longest run of leading tokens with what follows.
  const size_t start = out.blocks.size() * bs;
  const size_t limit = std::min(bs - 1, tokens.size() - 1 - start);  // leave one token
  if (limit == 0) return out;
  const uint64_t key = parent >= 0 ? m.serial[parent] : 0;
  auto range = m.children.equal_range(key);
  size_t best = 0, best_pending = 0;
  int32_t best_block = -1;
  for (auto it = range.first; it != range.second; ++it) {
    const int32_t c = it->second;
    if (m.parent_block[c] != parent) continue;
    if (m.windowed() && m.slot[c] < 0 && (m.computed[c] || m.pvalid[c] > 0)) continue;
    if (parent >= 0 && m.parent_serial[c] != m.serial[parent]) continue;
    const int32_t* ct = &m.tokens[static_cast<size_t>(c) * bs];
    const size_t valid = m.pvalid[c] > 0 ? static_cast<size_t>(m.pvalid[c]) : bs;
    const size_t cap = std::min(limit, valid);
    size_t r = 0;
    while (r < cap && ct[r] == tokens[start + r]) ++r;
    if (m.computed[c] || m.pvalid[c] > 0) {
      if (r > best) {
        best = r;
        best_block = c;
      }
    } else {
      best_pending = std::max(best_pending, r);
    }
    if (best == limit) break;
  }
  if (best_pending > best) {
    out.n_pending = 1;  // another sequence is computing these tokens: worth waiting for
  } else if (best > 0) {
    out.partial_block = best_block;
    out.n_partial = static_cast<int32_t>(best);
  }
  return out;
}

Status KvManager::open(SeqId seq, std::span<const int32_t> prefix, int64_t n_lookup) {
  Impl& m = *impl_;
  if (m.seqs.count(seq) != 0) {
    return invalid_argument("kv: open: sequence " + std::to_string(seq) + " is already open");
  }
  // Validate everything before any change: each block must be registered and computed, and
  // form the chain that match_prefix() returns (block i's parent is block i - 1).
  for (size_t i = 0; i < prefix.size(); ++i) {
    const int32_t b = prefix[i];
    if (b < 0 || b >= m.n_blocks || !m.computed[b]) {
      return invalid_argument("kv: open: prefix block " + std::to_string(b) +
                              " is not a cached computed block");
    }
    const int32_t parent = i == 0 ? -1 : prefix[i - 1];
    if (m.parent_block[b] != parent || (parent >= 0 && m.parent_serial[b] != m.serial[parent])) {
      return invalid_argument("kv: open: prefix blocks are not a match_prefix() chain");
    }
  }
  size_t missing = 0;
  if (m.windowed() && !m.window_covered(prefix, prefix.size(), &missing)) {
    return invalid_argument("kv: open: prefix block " + std::to_string(prefix[missing]) +
                            " has no window slot");
  }
  Impl::Seq& s = m.seqs[seq];
  s.table.assign(prefix.begin(), prefix.end());
  s.chain.reserve(prefix.size());
  for (int32_t b : prefix) {
    m.add_ref(b);
    s.chain.push_back(m.hash[b]);
  }
  s.n_committed = static_cast<int64_t>(prefix.size()) * m.block_size;
  s.n_released = m.first_window(s.n_committed);
  if (m.windowed()) {
    for (size_t i = static_cast<size_t>(s.n_released); i < prefix.size(); ++i) {
      m.win_acquire(prefix[i]);
    }
  }
  if (n_lookup > 0) m.n_query_tokens += static_cast<uint64_t>(n_lookup);
  m.n_hit_tokens += static_cast<uint64_t>(prefix.size()) * static_cast<uint64_t>(m.block_size);
  return Status::ok();
}

Result<BlockCopy> KvManager::open_partial(SeqId seq, std::span<const int32_t> prefix,
                                          int32_t partial_block, int32_t n_partial,
                                          int64_t n_lookup) {
  Impl& m = *impl_;
  const int32_t b = partial_block;
  const int32_t parent = prefix.empty() ? -1 : prefix.back();
  if (b < 0 || b >= m.n_blocks || !(m.computed[b] || m.pvalid[b] >= n_partial) ||
      m.parent_block[b] != parent || (parent >= 0 && m.parent_serial[b] != m.serial[parent]) ||
      n_partial <= 0 || n_partial >= m.block_size) {
    return invalid_argument("kv: open_partial: block " + std::to_string(b) +
                            " is not a computed child of the prefix");
  }
  // Blocks the open takes off the free list: cached prefix blocks, then the copy's target (the
  // source is pinned while the target is taken, so it cannot be the one evicted).
  int32_t need = 1;
  for (int32_t p : prefix) need += (p >= 0 && p < m.n_blocks && m.ref[p] == 0) ? 1 : 0;
  need += m.ref[b] == 0 ? 1 : 0;
  if (need > n_available_blocks()) {
    return Status(StatusCode::kOutOfMemory, "kv: open_partial: no free block for the copy");
  }
  if (m.windowed()) {
    // The copy's slot, with the idle slots the open takes in (the prefix's window and the
    // pinned source) not counted as available.
    if (m.slot[b] < 0) {
      return invalid_argument("kv: open_partial: block " + std::to_string(b) +
                              " has no window slot");
    }
    int32_t idle = m.wref[b] == 0 ? 1 : 0;
    const int32_t fw = m.first_window(static_cast<int64_t>(prefix.size()) * m.block_size);
    for (size_t i = static_cast<size_t>(fw); i < prefix.size(); ++i) {
      const int32_t p = prefix[i];
      idle += p >= 0 && p < m.n_blocks && m.slot[p] >= 0 && m.wref[p] == 0 ? 1 : 0;
    }
    if (m.slots_available() - idle < 1) {
      return Status(StatusCode::kOutOfMemory, "kv: open_partial: no free window slot for the copy");
    }
  }
  LLMT_RETURN_IF_ERROR(open(seq, prefix, n_lookup));
  // A cached source (no references) is pinned so the target cannot be it; a partial source is
  // in use by its owner anyway (and pinning it would make it shared). Its window slot likewise.
  const bool pin = m.ref[b] == 0;
  if (pin) m.add_ref(b);
  if (m.windowed()) m.win_acquire(b);
  const int32_t d = m.take();
  if (m.windowed()) {
    m.take_slot(d);
    m.win_release(b);
  }
  if (pin) m.release(b);
  Impl::Seq& s = m.seqs[seq];
  s.table.push_back(d);
  s.n_committed += n_partial;
  m.n_hit_tokens += static_cast<uint64_t>(n_partial);
  return BlockCopy{b, d, m.slot[b], m.slot[d]};
}

bool KvManager::is_open(SeqId seq) const {
  return impl_->seqs.count(seq) != 0;
}

Status KvManager::set_restored(SeqId seq, int32_t n_restored) {
  Impl& m = *impl_;
  auto it = m.seqs.find(seq);
  if (it == m.seqs.end() || !it->second.table.empty() || n_restored < 0) {
    return invalid_argument("kv: set_restored: sequence " + std::to_string(seq) +
                            " is not open with an empty table");
  }
  it->second.n_released = m.first_window(n_restored);
  return Status::ok();
}

int32_t KvManager::first_window_block(int32_t n_next) const {
  return impl_->first_window(n_next);
}

int32_t KvManager::window_slot(int32_t block) const {
  if (block < 0 || block >= impl_->n_blocks) return -1;
  return impl_->slot[block];
}

std::span<const int32_t> KvManager::window_slots() const {
  return impl_->slot;
}

int32_t KvManager::blocks_needed(SeqId seq, int32_t n_tokens) const {
  auto it = impl_->seqs.find(seq);
  return static_cast<int32_t>(
      impl_->needed(it == impl_->seqs.end() ? nullptr : &it->second, n_tokens));
}

bool KvManager::allocate(SeqId seq, int32_t n_tokens, std::span<const int32_t> tokens) {
  Impl& m = *impl_;
  auto it = m.seqs.find(seq);
  if (it == m.seqs.end()) return false;
  Impl::Seq& s = it->second;
  const int64_t need = m.needed(&s, n_tokens);
  if (need > n_available_blocks()) return false;
  // New blocks the window reaches get slots (all of them, but for a restore: set_restored()).
  const int64_t have = static_cast<int64_t>(s.table.size());
  const int64_t need_slots =
      m.windowed() ? std::max<int64_t>(0, have + need - std::max<int64_t>(have, s.n_released)) : 0;
  if (need_slots > m.slots_available()) return false;
  // Register from the first block not fully committed: that includes a block already in the table
  // but not yet filled (the private copy of open_partial()), so that others wait for it too.
  const size_t first = std::min(s.table.size(), static_cast<size_t>(s.n_committed / m.block_size));
  for (int64_t k = 0; k < need; ++k) {
    const int32_t b = m.take();
    if (m.windowed() && have + k >= s.n_released) m.take_slot(b);
    s.table.push_back(b);
  }
  if (!m.prefix_caching) return true;
  const size_t bs = static_cast<size_t>(m.block_size);
  m.extend_chain(s, tokens, s.table.size());
  for (size_t i = first; i < s.chain.size(); ++i) {
    const uint64_t parent_h = i == 0 ? kRootHash : s.chain[i - 1];
    const int32_t parent = i == 0 ? -1 : s.table[i - 1];
    m.try_register(s.table[i], s.chain[i], parent_h, parent, tokens.data() + i * bs,
                   /*is_computed=*/false);
  }
  return true;
}

void KvManager::commit(SeqId seq, std::span<const int32_t> tokens, int32_t n_computed) {
  Impl& m = *impl_;
  auto it = m.seqs.find(seq);
  if (it == m.seqs.end()) return;
  Impl::Seq& s = it->second;
  const size_t bs = static_cast<size_t>(m.block_size);
  int64_t n = std::min<int64_t>(n_computed, static_cast<int64_t>(tokens.size()));
  n = std::min<int64_t>(n, static_cast<int64_t>(s.table.size() * bs));
  if (n <= s.n_committed) return;
  const size_t first = static_cast<size_t>(s.n_committed) / bs;  // first not fully committed
  s.n_committed = n;
  m.release_window(s);
  if (!m.prefix_caching) return;
  const size_t n_full = static_cast<size_t>(n) / bs;
  m.extend_chain(s, tokens, n_full);
  for (size_t i = first; i < n_full && i < s.chain.size(); ++i) {
    const int32_t b = s.table[i];
    const uint64_t h = s.chain[i];
    const int32_t* toks = tokens.data() + i * bs;
    if (m.hashed[b]) {
      if (m.hash[b] == h &&
          std::memcmp(&m.tokens[static_cast<size_t>(b) * bs], toks, sizeof(int32_t) * bs) == 0) {
        m.computed[b] = 1;
        continue;
      }
      m.unregister(b);  // registered for other tokens than those computed: stale
    }
    const uint64_t parent_h = i == 0 ? kRootHash : s.chain[i - 1];
    const int32_t parent = i == 0 ? -1 : s.table[i - 1];
    m.try_register(b, h, parent_h, parent, toks, /*is_computed=*/true);
  }
  // The block being filled: a partial entry for what is committed of it.
  const int32_t n_tail = static_cast<int32_t>(n % static_cast<int64_t>(bs));
  if (n_tail > 0 && n_full < s.table.size()) {
    const int32_t parent = n_full == 0 ? -1 : s.table[n_full - 1];
    if (n_full == 0 || (n_full - 1 < s.chain.size() && m.hashed[parent] &&
                        m.hash[parent] == s.chain[n_full - 1])) {
      m.set_partial(s.table[n_full], parent, tokens.data() + n_full * bs, n_tail);
    }
  }
}

Result<std::optional<BlockCopy>> KvManager::prepare_write(SeqId seq, int32_t pos) {
  Impl& m = *impl_;
  auto it = m.seqs.find(seq);
  if (it == m.seqs.end()) {
    return invalid_argument("kv: prepare_write: sequence " + std::to_string(seq) + " is not open");
  }
  Impl::Seq& s = it->second;
  if (pos < 0 || static_cast<int64_t>(pos) >= static_cast<int64_t>(s.table.size()) * m.block_size) {
    return invalid_argument("kv: prepare_write: position " + std::to_string(pos) +
                            " is not covered by sequence " + std::to_string(seq));
  }
  const size_t i = static_cast<size_t>(pos / m.block_size);
  const int32_t b = s.table[i];
  // Rewriting a committed position: the block's contents (and everything after) change.
  const bool rewrite = pos < s.n_committed;
  if (rewrite && m.first_window(pos) < s.n_released) {
    return invalid_argument("kv: prepare_write: the window of position " + std::to_string(pos) +
                            " of sequence " + std::to_string(seq) + " was already let go");
  }
  const bool in_window = m.windowed() && static_cast<int32_t>(i) >= s.n_released;
  std::optional<BlockCopy> copy;
  if (m.ref[b] > 1) {
    if (n_available_blocks() == 0 || (in_window && m.slots_available() == 0)) {
      return Status(StatusCode::kOutOfMemory,
                    "kv: prepare_write: no free block to copy shared block " + std::to_string(b));
    }
    const int32_t d = m.take();
    if (in_window) {
      m.take_slot(d);  // before b's window ref goes: b's slot cannot be the one taken
      m.win_release(b);
    }
    m.release(b);  // ref >= 2, so it stays used
    s.table[i] = d;
    copy = BlockCopy{b, d, m.slot[b], m.slot[d]};
  } else if (rewrite) {
    m.unregister(b);  // private block about to change
    m.drop_partial(b);
  }
  if (rewrite) {
    s.n_committed = pos;
    s.chain.resize(std::min(s.chain.size(), i));
  }
  return copy;
}

Status KvManager::fork(SeqId src, SeqId dst) {
  Impl& m = *impl_;
  auto it = m.seqs.find(src);
  if (it == m.seqs.end()) {
    return invalid_argument("kv: fork: source sequence " + std::to_string(src) + " is not open");
  }
  if (m.seqs.count(dst) != 0) {
    return invalid_argument("kv: fork: destination sequence " + std::to_string(dst) +
                            " is already open");
  }
  Impl::Seq copy = it->second;  // copy before inserting: the insert may rehash
  for (size_t i = 0; i < copy.table.size(); ++i) {
    m.add_ref(copy.table[i]);
    if (m.windowed() && static_cast<int32_t>(i) >= copy.n_released) m.win_acquire(copy.table[i]);
  }
  m.seqs.emplace(dst, std::move(copy));
  return Status::ok();
}

void KvManager::free(SeqId seq) {
  Impl& m = *impl_;
  auto it = m.seqs.find(seq);
  if (it == m.seqs.end()) return;
  // Released last block first, so a sequence's later blocks are evicted before its earlier ones
  // (an earlier block is useful to more prefixes; a later one is useless without it).
  const std::vector<int32_t>& t = it->second.table;
  if (m.windowed()) {
    for (size_t i = t.size(); i-- > static_cast<size_t>(it->second.n_released);) {
      m.win_release(t[i]);
    }
  }
  for (auto b = t.rbegin(); b != t.rend(); ++b) m.release(*b);
  m.seqs.erase(it);
}

std::span<const int32_t> KvManager::table(SeqId seq) const {
  auto it = impl_->seqs.find(seq);
  if (it == impl_->seqs.end()) return {};
  return it->second.table;
}

int32_t KvManager::n_available() const {
  return std::min(n_available_blocks(), n_available_slots());
}

int32_t KvManager::n_available_blocks() const {
  return impl_->n_free + impl_->n_cached;
}

int32_t KvManager::n_available_slots() const {
  return impl_->windowed() ? impl_->slots_available() : n_available_blocks();
}

int32_t KvManager::ref_count(int32_t block) const {
  if (block < 0 || block >= impl_->n_blocks) return 0;
  return impl_->ref[block];
}

KvStats KvManager::stats() const {
  const Impl& m = *impl_;
  KvStats st;
  st.n_blocks = m.n_blocks;
  st.n_free = m.n_free;
  st.n_cached = m.n_cached;
  st.n_used = m.n_blocks - m.n_free - m.n_cached;
  st.n_evictions = m.n_evictions;
  st.n_query_tokens = m.n_query_tokens;
  st.n_hit_tokens = m.n_hit_tokens;
  st.n_window_slots = m.n_slots;
  st.n_window_free = m.n_slot_free;
  st.n_window_idle = m.n_slot_idle;
  st.n_window_used = m.n_slots - m.n_slot_free - m.n_slot_idle;
  st.n_window_evictions = m.n_slot_evictions;
  return st;
}

}  // namespace llmt::kv
