// `llmthreads bench --scenario NAME`: engine-level scenarios (priority, shared-prefix, switch).
// Each builds one or more Engines on the model, drives them with synthetic prompts of random
// (non-special) token ids and prints one JSON object. Prompts are random tokens so that the
// results do not depend on the model's text quality (the bench model has random weights).
#include "scenarios.h"

#include <cmath>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include "kv/swap-store.h"
#include "llmthreads/grammar.h"
#include "llmthreads/tasks.h"
#include "llmthreads/tokenizer.h"
#include "tasks/merge.h"

namespace llmt::bench {

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Percentile (nearest rank) of values, 0 for an empty list.
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  rank = std::clamp<size_t>(rank, 1, v.size());
  return v[rank - 1];
}

json pct_json(const std::vector<double>& v) {
  return {{"p50", percentile(v, 50)}, {"p99", percentile(v, 99)}, {"n", v.size()}};
}

// Deterministic random ordinary tokens (xorshift; not the engine's RNG).
struct TokenGen {
  uint64_t s;
  int32_t lo, hi;
  int32_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return lo + static_cast<int32_t>(s % static_cast<uint64_t>(hi - lo));
  }
  std::vector<int32_t> tokens(int32_t n, int32_t bos) {
    std::vector<int32_t> t;
    if (bos >= 0) t.push_back(bos);
    while (static_cast<int32_t>(t.size()) < n) t.push_back(next());
    return t;
  }
};

TokenGen token_gen(const Model& m, uint64_t seed) {
  const int32_t n_vocab = m.hparams().n_vocab;
  // Skip the first ids (special / byte tokens in most vocabularies).
  const int32_t lo = std::min(n_vocab - 1, std::max<int32_t>(260, n_vocab / 16));
  return TokenGen{seed * 0x9E3779B97F4A7C15ull + 1, lo, n_vocab};
}

EngineConfig base_config(const ScenarioOptions& o) {
  EngineConfig c;
  c.model.model = o.model;
  c.compute.n_threads = o.n_threads;
  c.kv.budget_bytes = o.kv_budget_bytes;
  c.kv.swap.dir = o.swap_dir;
  return c;
}

ThreadRequest request(std::vector<int32_t> prompt, int32_t max_tokens, int32_t priority) {
  ThreadRequest r;
  r.prompt_tokens = std::move(prompt);
  r.max_tokens = max_tokens;
  r.priority = priority;
  r.ignore_eos = true;
  r.sampling.temperature = 0.0f;
  return r;
}

// TTFT of n_high high-priority threads submitted one at a time (each after the previous one's
// first token, plus a small varying gap so arrivals fall at different points of a step).
Result<std::vector<double>> measure_ttft(Engine& e, TokenGen& gen, int32_t n_high,
                                         int32_t prompt_len, int32_t bos) {
  std::vector<double> ttft;
  for (int32_t i = 0; i < n_high; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(1000 + 3917 * (i % 7)));
    auto h = e.submit(request(gen.tokens(prompt_len, bos), 1, 10));
    if (!h.is_ok()) return h.status();
    const ThreadResult& res = h->wait();
    ttft.push_back(res.timings.ttft_s * 1e3);
    if (std::getenv("LLMT_SCENARIO_DEBUG")) {
      std::fprintf(stderr, "high %d: queue %.1f ms ttft %.1f ms\n", i, res.timings.queue_s * 1e3,
                   res.timings.ttft_s * 1e3);
    }
  }
  return ttft;
}

