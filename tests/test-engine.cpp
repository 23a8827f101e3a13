// Engine tests on real models: concurrent threads produce exactly the tokens of sequential runs,
// preempted threads (swap to RAM, swap to disk, recompute) finish with identical tokens, cancel
// frees every KV block within one step, stop conditions, validation errors, reference greedy
// tokens through the engine.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "llmthreads/engine.h"
#include "llmthreads/tokenizer.h"
#include "test-util.h"

namespace llmt {
namespace {

using namespace std::chrono_literals;

const char* kStories = "models/stories260K.gguf";
const char* kSynth = "models/synth/synth-125m-q4_k_m.gguf";

std::shared_ptr<const Model> load(const char* rel) {
  auto m = Model::load(test::data_path(rel));
  EXPECT_TRUE(m.is_ok()) << m.status().to_string();
  return m.is_ok() ? *m : nullptr;
}

EngineConfig base_config(std::shared_ptr<const Model> model) {
  EngineConfig c;
  c.model.model = std::move(model);
  c.compute.n_threads = 2;
  c.kv.budget_bytes = 64u << 20;
  c.sched.measure_costs = false;
  return c;
}

// A varied set of requests: different prompts, lengths, greedy and sampled with seeds, penalties.
std::vector<ThreadRequest> make_requests(int n, int max_tokens) {
  const char* starts[] = {"Once upon a time",    "The little dog", "Lily and Tom went",
                          "One day, a big bear", "The sun was",    "Sam had a red ball"};
  std::vector<ThreadRequest> out;
  for (int i = 0; i < n; ++i) {
    ThreadRequest r;
    r.prompt = std::string(starts[i % 6]) + (i % 4 == 0 ? " in the park" : "");
    r.max_tokens = max_tokens - (i % 5) * 3;
    r.ignore_eos = true;
    if (i % 3 == 0) {
      r.sampling.temperature = 0.0f;
    } else {
      r.sampling.temperature = 0.9f;
      r.sampling.seed = 1000 + i;
      if (i % 3 == 2) r.sampling.repeat_penalty = 1.1f;
    }
    out.push_back(r);
  }
  return out;
}

std::vector<ThreadResult> run_sequential(Engine& e, const std::vector<ThreadRequest>& reqs) {
  std::vector<ThreadResult> out;
  for (const auto& r : reqs) {
    auto h = e.submit(r);
    EXPECT_TRUE(h.is_ok()) << h.status().to_string();
    out.push_back(h->wait());
  }
  return out;
}

std::vector<ThreadResult> run_concurrent(Engine& e, const std::vector<ThreadRequest>& reqs) {
  std::vector<ThreadHandle> hs;
  for (const auto& r : reqs) {
    auto h = e.submit(r);
    EXPECT_TRUE(h.is_ok()) << h.status().to_string();
    hs.push_back(*h);
  }
  std::vector<ThreadResult> out;
  for (auto& h : hs) out.push_back(h.wait());
  return out;
}

void expect_same(const std::vector<ThreadResult>& a, const std::vector<ThreadResult>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].tokens, b[i].tokens) << "thread " << i;
    EXPECT_EQ(a[i].text, b[i].text) << "thread " << i;
    EXPECT_EQ(a[i].finish_reason, b[i].finish_reason) << "thread " << i;
  }
}

TEST(Engine, GreedyMatchesReference) {
  LLMT_REQUIRE_DATA(kStories);
  auto j = nlohmann::json::parse(
      test::read_file(test::data_path("reference/llamacpp/stories260K.json")));
  auto cfg = base_config(load(kStories));
  cfg.kv.type = KvType::kF32;
  auto e = Engine::create(cfg);
  ASSERT_TRUE(e.is_ok()) << e.status().to_string();
  std::vector<ThreadHandle> hs;
  std::vector<std::vector<int32_t>> want;
  for (const auto& p : j["prompts"]) {
    ThreadRequest r;
    r.prompt_tokens = p["prompt_token_ids"].get<std::vector<int32_t>>();
    r.sampling.temperature = 0;
    want.push_back(p["greedy_token_ids"].get<std::vector<int32_t>>());
    r.max_tokens = static_cast<int32_t>(want.back().size());
    r.ignore_eos = true;
    auto h = (*e)->submit(r);
    ASSERT_TRUE(h.is_ok()) << h.status().to_string();
    hs.push_back(*h);
  }
  for (size_t i = 0; i < hs.size(); ++i) {
    const ThreadResult& res = hs[i].wait();
    EXPECT_EQ(res.tokens, want[i]) << "prompt " << i;
    EXPECT_EQ(res.finish_reason, FinishReason::kLength);
  }
}

