// KvManager: exact block ids from the free list, ref counts, LRU eviction of cached blocks,
// prefix matching (computed vs pending, the at-least-one-token rule, verification of tokens),
// all-or-nothing allocation, copy-on-write through fork + prepare_write, and a randomized stress
// test against a reference model of ref counts and block contents.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <vector>

#include "kv/kv-manager.h"

namespace llmt::kv {
namespace {

using Tokens = std::vector<int32_t>;

std::vector<int32_t> table_of(const KvManager& kv, SeqId seq) {
  auto t = kv.table(seq);
  return {t.begin(), t.end()};
}

Tokens iota_tokens(int32_t n, int32_t first = 100) {
  Tokens t(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = first + i;
  return t;
}

KvManager make(int32_t n_blocks = 8, int32_t block_size = 4, bool prefix_caching = true) {
  KvManagerOptions o;
  o.n_blocks = n_blocks;
  o.block_size = block_size;
  o.prefix_caching = prefix_caching;
  return KvManager(o);
}

void expect_stats(const KvManager& kv, int32_t used, int32_t cached, int32_t free_) {
  const KvStats st = kv.stats();
  EXPECT_EQ(st.n_used, used);
  EXPECT_EQ(st.n_cached, cached);
  EXPECT_EQ(st.n_free, free_);
  EXPECT_EQ(st.n_used + st.n_cached + st.n_free, st.n_blocks);
  EXPECT_EQ(kv.n_available(), cached + free_);
}

// Opens seq with no prefix and allocates n tokens of `toks`; commits all of them when asked.
void start(KvManager& kv, SeqId seq, const Tokens& toks, bool commit) {
  ASSERT_TRUE(kv.open(seq, {}).is_ok());
  ASSERT_TRUE(kv.allocate(seq, static_cast<int32_t>(toks.size()), toks));
  if (commit) kv.commit(seq, toks, static_cast<int32_t>(toks.size()));
}

TEST(KvManager, OptionsClamped) {
  KvManagerOptions o;
  o.n_blocks = 0;
  o.block_size = -3;
  KvManager kv(o);
  EXPECT_EQ(kv.n_blocks(), 1);
  EXPECT_EQ(kv.block_size(), 1);
  expect_stats(kv, 0, 0, 1);
}

TEST(KvManager, FirstSequenceGetsBlocksInOrder) {
  KvManager kv = make();
  EXPECT_EQ(kv.n_blocks(), 8);
  EXPECT_EQ(kv.block_size(), 4);
  expect_stats(kv, 0, 0, 8);
  EXPECT_EQ(kv.blocks_needed(1, 10), 3);  // not open: as if empty
  ASSERT_TRUE(kv.open(1, {}).is_ok());
  EXPECT_TRUE(kv.is_open(1));
  EXPECT_FALSE(kv.is_open(2));
  EXPECT_EQ(kv.blocks_needed(1, 0), 0);
  EXPECT_EQ(kv.blocks_needed(1, 10), 3);
  ASSERT_TRUE(kv.allocate(1, 10));
  EXPECT_EQ(table_of(kv, 1), (std::vector<int32_t>{0, 1, 2}));
  for (int32_t b : {0, 1, 2}) EXPECT_EQ(kv.ref_count(b), 1);
  for (int32_t b : {3, 4, 5, 6, 7}) EXPECT_EQ(kv.ref_count(b), 0);
  EXPECT_EQ(kv.ref_count(-1), 0);
  EXPECT_EQ(kv.ref_count(8), 0);
  EXPECT_EQ(kv.blocks_needed(1, 12), 0);
  EXPECT_EQ(kv.blocks_needed(1, 13), 1);
  EXPECT_TRUE(kv.allocate(1, 12));  // already covered: no change
  EXPECT_EQ(table_of(kv, 1), (std::vector<int32_t>{0, 1, 2}));
  ASSERT_TRUE(kv.allocate(1, 13));
  EXPECT_EQ(table_of(kv, 1), (std::vector<int32_t>{0, 1, 2, 3}));
  expect_stats(kv, 4, 0, 4);
}

TEST(KvManager, FreedBlocksReusedAfterNeverUsedOnes) {
  KvManager kv = make(8, 4, /*prefix_caching=*/false);
  ASSERT_TRUE(kv.open(1, {}).is_ok());
  ASSERT_TRUE(kv.allocate(1, 10));
  kv.free(1);
  EXPECT_FALSE(kv.is_open(1));
  EXPECT_TRUE(kv.table(1).empty());
  expect_stats(kv, 0, 0, 8);
  // Released last block first, each to the tail: 3 4 5 6 7 2 1 0.
  ASSERT_TRUE(kv.open(2, {}).is_ok());
  ASSERT_TRUE(kv.allocate(2, 32));
  EXPECT_EQ(table_of(kv, 2), (std::vector<int32_t>{3, 4, 5, 6, 7, 2, 1, 0}));
  expect_stats(kv, 8, 0, 0);
}

TEST(KvManager, FreeUnknownSequenceIsNoOp) {
  KvManager kv = make();
  kv.free(42);
  ASSERT_TRUE(kv.open(1, {}).is_ok());
  ASSERT_TRUE(kv.allocate(1, 5));
  kv.free(42);
  EXPECT_EQ(table_of(kv, 1), (std::vector<int32_t>{0, 1}));
  expect_stats(kv, 2, 0, 6);
}

TEST(KvManager, OpenErrors) {
  KvManager kv = make();
  ASSERT_TRUE(kv.open(1, {}).is_ok());
  Status st = kv.open(1, {});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  // A block that is not cached-and-computed, or out of range: rejected without side effects.
  ASSERT_TRUE(kv.allocate(1, 8, iota_tokens(8)));  // blocks 0, 1 pending
  const std::vector<int32_t> bad1 = {0};
  const std::vector<int32_t> bad2 = {9};
  const std::vector<int32_t> bad3 = {-1};
  EXPECT_EQ(kv.open(2, bad1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.open(2, bad2).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.open(2, bad3).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(kv.is_open(2));
  EXPECT_EQ(kv.ref_count(0), 1);
  // Computed blocks in the wrong order are not a match_prefix() chain.
  kv.commit(1, iota_tokens(8), 8);
  const std::vector<int32_t> swapped = {1, 0};
  EXPECT_EQ(kv.open(2, swapped).code(), StatusCode::kInvalidArgument);
  const std::vector<int32_t> second_only = {1};
  EXPECT_EQ(kv.open(2, second_only).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(kv.is_open(2));
  EXPECT_EQ(kv.ref_count(0), 1);
  EXPECT_EQ(kv.ref_count(1), 1);
  // Not open: allocate fails, prepare_write and fork report it.
  EXPECT_FALSE(kv.allocate(3, 4));
  EXPECT_EQ(kv.prepare_write(3, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.fork(3, 4).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.fork(1, 1).code(), StatusCode::kInvalidArgument);
  kv.commit(3, iota_tokens(8), 8);  // no-op
  expect_stats(kv, 2, 0, 6);
}

TEST(KvManager, PrefixHitMatchesFullBlocksOnly) {
  KvManager kv = make();
  const Tokens prompt = iota_tokens(10);
  start(kv, 1, prompt, /*commit=*/true);
  EXPECT_EQ(table_of(kv, 1), (std::vector<int32_t>{0, 1, 2}));

  PrefixMatch m = kv.match_prefix(prompt);
  EXPECT_EQ(m.blocks, (std::vector<int32_t>{0, 1}));  // not the partial third block
  EXPECT_EQ(m.n_pending, 0);
  ASSERT_TRUE(kv.open(2, m.blocks, static_cast<int64_t>(prompt.size())).is_ok());
  EXPECT_EQ(kv.ref_count(0), 2);
  EXPECT_EQ(kv.ref_count(1), 2);
  EXPECT_EQ(kv.ref_count(2), 1);
  EXPECT_EQ(kv.stats().n_query_tokens, 10u);
  EXPECT_EQ(kv.stats().n_hit_tokens, 8u);
  EXPECT_EQ(kv.blocks_needed(2, 10), 1);
  ASSERT_TRUE(kv.allocate(2, 10, prompt));
  EXPECT_EQ(table_of(kv, 2), (std::vector<int32_t>{0, 1, 3}));
  expect_stats(kv, 4, 0, 4);

  // Matching has no side effects and is capped so that one token is left to compute.
  EXPECT_EQ(kv.match_prefix(iota_tokens(9)).blocks, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(kv.match_prefix(iota_tokens(8)).blocks, (std::vector<int32_t>{0}));
  EXPECT_EQ(kv.match_prefix(iota_tokens(5)).blocks, (std::vector<int32_t>{0}));
  EXPECT_TRUE(kv.match_prefix(iota_tokens(4)).blocks.empty());
  EXPECT_TRUE(kv.match_prefix(Tokens{}).blocks.empty());
  // A longer prompt with the same start matches what is cached.
  EXPECT_EQ(kv.match_prefix(iota_tokens(30)).blocks, (std::vector<int32_t>{0, 1}));
}

TEST(KvManager, PrefixNeverMatchesAllTokens) {
  KvManager kv = make();
  const Tokens prompt = iota_tokens(8);
  start(kv, 1, prompt, /*commit=*/true);
  EXPECT_EQ(table_of(kv, 1), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(kv.match_prefix(prompt).blocks, (std::vector<int32_t>{0}));
}

TEST(KvManager, PendingBlocksCountedNotMatchedUntilCommit) {
  KvManager kv = make();
  const Tokens prompt = iota_tokens(13);
  start(kv, 1, prompt, /*commit=*/false);
  EXPECT_EQ(table_of(kv, 1), (std::vector<int32_t>{0, 1, 2, 3}));
  PrefixMatch m = kv.match_prefix(prompt);
  EXPECT_TRUE(m.blocks.empty());
  EXPECT_EQ(m.n_pending, 3);
  // Partly computed: block 0 done, block 1 half done.
  kv.commit(1, prompt, 6);
  m = kv.match_prefix(prompt);
  EXPECT_EQ(m.blocks, (std::vector<int32_t>{0}));
  EXPECT_EQ(m.n_pending, 2);
  kv.commit(1, prompt, 12);
  m = kv.match_prefix(prompt);
  EXPECT_EQ(m.blocks, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(m.n_pending, 0);
  // The pending count obeys the one-token-left cap too.
  KvManager kv2 = make();
  start(kv2, 1, prompt, /*commit=*/false);
  EXPECT_EQ(kv2.match_prefix(iota_tokens(8)).n_pending, 1);
  // Freeing before commit drops the pending hashes: the blocks become plain free blocks.
  kv2.free(1);
  m = kv2.match_prefix(prompt);
  EXPECT_TRUE(m.blocks.empty());
  EXPECT_EQ(m.n_pending, 0);
  expect_stats(kv2, 0, 0, 8);
}

TEST(KvManager, CommitRegistersBlocksFilledLater) {
  KvManager kv = make();
  const Tokens all = iota_tokens(9);
  // Allocated with only 2 known tokens (e.g. generated later): no hash at allocation.
  ASSERT_TRUE(kv.open(1, {}).is_ok());
  ASSERT_TRUE(kv.allocate(1, 9, Tokens(all.begin(), all.begin() + 2)));
  EXPECT_EQ(kv.match_prefix(all).n_pending, 0);
  kv.commit(1, all, 9);
  EXPECT_EQ(kv.match_prefix(all).blocks, (std::vector<int32_t>{0, 1}));
}

TEST(KvManager, HashRegisteredElsewhereIsNotRegisteredAgain) {
  KvManager kv = make();
  const Tokens prompt = iota_tokens(9);
  start(kv, 1, prompt, /*commit=*/false);  // blocks 0, 1 pending
  start(kv, 2, prompt, /*commit=*/false);  // blocks 3, 4: hashes taken, not registered
  EXPECT_EQ(table_of(kv, 2), (std::vector<int32_t>{3, 4, 5}));
  EXPECT_EQ(kv.match_prefix(prompt).n_pending, 2);
  // Seq 1 gives up before computing: its pending hashes go; seq 2's blocks are not registered.
  kv.free(1);
  EXPECT_EQ(kv.match_prefix(prompt).n_pending, 0);
  // Seq 2 computes: commit registers its blocks, now matchable.
  kv.commit(2, prompt, 9);
  PrefixMatch m = kv.match_prefix(prompt);
  EXPECT_EQ(m.blocks, (std::vector<int32_t>{3, 4}));
  EXPECT_EQ(m.n_pending, 0);
  // A second computation of the same tokens does not replace the registered blocks.
  start(kv, 3, prompt, /*commit=*/true);
  EXPECT_EQ(table_of(kv, 3), (std::vector<int32_t>{6, 7, 2}));
  kv.free(2);
  EXPECT_EQ(kv.match_prefix(prompt).blocks, (std::vector<int32_t>{3, 4}));
  expect_stats(kv, 3, 3, 2);  // block 5 (1 committed token) stays as a partial entry
}

TEST(KvManager, DifferentTokensNeverMatch) {
  KvManager kv = make(16, 4);
  const Tokens a = iota_tokens(13);
  start(kv, 1, a, /*commit=*/true);  // blocks 0 1 2 3
  // Same first block, different second block: only block 0.
  Tokens b = a;
  b[5] = 7;
  EXPECT_EQ(kv.match_prefix(b).blocks, (std::vector<int32_t>{0}));
  // Different first block, identical later blocks: nothing (the hash is chained).
  Tokens c = a;
  c[0] = 7;
  EXPECT_TRUE(kv.match_prefix(c).blocks.empty());
  // Same tokens at other positions: nothing.
  Tokens d(a.begin() + 4, a.end());
  d.push_back(1);
  EXPECT_TRUE(kv.match_prefix(d).blocks.empty());
  // A permutation within a block: nothing.
  Tokens e = a;
  std::swap(e[0], e[1]);
  EXPECT_TRUE(kv.match_prefix(e).blocks.empty());
  // Tokens that are equal as bytes in another width (negative ids) do not alias.
  Tokens f = a;
  f[2] = -f[2];
  EXPECT_TRUE(kv.match_prefix(f).blocks.empty());
}

TEST(KvManager, CachedBlocksEvictedLeastRecentlyReleasedFirst) {
  KvManager kv = make();
  const Tokens a = iota_tokens(9, 100);
  const Tokens b = iota_tokens(9, 200);
  start(kv, 1, a, /*commit=*/true);  // 0 1 2
  start(kv, 2, b, /*commit=*/true);  // 3 4 5
  // Released last block first; the partial blocks 2 and 5 (one committed token) go to the
  // least-recent end, full blocks to the most-recent end.
  kv.free(1);  // cached: 2 1 0; free: 6 7
  kv.free(2);  // cached: 5 2 1 0 4 3; free: 6 7
  expect_stats(kv, 0, 6, 2);
  EXPECT_EQ(kv.match_prefix(a).blocks, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(kv.match_prefix(b).blocks, (std::vector<int32_t>{3, 4}));

  ASSERT_TRUE(kv.open(3, {}).is_ok());
  ASSERT_TRUE(kv.allocate(3, 16));  // free blocks first, then the partial entries
  EXPECT_EQ(table_of(kv, 3), (std::vector<int32_t>{6, 7, 5, 2}));
  EXPECT_EQ(kv.stats().n_evictions, 2u);
  ASSERT_TRUE(kv.allocate(3, 17));  // evicts block 1
  EXPECT_EQ(kv.table(3).back(), 1);
  EXPECT_EQ(kv.stats().n_evictions, 3u);
  EXPECT_EQ(kv.match_prefix(a).blocks, (std::vector<int32_t>{0}));
  ASSERT_TRUE(kv.allocate(3, 21));  // evicts block 0
  EXPECT_EQ(kv.table(3).back(), 0);
  EXPECT_TRUE(kv.match_prefix(a).blocks.empty());
  EXPECT_EQ(kv.match_prefix(b).blocks, (std::vector<int32_t>{3, 4}));
  ASSERT_TRUE(kv.allocate(3, 25));  // evicts block 4
  EXPECT_EQ(kv.table(3).back(), 4);
  EXPECT_EQ(kv.match_prefix(b).blocks, (std::vector<int32_t>{3}));
  ASSERT_TRUE(kv.allocate(3, 29));  // evicts block 3
  EXPECT_EQ(kv.table(3).back(), 3);
  EXPECT_EQ(kv.stats().n_evictions, 6u);
  expect_stats(kv, 8, 0, 0);
  EXPECT_FALSE(kv.allocate(3, 33));
}

TEST(KvManager, RevivedBlockLeavesFreeListAndReturnsAsMostRecent) {
  KvManager kv = make();
  const Tokens a = iota_tokens(9, 100);
  const Tokens b = iota_tokens(9, 200);
  start(kv, 1, a, /*commit=*/true);  // 0 1 2
  start(kv, 2, b, /*commit=*/true);  // 3 4 5
  kv.free(1);
  kv.free(2);  // cached LRU: 5 2 (partial entries) 1 0 4 3
  // Revive a's blocks, then release them again: now they are the most recent.
  PrefixMatch m = kv.match_prefix(a);
  ASSERT_EQ(m.blocks, (std::vector<int32_t>{0, 1}));
  ASSERT_TRUE(kv.open(3, m.blocks, 9).is_ok());
  expect_stats(kv, 2, 4, 2);
  EXPECT_EQ(kv.ref_count(0), 1);
  EXPECT_EQ(kv.ref_count(1), 1);
  kv.free(3);  // cached LRU: 5 2 4 3 1 0
  expect_stats(kv, 0, 6, 2);
  ASSERT_TRUE(kv.open(4, {}).is_ok());
  ASSERT_TRUE(kv.allocate(4, 32));
  EXPECT_EQ(table_of(kv, 4), (std::vector<int32_t>{6, 7, 5, 2, 4, 3, 1, 0}));
  EXPECT_EQ(kv.stats().n_evictions, 6u);
}

TEST(KvManager, AllocateIsAllOrNothing) {
  KvManager kv = make();
  ASSERT_TRUE(kv.open(1, {}).is_ok());
  ASSERT_TRUE(kv.allocate(1, 28));  // 7 blocks
  ASSERT_TRUE(kv.open(2, {}).is_ok());
  const KvStats before = kv.stats();
  EXPECT_EQ(kv.blocks_needed(2, 5), 2);
  EXPECT_FALSE(kv.allocate(2, 5, iota_tokens(5)));
  EXPECT_TRUE(kv.table(2).empty());
  EXPECT_EQ(kv.stats().n_used, before.n_used);
  EXPECT_EQ(kv.n_available(), 1);
  EXPECT_TRUE(kv.allocate(2, 4));
  EXPECT_EQ(table_of(kv, 2), (std::vector<int32_t>{7}));
  EXPECT_FALSE(kv.allocate(1, 29));
  EXPECT_EQ(kv.table(1).size(), 7u);
  expect_stats(kv, 8, 0, 0);
}

TEST(KvManager, ForkAndCopyOnWrite) {
  KvManager kv = make();
  const Tokens prompt = iota_tokens(6);
  start(kv, 1, prompt, /*commit=*/true);  // 0 1
  ASSERT_TRUE(kv.fork(1, 2).is_ok());
  EXPECT_EQ(kv.fork(1, 2).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(table_of(kv, 2), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(kv.ref_count(0), 2);
  EXPECT_EQ(kv.ref_count(1), 2);
  expect_stats(kv, 2, 0, 6);

  // Seq 2 writes position 6 (in the shared partial block 1): copy 1 -> 2.
  auto r = kv.prepare_write(2, 6);
  ASSERT_TRUE(r.is_ok());
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->src, 1);
  EXPECT_EQ((*r)->dst, 2);
  EXPECT_EQ(table_of(kv, 2), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(table_of(kv, 1), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(kv.ref_count(0), 2);
  EXPECT_EQ(kv.ref_count(1), 1);
  EXPECT_EQ(kv.ref_count(2), 1);
  // Now private: no more copies, for either sequence.
  r = kv.prepare_write(2, 7);
  ASSERT_TRUE(r.is_ok());
  EXPECT_FALSE(r->has_value());
  r = kv.prepare_write(1, 6);
  ASSERT_TRUE(r.is_ok());
  EXPECT_FALSE(r->has_value());
  // Out of range positions.
  EXPECT_EQ(kv.prepare_write(2, 8).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.prepare_write(2, -1).status().code(), StatusCode::kInvalidArgument);
  expect_stats(kv, 3, 0, 5);

  // Freeing the source keeps the shared block alive for the fork.
  kv.free(1);
  EXPECT_EQ(kv.ref_count(0), 1);
  EXPECT_EQ(kv.ref_count(1), 0);
  EXPECT_EQ(table_of(kv, 2), (std::vector<int32_t>{0, 2}));
  expect_stats(kv, 2, 0, 6);  // block 1 (partial, no hash) is free; block 0 still used by seq 2
}

TEST(KvManager, CopyOnWriteOutOfMemory) {
  KvManager kv = make(4, 4);
  ASSERT_TRUE(kv.open(1, {}).is_ok());
  ASSERT_TRUE(kv.allocate(1, 6));  // 0 1
  ASSERT_TRUE(kv.fork(1, 2).is_ok());
  ASSERT_TRUE(kv.open(3, {}).is_ok());
  ASSERT_TRUE(kv.allocate(3, 8));  // 2 3
  auto r = kv.prepare_write(2, 6);
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfMemory);
  EXPECT_EQ(table_of(kv, 2), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(kv.ref_count(1), 2);
  kv.free(3);
  r = kv.prepare_write(2, 6);
  ASSERT_TRUE(r.is_ok());
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->src, 1);
  EXPECT_EQ((*r)->dst, 3);  // free list after free(3): 3 2 (last block released first)
}

TEST(KvManager, ForkSharesPrefixBlocksThenDiverges) {
  KvManager kv = make();
  const Tokens prompt = iota_tokens(8);
  start(kv, 1, prompt, /*commit=*/true);  // 0 1, both full
  ASSERT_TRUE(kv.fork(1, 2).is_ok());
  // Each grows by one block for its own token; no copy needed for new private blocks.
  Tokens t1 = prompt, t2 = prompt;
  t1.push_back(1);
  t2.push_back(2);
  ASSERT_TRUE(kv.allocate(1, 9, t1));
  ASSERT_TRUE(kv.allocate(2, 9, t2));
  EXPECT_EQ(table_of(kv, 1), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(table_of(kv, 2), (std::vector<int32_t>{0, 1, 3}));
  auto r = kv.prepare_write(2, 8);
  ASSERT_TRUE(r.is_ok());
  EXPECT_FALSE(r->has_value());
  kv.commit(1, t1, 9);
  kv.commit(2, t2, 9);
  kv.free(1);
  kv.free(2);
  expect_stats(kv, 0, 4, 4);  // 0 1 full; 2 and 3 partial entries (one committed token each)
  EXPECT_EQ(kv.match_prefix(iota_tokens(9)).blocks, (std::vector<int32_t>{0, 1}));
}

TEST(KvManager, PrefixCachingOff) {
  KvManager kv = make(8, 4, /*prefix_caching=*/false);
  const Tokens prompt = iota_tokens(10);
  start(kv, 1, prompt, /*commit=*/true);
  PrefixMatch m = kv.match_prefix(prompt);
  EXPECT_TRUE(m.blocks.empty());
  EXPECT_EQ(m.n_pending, 0);
  kv.free(1);
  expect_stats(kv, 0, 0, 8);
}

TEST(KvManager, MoveKeepsState) {
  KvManager kv = make();
  start(kv, 1, iota_tokens(9), /*commit=*/true);
  KvManager moved = std::move(kv);
  EXPECT_EQ(table_of(moved, 1), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(moved.match_prefix(iota_tokens(9)).blocks, (std::vector<int32_t>{0, 1}));
}

// ---- randomized stress against a reference model -----------------------------------------------

struct RefSeq {
  Tokens tokens;
  int32_t n_committed = 0;
};

class Stress {
 public:
  Stress(int32_t n_blocks, int32_t block_size, bool caching, uint32_t seed)
      : kv_(make(n_blocks, block_size, caching)),
        bs_(block_size),
        rng_(seed),
        ctx_(static_cast<size_t>(n_blocks)) {
    // A few shared prompt starts over a tiny alphabet so that equal blocks are frequent.
    for (int f = 0; f < 3; ++f) {
      Tokens t;
      for (int i = 0; i < 6 * block_size; ++i) t.push_back(pick(0, 3));
      families_.push_back(t);
    }
  }

  void run(int n_ops) {
    for (int op = 0; op < n_ops; ++op) {
      const int kind = pick(0, 9);
      if (kind <= 1 || seqs_.empty()) {
        do_open();
      } else if (kind <= 4) {
        do_allocate(any_seq());
      } else if (kind <= 6) {
        do_compute(any_seq());
      } else if (kind == 7) {
        do_fork(any_seq());
      } else {
        do_free(any_seq());
      }
      check();
      if (::testing::Test::HasFailure()) {
        ADD_FAILURE() << "stopped at op " << op;
        return;
      }
    }
    for (auto& [id, s] : seqs_) kv_.free(id);
    seqs_.clear();
    check();
    const KvStats st = kv_.stats();
    EXPECT_EQ(st.n_used, 0);
  }

  uint64_t n_evictions() const { return kv_.stats().n_evictions; }
  uint64_t n_hit_blocks = 0;
  uint64_t n_copies = 0;
  uint64_t n_alloc_fail = 0;

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  SeqId any_seq() {
    auto it = seqs_.begin();
    std::advance(it, pick(0, static_cast<int>(seqs_.size()) - 1));
    return it->first;
  }

  void do_open() {
    if (seqs_.size() >= 6) return;
    const SeqId id = next_id_++;
    Tokens t = families_[static_cast<size_t>(pick(0, 2))];
    t.resize(static_cast<size_t>(pick(1, static_cast<int>(t.size()))));
    for (int i = pick(0, 2 * bs_); i > 0; --i) t.push_back(pick(0, 3));
    const PrefixMatch m = kv_.match_prefix(t);
    ASSERT_LE(m.blocks.size() * static_cast<size_t>(bs_), t.size() - 1);
    for (size_t i = 0; i < m.blocks.size(); ++i) {
      const int32_t b = m.blocks[i];
      const Tokens want(t.begin(), t.begin() + static_cast<ptrdiff_t>((i + 1) * bs_));
      ASSERT_EQ(ctx_[static_cast<size_t>(b)], want) << "block " << b << " matched wrong K/V";
    }
    ASSERT_TRUE(kv_.open(id, m.blocks, static_cast<int64_t>(t.size())).is_ok());
    n_hit_blocks += m.blocks.size();
    RefSeq s;
    s.tokens = t;
    s.n_committed = static_cast<int32_t>(m.blocks.size()) * bs_;
    seqs_[id] = s;
  }

  void do_allocate(SeqId id) {
    RefSeq& s = seqs_[id];
    const int32_t have = static_cast<int32_t>(kv_.table(id).size()) * bs_;
    const int32_t n = std::max(have, static_cast<int32_t>(s.tokens.size())) + pick(0, 2 * bs_);
    while (static_cast<int32_t>(s.tokens.size()) < n) s.tokens.push_back(pick(0, 3));
    const int32_t need = kv_.blocks_needed(id, n);
    const int32_t want_need = std::max(0, (n + bs_ - 1) / bs_ - have / bs_);
    ASSERT_EQ(need, want_need);
    const bool expect_ok = need <= kv_.n_available();
    const std::vector<int32_t> before = table_of(kv_, id);
    // Pass a token list shorter than n sometimes (tokens not known yet).
    const size_t n_known = pick(0, 1) ? s.tokens.size() : s.tokens.size() / 2;
    const bool ok = kv_.allocate(id, n, std::span<const int32_t>(s.tokens.data(), n_known));
    ASSERT_EQ(ok, expect_ok);
    const std::vector<int32_t> after = table_of(kv_, id);
    if (!ok) {
      ++n_alloc_fail;
      ASSERT_EQ(after, before);
      return;
    }
    ASSERT_EQ(after.size(), before.size() + static_cast<size_t>(need));
    ASSERT_TRUE(std::equal(before.begin(), before.end(), after.begin()));
    for (size_t i = before.size(); i < after.size(); ++i) {
      const int32_t b = after[i];
      ASSERT_EQ(std::count(after.begin(), after.end(), b), 1);
      ctx_[static_cast<size_t>(b)].clear();  // fresh block: contents undefined
    }
  }

  // Computes positions [n_committed, n) as the engine would: prepare_write, then commit.
  void do_compute(SeqId id) {
    RefSeq& s = seqs_[id];
    const int32_t cover = std::min(static_cast<int32_t>(kv_.table(id).size()) * bs_,
                                   static_cast<int32_t>(s.tokens.size()));
    if (cover <= s.n_committed) return;
    int32_t n = pick(s.n_committed + 1, cover);
    for (int32_t pos = s.n_committed; pos < n; ++pos) {
      const std::vector<int32_t> before = table_of(kv_, id);
      const size_t i = static_cast<size_t>(pos / bs_);
      const int32_t src_refs = kv_.ref_count(before[i]);
      const int32_t available = kv_.n_available();
      auto r = kv_.prepare_write(id, pos);
      if (!r.is_ok()) {
        ASSERT_EQ(r.status().code(), StatusCode::kOutOfMemory);
        ASSERT_GT(src_refs, 1);
        ASSERT_EQ(available, 0);
        n = pos;
        break;
      }
      const std::vector<int32_t> after = table_of(kv_, id);
      if (r->has_value()) {
        ++n_copies;
        ASSERT_GT(src_refs, 1);
        ASSERT_EQ((*r)->src, before[i]);
        ASSERT_EQ((*r)->dst, after[i]);
        ASSERT_NE((*r)->src, (*r)->dst);
        ctx_[static_cast<size_t>((*r)->dst)].clear();  // partial copy: no full context yet
      } else {
        ASSERT_EQ(src_refs, 1);
        ASSERT_EQ(after, before);
      }
      ASSERT_EQ(kv_.ref_count(after[i]), 1);
    }
    if (n <= s.n_committed) return;
    kv_.commit(id, s.tokens, n);
    const std::vector<int32_t> t = table_of(kv_, id);
    for (int32_t end = (s.n_committed / bs_ + 1) * bs_; end <= n; end += bs_) {
      const int32_t b = t[static_cast<size_t>(end / bs_ - 1)];
      ctx_[static_cast<size_t>(b)] = Tokens(s.tokens.begin(), s.tokens.begin() + end);
    }
    s.n_committed = n;
  }

  void do_fork(SeqId id) {
    if (seqs_.size() >= 6) return;
    const SeqId dst = next_id_++;
    ASSERT_TRUE(kv_.fork(id, dst).is_ok());
    ASSERT_EQ(table_of(kv_, dst), table_of(kv_, id));
    seqs_[dst] = seqs_[id];
  }

  void do_free(SeqId id) {
    kv_.free(id);
    seqs_.erase(id);
    ASSERT_FALSE(kv_.is_open(id));
  }

  void check() {
    std::vector<int32_t> refs(ctx_.size(), 0);
    for (auto& [id, s] : seqs_) {
      ASSERT_TRUE(kv_.is_open(id));
      for (int32_t b : kv_.table(id)) {
        ASSERT_GE(b, 0);
        ASSERT_LT(b, kv_.n_blocks());
        ++refs[static_cast<size_t>(b)];
      }
    }
    int32_t used = 0;
    for (size_t b = 0; b < refs.size(); ++b) {
      ASSERT_EQ(kv_.ref_count(static_cast<int32_t>(b)), refs[b]) << "block " << b;
      used += refs[b] > 0;
    }
    const KvStats st = kv_.stats();
    ASSERT_EQ(st.n_blocks, kv_.n_blocks());
    ASSERT_EQ(st.n_used, used);
    ASSERT_EQ(st.n_used + st.n_cached + st.n_free, st.n_blocks);
    ASSERT_EQ(kv_.n_available(), st.n_cached + st.n_free);
    ASSERT_GE(st.n_cached, 0);
    ASSERT_GE(st.n_free, 0);
  }

  KvManager kv_;
  int32_t bs_;
  std::mt19937 rng_;
  std::vector<Tokens> ctx_;  // per block: token context whose K/V it holds when full and computed
  std::vector<Tokens> families_;
  std::map<SeqId, RefSeq> seqs_;
  SeqId next_id_ = 1;
};

TEST(KvManager, RandomizedStress) {
  struct Config {
    int32_t n_blocks, block_size;
    bool caching;
  };
  for (const Config& c : {Config{16, 4, true}, Config{8, 2, true}, Config{24, 1, true},
                          Config{32, 3, true}, Config{12, 4, false}}) {
    for (uint32_t seed = 1; seed <= 4; ++seed) {
      SCOPED_TRACE(::testing::Message() << "n_blocks " << c.n_blocks << " block_size "
                                        << c.block_size << " seed " << seed);
      Stress s(c.n_blocks, c.block_size, c.caching, seed);
      s.run(5000);
      if (c.caching) {
        EXPECT_GT(s.n_hit_blocks, 0u);
        EXPECT_GT(s.n_evictions(), 0u);
      }
      EXPECT_GT(s.n_copies, 0u);
      EXPECT_GT(s.n_alloc_fail, 0u);
      if (::testing::Test::HasFailure()) return;
    }
  }
}

}  // namespace
}  // namespace llmt::kv

namespace llmt::kv {
namespace {

// A prompt that shares 6 tokens with a cached one (block size 4): one full block is shared, the
// next block's first 2 tokens come from a private copy of the cached block.
TEST(KvManagerPartial, SharedStartOfABlockIsCopied) {
  KvManager kv = make();
  Tokens a = iota_tokens(10);
  start(kv, 1, a, /*commit=*/true);
  EXPECT_EQ(table_of(kv, 1), (std::vector<int32_t>{0, 1, 2}));
  Tokens b = iota_tokens(6);
  for (int32_t t : {900, 901, 902, 903}) b.push_back(t);
  PrefixMatch m = kv.match_prefix(b);
  EXPECT_EQ(m.blocks, (std::vector<int32_t>{0}));
  EXPECT_EQ(m.partial_block, 1);
  EXPECT_EQ(m.n_partial, 2);
  EXPECT_EQ(m.n_pending, 0);
  auto copy = kv.open_partial(2, m.blocks, m.partial_block, m.n_partial, 10);
  ASSERT_TRUE(copy.is_ok()) << copy.status().to_string();
  EXPECT_EQ(copy->src, 1);
  EXPECT_EQ(copy->dst, 3);
  EXPECT_EQ(table_of(kv, 2), (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(kv.ref_count(0), 2);
  EXPECT_EQ(kv.ref_count(1), 1);  // only sequence 1: the copy is private
  EXPECT_EQ(kv.stats().n_hit_tokens, 6u);
  ASSERT_TRUE(kv.allocate(2, 10, b));
  EXPECT_EQ(table_of(kv, 2), (std::vector<int32_t>{0, 3, 4}));
  kv.commit(2, b, 10);
  // Sequence 2's own second block is registered under its own tokens and matchable.
  Tokens c = b;
  c.push_back(7);
  PrefixMatch m2 = kv.match_prefix(c);
  EXPECT_EQ(m2.blocks, (std::vector<int32_t>{0, 3}));
  // The partial match also stops one token short of the end.
  PrefixMatch m3 = kv.match_prefix(iota_tokens(7));
  EXPECT_EQ(m3.blocks, (std::vector<int32_t>{0}));
  // Blocks 1 and 3 both start with 104, 105; either may serve.
  EXPECT_TRUE(m3.partial_block == 1 || m3.partial_block == 3) << m3.partial_block;
  EXPECT_EQ(m3.n_partial, 2);
}

// A cached source block with no references is pinned while the copy's target is taken, so it is
// never the block evicted for its own copy.
TEST(KvManagerPartial, SourceNotEvictedForItsOwnCopy) {
  KvManager kv = make(3, 4);
  Tokens a = iota_tokens(8);
  start(kv, 1, a, /*commit=*/true);
  kv.free(1);  // blocks 0 and 1 cached; block 2 never used
  Tokens b = iota_tokens(6);
  b.push_back(900);
  PrefixMatch m = kv.match_prefix(b);
  ASSERT_EQ(m.partial_block, 1);
  // Take the last never-used block so the copy's target must come from the cached ones.
  ASSERT_TRUE(kv.open(5, {}).is_ok());
  ASSERT_TRUE(kv.allocate(5, 1, Tokens{1}));
  auto copy = kv.open_partial(2, m.blocks, m.partial_block, m.n_partial);
  EXPECT_EQ(copy.status().code(), StatusCode::kOutOfMemory);  // block 0 + copy need 2 + pin
  kv.free(5);
  m = kv.match_prefix(b);
  copy = kv.open_partial(2, m.blocks, m.partial_block, m.n_partial);
  ASSERT_TRUE(copy.is_ok()) << copy.status().to_string();
  EXPECT_EQ(copy->src, 1);
  EXPECT_NE(copy->dst, 1);
  EXPECT_NE(copy->dst, 0);
}

// A partially matching block that another sequence is still computing counts as pending.
TEST(KvManagerPartial, PendingPartialBlockIsWaitedFor) {
  KvManager kv = make();
  Tokens a = iota_tokens(10);
  start(kv, 1, a, /*commit=*/false);
  kv.commit(1, a, 4);  // first block computed, second pending
  Tokens b = iota_tokens(6);
  b.push_back(900);
  PrefixMatch m = kv.match_prefix(b);
  EXPECT_EQ(m.blocks, (std::vector<int32_t>{0}));
  EXPECT_EQ(m.n_pending, 1);
  EXPECT_EQ(m.partial_block, -1);
}

}  // namespace
}  // namespace llmt::kv

namespace llmt::kv {
namespace {

// The committed start of a block another sequence is still filling can be copied; the entry
// follows the owner's commits, survives its release as the first block to evict, and goes away
// when the block is reused.
TEST(KvManagerPartial, BlockStillBeingFilled) {
  KvManager kv = make();
  Tokens a = iota_tokens(10);  // blocks 0 1 2; block 2 holds 2 committed tokens
  start(kv, 1, a, /*commit=*/true);
  Tokens b = iota_tokens(9);
  b.push_back(900);
  PrefixMatch m = kv.match_prefix(b);
  EXPECT_EQ(m.blocks, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(m.partial_block, 2);
  EXPECT_EQ(m.n_partial, 1);   // 108; b's last token (900) is left to compute
  Tokens c = iota_tokens(11);  // 100..110: shares 108, 109 with a's block 2 (committed rows)
  c.push_back(901);
  m = kv.match_prefix(c);
  EXPECT_EQ(m.partial_block, 2);
  EXPECT_EQ(m.n_partial, 2);  // only the 2 committed rows, not 110 (not committed in a)
  auto copy = kv.open_partial(2, m.blocks, m.partial_block, m.n_partial);
  ASSERT_TRUE(copy.is_ok()) << copy.status().to_string();
  EXPECT_EQ(copy->src, 2);
  EXPECT_EQ(kv.ref_count(2), 1);  // still only its owner's
  // The owner releases it: it stays matchable, as the first block to evict.
  kv.free(1);
  EXPECT_EQ(kv.match_prefix(c).partial_block, 2);
  expect_stats(kv, 3, 1, 4);  // seq 2: 0 1 + its copy 3; cached: 2 (partial); free: 4 5 6 7
  ASSERT_TRUE(kv.open(3, {}).is_ok());
  ASSERT_TRUE(kv.allocate(3, 20));  // the 4 free blocks, then evicts block 2
  EXPECT_EQ(kv.table(3).back(), 2);
  EXPECT_EQ(kv.match_prefix(c).partial_block, -1);
}

}  // namespace
}  // namespace llmt::kv

// ---- window slots (sliding-window layers kept apart) ----

namespace llmt::kv {
namespace {

KvManager make_windowed(int32_t n_blocks, int32_t n_slots, int32_t window, int32_t bs = 4) {
  KvManagerOptions o;
  o.n_blocks = n_blocks;
  o.block_size = bs;
  o.n_window_slots = n_slots;
  o.window = window;
  return KvManager(o);
}

// Every slot is used, idle or free; the blocks of a table from first_window_block(n) on have
// slots, all different.
void expect_slot_invariants(const KvManager& kv, SeqId seq, int32_t n_next) {
  const KvStats st = kv.stats();
  EXPECT_EQ(st.n_window_used + st.n_window_idle + st.n_window_free, st.n_window_slots);
  auto t = kv.table(seq);
  std::vector<int32_t> seen;
  for (size_t i = static_cast<size_t>(kv.first_window_block(n_next)); i < t.size(); ++i) {
    const int32_t s = kv.window_slot(t[i]);
    ASSERT_GE(s, 0) << "block index " << i;
    EXPECT_EQ(std::count(seen.begin(), seen.end(), s), 0);
    seen.push_back(s);
  }
}

TEST(KvManagerWindow, SlotsFollowTheWindowAndAreReused) {
  // Window 6 positions, blocks of 4: a next position n needs blocks from (n - 5) / 4.
  KvManager kv = make_windowed(16, 4, 6);
  EXPECT_EQ(kv.first_window_block(5), 0);
  EXPECT_EQ(kv.first_window_block(9), 1);
  EXPECT_EQ(kv.first_window_block(13), 2);
  const Tokens toks = iota_tokens(40);
  ASSERT_TRUE(kv.open(1, {}).is_ok());
  int32_t n = 0;
  for (int32_t step : {8, 4, 4, 4, 4, 4, 4}) {  // grows to 32 positions: 8 blocks
    ASSERT_TRUE(kv.allocate(1, n + step, toks)) << n;
    n += step;
    kv.commit(1, toks, n);
    expect_slot_invariants(kv, 1, n);
    // Only what the window of the next position reaches holds a slot in use.
    EXPECT_LE(kv.stats().n_window_used, 3) << n;
  }
  EXPECT_EQ(table_of(kv, 1).size(), 8u);
  // Blocks the window left behind lost their slots to the new ones (4 slots for 8 blocks).
  EXPECT_EQ(kv.window_slot(table_of(kv, 1)[0]), -1);
  EXPECT_GT(kv.stats().n_window_evictions, 0u);
  kv.free(1);
  EXPECT_EQ(kv.stats().n_window_used, 0);
  // Slots are the scarcer resource here: 4 slots, so at most 4 new blocks at once.
  EXPECT_EQ(kv.n_available_blocks(), 16);
  EXPECT_EQ(kv.n_available(), 4);
  ASSERT_TRUE(kv.open(2, {}).is_ok());
  EXPECT_FALSE(kv.allocate(2, 20, iota_tokens(20, 900)));  // 5 blocks at once: all or nothing
  EXPECT_TRUE(table_of(kv, 2).empty());
  EXPECT_TRUE(kv.allocate(2, 16, iota_tokens(16, 900)));
}

TEST(KvManagerWindow, PrefixMatchStopsWhereTheWindowLostItsSlots) {
  KvManager kv = make_windowed(32, 6, 6);
  const Tokens toks = iota_tokens(40);
  ASSERT_TRUE(kv.open(1, {}).is_ok());
  ASSERT_TRUE(kv.allocate(1, 12, toks));
  kv.commit(1, toks, 12);  // blocks 0-2 computed; the window of 12 reaches blocks 1-2
  // While the slots are there, another sequence matches all three (it would continue at 12).
  PrefixMatch m = kv.match_prefix(toks);
  EXPECT_EQ(m.blocks.size(), 3u);
  for (int32_t k = 0; k < 4; ++k) {  // grow to 28: the slots of blocks 0-2 go idle
    ASSERT_TRUE(kv.allocate(1, 16 + 4 * k, toks));
    kv.commit(1, toks, 16 + 4 * k);
  }
  kv.free(1);
  EXPECT_EQ(kv.stats().n_window_used, 0);
  // Idle slots keep their bytes: a prefix still matches in full (28 positions: 7 blocks).
  m = kv.match_prefix(toks);
  EXPECT_EQ(m.blocks.size(), 7u);
  // Another sequence takes every slot (6 blocks): the idle ones are evicted oldest first.
  ASSERT_TRUE(kv.open(2, {}).is_ok());
  const Tokens other = iota_tokens(24, 5000);
  ASSERT_TRUE(kv.allocate(2, 24, other));
  kv.commit(2, other, 24);
  EXPECT_EQ(kv.stats().n_window_idle, 4);  // the window of 24 reaches blocks 4-5 only
  m = kv.match_prefix(toks);
  // No block of the old sequence has a slot now: a match could only start at 0.
  EXPECT_TRUE(m.blocks.empty());
  EXPECT_EQ(m.partial_block, -1);
  kv.free(2);
  // `other` matches where the window of the match's end still has its slots (all idle now).
  m = kv.match_prefix(other);
  ASSERT_EQ(m.blocks.size(), 5u);
  const size_t k = m.blocks.size();
  for (size_t i = static_cast<size_t>(kv.first_window_block(static_cast<int32_t>(k) * 4)); i < k;
       ++i) {
    EXPECT_GE(kv.window_slot(m.blocks[i]), 0);
  }
  // A third sequence takes 3 slots: the oldest idle ones (blocks 0-2 of `other`) go first, so
  // `other` still matches in full; 3 more and the match is cut.
  ASSERT_TRUE(kv.open(4, {}).is_ok());
  ASSERT_TRUE(kv.allocate(4, 12, iota_tokens(12, 7000)));
  EXPECT_EQ(kv.match_prefix(other).blocks.size(), 5u);
  ASSERT_TRUE(kv.allocate(4, 24, iota_tokens(24, 7000)));
  EXPECT_LT(kv.match_prefix(other).blocks.size(), 5u);
  kv.free(4);
  m = kv.match_prefix(other);
  ASSERT_TRUE(kv.open(3, m.blocks).is_ok());
  expect_slot_invariants(kv, 3, static_cast<int32_t>(k) * 4);
}

TEST(KvManagerWindow, RestoreForkCopyOnWriteAndFree) {
  KvManager kv = make_windowed(32, 8, 6);
  const Tokens toks = iota_tokens(40);
  // A restored sequence of 30 positions gets slots only for the blocks its window reaches.
  ASSERT_TRUE(kv.open(1, {}).is_ok());
  ASSERT_TRUE(kv.set_restored(1, 30).is_ok());
  ASSERT_TRUE(kv.allocate(1, 31, toks));
  EXPECT_EQ(table_of(kv, 1).size(), 8u);
  EXPECT_EQ(kv.stats().n_window_used, 8 - kv.first_window_block(30));
  expect_slot_invariants(kv, 1, 30);
  EXPECT_EQ(kv.window_slot(table_of(kv, 1)[0]), -1);
  kv.commit(1, toks, 30);
  EXPECT_FALSE(kv.set_restored(1, 4).is_ok());  // not an empty table
  // fork shares the window: writing into the shared last block copies it, slot included.
  ASSERT_TRUE(kv.fork(1, 2).is_ok());
  const int32_t used = kv.stats().n_window_used;
  auto copy = kv.prepare_write(2, 30);
  ASSERT_TRUE(copy.is_ok());
  ASSERT_TRUE(copy->has_value());
  EXPECT_GE((*copy)->src_slot, 0);
  EXPECT_GE((*copy)->dst_slot, 0);
  EXPECT_NE((*copy)->src_slot, (*copy)->dst_slot);
  EXPECT_EQ(kv.stats().n_window_used, used + 1);
  // Rewriting below the window that was let go is refused.
  EXPECT_FALSE(kv.prepare_write(2, 2).is_ok());
  kv.free(1);
  kv.free(2);
  const KvStats st = kv.stats();
  EXPECT_EQ(st.n_window_used, 0);
  EXPECT_EQ(st.n_window_used + st.n_window_idle + st.n_window_free, 8);
}

// Random opens, growth, forks, copies, matches and frees: the slot accounting stays whole and
// every window-reached block of every live sequence has its own slot.
TEST(KvManagerWindow, RandomizedInvariants) {
  std::mt19937 rng(7);
  KvManager kv = make_windowed(48, 14, 9, 4);
  std::map<SeqId, std::pair<Tokens, int32_t>> live;  // tokens, committed
  SeqId next_id = 1;
  for (int iter = 0; iter < 3000; ++iter) {
    const int op = static_cast<int>(rng() % 5);
    if (op == 0 || live.empty()) {
      Tokens t =
          iota_tokens(8 + static_cast<int32_t>(rng() % 40), 100 * static_cast<int32_t>(rng() % 3));
      PrefixMatch m = kv.match_prefix(t);
      const SeqId id = next_id++;
      if (!kv.open(id, m.blocks).is_ok()) continue;
      live[id] = {t, static_cast<int32_t>(m.blocks.size()) * 4};
    } else if (op == 1 || op == 2) {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      auto& [t, n] = it->second;
      if (n >= static_cast<int32_t>(t.size())) continue;
      const int32_t to = std::min<int32_t>(static_cast<int32_t>(t.size()),
                                           n + 1 + static_cast<int32_t>(rng() % 9));
      if (!kv.allocate(it->first, to, t)) continue;
      n = to;
      kv.commit(it->first, t, n);
    } else if (op == 3) {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      const SeqId id = next_id++;
      if (!kv.fork(it->first, id).is_ok()) continue;
      live[id] = it->second;
      auto& [t, n] = live[id];
      if (n > 0 && n < static_cast<int32_t>(kv.table(id).size()) * 4) {
        (void)kv.prepare_write(id, n);
      }
    } else {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      kv.free(it->first);
      live.erase(it);
    }
    const KvStats st = kv.stats();
    ASSERT_EQ(st.n_window_used + st.n_window_idle + st.n_window_free, 14);
    std::vector<int32_t> held(14, 0);
    for (const auto& [id, v] : live) {
      auto t = kv.table(id);
      for (size_t i = static_cast<size_t>(kv.first_window_block(v.second)); i < t.size(); ++i) {
        const int32_t s = kv.window_slot(t[i]);
        ASSERT_GE(s, 0) << "iter " << iter;
        held[static_cast<size_t>(s)] = 1;
      }
    }
    int32_t n_held = 0;
    for (int32_t h : held) n_held += h;
    ASSERT_LE(n_held, st.n_window_used) << "iter " << iter;
  }
  for (const auto& [id, v] : live) kv.free(id);
  EXPECT_EQ(kv.stats().n_window_used, 0);
}

}  // namespace
}  // namespace llmt::kv
