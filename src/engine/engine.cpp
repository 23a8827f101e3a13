// Engine: the loop thread that owns the model Context (paged KV), the KvManager, the Scheduler,
// the swap store and every live thread's sampler and detokenizer.
//
// One loop iteration (a "step"):
//   1. drain the inbox (new threads, cancels); finish threads past their deadline;
//   2. plan = scheduler.schedule(now);
//   3. swap-outs (block bytes -> swap store), block copies, swap-ins (store -> new blocks);
//   4. one Context::decode_paged() over the plan's chunks;
//   5. sample the threads whose chunk reached their last token, detokenize, match stop strings,
//      push events; scheduler.complete(); remove finished threads.
// Nothing in it takes a mutex: the inbox and the event channels are lock-free queues, and stats
// are published through relaxed atomics once per step.
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

void futex_wait_for(std::atomic<uint32_t>* word, uint32_t expected,
                    std::chrono::nanoseconds timeout) {
  if (timeout.count() <= 0) return;
  timespec ts;
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, &ts,
          nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

}  // namespace engine

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The engine's one log-softmax over a row of logits (the full vocabulary), used by scoring
// threads and by generated-token logprobs: log P(i) = logits[i] - max - log_sum, in double.
struct LogSoftmax {
  double max = -INFINITY;
  double log_sum = 0.0;
  float logprob(float logit) const {
    return static_cast<float>(static_cast<double>(logit) - max - log_sum);
  }
};

// log_sum for a row whose maximum is known.
LogSoftmax log_softmax_with_max(std::span<const float> logits, double mx) {
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  return LogSoftmax{mx, std::log(sum)};
}

LogSoftmax log_softmax(std::span<const float> logits) {
  double mx = -INFINITY;
  for (float v : logits) mx = std::max<double>(mx, v);
  return log_softmax_with_max(logits, mx);
}

// Strict total order of alternatives: higher logit first, then lower id (NaN never ranks first).
bool ranks_before(float la, int32_t ia, float lb, int32_t ib) {
  return la > lb || (la == lb && ia < ib);
}

// Fills *out for the sampled `token` of a row of raw logits: its log-probability and the n_top
// most likely tokens (logprob descending, id ascending). One pass finds the maximum and the top
// n_top (insertion into a sorted list of at most n_top entries), a second sums the exponentials.
void token_logprobs(std::span<const float> logits, int32_t token, int32_t n_top,
                    TokenLogprobs* out) {
  const int32_t n = std::min<int32_t>(n_top, static_cast<int32_t>(logits.size()));
  out->token = token;
  out->top.clear();
  out->top.reserve(static_cast<size_t>(std::max(n, 0)));
  std::vector<TokenLogprob>& top = out->top;
  double mx = -INFINITY;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    mx = std::max<double>(mx, v);
    if (n <= 0) continue;
    const int32_t id = static_cast<int32_t>(i);
    if (static_cast<int32_t>(top.size()) == n &&
        !ranks_before(v, id, top.back().logprob, top.back().token)) {
      continue;
    }
    if (static_cast<int32_t>(top.size()) == n) top.pop_back();
    size_t at = top.size();
    while (at > 0 && ranks_before(v, id, top[at - 1].logprob, top[at - 1].token)) --at;
    top.insert(top.begin() + static_cast<std::ptrdiff_t>(at), TokenLogprob{id, v});
  }
  const LogSoftmax ls = log_softmax_with_max(logits, mx);
  for (TokenLogprob& t : top) t.logprob = ls.logprob(t.logprob);  // logit -> logprob
  out->logprob = token >= 0 && static_cast<size_t>(token) < logits.size()
                     ? ls.logprob(logits[static_cast<size_t>(token)])
                     : -INFINITY;
}

}  // namespace

const char* sched_policy_name(SchedPolicy p) {
  switch (p) {
    case SchedPolicy::kFcfs: return "fcfs";
    case SchedPolicy::kPriority: return "priority";
    case SchedPolicy::kRoundRobin: return "round-robin";
    case SchedPolicy::kFairShare: return "fair-share";
  }
  return "?";
}

Result<SchedPolicy> parse_sched_policy(const std::string& name) {
  for (SchedPolicy p : {SchedPolicy::kFcfs, SchedPolicy::kPriority, SchedPolicy::kRoundRobin,
                        SchedPolicy::kFairShare}) {
    if (name == sched_policy_name(p)) return p;
  }
  return invalid_argument("unknown scheduling policy '" + name +
                          "' (expected fcfs, priority, round-robin or fair-share)");
}

const char* eviction_method_name(EvictionMethod m) {
  switch (m) {
    case EvictionMethod::kAuto: return "auto";
    case EvictionMethod::kSwapRam: return "ram";
    case EvictionMethod::kSwapDisk: return "disk";
    case EvictionMethod::kRecompute: return "recompute";
  }
  return "?";
}