TEST(Engine, ConcurrentEqualsSequential64) {
  LLMT_REQUIRE_DATA(kStories);
  auto e = Engine::create(base_config(load(kStories)));
  ASSERT_TRUE(e.is_ok()) << e.status().to_string();
  const auto reqs = make_requests(64, 48);
  const auto seq = run_sequential(**e, reqs);
  const auto con = run_concurrent(**e, reqs);
  expect_same(seq, con);
  const EngineStats s = (*e)->stats();
  EXPECT_EQ(s.n_finished, 128);
  EXPECT_GT(s.generated_tokens, 64 * 30);
}

TEST(Engine, ConcurrentEqualsSequentialSynth) {
  LLMT_REQUIRE_DATA(kSynth);
  auto cfg = base_config(load(kSynth));
  cfg.kv.budget_bytes = 256u << 20;
  auto e = Engine::create(cfg);
  ASSERT_TRUE(e.is_ok()) << e.status().to_string();
  const auto reqs = make_requests(12, 20);
  expect_same(run_sequential(**e, reqs), run_concurrent(**e, reqs));
}

// A KV pool far too small for all threads at once forces evictions with the given method; every
// thread still produces exactly its sequential tokens.
void preemption_case(EvictionMethod method, SchedPolicy policy) {
  auto model = load(kStories);
  auto ref_engine = Engine::create(base_config(model));
  ASSERT_TRUE(ref_engine.is_ok());
  const auto reqs = make_requests(24, 64);
  const auto seq = run_sequential(**ref_engine, reqs);

  auto cfg = base_config(model);
  cfg.sched.policy = policy;
  cfg.sched.eviction = method;
  cfg.sched.quantum_tokens = 8;
  cfg.sched.max_running = 6;
  cfg.kv.block_size = 8;
  std::filesystem::path dir = std::filesystem::temp_directory_path() / "llmt-test-engine-swap";
  if (method == EvictionMethod::kSwapDisk) cfg.kv.swap.dir = dir.string();
  // Room for about 6 threads of ~80 positions.
  const size_t per_token = (*ref_engine)->kv_bytes_per_token();
  cfg.kv.budget_bytes = per_token * 8 * 64;
  auto e = Engine::create(cfg);
  ASSERT_TRUE(e.is_ok()) << e.status().to_string();
  const auto con = run_concurrent(**e, reqs);
  expect_same(seq, con);
  const EngineStats s = (*e)->stats();
  int64_t n_pre = 0;
  for (const auto& r : con) n_pre += r.timings.n_preemptions;
  EXPECT_GT(n_pre, 0);
  switch (method) {
    case EvictionMethod::kSwapRam:
      EXPECT_GT(s.preempt_ram, 0);
      EXPECT_EQ(s.preempt_disk + s.preempt_recompute, 0);
      break;
    case EvictionMethod::kSwapDisk:
      EXPECT_GT(s.preempt_disk, 0);
      EXPECT_EQ(s.preempt_ram + s.preempt_recompute, 0);
      break;
    case EvictionMethod::kRecompute:
      EXPECT_GT(s.preempt_recompute, 0);
      EXPECT_EQ(s.preempt_ram + s.preempt_disk, 0);
      break;
    case EvictionMethod::kAuto:
      EXPECT_GT(s.preempt_ram + s.preempt_disk + s.preempt_recompute, 0);
      break;
  }
  EXPECT_EQ(s.swap_failures, 0);
  EXPECT_EQ(s.swap_bytes_ram + s.swap_bytes_disk, 0);  // everything restored or erased
  e->reset();
  if (method == EvictionMethod::kSwapDisk && std::filesystem::exists(dir)) {
    EXPECT_TRUE(std::filesystem::is_empty(dir)) << "swap files left in " << dir;
  }
}

TEST(Engine, PreemptSwapRamIdentical) {
  LLMT_REQUIRE_DATA(kStories);
  preemption_case(EvictionMethod::kSwapRam, SchedPolicy::kRoundRobin);
}
TEST(Engine, PreemptSwapDiskIdentical) {
  LLMT_REQUIRE_DATA(kStories);
  preemption_case(EvictionMethod::kSwapDisk, SchedPolicy::kRoundRobin);
}
TEST(Engine, PreemptRecomputeIdentical) {
  LLMT_REQUIRE_DATA(kStories);
  preemption_case(EvictionMethod::kRecompute, SchedPolicy::kRoundRobin);
}
TEST(Engine, PreemptAutoPriorityIdentical) {
  LLMT_REQUIRE_DATA(kStories);
  preemption_case(EvictionMethod::kAuto, SchedPolicy::kPriority);
}

