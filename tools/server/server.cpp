#include "server.h"

#include <httplib.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "llmthreads/tasks.h"
#include "llmthreads/tokenizer.h"
#include "openai.h"
#include "server/metrics.h"
#include "task-api.h"

namespace llmt::server {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kJson = "application/json";
// The connection of a request, for noticing that a non-streaming client went away (cpp-httplib
// 0.11.4 does not expose it to handlers): the socket among this process's descriptors whose
// local port is the server's and whose peer is the request's remote address and port. -1 when
// none is found (e.g. an address family we do not match). Linux (/proc/self/fd); the descriptor
// stays this connection's while its handler runs (httplib closes it afterwards).
int find_connection_fd(const std::string& remote_addr, int remote_port, int local_port) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (dirent* ent = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(ent->d_name, &end, 10);
    if (end == ent->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    struct stat st;
    if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof(local), pl = sizeof(peer);
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &ll) != 0 ||
        getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) {
      continue;
    }
    char host[INET6_ADDRSTRLEN] = {0};
    int lport = -1, pport = -1;
    if (peer.ss_family == AF_INET && local.ss_family == AF_INET) {
      const auto* p4 = reinterpret_cast<const sockaddr_in*>(&peer);
      inet_ntop(AF_INET, &p4->sin_addr, host, sizeof(host));
      pport = ntohs(p4->sin_port);
      lport = ntohs(reinterpret_cast<const sockaddr_in*>(&local)->sin_port);
    } else if (peer.ss_family == AF_INET6 && local.ss_family == AF_INET6) {
      const auto* p6 = reinterpret_cast<const sockaddr_in6*>(&peer);
      inet_ntop(AF_INET6, &p6->sin6_addr, host, sizeof(host));
      pport = ntohs(p6->sin6_port);
      lport = ntohs(reinterpret_cast<const sockaddr_in6*>(&local)->sin6_port);
    } else {
      continue;
    }
    if (lport == local_port && pport == remote_port && remote_addr == host) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

// True when the peer of socket fd has closed or reset the connection (no data is consumed).
bool peer_gone(int fd) {
  pollfd p{fd, static_cast<short>(POLLRDHUP), 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

// Tasks kept (running or finished); see server.h.
constexpr size_t kMaxTasks = 64;

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), kJson);
}

