// The server's insides, shared by its sections: server.cpp (lifecycle: start, attach_engine, stop),
// server-routes.cpp (the routes, auth, errors, /metrics), server-completions.cpp (a completion
// request: OpenAI body -> LLM threads -> response), server-streaming.cpp (SSE responses) and
// server-tasks.cpp (/v1/tasks). Internal to tools/server; see server.h for the contracts.
//
// Thread-safety: Server::Impl's fields are guarded as their comments say (mu, tasks_mu, a
// TaskEntry's own mutexes); the helpers here are pure or act on the caller's response only.
#pragma once

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <ctime>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "batch-store.h"
#include "common/openai.h"
#include "file-store.h"
#include "http-front.h"
#include "llmthreads/engine.h"
#include "llmthreads/tasks.h"
#include "llmthreads/tokenizer.h"
#include "metrics.h"
#include "server.h"

namespace llmt::server {

// The server's sections speak the OpenAI translation's terms (Endpoint, error_body, ...).
using namespace openai;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

inline constexpr const char* kJson = "application/json";

// Tasks kept (running or finished); see server.h.
inline constexpr size_t kMaxTasks = 64;

inline void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), kJson);
}

// A 429 gets Retry-After: retry_after_s (see retry_after_seconds()).
inline void send_error(httplib::Response& res, const Status& s, int retry_after_s = 1) {
  send_json(res, http_status_for(s), error_body_for(s));
  if (res.status == 429) res.set_header("Retry-After", std::to_string(retry_after_s));
}

// The events of one request's threads (one per choice), gathered from the engine's callbacks
// (ThreadRequest::on_event, run on the engine loop: push() only queues) for the handler thread.
class Fanin {
 public:
  struct Item {
    int32_t index;  // the choice
    ThreadEvent event;
  };
  void push(int32_t index, const ThreadEvent& ev) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      items_.push_back(Item{index, ev});
    }
    cv_.notify_one();
  }
  // Appends the queued events to *out, waiting up to `timeout` for one; false when none came.
  bool take(std::vector<Item>* out, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lk(mu_);
    if (!cv_.wait_for(lk, timeout, [&] { return !items_.empty(); })) return false;
    for (Item& it : items_) out->push_back(std::move(it));
    items_.clear();
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Item> items_;
};

// A failed store operation: 507 when the disk is full (kOutOfMemory), 404 for kNotFound, else 500
// (server-files.cpp).
void send_storage_error(httplib::Response& res, const Status& s);

// Parses the request body as JSON into *out; false after answering 400 when it is not JSON.
inline bool parse_body(const httplib::Request& req, httplib::Response& res, json* out) {
  try {
    *out = json::parse(req.body);
  } catch (const json::exception& e) {
    send_json(res, 400,
              error_body(std::string("invalid JSON body: ") + e.what(), "invalid_request_error",
                         "invalid_json"));
    return false;
  }
  return true;
}

inline int64_t unix_now() {
  return static_cast<int64_t>(std::time(nullptr));
}

enum class TaskStatus { kRunning, kCompleted, kCancelled, kFailed };
inline const char* task_status_name(TaskStatus s) {
  switch (s) {
    case TaskStatus::kRunning:
      return "running";
    case TaskStatus::kCompleted:
      return "completed";
    case TaskStatus::kCancelled:
      return "cancelled";
    case TaskStatus::kFailed:
      return "failed";
  }
  return "running";
}

// The documents of a task, handed to its Job one at a time (Job::feed_async: the job's feeder
// thread calls next()); a text's memory is released once it is handed over.
class TextSource : public DocumentSource {
 public:
  explicit TextSource(std::vector<std::string> texts) : texts_(std::move(texts)) {}
  Result<bool> next(Document* doc) override {
    const size_t i = n_given_;
    if (i >= texts_.size()) return false;
    doc->index = i;
    doc->text = std::move(texts_[i]);
    texts_[i] = std::string();
    n_given_ = i + 1;
    return true;
  }

 private:
  std::vector<std::string> texts_;
  size_t n_given_ = 0;  // feeder thread only
};

// One task of POST /v1/tasks: its Job and its per-document results.
struct TaskEntry {
  std::string id;             // "task_<n>"
  TaskSpec spec;              // for the result JSON (label names)
  std::vector<json> doc_ids;  // the clients' ids, in input order

  mutable std::mutex mu;  // guards the fields below
  TaskStatus status = TaskStatus::kRunning;
  std::vector<json> results;  // per document in input order; null until delivered
  size_t n_done = 0;
  size_t n_failed = 0;