// Gemma 3 (5 sliding-window layers of 32 positions : 1 global): with the window layers' K/V
// apart (KvConfig::window_slots), the same budget holds more tokens, the window slots in use stay
// within what max_running threads' windows need, and the outputs are those of one pool for every
// layer: alone, concurrent, and preempted (swap to RAM and recompute) in a tight pool.
TEST(Engine, SlidingWindowSlotsDoNotChangeOutput) {
  const char* kGemma3 = "models/arch/synth-gemma3-f16.gguf";
  LLMT_REQUIRE_DATA(kGemma3);
  auto model = load(kGemma3);
  ASSERT_EQ(model->hparams().n_swa, 32);
  std::vector<ThreadRequest> reqs;
  for (int i = 0; i < 10; ++i) {
    ThreadRequest r;
    for (int k = 0; k < 40 + 9 * i; ++k) {
      r.prompt_tokens.push_back(1 + (k * 31 + i * 7) % (model->hparams().n_vocab - 1));
    }
    r.max_tokens = 70 - 3 * i;  // every thread goes well past the window
    r.ignore_eos = true;
    r.sampling.temperature = i % 2 ? 0.8f : 0.0f;
    r.sampling.seed = 500 + i;
    reqs.push_back(r);
  }
  auto cfg = base_config(model);
  cfg.model.n_ctx = 512;
  cfg.sched.max_running = 4;
  cfg.sched.step_tokens = 64;
  cfg.kv.budget_bytes = 8u << 20;
  cfg.kv.window_slots = false;
  auto one_pool = Engine::create(cfg);
  ASSERT_TRUE(one_pool.is_ok()) << one_pool.status().to_string();
  EXPECT_EQ((*one_pool)->stats().kv_window_slots, 0);
  const auto want = run_sequential(**one_pool, reqs);

  cfg.kv.window_slots = true;
  auto split = Engine::create(cfg);
  ASSERT_TRUE(split.is_ok()) << split.status().to_string();
  const EngineStats s0 = (*split)->stats();
  // 4 threads x (32 / 16 + 2) + one step's 64 / 16 + 1 slots; the blocks hold 1 layer of 6.
  EXPECT_EQ(s0.kv_window_slots, 4 * 4 + 5);
  EXPECT_GT((*split)->n_kv_blocks(), 4 * (*one_pool)->n_kv_blocks());
  expect_same(want, run_concurrent(**split, reqs));
  const EngineStats s1 = (*split)->stats();
  EXPECT_GT(s1.kv_window_slots_used_peak, 0);
  EXPECT_LE(s1.kv_window_slots_used_peak, s1.kv_window_slots);

  // A pool of 30 blocks (the threads need up to 12 each) next to the 21 slots: preemption, by
  // swap and by recompute. (One pool of the same bytes would have 22 blocks.)
  for (EvictionMethod method : {EvictionMethod::kSwapRam, EvictionMethod::kRecompute}) {
    SCOPED_TRACE(eviction_method_name(method));
    auto tight = cfg;
    tight.sched.eviction = method;
    tight.sched.policy = SchedPolicy::kRoundRobin;
    tight.sched.quantum_tokens = 16;
    const size_t layer_block = (*split)->kv_bytes_per_token() / 6 * 16;  // one layer, 16 tokens
    tight.kv.budget_bytes = (21 * 5 + 30) * layer_block;
    auto e = Engine::create(tight);
    ASSERT_TRUE(e.is_ok()) << e.status().to_string();
    ASSERT_EQ((*e)->stats().kv_window_slots, 21);
    ASSERT_EQ((*e)->n_kv_blocks(), 30);
    expect_same(want, run_concurrent(**e, reqs));
    const EngineStats s = (*e)->stats();
    EXPECT_GT(s.preempt_ram + s.preempt_recompute, 0);
    EXPECT_EQ(s.swap_failures, 0);
    EXPECT_LE(s.kv_window_slots_used_peak, 21);
  }
}