// A 429 gets Retry-After: retry_after_s (see retry_after_seconds()).
void send_error(httplib::Response& res, const Status& s, int retry_after_s = 1) {
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

// Parses the request body as JSON into *out; false after answering 400 when it is not JSON.
bool parse_body(const httplib::Request& req, httplib::Response& res, json* out) {
  try {
    *out = json::parse(req.body);
  } catch (const json::exception& e) {
    send_json(res, 400, error_body(std::string("invalid JSON body: ") + e.what(),
                                   "invalid_request_error", "invalid_json"));
    return false;
  }
  return true;
}

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

// The route name a request is counted under in /metrics: one of a fixed set, never the raw path
// (which a client chooses, and would make the series unbounded).
const char* route_name(const std::string& path) {
  static constexpr const char* kRoutes[] = {"/health",    "/v1/models", "/v1/completions",
                                            "/v1/chat/completions", "/v1/tasks", "/metrics"};
  for (const char* r : kRoutes) {
    if (path == r) return r;
  }
  if (path.rfind("/v1/tasks/", 0) == 0) return "/v1/tasks/{id}";
  return "other";
}

// The n of "task_<n>" (n >= 1), or 0 for anything else.
uint64_t parse_task_number(const std::string& id) {
  constexpr std::string_view kPrefix = "task_";
  if (id.size() <= kPrefix.size() || id.size() > kPrefix.size() + 19 ||
      id.compare(0, kPrefix.size(), kPrefix) != 0) {
    return 0;
  }
  uint64_t n = 0;
  for (size_t i = kPrefix.size(); i < id.size(); ++i) {
    if (id[i] < '0' || id[i] > '9') return 0;
    n = n * 10 + static_cast<uint64_t>(id[i] - '0');
  }
  return n;
}

enum class TaskStatus { kRunning, kCompleted, kCancelled, kFailed };
const char* task_status_name(TaskStatus s) {
  switch (s) {
    case TaskStatus::kRunning: return "running";
    case TaskStatus::kCompleted: return "completed";
    case TaskStatus::kCancelled: return "cancelled";
    case TaskStatus::kFailed: return "failed";
  }
  return "running";
}

// One task of POST /v1/tasks: its Job and its per-document results.
struct TaskEntry {
  std::string id;                    // "task_<n>"
  TaskSpec spec;                     // for the result JSON (label names)
  std::vector<json> doc_ids;         // the clients' ids, in input order

  mutable std::mutex mu;             // guards the fields below
  TaskStatus status = TaskStatus::kRunning;
  std::vector<json> results;         // per document in input order; null until delivered
  size_t n_done = 0;
  size_t n_failed = 0;

  // Guards `job` (cancel() and add() against its destruction); never held by the callback.
  std::mutex job_mu;
  std::unique_ptr<Job> job;          // declared last: destroyed first, while the above live

  // Records one document's result (the job's callback, or add() refused). Thread-safe.
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

// Destroys a task's Job (cancelling what still runs and waiting for its worker) without holding
// any server lock.
void release_job(TaskEntry& e) {
  std::unique_ptr<Job> job;
  {
    std::lock_guard<std::mutex> lk(e.job_mu);
    job = std::move(e.job);
  }
  job.reset();
}

// httplib::Server with access to its listening socket: cpp-httplib 0.11.4 listens with a
// backlog of 5, so a burst of connections overflows the accept queue (the kernel then drops
// handshakes and data, and a client's request can arrive after the read timeout). listen()
// again on the bound socket raises the backlog.
class HttpServer : public httplib::Server {
 public:
  void raise_backlog(int backlog) {
    const socket_t fd = svr_sock_;
    if (fd != INVALID_SOCKET) ::listen(fd, backlog);
  }
};

}  // namespace

int retry_after_seconds(double work_tokens, double tokens_per_s) {
  if (!(tokens_per_s > 0) || !std::isfinite(tokens_per_s)) return 1;
  const double s = std::ceil(std::max(work_tokens, 0.0) / tokens_per_s);
  if (!(s >= 1)) return 1;  // NaN too
  return s >= kMaxRetryAfterS ? kMaxRetryAfterS : static_cast<int>(s);
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff = static_cast<unsigned char>(diff | (x ^ y));
  }
  return diff == 0;
}

struct Server::Impl {
  ServerOptions opt;
  HttpServer http;
  std::thread listen_thread;
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
  // each from `tenant`, or says why not (kOutOfMemory -> 429, *retry_after_s set).
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
        return Status(StatusCode::kOutOfMemory,
                      "too many requests in flight for this tenant (limit " +
                          std::to_string(opt.max_queue_per_tenant) + " threads); retry later");
      }
    }
    if (live_threads + n_threads > opt.max_queue) {
      ++counters.n_rejected_queue;
      *retry_after_s = retry_after_threads_locked(nullptr);
      return Status(StatusCode::kOutOfMemory,
                    "the server is busy: " + std::to_string(live_threads) +
                        " threads in flight (limit " + std::to_string(opt.max_queue) +
                        "); retry later");
    }
    if (opt.max_queue_tokens > 0 && queued_tokens > 0 &&
        queued_tokens + n_prompt > opt.max_queue_tokens) {
      ++counters.n_rejected_queue;
      *retry_after_s =
          retry_after_seconds(static_cast<double>(queued_tokens + n_prompt - opt.max_queue_tokens),
                              tokens_per_s_locked());
      return Status(StatusCode::kOutOfMemory,
                    "the server is busy: " + std::to_string(queued_tokens) +
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
      send_json(res, 503, error_body("the server is shutting down", "server_error", "shutting_down"));
      return nullptr;
    }
    if (!engine) {
      send_json(res, 503, error_body("the model is loading; retry shortly", "server_error",
                                     "model_loading"));
      res.set_header("Retry-After", "1");
      return nullptr;
    }
    if (tr) *tr = translate;
    return engine;
  }

  void handle_completion(const httplib::Request& req, httplib::Response& res, Endpoint ep);
  // Streams the choices of a submitted request (threads `ids`, events through `fan`) as SSE;
  // logprobs_tok: render logprobs with it (null: not requested).
  void stream_response(httplib::Response& res, Endpoint ep, std::shared_ptr<Ticket> ticket,
                       std::shared_ptr<Fanin> fan, std::vector<ThreadId> ids, Engine* engine,
                       std::string model, bool include_usage, const Tokenizer* logprobs_tok);
  void handle_task_create(const httplib::Request& req, httplib::Response& res);
  // The task named by the route's id, or nullptr after answering 404.
  std::shared_ptr<TaskEntry> find_task(const httplib::Request& req, httplib::Response& res);
  void install_routes();
};

