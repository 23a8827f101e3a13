// Paged KV-cache block manager: which physical KV blocks each sequence uses, reference counts,
// the prefix cache and the free list. Model-free: it hands out block ids; the model's Context owns
// the block bytes (Context::kv_block) and attends through the tables built here.
//
// Blocks hold block_size consecutive positions of one sequence. A block is
//   - used:   ref_count > 0 (in one or more sequences' tables);
//   - cached: ref_count == 0 but it holds the computed K/V of a full block whose chained hash is
//             registered: it stays in the prefix cache until allocate() needs it (LRU eviction);
//   - free:   ref_count == 0 and no hash.
// Free and cached blocks sit on one free list (free ones are taken first, then cached ones in
// least-recently-released order); every operation on it is O(1).
//
// Prefix sharing: the hash of full block i of a token sequence is H(hash of block i-1, tokens of
// block i). A block's hash is registered when a sequence allocates it for tokens it is about to
// compute ("pending"), and becomes matchable once commit() says its positions are computed. A
// match also compares the block's stored tokens and its parent hash, so a hash collision can never
// share wrong K/V. Only full blocks are shared; the last, partial block of a sequence is private.
// Writing into a shared block (fork) goes through prepare_write(), which copies it first (CoW).
//
// Thread-safety: none; one thread (the engine loop) uses a KvManager.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "llmthreads/status.h"

namespace llmt::kv {

using SeqId = uint64_t;

struct KvManagerOptions {
  int32_t n_blocks = 0;        // physical blocks (>= 1)
  int32_t block_size = 16;     // tokens per block (>= 1)
  bool prefix_caching = true;  // share full blocks between sequences with the same prefix
  // Window slots (a model whose sliding-window layers keep their K/V apart, in a smaller pool:
  // ContextOptions::n_kv_window_slots). With n_window_slots > 0 and window > 0, a block also
  // has a slot while some sequence's window reaches it: the positions [n + 1 - window, n] of a
  // sequence whose next position is n. A slot that no window reaches any more keeps its bytes
  // (idle, evicted least recently idle first when a slot is needed), so a prefix match can
  // still use it; a prefix is matched only as far as the blocks its window reaches have slots.
  int32_t n_window_slots = 0;
  int32_t window = 0;  // positions (the model's sliding window, n_swa)
};

// Longest cached prefix of a token sequence.
struct PrefixMatch {
  // Computed blocks matching tokens[0, blocks.size() * block_size), in order.
  std::vector<int32_t> blocks;
  // Full blocks right after `blocks` whose hash is registered by a sequence that has not computed
  // them yet. A caller may wait for them instead of computing the same tokens again.
  int32_t n_pending = 0;
  // A block right after `blocks` whose first n_partial tokens (0 < n_partial < block_size)
  // equal the next tokens and are computed: a cached full block, or a block another sequence is
  // still filling (its committed rows never change). The sequence can start from a private copy
  // of it (open_partial()) instead of computing those tokens. -1 / 0 when there is none (or when
  // n_pending > 0). Also bounded by the leave-one-token rule.
  int32_t partial_block = -1;
  int32_t n_partial = 0;
};

struct BlockCopy {
  int32_t src = -1;
  int32_t dst = -1;
  // Window slots of src and dst (copy those bytes too), -1 when there are none.
  int32_t src_slot = -1;
  int32_t dst_slot = -1;
};

struct KvStats {
  int32_t n_blocks = 0;
  int32_t n_used = 0;           // ref_count > 0
  int32_t n_cached = 0;         // ref_count == 0, in the prefix cache (evictable): a registered
                                // computed block or a partial entry
  int32_t n_free = 0;           // ref_count == 0, no hash
  uint64_t n_evictions = 0;     // cached blocks taken back by allocate()
  uint64_t n_query_tokens = 0;  // tokens looked up through open() with a match (cumulative)
  uint64_t n_hit_tokens = 0;    // of those, tokens served from the prefix cache
  // Window slots (0 when none): reached by a window, idle (bytes kept, evictable), free.
  int32_t n_window_slots = 0;
  int32_t n_window_used = 0;
  int32_t n_window_idle = 0;
  int32_t n_window_free = 0;
  uint64_t n_window_evictions = 0;  // idle slots taken back
};

class KvManager {
 public:
  // Invalid options (n_blocks < 1, block_size < 1) are clamped to 1; check them before.
  explicit KvManager(const KvManagerOptions& options);

  int32_t block_size() const;
  int32_t n_blocks() const;