// Threads sharing a 37-token instruction (2 full 16-token blocks + 5 tokens of a third) with
// distinct tails of 12+ tokens: with prefix sharing the instruction is computed once (full blocks
// shared, the third block's first 5 tokens copied from the first thread's block once that block
// is full and registered) and every thread's tokens equal those without sharing.
TEST(Engine, PrefixSharingDoesNotChangeOutput) {
  LLMT_REQUIRE_DATA(kSynth);
  auto model = load(kSynth);
  std::vector<int32_t> instr;
  instr.push_back(model->tokenizer().bos_id());
  for (int32_t i = 1; i < 37; ++i) instr.push_back(1000 + 37 * i);
  std::vector<ThreadRequest> reqs;
  for (int i = 0; i < 8; ++i) {
    ThreadRequest r;
    r.prompt_tokens = instr;
    for (int k = 0; k < 12 + i; ++k) r.prompt_tokens.push_back(2000 + 101 * i + k);
    r.max_tokens = 6;
    r.ignore_eos = true;
    r.sampling.temperature = i % 2 ? 0.7f : 0.0f;
    r.sampling.seed = 77 + i;
    reqs.push_back(r);
  }
  auto cfg = base_config(model);
  cfg.kv.budget_bytes = 128u << 20;
  cfg.kv.prefix_caching = false;
  auto off = Engine::create(cfg);
  ASSERT_TRUE(off.is_ok());
  cfg.kv.prefix_caching = true;
  auto on = Engine::create(cfg);
  ASSERT_TRUE(on.is_ok());
  const auto want = run_concurrent(**off, reqs);
  const auto got = run_concurrent(**on, reqs);
  expect_same(want, got);
  const EngineStats s = (*on)->stats();
  // The first thread computes the instruction; the other 7 wait for it and reuse all 37 tokens.
  EXPECT_EQ(s.prefix_hit_tokens, 7 * 37);
  int64_t prompt_total = 0;
  for (const auto& r : reqs) prompt_total += static_cast<int64_t>(r.prompt_tokens.size());
  EXPECT_EQ(s.prefill_tokens, prompt_total - 7 * 37);
  for (size_t i = 1; i < got.size(); ++i) EXPECT_EQ(got[i].usage.cached_tokens, 37) << i;
}

// Scoring threads: log P(continuation | prompt) equals a log-softmax over the logits of a plain
// Context run (F32 KV: the same logits bitwise), also when the label threads of one prompt share
// its KV through the prefix cache.
TEST(Engine, ScoringMatchesContextLogits) {
  LLMT_REQUIRE_DATA(kStories);
  auto model = load(kStories);
  const Tokenizer& tok = model->tokenizer();
  const std::string text =
      "Once upon a time, there was a little girl. She liked to play in the park with her friends. "
      "One day she met a girl named";
  const std::vector<int32_t> prompt = tok.encode(text);
  ASSERT_GT(prompt.size(), 32u);
  // A label's tokens: those of prompt text + label after the prompt's (checked to extend them).
  std::vector<std::vector<int32_t>> labels;
  for (const char* lab : {" Lily", " Tom and his dog", " Sue"}) {
    std::vector<int32_t> all = tok.encode(text + lab);
    ASSERT_GT(all.size(), prompt.size());
    ASSERT_TRUE(std::equal(prompt.begin(), prompt.end(), all.begin())) << lab;
    labels.emplace_back(all.begin() + static_cast<std::ptrdiff_t>(prompt.size()), all.end());
  }
  // Reference: all logits of prompt + label through one Context.
  auto reference = [&](const std::vector<int32_t>& label) {
    ContextOptions co;
    co.all_logits = true;
    co.n_threads = 1;
    auto ctx = Context::create(model, co);
    EXPECT_TRUE(ctx.is_ok());
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), label.begin(), label.end());
    EXPECT_TRUE((*ctx)->eval(all).is_ok());
    std::vector<float> out;
    for (size_t i = 0; i < label.size(); ++i) {
      auto lg = (*ctx)->logits(static_cast<int32_t>(prompt.size() - 1 + i));
      double mx = -INFINITY, sum = 0;
      for (float v : lg) mx = std::max<double>(mx, v);
      for (float v : lg) sum += std::exp(static_cast<double>(v) - mx);
      out.push_back(static_cast<float>(static_cast<double>(lg[label[i]]) - mx - std::log(sum)));
    }
    return out;
  };
  auto cfg = base_config(model);
  cfg.kv.type = KvType::kF32;
  auto e = Engine::create(cfg);
  ASSERT_TRUE(e.is_ok());
  std::vector<ThreadHandle> hs;
  for (const auto& lab : labels) {
    ThreadRequest r;
    r.prompt_tokens = prompt;
    r.score_tokens = lab;
    hs.push_back(*(*e)->submit(r));
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    const ThreadResult& res = hs[i].wait();
    ASSERT_EQ(res.finish_reason, FinishReason::kStop) << res.error;
    EXPECT_TRUE(res.tokens.empty());
    const auto want = reference(labels[i]);
    ASSERT_EQ(res.score_logprobs.size(), want.size());
    double total = 0;
    for (size_t k = 0; k < want.size(); ++k) {
      EXPECT_EQ(res.score_logprobs[k], want[k]) << "label " << i << " token " << k;
      total += want[k];
    }
    EXPECT_DOUBLE_EQ(res.score_logprob, total);
  }
  // The story model prefers " Lily" after this prompt.
  EXPECT_GT(hs[0].wait().score_logprob, hs[2].wait().score_logprob);
  // Label threads 2 and 3 reused all of the prompt but its last position (whose logits they
  // need): its full blocks from the cache, the rest copied from the block the first thread is
  // still filling.
  EXPECT_EQ((*e)->stats().prefix_hit_tokens, 2 * static_cast<int64_t>(prompt.size() - 1));
}