Result<EvictionMethod> parse_eviction_method(const std::string& name) {
  for (EvictionMethod m : {EvictionMethod::kAuto, EvictionMethod::kSwapRam,
                           EvictionMethod::kSwapDisk, EvictionMethod::kRecompute}) {
    if (name == eviction_method_name(m)) return m;
  }
  return invalid_argument("unknown eviction method '" + name +
                          "' (expected auto, ram, disk or recompute)");
}

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kDeadline: return "deadline";
    case FinishReason::kError: return "error";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// ThreadHandle

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

ThreadId ThreadHandle::id() const { return state_ ? state_->id : 0; }

bool ThreadHandle::done() const {
  return state_ && state_->finished.load(std::memory_order_acquire);
}

std::optional<ThreadEvent> ThreadHandle::next(std::chrono::milliseconds timeout) {
  if (!state_ || state_->final_returned) return std::nullopt;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const uint32_t seen = state_->seq.load(std::memory_order_acquire);
    if (auto ev = state_->events.pop()) {
      if (ev->kind == ThreadEvent::Kind::kFinished) state_->final_returned = true;
      return ev;
    }
    const auto left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) return std::nullopt;
    engine::futex_wait_for(&state_->seq, seen, left);
  }
}

const ThreadResult* ThreadHandle::wait_for(std::chrono::milliseconds timeout) const {
  if (!state_) return nullptr;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const uint32_t seen = state_->seq.load(std::memory_order_acquire);
    if (state_->finished.load(std::memory_order_acquire)) return &state_->result;
    const auto left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) return nullptr;
    engine::futex_wait_for(&state_->seq, seen, left);
  }
}

const ThreadResult& ThreadHandle::wait() const {
  static const ThreadResult kEmpty{};
  if (!state_) return kEmpty;
  for (;;) {
    if (const ThreadResult* r = wait_for(std::chrono::hours(24))) return *r;
  }
}

// ---------------------------------------------------------------------------------------------
// Engine

namespace {

// What the loop keeps per live thread.
struct Live {
  ThreadId id = 0;
  std::shared_ptr<ThreadHandle::State> state;
  ThreadRequest req;  // prompt fields moved out; stop strings, callback
  std::vector<int32_t> prompt;
  Clock::time_point submitted;
  std::optional<Sampler> sampler;
  std::optional<StreamDecoder> decoder;
  std::string held;  // decoded text not yet emitted (may start a stop string)
  ThreadResult result;
  bool started = false;  // a chunk of it was computed
  // Scoring: positions [score_from, score_from + n_score) are the ones whose logits predict
  // the score tokens (score_from = n_prompt - 1).
  int32_t score_from = -1;
  int32_t n_score = 0;
  size_t max_stop_len = 0;
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
  std::atomic<int64_t> preempt_ram{0}, preempt_disk{0}, preempt_recompute{0}, swap_failures{0};
  std::atomic<int64_t> swap_bytes_ram{0}, swap_bytes_disk{0}, swap_bytes_out{0};
  std::atomic<int64_t> busy_ns{0};
};

void set(std::atomic<int64_t>& a, int64_t v) { a.store(v, std::memory_order_relaxed); }

}  // namespace

struct Engine::Impl {
  EngineConfig cfg;
  std::shared_ptr<const Model> model;
  const Tokenizer* tok = nullptr;
  std::unique_ptr<Context> ctx;
  std::unique_ptr<kv::KvManager> kvm;
  std::unique_ptr<sched::Scheduler> sched;
  std::unique_ptr<kv::SwapStore> swap;
  int32_t n_vocab = 0;
  int32_t n_ctx = 0;
  int32_t n_blocks = 0;
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
  std::vector<int32_t> logit_row;  // per chunk: row in batch_logits, or -1
  std::vector<std::pair<size_t, int32_t>> score_rows;  // scoring chunks: (chunk, first row)
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
  // Handles one sampled token; true when the thread is done.
  bool on_token(Live& l, int32_t token);
  void publish_stats();
  Status measure_costs(sched::EvictionCosts* costs);
};

void Engine::Impl::emit(Live& l, ThreadEvent ev) {
  if (l.req.on_event) {
    l.req.on_event(ev);
  } else {
    l.state->events.push(std::move(ev));
    l.state->notify();
  }
}

void Engine::Impl::finish(Live& l, FinishReason reason, std::string error) {
  if (l.decoder && reason != FinishReason::kStop) {
    l.held += l.decoder->flush();
  } else if (l.decoder && l.result.stop_matched.empty()) {
    l.held += l.decoder->flush();
  }
  if (!l.held.empty()) {
    l.result.text += l.held;
    ThreadEvent ev;
    ev.kind = ThreadEvent::Kind::kToken;
    ev.id = l.id;
    ev.token = -1;
    ev.text = std::move(l.held);
    l.held.clear();
    emit(l, std::move(ev));
  }
  l.result.id = l.id;
  l.result.finish_reason = reason;
  l.result.error = std::move(error);
  l.result.usage.prompt_tokens = static_cast<int32_t>(l.prompt.size());
  l.result.usage.completion_tokens = static_cast<int32_t>(l.result.tokens.size());
  l.result.timings.total_s = seconds_since(l.submitted);
  // Counters first: a caller woken by `finished` sees them updated.
  st.n_finished.fetch_add(1, std::memory_order_relaxed);
  if (reason == FinishReason::kCancelled) st.n_cancelled.fetch_add(1, std::memory_order_relaxed);
  n_live.fetch_sub(1, std::memory_order_relaxed);
  auto shared = std::make_shared<const ThreadResult>(l.result);
  l.state->result = l.result;
  l.state->finished.store(true, std::memory_order_release);
  ThreadEvent ev;
  ev.kind = ThreadEvent::Kind::kFinished;
  ev.id = l.id;
  ev.result = std::move(shared);
  emit(l, std::move(ev));
  l.state->notify();
}

