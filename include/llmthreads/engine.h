// The LLM-threads engine: one model, one paged KV cache, one scheduler and one compute pool shared
// by any number of concurrent generation requests ("LLM threads").
//
// Engine::create() loads the model once and starts the engine loop thread, which owns every piece
// of mutable state (KV cache, scheduler, samplers, swap store). Callers talk to it through a
// lock-free inbox (submit, cancel) and receive each thread's events through a lock-free channel
// (ThreadHandle) or a callback run on the loop thread. The engine's own per-step code takes no
// mutex; a callback runs on the loop thread, so it must only hand the event off (the Job and the
// server push it to a queue under a short mutex of their own).
//
// Every step the scheduler packs the decode tokens of running threads and chunks of pending
// prompts under a token budget (continuous batching); threads join and leave between steps; a
// thread may be switched out (its KV saved to RAM, spilled to disk, or dropped and recomputed)
// and later restored, with bitwise the same output as an uninterrupted run (same seed).
//
// Thread-safety: Engine::submit(), cancel(), stats() and the const accessors may be called from any
// number of threads concurrently. A ThreadHandle may be copied freely; its next() is for one
// consumer thread at a time, wait()/done()/result() from any thread. The destructor cancels every
// live thread, stops the loop and must not run concurrently with other calls on the engine.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "llmthreads/grammar.h"
#include "llmthreads/model.h"
#include "llmthreads/sampling.h"
#include "llmthreads/sched-types.h"
#include "llmthreads/status.h"

namespace llmt {

using ThreadId = uint64_t;

// The engine's configuration, one section per concern. Each section is handed as it is to the
// part that owns it (the scheduler gets `sched`, the KV manager and swap store `kv`); the engine
// checks every section once, in Engine::create(), and a bad value is kInvalidArgument naming the
// field as "section.field" (e.g. "kv.block_size").
struct ModelConfig {
  // An already loaded model (shared), or a path to load when `model` is null.
  std::shared_ptr<const Model> model;
  std::string path;
  int32_t n_ctx = 0;  // most positions per LLM thread; 0 = min(training context, 4096)
};

struct ComputeConfig {
  int32_t n_threads = 0;  // compute threads; 0 = physical cores
};

// Where preempted LLM threads' KV goes when it is swapped (EvictionMethod kSwapRam/kSwapDisk).
struct SwapConfig {
  std::string dir;                         // past ram_bytes; "" = no disk
  uint64_t ram_bytes = uint64_t{1} << 30;  // swap bytes kept in RAM
  bool compress = false;                   // lz4-compress swapped KV
};

struct KvConfig {
  KvType type = KvType::kF16;                   // element type (llama.cpp's default is F16 too)
  uint64_t budget_bytes = uint64_t{256} << 20;  // pool size; blocks = budget / block bytes
  int32_t block_size = 16;                      // tokens per block, in [1, 4096]
  bool prefix_caching = true;                   // share blocks of identical prompt prefixes
  // Models with sliding-window layers (Gemma 2/3): keep those layers' K/V for the window only,
  // in a pool of their own sized for max_running threads' windows plus one step (the rest of
  // the budget goes to the blocks of the other layers, which then hold more tokens). Used when
  // it makes the pool hold more tokens than one pool for every layer; false: one pool.
  bool window_slots = true;
  SwapConfig swap;
};

// Admission limits.
struct LimitsConfig {
  int32_t max_queue = 0;  // live LLM threads accepted (0 = unlimited); beyond: kOverCapacity
};

// SchedConfig (policy, step tokens, eviction, ...): llmthreads/sched-types.h.
struct EngineConfig {
  ModelConfig model;
  ComputeConfig compute;
  KvConfig kv;
  SchedConfig sched;
  LimitsConfig limits;
};

struct ThreadRequest {
  // The prompt: text (tokenized on the caller's thread) or, when prompt_tokens is not empty,
  // those ids as they are.
  std::string prompt;
  std::vector<int32_t> prompt_tokens;
  bool add_special = true;     // BOS etc. as the vocabulary asks (text prompts)
  bool parse_special = false;  // control-token texts in the prompt become their ids

