// Shared fixture of the server tests (test-server.cpp, test-server-tasks.cpp): an Engine on
// stories260K and a server::Server over it on a loopback ephemeral port, with SIGPIPE ignored.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "llmthreads/engine.h"
#include "server.h"
#include "test-util.h"

namespace llmt::test {

inline constexpr const char* kServerModel = "models/stories260K.gguf";

class IgnoreSigpipe : public ::testing::Environment {
 public:
  void SetUp() override { signal(SIGPIPE, SIG_IGN); }
};

// Registered once per test binary (each includes this header from one file).
inline const auto* const kIgnoreSigpipeEnv = ::testing::AddGlobalTestEnvironment(new IgnoreSigpipe);

inline EngineConfig server_engine_config() {
  EngineConfig ec;
  ec.model.path = data_path(kServerModel);
  ec.compute.n_threads = 1;
  ec.sched.measure_costs = false;
  ec.kv.budget_bytes = uint64_t{16} << 20;
  return ec;
}

inline server::ServerOptions server_test_options() {
  server::ServerOptions so;
  so.port = 0;
  so.model_name = "stories260K";
  so.chat_format = "chatml";
  so.request_timeout_s = 1.0;
  return so;
}

// An engine and a server over it on an ephemeral port; stopped (1 s grace) on destruction.
struct RunningServer {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<server::Server> srv;

  explicit RunningServer(server::ServerOptions so = server_test_options(),
                         EngineConfig ec = server_engine_config()) {
    auto e = Engine::create(ec);
    EXPECT_TRUE(e.is_ok()) << e.status().to_string();
    if (!e.is_ok()) return;
    engine = std::move(*e);
    srv = std::make_unique<server::Server>(so);
    Status s = srv->start();
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    s = srv->attach_engine(engine.get());
    EXPECT_TRUE(s.is_ok()) << s.to_string();
  }
  ~RunningServer() {
    if (srv) srv->stop(1.0);
    srv.reset();
  }
  // keep_alive: one connection reused (a request is handled before the next one is sent).
  std::unique_ptr<httplib::Client> client(bool keep_alive = false) const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", srv->port());
    c->set_read_timeout(60, 0);
    if (keep_alive) c->set_keep_alive(true);
    return c;
  }
};

// The JSON body of a response (a discarded value when it is not JSON), its status in *status;
// -1 and a test failure when no response came.
inline nlohmann::json response_json(const httplib::Result& r, int* status) {
  if (!r) {
    ADD_FAILURE() << "no response: " << httplib::to_string(r.error());
    *status = -1;
    return nlohmann::json();
  }
  *status = r->status;
  return nlohmann::json::parse(r->body, nullptr, false);
}

inline nlohmann::json post_json(httplib::Client& c, const std::string& path,
                                const std::string& body, int* status,
                                const httplib::Headers& headers = {}) {
  return response_json(c.Post(path.c_str(), headers, body, "application/json"), status);
}
inline nlohmann::json post_json(httplib::Client& c, const std::string& path,
                                const nlohmann::json& body, int* status,
                                const httplib::Headers& headers = {}) {
  return post_json(c, path, body.dump(), status, headers);
}
inline nlohmann::json get_json(httplib::Client& c, const std::string& path, int* status) {
  return response_json(c.Get(path.c_str()), status);
}

// An OpenAI-style error body: {"error": {"message": non-empty string, "type": string, ...}}.
inline void expect_error_body(const nlohmann::json& j) {
  ASSERT_TRUE(j.is_object()) << j;
  ASSERT_TRUE(j.contains("error")) << j;
  EXPECT_TRUE(j["error"]["message"].is_string()) << j;
  EXPECT_FALSE(j["error"]["message"].get<std::string>().empty()) << j;
  EXPECT_TRUE(j["error"]["type"].is_string()) << j;
}

}  // namespace llmt::test
