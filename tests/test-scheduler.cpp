// Scheduler: driven by a fake runner with no model. The runner emulates the KV cache: every slot
// (block, offset) holds the hash of the token context whose K/V it would hold, swap-outs save slots
// and swap-ins restore them, and a chunk first checks that every earlier position of its thread
// reads the right context through the block table, then writes its own positions. A sampled
// token is a function of the thread id and of everything the chunk read from the cache, so the
// tokens a thread generates equal those of a run alone (reference()) only if scheduling, prefix
// sharing, swapping and recompute never corrupt the K/V. Every plan is checked: chunk positions
// inside the table, ref counts equal to the number of tables holding each block, writes only to
// private blocks, swap-in count equal to swap-out count, step_tokens and max_running.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kv/kv-manager.h"
#include "sched/scheduler.h"

namespace llmt::sched {
namespace {

using Tokens = std::vector<int32_t>;

uint64_t mix(uint64_t h, uint64_t x) {
  h ^= x + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  h ^= h >> 31;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 29;
  return h;
}

// Hash of tokens[0, p] for every p: what the K/V at position p depends on.
std::vector<uint64_t> contexts(std::span<const int32_t> toks) {
  std::vector<uint64_t> c(toks.size());
  uint64_t h = 0x1234567ull;
  for (size_t p = 0; p < toks.size(); ++p) {
    h = mix(h, static_cast<uint64_t>(static_cast<uint32_t>(toks[p])));
    c[p] = h | 1;  // never 0 (0 marks a slot never written)
  }
  return c;
}

// The sampled token after reading K/V cells `ctx` (positions 0..last) for thread id.
int32_t sample_token(ThreadId id, std::span<const uint64_t> ctx) {
  uint64_t h = mix(0xABCDEFull, id);
  for (uint64_t c : ctx) h = mix(h, c);
  return static_cast<int32_t>(h % 1000) + 1;
}

// The tokens thread id ends with when it runs alone.
Tokens reference(ThreadId id, Tokens toks, int32_t max_tokens) {
  while (static_cast<int32_t>(toks.size()) < max_tokens) {
    toks.push_back(sample_token(id, contexts(toks)));
  }
  return toks;
}

Tokens make_prompt(int32_t n, int32_t first) {
  Tokens t(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = first + i;
  return t;
}

struct Spec {
  Tokens prompt;
  int32_t max_tokens = 0;
};

// Scheduler + KvManager + fake runner.
struct Sim {
  SchedulerOptions opt;
  int32_t bs;
  kv::KvManager kv;
  Scheduler s;
  std::vector<uint64_t> cells;                      // per slot: context hash, 0 = never written
  std::map<ThreadId, std::vector<uint64_t>> store;  // swap store
  std::map<ThreadId, Spec> live;
  std::map<ThreadId, Tokens> finished;
  std::set<ThreadId> fail_out, fail_in;  // fail the next swap-out / swap-in of these ids
  double fail_rate = 0.0;                // random swap failures
  std::mt19937 rng{7};
  std::map<ThreadId, int64_t> served;      // tokens computed (executed chunks)
  std::map<ThreadId, int64_t> first_step;  // step of the first executed chunk
  std::vector<std::vector<Chunk>> history;
  StepPlan plan;
  bool auto_remove = true;
  int64_t step_no = 0;
  double now = 0.0;
  double dt = 0.125;
  int n_errors = 0;

  Sim(const SchedulerOptions& o, int32_t n_blocks, int32_t block_size, bool prefix = true)
      : opt(o),
        bs(block_size),
        kv(kv::KvManagerOptions{n_blocks, block_size, prefix}),
        s(o, &kv),
        cells(static_cast<size_t>(n_blocks) * static_cast<size_t>(block_size), 0) {}

  void error(const std::string& what) {
    if (++n_errors <= 10) ADD_FAILURE() << "step " << step_no << ": " << what;
  }

  void add(ThreadId id, Tokens prompt, int32_t max_tokens, int32_t priority = 0,
           uint64_t tenant = 0, double arrival = -1.0) {
    ThreadSpec sp;
    sp.id = id;
    sp.prompt = prompt;
    sp.n_kv_tokens = max_tokens;
    sp.priority = priority;
    sp.tenant = tenant;
    sp.arrival_s = arrival < 0 ? now : arrival;
    Status st = s.add(std::move(sp));
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    live[id] = Spec{std::move(prompt), max_tokens};
  }

  void remove(ThreadId id) {
    Result<Phase> r = s.remove(id);
    if (!r.is_ok()) {
      error("remove " + std::to_string(id) + ": " + r.status().to_string());
      return;
    }
    if (*r == Phase::kSwapped) store.erase(id);
    live.erase(id);
  }

  size_t slot(std::span<const int32_t> table, int32_t pos) const {
    return static_cast<size_t>(table[static_cast<size_t>(pos / bs)]) * static_cast<size_t>(bs) +
           static_cast<size_t>(pos % bs);
  }

  void check_plan() {
    const std::string where = "plan check: ";
    int32_t sum = 0;
    std::set<ThreadId> ids;
    if (static_cast<int32_t>(plan.chunks.size()) > opt.max_running) error(where + "max_running");
    for (const Chunk& c : plan.chunks) {
      sum += c.n_tokens;
      if (!ids.insert(c.id).second) error(where + "thread twice in chunks");
      Result<Phase> ph = s.phase(c.id);
      if (!ph.is_ok() || *ph != Phase::kRunning) error(where + "chunk of a thread not running");
      auto toks = s.tokens(c.id);
      auto table = s.table(c.id);
      if (c.n_tokens < 1) error(where + "empty chunk");
      if (c.pos0 != s.n_computed(c.id)) error(where + "chunk does not start at n_computed");
      if (c.pos0 + c.n_tokens > static_cast<int32_t>(toks.size()))
        error(where + "chunk past tokens");
      if (c.sample != (c.pos0 + c.n_tokens == static_cast<int32_t>(toks.size())))
        error(where + "sample flag");
      if (static_cast<int64_t>(table.size()) * bs < c.pos0 + c.n_tokens)
        error(where + "chunk outside the table of " + std::to_string(c.id));
      if (static_cast<int64_t>(table.size()) > (live[c.id].max_tokens + bs - 1) / bs)
        error(where + "table beyond max_tokens");
      for (int32_t p = c.pos0; p < c.pos0 + c.n_tokens &&
                               static_cast<int64_t>(p) < static_cast<int64_t>(table.size()) * bs;
           ++p) {
        if (kv.ref_count(table[static_cast<size_t>(p / bs)]) != 1)
          error(where + "chunk writes a shared block");
      }
    }
    if (sum != plan.n_tokens) error(where + "n_tokens is not the sum of chunks");
    if (plan.n_tokens > opt.step_tokens) error(where + "n_tokens > step_tokens");
    // Ref counts equal the number of tables holding each block; only running threads hold any.
    std::vector<int32_t> count(static_cast<size_t>(kv.n_blocks()), 0);
    for (const auto& [id, spec] : live) {
      auto table = s.table(id);
      Result<Phase> ph = s.phase(id);
      if (!ph.is_ok()) {
        error(where + "live thread unknown");
        continue;
      }
      if (*ph != Phase::kRunning && !table.empty())
        error(where + "non-running thread holds blocks");
      std::set<int32_t> seen;
      for (int32_t b : table) {
        if (b < 0 || b >= kv.n_blocks()) {
          error(where + "block id out of range");
          continue;
        }
        if (!seen.insert(b).second) error(where + "block twice in one table");
        ++count[static_cast<size_t>(b)];
      }
    }
    for (int32_t b = 0; b < kv.n_blocks(); ++b) {
      if (count[static_cast<size_t>(b)] != kv.ref_count(b)) {
        error(where + "block " + std::to_string(b) + " in " +
              std::to_string(count[static_cast<size_t>(b)]) + " tables, ref count " +
              std::to_string(kv.ref_count(b)));
      }
    }
    for (const SwapOut& so : plan.swap_out) {
      Result<Phase> ph = s.phase(so.id);
      if (!ph.is_ok() || *ph != Phase::kSwapped) error(where + "swap-out of a thread not swapped");
      if (!s.table(so.id).empty()) error(where + "swapped thread still has a table");
      if (so.blocks.empty() || so.n_tokens < 1) error(where + "empty swap-out");
      if (static_cast<int64_t>(so.blocks.size()) * bs < so.n_tokens)
        error(where + "swap-out short");
      if (so.n_tokens != s.n_computed(so.id)) error(where + "swap-out n_tokens != n_computed");
      if (so.method != Eviction::kSwapRam && so.method != Eviction::kSwapDisk)
        error(where + "swap-out method");
    }
    for (ThreadId id : plan.dropped) {
      Result<Phase> ph = s.phase(id);
      if (!ph.is_ok() || *ph != Phase::kWaiting || s.n_computed(id) != 0)
        error(where + "dropped thread not waiting from 0");
    }
    for (const SwapIn& si : plan.swap_in) {
      auto it = store.find(si.id);
      if (it == store.end()) {
        error(where + "swap-in of unknown entry");
        continue;
      }
      if (si.blocks.size() * static_cast<size_t>(bs) != it->second.size())
        error(where + "swap-in block count != swap-out block count");
      auto table = s.table(si.id);
      if (table.size() < si.blocks.size() ||
          !std::equal(si.blocks.begin(), si.blocks.end(), table.begin()))
        error(where + "swap-in blocks are not the table's first blocks");
      if (!ids.count(si.id)) error(where + "swap-in without a chunk");
    }
  }

  bool fail(std::set<ThreadId>& set, ThreadId id) {
    if (set.erase(id)) return true;
    return fail_rate > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < fail_rate;
  }

  // One engine step. Returns the plan it ran.
  const StepPlan& step() {
    ++step_no;
    plan = s.schedule(now);
    check_plan();
    StepResult res;
    // 1. swap-outs (the blocks are released but not yet overwritten).
    for (const SwapOut& so : plan.swap_out) {
      if (fail(fail_out, so.id)) {
        res.swap_failed.push_back(so.id);
        continue;
      }
      std::vector<uint64_t>& saved = store[so.id];
      saved.clear();
      for (int32_t b : so.blocks) {
        for (int32_t k = 0; k < bs; ++k) {
          saved.push_back(
              cells[static_cast<size_t>(b) * static_cast<size_t>(bs) + static_cast<size_t>(k)]);
        }
      }
    }
    // 2. block copies, then swap-ins.
    for (const kv::BlockCopy& c : plan.copies) {
      for (int32_t k = 0; k < bs; ++k)
        cells[static_cast<size_t>(c.dst) * bs + k] = cells[static_cast<size_t>(c.src) * bs + k];
    }
    std::set<ThreadId> not_run;
    for (const SwapIn& si : plan.swap_in) {
      auto it = store.find(si.id);
      if (fail(fail_in, si.id) || it == store.end()) {
        res.swap_failed.push_back(si.id);
        not_run.insert(si.id);
        store.erase(si.id);
        continue;
      }
      for (size_t i = 0; i < si.blocks.size(); ++i) {
        for (int32_t k = 0; k < bs; ++k) {
          const size_t src = i * static_cast<size_t>(bs) + static_cast<size_t>(k);
          if (src < it->second.size())
            cells[static_cast<size_t>(si.blocks[i]) * static_cast<size_t>(bs) +
                  static_cast<size_t>(k)] = it->second[src];
        }
      }
      store.erase(it);
    }
    // 3. the forward pass.
    std::vector<Chunk> ran;
    for (const Chunk& c : plan.chunks) {
      if (not_run.count(c.id)) continue;
      ran.push_back(c);
      auto toks = s.tokens(c.id);
      auto table = s.table(c.id);
      const int32_t end = c.pos0 + c.n_tokens;
      if (end > static_cast<int32_t>(toks.size()) ||
          static_cast<int64_t>(end) > static_cast<int64_t>(table.size()) * bs) {
        continue;  // reported by check_plan()
      }
      const std::vector<uint64_t> ctx = contexts(toks);
      for (int32_t p = 0; p < c.pos0; ++p) {
        if (cells[slot(table, p)] != ctx[static_cast<size_t>(p)]) {
          error("thread " + std::to_string(c.id) + " reads wrong K/V at position " +
                std::to_string(p));
          break;
        }
      }
      for (int32_t p = c.pos0; p < end; ++p) cells[slot(table, p)] = ctx[static_cast<size_t>(p)];
      served[c.id] += c.n_tokens;
      if (!first_step.count(c.id)) first_step[c.id] = step_no;
      if (c.sample) {
        std::vector<uint64_t> read(static_cast<size_t>(end));
        for (int32_t p = 0; p < end; ++p) read[static_cast<size_t>(p)] = cells[slot(table, p)];
        res.sampled.push_back({c.id, sample_token(c.id, read)});
      }
    }
    history.push_back(std::move(ran));
    s.complete(res, now);
    now += dt;
    if (auto_remove) {
      std::vector<ThreadId> done;
      for (const auto& [id, spec] : live) {
        if (static_cast<int32_t>(s.tokens(id).size()) >= spec.max_tokens) done.push_back(id);
      }
      for (ThreadId id : done) {
        auto t = s.tokens(id);
        finished[id] = Tokens(t.begin(), t.end());
        remove(id);
      }
    }
    return plan;
  }

  // Steps until no thread is live; false when max_steps were not enough.
  bool run(int64_t max_steps) {
    for (int64_t i = 0; i < max_steps && !live.empty(); ++i) step();
    return live.empty();
  }

  std::vector<ThreadId> chunk_ids(size_t k) const {
    std::vector<ThreadId> v;
    for (const Chunk& c : history.at(k)) v.push_back(c.id);
    return v;
  }
};

SchedulerOptions options(Policy p, int32_t step_tokens = 512, int32_t max_running = 64) {
  SchedulerOptions o;
  o.policy = p;
  o.step_tokens = step_tokens;
  o.max_running = max_running;
  return o;
}

// ---------------------------------------------------------------------------------------------

TEST(Scheduler, Names) {
  EXPECT_STREQ(policy_name(Policy::kFcfs), "fcfs");
  EXPECT_STREQ(policy_name(Policy::kPriority), "priority");
  EXPECT_STREQ(policy_name(Policy::kRoundRobin), "round-robin");
  EXPECT_STREQ(policy_name(Policy::kFairShare), "fair-share");
  EXPECT_STREQ(eviction_name(Eviction::kAuto), "auto");
  EXPECT_STREQ(eviction_name(Eviction::kSwapRam), "ram");
  EXPECT_STREQ(eviction_name(Eviction::kSwapDisk), "disk");
  EXPECT_STREQ(eviction_name(Eviction::kRecompute), "recompute");
}

TEST(Scheduler, AddValidates) {
  kv::KvManager kv(kv::KvManagerOptions{8, 4, true});
  Scheduler s(options(Policy::kFcfs), &kv);
  ThreadSpec a{1, {1, 2, 3}, 10};
  EXPECT_TRUE(s.add(a).is_ok());
  EXPECT_EQ(s.add(a).code(), StatusCode::kInvalidArgument);                      // duplicate
  EXPECT_EQ(s.add(ThreadSpec{2, {}, 10}).code(), StatusCode::kInvalidArgument);  // empty
  EXPECT_EQ(s.add(ThreadSpec{3, {1, 2, 3}, 2}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.add(ThreadSpec{4, {1}, 33}).code(), StatusCode::kInvalidArgument);  // 9 blocks > 8
  EXPECT_TRUE(s.add(ThreadSpec{5, {1}, 32}).is_ok());
  EXPECT_FALSE(s.idle());
  EXPECT_EQ(s.stats().n_waiting, 2);
  EXPECT_EQ(s.n_prompt(1), 3);
  EXPECT_EQ(s.n_prompt(99), 0);
  EXPECT_TRUE(s.tokens(99).empty());
  EXPECT_EQ(s.phase(99).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(s.remove(99).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*s.remove(1), Phase::kWaiting);
  EXPECT_EQ(*s.remove(5), Phase::kWaiting);
  EXPECT_TRUE(s.idle());
  EXPECT_TRUE(s.schedule(0.0).empty());
}

TEST(Scheduler, FcfsOrder) {
  Sim sim(options(Policy::kFcfs, 64, 1), 64, 4);
  sim.add(1, make_prompt(4, 10), 8, 0, 0, 2.0);
  sim.add(2, make_prompt(4, 20), 8, 0, 0, 0.0);
  sim.add(3, make_prompt(4, 30), 8, 0, 0, 1.0);
  ASSERT_TRUE(sim.run(100));
  std::vector<ThreadId> seq;
  for (size_t k = 0; k < sim.history.size(); ++k) {
    ASSERT_EQ(sim.history[k].size(), 1u);
    seq.push_back(sim.history[k][0].id);
  }
  EXPECT_EQ(seq, (std::vector<ThreadId>{2, 2, 2, 2, 3, 3, 3, 3, 1, 1, 1, 1}));
  // First chunk of each is the whole prompt, then single decode tokens.
  EXPECT_EQ(sim.history[0][0].n_tokens, 4);
  EXPECT_EQ(sim.history[1][0].n_tokens, 1);
  const SchedulerStats st = sim.s.stats();
  EXPECT_EQ(st.prefill_tokens, 12u);
  EXPECT_EQ(st.decode_tokens, 9u);
  EXPECT_EQ(st.n_steps, 12u);
  for (auto& [id, toks] : sim.finished)
    EXPECT_EQ(toks, reference(id, make_prompt(4, 10 * static_cast<int32_t>(id)), 8));
  EXPECT_EQ(sim.n_errors, 0);
}

// A high-priority thread arriving while max_running low-priority threads decode is taken at the
// next schedule(); its prefill step holds no lower-priority decode (latency rule); the step after
// it, the lowest-ranked low-priority thread (the last to arrive) is the one left out.
TEST(Scheduler, PriorityPreemptsAndLatencyRule) {
  SchedulerOptions o = options(Policy::kPriority, 512, 3);
  Sim sim(o, 256, 4);
  sim.add(1, make_prompt(6, 10), 100, 0, 0, 0.0);
  sim.add(2, make_prompt(6, 20), 100, 0, 0, 0.1);
  sim.add(3, make_prompt(6, 30), 100, 0, 0, 0.2);
  sim.step();
  sim.step();
  EXPECT_EQ(sim.chunk_ids(1), (std::vector<ThreadId>{1, 2, 3}));
  sim.add(9, make_prompt(20, 100), 100, 10);
  sim.step();
  ASSERT_EQ(sim.history.back().size(), 1u);
  EXPECT_EQ(sim.history.back()[0].id, 9u);
  EXPECT_EQ(sim.history.back()[0].n_tokens, 20);
  EXPECT_EQ(*sim.s.phase(3), Phase::kRunning);  // left out, KV kept
  sim.step();
  EXPECT_EQ(sim.chunk_ids(3), (std::vector<ThreadId>{9, 1, 2}));
  EXPECT_EQ(sim.n_errors, 0);
}

// A priority-0 thread among continuous priority-10 load runs at the first step where
// aging * wait > 10 + aging * dt (the high threads ran one step ago), and then again and again.
TEST(Scheduler, AgingPreventsStarvation) {
  SchedulerOptions o = options(Policy::kPriority, 512, 2);
  o.aging_per_s = 1.0;
  Sim sim(o, 512, 4);
  sim.add(1, make_prompt(4, 10), 1000, 10, 0, 0.0);
  sim.add(2, make_prompt(4, 20), 1000, 10, 0, 0.0);
  sim.add(3, make_prompt(4, 30), 1000, 0, 0, 0.0);
  // Step k runs at now = k * dt (k from 0). Thread 3 has effective k * dt; the high ones
  // 10 + dt. Ties go to the earlier-added high ones, so the first k with k * dt > 10 + dt.
  const int64_t expected_k = static_cast<int64_t>((10.0 + sim.dt) / sim.dt) + 1;
  EXPECT_EQ(expected_k, 82);
  std::vector<int64_t> runs;  // steps (k) where thread 3 ran
  for (int64_t k = 0; k < 400; ++k) {
    sim.step();
    for (const Chunk& c : sim.history.back())
      if (c.id == 3) runs.push_back(k);
  }
  ASSERT_FALSE(runs.empty());
  EXPECT_EQ(runs[0], expected_k);
  ASSERT_GE(runs.size(), 4u);
  for (size_t i = 1; i < runs.size(); ++i) EXPECT_LE(runs[i] - runs[i - 1], expected_k);
  EXPECT_EQ(sim.n_errors, 0);
}

// Round robin with 4x more threads than max_running: everyone gets turns; served tokens differ
// by at most one quantum; a turn is exactly one quantum.
TEST(Scheduler, RoundRobinTurns) {
  SchedulerOptions o = options(Policy::kRoundRobin, 512, 2);
  o.quantum_tokens = 8;
  Sim sim(o, 1024, 4);
  for (ThreadId id = 1; id <= 8; ++id)
    sim.add(id, make_prompt(4, 100 * static_cast<int32_t>(id)), 1000);
  for (int i = 0; i < 203; ++i) sim.step();
  // The first turns: 1 and 2, then 3 and 4 (after 5 steps: 4 prompt tokens + 4 decodes).
  EXPECT_EQ(sim.chunk_ids(0), (std::vector<ThreadId>{1, 2}));
  EXPECT_EQ(sim.chunk_ids(4), (std::vector<ThreadId>{1, 2}));
  EXPECT_EQ(sim.chunk_ids(5), (std::vector<ThreadId>{3, 4}));
  int64_t lo = INT64_MAX, hi = 0;
  for (ThreadId id = 1; id <= 8; ++id) {
    lo = std::min(lo, sim.served[id]);
    hi = std::max(hi, sim.served[id]);
  }
  EXPECT_GT(lo, 0);
  EXPECT_LE(hi - lo, o.quantum_tokens);
  EXPECT_EQ(sim.n_errors, 0);
}

// Round robin caps a prefill chunk at what is left of the quantum.
TEST(Scheduler, RoundRobinCapsPrefillAtQuantum) {
  SchedulerOptions o = options(Policy::kRoundRobin, 512, 1);
  o.quantum_tokens = 8;
  Sim sim(o, 64, 4);
  sim.add(1, make_prompt(20, 10), 30);
  sim.add(2, make_prompt(20, 50), 30);
  sim.step();
  sim.step();
  sim.step();
  EXPECT_EQ(sim.history[0][0].id, 1u);
  EXPECT_EQ(sim.history[0][0].n_tokens, 8);
  EXPECT_EQ(sim.history[1][0].id, 2u);
  EXPECT_EQ(sim.history[2][0].id, 1u);
  EXPECT_EQ(sim.history[2][0].pos0, 8);
  ASSERT_TRUE(sim.run(200));
  for (auto& [id, toks] : sim.finished)
    EXPECT_EQ(toks, reference(id, make_prompt(20, id == 1 ? 10 : 50), 30));
  EXPECT_EQ(sim.n_errors, 0);
}

// Round robin with recompute eviction in a pool that holds one thread but not two: the thread at
// the front evicts the other, which must recompute its prefix on its turn. Recomputed positions
// do not use the quantum (only new ones do), so each turn makes progress; before, each turn's 4
// tokens went to recomputing and were lost at the next eviction, and neither thread finished.
TEST(Scheduler, RoundRobinRecomputeEvictionStillProgresses) {
  for (const bool prefix : {true, false}) {
    SchedulerOptions o = options(Policy::kRoundRobin, 8, 4);
    o.quantum_tokens = 4;
    o.eviction = Eviction::kRecompute;
    Sim sim(o, 12, 4, prefix);
    sim.add(1, make_prompt(18, 10), 44);
    sim.add(2, make_prompt(18, 60), 44);
    sim.add(3, make_prompt(9, 90), 30);
    ASSERT_TRUE(sim.run(2000)) << "prefix caching " << prefix;
    EXPECT_EQ(sim.finished[1], reference(1, make_prompt(18, 10), 44));
    EXPECT_EQ(sim.finished[2], reference(2, make_prompt(18, 60), 44));
    EXPECT_EQ(sim.finished[3], reference(3, make_prompt(9, 90), 30));
    EXPECT_GT(sim.s.stats().n_preempt_recompute, 0u) << "the pool was meant to force evictions";
    EXPECT_EQ(sim.kv.stats().n_used, 0);
    EXPECT_EQ(sim.n_errors, 0);
  }
}

// Fair share: a tenant with 10 threads and one with 2, both backlogged, are served within 5%.
TEST(Scheduler, FairShareAcrossTenants) {
  SchedulerOptions o = options(Policy::kFairShare, 512, 4);
  Sim sim(o, 4096, 4);
  for (ThreadId id = 1; id <= 10; ++id)
    sim.add(id, make_prompt(8, 100 * static_cast<int32_t>(id)), 2000, 0, 1);
  for (ThreadId id = 11; id <= 12; ++id)
    sim.add(id, make_prompt(8, 100 * static_cast<int32_t>(id)), 2000, 0, 2);
  for (int i = 0; i < 600; ++i) sim.step();
  const double a = static_cast<double>(sim.s.tenant_tokens(1));
  const double b = static_cast<double>(sim.s.tenant_tokens(2));
  EXPECT_GT(a, 1000);
  EXPECT_LE(std::abs(a - b), 0.05 * std::max(a, b)) << a << " vs " << b;
  // The raw counters are the tokens the runner computed.
  int64_t ra = 0, rb = 0;
  for (auto& [id, n] : sim.served) (id <= 10 ? ra : rb) += n;
  EXPECT_EQ(static_cast<int64_t>(a), ra);
  EXPECT_EQ(static_cast<int64_t>(b), rb);
  EXPECT_EQ(sim.s.tenant_tokens(77), 0u);
  EXPECT_EQ(sim.n_errors, 0);
}

// A tenant that becomes active starts at the smallest active counter, not at 0: it does not get
// every slot for the service the others had before it came.
TEST(Scheduler, FairShareNoCreditForIdleTime) {
  SchedulerOptions o = options(Policy::kFairShare, 512, 2);
  o.fair_decode_weight = 1.0;
  Sim sim(o, 4096, 4);
  sim.add(1, make_prompt(4, 100), 3000, 0, 1);
  sim.add(2, make_prompt(4, 200), 3000, 0, 1);
  for (int i = 0; i < 100; ++i) sim.step();
  sim.add(3, make_prompt(4, 300), 3000, 0, 2);
  sim.add(4, make_prompt(4, 400), 3000, 0, 2);
  const uint64_t a0 = sim.s.tenant_tokens(1);
  for (int i = 0; i < 100; ++i) sim.step();
  const uint64_t a = sim.s.tenant_tokens(1) - a0, b = sim.s.tenant_tokens(2);
  EXPECT_LE(std::max(a, b) - std::min(a, b), 10u) << a << " vs " << b;
  EXPECT_EQ(sim.n_errors, 0);
}

// 8 threads with the same 40-token prefix: the first computes it, the others wait for its
// pending blocks, then take them from the prefix cache.
TEST(Scheduler, PrefixSharing) {
  Sim sim(options(Policy::kFcfs, 512, 16), 256, 4);
  const Tokens common = make_prompt(40, 1000);
  std::map<ThreadId, Tokens> prompts;
  for (ThreadId id = 1; id <= 8; ++id) {
    Tokens p = common;
    for (int32_t k = 0; k < 8; ++k) p.push_back(static_cast<int32_t>(5000 + 10 * id + k));
    prompts[id] = p;
    sim.add(id, p, 60, 0, 0, static_cast<double>(id));
  }
  sim.step();
  ASSERT_EQ(sim.history[0].size(), 1u);
  EXPECT_EQ(sim.history[0][0].id, 1u);
  EXPECT_EQ(sim.history[0][0].n_tokens, 48);
  EXPECT_EQ(sim.s.stats().n_waiting, 7);
  sim.step();
  ASSERT_EQ(sim.history[1].size(), 8u);
  for (size_t k = 1; k < 8; ++k) {
    EXPECT_EQ(sim.history[1][k].pos0, 40);
    EXPECT_EQ(sim.history[1][k].n_tokens, 8);
    EXPECT_EQ(sim.s.table(sim.history[1][k].id).subspan(0, 10)[9], sim.s.table(1)[9]);
  }
  SchedulerStats st = sim.s.stats();
  EXPECT_EQ(st.prefill_tokens, 48u + 7u * 8u);
  EXPECT_EQ(st.prefix_hit_tokens, 7u * 40u);
  EXPECT_EQ(sim.kv.stats().n_hit_tokens, 7u * 40u);
  for (int32_t b : sim.s.table(1).subspan(0, 10)) EXPECT_EQ(sim.kv.ref_count(b), 8);
  ASSERT_TRUE(sim.run(100));
  st = sim.s.stats();
  EXPECT_EQ(st.prefill_tokens, 48u + 7u * 8u);
  EXPECT_EQ(st.prefix_hit_tokens, 7u * 40u);
  for (auto& [id, toks] : sim.finished) EXPECT_EQ(toks, reference(id, prompts[id], 60));
  const kv::KvStats ks = sim.kv.stats();
  EXPECT_EQ(ks.n_used, 0);
  EXPECT_EQ(sim.n_errors, 0);
}

// Without anyone computing them, pending blocks do not hold a thread back (no deadlock): a
// thread whose prefix is pending in a thread that stopped running computes it itself.
TEST(Scheduler, PendingPrefixOfIdleThreadDoesNotBlock) {
  SchedulerOptions o = options(Policy::kRoundRobin, 512, 1);
  o.quantum_tokens = 4;
  Sim sim(o, 256, 4);
  const Tokens p = make_prompt(40, 1000);
  sim.add(1, p, 50);
  Tokens q = p;
  q.push_back(7);
  sim.add(2, q, 50);
  sim.step();  // thread 1 computes 4 tokens and registers its 10 blocks as pending
  EXPECT_EQ(sim.history[0][0].id, 1u);
  EXPECT_EQ(sim.history[0][0].n_tokens, 4);
  sim.step();  // thread 1 is at the back; thread 2 does not wait for blocks nobody computes now
  ASSERT_EQ(sim.history[1].size(), 1u);
  EXPECT_EQ(sim.history[1][0].id, 2u);
  ASSERT_TRUE(sim.run(400));
  EXPECT_EQ(sim.finished[1], reference(1, p, 50));
  EXPECT_EQ(sim.finished[2], reference(2, q, 50));
  EXPECT_EQ(sim.n_errors, 0);
}

// Under KV pressure (16 blocks of 4 tokens) the victim is the last running thread in policy
// order: four threads of 3 blocks grow until the pool is full.
ThreadId first_victim(Policy policy, const std::vector<int32_t>& prompt_len,
                      const std::vector<double>& arrival, const std::vector<int32_t>& prio,
                      const std::vector<uint64_t>& tenant) {
  SchedulerOptions o = options(policy, 512, 8);
  o.aging_per_s = 0.0;
  o.quantum_tokens = 1000;
  o.eviction = Eviction::kSwapRam;
  Sim sim(o, 16, 4);
  for (size_t i = 0; i < prompt_len.size(); ++i) {
    sim.add(static_cast<ThreadId>(i + 1),
            make_prompt(prompt_len[i], 100 * static_cast<int32_t>(i + 1)), 40, prio[i], tenant[i],
            arrival[i]);
  }
  for (int k = 0; k < 50; ++k) {
    const StepPlan& p = sim.step();
    if (!p.swap_out.empty()) {
      EXPECT_EQ(p.swap_out.size(), 1u);
      EXPECT_TRUE(p.dropped.empty());
      EXPECT_EQ(sim.n_errors, 0);
      return p.swap_out[0].id;
    }
  }
  ADD_FAILURE() << "no eviction";
  return 0;
}

TEST(Scheduler, VictimPerPolicy) {
  // FCFS: the latest arrival (thread 1, arrival 3).
  EXPECT_EQ(first_victim(Policy::kFcfs, {12, 12, 12, 12}, {3, 0, 2, 1}, {0, 0, 0, 0}, {0, 0, 0, 0}),
            1u);
  // Priority: the lowest priority (thread 2).
  EXPECT_EQ(
      first_victim(Policy::kPriority, {12, 12, 12, 12}, {0, 1, 2, 3}, {5, 1, 3, 7}, {0, 0, 0, 0}),
      2u);
  // Round robin: the back of the queue (added last: thread 4).
  EXPECT_EQ(
      first_victim(Policy::kRoundRobin, {12, 12, 12, 12}, {3, 2, 1, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}),
      4u);
  // Fair share: tenant 1 was served more (a longer prompt); its later thread (2) goes.
  EXPECT_EQ(
      first_victim(Policy::kFairShare, {16, 12, 12, 12}, {0, 1, 2, 3}, {0, 0, 0, 0}, {1, 1, 2, 2}),
      2u);
}

// Two threads of 20-token prompts in a 16-block pool: thread 1 (first in FCFS order) needs a 9th
// block at step 14, when both hold 8 blocks and thread 2 has computed 32 positions (33 tokens).
struct PressureCase {
  Sim sim;
  explicit PressureCase(const SchedulerOptions& o) : sim(o, 16, 4) {
    sim.add(1, make_prompt(20, 100), 60, 0, 0, 0.0);
    sim.add(2, make_prompt(20, 200), 40, 0, 0, 1.0);
  }
  // Steps to the first eviction; returns its index in history.
  size_t to_eviction() {
    for (int k = 0; k < 40; ++k) {
      const StepPlan& p = sim.step();
      if (!p.swap_out.empty() || !p.dropped.empty()) return sim.history.size() - 1;
    }
    ADD_FAILURE() << "no eviction";
    return 0;
  }
  void finish() {
    ASSERT_TRUE(sim.run(200));
    EXPECT_EQ(sim.finished[1], reference(1, make_prompt(20, 100), 60));
    EXPECT_EQ(sim.finished[2], reference(2, make_prompt(20, 200), 40));
    EXPECT_EQ(sim.kv.stats().n_used, 0);
    EXPECT_EQ(sim.s.stats().swap_ram_bytes, 0u);
    EXPECT_EQ(sim.n_errors, 0);
  }
};

SchedulerOptions pressure_options(Eviction e) {
  SchedulerOptions o = options(Policy::kFcfs, 512, 8);
  o.eviction = e;
  o.kv_bytes_per_token = 1000;
  o.costs.ram_bytes_per_s = 1e6;          // swap: 2 * 1000 / 1e6 = 2 ms a token
  o.costs.disk_bytes_per_s = 1e5;         // 20 ms a token
  o.costs.recompute_tokens_per_s = 1000;  // 1 ms a token
  o.costs.ram_limit_bytes = 1 << 20;
  o.costs.disk_available = true;
  return o;
}

TEST(Scheduler, SwapRoundTrip) {
  PressureCase pc(pressure_options(Eviction::kSwapRam));
  Sim& sim = pc.sim;
  const size_t k = pc.to_eviction();
  EXPECT_EQ(k, 13u);
  const SwapOut so = sim.plan.swap_out.at(0);
  EXPECT_EQ(so.id, 2u);
  EXPECT_EQ(so.method, Eviction::kSwapRam);
  EXPECT_EQ(so.n_tokens, 32);
  EXPECT_EQ(so.blocks.size(), 8u);
  EXPECT_EQ(*sim.s.phase(2), Phase::kSwapped);
  EXPECT_EQ(sim.s.n_computed(2), 32);
  EXPECT_TRUE(sim.s.table(2).empty());
  EXPECT_EQ(sim.s.stats().n_swapped, 1);
  EXPECT_EQ(sim.s.stats().n_preempt_ram, 1u);
  EXPECT_EQ(sim.s.stats().swap_ram_bytes, 32u * 1000u);
  EXPECT_EQ(sim.chunk_ids(k), (std::vector<ThreadId>{1}));
  // Thread 2 comes back once thread 1 is done, with 8 blocks, at position 32.
  size_t back = 0;
  for (int i = 0; i < 100 && back == 0; ++i) {
    const StepPlan& p = sim.step();
    if (!p.swap_in.empty()) back = sim.history.size() - 1;
  }
  ASSERT_NE(back, 0u);
  EXPECT_EQ(sim.plan.swap_in.at(0).id, 2u);
  EXPECT_EQ(sim.plan.swap_in[0].blocks.size(), 8u);
  EXPECT_EQ(sim.history[back].at(0).id, 2u);
  EXPECT_EQ(sim.history[back][0].pos0, 32);
  EXPECT_EQ(sim.history[back][0].n_tokens, 1);
  EXPECT_TRUE(sim.finished.count(1));
  EXPECT_EQ(sim.s.stats().n_swap_in, 1u);
  EXPECT_EQ(sim.s.stats().swap_ram_bytes, 0u);
  EXPECT_EQ(sim.s.n_computed(2), 33);
  pc.finish();
}

TEST(Scheduler, ForcedDiskAndRecompute) {
  {
    PressureCase pc(pressure_options(Eviction::kSwapDisk));
    pc.to_eviction();
    ASSERT_EQ(pc.sim.plan.swap_out.size(), 1u);
    EXPECT_EQ(pc.sim.plan.swap_out[0].method, Eviction::kSwapDisk);
    EXPECT_EQ(pc.sim.s.stats().n_preempt_disk, 1u);
    EXPECT_EQ(pc.sim.s.stats().swap_ram_bytes, 0u);
    pc.finish();
  }
  {
    PressureCase pc(pressure_options(Eviction::kRecompute));
    const size_t k = pc.to_eviction();
    EXPECT_TRUE(pc.sim.plan.swap_out.empty());
    EXPECT_EQ(pc.sim.plan.dropped, (std::vector<ThreadId>{2}));
    EXPECT_EQ(*pc.sim.s.phase(2), Phase::kWaiting);
    EXPECT_EQ(pc.sim.s.n_computed(2), 0);
    EXPECT_EQ(pc.sim.s.tokens(2).size(), 33u);  // keeps its tokens
    EXPECT_EQ(pc.sim.s.stats().n_preempt_recompute, 1u);
    const uint64_t prefill0 = pc.sim.s.stats().prefill_tokens;
    // It comes back as one prefill chunk from its cached prefix to its last token, and samples.
    size_t back = 0;
    for (int i = 0; i < 100 && back == 0; ++i) {
      pc.sim.step();
      for (const Chunk& c : pc.sim.history.back())
        if (c.id == 2) back = pc.sim.history.size() - 1;
    }
    ASSERT_GT(back, k);
    const Chunk c = pc.sim.history[back][0];
    EXPECT_EQ(c.pos0 % 4, 0);
    EXPECT_LT(c.pos0, 33);
    EXPECT_EQ(c.pos0 + c.n_tokens, 33);
    EXPECT_TRUE(c.sample);
    EXPECT_EQ(pc.sim.s.stats().prefill_tokens - prefill0, static_cast<uint64_t>(c.n_tokens));
    EXPECT_EQ(pc.sim.s.stats().prefix_hit_tokens, static_cast<uint64_t>(c.pos0));
    EXPECT_EQ(pc.sim.s.tokens(2).size(), 34u);
    pc.finish();
  }
}

TEST(Scheduler, AutoEvictionPicksCheaper) {
  {  // recompute 1 ms a token < RAM swap 2 ms a token
    PressureCase pc(pressure_options(Eviction::kAuto));
    pc.to_eviction();
    EXPECT_EQ(pc.sim.plan.dropped, (std::vector<ThreadId>{2}));
    pc.finish();
  }
  {  // recompute 10 ms a token > RAM swap
    SchedulerOptions o = pressure_options(Eviction::kAuto);
    o.costs.recompute_tokens_per_s = 100;
    PressureCase pc(o);
    pc.to_eviction();
    ASSERT_EQ(pc.sim.plan.swap_out.size(), 1u);
    EXPECT_EQ(pc.sim.plan.swap_out[0].method, Eviction::kSwapRam);
    pc.finish();
  }
  {  // RAM over its limit: disk (20 ms a token) vs recompute (10 ms): recompute
    SchedulerOptions o = pressure_options(Eviction::kAuto);
    o.costs.recompute_tokens_per_s = 100;
    o.costs.ram_limit_bytes = 30000;  // 32 tokens x 1000 bytes do not fit
    PressureCase pc(o);
    pc.to_eviction();
    EXPECT_EQ(pc.sim.plan.dropped, (std::vector<ThreadId>{2}));
    pc.finish();
  }
  {  // RAM over its limit, disk (20 ms) cheaper than recompute (50 ms): disk
    SchedulerOptions o = pressure_options(Eviction::kAuto);
    o.costs.recompute_tokens_per_s = 20;
    o.costs.ram_limit_bytes = 30000;
    PressureCase pc(o);
    pc.to_eviction();
    ASSERT_EQ(pc.sim.plan.swap_out.size(), 1u);
    EXPECT_EQ(pc.sim.plan.swap_out[0].method, Eviction::kSwapDisk);
    pc.finish();
  }
  {  // ... but no disk: recompute
    SchedulerOptions o = pressure_options(Eviction::kAuto);
    o.costs.recompute_tokens_per_s = 20;
    o.costs.ram_limit_bytes = 30000;
    o.costs.disk_available = false;
    PressureCase pc(o);
    pc.to_eviction();
    EXPECT_EQ(pc.sim.plan.dropped, (std::vector<ThreadId>{2}));
    pc.finish();
  }
}

TEST(Scheduler, SwapOutFailureRecomputes) {
  PressureCase pc(pressure_options(Eviction::kSwapRam));
  pc.sim.fail_out.insert(2);
  pc.to_eviction();
  EXPECT_EQ(*pc.sim.s.phase(2), Phase::kWaiting);
  EXPECT_EQ(pc.sim.s.n_computed(2), 0);
  EXPECT_EQ(pc.sim.s.stats().swap_ram_bytes, 0u);
  pc.finish();
}

TEST(Scheduler, SwapInFailureRecomputes) {
  PressureCase pc(pressure_options(Eviction::kSwapRam));
  pc.sim.fail_in.insert(2);
  pc.to_eviction();
  size_t back = 0;
  for (int i = 0; i < 100 && back == 0; ++i) {
    const StepPlan& p = pc.sim.step();
    if (!p.swap_in.empty()) back = pc.sim.history.size() - 1;
  }
  ASSERT_NE(back, 0u);
  EXPECT_TRUE(pc.sim.history[back].empty());  // its chunk was not executed
  EXPECT_EQ(*pc.sim.s.phase(2), Phase::kWaiting);
  EXPECT_EQ(pc.sim.s.n_computed(2), 0);
  EXPECT_TRUE(pc.sim.s.table(2).empty());
  EXPECT_EQ(pc.sim.s.tokens(2).size(), 33u);
  pc.finish();
}

// remove() in every phase frees every block at once.
TEST(Scheduler, RemoveInEveryPhase) {
  PressureCase pc(pressure_options(Eviction::kSwapRam));
  Sim& sim = pc.sim;
  sim.auto_remove = false;
  pc.to_eviction();
  sim.add(3, make_prompt(8, 300), 20, 0, 0, 5.0);
  sim.step();
  ASSERT_EQ(*sim.s.phase(2), Phase::kSwapped);
  ASSERT_EQ(*sim.s.phase(3), Phase::kWaiting);  // later than 2: not admitted
  ASSERT_EQ(*sim.s.phase(1), Phase::kRunning);
  EXPECT_GT(sim.s.stats().swap_ram_bytes, 0u);
  EXPECT_EQ(*sim.s.remove(2), Phase::kSwapped);
  EXPECT_EQ(sim.s.stats().swap_ram_bytes, 0u);
  EXPECT_EQ(*sim.s.remove(3), Phase::kWaiting);
  // Remove thread 1 between schedule() and complete(): its chunk is ignored.
  const StepPlan& p = sim.s.schedule(sim.now);
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(*sim.s.remove(1), Phase::kRunning);
  StepResult r;
  r.sampled.push_back({1, 5});
  sim.s.complete(r, sim.now);
  EXPECT_TRUE(sim.s.idle());
  const kv::KvStats ks = sim.kv.stats();
  EXPECT_EQ(ks.n_used, 0);
  EXPECT_EQ(ks.n_free + ks.n_cached, 16);
  const SchedulerStats st = sim.s.stats();
  EXPECT_EQ(st.n_waiting + st.n_running + st.n_swapped, 0);
  EXPECT_TRUE(sim.s.schedule(sim.now).empty());
}

// A sample chunk with no sampled token computes its last position again.
TEST(Scheduler, MissingSampleRetries) {
  kv::KvManager kv(kv::KvManagerOptions{16, 4, true});
  Scheduler s(options(Policy::kFcfs), &kv);
  ASSERT_TRUE(s.add(ThreadSpec{1, make_prompt(6, 10), 20}).is_ok());
  const StepPlan p = s.schedule(0.0);
  ASSERT_EQ(p.chunks.size(), 1u);
  s.complete(StepResult{}, 0.0);
  EXPECT_EQ(s.n_computed(1), 5);
  EXPECT_EQ(s.tokens(1).size(), 6u);
  const StepPlan q = s.schedule(0.1);
  ASSERT_EQ(q.chunks.size(), 1u);
  EXPECT_EQ(q.chunks[0].pos0, 5);
  EXPECT_EQ(q.chunks[0].n_tokens, 1);
  EXPECT_TRUE(q.chunks[0].sample);
  StepResult r;
  r.sampled.push_back({1, 42});
  s.complete(r, 0.1);
  EXPECT_EQ(s.tokens(1).size(), 7u);
  EXPECT_EQ(s.tokens(1).back(), 42);
  EXPECT_EQ(s.n_computed(1), 6);
}

// A 1000-token prompt with step_tokens 64 never makes a step exceed 64 tokens, and running
// decodes get a token every step even though the long prompt is first in FCFS order.
TEST(Scheduler, LongPromptIsChunked) {
  Sim sim(options(Policy::kFcfs, 64, 16), 1024, 4);
  for (ThreadId id = 1; id <= 3; ++id)
    sim.add(id, make_prompt(4, 100 * static_cast<int32_t>(id)), 60, 0, 0, 1.0 + id);
  sim.step();
  sim.step();
  sim.add(9, make_prompt(1000, 5000), 1010, 0, 0, 0.0);
  int prefill_steps = 0;
  for (int i = 0; i < 40; ++i) {
    const StepPlan& p = sim.step();
    EXPECT_LE(p.n_tokens, 64);
    const std::vector<ThreadId> ids = sim.chunk_ids(sim.history.size() - 1);
    for (ThreadId d = 1; d <= 3; ++d) {
      if (sim.live.count(d)) {
        EXPECT_NE(std::find(ids.begin(), ids.end(), d), ids.end()) << "decode " << d << " stalled";
      }
    }
    for (const Chunk& c : sim.history.back()) {
      if (c.id == 9 && c.n_tokens > 1) {
        ++prefill_steps;
        if (sim.live.count(1)) {
          EXPECT_EQ(c.n_tokens, std::min(61, 1000 - c.pos0));
        }
      }
    }
  }
  EXPECT_EQ(prefill_steps, 17);  // ceil(1000 / 61)
  ASSERT_TRUE(sim.run(200));
  EXPECT_EQ(sim.finished[9], reference(9, make_prompt(1000, 5000), 1010));
  EXPECT_EQ(sim.n_errors, 0);
}

// Two equal-priority threads that do not fit together: aging alternates them, but the eviction
// margin (one priority level = 8 steps of aging here) keeps them from swapping every step.
TEST(Scheduler, PriorityEvictionHysteresis) {
  auto swaps = [](double margin) {
    SchedulerOptions o = options(Policy::kPriority, 512, 8);
    o.aging_per_s = 1.0;
    o.eviction = Eviction::kSwapRam;
    o.preempt_margin = margin;
    Sim sim(o, 16, 4);
    sim.add(1, make_prompt(36, 100), 48, 0, 0, 0.0);
    sim.add(2, make_prompt(36, 200), 48, 0, 0, 0.0);
    EXPECT_TRUE(sim.run(400));
    EXPECT_EQ(sim.finished[1], reference(1, make_prompt(36, 100), 48));
    EXPECT_EQ(sim.finished[2], reference(2, make_prompt(36, 200), 48));
    EXPECT_EQ(sim.n_errors, 0);
    return std::make_pair(sim.s.stats().n_preempt_ram, sim.step_no);
  };
  const auto [n_swaps, n_steps] = swaps(1.0);
  EXPECT_GT(n_swaps, 0u);
  EXPECT_LE(n_swaps * 8, static_cast<uint64_t>(n_steps));
  const auto [n_swaps0, n_steps0] = swaps(0.0);  // no margin: they pass each other every step
  EXPECT_GT(n_swaps0, 2 * n_swaps);
}

// 64 threads with random prompts (some sharing prefixes) and lengths, arriving over time, in a
// KV pool small enough to force evictions: every thread ends with the tokens of a run alone.
struct E2eCase {
  Policy policy;
  Eviction eviction;
  double fail_rate;
};

class SchedulerE2e : public ::testing::TestWithParam<E2eCase> {};

TEST_P(SchedulerE2e, MatchesRunsAlone) {
  const E2eCase ec = GetParam();
  SchedulerOptions o = options(ec.policy, 32, 8);
  o.eviction = ec.eviction;
  o.quantum_tokens = 6;
  o.aging_per_s = 2.0;
  o.kv_bytes_per_token = 1000;
  o.costs.ram_bytes_per_s = 1e6;
  o.costs.disk_bytes_per_s = 2e5;
  o.costs.recompute_tokens_per_s = 300;  // between RAM swap and disk: auto mixes methods
  o.costs.ram_limit_bytes = 40000;
  o.costs.disk_available = true;
  Sim sim(o, 40, 4);
  sim.fail_rate = ec.fail_rate;
  std::mt19937 rng(1234);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<Tokens> bases;
  for (int b = 0; b < 4; ++b) bases.push_back(make_prompt(uni(4, 16), 1 + 50 * b));
  struct Pending {
    ThreadId id;
    Tokens prompt;
    int32_t max_tokens, prio;
    uint64_t tenant;
    int64_t at;
  };
  std::vector<Pending> todo;
  for (ThreadId id = 1; id <= 64; ++id) {
    Tokens p = uni(0, 2) ? bases[static_cast<size_t>(uni(0, 3))] : Tokens{};
    const int tail = uni(1, 20);
    for (int k = 0; k < tail; ++k) p.push_back(uni(1, 30));
    const int32_t max_tokens = static_cast<int32_t>(p.size()) + uni(1, 24);
    todo.push_back({id, p, max_tokens, uni(0, 3), static_cast<uint64_t>(uni(0, 2)),
                    static_cast<int64_t>(id / 2)});
  }
  std::map<ThreadId, Tokens> expected;
  for (const Pending& t : todo) expected[t.id] = reference(t.id, t.prompt, t.max_tokens);
  size_t next = 0;
  int64_t steps = 0;
  for (; steps < 20000 && (next < todo.size() || !sim.live.empty()); ++steps) {
    while (next < todo.size() && todo[next].at <= steps) {
      const Pending& t = todo[next++];
      sim.add(t.id, t.prompt, t.max_tokens, t.prio, t.tenant);
    }
    sim.step();
    if (sim.n_errors > 0) break;
  }
  ASSERT_TRUE(sim.live.empty()) << "not finished after " << steps << " steps";
  ASSERT_EQ(sim.finished.size(), 64u);
  for (const auto& [id, toks] : sim.finished) EXPECT_EQ(toks, expected[id]) << "thread " << id;
  const SchedulerStats st = sim.s.stats();
  const uint64_t n_evictions = st.n_preempt_ram + st.n_preempt_disk + st.n_preempt_recompute;
  EXPECT_GT(n_evictions, 0u);
  switch (ec.eviction) {
    case Eviction::kSwapRam:
      EXPECT_EQ(st.n_preempt_ram, n_evictions);
      break;
    case Eviction::kSwapDisk:
      EXPECT_EQ(st.n_preempt_disk, n_evictions);
      break;
    case Eviction::kRecompute:
      EXPECT_EQ(st.n_preempt_recompute, n_evictions);
      break;
    case Eviction::kAuto:
      EXPECT_GT(st.n_preempt_ram, 0u);
      EXPECT_GT(st.n_preempt_recompute, 0u);
      break;
  }
  EXPECT_GT(st.prefix_hit_tokens, 0u);
  EXPECT_EQ(st.swap_ram_bytes, 0u);
  EXPECT_TRUE(sim.s.idle());
  EXPECT_EQ(sim.kv.stats().n_used, 0);
  EXPECT_EQ(sim.n_errors, 0);
}

std::vector<E2eCase> e2e_cases() {
  std::vector<E2eCase> v;
  for (Policy p : {Policy::kFcfs, Policy::kPriority, Policy::kRoundRobin, Policy::kFairShare}) {
    for (Eviction e :
         {Eviction::kAuto, Eviction::kSwapRam, Eviction::kSwapDisk, Eviction::kRecompute})
      v.push_back({p, e, 0.0});
    v.push_back({p, Eviction::kSwapRam, 0.2});  // swap failures turn into recompute
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, SchedulerE2e, ::testing::ValuesIn(e2e_cases()),
                         [](const ::testing::TestParamInfo<E2eCase>& info) {
                           std::string n = std::string(policy_name(info.param.policy)) + "_" +
                                           eviction_name(info.param.eviction) +
                                           (info.param.fail_rate > 0 ? "_failures" : "");
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace llmt::sched

namespace llmt::sched {
namespace {

std::vector<int32_t> table_vec(const Scheduler& s, ThreadId id) {
  auto t = s.table(id);
  return {t.begin(), t.end()};
}

// Exact block ids step by step: two threads growing in a 7-block pool of 4 tokens (FCFS). Blocks
// come out of the never-used list in order; the thread that cannot grow when the pool is full is
// the one last in FCFS order, and it is swapped out with exactly its table.
TEST(SchedulerBlocks, ExactTablesAndVictim) {
  SchedulerOptions o = pressure_options(Eviction::kSwapRam);
  o.max_running = 4;
  Sim sim(o, 7, 4);
  sim.add(1, make_prompt(6, 10), 16);
  sim.add(2, make_prompt(5, 50), 20);
  sim.step();  // both prefill: 6 -> blocks {0,1}, 5 -> {2,3}
  EXPECT_EQ(table_vec(sim.s, 1), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(table_vec(sim.s, 2), (std::vector<int32_t>{2, 3}));
  sim.step();  // pos 6 / 5
  sim.step();  // pos 7 / 6
  sim.step();  // pos 8 (thread 1 needs its third block) / 7
  EXPECT_EQ(table_vec(sim.s, 1), (std::vector<int32_t>{0, 1, 4}));
  EXPECT_EQ(table_vec(sim.s, 2), (std::vector<int32_t>{2, 3}));
  sim.step();  // 9 / 8 (thread 2's third block)
  EXPECT_EQ(table_vec(sim.s, 2), (std::vector<int32_t>{2, 3, 5}));
  sim.step();  // 10 / 9
  sim.step();  // 11 / 10
  sim.step();  // 12 (thread 1: block 6, the last) / 11
  EXPECT_EQ(table_vec(sim.s, 1), (std::vector<int32_t>{0, 1, 4, 6}));
  EXPECT_TRUE(sim.plan.swap_out.empty());
  // Thread 2 reaches position 12: no block left and nothing after it in FCFS order to evict, so
  // it is swapped out itself, with exactly its table; thread 1 decodes on.
  const StepPlan& p = sim.step();
  ASSERT_EQ(p.swap_out.size(), 1u);
  EXPECT_EQ(p.swap_out[0].id, 2u);
  EXPECT_EQ(p.swap_out[0].blocks, (std::vector<int32_t>{2, 3, 5}));
  EXPECT_EQ(p.swap_out[0].n_tokens, 12);
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].id, 1u);
  EXPECT_EQ(p.chunks[0].pos0, 13);
  EXPECT_EQ(*sim.s.phase(2), Phase::kSwapped);
  EXPECT_EQ(sim.s.stats().n_preempt_ram, 1u);
}

}  // namespace
}  // namespace llmt::sched