Result<json> scenario_priority(const ScenarioOptions& o) {
  const Model& m = *o.model;
  const int32_t bos = m.tokenizer().bos_id();
  const int32_t n_low = o.n_threads_sim > 0 ? o.n_threads_sim : 64;
  const int32_t n_high = o.n_high > 0 ? o.n_high : 20;
  const int32_t high_prompt = 128, low_prompt = 64, low_gen = 100000;
  EngineConfig cfg = base_config(o);
  cfg.sched.policy = SchedPolicy::kPriority;
  cfg.sched.max_running = n_low;
  LLMT_ASSIGN_OR_RETURN(auto engine, Engine::create(cfg));
  const int32_t n_ctx = engine->config().model.n_ctx;
  TokenGen gen = token_gen(m, 1);
  // Warm-up, then unloaded TTFT.
  LLMT_ASSIGN_OR_RETURN(auto warm, measure_ttft(*engine, gen, 2, high_prompt, bos));
  (void)warm;
  LLMT_ASSIGN_OR_RETURN(auto unloaded, measure_ttft(*engine, gen, n_high, high_prompt, bos));
  // Saturate with low-priority threads that generate until cancelled.
  std::vector<ThreadHandle> low;
  for (int32_t i = 0; i < n_low; ++i) {
    const int32_t gen_len = std::min(low_gen, n_ctx - low_prompt - 1);
    LLMT_ASSIGN_OR_RETURN(auto h, engine->submit(request(gen.tokens(low_prompt, bos), gen_len, 0)));
    low.push_back(h);
  }
  // Steady state: wait for every low thread's first token (its prompt is done; it decodes).
  for (auto& h : low) {
    auto ev = h.next(std::chrono::seconds(120));
    if (!ev) return Status(StatusCode::kInternal, "priority scenario: a low thread never started");
  }
  const EngineStats before = engine->stats();
  const auto t_loaded = Clock::now();
  LLMT_ASSIGN_OR_RETURN(auto loaded, measure_ttft(*engine, gen, n_high, high_prompt, bos));
  const double loaded_s = seconds_since(t_loaded);
  const EngineStats after = engine->stats();
  for (auto& h : low) engine->cancel(h.id());
  for (auto& h : low) h.wait();
  json j;
  j["scenario"] = "priority";
  j["ttft_high_ms"] = pct_json(loaded);
  j["ttft_unloaded_ms"] = pct_json(unloaded);
  j["p99_ratio"] =
      percentile(unloaded, 99) > 0 ? percentile(loaded, 99) / percentile(unloaded, 99) : 0.0;
  j["n_low"] = n_low;
  j["n_high"] = n_high;
  j["high_prompt_tokens"] = high_prompt;
  j["low_prompt_tokens"] = low_prompt;
  j["low_running_when_measured"] = before.n_running;
  j["low_tok_s_during_high"] =
      static_cast<double>(after.generated_tokens - before.generated_tokens - n_high) / loaded_s;
  return j;
}

// Runs n threads sharing a prefix_len-token instruction with distinct tail_len-token tails.
struct PrefixRun {
  int64_t prefill_tokens = 0;
  int64_t peak_blocks = 0;
  int64_t prefix_hits = 0;
  double wall_s = 0;
};

Result<PrefixRun> run_shared_prefix(const ScenarioOptions& o, bool sharing, int32_t n,
                                    int32_t prefix_len, int32_t tail_len, int32_t gen_len) {
  EngineConfig cfg = base_config(o);
  cfg.kv.prefix_caching = sharing;
  cfg.sched.max_running = std::max(n, 1);
  cfg.sched.measure_costs = false;
  LLMT_ASSIGN_OR_RETURN(auto engine, Engine::create(cfg));
  const int32_t bos = o.model->tokenizer().bos_id();
  TokenGen gen = token_gen(*o.model, 7);
  const std::vector<int32_t> prefix = gen.tokens(prefix_len, bos);
  std::vector<ThreadHandle> hs;
  const auto t0 = Clock::now();
  for (int32_t i = 0; i < n; ++i) {
    std::vector<int32_t> p = prefix;
    for (int32_t k = 0; k < tail_len; ++k) p.push_back(gen.next());
    LLMT_ASSIGN_OR_RETURN(auto h, engine->submit(request(std::move(p), gen_len, 0)));
    hs.push_back(h);
  }
  // Every thread keeps generating until all have their first token; then the KV in use holds
  // all N contexts at once (plus the tokens the early ones generated meanwhile).
  for (auto& h : hs) {
    auto ev = h.next(std::chrono::seconds(600));
    if (!ev || ev->kind != ThreadEvent::Kind::kToken) {
      return Status(StatusCode::kInternal, "shared-prefix: a thread produced no token");
    }
  }
  PrefixRun r;
  r.wall_s = seconds_since(t0);
  const EngineStats s = engine->stats();
  for (auto& h : hs) engine->cancel(h.id());
  for (auto& h : hs) h.wait();
  r.prefill_tokens = s.prefill_tokens;
  r.peak_blocks = s.kv_blocks_used;
  r.prefix_hits = s.prefix_hit_tokens;
  return r;
}

Result<json> scenario_shared_prefix(const ScenarioOptions& o) {
  const int32_t n = o.n_threads_sim > 0 ? o.n_threads_sim : 32;
  const int32_t prefix_len = 200, tail_len = 30, gen_len = 256;
  LLMT_ASSIGN_OR_RETURN(auto with, run_shared_prefix(o, true, n, prefix_len, tail_len, gen_len));
  LLMT_ASSIGN_OR_RETURN(auto without,
                        run_shared_prefix(o, false, n, prefix_len, tail_len, gen_len));
  EngineConfig probe = base_config(o);
  const size_t block_bytes = [&] {
    const ModelHparams& hp = o.model->hparams();
    return static_cast<size_t>(hp.n_layer) * 2 * hp.kv_dim() * 2 * probe.kv.block_size;
  }();
  json j;
  j["scenario"] = "shared-prefix";
  j["n_threads"] = n;
  j["prefix_tokens"] = prefix_len;
  j["tail_tokens"] = tail_len;
  j["gen_tokens_max"] = gen_len;
  j["prefill_tokens"] = {{"with_sharing", with.prefill_tokens},
                         {"without_sharing", without.prefill_tokens}};
  j["kv_bytes"] = {{"with_sharing", with.peak_blocks * static_cast<int64_t>(block_bytes)},
                   {"without_sharing", without.peak_blocks * static_cast<int64_t>(block_bytes)}};
  j["prefix_hit_tokens"] = with.prefix_hits;
  j["all_first_tokens_s"] = {{"with_sharing", with.wall_s}, {"without_sharing", without.wall_s}};
  j["kv_bytes_note"] =
      "KV blocks in use when every thread has its first token (all N contexts resident) x block "
      "bytes (F16 KV, 16-token blocks)";
  return j;
}