  std::unique_ptr<TextSource> source;  // outlives `job`, which feeds from it

  // Guards `job` (cancel() and feed_async() against its destruction); never held by the callback.
  std::mutex job_mu;
  std::unique_ptr<Job> job;  // declared last: destroyed first, while the above live

  // Records one document's result (the job's callback, or a document never fed). Thread-safe.
  void deliver(size_t index, json result, bool ok) {
    std::lock_guard<std::mutex> lk(mu);
    if (index >= results.size() || !results[index].is_null()) return;
    results[index] = std::move(result);
    ++n_done;
    if (!ok) ++n_failed;
    if (n_done == results.size() && status == TaskStatus::kRunning) {
      status = n_failed == n_done ? TaskStatus::kFailed : TaskStatus::kCompleted;
    }
  }
  bool finished() const {
    std::lock_guard<std::mutex> lk(mu);
    return status != TaskStatus::kRunning;
  }
  // {"id", "object": "task", "task", "status", "progress": {"done", "total"}, "results"}.
  json to_json() const {
    std::lock_guard<std::mutex> lk(mu);
    return {{"id", id},
            {"object", "task"},
            {"task", task_type_name(spec.type)},
            {"status", task_status_name(status)},
            {"progress", {{"done", n_done}, {"total", results.size()}}},
            {"results", results}};
  }
};

// One batch of /v1/batches (server-batches.cpp): its state, persisted as <dir>/batch.json.
struct BatchEntry {
  std::string dir;  // <data dir>/batches/<id>: batch.json, input.jsonl, results.jsonl
  // Set by a cancel (and read by the batch's requests as their connection closing, so the
  // handlers cancel their threads as for a client that went away).
  std::shared_ptr<std::atomic<bool>> cancel = std::make_shared<std::atomic<bool>>(false);
  mutable std::mutex mu;  // guards rec; held while batch.json is written (writes stay ordered)
  BatchRecord rec;
  json to_json() const {
    std::lock_guard<std::mutex> lk(mu);
    return rec.to_json();
  }
};

// Destroys a task's Job (cancelling what still runs and waiting for its worker) without holding
// any server lock.
inline void release_job(TaskEntry& e) {
  std::unique_ptr<Job> job;
  {
    std::lock_guard<std::mutex> lk(e.job_mu);
    job = std::move(e.job);
  }
  job.reset();
}

struct Server::Impl {
  ServerOptions opt;
  std::unique_ptr<HttpFront> http;  // created by start()
  int port = 0;
  std::string id_prefix;  // random per run, so response ids do not repeat across restarts

  // Set once by attach_engine (under mu); read by handlers.
  Engine* engine = nullptr;
  TranslateOptions translate;

  class Ticket;
  // One admitted completion request.
  struct LiveRequest {
    Ticket* ticket = nullptr;
    std::vector<ThreadId> threads;  // submitted so far
  };

  mutable std::mutex mu;
  std::condition_variable cv;            // n_live changes
  std::map<uint64_t, LiveRequest> live;  // admission key -> request
  int64_t live_threads = 0;              // threads (choices) of the live requests
  int64_t queued_tokens = 0;
  std::map<uint64_t, int32_t> tenant_live;  // live threads per tenant id (entries > 0 only)
  // The engine's recent throughput for Retry-After (guarded by mu): a snapshot of its processed
  // tokens and busy time, replaced once it is kRateWindowS old, and the last rate measured.
  Clock::time_point rate_snap_t{};
  int64_t rate_snap_tokens = 0;
  double rate_snap_busy_s = 0.0;
  double tokens_per_s = 0.0;
  uint64_t next_key = 1;
  bool draining = false;
  bool stopped = false;
  bool cancel_all = false;  // stop(): the grace is over; threads submitted now are cancelled
  ServerStats counters;

  std::atomic<uint64_t> next_id{1};

  // Created in the constructor; null only when that failed (start() then fails).
  std::unique_ptr<ServerMetrics> metrics;

  // Tasks (POST /v1/tasks) by the n of their id "task_<n>", so oldest first.
  std::mutex tasks_mu;
  std::map<uint64_t, std::shared_ptr<TaskEntry>> tasks;
  uint64_t next_task = 1;
  bool tasks_closed = false;  // stop() passed: no new tasks