// Generated-token logprobs: the sampled token's logprob and the top alternatives equal an
// independent log-softmax over the logits of a plain Context on prompt + generated tokens (the
// model's distribution, before temperature / penalties); greedy tokens are the top alternative;
// the top list is sorted with exactly N entries; events carry the same entries as the result;
// threads that did not ask get none.
TEST(Engine, LogprobsMatchContextLogSoftmax) {
  LLMT_REQUIRE_DATA(kStories);
  auto model = load(kStories);
  const std::vector<int32_t> prompt = model->tokenizer().encode("Once upon a time, Lily");
  auto cfg = base_config(model);
  cfg.kv.type = KvType::kF32;
  auto e = Engine::create(cfg);
  ASSERT_TRUE(e.is_ok()) << e.status().to_string();
  struct Case {
    int32_t logprobs;
    float temperature;
    float repeat_penalty;
  };
  const std::vector<Case> cases = {
      {5, 0.0f, 1.0f}, {3, 1.2f, 1.0f}, {0, 0.8f, 1.3f}, {20, 0.0f, 1.0f}, {-1, 0.0f, 1.0f}};
  std::vector<ThreadHandle> hs;
  for (size_t i = 0; i < cases.size(); ++i) {
    ThreadRequest r;
    r.prompt_tokens = prompt;
    r.max_tokens = 12;
    r.ignore_eos = true;
    r.logprobs = cases[i].logprobs;
    r.sampling.temperature = cases[i].temperature;
    r.sampling.repeat_penalty = cases[i].repeat_penalty;
    r.sampling.seed = 7 + i;
    auto h = (*e)->submit(r);
    ASSERT_TRUE(h.is_ok()) << h.status().to_string();
    hs.push_back(*h);
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    // The events, then the result.
    std::vector<TokenLogprobs> from_events;
    while (auto ev = hs[i].next(std::chrono::seconds(30))) {
      if (ev->kind != ThreadEvent::Kind::kToken) continue;
      if (ev->token < 0) {
        EXPECT_FALSE(ev->logprob.has_value());
        continue;
      }
      EXPECT_EQ(ev->logprob.has_value(), cases[i].logprobs >= 0);
      if (ev->logprob) {
        EXPECT_EQ(ev->logprob->token, ev->token);
        from_events.push_back(*ev->logprob);
      }
    }
    const ThreadResult& res = hs[i].wait();
    ASSERT_EQ(res.finish_reason, FinishReason::kLength) << res.error;
    ASSERT_EQ(res.tokens.size(), 12u);
    if (cases[i].logprobs < 0) {
      EXPECT_TRUE(res.logprobs.empty());
      continue;
    }
    ASSERT_EQ(res.logprobs.size(), res.tokens.size());
    ASSERT_EQ(from_events.size(), res.tokens.size());
    // Reference logits: prompt + generated tokens through a plain Context.
    ContextOptions co;
    co.all_logits = true;
    co.n_threads = 1;
    auto ctx = Context::create(model, co);
    ASSERT_TRUE(ctx.is_ok());
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), res.tokens.begin(), res.tokens.end() - 1);
    ASSERT_TRUE((*ctx)->eval(all).is_ok());
    for (size_t k = 0; k < res.tokens.size(); ++k) {
      const TokenLogprobs& got = res.logprobs[k];
      EXPECT_EQ(got.token, res.tokens[k]);
      EXPECT_EQ(from_events[k].token, got.token);
      EXPECT_EQ(from_events[k].logprob, got.logprob);
      EXPECT_EQ(from_events[k].top.size(), got.top.size());
      const auto lg = (*ctx)->logits(static_cast<int32_t>(prompt.size() + k - 1));
      double mx = -INFINITY;
      for (float v : lg) mx = std::max<double>(mx, v);
      double sum = 0;
      for (float v : lg) sum += std::exp(static_cast<double>(v) - mx);
      auto ref = [&](int32_t id) { return static_cast<double>(lg[id]) - mx - std::log(sum); };
      EXPECT_NEAR(got.logprob, ref(got.token), 1e-4) << "token " << k;
      ASSERT_EQ(got.top.size(), static_cast<size_t>(cases[i].logprobs)) << "token " << k;
      // The reference top list: ids by logit descending, id ascending.
      std::vector<int32_t> ids(lg.size());
      for (size_t v = 0; v < ids.size(); ++v) ids[v] = static_cast<int32_t>(v);
      std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return lg[a] > lg[b]; });
      for (size_t j = 0; j < got.top.size(); ++j) {
        EXPECT_EQ(got.top[j].token, ids[j]) << "token " << k << " rank " << j;
        EXPECT_NEAR(got.top[j].logprob, ref(got.top[j].token), 1e-4);
        if (j > 0) EXPECT_GE(got.top[j - 1].logprob, got.top[j].logprob);
      }
      if (cases[i].temperature == 0.0f && cases[i].repeat_penalty == 1.0f) {
        // Greedy: the sampled token has the largest logprob and is the first alternative.
        EXPECT_EQ(got.top[0].token, got.token) << "token " << k;
        EXPECT_NEAR(got.logprob, -std::log(sum), 1e-4);
      } else if (!got.top.empty()) {
        EXPECT_LE(got.logprob, got.top[0].logprob + 1e-6);
      }
    }
  }
  // Out of range: rejected, nothing queued.
  ThreadRequest bad;
  bad.prompt_tokens = prompt;
  bad.logprobs = ThreadRequest::kMaxLogprobs + 1;
  EXPECT_EQ((*e)->submit(bad).status().code(), StatusCode::kInvalidArgument);
  bad.logprobs = -2;
  EXPECT_EQ((*e)->submit(bad).status().code(), StatusCode::kInvalidArgument);
}

