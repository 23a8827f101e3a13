// Engine: the public API (create, submit, cancel, stats), ThreadHandle, and the names of the
// engine's enums. The loop thread that owns the model Context (paged KV), the KvManager, the
// Scheduler, the swap store and every live LLM thread's sampler and detokenizer is
// engine-loop.cpp; engine-impl.h is what both share.
#include "engine/engine-impl.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <ctime>

namespace llmt {

namespace engine {

void futex_wait_for(std::atomic<uint32_t>* word, uint32_t expected,
                    std::chrono::nanoseconds timeout) {
  if (timeout.count() <= 0) return;
  timespec ts;
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, &ts, nullptr,
          0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

}  // namespace engine

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kDeadline:
      return "deadline";
    case FinishReason::kError:
      return "error";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// ThreadHandle

ThreadId ThreadHandle::id() const {
  return state_ ? state_->id : 0;
}

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

namespace {

// Every section of the config, checked once here (the model's own checks come with its load).
Status validate_config(const EngineConfig& c) {
  if (c.model.n_ctx < 0) return invalid_argument("model.n_ctx must be >= 0", "model.n_ctx");
  if (c.compute.n_threads < 0) {
    return invalid_argument("compute.n_threads must be >= 0", "compute.n_threads");
  }
  if (c.kv.block_size < 1 || c.kv.block_size > 4096) {
    return invalid_argument(
        "kv.block_size must be in [1, 4096], got " + std::to_string(c.kv.block_size),
        "kv.block_size");
  }
  LLMT_RETURN_IF_ERROR(c.sched.validate());
  if (c.sched.eviction == EvictionMethod::kSwapDisk && c.kv.swap.dir.empty()) {
    return invalid_argument(
        "sched.eviction 'disk' needs a swap directory (kv.swap.dir / --swap-dir)", "kv.swap.dir");
  }
  if (c.limits.max_queue < 0) {
    return invalid_argument("limits.max_queue must be >= 0", "limits.max_queue");
  }
  return Status::ok();
}

// The KV pool with the sliding-window layers apart: slots for max_running threads' windows
// (the blocks a window of n_swa positions spans, plus the one a thread grows into) and one
// step's prefill chunks, the rest of the budget in blocks of the other layers. {0, 0} when the
// model has no sliding-window layers, its window is not shorter than the context, or the slots
// alone would take the budget.
struct WindowSplit {
  uint64_t n_blocks = 0;
  int32_t n_slots = 0;
};
WindowSplit window_split(const Model& model, const EngineConfig& c, size_t layer_bytes) {
  const ModelHparams& hp = model.hparams();
  int32_t n_swa_layers = 0;
  for (int32_t il = 0; il < hp.n_layer; ++il) n_swa_layers += model.layer_is_swa(il) ? 1 : 0;
  const int32_t n_ctx = c.model.n_ctx > 0 ? c.model.n_ctx : std::min(hp.n_ctx_train, 4096);
  if (n_swa_layers == 0 || n_swa_layers == hp.n_layer || hp.n_swa <= 0 || hp.n_swa >= n_ctx) {
    return {};
  }
  const int64_t bs = c.kv.block_size;
  const int64_t per_thread = (hp.n_swa + bs - 1) / bs + 2;
  const int64_t step = (c.sched.step_tokens + bs - 1) / bs + 1;
  const int64_t n_slots = std::max<int64_t>(c.sched.max_running, 1) * per_thread + step;
  const uint64_t slot_bytes = static_cast<uint64_t>(n_swa_layers) * layer_bytes;
  const uint64_t main_bytes = static_cast<uint64_t>(hp.n_layer - n_swa_layers) * layer_bytes;
  if (n_slots > (1 << 30) || static_cast<uint64_t>(n_slots) * slot_bytes >= c.kv.budget_bytes) {
    return {};
  }
  return {(c.kv.budget_bytes - static_cast<uint64_t>(n_slots) * slot_bytes) / main_bytes,
          static_cast<int32_t>(n_slots)};
}

}  // namespace

Result<std::unique_ptr<Engine>> Engine::create(const EngineConfig& config) {
  auto impl = std::make_unique<Impl>();
  Impl& e = *impl;
  e.cfg = config;
  EngineConfig& c = e.cfg;
  LLMT_RETURN_IF_ERROR(validate_config(c));
  if (!c.model.model) {
    if (c.model.path.empty()) {
      return invalid_argument("EngineConfig: no model and no model.path", "model.path");
    }
    LLMT_ASSIGN_OR_RETURN(c.model.model, Model::load(c.model.path));
  }
  e.model = c.model.model;
  e.tok = &e.model->tokenizer();
  const ModelHparams& hp = e.model->hparams();
  e.n_vocab = hp.n_vocab;

  // KV pool size: budget / bytes of one block, or, with window slots, the slots first.
  const size_t elem = c.kv.type == KvType::kF16 ? 2 : 4;
  const size_t layer_bytes = 2 * static_cast<size_t>(hp.kv_dim()) * elem *
                             static_cast<size_t>(c.kv.block_size);  // one layer, one block
  const size_t block_bytes = static_cast<size_t>(hp.n_layer) * layer_bytes;
  uint64_t n_blocks = c.kv.budget_bytes / block_bytes;
  if (c.kv.window_slots && hp.causal) {
    const WindowSplit ws = window_split(*e.model, c, layer_bytes);
    if (ws.n_blocks > n_blocks) {
      n_blocks = ws.n_blocks;
      e.n_window_slots = ws.n_slots;
    }
  }
  if (n_blocks < 1) {
    return invalid_argument("kv.budget_bytes " + std::to_string(c.kv.budget_bytes) +
                                " is smaller than one KV block (" + std::to_string(block_bytes) +
                                " bytes)",
                            "kv.budget_bytes");
  }
  if (n_blocks > (1u << 30)) return invalid_argument("kv budget too large", "kv.budget_bytes");
  e.n_blocks = static_cast<int32_t>(n_blocks);

  ContextOptions co;
  co.n_kv_blocks = e.n_blocks;
  co.n_kv_window_slots = e.n_window_slots;
  co.kv_block_size = c.kv.block_size;
  co.kv_type = c.kv.type;
  co.n_threads = c.compute.n_threads;
  co.n_ctx = c.model.n_ctx;
  co.n_batch = c.sched.step_tokens;
  e.encoder = !hp.causal;
  if (e.encoder) {
    // An encoder runs a whole sequence in one pass: the pass must hold the longest one.
    const int32_t n_seq =
        std::min<int32_t>(c.model.n_ctx > 0 ? c.model.n_ctx : 4096, hp.n_ctx_train);
    co.n_batch = std::max(co.n_batch, n_seq);
  }
  LLMT_ASSIGN_OR_RETURN(e.ctx, Context::create(e.model, co));
  e.n_ctx = e.ctx->n_ctx();
  c.model.n_ctx = e.n_ctx;
  c.compute.n_threads = e.ctx->n_threads();
  e.bytes_per_token = e.ctx->kv_bytes_per_token();
  if (e.encoder) e.encoder_max_tokens = std::min<int32_t>(e.n_ctx, hp.n_ctx_train);

  kv::KvManagerOptions ko;
  ko.n_blocks = e.n_blocks;
  ko.block_size = c.kv.block_size;
  ko.prefix_caching = c.kv.prefix_caching;
  ko.n_window_slots = e.n_window_slots;
  ko.window = hp.n_swa;
  e.kvm = std::make_unique<kv::KvManager>(ko);

  kv::SwapStoreOptions so;
  so.ram_limit_bytes = c.kv.swap.ram_bytes;
  so.dir = c.kv.swap.dir;
  so.compression = c.kv.swap.compress ? kv::SwapCompression::kLz4 : kv::SwapCompression::kNone;
  LLMT_ASSIGN_OR_RETURN(e.swap, kv::SwapStore::create(so));

  // The scheduler's section as it is, plus what only the engine knows.
  sched::SchedulerOptions sopt{c.sched, sched::EvictionCosts{}, 0};
  sopt.kv_bytes_per_token = e.bytes_per_token;
  sopt.costs.ram_limit_bytes = c.kv.swap.ram_bytes;
  sopt.costs.disk_available = !c.kv.swap.dir.empty();
  // (An encoder has no KV to evict: its threads never go through the scheduler.)
  if (c.sched.measure_costs && !e.encoder) LLMT_RETURN_IF_ERROR(e.measure_costs(&sopt.costs));
  e.sched = std::make_unique<sched::Scheduler>(sopt, e.kvm.get());
  set(e.st.kv_free, e.n_blocks);

  Impl* raw = impl.get();
  std::unique_ptr<Engine> engine(new Engine(std::move(impl)));
  raw->loop_thread = std::thread([raw] { raw->run_loop(); });
  return engine;
}

Status Engine::prepare(ThreadRequest* request) const {
  const Impl& e = *impl_;
  ThreadRequest& r = *request;
  LLMT_RETURN_IF_ERROR(r.sampling.validate());
  if (r.max_tokens < 1 && r.max_tokens != ThreadRequest::kToContextEnd) {
    return invalid_argument(
        "max_tokens must be >= 1 (or kToContextEnd), got " + std::to_string(r.max_tokens),
        "max_tokens");
  }
  if (!(r.deadline_s >= 0)) return invalid_argument("deadline must be >= 0 seconds", "deadline");
  if (r.logprobs < -1 || r.logprobs > ThreadRequest::kMaxLogprobs) {
    return invalid_argument("logprobs must be in [-1, " +
                                std::to_string(ThreadRequest::kMaxLogprobs) + "] (-1 = off), got " +
                                std::to_string(r.logprobs),
                            "logprobs");
  }
  if (e.encoder && !r.embed) {
    return invalid_argument("'" + e.model->hparams().arch +
                            "' is an encoder model: it runs embedding threads only "
                            "(ThreadRequest::embed)");
  }
  if (r.embed && !r.score_tokens.empty()) {
    return invalid_argument("an embedding thread cannot also score tokens", "score_tokens");
  }
  if (r.embed && r.grammar) return invalid_argument("an embedding thread takes no grammar");
  if (r.embed && !e.encoder && e.model->hparams().pooling == Pooling::kRank) {
    return unsupported(
        "the model's pooling_type is 4 (rank: a classification / reranking head), which "
        "embedding threads run for encoder models (bert) only");
  }
  if (r.prompt_tokens.empty()) {
    TokenizeOptions to;
    to.add_special = r.add_special;
    to.parse_special = r.parse_special;
    r.prompt_tokens = e.tok->encode(r.prompt, to);
  } else {
    for (size_t i = 0; i < r.prompt_tokens.size(); ++i) {
      if (r.prompt_tokens[i] < 0 || r.prompt_tokens[i] >= e.n_vocab) {
        return invalid_argument("prompt token " + std::to_string(r.prompt_tokens[i]) +
                                    " at index " + std::to_string(i) +
                                    " is outside the vocabulary [0, " + std::to_string(e.n_vocab) +
                                    ")",
                                "prompt");
      }
    }
  }
  r.prompt.clear();
  if (r.prompt_tokens.empty()) return invalid_argument("empty prompt", "prompt");
  const int64_t n_prompt = static_cast<int64_t>(r.prompt_tokens.size());
  const int64_t bs = e.cfg.kv.block_size;
  const int64_t pool_tokens = static_cast<int64_t>(e.n_blocks) * bs;
  if (r.embed) {
    // Decoders: the scheduler's generation limit is prompt + 1 (nothing is generated).
    r.max_tokens = 1;
    r.logprobs = -1;
    const int64_t most = e.encoder ? e.encoder_max_tokens : e.n_ctx - 1;
    if (n_prompt > most) {
      return invalid_argument("prompt of " + std::to_string(n_prompt) + " tokens exceeds the " +
                                  std::to_string(most) + " an embedding thread of this model takes",
                              "prompt");
    }
  }
  if (!r.embed && n_prompt >= e.n_ctx) {
    return invalid_argument("prompt of " + std::to_string(n_prompt) +
                                " tokens does not fit the context of " + std::to_string(e.n_ctx) +
                                " positions",
                            "prompt");
  }
  for (size_t i = 0; i < r.score_tokens.size(); ++i) {
    if (r.score_tokens[i] < 0 || r.score_tokens[i] >= e.n_vocab) {
      return invalid_argument("score token " + std::to_string(r.score_tokens[i]) +
                                  " is outside the vocabulary [0, " + std::to_string(e.n_vocab) +
                                  ")",
                              "score_tokens");
    }
  }
  if (!r.score_tokens.empty()) {
    // A scoring thread needs prompt + score tokens (+1: the scheduler's generation limit).
    r.max_tokens = static_cast<int32_t>(r.score_tokens.size()) + 1;
  } else if (r.max_tokens == ThreadRequest::kToContextEnd) {
    // What the context and the KV pool leave after the prompt.
    r.max_tokens = static_cast<int32_t>(std::min<int64_t>(e.n_ctx, pool_tokens) - n_prompt);
    if (r.max_tokens < 1) {
      return cannot_fit("the prompt of " + std::to_string(n_prompt) +
                            " tokens fills the KV pool of " + std::to_string(pool_tokens) +
                            " tokens (raise the KV budget)",
                        "prompt");
    }
  }
  if (!e.encoder && n_prompt + r.max_tokens > e.n_ctx) {
    return invalid_argument("prompt (" + std::to_string(n_prompt) + " tokens) + max_tokens (" +
                                std::to_string(r.max_tokens) + ") exceeds the context of " +
                                std::to_string(e.n_ctx) + " positions",
                            "max_tokens");
  }
  const int64_t need_blocks = (n_prompt + r.max_tokens + bs - 1) / bs;
  if (need_blocks > e.n_blocks && !e.encoder) {
    return cannot_fit("prompt + max_tokens need " + std::to_string(need_blocks) +
                          " KV blocks but the pool has " + std::to_string(e.n_blocks) +
                          " (raise the KV budget)",
                      "max_tokens");
  }
  for (const std::string& s : r.stop) {
    if (s.empty()) return invalid_argument("empty stop string", "stop");
  }
  return Status::ok();
}

Result<ThreadHandle> Engine::submit(ThreadRequest request) {
  Impl& e = *impl_;
  LLMT_RETURN_IF_ERROR(prepare(&request));
  auto l = std::make_unique<Live>();
  l->prompt = std::move(request.prompt_tokens);
  request.prompt_tokens.clear();
  const int64_t n_prompt = static_cast<int64_t>(l->prompt.size());
  if (!request.score_tokens.empty()) {
    l->score_from = static_cast<int32_t>(n_prompt) - 1;
    l->n_score = static_cast<int32_t>(request.score_tokens.size());
    l->result.score_logprobs.assign(request.score_tokens.size(), 0.0f);
  }
  if (request.embed) l->embd_sum.assign(static_cast<size_t>(e.model->hparams().n_embd), 0.0);
  for (const std::string& s : request.stop) l->max_stop_len = std::max(l->max_stop_len, s.size());
  if (e.cfg.limits.max_queue > 0) {
    const int64_t prev = e.n_live.fetch_add(1, std::memory_order_relaxed);
    if (prev >= e.cfg.limits.max_queue) {
      e.n_live.fetch_sub(1, std::memory_order_relaxed);
      return over_capacity("queue full: " + std::to_string(e.cfg.limits.max_queue) +
                           " threads live");
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
  s.kv_window_slots = impl_->n_window_slots;
  s.kv_window_slots_used = g(a.kv_win_used);
  s.kv_window_slots_used_peak = g(a.kv_win_used_peak);
  s.kv_blocks_used_peak = g(a.kv_used_peak);
  s.preempt_ram = g(a.preempt_ram);
  s.preempt_disk = g(a.preempt_disk);
  s.preempt_recompute = g(a.preempt_recompute);
  s.swap_failures = g(a.swap_failures);
  {
    std::lock_guard<std::mutex> lock(a.swap_error_mu);
    s.swap_last_error = a.swap_last_error;
  }
  s.swap_bytes_ram = g(a.swap_bytes_ram);
  s.swap_bytes_disk = g(a.swap_bytes_disk);
  s.swap_bytes_out_total = g(a.swap_bytes_out);
  s.busy_s = static_cast<double>(g(a.busy_ns)) * 1e-9;
  return s;
}

const Model& Engine::model() const {
  return *impl_->model;
}
std::shared_ptr<const Model> Engine::model_ptr() const {
  return impl_->model;
}
const EngineConfig& Engine::config() const {
  return impl_->cfg;
}
int32_t Engine::n_kv_blocks() const {
  return impl_->n_blocks;
}
size_t Engine::kv_bytes_per_token() const {
  return impl_->bytes_per_token;
}
size_t Engine::kv_block_bytes() const {
  return impl_->ctx->kv_block_bytes();
}

}  // namespace llmt