// Save + restore cost of 1k tokens of context, per method, measured on the model's Context and
// the swap store directly (the same calls the engine makes).
Result<json> switch_costs(const ScenarioOptions& o) {
  const int32_t n_tok = 1024;
  const int32_t bs = 16;
  const int32_t n_blocks_seq = n_tok / bs;
  ContextOptions co;
  co.n_kv_blocks = 2 * n_blocks_seq;
  co.kv_block_size = bs;
  co.kv_type = KvType::kF16;
  co.n_threads = o.n_threads;
  co.n_ctx = n_tok + 16;
  co.n_batch = 512;
  LLMT_ASSIGN_OR_RETURN(auto ctx, Context::create(o.model, co));
  std::vector<int32_t> table(n_blocks_seq), table2(n_blocks_seq);
  for (int32_t i = 0; i < n_blocks_seq; ++i) {
    table[i] = i;
    table2[i] = n_blocks_seq + i;
  }
  TokenGen gen = token_gen(*o.model, 3);
  const auto toks = gen.tokens(n_tok, o.model->tokenizer().bos_id());
  std::vector<Context::BatchEntry> entries;
  for (int32_t i = 0; i < n_tok; ++i) entries.push_back({toks[i], 0, i, i == n_tok - 1});
  std::span<const int32_t> t1(table);
  std::vector<std::span<const int32_t>> tabs{t1};
  LLMT_RETURN_IF_ERROR(ctx->decode_paged(entries, tabs));  // warm-up + fills the blocks
  std::vector<double> recompute;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = Clock::now();
    LLMT_RETURN_IF_ERROR(ctx->decode_paged(entries, tabs));
    recompute.push_back(seconds_since(t0) * 1e3);
  }
  auto swap_ms = [&](kv::SwapWhere where, const std::string& dir) -> Result<double> {
    kv::SwapStoreOptions so;
    so.dir = dir;
    so.ram_limit_bytes = where == kv::SwapWhere::kDisk ? 0 : (uint64_t{1} << 33);
    LLMT_ASSIGN_OR_RETURN(auto store, kv::SwapStore::create(so));
    std::vector<double> ms;
    for (int r = 0; r < 4; ++r) {
      std::vector<std::span<const uint8_t>> out;
      std::vector<std::span<uint8_t>> in;
      for (int32_t b : table) out.push_back(ctx->kv_block(b));
      for (int32_t b : table2) in.push_back(ctx->kv_block(b));
      const auto t0 = Clock::now();
      auto p = store->put(1, out, where);
      if (!p.is_ok()) return p.status();
      LLMT_RETURN_IF_ERROR(store->take(1, in));
      if (r > 0) ms.push_back(seconds_since(t0) * 1e3);
    }
    return percentile(ms, 50);
  };
  LLMT_ASSIGN_OR_RETURN(double ram_ms, swap_ms(kv::SwapWhere::kRam, ""));
  std::string dir =
      o.swap_dir.empty()
          ? (std::filesystem::temp_directory_path() / "llmthreads-bench-swap").string()
          : o.swap_dir;
  LLMT_ASSIGN_OR_RETURN(double disk_ms, swap_ms(kv::SwapWhere::kDisk, dir));
  json j = {{"ram", ram_ms}, {"disk", disk_ms}, {"recompute", percentile(recompute, 50)}};
  j["kv_bytes_per_1k_tokens"] = ctx->kv_bytes_per_token() * n_tok;
  return j;
}

// Aggregate generated tokens/s of 4*n threads on a batch of n: (a) KV for all of them, FCFS (no
// thread is ever switched out), (b) round-robin with KV for only about n threads, so every turn
// switches threads out and in.
struct RrRun {
  double tok_s = 0;
  int64_t preempt_ram = 0, preempt_disk = 0, preempt_recompute = 0;
};

