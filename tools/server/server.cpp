#include "server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>

#include "openai.h"

namespace llmt::server {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kJson = "application/json";

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), kJson);
}

void send_error(httplib::Response& res, const Status& s) {
  send_json(res, http_status_for(s), error_body_for(s));
  if (res.status == 429) res.set_header("Retry-After", "1");
}

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

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

  mutable std::mutex mu;
  std::condition_variable cv;            // n_live changes
  std::map<uint64_t, ThreadId> live;     // admission key -> thread (0 until submitted)
  int64_t queued_tokens = 0;
  uint64_t next_key = 1;
  bool draining = false;
  bool stopped = false;
  bool cancel_all = false;  // stop(): the grace is over; threads submitted now are cancelled
  ServerStats counters;

  std::atomic<uint64_t> next_id{1};

  // One admitted request: holds its slot (and its prompt tokens until the first token) until
  // destroyed.
  class Ticket {
   public:
    Ticket(Impl* impl, uint64_t key, int64_t tokens) : impl_(impl), key_(key), tokens_(tokens) {}
    ~Ticket() {
      std::lock_guard<std::mutex> lk(impl_->mu);
      impl_->queued_tokens -= tokens_;
      impl_->live.erase(key_);
      impl_->cv.notify_all();
    }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    void set_thread(ThreadId id) {
      std::lock_guard<std::mutex> lk(impl_->mu);
      impl_->live[key_] = id;
      if (impl_->cancel_all && impl_->engine) impl_->engine->cancel(id);  // stop() passed us by
    }
    // The thread produced its first token: its prompt no longer counts as queued.
    void started() {
      if (tokens_ == 0) return;
      std::lock_guard<std::mutex> lk(impl_->mu);
      impl_->queued_tokens -= tokens_;
      tokens_ = 0;
    }

   private:
    Impl* impl_;
    uint64_t key_;
    int64_t tokens_;
  };

  // Admits a request of n_prompt tokens, or says why not (kOutOfMemory -> 429).
  Result<std::shared_ptr<Ticket>> admit(int64_t n_prompt) {
    std::lock_guard<std::mutex> lk(mu);
    if (static_cast<int64_t>(live.size()) >= opt.max_queue) {
      ++counters.n_rejected_queue;
      return Status(StatusCode::kOutOfMemory,
                    "the server is busy: " + std::to_string(live.size()) +
                        " requests in flight (limit " + std::to_string(opt.max_queue) +
                        "); retry later");
    }
    if (opt.max_queue_tokens > 0 && queued_tokens > 0 &&
        queued_tokens + n_prompt > opt.max_queue_tokens) {
      ++counters.n_rejected_queue;
      return Status(StatusCode::kOutOfMemory,
                    "the server is busy: " + std::to_string(queued_tokens) +
                        " prompt tokens queued (limit " + std::to_string(opt.max_queue_tokens) +
                        "); retry later");
    }
    const uint64_t key = next_key++;
    live[key] = 0;
    queued_tokens += n_prompt;
    return std::make_shared<Ticket>(this, key, n_prompt);
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
  void stream_response(httplib::Response& res, Endpoint ep, std::shared_ptr<Ticket> ticket,
                       ThreadHandle handle, Engine* engine, std::string model, bool include_usage);
  void install_routes();
};

void Server::Impl::handle_completion(const httplib::Request& req, httplib::Response& res,
                                     Endpoint ep) {
  TranslateOptions tr;
  Engine* eng = ready_engine(res, &tr);
  if (!eng) return;
  json body;
  try {
    body = json::parse(req.body);
  } catch (const json::exception& e) {
    send_json(res, 400, error_body(std::string("invalid JSON body: ") + e.what(),
                                   "invalid_request_error", "invalid_json"));
    return;
  }
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
  const int64_t n_prompt = static_cast<int64_t>(treq->prompt_tokens.size());
  Result<std::shared_ptr<Ticket>> ticket = admit(n_prompt);
  if (!ticket.is_ok()) {
    send_error(res, ticket.status());
    return;
  }
  Result<ThreadHandle> h = eng->submit(std::move(*treq));
  if (!h.is_ok()) {
    send_error(res, h.status());
    return;
  }
  (*ticket)->set_thread(h->id());
  const std::string model = tr.model_name;
  if (oreq.stream) {
    stream_response(res, ep, std::move(*ticket), *h, eng, model, oreq.include_usage);
    return;
  }
  // Non-streaming: drain the events (the first token releases the queued prompt tokens).
  ThreadHandle handle = *h;
  std::shared_ptr<const ThreadResult> result;
  while (!result) {
    std::optional<ThreadEvent> ev = handle.next(std::chrono::milliseconds(200));
    if (!ev) {
      if (handle.done()) result = std::make_shared<ThreadResult>(handle.wait());
      continue;
    }
    if (ev->kind == ThreadEvent::Kind::kToken) {
      (*ticket)->started();
    } else {
      result = ev->result;
    }
  }
  if (result->finish_reason == FinishReason::kError) {
    send_json(res, 500, error_body("generation failed: " + result->error, "server_error",
                                   "engine_error"));
    return;
  }
  if (result->finish_reason == FinishReason::kCancelled) {
    send_json(res, 503, error_body("the request was cancelled (server shutting down)",
                                   "server_error", "cancelled"));
    return;
  }
  send_json(res, 200, completion_body(ep, new_id(ep), model, unix_now(), result->text,
                                      result->finish_reason, result->usage));
}