  SamplingParams sampling;  // temperature 0 = greedy
  // Generated tokens at most, >= 1, or kToContextEnd: what the context and the KV pool leave
  // after the prompt. prompt + max_tokens beyond the context is kInvalidArgument (field
  // "max_tokens").
  int32_t max_tokens = 128;
  static constexpr int32_t kToContextEnd = -1;
  std::vector<std::string> stop;     // stop strings (not included in the output)
  std::vector<int32_t> stop_tokens;  // stop token ids (not included in the output)
  bool ignore_eos = false;           // keep generating past end-of-generation tokens
  // Constrained decoding (null = none): every sampled token keeps the output a prefix of a
  // sentence of the grammar (the mask is applied before the sampling chain); EOG is allowed only
  // where the grammar may end, and the thread finishes with kStop as soon as the grammar has
  // ended. When no token can continue the output the thread finishes with kError and the
  // grammar's message. Shared and immutable: one compiled grammar may serve many threads.
  std::shared_ptr<const Grammar> grammar;

  // Scoring instead of generation: when not empty, the thread computes the log-probability of
  // these tokens following the prompt (one forward pass over prompt + score_tokens, logits at
  // the positions that predict them) and finishes with kStop without sampling; max_tokens,
  // stop, sampling are ignored. ThreadResult::score_logprobs gets one natural-log probability
  // per score token, score_logprob their sum. Threads that score different continuations of the
  // same prompt share its KV through the prefix cache.
  std::vector<int32_t> score_tokens;

  // Embedding instead of generation: when true, the thread runs the prompt through the model
  // without sampling and finishes with kStop and ThreadResult::embedding, the pooled vector
  // [n_embd] (not normalized; callers scale it, e.g. to unit length as llama.cpp's server does):
  //   - encoder models (bert): the model's pooling_type (mean, or CLS; mean when the file has
  //     none) of the final hidden states, as Context::embed(); with rank pooling (a reranker or
  //     sequence classifier: the file's classification head) `embedding` holds the head's
  //     hparams().n_cls_out raw scores instead (no sigmoid / softmax, as llama.cpp returns
  //     them; one relevance score for a reranker). The whole prompt runs in one pass,
  //     several embedding threads share a pass (up to step_tokens, or the context when larger),
  //     and no KV cache is used; at most min(n_ctx, context_length) tokens.
  //   - decoder models: the final hidden states (after the output norm) pooled as the file's
  //     <arch>.pooling_type says: cls the first position's, last the last one's, and mean (also
  //     when the file has none: what llama.cpp pools with --pooling mean) over every position;
  //     rank (a classification head) is kUnsupported at submit. The prompt is prefilled like any
  //     other (chunked, batched with other threads, KV blocks of its own; the prefix cache serves
  //     it only positions whose states it already holds, i.e. after an eviction) and the thread
  //     ends after its last chunk.
  // Batch invariant: bitwise the same vector alone or batched with any other threads. max_tokens,
  // stop, sampling, logprobs are ignored; grammar and score_tokens must be empty. An encoder
  // model runs embedding threads only (anything else is kInvalidArgument at submit).
  bool embed = false;

  // Log-probabilities of the generated tokens (opt-in): -1 = off; 0 = the sampled token's only;
  // N in [1, kMaxLogprobs] = also the N most likely tokens at that position (min(N, n_vocab) of
  // them). Each kToken event that carries a sampled token then has ThreadEvent::logprob, and
  // ThreadResult::logprobs gets one entry per generated token. Ignored by scoring threads.
  //
  // Which distribution: the model's, i.e. a log-softmax over the full vocabulary of the raw
  // logits, before any sampling transform (penalties, top-k, top-p, min-p, temperature). This
  // is what OpenAI returns, and it does not depend on the sampling settings, so a token drawn at
  // temperature 1.5 reports its probability under the model, and a greedy token chosen under a
  // repetition penalty need not be the top alternative. Cost: one pass over the vocabulary (plus
  // a top-N selection) per generated token, paid only by threads that asked; other threads take
  // no extra work, allocation or formatting per token.
  int32_t logprobs = -1;
  static constexpr int32_t kMaxLogprobs = 20;