Result<RrRun> run_rr(const ScenarioOptions& o, bool oversubscribed, int32_t n, int32_t prompt_len,
                     int32_t gen_len) {
  EngineConfig cfg = base_config(o);
  cfg.sched.max_running = n;
  cfg.sched.policy = oversubscribed ? SchedPolicy::kRoundRobin : SchedPolicy::kFcfs;
  cfg.sched.quantum_tokens = 32;
  if (oversubscribed) {
    const ModelHparams& hp = o.model->hparams();
    const uint64_t per_token = static_cast<uint64_t>(hp.n_layer) * 2 * hp.kv_dim() * 2;
    // n threads at their full length, plus one block each of slack.
    cfg.kv.budget_bytes = per_token * static_cast<uint64_t>(n) * (prompt_len + gen_len + 16);
  }
  LLMT_ASSIGN_OR_RETURN(auto engine, Engine::create(cfg));
  const int32_t bos = o.model->tokenizer().bos_id();
  TokenGen gen = token_gen(*o.model, 11);
  std::vector<ThreadHandle> hs;
  const auto t0 = Clock::now();
  for (int32_t i = 0; i < 4 * n; ++i) {
    LLMT_ASSIGN_OR_RETURN(auto h, engine->submit(request(gen.tokens(prompt_len, bos), gen_len, 0)));
    hs.push_back(h);
  }
  int64_t n_gen = 0;
  for (auto& h : hs) n_gen += static_cast<int64_t>(h.wait().tokens.size());
  RrRun r;
  r.tok_s = static_cast<double>(n_gen) / seconds_since(t0);
  const EngineStats s = engine->stats();
  r.preempt_ram = s.preempt_ram;
  r.preempt_disk = s.preempt_disk;
  r.preempt_recompute = s.preempt_recompute;
  return r;
}

Result<json> scenario_switch(const ScenarioOptions& o) {
  LLMT_ASSIGN_OR_RETURN(json costs, switch_costs(o));
  const int32_t n = o.n_threads_sim > 0 ? o.n_threads_sim : 16;
  const int32_t prompt_len = 64, gen_len = 128;
  // Interleaved repetitions (the host is noisy); medians.
  std::vector<double> base, rr;
  RrRun last_rr;
  for (int rep = 0; rep < o.repetitions; ++rep) {
    LLMT_ASSIGN_OR_RETURN(auto b, run_rr(o, false, n, prompt_len, gen_len));
    LLMT_ASSIGN_OR_RETURN(auto r, run_rr(o, true, n, prompt_len, gen_len));
    base.push_back(b.tok_s);
    rr.push_back(r.tok_s);
    last_rr = r;
  }
  const double b50 = percentile(base, 50), r50 = percentile(rr, 50);
  json j;
  j["scenario"] = "switch";
  j["switch_ms_per_1k_tokens"] = {
      {"ram", costs["ram"]}, {"disk", costs["disk"]}, {"recompute", costs["recompute"]}};
  j["kv_bytes_per_1k_tokens"] = costs["kv_bytes_per_1k_tokens"];
  j["rr_throughput_fraction"] = b50 > 0 ? r50 / b50 : 0.0;
  j["rr"] = {{"threads", 4 * n},
             {"max_running", n},
             {"prompt_tokens", prompt_len},
             {"gen_tokens", gen_len},
             {"quantum_tokens", 32},
             {"tok_s_no_preemption", base},
             {"tok_s_round_robin", rr},
             {"preemptions_last_run",
              {{"ram", last_rr.preempt_ram},
               {"disk", last_rr.preempt_disk},
               {"recompute", last_rr.preempt_recompute}}}};
  return j;
}

// ---- classify-job ----

// The instruction every document shares (about 200 tokens with a GPT-2-style vocabulary).
constexpr const char* kClassifyInstruction =
    "You are a careful annotator of customer and audience reviews. Read the review below and "
    "decide which overall sentiment its author expresses toward the thing being reviewed: a "
    "product, a restaurant or a film.\n\nAnswer with exactly one word:\n- positive: the author is "
    "mainly pleased, recommends it, or would choose it again;\n- negative: the author is mainly "
    "displeased, warns others away, or regrets the choice;\n- neutral: the review only states "
    "facts, or praise and complaints balance out so that no overall verdict is given.\n\nJudge "
    "the author's intent, not the individual words. Sarcasm that praises something in a mocking "
    "tone is negative. Negated phrases such as \"not bad at all\" usually lean positive. Ignore "
    "the length of the review and the spelling mistakes in it. Do not explain your answer.\n\n"
    "Review:\n";

// The classify task of the scenario: the shared instruction, the document, then suffix.
TaskSpec classify_spec(const std::vector<std::string>& labels, const std::string& suffix) {
  TaskSpec spec;
  spec.type = TaskType::kClassify;
  spec.prompt_template = std::string(kClassifyInstruction) + "{text}" + suffix;
  spec.labels = labels;
  return spec;
}