void Server::Impl::stream_response(httplib::Response& res, Endpoint ep,
                                   std::shared_ptr<Ticket> ticket, ThreadHandle handle,
                                   Engine* eng, std::string model, bool include_usage) {
  struct StreamState {
    std::shared_ptr<Ticket> ticket;
    ThreadHandle handle;
    Engine* engine;
    bool finished = false;
  };
  auto st = std::make_shared<StreamState>(StreamState{std::move(ticket), handle, eng});
  const std::string id = new_id(ep);
  const int64_t created = unix_now();
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, st, ep, id, created, model, include_usage](size_t, httplib::DataSink& sink) {
        auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
        auto client_gone = [&] {
          st->engine->cancel(st->handle.id());
          std::lock_guard<std::mutex> lk(mu);
          ++counters.n_client_cancelled;
          return false;
        };
        bool first = true;
        if (ep == Endpoint::kChatCompletions &&
            !write(sse_event(chunk_body(ep, id, model, created, "", nullptr, true)))) {
          return client_gone();
        }
        first = ep != Endpoint::kChatCompletions;
        for (;;) {
          std::optional<ThreadEvent> ev = st->handle.next(std::chrono::milliseconds(100));
          if (!ev) {
            if (!sink.is_writable()) return client_gone();
            continue;
          }
          if (ev->kind == ThreadEvent::Kind::kToken) {
            st->ticket->started();
            if (ev->text.empty()) continue;
            if (!write(sse_event(chunk_body(ep, id, model, created, ev->text, nullptr, first)))) {
              return client_gone();
            }
            first = false;
            continue;
          }
          const ThreadResult& r = *ev->result;
          st->finished = true;
          bool ok = true;
          if (r.finish_reason == FinishReason::kError) {
            ok = write(sse_event(error_body("generation failed: " + r.error, "server_error",
                                            "engine_error")));
          } else {
            ok = write(sse_event(chunk_body(ep, id, model, created, "",
                                            openai_finish_reason(r.finish_reason), first)));
            if (ok && include_usage) {
              ok = write(sse_event(usage_chunk_body(ep, id, model, created, r.usage)));
            }
          }
          if (ok) ok = write(std::string(kSseDone));
          if (!ok) return false;
          sink.done();
          return true;
        }
      },
      [st](bool) {
        // The response is gone (sent, or the connection failed between provider calls).
        if (!st->finished) st->engine->cancel(st->handle.id());
      });
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
}

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(options);
  if (impl_->opt.model_name.empty()) impl_->opt.model_name = "model";
  std::random_device rd;
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08x-", rd());
  impl_->id_prefix = buf;
}

Server::~Server() { stop(0.0); }

Status Server::start() {
  Impl& s = *impl_;
  if (s.opt.max_queue < 1) return invalid_argument("max_queue must be >= 1");
  if (s.opt.max_queue_tokens < 0) return invalid_argument("max_queue_tokens must be >= 0");
  if (s.opt.max_body_bytes < 1) return invalid_argument("max_body_bytes must be >= 1");
  if (!(s.opt.read_timeout_s > 0)) return invalid_argument("read_timeout_s must be > 0");
  if (s.listen_thread.joinable()) return invalid_argument("the server is already started");
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
  s.http.stop();  // no new connections; idle keep-alive connections close
  std::unique_lock<std::mutex> lk(s.mu);
  const auto grace = std::chrono::duration<double>(std::max(0.0, grace_s));
  s.cv.wait_for(lk, grace, [&] { return s.live.empty(); });
  s.cancel_all = true;
  if (!s.live.empty() && s.engine) {
    for (const auto& [key, id] : s.live) {
      if (id != 0) s.engine->cancel(id);
    }
  }
  // Cancelled threads finish within a step; their handlers then return.
  s.cv.wait_for(lk, std::chrono::seconds(30), [&] { return s.live.empty(); });
  lk.unlock();
  s.listen_thread.join();
}

ServerStats Server::stats() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  ServerStats st = impl_->counters;
  st.n_live = static_cast<int64_t>(impl_->live.size());
  st.n_queued_tokens = impl_->queued_tokens;
  return st;
}

}  // namespace llmt::server