  int32_t priority = 0;  // higher runs first (kPriority)
  uint64_t tenant = 0;   // job / tenant (kFairShare)
  // Finish with FinishReason::kDeadline once this much time has passed since submit (0 = none).
  double deadline_s = 0.0;

  // Optional: receives the events on the engine loop thread instead of the handle's channel. It
  // must return quickly; it may call submit() and cancel().
  std::function<void(const struct ThreadEvent&)> on_event;
};

enum class FinishReason { kStop, kLength, kCancelled, kDeadline, kError };
const char* finish_reason_name(
    FinishReason r);  // "stop", "length", "cancelled", "deadline", "error"

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;  // prompt tokens served from the prefix cache
};

// One token with its natural-log probability under the model (see ThreadRequest::logprobs).
struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

// The log-probability of one sampled token and the top alternatives at its position: `top` has
// min(ThreadRequest::logprobs, n_vocab) entries in (logprob descending, id ascending) order, so a
// greedy token (no penalties) is top[0]; the sampled token may or may not be among them.
struct TokenLogprobs {
  int32_t token = -1;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;
};

struct ThreadTimings {
  double queue_s = 0.0;  // submit -> first step that computed its tokens
  double ttft_s = 0.0;   // submit -> first token sampled
  double total_s = 0.0;  // submit -> finished
  int32_t n_preemptions = 0;
};

struct ThreadResult {
  ThreadId id = 0;
  std::vector<int32_t> tokens;  // generated ids (a matched stop token/string's tokens included
                                // in `tokens` but not in `text`)
  std::string text;             // generated text, cut before a stop string
  FinishReason finish_reason = FinishReason::kStop;
  std::string stop_matched;  // the stop string or token text that ended it
  std::string error;         // kError: why
  // ThreadRequest::logprobs >= 0: one entry per element of `tokens` (same order; a matched stop
  // token's entry included). Empty otherwise.
  std::vector<TokenLogprobs> logprobs;
  std::vector<float> score_logprobs;  // scoring threads: log P(score_tokens[i] | before)
  double score_logprob = 0.0;         // their sum
  std::vector<float> embedding;       // embedding threads: the pooled vector [n_embd]
                                      // (rank pooling: the head's n_cls_out scores)
  Usage usage;
  ThreadTimings timings;
};

struct ThreadEvent {
  enum class Kind { kToken, kFinished };
  Kind kind = Kind::kToken;
  ThreadId id = 0;
  // kToken: the sampled id and the text it completes (may be empty: part of a UTF-8 character or
  // of a possible stop string is held back until resolved).
  int32_t token = -1;
  std::string text;
  // kToken with token >= 0 of a thread with ThreadRequest::logprobs >= 0: that token's
  // log-probability and top alternatives. Empty otherwise (also for the token = -1 event that
  // carries text held back until the finish).
  std::optional<TokenLogprobs> logprob;
  // kFinished: the whole result.
  std::shared_ptr<const ThreadResult> result;
};

// Shared handle to one thread's event stream and result.
class ThreadHandle {
 public:
  ThreadHandle() = default;
  ThreadId id() const;
  bool valid() const { return state_ != nullptr; }
  // Next event (handles whose request had no on_event), waiting up to `timeout`; std::nullopt on
  // timeout or after the kFinished event was returned.
  std::optional<ThreadEvent> next(std::chrono::milliseconds timeout = std::chrono::hours(24 * 365));
  // Blocks until the thread finished; returns the result (also with on_event).
  const ThreadResult& wait() const;
  // Waits up to timeout; nullptr if not finished by then.
  const ThreadResult* wait_for(std::chrono::milliseconds timeout) const;
  bool done() const;