// Short synthetic reviews (deterministic): an order number + subject + verdict + detail.
std::vector<std::string> classify_documents(int32_t n) {
  const char* subjects[] = {"The pasta place on Main Street",
                            "This blender",
                            "The new thriller",
                            "Our hotel room",
                            "The wireless earbuds",
                            "This documentary",
                            "The bakery downtown",
                            "The hiking boots"};
  const char* verdicts[] = {"was wonderful and I would go back tomorrow.",
                            "broke after two days and support never answered.",
                            "was fine, nothing special either way.",
                            "exceeded every expectation we had.",
                            "was a waste of money and time.",
                            "does what the box says and no more."};
  const char* details[] = {"Service was quick.", "The price seemed high.", "Shipping took a week.",
                           "My kids loved it.",  "Parking was easy.",      "The sound was muddy."};
  std::vector<std::string> out;
  for (int32_t i = 0; i < n; ++i) {
    // The order number first, so that documents differ from their first token on and nothing
    // but the instruction is shared (a conservative load for prefix sharing).
    out.push_back("Order " + std::to_string(10000 + i) + ": " + subjects[i % 8] + " " +
                  verdicts[(i / 8) % 6] + " " + details[(i / 48) % 6]);
  }
  return out;
}

// What the job path of classify-job measured.
struct ClassifyJobRun {
  double wall_s = 0.0;
  int64_t prefill = 0, hits = 0, steps = 0;
  std::vector<int32_t> label_counts;
  int64_t n_failed = 0;
};

// classify-job (a): one classify job, every document's label threads scored, the instruction
// shared through the prefix cache.
Result<ClassifyJobRun> run_classify_job(const ScenarioOptions& o,
                                        const std::vector<std::string>& docs,
                                        const std::vector<std::string>& labels,
                                        const std::string& suffix) {
  const int32_t n_docs = static_cast<int32_t>(docs.size());
  ClassifyJobRun out;
  out.label_counts.assign(labels.size(), 0);
  {  // the job goes before out is returned, as its callback writes out
    EngineConfig cfg = base_config(o);
    LLMT_ASSIGN_OR_RETURN(auto engine, Engine::create(cfg));
    TaskSpec spec = classify_spec(labels, suffix);
    std::mutex mu;
    LLMT_ASSIGN_OR_RETURN(
        auto job, Job::create(*engine, spec, [&](DocumentResult r) {
          std::lock_guard<std::mutex> lock(mu);
          if (!r.ok()) {
            ++out.n_failed;
          } else if (r.label >= 0 && r.label < static_cast<int32_t>(labels.size())) {
            ++out.label_counts[r.label];
          }
        }));
    const auto t0 = Clock::now();
    for (int32_t i = 0; i < n_docs; ++i) {
      Document d;
      d.index = static_cast<uint64_t>(i);
      d.text = docs[i];
      LLMT_RETURN_IF_ERROR(job->add(std::move(d)));
    }
    job->wait_idle();
    out.wall_s = seconds_since(t0);
    out.prefill = engine->stats().prefill_tokens;
    out.hits = engine->stats().prefix_hit_tokens;
    out.steps = engine->stats().n_steps;
  }
  return out;
}

// What the naive path of classify-job measured.
struct ClassifyNaiveRun {
  double wall_s = 0.0;
  int64_t prefill = 0, unparsed = 0;
};

// classify-job (b): the first n_naive documents, each an independent generation request with its
// full prompt (no prefix cache), 8 in flight, 8 tokens generated greedily, the label read from
// the text.
Result<ClassifyNaiveRun> run_classify_naive(const ScenarioOptions& o,
                                            const std::vector<std::string>& docs, int32_t n_naive,
                                            const std::vector<std::string>& labels,
                                            const std::string& suffix) {
  ClassifyNaiveRun out;
  EngineConfig cfg = base_config(o);
  cfg.kv.prefix_caching = false;
  cfg.sched.max_running = 8;
  LLMT_ASSIGN_OR_RETURN(auto engine, Engine::create(cfg));
  std::atomic<int32_t> next{0};
  std::atomic<int64_t> unparsed{0};
  std::atomic<bool> failed{false};
  const auto t0 = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&] {
      for (;;) {
        const int32_t i = next.fetch_add(1);
        if (i >= n_naive) return;
        ThreadRequest r;
        r.prompt = std::string(kClassifyInstruction) + docs[i] + suffix;
        r.max_tokens = 8;
        r.ignore_eos = true;
        r.sampling.temperature = 0.0f;
        auto h = engine->submit(std::move(r));
        if (!h.is_ok()) {
          failed = true;
          return;
        }
        const std::string& text = h->wait().text;
        bool found = false;
        for (const auto& lab : labels) found = found || text.find(lab) != std::string::npos;
        if (!found) ++unparsed;
      }
    });
  }
  for (auto& t : clients) t.join();
  if (failed) return Status(StatusCode::kInternal, "classify-job: a naive request failed");
  out.wall_s = seconds_since(t0);
  out.prefill = engine->stats().prefill_tokens;
  out.unparsed = unparsed.load();
  return out;
}

// The merge cost measured by classify-job.
struct MergeCost {
  double doc_ms = 0.0;    // one 20-piece document classified end to end
  double merge_us = 0.0;  // the mean merge of its 20 pieces alone
};