TEST(Engine, CancelFreesBlocksWithinOneStep) {
  LLMT_REQUIRE_DATA(kStories);
  auto e = Engine::create(base_config(load(kStories)));
  ASSERT_TRUE(e.is_ok());
  ThreadRequest r;
  r.prompt = "Once upon a time";
  r.max_tokens = 400;
  r.ignore_eos = true;
  auto h = (*e)->submit(r);
  ASSERT_TRUE(h.is_ok());
  // Wait for a few tokens.
  int n_tok = 0;
  while (n_tok < 5) {
    auto ev = h->next(5s);
    ASSERT_TRUE(ev.has_value());
    ASSERT_EQ(ev->kind, ThreadEvent::Kind::kToken);
    ++n_tok;
  }
  EXPECT_GT((*e)->stats().kv_blocks_used, 0);
  (*e)->cancel(h->id());
  const ThreadResult& res = h->wait();
  EXPECT_EQ(res.finish_reason, FinishReason::kCancelled);
  const int64_t steps_at_cancel = (*e)->stats().n_steps;
  // The loop publishes its stats right after handling the cancel.
  EngineStats s;
  for (int i = 0; i < 200; ++i) {
    s = (*e)->stats();
    if (s.kv_blocks_used == 0) break;
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_LE(s.n_steps, steps_at_cancel + 1);
  EXPECT_EQ(s.n_cancelled, 1);
}

TEST(Engine, StopStringsTokensAndLength) {
  LLMT_REQUIRE_DATA(kStories);
  auto e = Engine::create(base_config(load(kStories)));
  ASSERT_TRUE(e.is_ok());
  ThreadRequest r;
  r.prompt = "Once upon a time";
  r.sampling.temperature = 0;
  r.max_tokens = 32;
  r.ignore_eos = true;
  auto full = (*e)->submit(r)->wait();
  ASSERT_EQ(full.finish_reason, FinishReason::kLength);
  ASSERT_EQ(full.tokens.size(), 32u);
  // Reference greedy text: ", there was a little girl named Lily. She loved to play ..."
  const size_t cut = full.text.find("Lily");
  ASSERT_NE(cut, std::string::npos) << full.text;
  r.stop = {"Lily", "zzz-never"};
  auto stopped = (*e)->submit(r)->wait();
  EXPECT_EQ(stopped.finish_reason, FinishReason::kStop);
  EXPECT_EQ(stopped.stop_matched, "Lily");
  EXPECT_EQ(stopped.text, full.text.substr(0, cut));
  // Streaming: the concatenated token texts equal the final text (nothing of the stop string
  // leaks through the stream).
  auto h = (*e)->submit(r);
  std::string streamed;
  while (auto ev = h->next(10s)) {
    if (ev->kind == ThreadEvent::Kind::kToken) streamed += ev->text;
  }
  EXPECT_EQ(streamed, stopped.text);
  // Stop token: the third generated token.
  ThreadRequest r2 = r;
  r2.stop.clear();
  r2.stop_tokens = {full.tokens[2]};
  auto st = (*e)->submit(r2)->wait();
  EXPECT_EQ(st.finish_reason, FinishReason::kStop);
  EXPECT_EQ(st.tokens.size(), 3u);
  // Length.
  ThreadRequest r3 = r2;
  r3.stop_tokens.clear();
  r3.max_tokens = 7;
  EXPECT_EQ((*e)->submit(r3)->wait().tokens.size(), 7u);
}

// prepare(): the one place a request's limits are checked, also used before submit() by the
// server's admission. It tokenizes once, resolves kToContextEnd to what the context or the KV
// pool leaves, names the field at fault, and a prepared request submits unchanged.
TEST(Engine, PrepareChecksLimitsOnce) {
  LLMT_REQUIRE_DATA(kStories);
  auto cfg = base_config(load(kStories));
  cfg.model.n_ctx = 128;
  auto e = Engine::create(cfg);
  ASSERT_TRUE(e.is_ok());
  const Tokenizer& tok = (*e)->model().tokenizer();

  ThreadRequest r;
  r.prompt = "Once upon a time";
  r.max_tokens = ThreadRequest::kToContextEnd;
  r.sampling.temperature = 0;
  ASSERT_TRUE((*e)->prepare(&r).is_ok());
  EXPECT_TRUE(r.prompt.empty());
  EXPECT_EQ(r.prompt_tokens, tok.encode("Once upon a time", {}));
  const int32_t n_prompt = static_cast<int32_t>(r.prompt_tokens.size());
  EXPECT_EQ(r.max_tokens, 128 - n_prompt);
  ThreadRequest again = r;
  ASSERT_TRUE((*e)->prepare(&again).is_ok());  // idempotent
  EXPECT_EQ(again.prompt_tokens, r.prompt_tokens);
  EXPECT_EQ(again.max_tokens, r.max_tokens);
  r.ignore_eos = true;
  ThreadResult res = (*e)->submit(r)->wait();
  EXPECT_EQ(res.finish_reason, FinishReason::kLength);
  EXPECT_EQ(static_cast<int32_t>(res.tokens.size()), 128 - n_prompt);

  ThreadRequest big;
  big.prompt_tokens.assign(100, 1);
  big.max_tokens = 29;
  Status s = (*e)->prepare(&big);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.field(), "max_tokens");
  big.prompt_tokens.assign(128, 1);
  s = (*e)->prepare(&big);
  EXPECT_EQ(s.field(), "prompt");
  big.prompt_tokens = {1, 2};
  big.logprobs = 99;
  EXPECT_EQ((*e)->prepare(&big).field(), "logprobs");
  big.logprobs = -1;
  big.max_tokens = 0;
  EXPECT_EQ((*e)->prepare(&big).field(), "max_tokens");

  // A pool smaller than the context: kToContextEnd stops at the pool; a prompt filling the pool
  // can never run.
  auto small_cfg = base_config(load(kStories));
  small_cfg.model.n_ctx = 512;
  small_cfg.kv.block_size = 16;
  small_cfg.kv.budget_bytes = 100 << 10;  // a few blocks of stories260K's small K/V
  auto one = Engine::create(small_cfg);
  ASSERT_TRUE(one.is_ok()) << one.status().to_string();
  const int64_t pool = (*one)->stats().kv_blocks_total * 16;
  ASSERT_GT(pool, 3);
  ASSERT_LT(pool, 512);
  ThreadRequest f;
  f.prompt_tokens = {1, 2, 3};
  f.max_tokens = ThreadRequest::kToContextEnd;
  ASSERT_TRUE((*one)->prepare(&f).is_ok());
  EXPECT_EQ(f.max_tokens, pool - 3);
  ThreadRequest full;
  full.prompt_tokens.assign(static_cast<size_t>(pool), 1);
  full.max_tokens = ThreadRequest::kToContextEnd;
  Status s2 = (*one)->prepare(&full);
  EXPECT_EQ(s2.code(), StatusCode::kCannotFit) << s2.to_string();
  EXPECT_EQ(s2.field(), "prompt");
}