  // Files and batches (server-files.cpp, server-batches.cpp), set up by start().
  std::string data_dir;       // opt.data_dir, or owned_tmp_dir
  std::string owned_tmp_dir;  // without a data dir: a temporary folder, removed with the server
  int data_dir_lock_fd = -1;  // flock'ed <data dir>/.lock: one server per data dir
  std::unique_ptr<FileStore> files;
  std::mutex batches_mu;
  std::condition_variable batches_cv;  // batch_queue, batches_stopping or a batch's cancel flag
  std::map<std::string, std::shared_ptr<BatchEntry>> batches;  // by id (guarded by batches_mu)
  std::deque<std::shared_ptr<BatchEntry>> batch_queue;         // to run, oldest first
  uint64_t next_batch_seq = 1;
  bool batches_stopping = false;  // stop() began: no new batch work
  std::thread batch_driver;       // started by attach_engine, joined by stop()

  // The queued-tokens gauge follows queued_tokens. Requires mu.
  void publish_queue_locked() {
    if (metrics) metrics->set_queue_tokens(queued_tokens);
  }
  // TTFT of a finished completion request (its earliest choice to produce a token), unless
  // one of its threads failed or none produced a token.
  void observe_finished(const std::vector<std::shared_ptr<const ThreadResult>>& results) {
    if (!metrics) return;
    double ttft = -1.0;
    for (const auto& r : results) {
      if (!r || r->finish_reason == FinishReason::kError) return;
      if (r->usage.completion_tokens > 0 && (ttft < 0 || r->timings.ttft_s < ttft)) {
        ttft = r->timings.ttft_s;
      }
    }
    if (ttft >= 0) metrics->observe_ttft(ttft);
  }
  // The gap since the previous token event of the same request (none for the first).
  void observe_token(std::optional<Clock::time_point>* last) {
    const Clock::time_point now = Clock::now();
    if (metrics && *last) {
      metrics->observe_itl(std::chrono::duration<double>(now - **last).count());
    }
    *last = now;
  }

  // One admitted request of n_threads threads (choices): holds their slots (and its prompt
  // tokens until the first token of any choice) until destroyed.
  class Ticket {
   public:
    Ticket(Impl* impl, uint64_t key, int64_t tokens, uint64_t tenant, int32_t n_threads,
           int32_t max_tokens)
        : impl_(impl),
          key_(key),
          tokens_(tokens),
          tenant_(tenant),
          n_threads_(n_threads),
          max_tokens_(max_tokens) {}
    ~Ticket() {
      std::lock_guard<std::mutex> lk(impl_->mu);
      auto t = impl_->tenant_live.find(tenant_);
      if (t != impl_->tenant_live.end() && (t->second -= n_threads_) <= 0) {
        impl_->tenant_live.erase(t);
      }
      impl_->queued_tokens -= tokens_;
      impl_->live_threads -= n_threads_;
      impl_->publish_queue_locked();
      impl_->live.erase(key_);
      impl_->cv.notify_all();
    }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    void add_thread(ThreadId id) {
      std::lock_guard<std::mutex> lk(impl_->mu);
      impl_->live[key_].threads.push_back(id);
      if (impl_->cancel_all && impl_->engine) impl_->engine->cancel(id);  // stop() passed us by
    }
    // A choice produced a token: the prompt no longer counts as queued (after the first).
    void on_token() {
      generated_.fetch_add(1, std::memory_order_relaxed);
      if (tokens_ == 0) return;
      std::lock_guard<std::mutex> lk(impl_->mu);
      impl_->queued_tokens -= tokens_;
      impl_->publish_queue_locked();
      tokens_ = 0;
    }
    // Engine tokens still to process before this request ends if the engine's throughput is
    // shared by `n_live_threads` threads: its queued prompt plus, per thread, the tokens left to
    // max_tokens times the threads sharing each step. Requires impl->mu.
    double remaining_work_locked(int64_t n_live_threads) const {
      const double per_thread_done =
          static_cast<double>(generated_.load(std::memory_order_relaxed)) / n_threads_;
      const double left = std::max(0.0, max_tokens_ - per_thread_done);
      return static_cast<double>(tokens_) +
             left * static_cast<double>(std::max<int64_t>(n_live_threads, 1));
    }
    uint64_t tenant() const { return tenant_; }

   private:
    Impl* impl_;
    uint64_t key_;
    int64_t tokens_;  // guarded by impl->mu (written by the handler thread only)
    uint64_t tenant_;
    int32_t n_threads_;
    int32_t max_tokens_;
    std::atomic<int64_t> generated_{0};  // token events of all choices
  };