// classify-job's merge cost: one 20-piece document (sentence split) classified end to end, and
// the mean merge of its 20 pieces' probabilities timed alone.
Result<MergeCost> measure_merge_cost(const ScenarioOptions& o, const std::vector<std::string>& docs,
                                     const std::vector<std::string>& labels,
                                     const std::string& suffix) {
  MergeCost out;
  EngineConfig cfg = base_config(o);
  LLMT_ASSIGN_OR_RETURN(auto engine, Engine::create(cfg));
  TaskSpec spec = classify_spec(labels, suffix);
  spec.split = "sentence";
  int32_t n_pieces = 0;
  LLMT_ASSIGN_OR_RETURN(
      auto job, Job::create(*engine, spec, [&](DocumentResult r) { n_pieces = r.n_pieces; }));
  std::string text;
  // Each document is two sentences ("... tomorrow. Service was quick"): 10 make 20 pieces.
  for (int32_t i = 0; i < 10; ++i) text += docs[static_cast<size_t>(i) % docs.size()] + ". ";
  Document d;
  d.text = text;
  const auto t0 = Clock::now();
  LLMT_RETURN_IF_ERROR(job->add(std::move(d)));
  job->wait_idle();
  out.doc_ms = seconds_since(t0) * 1e3;
  if (n_pieces != 20) {
    return Status(StatusCode::kInternal,
                  "classify-job: expected 20 pieces, got " + std::to_string(n_pieces));
  }
  std::vector<tasks::ClassResult> pieces(20);
  for (int32_t i = 0; i < 20; ++i) {
    pieces[i].index = 19 - i;  // completion order differs from document order
    pieces[i].probs = {0.2 + 0.01 * i, 0.5, 0.3 - 0.01 * i};
  }
  constexpr int kReps = 2000;
  const auto t1 = Clock::now();
  double sink = 0.0;
  for (int r = 0; r < kReps; ++r) {
    auto m = tasks::merge_mean(pieces, 20, 3);
    if (m.is_ok()) sink += m->probs[0];
  }
  out.merge_us = seconds_since(t1) * 1e6 / kReps + (sink < 0 ? 1 : 0);
  return out;
}

Result<json> scenario_classify_job(const ScenarioOptions& o) {
  const int32_t n_docs = o.n_threads_sim > 0 ? o.n_threads_sim : 1000;
  const int32_t n_naive = std::min(n_docs, o.n_naive > 0 ? o.n_naive : 200);
  const std::vector<std::string> docs = classify_documents(n_docs);
  const std::vector<std::string> labels = {"positive", "negative", "neutral"};
  const std::string suffix = "\n\nSentiment:";

  // (a) The job path: one classify job, every document's label threads scored, the instruction
  // shared through the prefix cache.
  LLMT_ASSIGN_OR_RETURN(const ClassifyJobRun job, run_classify_job(o, docs, labels, suffix));
  const double job_s = job.wall_s;
  const int64_t job_prefill = job.prefill, job_hits = job.hits, job_steps = job.steps;
  const std::vector<int32_t>& label_counts = job.label_counts;
  const int64_t n_failed = job.n_failed;

  // (b) The naive path: every document an independent generation request with its full prompt
  // (no prefix cache), 8 in flight, 8 tokens generated greedily, the label read from the text.
  LLMT_ASSIGN_OR_RETURN(const ClassifyNaiveRun naive,
                        run_classify_naive(o, docs, n_naive, labels, suffix));
  const double naive_s = naive.wall_s;
  const int64_t naive_prefill = naive.prefill, naive_unparsed = naive.unparsed;
  // Merge cost: one 20-piece document (sentence split) classified end to end, and the mean merge
  // of its 20 pieces' probabilities timed alone (the callback's share of the document's time).
  LLMT_ASSIGN_OR_RETURN(const MergeCost merge, measure_merge_cost(o, docs, labels, suffix));
  const double doc20_ms = merge.doc_ms, merge20_us = merge.merge_us;
  const double job_docs_s = n_docs / job_s;
  const double naive_docs_s = n_naive / naive_s;
  constexpr double kLlamaServerReqS = 10.7;  // ../shared/reference/baseline-llamacpp.md, sec. 6
  json j;
  j["scenario"] = "classify-job";
  j["n_docs"] = n_docs;
  j["docs_s"] = {{"job", job_docs_s}, {"naive", naive_docs_s}};
  j["speedup"] = job_docs_s / naive_docs_s;
  j["vs_llamacpp_server"] = {{"req_s", kLlamaServerReqS}, {"ratio", job_docs_s / kLlamaServerReqS}};
  j["job"] = {
      {"wall_s", job_s},
      {"prefill_tokens", job_prefill},
      {"prefill_tokens_per_doc", static_cast<double>(job_prefill) / n_docs},
      {"prefix_hit_tokens", job_hits},
      {"steps", job_steps},
      {"failed", n_failed},
      {"labels",
       {{labels[0], label_counts[0]}, {labels[1], label_counts[1]}, {labels[2], label_counts[2]}}}};
  j["merge_20_pieces"] = {{"doc_wall_ms", doc20_ms},
                          {"merge_us", merge20_us},
                          {"fraction", merge20_us * 1e-3 / doc20_ms}};
  j["naive"] = {{"n_docs", n_naive}, {"wall_s", naive_s}, {"prefill_tokens", naive_prefill},
                {"in_flight", 8},    {"max_tokens", 8},   {"label_not_found", naive_unparsed}};
  return j;
}