  // Longest prefix of `tokens` whose full blocks are cached and computed, at most
  // (tokens.size() - 1) / block_size blocks so that at least one token is left to compute (its
  // logits are needed). No side effects (the LRU order is not touched). Empty when prefix caching
  // is off.
  PrefixMatch match_prefix(std::span<const int32_t> tokens) const;

  // Starts sequence `seq` (not open yet, else kInvalidArgument) with `prefix`: blocks from a
  // match_prefix() on the same tokens with no other call in between; each gets a reference (a
  // cached block leaves the free list). Counts the lookup in stats (n_query_tokens += n_lookup,
  // n_hit_tokens += prefix.size() * block_size).
  Status open(SeqId seq, std::span<const int32_t> prefix, int64_t n_lookup = 0);
  bool is_open(SeqId seq) const;
  // open() with a partial match: seq starts with `prefix` plus a fresh private block that is to
  // receive a copy of match.partial_block (the returned BlockCopy; the caller copies the bytes
  // before anything else writes a block). Positions [0, prefix.size() * block_size + n_partial)
  // count as committed. kOutOfMemory when no block is free for the copy (nothing changes);
  // kInvalidArgument as open(), or when the partial block is not a computed child of the last
  // prefix block.
  Result<BlockCopy> open_partial(SeqId seq, std::span<const int32_t> prefix, int32_t partial_block,
                                 int32_t n_partial, int64_t n_lookup = 0);

  // A sequence opened with no prefix that is about to get its first n_restored positions back
  // from a swap-out (call before allocate()): allocate() gives window slots only to the blocks
  // the window of position n_restored reaches. kInvalidArgument when seq is not open or its
  // table is not empty.
  Status set_restored(SeqId seq, int32_t n_restored);
  // The first block index the window of a sequence whose next position is n_next reaches (0
  // without window slots): blocks from there on have slots.
  int32_t first_window_block(int32_t n_next) const;
  // Block b's window slot, -1 when it has none; window_slots()[b] the same for every block.
  int32_t window_slot(int32_t block) const;
  std::span<const int32_t> window_slots() const;

  // Blocks allocate(seq, n_tokens) would take now (0 if the table already covers n_tokens; for a
  // seq that is not open, as if its table were empty).
  int32_t blocks_needed(SeqId seq, int32_t n_tokens) const;
  // Grows seq's table to cover positions [0, n_tokens). New blocks come from the free list.
  // `tokens` (may be longer or shorter than n_tokens) are the tokens the sequence will have at
  // those positions: each new block that `tokens` fills completely gets its chained hash
  // registered as pending (unless the hash is already registered). All or nothing: false and no
  // change when fewer than blocks_needed() blocks can be taken or seq is not open.
  bool allocate(SeqId seq, int32_t n_tokens, std::span<const int32_t> tokens = {});

  // Positions [0, n_computed) of seq now hold the K/V of tokens[0, n_computed): its pending full
  // blocks in that range become matchable; full blocks with no hash yet (e.g. restored from swap,
  // or tokens generated after allocation) are registered too, unless another block already holds
  // that hash.
  void commit(SeqId seq, std::span<const int32_t> tokens, int32_t n_computed);

  // Before writing position pos of seq: if the block holding pos is shared (ref_count > 1), seq
  // gets a fresh private block in its place and the copy {src, dst} is returned (the caller copies
  // the bytes before the write); std::nullopt when the block is already private. kOutOfMemory when
  // no block is free; kInvalidArgument when seq is not open or pos is not covered.
  Result<std::optional<BlockCopy>> prepare_write(SeqId seq, int32_t pos);

  // dst (not open) starts with a reference to every block of src (parallel sampling).
  Status fork(SeqId src, SeqId dst);

  // Releases seq's references (no-op when not open). A block whose count drops to 0 goes to the
  // free list: as cached (most recently released, evicted last) when it holds a computed hash,
  // else as free (its pending hash, if any, is dropped).
  void free(SeqId seq);

  // seq's blocks in position order; empty when not open. Valid until the next non-const call.
  std::span<const int32_t> table(SeqId seq) const;
  // Blocks allocate() can take now with a window slot each: min(n_available_blocks(),
  // n_available_slots()).
  int32_t n_available() const;
  // Blocks that can be taken (free + cached); window slots that can be (free + idle; without
  // window slots the same as n_available_blocks()).
  int32_t n_available_blocks() const;
  int32_t n_available_slots() const;
  int32_t ref_count(int32_t block) const;  // 0 for an id out of range
  KvStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;

 public:
  ~KvManager();
  KvManager(KvManager&&) noexcept;
  KvManager& operator=(KvManager&&) noexcept;
};

}  // namespace llmt::kv
