#include "server-impl.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

namespace llmt::server {

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

Server::~Server() {
  stop(0.0);
  impl_->close_storage();
}

Status Server::start() {
  Impl& s = *impl_;
  if (s.opt.max_queue < 1) return invalid_argument("max_queue must be >= 1");
  if (s.opt.max_queue_tokens < 0) return invalid_argument("max_queue_tokens must be >= 0");
  if (s.opt.max_queue_per_tenant < 0) {
    return invalid_argument("max_queue_per_tenant must be >= 0");
  }
  if (s.opt.max_body_bytes < 1) return invalid_argument("max_body_bytes must be >= 1");
  if (s.http) return invalid_argument("the server is already started");
  if (!s.metrics) return internal_error("cannot create the metrics registry");
  if (s.opt.batch_concurrency < 0) return invalid_argument("batch_concurrency must be >= 0");
  if (Status st = s.open_storage(); !st.is_ok()) return st;
  HttpFrontOptions fo;
  fo.max_body_bytes = s.opt.max_body_bytes;
  fo.request_timeout_s = s.opt.request_timeout_s;
  fo.idle_timeout_s = s.opt.idle_timeout_s;
  fo.write_timeout_s = s.opt.write_timeout_s;
  fo.max_connections = s.opt.max_connections;
  fo.max_connections_per_client = s.opt.max_connections_per_client;
  fo.n_handler_threads = s.opt.n_http_threads > 0 ? s.opt.n_http_threads : s.opt.max_queue + 16;
  auto front = std::make_unique<HttpFront>(fo);
  s.install_routes(*front);
  Result<int> port = front->bind(s.opt.host, s.opt.port);
  if (!port.is_ok()) {
    return io_error(port.status().message() +
                    (s.opt.port != 0 ? " (in use, or not a local address?)" : ""));
  }
  if (Status st = front->start(); !st.is_ok()) return st;
  s.port = *port;
  s.http = std::move(front);
  return Status::ok();
}

int Server::port() const {
  return impl_->port;
}

Status Server::attach_engine(Engine* engine) {
  Impl& s = *impl_;
  TranslateOptions tr;
  tr.model = &engine->model();
  tr.model_name = s.opt.model_name;
  tr.engine = engine;
  tr.default_max_tokens = s.opt.default_max_tokens;
  const std::string_view gguf_template = engine->model().chat_template();
  Result<ChatTemplate> tmpl =
      ChatTemplate::select(s.opt.chat_format, gguf_template, &engine->model().tokenizer());
  if (tmpl.is_ok()) {
    // The GGUF's Jinja template by default, --chat-template NAME|FILE instead.
    tr.tool_family = detect_tool_call_family(tmpl->source());
    tr.parse_reasoning = tmpl->source().find("</think>") != std::string::npos;
    tr.chat_template = std::move(*tmpl);
  } else if (!s.opt.chat_format.empty()) {
    return tmpl.status();
  } else if (gguf_template.empty()) {
    tr.chat_format_error =
        "the model has no chat template; start the server with "
        "--chat-template NAME (" +
        chat_format_names() + ")";
  } else {
    Result<ChatFormat> f = detect_chat_format(engine->model().chat_template());
    if (f.is_ok())
      tr.chat_format = *f;
    else
      tr.chat_format_error = f.status().message();
  }
  {
    std::lock_guard<std::mutex> lk(s.mu);
    s.translate = std::move(tr);
    s.engine = engine;
  }
  s.start_batches();
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
  s.begin_stop_batches();  // batches take no new requests; theirs in flight finish or cancel
  if (!s.http) {
    s.join_batches();
    return;
  }
  // The listener stays up until every live request has ended: new requests meanwhile get 503
  // (draining), and a cancelled stream still gets its final chunk.
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
  s.join_batches();  // their answers are in their results logs; the rest runs at the next start
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
  s.http->stop();  // no new connections; idle keep-alive connections close
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