// Constrained-decoding overhead: the same 64 sampled threads with and without a JSON Schema
// grammar (an array that must hold at least 60 objects, so no thread can end before max_tokens).
// Reported: engine step time per run (busy time / steps; medians of interleaved repetitions) and
// the replayed grammar cost per token (mask + accept on the recorded tokens, cache cold and warm).
constexpr const char* kGrammarBenchSchema = R"({"type":"object","properties":{"items":{
  "type":"array","minItems":60,"maxItems":100,"items":{"type":"object","properties":{
  "name":{"type":"string","maxLength":24},"qty":{"type":"integer"},"ok":{"type":"boolean"},
  "tags":{"type":"array","items":{"enum":["red","green","blue"]},"maxItems":4}},
  "required":["name","qty","ok","tags"],"additionalProperties":false}}},
  "required":["items"],"additionalProperties":false})";

struct GrammarRun {
  double step_ms = 0;
  double wall_s = 0;
  int64_t n_steps = 0, n_tokens = 0, n_length = 0;
  std::vector<std::vector<int32_t>> tokens;
};

Result<GrammarRun> run_grammar(const ScenarioOptions& o, std::shared_ptr<const Grammar> grammar,
                               int32_t n, int32_t gen_len) {
  EngineConfig cfg = base_config(o);
  cfg.sched.max_running = n;
  cfg.sched.policy = SchedPolicy::kFcfs;
  cfg.sched.measure_costs = false;
  LLMT_ASSIGN_OR_RETURN(auto engine, Engine::create(cfg));
  const int32_t bos = o.model->tokenizer().bos_id();
  TokenGen gen = token_gen(*o.model, 23);
  std::vector<ThreadHandle> hs;
  const auto t0 = Clock::now();
  for (int32_t i = 0; i < n; ++i) {
    ThreadRequest r = request(gen.tokens(16, bos), gen_len, 0);
    r.sampling.temperature = 1.0f;
    r.sampling.seed = 1000 + static_cast<uint64_t>(i);
    r.grammar = grammar;
    LLMT_ASSIGN_OR_RETURN(auto h, engine->submit(std::move(r)));
    hs.push_back(h);
  }
  GrammarRun run;
  for (auto& h : hs) {
    const ThreadResult& res = h.wait();
    if (res.finish_reason == FinishReason::kError)
      return Status(StatusCode::kInternal, "grammar scenario: a thread failed: " + res.error);
    run.n_tokens += static_cast<int64_t>(res.tokens.size());
    run.n_length += res.finish_reason == FinishReason::kLength ? 1 : 0;
    run.tokens.push_back(res.tokens);
  }
  run.wall_s = seconds_since(t0);
  const EngineStats s = engine->stats();
  run.n_steps = s.n_steps;
  run.step_ms = s.n_steps > 0 ? s.busy_s * 1e3 / static_cast<double>(s.n_steps) : 0.0;
  return run;
}

// Replays recorded tokens through fresh matchers of `grammar`: microseconds per token of
// allowed() + accept() (the engine's per-token grammar work besides the masked draw).
Result<double> replay_us_per_token(const std::shared_ptr<const Grammar>& grammar,
                                   const std::shared_ptr<const TokenVocab>& vocab,
                                   const std::vector<std::vector<int32_t>>& tokens) {
  int64_t n = 0;
  const auto t0 = Clock::now();
  for (const auto& seq : tokens) {
    LLMT_ASSIGN_OR_RETURN(auto m, GrammarMatcher::create(grammar, vocab));
    for (int32_t t : seq) {
      LLMT_ASSIGN_OR_RETURN(auto mask, m.allowed());
      (void)mask;
      LLMT_RETURN_IF_ERROR(m.accept(t));
      ++n;
    }
  }
  return n > 0 ? seconds_since(t0) * 1e6 / static_cast<double>(n) : 0.0;
}

