// The HTTP routes, API-key check, error bodies for httplib's own statuses, request logging and
// /metrics.
#include "server-impl.h"

#include "common/embeddings.h"

#include <cstdio>
#include <string_view>

namespace llmt::server {

namespace {

// The route name a request is counted under in /metrics: one of a fixed set, never the raw path
// (which a client chooses, and would make the series unbounded).
const char* route_name(const std::string& path) {
  static constexpr const char* kRoutes[] = {
      "/health",     "/v1/models", "/v1/completions", "/v1/chat/completions",
      "/v1/tasks",   "/metrics",   "/v1/embeddings",  "/tokenize",
      "/detokenize", "/v1/files",  "/v1/batches",     "/v1/rerank"};
  for (const char* r : kRoutes) {
    if (path == r) return r;
  }
  if (path == "/rerank") return "/v1/rerank";
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  if (path.rfind("/v1/tasks/", 0) == 0) return "/v1/tasks/{id}";
  auto ends_with = [&](std::string_view s) {
    return path.size() >= s.size() && path.compare(path.size() - s.size(), s.size(), s) == 0;
  };
  if (path.rfind("/v1/files/", 0) == 0) {
    return ends_with("/content") ? "/v1/files/{id}/content" : "/v1/files/{id}";
  }
  if (path.rfind("/v1/batches/", 0) == 0) {
    return ends_with("/cancel") ? "/v1/batches/{id}/cancel" : "/v1/batches/{id}";
  }
  return "other";
}

}  // namespace

void Server::Impl::install_routes(HttpFront& http) {
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (opt.api_key.empty() || req.path == "/health") return false;
    const std::string auth = req.get_header_value("Authorization");
    if (!constant_time_equal(auth, "Bearer " + opt.api_key)) {
      send_json(res, 401,
                error_body("invalid or missing API key (Authorization: Bearer KEY)",
                           "invalid_request_error", "invalid_api_key"));
      return true;
    }
    return false;
  });
  // Statuses the front answers itself (404 no route, 405, 408 too slow, 413 too large, 431,
  // 400 unreadable request, 503 overloaded) get an OpenAI error body too.
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    const char* msg = res.status == 413   ? "request body too large"
                      : res.status == 404 ? "no such endpoint"
                      : res.status == 405 ? "method not allowed"
                      : res.status == 408 ? "the request did not arrive in time"
                      : res.status == 431 ? "request headers too large"
                      : res.status == 503 ? "server overloaded, retry later"
                      : res.status == 505 ? "HTTP version not supported"
                                          : "bad request";
    const char* type = res.status >= 500 ? "server_error" : "invalid_request_error";
    res.set_content(dump_json(error_body(msg, type)), kJson);
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res) {
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
    if (draining)
      send_json(res, 503, {{"status", "shutting_down"}});
    else if (!engine)
      send_json(res, 503, {{"status", "loading"}});
    else
      send_json(res, 200, {{"status", "ok"}});
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    TranslateOptions tr;
    if (!ready_engine(res, &tr)) return;
    send_json(
        res, 200,
        {{"object", "list"}, {"data", json::array({model_object(tr.model_name, unix_now())})}});
  });
  // The id may contain slashes ("org/name"): everything after /v1/models/.
  http.Get(R"(/v1/models/(.+))",
           [this](const httplib::Request& req, httplib::Response& res) { handle_model(req, res); });
  http.Post("/v1/embeddings", [this](const httplib::Request& req, httplib::Response& res) {
    handle_embeddings(req, res);
  });
  // /rerank: llama.cpp's server answers both paths.
  for (const char* path : {"/v1/rerank", "/rerank"}) {
    http.Post(path, [this](const httplib::Request& req, httplib::Response& res) {
      handle_rerank(req, res);
    });
  }
  http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    handle_tokenize(req, res);
  });
  http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    handle_detokenize(req, res);
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
  install_file_routes(http);
  install_batch_routes(http);
  http.Get("/metrics", [this, front = &http](const httplib::Request&, httplib::Response& res) {
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
    metrics->update_http(front->stats());
    res.status = 200;
    res.set_content(metrics->render(), "text/plain; version=0.0.4");
  });
}

}  // namespace llmt::server