void Server::Impl::handle_completion(const httplib::Request& req, httplib::Response& res,
                                     Endpoint ep) {
  TranslateOptions tr;
  Engine* eng = ready_engine(res, &tr);
  if (!eng) return;
  json body;
  if (!parse_body(req, res, &body)) return;
  OpenAiRequest oreq;
  if (Status s = parse_openai_request(body, ep, opt.sampling, &oreq); !s.is_ok()) {
    send_error(res, s);
    return;
  }
  Result<ThreadRequest> treq = to_thread_request(oreq, tr);
  if (!treq.is_ok()) {
    send_error(res, treq.status());
    return;
  }
  const int32_t n = oreq.n;
  if (n > opt.max_queue) {
    send_error(res, invalid_argument("\"n\" = " + std::to_string(n) + " exceeds the " +
                                     std::to_string(opt.max_queue) +
                                     " threads this server runs at once (--max-queue)"));
    return;
  }
  const int64_t n_prompt = static_cast<int64_t>(treq->prompt_tokens.size());
  int retry_after_s = 1;
  Result<std::shared_ptr<Ticket>> ticket =
      admit(n_prompt, treq->tenant, n, treq->max_tokens, &retry_after_s);
  if (!ticket.is_ok()) {
    send_error(res, ticket.status(), retry_after_s);
    return;
  }
  // One thread per choice, same prompt (the prefix cache computes it once), seeds seed + i; their
  // events meet in one queue.
  auto fan = std::make_shared<Fanin>();
  std::vector<ThreadId> ids;
  const uint64_t seed = treq->sampling.seed;
  for (int32_t i = 0; i < n; ++i) {
    ThreadRequest r = i + 1 < n ? *treq : std::move(*treq);
    r.sampling.seed = choice_seed(seed, i);
    r.on_event = [fan, i](const ThreadEvent& ev) { fan->push(i, ev); };
    Result<ThreadHandle> h = eng->submit(std::move(r));
    if (!h.is_ok()) {
      for (ThreadId id : ids) eng->cancel(id);
      send_error(res, h.status(), retry_after_s);
      return;
    }
    ids.push_back(h->id());
    (*ticket)->add_thread(h->id());
  }
  const std::string model = tr.model_name;
  const Tokenizer& tok = tr.model->tokenizer();
  const bool logprobs = oreq.logprobs >= 0;
  if (oreq.stream) {
    stream_response(res, ep, std::move(*ticket), std::move(fan), std::move(ids), eng, model,
                    oreq.include_usage, logprobs ? &tok : nullptr);
    return;
  }
  // Non-streaming: drain the events (the first token releases the queued prompt tokens).
  std::vector<std::shared_ptr<const ThreadResult>> results(static_cast<size_t>(n));
  std::vector<std::optional<Clock::time_point>> last_token(static_cast<size_t>(n));
  int32_t n_done = 0;
  // The connection is looked up only once the request has run for a while (short requests never
  // pay for the scan); a client that closed it gets its threads cancelled.
  int conn_fd = -2;  // -2: not looked up yet; -1: not found
  bool client_gone = false;
  constexpr auto kCheckEvery = std::chrono::milliseconds(100);
  Clock::time_point next_check = Clock::now() + kCheckEvery;
  std::vector<Fanin::Item> items;
  while (n_done < n) {
    items.clear();
    fan->take(&items, kCheckEvery);
    if (!client_gone && Clock::now() >= next_check) {
      next_check = Clock::now() + kCheckEvery;
      if (conn_fd == -2) conn_fd = find_connection_fd(req.remote_addr, req.remote_port, port);
      if (conn_fd >= 0 && peer_gone(conn_fd)) {
        client_gone = true;
        for (ThreadId id : ids) eng->cancel(id);
        std::lock_guard<std::mutex> lk(mu);
        ++counters.n_client_cancelled;
      }
    }
    for (Fanin::Item& it : items) {
      const size_t i = static_cast<size_t>(it.index);
      if (it.event.kind == ThreadEvent::Kind::kToken) {
        (*ticket)->on_token();
        observe_token(&last_token[i]);
      } else if (!results[i]) {
        results[i] = std::move(it.event.result);
        ++n_done;
        // A failed choice fails the request (500 below): stop the others now, as streaming does.
        if (results[i]->finish_reason == FinishReason::kError) {
          for (ThreadId id : ids) eng->cancel(id);
        }
      }
    }
  }
  observe_finished(results);
  std::vector<ChoiceOutput> choices;
  std::vector<Usage> usages;
  // A failure first: its siblings were cancelled because of it, not by a shutdown.
  for (const auto& r : results) {
    if (r->finish_reason == FinishReason::kError) {
      send_json(res, 500,
                error_body("generation failed: " + r->error, "server_error", "engine_error"));
      return;
    }
  }
  for (const auto& r : results) {
    if (r->finish_reason == FinishReason::kCancelled) {
      send_json(res, 503,
                error_body("the request was cancelled (server shutting down)", "server_error",
                           "cancelled"));
      return;
    }
    ChoiceOutput c;
    c.text = r->text;
    c.finish = r->finish_reason;
    if (logprobs) {
      int64_t offset = 0;
      c.logprobs = logprobs_json(ep, tok, r->logprobs, &offset);
    }
    choices.push_back(std::move(c));
    usages.push_back(r->usage);
  }
  send_json(res, 200,
            completion_body(ep, new_id(ep), model, unix_now(), choices, merge_usage(usages)));
}

void Server::Impl::stream_response(httplib::Response& res, Endpoint ep,
                                   std::shared_ptr<Ticket> ticket, std::shared_ptr<Fanin> fan,
                                   std::vector<ThreadId> ids, Engine* eng, std::string model,
                                   bool include_usage, const Tokenizer* logprobs_tok) {
  // Per request; touched by the content provider and then the release callback, which run one
  // after the other on the connection's thread.
  struct StreamState {
    std::shared_ptr<Ticket> ticket;
    std::shared_ptr<Fanin> fan;
    std::vector<ThreadId> ids;
    Engine* engine = nullptr;
    std::vector<std::shared_ptr<const ThreadResult>> results;  // per choice, once finished
    // Inter-token latency, per choice.
    std::vector<std::optional<Clock::time_point>> last_token;
    // Logprobs of tokens whose text was not sent yet, and where the next one starts (per choice).
    std::vector<std::vector<TokenLogprobs>> pending;
    std::vector<int64_t> offsets;
  };
  auto st = std::make_shared<StreamState>();
  const size_t n = ids.size();
  st->ticket = std::move(ticket);
  st->fan = std::move(fan);
  st->ids = std::move(ids);
  st->engine = eng;
  st->results.resize(n);
  st->last_token.resize(n);
  st->pending.resize(n);
  st->offsets.assign(n, 0);
  const std::string id = new_id(ep);
  const int64_t created = unix_now();
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, st, ep, id, created, model, include_usage, logprobs_tok](size_t,
                                                                      httplib::DataSink& sink) {
        auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
        auto client_gone = [&] {
          for (ThreadId tid : st->ids) st->engine->cancel(tid);
          std::lock_guard<std::mutex> lk(mu);
          ++counters.n_client_cancelled;
          return false;
        };
        // The logprobs of choice i's pending tokens (null when not requested or none).
        auto take_logprobs = [&](size_t i) -> json {
          if (!logprobs_tok || st->pending[i].empty()) return nullptr;
          json lp = logprobs_json(ep, *logprobs_tok, st->pending[i], &st->offsets[i]);
          st->pending[i].clear();
          return lp;
        };
        const size_t n_choices = st->ids.size();
        if (ep == Endpoint::kChatCompletions) {
          for (size_t i = 0; i < n_choices; ++i) {
            if (!write(sse_event(chunk_body(ep, id, model, created, "", nullptr, true,
                                            static_cast<int32_t>(i))))) {
              return client_gone();
            }
          }
        }
        size_t n_done = 0;
        bool failed = false;  // a choice failed: its error event was sent, the others cancelled
        std::vector<Fanin::Item> items;
        while (n_done < n_choices) {
          items.clear();
          if (!st->fan->take(&items, std::chrono::milliseconds(100))) {
            if (!sink.is_writable()) return client_gone();
            continue;
          }
          for (Fanin::Item& it : items) {
            const size_t i = static_cast<size_t>(it.index);
            const int32_t index = it.index;
            ThreadEvent& ev = it.event;
            if (ev.kind == ThreadEvent::Kind::kToken) {
              st->ticket->on_token();
              observe_token(&st->last_token[i]);
              if (logprobs_tok && ev.logprob) st->pending[i].push_back(std::move(*ev.logprob));
              if (ev.text.empty() || failed) continue;
              if (!write(sse_event(chunk_body(ep, id, model, created, ev.text, nullptr, false,
                                              index, take_logprobs(i))))) {
                return client_gone();
              }
              continue;
            }
            if (st->results[i]) continue;
            st->results[i] = ev.result;
            ++n_done;
            const ThreadResult& r = *ev.result;
            if (failed) continue;
            bool ok = true;
            if (r.finish_reason == FinishReason::kError) {
              failed = true;
              for (ThreadId tid : st->ids) st->engine->cancel(tid);
              ok = write(sse_event(
                  error_body("generation failed: " + r.error, "server_error", "engine_error")));
            } else {
              ok = write(sse_event(chunk_body(ep, id, model, created, "",
                                              openai_finish_reason(r.finish_reason), false, index,
                                              take_logprobs(i))));
            }
            if (!ok) return client_gone();
          }
        }
        observe_finished(st->results);
        bool ok = true;
        if (!failed && include_usage) {
          std::vector<Usage> usages;
          for (const auto& r : st->results) usages.push_back(r->usage);
          ok = write(sse_event(usage_chunk_body(ep, id, model, created, merge_usage(usages))));
        }
        if (ok) ok = write(std::string(kSseDone));
        if (!ok) return false;
        sink.done();
        return true;
      },
      [st](bool) {
        // The response is gone (sent, or the connection failed between provider calls): cancel
        // what still runs.
        for (size_t i = 0; i < st->ids.size(); ++i) {
          if (!st->results[i]) st->engine->cancel(st->ids[i]);
        }
      });
}

void Server::Impl::handle_task_create(const httplib::Request& req, httplib::Response& res) {
  Engine* eng = ready_engine(res, nullptr);
  if (!eng) return;
  json body;
  if (!parse_body(req, res, &body)) return;
  TaskRequest treq;
  if (Status s = parse_task_request(body, &treq); !s.is_ok()) {
    send_error(res, s);
    return;
  }
  auto entry = std::make_shared<TaskEntry>();
  entry->spec = treq.spec;
  entry->doc_ids = std::move(treq.ids);
  entry->results.assign(treq.texts.size(), json());
  TaskEntry* e = entry.get();  // the job is destroyed before the entry
  Result<std::unique_ptr<Job>> job =
      Job::create(*eng, std::move(treq.spec), [e](DocumentResult r) {
        const size_t i = static_cast<size_t>(r.index);
        if (i >= e->doc_ids.size()) return;
        const bool ok = r.ok();
        e->deliver(i, document_result_json(r, e->doc_ids[i], e->spec), ok);
      });
  if (!job.is_ok()) {
    send_error(res, job.status());
    return;
  }
  entry->job = std::move(*job);

  // Keep at most kMaxTasks: evict finished tasks oldest-first; refuse when all are running.
  std::vector<std::shared_ptr<TaskEntry>> evicted;
  Status refused = Status::ok();
  bool closed = false;
  {
    std::lock_guard<std::mutex> lk(tasks_mu);
    for (auto it = tasks.begin(); it != tasks.end() && tasks.size() >= kMaxTasks;) {
      if (it->second->finished()) {
        evicted.push_back(std::move(it->second));
        it = tasks.erase(it);
      } else {
        ++it;
      }
    }
    if (tasks_closed) {
      closed = true;
    } else if (tasks.size() >= kMaxTasks) {
      refused = Status(StatusCode::kOutOfMemory,
                       "too many tasks running (limit " + std::to_string(kMaxTasks) +
                           "); retry later");
    } else {
      const uint64_t n = next_task++;
      entry->id = "task_" + std::to_string(n);
      tasks[n] = entry;
    }
  }
  for (auto& ev : evicted) release_job(*ev);
  evicted.clear();
  if (closed || !refused.is_ok()) {
    release_job(*entry);
    if (closed) {
      send_json(res, 503, error_body("the server is shutting down", "server_error",
                                     "shutting_down"));
    } else {
      // Room comes when a task ends; estimated by the engine's backlog of prompt tokens not yet
      // computed, at its recent throughput.
      int retry_after_s = 1;
      {
        std::lock_guard<std::mutex> lk(mu);
        const EngineStats es = eng->stats();
        const int64_t backlog = es.prompt_tokens - es.prefill_tokens - es.prefix_hit_tokens;
        retry_after_s = retry_after_seconds(static_cast<double>(std::max<int64_t>(backlog, 1)),
                                            tokens_per_s_locked());
      }
      send_error(res, refused, retry_after_s);
    }
    return;
  }
  {
    // Under job_mu: a DELETE waits for the documents to be added, and an eviction (possible once
    // a DELETE marked the task cancelled) cannot destroy the job meanwhile.
    std::lock_guard<std::mutex> lk(entry->job_mu);
    for (size_t i = 0; i < treq.texts.size(); ++i) {
      Document d;
      d.index = i;
      d.text = std::move(treq.texts[i]);
      Status s = entry->job ? entry->job->add(std::move(d))
                            : invalid_argument("the task was cancelled");
      if (!s.is_ok()) {
        DocumentResult r;
        r.index = i;
        r.type = entry->spec.type;
        r.error_code = "cancelled";
        r.error = s.message();
        entry->deliver(i, document_result_json(r, entry->doc_ids[i], entry->spec), false);
      }
    }
  }
  send_json(res, 202, {{"id", entry->id},
                       {"object", "task"},
                       {"status", "running"},
                       {"n_documents", entry->results.size()}});
}

std::shared_ptr<TaskEntry> Server::Impl::find_task(const httplib::Request& req,
                                                   httplib::Response& res) {
  const std::string id = req.matches.size() > 1 ? req.matches[1].str() : std::string();
  const uint64_t n = parse_task_number(id);
  {
    std::lock_guard<std::mutex> lk(tasks_mu);
    auto it = tasks.find(n);
    if (n != 0 && it != tasks.end()) return it->second;
  }
  send_json(res, 404, error_body("no task with id '" + id.substr(0, 64) +
                                     "' (finished tasks are kept only for the last " +
                                     std::to_string(kMaxTasks) + " tasks)",
                                 "invalid_request_error", "task_not_found", "id"));
  return nullptr;
}

void Server::Impl::install_routes() {
  // httplib's default also sets SO_REUSEPORT, which lets a second server bind a port in use
  // without an error; SO_REUSEADDR alone allows a quick restart and still refuses that.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  http.set_payload_max_length(opt.max_body_bytes);
  http.set_read_timeout(static_cast<time_t>(opt.read_timeout_s),
                        static_cast<time_t>((opt.read_timeout_s - static_cast<time_t>(opt.read_timeout_s)) * 1e6));
  const size_t n_threads = static_cast<size_t>(
      opt.n_http_threads > 0 ? opt.n_http_threads : opt.max_queue + 16);
  http.new_task_queue = [n_threads] { return new httplib::ThreadPool(n_threads); };

  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (opt.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    if (!constant_time_equal(auth, "Bearer " + opt.api_key)) {
      send_json(res, 401, error_body("invalid or missing API key (Authorization: Bearer KEY)",
                                     "invalid_request_error", "invalid_api_key"));
      // The request body (if any) was not read: the connection cannot carry another request.
      res.set_header("Connection", "close");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Statuses httplib sets itself (404 no route, 413 too large, 400 unreadable request) get an
  // OpenAI error body too.
  http.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty() || res.is_chunked_content_provider_) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const char* msg = res.status == 413   ? "request body too large"
                      : res.status == 404 ? "no such endpoint"
                      : res.status == 405 ? "method not allowed"
                                          : "bad request";
    const char* type = res.status >= 500 ? "server_error" : "invalid_request_error";
    res.set_content(dump_json(error_body(msg, type)), kJson);
    // No handler ran, so a request body may be unread: close rather than parse it as a request.
    res.set_header("Connection", "close");
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_json(res, 500, error_body("internal error", "server_error", "internal_error"));
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    {
      std::lock_guard<std::mutex> lk(mu);
      ++counters.n_requests;
    }
    if (metrics) metrics->count_request(route_name(req.path), res.status);
    if (opt.log_requests) {
      std::fprintf(stderr, "%s %s %d\n", req.method.c_str(), req.path.c_str(), res.status);
    }
  });

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    std::lock_guard<std::mutex> lk(mu);
    if (draining) send_json(res, 503, {{"status", "shutting_down"}});
    else if (!engine) send_json(res, 503, {{"status", "loading"}});
    else send_json(res, 200, {{"status", "ok"}});
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    TranslateOptions tr;
    if (!ready_engine(res, &tr)) return;
    json m = {{"id", tr.model_name}, {"object", "model"}, {"created", unix_now()},
              {"owned_by", "llmthreads"}};
    send_json(res, 200, {{"object", "list"}, {"data", json::array({m})}});
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_completion(req, res, Endpoint::kCompletions);
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_completion(req, res, Endpoint::kChatCompletions);
  });
  http.Post("/v1/tasks", [this](const httplib::Request& req, httplib::Response& res) {
    handle_task_create(req, res);
  });
  http.Get(R"(/v1/tasks/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (std::shared_ptr<TaskEntry> e = find_task(req, res)) send_json(res, 200, e->to_json());
  });
  http.Delete(R"(/v1/tasks/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    std::shared_ptr<TaskEntry> e = find_task(req, res);
    if (!e) return;
    {
      // Marked first, so the cancelled documents' results do not make it "failed".
      std::lock_guard<std::mutex> lk(e->mu);
      if (e->status == TaskStatus::kRunning) e->status = TaskStatus::kCancelled;
    }
    {
      std::lock_guard<std::mutex> lk(e->job_mu);
      if (e->job) e->job->cancel();
    }
    send_json(res, 200, e->to_json());
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    if (!metrics) {
      send_json(res, 500, error_body("metrics unavailable", "server_error", "internal_error"));
      return;
    }
    Engine* eng = nullptr;
    {
      std::lock_guard<std::mutex> lk(mu);
      eng = engine;
      publish_queue_locked();
    }
    if (eng) metrics->update_engine(eng->stats());
    res.status = 200;
    res.set_content(metrics->render(), "text/plain; version=0.0.4");
  });
}

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(options);
  if (impl_->opt.model_name.empty()) impl_->opt.model_name = "model";
  std::random_device rd;
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08x-", rd());
  impl_->id_prefix = buf;
  Result<std::unique_ptr<ServerMetrics>> m = ServerMetrics::create();
  if (m.is_ok()) impl_->metrics = std::move(*m);
}