// Microseconds per draw of the default chain (temperature 1) on random logits: unconstrained,
// and masked by the states the recorded outputs pass through.
Result<std::pair<double, double>> draw_us(const std::shared_ptr<const Grammar>& grammar,
                                          const std::shared_ptr<const TokenVocab>& vocab,
                                          const std::vector<std::vector<int32_t>>& tokens) {
  std::vector<std::vector<uint64_t>> masks;
  for (size_t i = 0; i < tokens.size() && i < 4; ++i) {
    LLMT_ASSIGN_OR_RETURN(auto m, GrammarMatcher::create(grammar, vocab));
    for (int32_t t : tokens[i]) {
      LLMT_ASSIGN_OR_RETURN(auto mask, m.allowed());
      masks.emplace_back(mask.begin(), mask.end());
      LLMT_RETURN_IF_ERROR(m.accept(t));
    }
  }
  if (masks.empty()) return std::make_pair(0.0, 0.0);
  SamplingParams sp;
  sp.temperature = 1.0f;
  Sampler plain(sp, vocab->n_vocab()), masked(sp, vocab->n_vocab());
  std::vector<float> logits(static_cast<size_t>(vocab->n_vocab()));
  uint64_t x = 88172645463325252ull;
  for (float& v : logits) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    v = static_cast<float>(x % 20000) / 1000.0f;  // [0, 20)
  }
  int64_t sink = 0;
  auto t0 = Clock::now();
  for (size_t i = 0; i < masks.size(); ++i) sink += plain.sample(logits);
  const double plain_us = seconds_since(t0) * 1e6 / static_cast<double>(masks.size());
  t0 = Clock::now();
  for (const auto& m : masks) sink += masked.sample(logits, m);
  const double masked_us = seconds_since(t0) * 1e6 / static_cast<double>(masks.size());
  if (sink == -1) std::fprintf(stderr, " ");  // keeps the draws
  return std::make_pair(plain_us, masked_us);
}

Result<json> scenario_grammar(const ScenarioOptions& o) {
  const int32_t n = o.n_threads_sim > 0 ? o.n_threads_sim : 64;
  const int32_t gen_len = 96;
  std::vector<double> plain_ms, grammar_ms;
  GrammarRun last;
  for (int rep = 0; rep < o.repetitions; ++rep) {
    // A fresh grammar per repetition: its automaton and mask cache start cold each time.
    LLMT_ASSIGN_OR_RETURN(auto grammar, Grammar::from_json_schema(kGrammarBenchSchema));
    LLMT_ASSIGN_OR_RETURN(auto p, run_grammar(o, nullptr, n, gen_len));
    LLMT_ASSIGN_OR_RETURN(auto g, run_grammar(o, grammar, n, gen_len));
    plain_ms.push_back(p.step_ms);
    grammar_ms.push_back(g.step_ms);
    last = std::move(g);
  }
  auto vocab = TokenVocab::from_tokenizer(o.model->tokenizer());
  LLMT_ASSIGN_OR_RETURN(auto cold_grammar, Grammar::from_json_schema(kGrammarBenchSchema));
  LLMT_ASSIGN_OR_RETURN(double cold_us, replay_us_per_token(cold_grammar, vocab, last.tokens));
  LLMT_ASSIGN_OR_RETURN(double warm_us, replay_us_per_token(cold_grammar, vocab, last.tokens));
  LLMT_ASSIGN_OR_RETURN(auto draw, draw_us(cold_grammar, vocab, last.tokens));
  const double p50 = percentile(plain_ms, 50), g50 = percentile(grammar_ms, 50);
  json j;
  j["scenario"] = "grammar";
  j["llm_threads"] = n;
  j["max_tokens"] = gen_len;
  j["step_ms"] = {
      {"plain_p50", p50}, {"grammar_p50", g50}, {"plain", plain_ms}, {"grammar", grammar_ms}};
  j["overhead_fraction"] = p50 > 0 ? (g50 - p50) / p50 : 0.0;
  // Grammar work of one step (n threads) relative to the unconstrained step.
  j["replay_us_per_token"] = {{"cold", cold_us}, {"warm", warm_us}};
  j["replay_fraction_of_step"] = {{"cold", p50 > 0 ? cold_us * n / 1e3 / p50 : 0.0},
                                  {"warm", p50 > 0 ? warm_us * n / 1e3 / p50 : 0.0}};
  // The draw itself: the default sampling chain on random logits, unconstrained vs masked by
  // the grammar states of the recorded outputs.
  j["draw_us"] = {{"plain", draw.first}, {"masked", draw.second}};
  j["grammar_run"] = {{"tokens", last.n_tokens},
                      {"steps", last.n_steps},
                      {"finished_by_length", last.n_length},
                      {"wall_s", last.wall_s}};
  j["n_vocab"] = vocab->n_vocab();
  j["trie_nodes"] = vocab->n_nodes();
  return j;
}

}  // namespace

Result<nlohmann::ordered_json> run_scenario(const std::string& name, const ScenarioOptions& o) {
  if (name == "priority") return scenario_priority(o);
  if (name == "shared-prefix") return scenario_shared_prefix(o);
  if (name == "switch") return scenario_switch(o);
  if (name == "classify-job") return scenario_classify_job(o);
  if (name == "grammar") return scenario_grammar(o);
  return invalid_argument("unknown scenario '" + name +
                          "' (known: priority, shared-prefix, switch, classify-job, grammar)");
}

}  // namespace llmt::bench