  // The engine's recent throughput in tokens (prefill + generated) per second of its busy time;
  // 0 when nothing was measured yet. Requires mu.
  double tokens_per_s_locked() {
    if (!engine) return tokens_per_s;
    constexpr double kRateWindowS = 2.0;
    const EngineStats es = engine->stats();
    const int64_t tokens = es.prefill_tokens + es.generated_tokens;
    const Clock::time_point now = Clock::now();
    if (rate_snap_t == Clock::time_point{}) {
      // First look: the engine's lifetime average until a window has passed.
      if (es.busy_s > 0) tokens_per_s = static_cast<double>(tokens) / es.busy_s;
      rate_snap_t = now;
      rate_snap_tokens = tokens;
      rate_snap_busy_s = es.busy_s;
      return tokens_per_s;
    }
    const double busy = es.busy_s - rate_snap_busy_s;
    if (busy > 0.05) {
      tokens_per_s = static_cast<double>(tokens - rate_snap_tokens) / busy;
    } else if (tokens_per_s <= 0 && es.busy_s > 0) {
      tokens_per_s = static_cast<double>(tokens) / es.busy_s;
    }
    if (std::chrono::duration<double>(now - rate_snap_t).count() >= kRateWindowS) {
      rate_snap_t = now;
      rate_snap_tokens = tokens;
      rate_snap_busy_s = es.busy_s;
    }
    return tokens_per_s;
  }

  // Retry-After for a request refused by the thread limits: the soonest end of one of the live
  // requests `of_tenant` selects (all when it is null), at the current throughput. Requires mu.
  int retry_after_threads_locked(const uint64_t* of_tenant) {
    double work = -1.0;
    for (const auto& [key, lr] : live) {
      if (!lr.ticket || (of_tenant && lr.ticket->tenant() != *of_tenant)) continue;
      const double w = lr.ticket->remaining_work_locked(live_threads);
      if (work < 0 || w < work) work = w;
    }
    return retry_after_seconds(std::max(work, 1.0), tokens_per_s_locked());
  }

  // Admits a request of n_threads threads (choices) of n_prompt prompt tokens and max_tokens
  // each from `tenant`, or says why not (kOverCapacity -> 429, *retry_after_s set).
  Result<std::shared_ptr<Ticket>> admit(int64_t n_prompt, uint64_t tenant, int32_t n_threads,
                                        int32_t max_tokens, int* retry_after_s) {
    std::lock_guard<std::mutex> lk(mu);
    *retry_after_s = 1;
    if (opt.max_queue_per_tenant > 0) {
      auto t = tenant_live.find(tenant);
      const int64_t mine = t != tenant_live.end() ? t->second : 0;
      if (mine > 0 && mine + n_threads > opt.max_queue_per_tenant) {
        ++counters.n_rejected_queue;
        *retry_after_s = retry_after_threads_locked(&tenant);
        return over_capacity("too many requests in flight for this tenant (limit " +
                             std::to_string(opt.max_queue_per_tenant) + " threads); retry later");
      }
    }
    if (live_threads + n_threads > opt.max_queue) {
      ++counters.n_rejected_queue;
      *retry_after_s = retry_after_threads_locked(nullptr);
      return over_capacity("the server is busy: " + std::to_string(live_threads) +
                           " threads in flight (limit " + std::to_string(opt.max_queue) +
                           "); retry later");
    }
    if (opt.max_queue_tokens > 0 && queued_tokens > 0 &&
        queued_tokens + n_prompt > opt.max_queue_tokens) {
      ++counters.n_rejected_queue;
      *retry_after_s =
          retry_after_seconds(static_cast<double>(queued_tokens + n_prompt - opt.max_queue_tokens),
                              tokens_per_s_locked());
      return over_capacity("the server is busy: " + std::to_string(queued_tokens) +
                           " prompt tokens queued (limit " + std::to_string(opt.max_queue_tokens) +
                           "); retry later");
    }
    (void)tokens_per_s_locked();  // keeps the throughput window moving
    const uint64_t key = next_key++;
    queued_tokens += n_prompt;
    live_threads += n_threads;
    tenant_live[tenant] += n_threads;
    publish_queue_locked();
    auto ticket = std::make_shared<Ticket>(this, key, n_prompt, tenant, n_threads, max_tokens);
    live[key].ticket = ticket.get();
    return ticket;
  }