Server::~Server() { stop(0.0); }

Status Server::start() {
  Impl& s = *impl_;
  if (s.opt.max_queue < 1) return invalid_argument("max_queue must be >= 1");
  if (s.opt.max_queue_tokens < 0) return invalid_argument("max_queue_tokens must be >= 0");
  if (s.opt.max_queue_per_tenant < 0) {
    return invalid_argument("max_queue_per_tenant must be >= 0");
  }
  if (s.opt.max_body_bytes < 1) return invalid_argument("max_body_bytes must be >= 1");
  if (!(s.opt.read_timeout_s > 0)) return invalid_argument("read_timeout_s must be > 0");
  if (s.listen_thread.joinable()) return invalid_argument("the server is already started");
  if (!s.metrics) return internal_error("cannot create the metrics registry");
  s.install_routes();
  if (s.opt.port == 0) {
    s.port = s.http.bind_to_any_port(s.opt.host);
    if (s.port <= 0) return io_error("cannot bind " + s.opt.host + " (any port)");
  } else {
    if (!s.http.bind_to_port(s.opt.host, s.opt.port)) {
      return io_error("cannot bind " + s.opt.host + ":" + std::to_string(s.opt.port) +
                      " (in use, or not a local address?)");
    }
    s.port = s.opt.port;
  }
  s.http.raise_backlog(1024);
  s.listen_thread = std::thread([&s] { s.http.listen_after_bind(); });
  return Status::ok();
}

