// llmthreads serve: the OpenAI-compatible HTTP server (server.h) over one Engine.
//
// The HTTP server starts before the model loads, so /health answers 503 while loading. SIGINT /
// SIGTERM are taken by a SignalWatcher thread: the first stops accepting connections, lets live
// requests finish for up to --shutdown-grace seconds, cancels the rest and exits 0.
#include <sys/resource.h>

#include <signal.h>
#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "common/commands.h"
#include "common/engine-options.h"
#include "common/signal-watcher.h"
#include "llmthreads/engine.h"
#include "server.h"

namespace llmt::cli {

int cmd_serve(int argc, char** argv) {
  CLI::App app{
      "Serve a model over an OpenAI-compatible HTTP API (/v1/completions, "
      "/v1/chat/completions, /v1/embeddings, /v1/models, /health, /metrics, /v1/tasks, /v1/files, "
      "/v1/batches). Requests may "
      "ask for n = 1..16 choices (one LLM thread each; 400 otherwise) and logprobs "
      "(completions: logprobs 0..5; chat: logprobs true, top_logprobs 0..20)",
      "serve"};
  std::string model_arg, max_body = "8M";
  server::ServerOptions so;
  double grace_s = 5.0;
  EngineFlags ef;
  app.add_option("-m,--model", model_arg, "GGUF model (default: $LLMT_MODEL or stories260K.gguf)");
  app.add_option("--host", so.host, "address to listen on (default 127.0.0.1: this machine only)");
  app.add_option("--port", so.port, "TCP port (default 8080; 0 = any free port)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--api-key", so.api_key,
                 "require 'Authorization: Bearer KEY' on every endpoint but /health");
  app.add_option("--max-queue", so.max_queue,
                 "LLM threads in flight at most (a request of n choices counts n); beyond: 429 "
                 "(default 64)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-queue-per-tenant", so.max_queue_per_tenant,
                 "LLM threads in flight per tenant (the request's tenant, else user) at most; "
                 "beyond: 429 (default 0 = no limit)")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--max-queue-tokens", so.max_queue_tokens,
                 "prompt tokens waiting for their first token at most; beyond: 429 (default "
                 "65536, 0 = no limit)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  app.add_option("--max-body", max_body, "largest request body, e.g. 1M (default 8M); beyond: 413");
  app.add_option("--http-threads", so.n_http_threads,
                 "request handler threads (a live completion holds one; idle or slow "
                 "connections hold none; default: --max-queue + 16)")
      ->check(CLI::Range(0, 1 << 16));
  app.add_option("--request-timeout", so.request_timeout_s,
                 "seconds a request (headers and body) may take to arrive; beyond: 408 "
                 "(default 10)")
      ->check(CLI::Range(0.001, 86400.0));
  app.add_option("--idle-timeout", so.idle_timeout_s,
                 "seconds a keep-alive connection may wait for its next request (default 30)")
      ->check(CLI::Range(0.001, 86400.0));
  app.add_option("--max-connections", so.max_connections,
                 "open connections at most; at the limit the longest-waiting connection "
                 "without a complete request is closed for a new one (default 16384, capped "
                 "below the open-file limit)")
      ->check(CLI::Range(1, 1 << 24));
  app.add_option("--max-connections-per-client", so.max_connections_per_client,
                 "open connections per client address at most, same rule (default 0 = "
                 "--max-connections)")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--model-name", so.model_name,
                 "model id reported to clients (default: file name)");
  app.add_option("--chat-template", so.chat_format, "chat format name (default: the model's)");
  app.add_option("--default-max-tokens", so.default_max_tokens,
                 "max_tokens when a request has none (default: up to the context's end)")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--shutdown-grace", grace_s,
                 "seconds live requests may finish after SIGTERM / SIGINT (default 5)")
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--data-dir", so.data_dir,
                 "folder for /v1/files and /v1/batches (created if absent; batches resume from it "
                 "after a restart). Default: a temporary folder removed when the server exits, "
                 "so files and batches do not survive a restart");
  app.add_option("--batch-concurrency", so.batch_concurrency,
                 "requests of a batch in flight at once (default 0 = --max-queue / 4, "
                 "between 1 and 8)")
      ->check(CLI::Range(0, 1 << 16));
  app.add_flag("--log-requests", so.log_requests, "print one line per request to stderr");
  add_engine_options(app, &ef);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  auto fail = [](const std::string& msg) {
    std::fprintf(stderr, "error: %s\n", msg.c_str());
    return 1;
  };
  Result<uint64_t> body_limit = parse_size(max_body);
  if (!body_limit.is_ok()) return fail("--max-body: " + body_limit.status().message());
  so.max_body_bytes = static_cast<size_t>(*body_limit);
  EngineConfig ecfg;
  if (Status s = fill_engine_config(ef, &ecfg); !s.is_ok()) return fail(s.message());
  const std::string model_path = resolve_model_path(model_arg, "stories260K.gguf");
  if (model_path.empty()) return 1;
  if (so.model_name.empty()) so.model_name = std::filesystem::path(model_path).stem().string();

  // Signals first (before any thread), then a peer that closes mid-response must not kill us.
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<int> n_signals{0};
  SignalWatcher watcher([&](int) {
    std::lock_guard<std::mutex> lk(mu);
    n_signals.fetch_add(1);
    cv.notify_all();
  });
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, nullptr);

  // Each connection is a descriptor: use the hard limit, not the (often 1024) soft one.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }

  server::Server srv(so);
  if (Status s = srv.start(); !s.is_ok()) return fail(s.message());
  std::fprintf(stderr, "listening on http://%s:%d (loading %s)\n", so.host.c_str(), srv.port(),
               model_path.c_str());

  ecfg.model.path = model_path;
  Result<std::unique_ptr<Engine>> engine = Engine::create(ecfg);
  if (!engine.is_ok()) {
    srv.stop(0.0);
    return fail(engine.status().to_string());
  }
  if (Status s = srv.attach_engine(engine->get()); !s.is_ok()) {
    srv.stop(0.0);
    return fail(s.message());
  }
  std::fprintf(stderr, "ready: model '%s', %d positions per request, %d KV blocks\n",
               so.model_name.c_str(), (*engine)->config().model.n_ctx, (*engine)->n_kv_blocks());

  {
    // Until a signal; meanwhile the first failed KV swap (e.g. --swap-dir full: requests go on,
    // recomputing their KV) is worth one warning; the count is llmthreads_swap_failures_total.
    bool swap_warned = false;
    std::unique_lock<std::mutex> lk(mu);
    while (!cv.wait_for(lk, std::chrono::seconds(1), [&] { return n_signals.load() > 0; })) {
      if (swap_warned) continue;
      const EngineStats es = (*engine)->stats();
      if (es.swap_failures == 0) continue;
      swap_warned = true;
      std::fprintf(stderr,
                   "warning: KV swap failed (%s); preempted requests recompute their KV instead "
                   "(slower; free space in --swap-dir or raise --kv-budget)\n",
                   es.swap_last_error.c_str());
    }
  }
  std::fprintf(stderr, "shutting down: finishing %lld requests in flight (up to %.0f s)\n",
               static_cast<long long>(srv.stats().n_live), grace_s);
  srv.stop(grace_s);
  std::fprintf(stderr, "stopped\n");
  return 0;
}

}  // namespace llmt::cli
