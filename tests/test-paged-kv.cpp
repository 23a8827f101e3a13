// The paged KV cache: attention through block tables (ops attend_paged*) is bitwise equal to
// contiguous attention for any block size and placement; Context::decode_paged() gives bitwise
// the logits of the fixed-slot decode() for scattered blocks, chunked prompts, prefix sharing and
// copied (copy-on-write) blocks; every documented error leaves the cache and logits unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "llmthreads/model.h"
#include "test-util.h"

namespace {

using Entry = llmt::Context::BatchEntry;
using Logits = std::vector<float>;
using Table = std::vector<int32_t>;

bool bitwise_equal(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), b.size() * sizeof(float)) == 0;
}

std::vector<llmt::kernels::Isa> isas() {
  std::vector<llmt::kernels::Isa> v = {llmt::kernels::Isa::kScalar};
  if (llmt::kernels::detect_isa() != llmt::kernels::Isa::kScalar) {
    v.push_back(llmt::kernels::detect_isa());
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Ops level.

// K/V rows of n_kv positions (contiguous, [n_kv, hd] elements of T) scattered into a pool of
// blocks in shuffled order; the rest of the pool holds NaN so a stray read shows.
template <typename T>
struct PagedLayout {
  std::vector<uint8_t> pool;
  Table table;
  size_t stride = 0;            // bytes between blocks
  size_t k_off = 0, v_off = 0;  // K and V of the emulated (layer, head) inside a block
};

template <typename T>
PagedLayout<T> scatter(const std::vector<T>& k, const std::vector<T>& v, int32_t n_kv, int32_t hd,
                       int32_t bs, T nan_value, std::mt19937& rng) {
  PagedLayout<T> p;
  const int32_t n_used = (n_kv + bs - 1) / bs;
  const int32_t n_blocks = n_used + 3;
  const size_t part = static_cast<size_t>(bs) * hd * sizeof(T);  // one head's rows of a block
  // A block holds three "heads" of K and then three of V; ours is the middle one.
  p.stride = 6 * part;
  p.k_off = part;
  p.v_off = 4 * part;
  p.pool.resize(p.stride * n_blocks);
  for (size_t i = 0; i < p.pool.size() / sizeof(T); ++i) {
    std::memcpy(p.pool.data() + i * sizeof(T), &nan_value, sizeof(T));
  }
  std::vector<int32_t> ids(n_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  p.table.assign(ids.begin(), ids.begin() + n_used);
  for (int32_t j = 0; j < n_kv; ++j) {
    const size_t at = static_cast<size_t>(p.table[j / bs]) * p.stride +
                      static_cast<size_t>(j % bs) * hd * sizeof(T);
    std::memcpy(p.pool.data() + at + p.k_off, k.data() + static_cast<size_t>(j) * hd,
                hd * sizeof(T));
    std::memcpy(p.pool.data() + at + p.v_off, v.data() + static_cast<size_t>(j) * hd,
                hd * sizeof(T));
  }
  return p;
}

TEST(PagedAttend, BitwiseEqualsContiguous) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const uint16_t nan16 = 0x7e00;
  const float nan32 = std::nanf("");
  for (const auto isa : isas()) {
    const auto& ot = llmt::ops::ops_table(isa);
    for (const int32_t hd : {8, 12, 64}) {
      for (const int32_t n_kv : {1, 5, 33, 100, 257}) {
        for (const int32_t n_q : {1, 3}) {
          std::vector<float> q(static_cast<size_t>(n_q) * hd);
          for (auto& x : q) x = nd(rng);
          std::vector<float> k(static_cast<size_t>(n_kv) * hd), v(k.size());
          for (auto& x : k) x = nd(rng) * 2.0f;
          for (auto& x : v) x = nd(rng);
          std::vector<uint16_t> k16(k.size()), v16(v.size());
          llmt::ops::to_f16_scalar(k.data(), k16.data(), static_cast<int64_t>(k.size()));
          llmt::ops::to_f16_scalar(v.data(), v16.data(), static_cast<int64_t>(v.size()));
          const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
          std::vector<float> sc(static_cast<size_t>(n_q) * n_kv);
          std::vector<float> want(q.size()), want16(q.size()), got(q.size());
          ot.attend(q.data(), n_q, k.data(), v.data(), n_kv, hd, scale, sc.data(), want.data());
          ot.attend_f16(q.data(), n_q, k16.data(), v16.data(), n_kv, hd, scale, sc.data(),
                        want16.data());
          for (const int32_t bs : {1, 3, 16, 32, 100}) {
            SCOPED_TRACE(std::string(llmt::kernels::isa_name(isa)) + " hd " + std::to_string(hd) +
                         " n_kv " + std::to_string(n_kv) + " n_q " + std::to_string(n_q) +
                         " block " + std::to_string(bs));
            const auto p = scatter(k, v, n_kv, hd, bs, nan32, rng);
            std::fill(got.begin(), got.end(), -1.0f);
            ot.attend_paged(q.data(), n_q, p.pool.data() + p.k_off, p.pool.data() + p.v_off,
                            p.table.data(), p.stride, bs, n_kv, hd, scale, sc.data(), got.data());
            EXPECT_TRUE(bitwise_equal(got, want)) << "F32";
            const auto p16 = scatter(k16, v16, n_kv, hd, bs, nan16, rng);
            std::fill(got.begin(), got.end(), -1.0f);
            ot.attend_paged_f16(q.data(), n_q, p16.pool.data() + p16.k_off,
                                p16.pool.data() + p16.v_off, p16.table.data(), p16.stride, bs, n_kv,
                                hd, scale, sc.data(), got.data());
            EXPECT_TRUE(bitwise_equal(got, want16)) << "F16";
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Model level.

struct Case {
  const char* model;  // path under the data folder
  llmt::KvType kv;
  int32_t block_size;
  int32_t n_prompt;  // prompt length of each sequence (varied a little per sequence)
  int32_t n_gen;     // tokens fed one by one after the prompt
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.model << (c.kv == llmt::KvType::kF16 ? " F16" : " F32") << " block " << c.block_size;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string m = std::filesystem::path(info.param.model).stem().string();
  for (char& ch : m) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return m + (info.param.kv == llmt::KvType::kF16 ? "_f16" : "_f32") + "_bs" +
         std::to_string(info.param.block_size);
}

class PagedContext : public ::testing::TestWithParam<Case> {
 protected:
  static constexpr int32_t kNCtx = 64;

  void SetUp() override {
    LLMT_REQUIRE_DATA(GetParam().model);
    auto m = llmt::Model::load(llmt::test::data_path(GetParam().model));
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    model_ = *m;
    n_vocab_ = model_->hparams().n_vocab;
  }

  std::vector<int32_t> random_tokens(int32_t n, uint32_t seed) const {
    std::mt19937 rng(seed);
    std::vector<int32_t> t(n);
    for (auto& x : t) x = static_cast<int32_t>(rng() % n_vocab_);
    return t;
  }

  std::unique_ptr<llmt::Context> make_paged(int32_t n_blocks, int32_t n_batch = 512,
                                            int32_t n_threads = 2) {
    llmt::ContextOptions o;
    o.n_ctx = kNCtx;
    o.n_kv_blocks = n_blocks;
    o.kv_block_size = GetParam().block_size;
    o.kv_type = GetParam().kv;
    o.n_threads = n_threads;
    o.n_batch = n_batch;
    auto c = llmt::Context::create(model_, o);
    EXPECT_TRUE(c.is_ok()) << c.status().to_string();
    return c.is_ok() ? std::move(*c) : nullptr;
  }

  // Logits of every position of `tokens` computed alone with the fixed-slot decode(): the
  // prompt (first n_prompt tokens) in one call, then one token per call.
  std::vector<Logits> reference(const std::vector<int32_t>& tokens, int32_t n_prompt) {
    llmt::ContextOptions o;
    o.n_ctx = kNCtx;
    o.kv_type = GetParam().kv;
    o.n_threads = 1;
    auto c = llmt::Context::create(model_, o);
    EXPECT_TRUE(c.is_ok()) << c.status().to_string();
    std::vector<Logits> out;
    if (!c.is_ok()) return out;
    llmt::Context& ctx = **c;
    std::vector<Entry> b;
    for (int32_t i = 0; i < n_prompt; ++i) b.push_back({tokens[i], 0, i, true});
    EXPECT_TRUE(ctx.decode(b).is_ok());
    for (int32_t i = 0; i < n_prompt; ++i) {
      out.emplace_back(ctx.batch_logits(i).begin(), ctx.batch_logits(i).end());
    }
    for (int32_t i = n_prompt; i < static_cast<int32_t>(tokens.size()); ++i) {
      const Entry e{tokens[i], 0, i, true};
      EXPECT_TRUE(ctx.decode({&e, 1}).is_ok());
      out.emplace_back(ctx.batch_logits(0).begin(), ctx.batch_logits(0).end());
    }
    return out;
  }

  int32_t blocks_for(int32_t n_pos) const {
    return (n_pos + GetParam().block_size - 1) / GetParam().block_size;
  }

  static std::vector<std::span<const int32_t>> spans(const std::vector<Table>& tables) {
    return {tables.begin(), tables.end()};
  }

  std::shared_ptr<const llmt::Model> model_;
  int32_t n_vocab_ = 0;
};

// Several sequences in scattered, non-monotonic blocks; prompts fed in chunks of varied sizes,
// interleaved with the other sequences' entries, then token by token; small n_batch so calls are
// split. Every position's logits equal the fixed-slot reference.
TEST_P(PagedContext, ScatteredBlocksMatchFixedSlot) {
  const Case& p = GetParam();
  constexpr int32_t kSeqs = 3;
  std::vector<std::vector<int32_t>> toks;
  std::vector<int32_t> n_prompt;
  std::vector<std::vector<Logits>> want;
  int32_t n_blocks_needed = 0;
  for (int32_t s = 0; s < kSeqs; ++s) {
    n_prompt.push_back(p.n_prompt + 3 * s);
    toks.push_back(random_tokens(n_prompt[s] + p.n_gen, 100 + s));
    want.push_back(reference(toks[s], n_prompt[s]));
    n_blocks_needed += blocks_for(static_cast<int32_t>(toks[s].size()));
  }
  // Shuffled block ids over a pool with spare blocks.
  const int32_t n_blocks = n_blocks_needed + 5;
  std::vector<int32_t> ids(n_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::mt19937 rng(42);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<Table> tables(kSeqs);
  for (int32_t s = 0, next = 0; s < kSeqs; ++s) {
    const int32_t nb = blocks_for(static_cast<int32_t>(toks[s].size()));
    tables[s].assign(ids.begin() + next, ids.begin() + next + nb);
    next += nb;
  }
  auto ctx = make_paged(n_blocks, /*n_batch=*/7);
  ASSERT_TRUE(ctx);
  EXPECT_TRUE(ctx->paged());
  EXPECT_EQ(ctx->kv_block_size(), p.block_size);
  EXPECT_EQ(ctx->n_kv_blocks(), n_blocks);
  EXPECT_EQ(ctx->kv_block_bytes(), ctx->kv_bytes_per_token() * p.block_size);
  const auto tspans = spans(tables);

  const int32_t chunk_sizes[] = {5, 1, 11, 2, 17, 3};
  std::vector<int32_t> fed(kSeqs, 0);
  int step = 0;
  for (bool busy = true; busy; ++step) {
    busy = false;
    std::vector<Entry> b;
    // Sequence s starts at step s (staggered); its chunk for this step.
    for (int32_t s = 0; s < kSeqs; ++s) {
      const int32_t total = static_cast<int32_t>(toks[s].size());
      if (step < s || fed[s] >= total) continue;
      const int32_t n =
          fed[s] < n_prompt[s] ? std::min(chunk_sizes[(step + s) % 6], n_prompt[s] - fed[s]) : 1;
      for (int32_t i = 0; i < n; ++i) {
        const int32_t pos = fed[s] + i;
        b.push_back({toks[s][pos], s, pos, (pos + s) % 2 == 0 || pos >= n_prompt[s] - 1});
      }
      fed[s] += n;
      busy = true;
    }
    if (b.empty()) continue;
    // Interleave the sequences' entries (each sequence keeps its own order).
    std::vector<Entry> mixed;
    std::vector<std::vector<Entry>> per(kSeqs);
    for (const Entry& e : b) per[e.seq_id].push_back(e);
    std::vector<size_t> at(kSeqs, 0);
    while (mixed.size() < b.size()) {
      const int32_t s = static_cast<int32_t>(rng() % kSeqs);
      if (at[s] < per[s].size()) mixed.push_back(per[s][at[s]++]);
    }
    ASSERT_TRUE(ctx->decode_paged(mixed, tspans).is_ok());
    int32_t j = 0;
    for (const Entry& e : mixed) {
      if (!e.want_logits) continue;
      EXPECT_TRUE(bitwise_equal(ctx->batch_logits(j), want[e.seq_id][e.pos]))
          << "seq " << e.seq_id << " pos " << e.pos << " step " << step;
      ++j;
    }
    EXPECT_EQ(ctx->n_logits(), j);
  }
}

// Sequence B shares A's first full blocks (same prompt prefix), then has its own blocks. B's
// logits equal B computed alone, whether A ran in an earlier call or earlier in the same call.
TEST_P(PagedContext, PrefixSharing) {
  const Case& p = GetParam();
  const int32_t bs = p.block_size;
  const int32_t n_shared_blocks = std::max<int32_t>(1, std::min<int32_t>(2, 24 / bs));
  const int32_t n_shared = n_shared_blocks * bs;
  std::vector<int32_t> a = random_tokens(n_shared + 9, 7);
  std::vector<int32_t> b = random_tokens(n_shared + 6 + p.n_gen, 8);
  std::copy(a.begin(), a.begin() + n_shared, b.begin());
  const int32_t nb_a = blocks_for(static_cast<int32_t>(a.size()));
  const int32_t nb_b = blocks_for(static_cast<int32_t>(b.size()));
  const std::vector<Logits> want_b = reference(b, n_shared + 6);

  for (const bool same_call : {false, true}) {
    SCOPED_TRACE(same_call ? "A and B in one call" : "A first");
    // A in odd blocks counted down, B's own blocks in even blocks.
    const int32_t n_blocks = 2 * (nb_a + nb_b) + 2;
    std::vector<Table> tables(2);
    for (int32_t i = 0; i < nb_a; ++i) tables[0].push_back(n_blocks - 1 - 2 * i);
    tables[1].assign(tables[0].begin(), tables[0].begin() + n_shared_blocks);
    for (int32_t i = n_shared_blocks; i < nb_b; ++i) tables[1].push_back(2 * i);
    auto ctx = make_paged(n_blocks);
    ASSERT_TRUE(ctx);
    const auto tspans = spans(tables);
    std::vector<Entry> batch;
    for (int32_t i = 0; i < static_cast<int32_t>(a.size()); ++i) {
      batch.push_back({a[i], 0, i, false});
    }
    if (!same_call) {
      ASSERT_TRUE(ctx->decode_paged(batch, tspans).is_ok());
      batch.clear();
    }
    const int32_t b_prompt_end = n_shared + 6;
    for (int32_t i = n_shared; i < b_prompt_end; ++i) batch.push_back({b[i], 1, i, true});
    ASSERT_TRUE(ctx->decode_paged(batch, tspans).is_ok());
    for (int32_t i = n_shared; i < b_prompt_end; ++i) {
      EXPECT_TRUE(bitwise_equal(ctx->batch_logits(i - n_shared), want_b[i])) << "pos " << i;
    }
    for (int32_t i = b_prompt_end; i < static_cast<int32_t>(b.size()); ++i) {
      const Entry e{b[i], 1, i, true};
      ASSERT_TRUE(ctx->decode_paged({&e, 1}, tspans).is_ok());
      EXPECT_TRUE(bitwise_equal(ctx->batch_logits(0), want_b[i])) << "pos " << i;
    }
  }
}

// Copy-on-write: a block's bytes copied (kv_block) into a free block serve a table pointing at
// the copy: a full shared block, and a partly filled last block that the fork then continues.
TEST_P(PagedContext, CopiedBlocksGiveSameLogits) {
  const Case& p = GetParam();
  const int32_t bs = p.block_size;
  // A: prompt ending inside its last block (unless bs == 1). B: the same prompt, then its own
  // continuation (a fork).
  const int32_t n_prompt = 2 * bs + std::min(bs - 1, 3) + (bs == 1 ? 5 : 0);
  std::vector<int32_t> a = random_tokens(n_prompt + p.n_gen, 11);
  std::vector<int32_t> b = random_tokens(n_prompt + p.n_gen, 12);
  std::copy(a.begin(), a.begin() + n_prompt, b.begin());
  const std::vector<Logits> want_a = reference(a, n_prompt);
  const std::vector<Logits> want_b = reference(b, n_prompt);
  const int32_t nb = blocks_for(static_cast<int32_t>(a.size()));
  const int32_t n_blocks = 2 * nb + 3;
  auto ctx = make_paged(n_blocks);
  ASSERT_TRUE(ctx);
  std::vector<Table> tables(2);
  for (int32_t i = 0; i < nb; ++i) tables[0].push_back(2 * i + 1);
  std::vector<Entry> batch;
  for (int32_t i = 0; i < n_prompt; ++i) batch.push_back({a[i], 0, i, i == n_prompt - 1});
  ASSERT_TRUE(ctx->decode_paged(batch, spans(tables)).is_ok());
  ASSERT_TRUE(bitwise_equal(ctx->batch_logits(0), want_a[n_prompt - 1]));

  // B: block 0 shared, every later block of the prompt copied (the last one partly filled, or
  // full when bs == 1), the rest fresh.
  const int32_t n_prompt_blocks = blocks_for(n_prompt);
  tables[1].push_back(tables[0][0]);
  for (int32_t i = 1; i < nb; ++i) {
    const int32_t dst = 2 * i;
    if (i < n_prompt_blocks) {
      auto src = std::as_const(*ctx).kv_block(tables[0][i]);
      auto d = ctx->kv_block(dst);
      ASSERT_EQ(src.size(), ctx->kv_block_bytes());
      ASSERT_EQ(d.size(), ctx->kv_block_bytes());
      std::memcpy(d.data(), src.data(), d.size());
    }
    tables[1].push_back(dst);
  }
  // Both continue in one call per step; A writes into its own last block, B into the copy.
  for (int32_t i = n_prompt; i < static_cast<int32_t>(a.size()); ++i) {
    const Entry e[2] = {{a[i], 0, i, true}, {b[i], 1, i, true}};
    ASSERT_TRUE(ctx->decode_paged(e, spans(tables)).is_ok());
    EXPECT_TRUE(bitwise_equal(ctx->batch_logits(0), want_a[i])) << "A pos " << i;
    EXPECT_TRUE(bitwise_equal(ctx->batch_logits(1), want_b[i])) << "B pos " << i;
  }
}

// Every documented error returns an error and changes neither the cache bytes nor the logits;
// a valid call afterwards gives the expected logits.
TEST_P(PagedContext, ErrorsLeaveStateUnchanged) {
  const Case& p = GetParam();
  const int32_t bs = p.block_size;
  const int32_t n_first = 2 * bs + 1 < kNCtx - 2 ? 2 * bs + 1 : 5;
  std::vector<int32_t> a = random_tokens(n_first + 2, 21);
  const std::vector<Logits> want = reference(a, n_first);
  const int32_t nb = blocks_for(n_first + 2);
  const int32_t n_blocks = nb + 2;
  auto ctx = make_paged(n_blocks);
  ASSERT_TRUE(ctx);
  std::vector<Table> tables(1);
  for (int32_t i = 0; i < nb; ++i) tables[0].push_back(nb - 1 - i + 2);
  std::vector<Entry> batch;
  for (int32_t i = 0; i < n_first; ++i) batch.push_back({a[i], 0, i, i == n_first - 1});
  ASSERT_TRUE(ctx->decode_paged(batch, spans(tables)).is_ok());
  ASSERT_TRUE(bitwise_equal(ctx->batch_logits(0), want[n_first - 1]));

  std::vector<uint8_t> before;
  for (int32_t blk = 0; blk < n_blocks; ++blk) {
    auto s = std::as_const(*ctx).kv_block(blk);
    before.insert(before.end(), s.begin(), s.end());
  }
  const Logits logits_before(ctx->batch_logits(0).begin(), ctx->batch_logits(0).end());

  // Sequence 1 aliases sequence 0's blocks: a valid first entry through it would overwrite
  // position 1 of sequence 0 with another token if a failed call wrote anything.
  const int32_t other = (a[1] + 1) % n_vocab_;
  const int32_t next = n_first;
  Table bad_id_neg = tables[0];
  bad_id_neg[0] = -1;
  Table bad_id_big = tables[0];
  bad_id_big[next / bs] = n_blocks;  // the block the next position goes to
  Table short_table(tables[0].begin(), tables[0].begin() + next / bs);
  struct Bad {
    const char* what;
    std::vector<Entry> entries;  // after the aliasing entry
    std::vector<Table> tables;   // tables[0] / tables[1] (1 aliases 0 unless given)
  };
  const std::vector<Bad> bads = {
      {"token < 0", {{-1, 0, next, true}}, {}},
      {"token >= n_vocab", {{n_vocab_, 0, next, true}}, {}},
      {"seq_id < 0", {{a[next], -1, next, true}}, {}},
      {"seq_id >= tables", {{a[next], 2, next, true}}, {}},
      {"pos < 0", {{a[next], 0, -1, true}}, {}},
      {"pos >= n_ctx", {{a[next], 0, kNCtx, true}}, {}},
      {"gap", {{a[next], 0, next, false}, {a[next], 0, next + 2, true}}, {}},
      {"repeat", {{a[next], 0, next, false}, {a[next], 0, next, true}}, {}},
      {"backwards", {{a[next], 0, next, false}, {a[next], 0, next - 1, true}}, {}},
      {"alias then gap", {{a[next], 1, 3, true}}, {}},
      {"table too short", {{a[next], 0, next, true}}, {short_table, tables[0]}},
      {"block id < 0", {{a[next], 0, next, true}}, {bad_id_neg, tables[0]}},
      {"block id >= n_kv_blocks", {{a[next], 0, next, true}}, {bad_id_big, tables[0]}},
  };
  for (const Bad& bad : bads) {
    SCOPED_TRACE(bad.what);
    std::vector<Table> t =
        bad.tables.empty() ? std::vector<Table>{tables[0], tables[0]} : bad.tables;
    std::vector<Entry> e = {{other, 1, 1, false}};
    e.insert(e.end(), bad.entries.begin(), bad.entries.end());
    EXPECT_FALSE(ctx->decode_paged(e, spans(t)).is_ok());
    ASSERT_EQ(ctx->n_logits(), 1);
    EXPECT_TRUE(bitwise_equal(ctx->batch_logits(0), logits_before));
    std::vector<uint8_t> after;
    for (int32_t blk = 0; blk < n_blocks; ++blk) {
      auto s = std::as_const(*ctx).kv_block(blk);
      after.insert(after.end(), s.begin(), s.end());
    }
    EXPECT_TRUE(after == before) << "cache bytes changed";
  }
  EXPECT_FALSE(ctx->decode_paged({}, spans(tables)).is_ok());
  EXPECT_TRUE(bitwise_equal(ctx->batch_logits(0), logits_before));

  // The sequence-0 API is off in paged mode.
  const int32_t tok = a[0];
  EXPECT_FALSE(ctx->eval({&tok, 1}).is_ok());
  const Entry e0{tok, 0, 0, true};
  EXPECT_FALSE(ctx->decode({&e0, 1}).is_ok());
  EXPECT_FALSE(ctx->truncate(0).is_ok());
  EXPECT_EQ(ctx->n_past(), 0);
  EXPECT_EQ(ctx->seq_len(0), 0);
  EXPECT_EQ(ctx->n_seq_max(), 0);
  ctx->seq_clear(0);
  EXPECT_TRUE(bitwise_equal(ctx->batch_logits(0), logits_before));

  // Valid calls continue as if nothing had happened.
  for (int32_t i = next; i < next + 2; ++i) {
    const Entry e{a[i], 0, i, true};
    ASSERT_TRUE(ctx->decode_paged({&e, 1}, spans(tables)).is_ok());
    EXPECT_TRUE(bitwise_equal(ctx->batch_logits(0), want[i])) << "pos " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, PagedContext,
    ::testing::Values(Case{"models/stories260K.gguf", llmt::KvType::kF32, 16, 29, 4},
                      Case{"models/stories260K.gguf", llmt::KvType::kF16, 16, 29, 4},
                      Case{"models/stories260K.gguf", llmt::KvType::kF32, 1, 13, 3},
                      Case{"models/stories260K.gguf", llmt::KvType::kF32, 3, 20, 4},
                      Case{"models/stories260K.gguf", llmt::KvType::kF16, 7, 20, 4},
                      Case{"models/synth/synth-125m-q4_k_m.gguf", llmt::KvType::kF32, 16, 21, 3},
                      Case{"models/synth/synth-125m-q4_k_m.gguf", llmt::KvType::kF16, 5, 13, 3}),
    case_name);

// ---------------------------------------------------------------------------------------------
// Options and accessors.

TEST(PagedOptions, CreateErrorsAndAccessors) {
  LLMT_REQUIRE_DATA("models/stories260K.gguf");
  auto m = llmt::Model::load(llmt::test::data_path("models/stories260K.gguf"));
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  auto model = *m;
  const auto& hp = model->hparams();
  auto create = [&](int32_t n_blocks, int32_t bs, llmt::KvType kv = llmt::KvType::kF32) {
    llmt::ContextOptions o;
    o.n_kv_blocks = n_blocks;
    o.kv_block_size = bs;
    o.kv_type = kv;
    o.n_threads = 1;
    return llmt::Context::create(model, o);
  };
  EXPECT_EQ(create(-1, 16).status().code(), llmt::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(4, 0).status().code(), llmt::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(4, 4097).status().code(), llmt::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(INT32_MAX, 4096).status().code(), llmt::StatusCode::kOutOfMemory);

  // A 2 GiB pool is fine (pages are backed on first use).
  const size_t per_token = 2 * static_cast<size_t>(hp.n_layer) * hp.kv_dim() * sizeof(float);
  const int32_t big = static_cast<int32_t>((size_t{2} << 30) / (per_token * 16));
  auto r = create(big, 16);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  llmt::Context& c = **r;
  EXPECT_TRUE(c.paged());
  EXPECT_EQ(c.n_kv_blocks(), big);
  EXPECT_EQ(c.kv_block_size(), 16);
  EXPECT_EQ(c.kv_bytes_per_token(), per_token);
  EXPECT_EQ(c.kv_block_bytes(), per_token * 16);
  EXPECT_EQ(c.n_ctx(), std::min(hp.n_ctx_train, 4096));
  EXPECT_TRUE(c.kv_block(-1).empty());
  EXPECT_TRUE(c.kv_block(big).empty());
  EXPECT_EQ(c.kv_block(big - 1).size(), c.kv_block_bytes());
  EXPECT_EQ(c.kv_block(1).data(), c.kv_block(0).data() + c.kv_block_bytes());
  // The last block of the pool works.
  const Table t = {big - 1};
  const std::span<const int32_t> ts[1] = {t};
  const Entry e{1, 0, 0, true};
  EXPECT_TRUE(c.decode_paged({&e, 1}, ts).is_ok());
  EXPECT_EQ(c.n_logits(), 1);

  auto f16 = create(8, 4, llmt::KvType::kF16);
  ASSERT_TRUE(f16.is_ok());
  EXPECT_EQ((*f16)->kv_bytes_per_token(), per_token / 2);

  // Fixed-slot mode: one n_ctx block per sequence; decode_paged is refused.
  llmt::ContextOptions o;
  o.n_ctx = 32;
  o.n_seq_max = 3;
  o.n_threads = 1;
  auto fixed = llmt::Context::create(model, o);
  ASSERT_TRUE(fixed.is_ok());
  llmt::Context& fc = **fixed;
  EXPECT_FALSE(fc.paged());
  EXPECT_EQ(fc.n_kv_blocks(), 3);
  EXPECT_EQ(fc.kv_block_size(), 32);
  EXPECT_EQ(fc.kv_block_bytes(), per_token * 32);
  EXPECT_EQ(fc.decode_paged({&e, 1}, ts).code(), llmt::StatusCode::kInvalidArgument);
}

}  // namespace