TEST(Engine, SubmitValidation) {
  LLMT_REQUIRE_DATA(kStories);
  auto cfg = base_config(load(kStories));
  cfg.model.n_ctx = 128;
  auto e = Engine::create(cfg);
  ASSERT_TRUE(e.is_ok());
  ThreadRequest r;
  r.prompt_tokens = {1, 5000};
  EXPECT_EQ((*e)->submit(r).status().code(), StatusCode::kInvalidArgument);
  r.prompt_tokens = {1, -1};
  EXPECT_EQ((*e)->submit(r).status().code(), StatusCode::kInvalidArgument);
  r.prompt_tokens.assign(200, 1);
  EXPECT_EQ((*e)->submit(r).status().code(), StatusCode::kInvalidArgument);
  r.prompt_tokens.assign(100, 1);
  r.max_tokens = 50;
  EXPECT_EQ((*e)->submit(r).status().code(), StatusCode::kInvalidArgument);
  r.max_tokens = 0;
  EXPECT_EQ((*e)->submit(r).status().code(), StatusCode::kInvalidArgument);
  r.max_tokens = 4;
  r.sampling.top_p = 0;
  EXPECT_EQ((*e)->submit(r).status().code(), StatusCode::kInvalidArgument);
  r.sampling.top_p = 1;
  r.stop = {""};
  EXPECT_EQ((*e)->submit(r).status().code(), StatusCode::kInvalidArgument);
  ThreadRequest empty;
  empty.prompt = "";
  empty.add_special = false;
  EXPECT_EQ((*e)->submit(empty).status().code(), StatusCode::kInvalidArgument);
  // Still serving.
  r.stop.clear();
  auto ok = (*e)->submit(r);
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ(ok->wait().tokens.size(), 4u);

  EngineConfig bad = cfg;
  bad.kv.budget_bytes = 10;
  EXPECT_FALSE(Engine::create(bad).is_ok());
  bad = cfg;
  bad.sched.eviction = EvictionMethod::kSwapDisk;
  EXPECT_FALSE(Engine::create(bad).is_ok());
}