  struct State;
  explicit ThreadHandle(std::shared_ptr<State> s) : state_(std::move(s)) {}

 private:
  std::shared_ptr<State> state_;
};

struct EngineStats {
  int64_t n_waiting = 0, n_running = 0, n_swapped = 0;
  int64_t n_submitted = 0, n_finished = 0, n_cancelled = 0;
  int64_t n_steps = 0;
  int64_t prompt_tokens = 0;   // prompt tokens of submitted threads
  int64_t prefill_tokens = 0;  // tokens computed by prefill chunks (recompute included)
  int64_t generated_tokens = 0;
  int64_t prefix_hit_tokens = 0;
  int64_t kv_blocks_total = 0, kv_blocks_used = 0, kv_blocks_cached = 0, kv_blocks_free = 0;
  int64_t kv_blocks_used_peak = 0;  // most blocks in use at once since start
  // Window slots (KvConfig::window_slots; 0 when the pool has none) and how many a window
  // reaches now / at most since start.
  int64_t kv_window_slots = 0, kv_window_slots_used = 0, kv_window_slots_used_peak = 0;
  // A failed swap-out or swap-in (disk full, I/O error, a damaged file) does not fail the
  // thread: its KV is recomputed instead. swap_failures counts them; swap_last_error is the
  // latest one's message (names the file and the OS error; "" when none).
  int64_t preempt_ram = 0, preempt_disk = 0, preempt_recompute = 0, swap_failures = 0;
  std::string swap_last_error;
  int64_t swap_bytes_ram = 0, swap_bytes_disk = 0;  // currently stored
  int64_t swap_bytes_out_total = 0;                 // cumulative bytes saved
  double busy_s = 0.0;                              // time spent in steps
};

class Engine {
 public:
  // Loads the model (unless given), sizes the KV pool from kv.budget_bytes, measures eviction
  // costs (sched.measure_costs) and starts the loop. Errors: bad config values (kInvalidArgument,
  // field() "section.field"), model load errors, a budget smaller than one block, allocation
  // failure, kv.swap.dir not creatable, kSwapDisk forced without kv.swap.dir.
  static Result<std::unique_ptr<Engine>> create(const EngineConfig& config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues the thread. Errors are returned here (nothing is queued then):
  // kInvalidArgument for bad tokens, an empty prompt, sampling params or logprobs outside
  // [-1, kMaxLogprobs], and with field() "prompt" or "max_tokens" when the prompt (+ max_tokens)
  // exceeds n_ctx; kCannotFit (field "max_tokens") when prompt + max_tokens need more KV blocks
  // than the pool has (no retry can help); kOverCapacity when limits.max_queue threads are live
  // (retryable). Embedding threads (ThreadRequest::embed): "prompt" when the prompt exceeds what
  // one can take; any other thread on an encoder model is kInvalidArgument.
  Result<ThreadHandle> submit(ThreadRequest request);
  // The checks of submit() without queueing anything: the one place a request's limits are
  // checked (callers that need the prompt's tokens first, like the server's admission, call it
  // and then submit the prepared request). Tokenizes a text prompt into request->prompt_tokens
  // (clearing prompt; submit() then does not tokenize again), resolves max_tokens kToContextEnd to
  // what the context and the KV pool leave after the prompt (kCannotFit when that is nothing), sets
  // a scoring thread's max_tokens, and returns every error submit() returns except kOverCapacity.
  // Idempotent. Reads only what create() fixed: any thread, concurrently with everything.
  Status prepare(ThreadRequest* request) const;
  // Cancels a live thread: it finishes with kCancelled and its KV blocks are free within one
  // step. No effect when the id is unknown or the thread already finished.
  void cancel(ThreadId id);

  EngineStats stats() const;
  const Model& model() const;
  std::shared_ptr<const Model> model_ptr() const;
  const EngineConfig& config() const;  // with defaults resolved (n_threads, n_ctx)
  int32_t n_kv_blocks() const;
  size_t kv_bytes_per_token() const;
  size_t kv_block_bytes() const;

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmt
