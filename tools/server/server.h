// The HTTP layer of `llmthreads serve`: an OpenAI-compatible server over an Engine, on our
// event-driven HTTP/1.1 front (http-front.h: one epoll thread for every connection, deadlines
// per request, connection limits that slow or idle clients cannot fill, a pool of handler
// threads for complete requests).
//
// Endpoints: POST /v1/completions, POST /v1/chat/completions (JSON or SSE streaming; the request
// translation is openai.h), GET /v1/models, GET /health (200 {"status":"ok"} once an engine is
// attached, 503 {"status":"loading"} before, 503 {"status":"shutting_down"} while stopping),
// GET /metrics, POST /v1/tasks, GET /v1/tasks/{id}, DELETE /v1/tasks/{id}; POST /v1/embeddings,
// GET /v1/models/{id} (404 for any other id), POST /tokenize, POST /detokenize (bodies and
// fields: common/embeddings.h); the Files API (POST /v1/files as multipart/form-data with
// `purpose` and `file`, GET /v1/files, GET /v1/files/{id}, GET /v1/files/{id}/content, DELETE
// /v1/files/{id}) and the Batches API (POST /v1/batches, GET /v1/batches, GET /v1/batches/{id},
// POST /v1/batches/{id}/cancel), whose rules are in file-store.h, multipart.h, batch-store.h and
// server-batches.cpp. Files and batches are kept under ServerOptions::data_dir (a temporary folder
// removed by ~Server when ServerOptions::data_dir is empty); batches not finished when the server
// stopped or died resume at the next start() on the same data dir, and start() fails (kIo) when
// another server holds it (a Server holds its data dir from start() until it is destroyed).
// Embeddings run one embedding LLM thread per input (ThreadRequest::embed:
// pooled as the GGUF's pooling_type says; the mean of the final hidden states for a decoder file
// without one), normalized per embd_normalize (Euclidean by default, as llama.cpp's server); the
// request is admitted like a completion of min(inputs, max_queue) threads, and its inputs go into
// the engine at most max_queue at a time. On an encoder model the completion endpoints answer 400
// (it generates nothing). POST /v1/rerank (and /rerank) scores documents against a query with a
// reranker (bert with pooling_type rank: one embedding thread per (query, document) pair, admitted
// like embeddings); /v1/embeddings on such a model, and /v1/rerank on any other, answer 400.
//
// Metrics (GET /metrics, Prometheus text, Content-Type `text/plain; version=0.0.4`; the names are
// ServerMetrics' in metrics.h): every answered request is counted by route name (a
// fixed set: /health, /v1/models, /v1/models/{id}, /v1/completions, /v1/chat/completions,
// /v1/embeddings, /v1/rerank, /tokenize, /detokenize, /v1/tasks, /v1/tasks/{id}, /v1/files,
// /v1/files/{id}, /v1/files/{id}/content, /v1/batches, /v1/batches/{id}, /v1/batches/{id}/cancel,
// /metrics, "other"; never the raw path) and HTTP status; a batch's requests are not HTTP requests
// and are not counted there (their LLM threads are in the engine figures and the latency
// histograms). TTFT is the engine's submit -> first token sampled (ThreadTimings::ttft_s; with n >
// 1 choices the earliest choice's), observed once per completion request, streaming or not, that
// produced a token and was not failed by the engine nor abandoned by its client mid-stream.
// Inter-token latency is observed for every gap between consecutive token events of one choice as
// the request's handler receives them (streaming or not: both drain the threads' events), so a
// choice of k tokens gives k - 1 observations. Task (/v1/tasks) threads are in the engine gauges
// and counters but not in the latency histograms. The queue-tokens gauge is the admission control's
// queued prompt tokens; engine figures are read right before rendering.
//
// Tasks (POST /v1/tasks, body as task-api.h): validated (400 naming the field), then run as a Job
// (tasks.h) on the engine; answers 202 {"id": "task_<n>", "object": "task", "status": "running",
// "n_documents"}. Task threads do not pass the completions' admission control; a task has at
// most kMaxTaskDocuments documents, which its Job takes from the request while its window
// allows (JobLimits' defaults), so the engine's queue (max_queue) is never overrun. Results are
// rendered as `llmthreads run` renders them (common/task-render.h). GET /v1/tasks/{id} -> {"id",
// "object": "task", "task", "status": "running" | "completed" | "cancelled" | "failed", "progress":
// {"done", "total"}, "results": one entry per document in input order, null until that document is
// finished (partial results are shown while running)}; "failed" when every document failed,
// "completed" when all finished and at least one succeeded (each result carries its own error).
// DELETE /v1/tasks/{id} cancels the task's threads (their KV is freed within an engine step) and
// answers 200 with the task (status "cancelled" unless it had already finished); unknown ids get
// 404. At most 64 tasks are kept in memory: creating one more evicts finished tasks oldest-first,
// and when all 64 are still running the request gets 429. stop() cancels running tasks.
//
// Choices (n > 1): a request of n choices runs n engine threads of the same prompt (the prefix
// cache computes it once; choice i samples with seed + i, see openai.h). The response has n
// choices with index 0..n-1; usage counts the prompt once and sums the completion tokens.
// Streaming interleaves the choices' chunks as their tokens come, each tagged with its index
// (chat: first one role chunk per choice), then the usage chunk (include_usage) and one [DONE]
// after every choice ended. A client that goes away cancels all n threads; a choice whose thread
// fails ends the request (500, or an error event in a stream) and cancels the others.
//
// Admission control counts threads (a request of n choices counts n): a completion request is
// admitted only while the live threads plus its n stay within max_queue (n > max_queue is a 400),
// the prompt tokens of admitted requests that have not produced their first token (queued or
// prefilling; a request's prompt counts once whatever its n) stay within max_queue_tokens, and
// (max_queue_per_tenant > 0) its tenant's live threads plus n stay within max_queue_per_tenant
// (a tenant with nothing live is always admitted); otherwise 429 with Retry-After and an OpenAI
// error body.
//
// Retry-After (seconds, an integer in [1, kMaxRetryAfterS]) estimates when the refused request
// would be admitted: retry_after_seconds(work, rate), where rate is the engine's recent
// throughput (prefill + generated tokens per second of engine busy time, measured over a window
// of about 2 s of wall time between admissions; the lifetime average until one has passed; 1 s
// when nothing was measured yet) and work is, in engine tokens:
//   * thread limits (max_queue, per tenant): the least remaining work of a live request (of that
//     tenant) to its end, i.e. its prompt tokens not yet computed plus, per thread, its
//     max_tokens not yet generated times the live threads sharing each step (a pessimistic
//     bound: a thread ending early at end-of-text frees its slot sooner);
//   * max_queue_tokens: the queued prompt tokens that must be computed before this prompt fits,
//     queued + its prompt - max_queue_tokens;
//   * 64 tasks running (/v1/tasks): the engine's prompt tokens not yet computed.
// 503s while loading say Retry-After: 1. Bodies over max_body_bytes get 413; validation errors 400;
// with an api_key, every endpoint but /health needs `Authorization: Bearer KEY` (compared in
// constant time) or gets 401. No CORS headers are sent.
//
// Cancellation: a client that goes away (its connection closes or resets; a streaming one also
// when a chunk write fails) cancels its LLM threads (all n choices): a streaming request at its
// next event, a non-streaming completion or embeddings request within about 100 ms (it polls
// connection_closed(), http-front.h).
//
// Logprobs (completions `logprobs`, chat `logprobs` / `top_logprobs`; formats in openai.h) are
// computed by the engine (ThreadRequest::logprobs) only for requests that ask.
//
// Lifetime: start() binds and serves on an internal thread; attach_engine() makes the model
// endpoints ready (the engine must outlive the server's stop() / destruction); stop() shuts down
// gracefully. Thread-safety: every public member may be called from any thread; start() and
// attach_engine() once each, stop() any number of times (later calls return at once).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "llmthreads/engine.h"
#include "llmthreads/sampling.h"
#include "llmthreads/status.h"

namespace llmt::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                   // 0: any free port (see Server::port())
  std::string api_key;               // "" = no authentication
  int32_t max_queue = 64;            // live completion threads (choices) at most
  int64_t max_queue_tokens = 65536;  // prompt tokens of not-yet-generating requests; 0 = no limit
  int32_t max_queue_per_tenant = 0;  // live completion threads of one tenant at most; 0 = no limit
  size_t max_body_bytes = size_t{8} << 20;
  // Request handler threads (a live completion holds one until it is answered; idle and slow
  // connections hold none: http-front.h); 0 = max_queue + 16.
  int32_t n_http_threads = 0;
  double request_timeout_s = 10.0;  // a request (head and body) must arrive within this: else 408
  double idle_timeout_s = 30.0;     // a keep-alive connection waiting for its next request
  double write_timeout_s = 30.0;    // a client that reads nothing of its response this long
  int32_t max_connections = 16384;  // open connections (capped below RLIMIT_NOFILE)
  int32_t max_connections_per_client = 0;  // per client address; 0 = max_connections
  std::string model_name;                  // the model id clients see; "" = "model"
  std::string chat_format;                 // chat format name; "" = from the model's chat template
  int32_t default_max_tokens = 0;          // when a request has none; 0 = up to the context's end
  SamplingParams sampling;                 // fields a request does not set (llama.cpp's defaults)
  bool log_requests = false;               // one line per request to stderr
  // Where files and batches are kept (see the top of this file); "" = a temporary folder the
  // server creates and removes when destroyed (nothing survives a restart).
  std::string data_dir;
  int32_t batch_concurrency =
      0;  // requests of a batch in flight at once; 0 = max_queue / 4 in [1, 8]
};

struct ServerStats {
  int64_t n_live = 0;              // admitted completion requests not yet answered
  int64_t n_live_threads = 0;      // their threads (choices)
  int64_t n_queued_tokens = 0;     // their prompt tokens not yet past prefill
  int64_t n_requests = 0;          // HTTP requests answered
  int64_t n_rejected_queue = 0;    // 429s
  int64_t n_client_cancelled = 0;  // threads cancelled because the client went away
};

class Server {
 public:
  explicit Server(ServerOptions options);
  // stop(0) if still running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port and starts serving (without an engine: /health says 503). Errors: kIo when
  // the address cannot be bound, kInvalidArgument for bad options.
  Status start();
  // The bound port (after start()).
  int port() const;
  // Makes the model endpoints ready. kInvalidArgument for an unknown ServerOptions::chat_format.
  Status attach_engine(Engine* engine);
  // Answers new requests with 503, lets live requests finish for up to grace_s seconds, then
  // cancels their threads and waits for their responses to end (a cancelled stream still gets its
  // final chunk); only then stops listening and closes idle connections. The serving thread is
  // joined before this returns.
  void stop(double grace_s);
  ServerStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

inline constexpr int kMaxRetryAfterS = 60;

// Seconds until `work_tokens` of engine work are done at `tokens_per_s`, rounded up and clamped
// to [1, kMaxRetryAfterS]; 1 when the rate is unknown (<= 0, not finite). The Retry-After rule
// (see the top of this file).
int retry_after_seconds(double work_tokens, double tokens_per_s);

// Constant-time comparison of two strings (time depends on their lengths only).
bool constant_time_equal(const std::string& a, const std::string& b);

}  // namespace llmt::server