TEST(Engine, CallbacksFromManyCallerThreads) {
  LLMT_REQUIRE_DATA(kStories);
  auto e = Engine::create(base_config(load(kStories)));
  ASSERT_TRUE(e.is_ok());
  const auto reqs = make_requests(16, 24);
  const auto seq = run_sequential(**e, reqs);
  std::vector<std::string> texts(reqs.size());
  std::vector<ThreadResult> got(reqs.size());
  std::vector<std::thread> callers;
  for (size_t i = 0; i < reqs.size(); ++i) {
    callers.emplace_back([&, i] {
      ThreadRequest r = reqs[i];
      r.on_event = [&texts, i](const ThreadEvent& ev) {
        if (ev.kind == ThreadEvent::Kind::kToken) texts[i] += ev.text;
      };
      auto h = (*e)->submit(r);
      ASSERT_TRUE(h.is_ok());
      got[i] = h->wait();
    });
  }
  for (auto& t : callers) t.join();
  expect_same(seq, got);
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(texts[i], got[i].text);
}

TEST(Engine, DestructorCancelsLiveThreads) {
  LLMT_REQUIRE_DATA(kStories);
  ThreadHandle h;
  {
    auto e = Engine::create(base_config(load(kStories)));
    ASSERT_TRUE(e.is_ok());
    ThreadRequest r;
    r.prompt = "Once upon a time";
    r.max_tokens = 400;
    r.ignore_eos = true;
    h = *(*e)->submit(r);
  }
  ASSERT_TRUE(h.done());
  EXPECT_EQ(h.wait().finish_reason, FinishReason::kCancelled);
}

}  // namespace
}  // namespace llmt