  std::string new_id(Endpoint ep) {
    return std::string(ep == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-") + id_prefix +
           std::to_string(next_id.fetch_add(1));
  }

  // 503 while loading or stopping; the engine otherwise.
  Engine* ready_engine(httplib::Response& res, TranslateOptions* tr) {
    std::lock_guard<std::mutex> lk(mu);
    if (draining) {
      send_json(res, 503,
                error_body("the server is shutting down", "server_error", "shutting_down"));
      return nullptr;
    }
    if (!engine) {
      send_json(res, 503,
                error_body("the model is loading; retry shortly", "server_error", "model_loading"));
      res.set_header("Retry-After", "1");
      return nullptr;
    }
    if (tr) *tr = translate;
    return engine;
  }

  void handle_completion(const httplib::Request& req, httplib::Response& res, Endpoint ep);
  // Files (server-files.cpp).
  void handle_file_upload(const httplib::Request& req, httplib::Response& res);
  void handle_file_list(const httplib::Request& req, httplib::Response& res);
  void install_file_routes(HttpFront& http);
  // Batches (server-batches.cpp).
  // Opens the data dir (or makes the temporary one), its files and its batches (start()).
  Status open_storage();
  void close_storage();  // ~Server: releases the data dir lock, removes the temporary one
  void install_batch_routes(HttpFront& http);
  void handle_batch_create(const httplib::Request& req, httplib::Response& res);
  void handle_batch_list(const httplib::Request& req, httplib::Response& res);
  void handle_batch_cancel(const httplib::Request& req, httplib::Response& res);
  std::shared_ptr<BatchEntry> find_batch(const httplib::Request& req, httplib::Response& res);
  void start_batches();       // attach_engine(): the driver thread
  void begin_stop_batches();  // stop(): no new requests of batches
  void join_batches();        // stop(): after the live requests ended
  void batch_driver_loop();
  void run_batch(BatchEntry& e);
  // Runs the requests of e not yet in its results log; false when the log cannot be written.
  bool run_batch_requests(BatchEntry& e, const std::vector<BatchLine>& lines);
  // One request of a batch through the live endpoint's handler. false: not answered (the
  // server is stopping or the batch was cancelled); it is not recorded.
  bool run_batch_request(BatchEntry& e, const BatchLine& line, int* status, json* body);
  void finalize_batch(BatchEntry& e);
  Status save_batch_locked(BatchEntry& e);  // requires e.mu
  // How a stream's chunks are written.
  struct StreamOptions {
    std::string model;                        // the served model id
    bool include_usage = false;               // stream_options.include_usage: a last usage chunk
    const Tokenizer* logprobs_tok = nullptr;  // render logprobs with it (null: not requested)
    // Chat answers parsed as they stream (AssistantStreamParser): content and reasoning_content
    // deltas, tool calls as one tool_calls delta at the end (finish_reason "tool_calls").
    ToolCallFamily tool_family = ToolCallFamily::kNone;
    bool parse_reasoning = false;
    bool reasoning_open = false;  // the prompt ends in "<think>"
    uint64_t seed = 0;  // every chunk carries "seed" (the request's; choice i used seed + i)
  };
  // One stream's state and the writer of its chunks (server-streaming.cpp).
  struct StreamState;
  class StreamWriter;
  // Streams the choices of a submitted request (threads `ids`, events through `fan`) as SSE.
  void stream_response(httplib::Response& res, Endpoint ep, std::shared_ptr<Ticket> ticket,
                       std::shared_ptr<Fanin> fan, std::vector<ThreadId> ids, Engine* engine,
                       StreamOptions so);
  void handle_task_create(const httplib::Request& req, httplib::Response& res);
  // server-embeddings.cpp: POST /v1/embeddings, /tokenize, /detokenize; GET /v1/models/{id}.
  // priority: of its threads (batches run theirs below the live requests).
  void handle_embeddings(const httplib::Request& req, httplib::Response& res, int32_t priority = 0);
  // POST /v1/rerank and /rerank (common/embeddings.h): one embedding thread per document.
  void handle_rerank(const httplib::Request& req, httplib::Response& res, int32_t priority = 0);
  // Runs one embedding LLM thread per input (at most max_queue at once) and fills *out in input
  // order. false when it sent an error response instead (admission, a refused input, named as
  // input_field, an engine failure) or the client went away.
  bool run_embedding_threads(const httplib::Request& req, httplib::Response& res, Engine* eng,
                             std::vector<std::vector<int32_t>> inputs, int32_t priority,
                             const char* input_field, std::vector<std::vector<float>>* out);
  void handle_tokenize(const httplib::Request& req, httplib::Response& res);
  void handle_detokenize(const httplib::Request& req, httplib::Response& res);
  void handle_model(const httplib::Request& req, httplib::Response& res);
  // The task named by the route's id, or nullptr after answering 404.
  std::shared_ptr<TaskEntry> find_task(const httplib::Request& req, httplib::Response& res);
  void install_routes(HttpFront& http);
};

}  // namespace llmt::server
