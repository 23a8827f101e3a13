// The engine's insides, shared by engine.cpp (the public API: create, submit, cancel, stats,
// ThreadHandle) and engine-loop.cpp (the loop thread: inbox, steps, events). Internal to
// src/engine.
//
// Thread-safety: Engine::Impl's "loop-owned" fields are touched only by the loop thread; the
// inbox, the event channels and the counters are lock-free (see engine.cpp).
#pragma once

#include "llmthreads/engine.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <unordered_map>

#include "engine/channel.h"
#include "kv/kv-manager.h"
#include "kv/swap-store.h"
#include "llmthreads/tokenizer.h"
#include "sched/scheduler.h"

namespace llmt {

namespace engine {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// What the loop keeps per live thread.
struct Live {
  ThreadId id = 0;
  std::shared_ptr<ThreadHandle::State> state;
  ThreadRequest req;  // prompt fields moved out; stop strings, callback
  std::vector<int32_t> prompt;
  Clock::time_point submitted;
  std::optional<Sampler> sampler;
  std::optional<StreamDecoder> decoder;
  std::optional<GrammarMatcher> grammar;  // ThreadRequest::grammar's state
  std::string grammar_error;              // set when the grammar can no longer be satisfied
  std::string held;                       // decoded text not yet emitted (may start a stop string)
  ThreadResult result;
  bool started = false;  // a chunk of it was computed
  // Scoring: positions [score_from, score_from + n_score) are the ones whose logits predict
  // the score tokens (score_from = n_prompt - 1).
  int32_t score_from = -1;
  int32_t n_score = 0;
  size_t max_stop_len = 0;
  // Embedding threads of a decoder model: the sum (double, position order) of the final hidden
  // states of positions [0, embd_next); a recomputed position is not added twice.
  std::vector<double> embd_sum;
  int32_t embd_next = 0;
  // ThreadRequest::logprobs >= 0: the logprobs of the token sampled this step, until on_token()
  // moves them into the event and the result.
  std::optional<TokenLogprobs> next_logprob;
};

struct Command {
  enum class Kind { kNone, kSubmit, kCancel, kShutdown };
  Kind kind = Kind::kNone;
  ThreadId id = 0;
  std::unique_ptr<Live> live;
};

// Published stats, written by the loop once per step (relaxed), read by stats().
struct AtomicStats {
  std::atomic<int64_t> n_waiting{0}, n_running{0}, n_swapped{0};
  std::atomic<int64_t> n_submitted{0}, n_finished{0}, n_cancelled{0}, n_steps{0};
  std::atomic<int64_t> prompt_tokens{0}, prefill_tokens{0}, generated_tokens{0},
      prefix_hit_tokens{0};
  std::atomic<int64_t> kv_used{0}, kv_cached{0}, kv_free{0}, kv_used_peak{0};
  std::atomic<int64_t> kv_win_used{0}, kv_win_used_peak{0};
  std::atomic<int64_t> preempt_ram{0}, preempt_disk{0}, preempt_recompute{0}, swap_failures{0};
  std::atomic<int64_t> swap_bytes_ram{0}, swap_bytes_disk{0}, swap_bytes_out{0};
  std::atomic<int64_t> busy_ns{0};
  // The message of the latest failed swap put/take (EngineStats::swap_last_error).
  mutable std::mutex swap_error_mu;
  std::string swap_last_error;  // guarded by swap_error_mu
  void set_swap_error(const Status& s) {
    std::lock_guard<std::mutex> lock(swap_error_mu);
    swap_last_error = s.message();
  }
};

inline void set(std::atomic<int64_t>& a, int64_t v) {
  a.store(v, std::memory_order_relaxed);
}

}  // namespace engine

using engine::AtomicStats;
using engine::Clock;
using engine::Command;
using engine::Live;
using engine::seconds_since;
using engine::set;

struct ThreadHandle::State {
  ThreadId id = 0;
  engine::MpscQueue<ThreadEvent> events;
  // Bumped after every push and at finish: the futex word next()/wait() sleep on.
  std::atomic<uint32_t> seq{0};
  std::atomic<bool> finished{false};
  bool final_returned = false;  // consumer side (next())
  ThreadResult result;          // written by the loop before `finished` is set