void Engine::Impl::admit(std::unique_ptr<Live> l) {
  sched::ThreadSpec spec;
  spec.id = l->id;
  spec.prompt = l->prompt;
  spec.max_tokens = static_cast<int32_t>(l->prompt.size()) + l->req.max_tokens;
  if (l->n_score > 0) {
    spec.prompt.insert(spec.prompt.end(), l->req.score_tokens.begin(), l->req.score_tokens.end());
    spec.max_tokens = static_cast<int32_t>(spec.prompt.size()) + 1;  // never generates
    spec.n_match_max = l->score_from + 1;
  }
  spec.priority = l->req.priority;
  spec.tenant = l->req.tenant;
  spec.arrival_s = std::chrono::duration<double>(l->submitted - t0).count();
  Status s = sched->add(std::move(spec));
  if (!s.is_ok()) {
    finish(*l, FinishReason::kError, s.message());
    return;
  }
  for (int32_t t : l->prompt) l->sampler->accept(t);
  live.emplace(l->id, std::move(l));
}

bool Engine::Impl::drain_inbox() {
  bool any = false;
  while (auto c = inbox.pop()) {
    any = true;
    switch (c->kind) {
      case Command::Kind::kSubmit:
        if (stopping) {
          finish(*c->live, FinishReason::kCancelled);
        } else {
          admit(std::move(c->live));
        }
        break;
      case Command::Kind::kCancel: {
        auto it = live.find(c->id);
        if (it == live.end()) break;
        auto ph = sched->remove(c->id);
        if (ph.is_ok() && *ph == sched::Phase::kSwapped && swap) swap->erase(c->id);
        finish(*it->second, FinishReason::kCancelled);
        live.erase(it);
        break;
      }
      case Command::Kind::kShutdown:
        stopping = true;
        break;
      case Command::Kind::kNone:
        break;
    }
  }
  return any;
}

bool Engine::Impl::on_token(Live& l, int32_t token) {
  l.result.tokens.push_back(token);
  l.sampler->accept(token);
  if (l.result.tokens.size() == 1) l.result.timings.ttft_s = seconds_since(l.submitted);
  const bool eog = !l.req.ignore_eos && tok->is_eog(token);
  const bool stop_tok = std::find(l.req.stop_tokens.begin(), l.req.stop_tokens.end(), token) !=
                        l.req.stop_tokens.end();
  ThreadEvent ev;
  ev.kind = ThreadEvent::Kind::kToken;
  ev.id = l.id;
  ev.token = token;
  if (l.next_logprob) {
    l.result.logprobs.push_back(*l.next_logprob);
    ev.logprob = std::move(l.next_logprob);
    l.next_logprob.reset();
  }
  if (eog || stop_tok) {
    l.result.stop_matched = tok->token_to_piece(token, true);
    emit(l, std::move(ev));
    l.held += l.decoder->flush();
    finish(l, FinishReason::kStop);
    return true;
  }
  l.held += l.decoder->push(token);
  // Stop strings: cut at the earliest match; otherwise hold back the longest tail of `held` that
  // could still grow into a stop string.
  if (!l.req.stop.empty()) {
    size_t best = std::string::npos;
    const std::string* matched = nullptr;
    for (const std::string& s : l.req.stop) {
      const size_t p = l.held.find(s);
      if (p != std::string::npos && p < best) {
        best = p;
        matched = &s;
      }
    }
    if (matched) {
      l.result.stop_matched = *matched;
      ev.text = l.held.substr(0, best);
      l.result.text += ev.text;
      l.held.clear();
      emit(l, std::move(ev));
      finish(l, FinishReason::kStop);
      return true;
    }
    size_t keep = 0;
    const size_t max_keep = std::min(l.held.size(), l.max_stop_len - 1);
    for (size_t k = max_keep; k > 0; --k) {
      const std::string_view tail(l.held.data() + l.held.size() - k, k);
      bool prefix = false;
      for (const std::string& s : l.req.stop) {
        if (s.size() > k && std::string_view(s).substr(0, k) == tail) {
          prefix = true;
          break;
        }
      }
      if (prefix) {
        keep = k;
        break;
      }
    }
    ev.text = l.held.substr(0, l.held.size() - keep);
    l.held.erase(0, l.held.size() - keep);
  } else {
    ev.text = std::move(l.held);
    l.held.clear();
  }
  l.result.text += ev.text;
  emit(l, std::move(ev));
  const int32_t n_pos = static_cast<int32_t>(l.prompt.size() + l.result.tokens.size());
  if (static_cast<int32_t>(l.result.tokens.size()) >= l.req.max_tokens || n_pos >= n_ctx) {
    finish(l, FinishReason::kLength);
    return true;
  }
  return false;
}