int Server::port() const { return impl_->port; }

Status Server::attach_engine(Engine* engine) {
  Impl& s = *impl_;
  TranslateOptions tr;
  tr.model = &engine->model();
  tr.model_name = s.opt.model_name;
  tr.n_ctx = engine->config().n_ctx;
  tr.default_max_tokens = s.opt.default_max_tokens;
  if (!s.opt.chat_format.empty()) {
    Result<ChatFormat> f = chat_format_from_name(s.opt.chat_format);
    if (!f.is_ok()) return f.status();
    tr.chat_format = *f;
  } else if (engine->model().chat_template().empty()) {
    tr.chat_format_error = "the model has no chat template; start the server with "
                           "--chat-template NAME (" + chat_format_names() + ")";
  } else {
    Result<ChatFormat> f = detect_chat_format(engine->model().chat_template());
    if (f.is_ok()) tr.chat_format = *f;
    else tr.chat_format_error = f.status().message();
  }
  std::lock_guard<std::mutex> lk(s.mu);
  s.translate = std::move(tr);
  s.engine = engine;
  return Status::ok();
}

void Server::stop(double grace_s) {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lk(s.mu);
    if (s.stopped) return;
    s.stopped = true;
    s.draining = true;
  }
  if (!s.listen_thread.joinable()) return;
  // The listener stays up until every live request has ended: new requests meanwhile get 503
  // (draining), and cpp-httplib stops writing chunked responses once it is stopped, so stopping
  // it first would cut a cancelled stream before its final chunk.
  std::unique_lock<std::mutex> lk(s.mu);
  const auto grace = std::chrono::duration<double>(std::max(0.0, grace_s));
  s.cv.wait_for(lk, grace, [&] { return s.live.empty(); });
  s.cancel_all = true;
  if (!s.live.empty() && s.engine) {
    for (const auto& [key, lr] : s.live) {
      for (ThreadId id : lr.threads) s.engine->cancel(id);
    }
  }
  // Cancelled threads finish within a step; their handlers then return.
  s.cv.wait_for(lk, std::chrono::seconds(30), [&] { return s.live.empty(); });
  lk.unlock();
  // Tasks: no new ones; running ones are cancelled and every Job is destroyed (its worker
  // joined), so nothing uses the engine after stop(). Their results stay readable.
  std::vector<std::shared_ptr<TaskEntry>> tasks;
  {
    std::lock_guard<std::mutex> tlk(s.tasks_mu);
    s.tasks_closed = true;
    for (auto& [n, e] : s.tasks) tasks.push_back(e);
  }
  for (auto& e : tasks) {
    {
      std::lock_guard<std::mutex> elk(e->mu);
      if (e->status == TaskStatus::kRunning) e->status = TaskStatus::kCancelled;
    }
    release_job(*e);
  }
  s.http.stop();  // no new connections; idle keep-alive connections close
  s.listen_thread.join();
}

ServerStats Server::stats() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  ServerStats st = impl_->counters;
  st.n_live = static_cast<int64_t>(impl_->live.size());
  st.n_live_threads = impl_->live_threads;
  st.n_queued_tokens = impl_->queued_tokens;
  return st;
}

}  // namespace llmt::server