  void notify() {
    seq.fetch_add(1, std::memory_order_release);
    engine::futex_wake_all(&seq);
  }
};

struct Engine::Impl {
  EngineConfig cfg;
  std::shared_ptr<const Model> model;
  const Tokenizer* tok = nullptr;
  std::unique_ptr<Context> ctx;
  std::unique_ptr<kv::KvManager> kvm;
  std::unique_ptr<sched::Scheduler> sched;
  std::unique_ptr<kv::SwapStore> swap;
  std::shared_ptr<const TokenVocab> grammar_vocab;  // built at the first grammar thread
  int32_t n_vocab = 0;
  int32_t n_ctx = 0;
  int32_t n_blocks = 0;
  int32_t n_window_slots = 0;  // sliding-window layers' K/V apart in this many slots (0: not)
  size_t bytes_per_token = 0;

  engine::MpscQueue<Command> inbox;
  alignas(64) std::atomic<uint32_t> inbox_seq{0};
  alignas(64) std::atomic<uint64_t> next_id{1};
  std::atomic<int64_t> n_live{0};  // submitted, not finished (for max_queue)
  AtomicStats st;
  std::thread loop_thread;
  Clock::time_point t0 = Clock::now();

  // Loop-owned.
  std::unordered_map<ThreadId, std::unique_ptr<Live>> live;
  std::vector<Context::BatchEntry> batch;
  std::vector<std::span<const int32_t>> tables;
  // With window slots: per table, its blocks' window slots (kv::KvManager::window_slots()).
  std::vector<std::vector<int32_t>> win_store;
  std::vector<std::span<const int32_t>> win_tables;
  std::vector<int32_t> logit_row;                      // per chunk: row in batch_logits, or -1
  std::vector<std::pair<size_t, int32_t>> score_rows;  // scoring chunks: (chunk, first row)
  std::vector<std::pair<size_t, int32_t>> embd_rows;   // embedding chunks: (chunk, first row)
  // Encoder models (no scheduler: every thread is an embedding thread, run whole in one pass).
  bool encoder = false;
  int32_t encoder_max_tokens = 0;  // tokens one embedding thread may have
  int64_t encoded_tokens = 0;      // tokens run by encoder passes (counted as prefill)
  std::vector<Live*> encode_pick;
  std::vector<std::span<const int32_t>> encode_seqs;
  std::vector<std::vector<float>> encode_out;
  std::vector<ThreadId> finished_now;
  bool stopping = false;

  double now() const { return seconds_since(t0); }
  void post(Command c) {
    inbox.push(std::move(c));
    inbox_seq.fetch_add(1, std::memory_order_release);
    engine::futex_wake_all(&inbox_seq);
  }

  void run_loop();
  bool drain_inbox();
  void admit(std::unique_ptr<Live> l);
  void finish(Live& l, FinishReason reason, std::string error = {});
  void emit(Live& l, ThreadEvent ev);
  void step();
  // The parts of a step (engine-loop.cpp).
  void expire_deadlines();
  void move_blocks(const sched::StepPlan& plan, sched::StepResult* result);
  void build_batch(const sched::StepPlan& plan, const sched::StepResult& result);
  bool forward(const sched::StepPlan& plan);
  void sample_and_score(const sched::StepPlan& plan, sched::StepResult* result);
  void end_threads(const sched::StepPlan& plan, const sched::StepResult& result);
  // Encoder models: one pass over the waiting embedding threads (priority, then arrival) that fit
  // the pass; they all finish.
  void encode_step();
  // Handles one sampled token; true when the thread is done.
  bool on_token(Live& l, int32_t token);
  void publish_stats();
  Status measure_costs(sched::EvictionCosts* costs);
};

}  // namespace llmt