void Engine::Impl::step() {
  const double t_plan = now();
  // Deadlines.
  finished_now.clear();
  for (auto& [id, l] : live) {
    if (l->req.deadline_s > 0 && seconds_since(l->submitted) >= l->req.deadline_s) {
      finished_now.push_back(id);
    }
  }
  for (ThreadId id : finished_now) {
    auto it = live.find(id);
    auto ph = sched->remove(id);
    if (ph.is_ok() && *ph == sched::Phase::kSwapped && swap) swap->erase(id);
    finish(*it->second, FinishReason::kDeadline);
    live.erase(it);
  }
  if (sched->idle()) return;

  const Clock::time_point t_start = Clock::now();
  const sched::StepPlan& plan = sched->schedule(t_plan);
  sched::StepResult result;
  {
    const int64_t used = kvm->stats().n_used;
    if (used > st.kv_used_peak.load(std::memory_order_relaxed)) set(st.kv_used_peak, used);
  }

  // 1. Swap-outs. Their blocks are released but untouched until the forward pass.
  for (const sched::SwapOut& so : plan.swap_out) {
    auto it = live.find(so.id);
    if (it != live.end()) ++it->second->result.timings.n_preemptions;
    std::vector<std::span<const uint8_t>> parts;
    parts.reserve(so.blocks.size());
    for (int32_t b : so.blocks) parts.push_back(ctx->kv_block(b));
    const kv::SwapWhere where =
        so.method == sched::Eviction::kSwapDisk ? kv::SwapWhere::kDisk : kv::SwapWhere::kRam;
    auto r = swap ? swap->put(so.id, parts, where)
                  : Result<kv::SwapWhere>(Status(StatusCode::kOutOfMemory, "no swap store"));
    if (!r.is_ok()) {
      result.swap_failed.push_back(so.id);
      st.swap_failures.fetch_add(1, std::memory_order_relaxed);
    } else {
      st.swap_bytes_out.fetch_add(static_cast<int64_t>(parts.size() * ctx->kv_block_bytes()),
                                  std::memory_order_relaxed);
    }
  }
  for (ThreadId id : plan.dropped) {
    auto it = live.find(id);
    if (it != live.end()) ++it->second->result.timings.n_preemptions;
  }
  // 2. Block copies (partial prefix blocks, copy-on-write): before any block is written.
  for (const kv::BlockCopy& c : plan.copies) {
    auto src = ctx->kv_block(c.src);
    auto dst = ctx->kv_block(c.dst);
    std::memcpy(dst.data(), src.data(), src.size());
  }
  // 3. Swap-ins.
  for (const sched::SwapIn& si : plan.swap_in) {
    if (std::find(result.swap_failed.begin(), result.swap_failed.end(), si.id) !=
        result.swap_failed.end()) {
      continue;
    }
    std::vector<std::span<uint8_t>> parts;
    parts.reserve(si.blocks.size());
    for (int32_t b : si.blocks) parts.push_back(ctx->kv_block(b));
    Status s = swap ? swap->take(si.id, parts) : Status(StatusCode::kNotFound, "no swap store");
    if (!s.is_ok()) {
      result.swap_failed.push_back(si.id);
      st.swap_failures.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // 4. One forward pass.
  batch.clear();
  tables.clear();
  logit_row.assign(plan.chunks.size(), -1);
  score_rows.clear();
  int32_t n_rows = 0;
  for (size_t ci = 0; ci < plan.chunks.size(); ++ci) {
    const sched::Chunk& ch = plan.chunks[ci];
    if (!result.swap_failed.empty() &&
        std::find(result.swap_failed.begin(), result.swap_failed.end(), ch.id) !=
            result.swap_failed.end()) {
      continue;
    }
    const auto toks = sched->tokens(ch.id);
    const int32_t seq = static_cast<int32_t>(tables.size());
    tables.push_back(sched->table(ch.id));
    auto it = live.find(ch.id);
    Live* lp = it != live.end() ? it->second.get() : nullptr;
    if (lp && lp->n_score > 0) {
      // Scoring: logits where they predict a score token; none for sampling.
      const int32_t lo = lp->score_from, hi = lp->score_from + lp->n_score;
      score_rows.push_back({ci, n_rows});
      for (int32_t i = 0; i < ch.n_tokens; ++i) {
        const int32_t pos = ch.pos0 + i;
        const bool want = pos >= lo && pos < hi;
        batch.push_back(Context::BatchEntry{toks[pos], seq, pos, want});
        n_rows += want ? 1 : 0;
      }
    } else {
      for (int32_t i = 0; i < ch.n_tokens; ++i) {
        const int32_t pos = ch.pos0 + i;
        const bool last = i == ch.n_tokens - 1;
        batch.push_back(Context::BatchEntry{toks[pos], seq, pos, last && ch.sample});
      }
      if (ch.sample) logit_row[ci] = n_rows++;
    }
    if (it != live.end() && !it->second->started) {
      Live& l = *it->second;
      l.started = true;
      l.result.timings.queue_s = seconds_since(l.submitted);
      l.result.usage.cached_tokens = ch.pos0;
    }
  }
  if (!batch.empty()) {
    Status s = ctx->decode_paged(batch, tables);
    if (!s.is_ok()) {
      // A bug (the plan is validated by construction): fail the threads of this step.
      for (const sched::Chunk& ch : plan.chunks) {
        auto it = live.find(ch.id);
        if (it == live.end()) continue;
        (void)sched->remove(ch.id);
        finish(*it->second, FinishReason::kError, "engine step failed: " + s.to_string());
        live.erase(it);
      }
      sched->complete(result, now());
      return;
    }
  }
  // 5. Sample.
  for (size_t ci = 0; ci < plan.chunks.size(); ++ci) {
    if (logit_row[ci] < 0) continue;
    const sched::Chunk& ch = plan.chunks[ci];
    auto it = live.find(ch.id);
    if (it == live.end()) continue;
    Live& l = *it->second;
    const auto logits = ctx->batch_logits(logit_row[ci]);
    const int32_t token = l.sampler->sample(logits);  // reads the raw logits, does not change them
    if (l.req.logprobs >= 0)
      token_logprobs(logits, token, l.req.logprobs, &l.next_logprob.emplace());
    result.sampled.push_back({ch.id, token});
  }
  // Scoring chunks: log-probabilities of the score tokens their rows predict.
  for (const auto& [ci, row0] : score_rows) {
    const sched::Chunk& ch = plan.chunks[ci];
    auto it = live.find(ch.id);
    if (it == live.end()) continue;
    Live& l = *it->second;
    const auto toks = sched->tokens(ch.id);
    int32_t row = row0;
    for (int32_t i = 0; i < ch.n_tokens; ++i) {
      const int32_t pos = ch.pos0 + i;
      if (pos < l.score_from || pos >= l.score_from + l.n_score) continue;
      const auto logits = ctx->batch_logits(row++);
      const int32_t next = toks[pos + 1];
      l.result.score_logprobs[pos - l.score_from] = log_softmax(logits).logprob(logits[next]);
    }
  }
  sched->complete(result, now());
  // Scoring threads whose last chunk ran are done.
  for (const auto& [ci, row0] : score_rows) {
    const sched::Chunk& ch = plan.chunks[ci];
    if (!ch.sample) continue;
    auto it = live.find(ch.id);
    if (it == live.end()) continue;
    Live& l = *it->second;
    double total = 0.0;
    for (float v : l.result.score_logprobs) total += v;
    l.result.score_logprob = total;
    (void)sched->remove(ch.id);
    finish(l, FinishReason::kStop);
    live.erase(it);
  }
  st.generated_tokens.fetch_add(static_cast<int64_t>(result.sampled.size()),
                                std::memory_order_relaxed);
  for (const auto& smp : result.sampled) {
    auto it = live.find(smp.id);
    if (it == live.end()) continue;
    if (on_token(*it->second, smp.token)) {
      (void)sched->remove(smp.id);
      live.erase(it);
    }
  }
  st.busy_ns.fetch_add(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t_start).count(),
      std::memory_order_relaxed);
  st.n_steps.fetch_add(1, std::memory_order_relaxed);
}

void Engine::Impl::publish_stats() {
  const sched::SchedulerStats ss = sched->stats();
  set(st.n_waiting, ss.n_waiting);
  set(st.n_running, ss.n_running);
  set(st.n_swapped, ss.n_swapped);
  set(st.prefill_tokens, static_cast<int64_t>(ss.prefill_tokens));
  set(st.prefix_hit_tokens, static_cast<int64_t>(ss.prefix_hit_tokens));
  set(st.preempt_ram, static_cast<int64_t>(ss.n_preempt_ram));
  set(st.preempt_disk, static_cast<int64_t>(ss.n_preempt_disk));
  set(st.preempt_recompute, static_cast<int64_t>(ss.n_preempt_recompute));
  const kv::KvStats ks = kvm->stats();
  set(st.kv_used, ks.n_used);
  if (ks.n_used > st.kv_used_peak.load(std::memory_order_relaxed)) set(st.kv_used_peak, ks.n_used);
  set(st.kv_cached, ks.n_cached);
  set(st.kv_free, ks.n_free);
  if (swap) {
    const kv::SwapStats sw = swap->stats();
    set(st.swap_bytes_ram, static_cast<int64_t>(sw.bytes_ram));
    set(st.swap_bytes_disk, static_cast<int64_t>(sw.bytes_disk));
  }
}

void Engine::Impl::run_loop() {
  for (;;) {
    const uint32_t seen = inbox_seq.load(std::memory_order_acquire);
    drain_inbox();
    if (stopping) {
      // Cancel everything still live, then leave. Late submissions are cancelled by drain.
      for (auto& [id, l] : live) {
        auto ph = sched->remove(id);
        if (ph.is_ok() && *ph == sched::Phase::kSwapped && swap) swap->erase(id);
        finish(*l, FinishReason::kCancelled);
      }
      live.clear();
      publish_stats();
      return;
    }
    if (live.empty()) {
      publish_stats();
      engine::futex_wait_for(&inbox_seq, seen, std::chrono::milliseconds(200));
      continue;
    }
    const int64_t steps_before = st.n_steps.load(std::memory_order_relaxed);
    step();
    publish_stats();
    if (st.n_steps.load(std::memory_order_relaxed) == steps_before && !live.empty()) {
      // Nothing could run (e.g. every thread waits for a prefix another one computes, or all are
      // blocked on KV): do not spin.
      engine::futex_wait_for(&inbox_seq, seen, std::chrono::milliseconds(1));
    }
  }
}

Status Engine::Impl::measure_costs(sched::EvictionCosts* costs) {
  // Prefill speed: one chunk of up to 64 tokens through blocks 0.. (they hold garbage afterwards,
  // which is fine: the KvManager treats them as free and every position is written before use).
  const int32_t n = std::min<int32_t>({64, n_ctx, n_blocks * cfg.kv_block_size});
  std::vector<int32_t> table((n + cfg.kv_block_size - 1) / cfg.kv_block_size);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>(i);
  std::vector<Context::BatchEntry> entries;
  const int32_t tok_id = std::max(0, tok->bos_id());
  for (int32_t i = 0; i < n; ++i) entries.push_back({tok_id, 0, i, i == n - 1});
  std::span<const int32_t> t(table);
  std::vector<std::span<const int32_t>> tabs{t};
  LLMT_RETURN_IF_ERROR(ctx->decode_paged(entries, tabs));  // warm-up
  const auto t0m = Clock::now();
  LLMT_RETURN_IF_ERROR(ctx->decode_paged(entries, tabs));
  const double dt = std::max(1e-6, seconds_since(t0m));
  costs->recompute_tokens_per_s = n / dt;
  if (swap) {
    auto tp = swap->measure(std::min<size_t>(ctx->kv_block_bytes() * 8, size_t{32} << 20));
    if (tp.is_ok()) {
      if (tp->ram_bytes_per_s > 0) costs->ram_bytes_per_s = tp->ram_bytes_per_s;
      if (tp->disk_bytes_per_s > 0) costs->disk_bytes_per_s = tp->disk_bytes_per_s;
    }
  }
  return Status::ok();
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() {
  if (!impl_) return;
  Command c;
  c.kind = Command::Kind::kShutdown;
  impl_->post(std::move(c));
  if (impl_->loop_thread.joinable()) impl_->loop_thread.join();
  // Anything posted after the loop left.
  while (auto left = impl_->inbox.pop()) {
    if (left->kind == Command::Kind::kSubmit && left->live) {
      impl_->finish(*left->live, FinishReason::kCancelled);
    }
  }
}

Result<std::unique_ptr<Engine>> Engine::create(const EngineConfig& config) {
  auto impl = std::make_unique<Impl>();
  Impl& e = *impl;
  e.cfg = config;
  EngineConfig& c = e.cfg;
  if (c.kv_block_size < 1 || c.kv_block_size > 4096) {
    return invalid_argument("kv_block_size must be in [1, 4096], got " +
                            std::to_string(c.kv_block_size));
  }
  if (c.step_tokens < 1) {
    return invalid_argument("step_tokens must be >= 1, got " + std::to_string(c.step_tokens));
  }
  if (c.max_running < 1) {
    return invalid_argument("max_running must be >= 1, got " + std::to_string(c.max_running));
  }
  if (c.quantum_tokens < 1) {
    return invalid_argument("quantum_tokens must be >= 1, got " + std::to_string(c.quantum_tokens));
  }
  if (!(c.aging_per_s >= 0)) return invalid_argument("aging_per_s must be >= 0");
  if (c.max_queue < 0) return invalid_argument("max_queue must be >= 0");
  if (c.eviction == EvictionMethod::kSwapDisk && c.swap_dir.empty()) {
    return invalid_argument("eviction 'disk' needs a swap directory (swap_dir / --swap-dir)");
  }
  if (!c.model) {
    if (c.model_path.empty()) return invalid_argument("EngineConfig: no model and no model_path");
    LLMT_ASSIGN_OR_RETURN(c.model, Model::load(c.model_path));
  }
  e.model = c.model;
  e.tok = &e.model->tokenizer();
  const ModelHparams& hp = e.model->hparams();
  e.n_vocab = hp.n_vocab;

  // KV pool size: budget / bytes of one block.
  const size_t elem = c.kv_type == KvType::kF16 ? 2 : 4;
  const size_t block_bytes = static_cast<size_t>(hp.n_layer) * 2 * hp.kv_dim() * elem *
                             static_cast<size_t>(c.kv_block_size);
  const uint64_t n_blocks = c.kv_budget_bytes / block_bytes;
  if (n_blocks < 1) {
    return invalid_argument("kv budget " + std::to_string(c.kv_budget_bytes) +
                            " bytes is smaller than one KV block (" + std::to_string(block_bytes) +
                            " bytes)");
  }
  if (n_blocks > (1u << 30)) return invalid_argument("kv budget too large");
  e.n_blocks = static_cast<int32_t>(n_blocks);

  ContextOptions co;
  co.n_kv_blocks = e.n_blocks;
  co.kv_block_size = c.kv_block_size;
  co.kv_type = c.kv_type;
  co.n_threads = c.n_threads;
  co.n_ctx = c.n_ctx;
  co.n_batch = std::max<int32_t>(c.step_tokens, 1);
  LLMT_ASSIGN_OR_RETURN(e.ctx, Context::create(e.model, co));
  e.n_ctx = e.ctx->n_ctx();
  c.n_ctx = e.n_ctx;
  c.n_threads = e.ctx->n_threads();
  e.bytes_per_token = e.ctx->kv_bytes_per_token();

  kv::KvManagerOptions ko;
  ko.n_blocks = e.n_blocks;
  ko.block_size = c.kv_block_size;
  ko.prefix_caching = c.prefix_caching;
  e.kvm = std::make_unique<kv::KvManager>(ko);

  kv::SwapStoreOptions so;
  so.ram_limit_bytes = c.swap_ram_bytes;
  so.dir = c.swap_dir;
  so.compression = c.swap_compress ? kv::SwapCompression::kLz4 : kv::SwapCompression::kNone;
  LLMT_ASSIGN_OR_RETURN(e.swap, kv::SwapStore::create(so));

  sched::SchedulerOptions sopt;
  sopt.policy = static_cast<sched::Policy>(static_cast<int>(c.policy));
  sopt.step_tokens = c.step_tokens;
  sopt.max_running = c.max_running;
  sopt.aging_per_s = c.aging_per_s;
  sopt.quantum_tokens = c.quantum_tokens;
  sopt.eviction = static_cast<sched::Eviction>(static_cast<int>(c.eviction));
  sopt.kv_bytes_per_token = e.bytes_per_token;
  sopt.costs.ram_limit_bytes = c.swap_ram_bytes;
  sopt.costs.disk_available = !c.swap_dir.empty();
  if (c.measure_costs) LLMT_RETURN_IF_ERROR(e.measure_costs(&sopt.costs));
  e.sched = std::make_unique<sched::Scheduler>(sopt, e.kvm.get());
  set(e.st.kv_free, e.n_blocks);

  Impl* raw = impl.get();
  std::unique_ptr<Engine> engine(new Engine(std::move(impl)));
  raw->loop_thread = std::thread([raw] { raw->run_loop(); });
  return engine;
}

Result<ThreadHandle> Engine::submit(ThreadRequest request) {
  Impl& e = *impl_;
  LLMT_RETURN_IF_ERROR(request.sampling.validate());
  if (request.max_tokens < 1) {
    return invalid_argument("max_tokens must be >= 1, got " + std::to_string(request.max_tokens));
  }
  if (!(request.deadline_s >= 0)) return invalid_argument("deadline must be >= 0 seconds");
  if (request.logprobs < -1 || request.logprobs > ThreadRequest::kMaxLogprobs) {
    return invalid_argument("logprobs must be in [-1, " +
                            std::to_string(ThreadRequest::kMaxLogprobs) + "] (-1 = off), got " +
                            std::to_string(request.logprobs));
  }
  auto l = std::make_unique<Live>();
  if (!request.prompt_tokens.empty()) {
    l->prompt = std::move(request.prompt_tokens);
    for (size_t i = 0; i < l->prompt.size(); ++i) {
      if (l->prompt[i] < 0 || l->prompt[i] >= e.n_vocab) {
        return invalid_argument("prompt token " + std::to_string(l->prompt[i]) + " at index " +
                                std::to_string(i) + " is outside the vocabulary [0, " +
                                std::to_string(e.n_vocab) + ")");
      }
    }
  } else {
    TokenizeOptions to;
    to.add_special = request.add_special;
    to.parse_special = request.parse_special;
    l->prompt = e.tok->encode(request.prompt, to);
  }
  request.prompt.clear();
  request.prompt_tokens.clear();
  if (l->prompt.empty()) return invalid_argument("empty prompt");
  const int64_t n_prompt = static_cast<int64_t>(l->prompt.size());
  if (n_prompt >= e.n_ctx) {
    return invalid_argument("prompt of " + std::to_string(n_prompt) +
                                " tokens does not fit the context of " + std::to_string(e.n_ctx) +
                                " positions",
                            "prompt");
  }
  // A scoring thread needs prompt + score tokens (+1: the scheduler's generation limit).
  if (!request.score_tokens.empty()) {
    request.max_tokens = static_cast<int32_t>(request.score_tokens.size()) + 1;
  }
  if (n_prompt + request.max_tokens > e.n_ctx) {
    return invalid_argument("prompt (" + std::to_string(n_prompt) + " tokens) + max_tokens (" +
                                std::to_string(request.max_tokens) + ") exceeds the context of " +
                                std::to_string(e.n_ctx) + " positions",
                            "max_tokens");
  }
  const int64_t need_blocks =
      (n_prompt + request.max_tokens + e.cfg.kv_block_size - 1) / e.cfg.kv_block_size;
  if (need_blocks > e.n_blocks) {
    return cannot_fit("prompt + max_tokens need " + std::to_string(need_blocks) +
                          " KV blocks but the pool has " + std::to_string(e.n_blocks) +
                          " (raise the KV budget)",
                      "max_tokens");
  }
  for (size_t i = 0; i < request.score_tokens.size(); ++i) {
    if (request.score_tokens[i] < 0 || request.score_tokens[i] >= e.n_vocab) {
      return invalid_argument("score token " + std::to_string(request.score_tokens[i]) +
                              " is outside the vocabulary [0, " + std::to_string(e.n_vocab) + ")");
    }
  }
  if (!request.score_tokens.empty()) {
    l->score_from = static_cast<int32_t>(n_prompt) - 1;
    l->n_score = static_cast<int32_t>(request.score_tokens.size());
    l->result.score_logprobs.assign(request.score_tokens.size(), 0.0f);
  }
  for (const std::string& s : request.stop) {
    if (s.empty()) return invalid_argument("empty stop string");
    l->max_stop_len = std::max(l->max_stop_len, s.size());
  }
  if (e.cfg.max_queue > 0) {
    const int64_t prev = e.n_live.fetch_add(1, std::memory_order_relaxed);
    if (prev >= e.cfg.max_queue) {
      e.n_live.fetch_sub(1, std::memory_order_relaxed);
      return over_capacity("queue full: " + std::to_string(e.cfg.max_queue) + " threads live");
    }
  } else {
    e.n_live.fetch_add(1, std::memory_order_relaxed);
  }
  l->sampler.emplace(request.sampling, e.n_vocab);
  l->decoder.emplace(*e.tok);
  l->id = e.next_id.fetch_add(1, std::memory_order_relaxed);
  l->state = std::make_shared<ThreadHandle::State>();
  l->state->id = l->id;
  l->submitted = Clock::now();
  l->req = std::move(request);
  ThreadHandle h(l->state);
  e.st.n_submitted.fetch_add(1, std::memory_order_relaxed);
  e.st.prompt_tokens.fetch_add(n_prompt, std::memory_order_relaxed);
  Command c;
  c.kind = Command::Kind::kSubmit;
  c.live = std::move(l);
  e.post(std::move(c));
  return h;
}

void Engine::cancel(ThreadId id) {
  Command c;
  c.kind = Command::Kind::kCancel;
  c.id = id;
  impl_->post(std::move(c));
}

EngineStats Engine::stats() const {
  const AtomicStats& a = impl_->st;
  auto g = [](const std::atomic<int64_t>& v) { return v.load(std::memory_order_relaxed); };
  EngineStats s;
  s.n_waiting = g(a.n_waiting);
  s.n_running = g(a.n_running);
  s.n_swapped = g(a.n_swapped);
  s.n_submitted = g(a.n_submitted);
  s.n_finished = g(a.n_finished);
  s.n_cancelled = g(a.n_cancelled);
  s.n_steps = g(a.n_steps);
  s.prompt_tokens = g(a.prompt_tokens);
  s.prefill_tokens = g(a.prefill_tokens);
  s.generated_tokens = g(a.generated_tokens);
  s.prefix_hit_tokens = g(a.prefix_hit_tokens);
  s.kv_blocks_total = impl_->n_blocks;
  s.kv_blocks_used = g(a.kv_used);
  s.kv_blocks_cached = g(a.kv_cached);
  s.kv_blocks_free = g(a.kv_free);
  s.kv_blocks_used_peak = g(a.kv_used_peak);
  s.preempt_ram = g(a.preempt_ram);
  s.preempt_disk = g(a.preempt_disk);
  s.preempt_recompute = g(a.preempt_recompute);
  s.swap_failures = g(a.swap_failures);
  s.swap_bytes_ram = g(a.swap_bytes_ram);
  s.swap_bytes_disk = g(a.swap_bytes_disk);
  s.swap_bytes_out_total = g(a.swap_bytes_out);
  s.busy_s = static_cast<double>(g(a.busy_ns)) * 1e-9;
  return s;
}

const Model& Engine::model() const { return *impl_->model; }
std::shared_ptr<const Model> Engine::model_ptr() const { return impl_->model; }
const EngineConfig& Engine::config() const { return impl_->cfg; }
int32_t Engine::n_kv_blocks() const { return impl_->n_blocks; }
size_t Engine::kv_bytes_per_token() const { return impl_->bytes_per_token; }
size_t Engine::kv_block_bytes() const { return impl_->ctx->kv_block_bytes(); }

}  // namespace llmt
