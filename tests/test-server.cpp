// The OpenAI-compatible server (tools/server) in-process on a loopback ephemeral port, driven by
// httplib::Client and raw sockets, on stories260K: response schemas (plain and SSE), parallel
// clients equal to sequential ones, priority overtaking, 429 under overload, a corpus of
// malformed requests, disconnect cancelling the thread and freeing its KV, the API key, /health
// while loading, graceful stop; plus unit tests of the request translation.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/openai.h"
#include "llmthreads/engine.h"
#include "llmthreads/model.h"
#include "llmthreads/tokenizer.h"
#include "server-fixture.h"
#include "server.h"
#include "test-util.h"

namespace llmt {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kModel = "models/stories260K.gguf";
// A long generation: stories260K makes ~25k tokens/s on one core and does not end its story
// before this many (greedy, "Once upon a time"), so such a request runs for 80 ms or more.
constexpr int kLongTokens = 2000;

using Running = test::RunningServer;
using test::expect_error_body;
using test::post_json;

json completion(const std::string& prompt, int max_tokens) {
  return {
      {"model", "stories260K"}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}};
}

// The data payloads of an SSE body, "[DONE]" included.
std::vector<std::string> sse_payloads(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string ev = body.substr(pos, end - pos);
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    out.push_back(ev.substr(6));
    pos = end + 2;
  }
  EXPECT_EQ(pos, body.size()) << "trailing bytes after the last event";
  return out;
}

void expect_usage(const json& u) {
  ASSERT_TRUE(u.is_object()) << u;
  EXPECT_TRUE(u["prompt_tokens"].is_number_integer());
  EXPECT_TRUE(u["completion_tokens"].is_number_integer());
  EXPECT_EQ(u["total_tokens"].get<int>(),
            u["prompt_tokens"].get<int>() + u["completion_tokens"].get<int>());
  EXPECT_TRUE(u["prompt_tokens_details"]["cached_tokens"].is_number_integer());
}

// A raw TCP connection to the server.
int connect_to(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// Sends `body` as POST /v1/completions on a raw socket and reads until `n_events` SSE events
// arrived (a streaming request now generating). Returns the socket (the caller closes it), or -1
// after a test failure; *got receives what was read.
int start_raw_stream(int port, const json& body, size_t n_events, std::string* got) {
  const int fd = connect_to(port);
  if (fd < 0) {
    ADD_FAILURE() << "cannot connect";
    return -1;
  }
  const std::string text = body.dump();
  const std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(text.size()) + "\r\n\r\n" + text;
  if (send(fd, req.data(), req.size(), 0) != static_cast<ssize_t>(req.size())) {
    ADD_FAILURE() << "send failed";
    close(fd);
    return -1;
  }
  char buf[512];
  for (size_t n = 0; n < n_events;) {
    const ssize_t r = recv(fd, buf, sizeof(buf), 0);
    if (r <= 0) {
      ADD_FAILURE() << "the stream ended after " << n << " events: " << *got;
      close(fd);
      return -1;
    }
    got->append(buf, static_cast<size_t>(r));
    n = 0;
    for (size_t p = got->find("data: "); p != std::string::npos; p = got->find("data: ", p + 1)) {
      ++n;
    }
  }
  return fd;
}

TEST(ServerTranslate, ParsesFieldsAndRejectsBadTypes) {
  openai::OpenAiRequest r;
  SamplingParams base;
  json body = {
      {"prompt", "hi"}, {"max_tokens", 7}, {"temperature", 0.5}, {"stop", "x"},
      {"seed", 3},      {"priority", 5},   {"user", "alice"},    {"metadata", {{"k", "v"}}}};
  ASSERT_TRUE(openai::parse_openai_request(body, openai::Endpoint::kCompletions, base, &r).is_ok());
  // An unknown field is refused, naming it (it could change the output).
  {
    json unknown = body;
    unknown["unknown_field"] = {1, 2};
    const Status s =
        openai::parse_openai_request(unknown, openai::Endpoint::kCompletions, base, &r);
    EXPECT_EQ(s.code(), StatusCode::kUnsupported);
    EXPECT_EQ(s.field(), "unknown_field");
  }
  EXPECT_EQ(r.prompt, "hi");
  EXPECT_EQ(*r.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_EQ(r.stop->at(0), "x");
  EXPECT_EQ(r.sampling.seed, 3u);
  EXPECT_EQ(r.priority, 5);
  EXPECT_EQ(r.tenant, "alice");
  EXPECT_NE(openai::tenant_id("alice"), openai::tenant_id("bob"));
  EXPECT_EQ(openai::tenant_id(""), 0u);

  for (const json& bad :
       {json{{"prompt", 1}}, json{{"prompt", "a"}, {"max_tokens", "1"}},
        json{{"prompt", "a"}, {"max_tokens", 0}},
        json{{"prompt", "a"}, {"max_tokens", 18446744073709551615ull}},
        json{{"prompt", "a"}, {"n", 17}}, json{{"prompt", "a"}, {"logprobs", 6}},
        json{{"prompt", "a"}, {"logprobs", true}}, json{{"prompt", "a"}, {"stream", 1}},
        json{{"prompt", "a"}, {"top_p", 0}}, json{{"prompt", "a"}, {"stop", {1}}}, json::array()}) {
    EXPECT_FALSE(
        openai::parse_openai_request(bad, openai::Endpoint::kCompletions, base, &r).is_ok())
        << bad;
  }
  EXPECT_FALSE(openai::parse_openai_request(json{{"messages", "hi"}},
                                            openai::Endpoint::kChatCompletions, base, &r)
                   .is_ok());
  EXPECT_TRUE(server::constant_time_equal("Bearer a", "Bearer a"));
  EXPECT_FALSE(server::constant_time_equal("Bearer a", "Bearer ab"));
  EXPECT_FALSE(server::constant_time_equal("Bearer b", "Bearer a"));
}

TEST(Server, ResponsesHaveTheOpenAiSchema) {
  LLMT_REQUIRE_DATA(kModel);
  Running s;
  auto c = s.client();
  auto h = c->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
  auto m = c->Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  const json models = json::parse(m->body);
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["id"], "stories260K");
  EXPECT_EQ(models["data"][0]["object"], "model");
  EXPECT_FALSE(m->has_header("Access-Control-Allow-Origin"));

  int status = 0;
  json r = post_json(*c, "/v1/completions", completion("Once upon a time", 16), &status);
  ASSERT_EQ(status, 200) << r;
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_TRUE(r["created"].is_number_integer());
  EXPECT_EQ(r["model"], "stories260K");
  ASSERT_EQ(r["choices"].size(), 1u);
  EXPECT_EQ(r["choices"][0]["index"], 0);
  EXPECT_TRUE(r["choices"][0]["text"].is_string());
  EXPECT_TRUE(r["choices"][0]["finish_reason"] == "length" ||
              r["choices"][0]["finish_reason"] == "stop");
  expect_usage(r["usage"]);
  EXPECT_LE(r["usage"]["completion_tokens"].get<int>(), 16);
  const std::string text = r["choices"][0]["text"];

  // The same request again hits the prefix cache.
  json r2 = post_json(*c, "/v1/completions", completion("Once upon a time", 16), &status);
  ASSERT_EQ(status, 200);
  EXPECT_EQ(r2["choices"][0]["text"], text);

  json chat = {{"messages",
                {{{"role", "system"}, {"content", "Tell a story."}},
                 {{"role", "user"}, {"content", "A cat"}}}},
               {"max_tokens", 12},
               {"temperature", 0}};
  json rc = post_json(*c, "/v1/chat/completions", chat, &status);
  ASSERT_EQ(status, 200) << rc;
  EXPECT_EQ(rc["object"], "chat.completion");
  EXPECT_EQ(rc["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(rc["choices"][0]["message"]["role"], "assistant");
  EXPECT_TRUE(rc["choices"][0]["message"]["content"].is_string());
  expect_usage(rc["usage"]);

  // Streaming: the concatenated deltas equal the plain answer.
  json sreq = completion("Once upon a time", 16);
  sreq["stream"] = true;
  sreq["stream_options"] = {{"include_usage", true}};
  auto sr = c->Post("/v1/completions", sreq.dump(), "application/json");
  ASSERT_TRUE(sr);
  ASSERT_EQ(sr->status, 200);
  EXPECT_EQ(sr->get_header_value("Content-Type").rfind("text/event-stream", 0), 0u);
  std::vector<std::string> ev = sse_payloads(sr->body);
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.back(), "[DONE]");
  std::string streamed;
  std::string finish;
  for (size_t i = 0; i + 1 < ev.size(); ++i) {
    const json ch = json::parse(ev[i]);
    EXPECT_EQ(ch["object"], "text_completion");
    EXPECT_EQ(ch["model"], "stories260K");
    if (ch.contains("usage")) {
      EXPECT_TRUE(ch["choices"].empty());
      expect_usage(ch["usage"]);
      EXPECT_EQ(i + 2, ev.size()) << "usage chunk comes last";
      continue;
    }
    streamed += ch["choices"][0]["text"].get<std::string>();
    if (!ch["choices"][0]["finish_reason"].is_null()) finish = ch["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(streamed, text);
  EXPECT_TRUE(finish == "length" || finish == "stop");

  chat["stream"] = true;
  auto sc = c->Post("/v1/chat/completions", chat.dump(), "application/json");
  ASSERT_TRUE(sc);
  ASSERT_EQ(sc->status, 200);
  ev = sse_payloads(sc->body);
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.back(), "[DONE]");
  std::string content;
  for (size_t i = 0; i + 1 < ev.size(); ++i) {
    const json ch = json::parse(ev[i]);
    EXPECT_EQ(ch["object"], "chat.completion.chunk");
    const json& d = ch["choices"][0]["delta"];
    if (i == 0) {
      EXPECT_EQ(d["role"], "assistant");
    }
    if (d.contains("content")) content += d["content"].get<std::string>();
    if (i + 2 == ev.size()) {
      EXPECT_FALSE(ch["choices"][0]["finish_reason"].is_null());
    }
  }
  EXPECT_EQ(content, rc["choices"][0]["message"]["content"].get<std::string>());
}

TEST(Server, ParallelClientsMatchSequential) {
  LLMT_REQUIRE_DATA(kModel);
  Running s;
  constexpr int kN = 16;
  std::vector<std::string> prompts;
  for (int i = 0; i < kN; ++i) {
    prompts.push_back(i % 2 ? "Once upon a time, " + std::to_string(i)
                            : "Lily had a " + std::to_string(i * 7));
  }
  std::vector<std::string> seq(kN), par(kN);
  {
    auto c = s.client();
    for (int i = 0; i < kN; ++i) {
      int st = 0;
      json r = post_json(*c, "/v1/completions", completion(prompts[i], 24), &st);
      ASSERT_EQ(st, 200) << r;
      seq[i] = r["choices"][0]["text"];
    }
  }
  std::vector<std::thread> ts;
  std::vector<int> statuses(kN);
  for (int i = 0; i < kN; ++i) {
    ts.emplace_back([&, i] {
      auto c = s.client();
      json r = post_json(*c, "/v1/completions", completion(prompts[i], 24), &statuses[i]);
      if (statuses[i] == 200) par[i] = r["choices"][0]["text"];
    });
  }
  for (auto& t : ts) t.join();
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(statuses[i], 200);
    EXPECT_EQ(par[i], seq[i]) << "client " << i;
  }
}

TEST(Server, HighPriorityOvertakesQueuedLowPriority) {
  LLMT_REQUIRE_DATA(kModel);
  EngineConfig ec = test::server_engine_config();
  ec.sched.max_running = 1;
  Running s(test::server_test_options(), ec);
  constexpr int kLow = 3;
  std::vector<std::future<Clock::time_point>> lows;
  for (int i = 0; i < kLow; ++i) {
    lows.push_back(std::async(std::launch::async, [&, i] {
      auto c = s.client();
      json b = completion("Once upon a time " + std::to_string(i), kLongTokens);
      b["priority"] = 0;
      int st = 0;
      post_json(*c, "/v1/completions", b, &st);
      EXPECT_EQ(st, 200);
      return Clock::now();
    }));
  }
  // Wait until every low one is submitted (one computes per step, the others wait their turn).
  const auto t0 = Clock::now();
  while (s.engine->stats().n_submitted < kLow && Clock::now() - t0 < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  ASSERT_EQ(s.engine->stats().n_submitted, kLow);
  ASSERT_EQ(s.engine->stats().n_finished, 0);
  auto c = s.client();
  json hb = completion("The dog", 8);
  hb["priority"] = 100;
  int st = 0;
  post_json(*c, "/v1/completions", hb, &st);
  const Clock::time_point high_done = Clock::now();
  EXPECT_EQ(st, 200);
  int n_after = 0;
  for (auto& f : lows) n_after += f.get() > high_done;
  EXPECT_GE(n_after, kLow - 1) << "the high-priority request waited behind queued low ones";
}

TEST(Server, OverloadGives429AndKeepsServing) {
  LLMT_REQUIRE_DATA(kModel);
  server::ServerOptions so = test::server_test_options();
  so.max_queue = 2;
  EngineConfig ec = test::server_engine_config();
  ec.sched.max_running = 1;
  Running s(so, ec);
  constexpr int kN = 8;
  std::vector<int> statuses(kN);
  std::vector<json> bodies(kN);
  std::vector<std::string> retry(kN);
  std::vector<std::thread> ts;
  for (int i = 0; i < kN; ++i) {
    ts.emplace_back([&, i] {
      auto c = s.client();
      json b = completion("Once upon a time " + std::to_string(i), 200);
      auto r = c->Post("/v1/completions", b.dump(), "application/json");
      if (!r) return;
      statuses[i] = r->status;
      bodies[i] = json::parse(r->body, nullptr, false);
      retry[i] = r->get_header_value("Retry-After");
    });
  }
  for (auto& t : ts) t.join();
  int n429 = 0, n200 = 0;
  for (int i = 0; i < kN; ++i) {
    if (statuses[i] == 429) {
      ++n429;
      expect_error_body(bodies[i]);
      EXPECT_EQ(bodies[i]["error"]["type"], "rate_limit_error");
      // Retry-After: an integer number of seconds in [1, 60].
      ASSERT_FALSE(retry[i].empty());
      EXPECT_EQ(retry[i].find_first_not_of("0123456789"), std::string::npos) << retry[i];
      const int secs = std::atoi(retry[i].c_str());
      EXPECT_GE(secs, 1) << retry[i];
      EXPECT_LE(secs, 60) << retry[i];
    } else {
      EXPECT_EQ(statuses[i], 200);
      ++n200;
    }
  }
  EXPECT_GE(n429, 1);
  EXPECT_GE(n200, 2);
  auto c = s.client();
  int st = 0;
  post_json(*c, "/v1/completions", completion("Once", 4), &st);
  EXPECT_EQ(st, 200);
  EXPECT_EQ(s.srv->stats().n_live, 0);
}

TEST(Server, MalformedRequestsGet4xxAndTheServerStaysUp) {
  LLMT_REQUIRE_DATA(kModel);
  server::ServerOptions so = test::server_test_options();
  so.max_body_bytes = 64 << 10;
  Running s(so);
  auto c = s.client();
  const std::string long_prompt(20000, 'a');
  const std::vector<std::pair<std::string, std::string>> corpus = {
      {"/v1/completions", ""},
      {"/v1/completions", "{"},
      {"/v1/completions", "not json"},
      {"/v1/completions", "[]"},
      {"/v1/completions", "123"},
      {"/v1/completions", "null"},
      {"/v1/completions", R"({"prompt": 123})"},
      {"/v1/completions", R"({"prompt": ["a", "b"]})"},
      {"/v1/completions", R"({"prompt": ""})"},
      {"/v1/completions", R"({"max_tokens": 3})"},
      {"/v1/completions", R"({"prompt": "a", "max_tokens": "10"})"},
      {"/v1/completions", R"({"prompt": "a", "max_tokens": 1e30})"},
      {"/v1/completions", R"({"prompt": "a", "max_tokens": 99999999999999999999999999})"},
      {"/v1/completions", R"({"prompt": "a", "max_tokens": -1})"},
      {"/v1/completions", R"({"prompt": "a", "max_tokens": 100000})"},
      {"/v1/completions", R"({"prompt": "a", "temperature": "hot"})"},
      {"/v1/completions", R"({"prompt": "a", "temperature": 1e999})"},
      {"/v1/completions", R"({"prompt": "a", "temperature": -1})"},
      {"/v1/completions", R"({"prompt": "a", "top_p": 7})"},
      {"/v1/completions", R"({"prompt": "a", "stop": 5})"},
      {"/v1/completions", R"({"prompt": "a", "n": 17})"},
      {"/v1/completions", R"({"prompt": "a", "n": 0})"},
      {"/v1/completions", R"({"prompt": "a", "logprobs": 6})"},
      {"/v1/completions", R"({"prompt": "a", "echo": true})"},
      {"/v1/completions", R"({"prompt": "a", "seed": 1.5})"},
      {"/v1/completions", R"({"prompt": "a", "priority": 1e10})"},
      {"/v1/completions", R"({"prompt": "a", "priority": 99999999999})"},
      {"/v1/completions", R"({"prompt": "a", "stream": "yes"})"},
      {"/v1/completions", R"({"prompt": "a", "model": "gpt-4"})"},
      {"/v1/completions", "{\"prompt\": \"a\xff\xfe\"}"},
      {"/v1/completions", "{\"prompt\": \"\xc3\"}"},
      {"/v1/completions", R"({"prompt": "a\ud800"})"},
      {"/v1/completions", R"({"prompt": ")" + long_prompt + R"("})"},
      {"/v1/chat/completions", R"({"prompt": "a"})"},
      {"/v1/chat/completions", R"({"messages": "hi"})"},
      {"/v1/chat/completions", R"({"messages": []})"},
      {"/v1/chat/completions", R"({"messages": [{"content": "x"}]})"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": 5}]})"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21})"},
      {"/v1/nope", R"({})"},
  };
  for (const auto& [path, body] : corpus) {
    auto r = c->Post(path.c_str(), body, "application/json");
    ASSERT_TRUE(r) << "no response to " << body.substr(0, 80);
    EXPECT_GE(r->status, 400) << body.substr(0, 80);
    EXPECT_LT(r->status, 500) << body.substr(0, 80) << " -> " << r->body;
    expect_error_body(json::parse(r->body, nullptr, false));
  }
  // Oversized body: 413.
  auto big = c->Post("/v1/completions", std::string(100 << 10, ' '), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  expect_error_body(json::parse(big->body, nullptr, false));

  // A truncated body (Content-Length larger than what arrives before the client stops sending).
  {
    const int fd = connect_to(s.srv->port());
    ASSERT_GE(fd, 0);
    const std::string req =
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n{\"prompt\": \"abc";
    ASSERT_EQ(send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
    shutdown(fd, SHUT_WR);
    const std::string resp = read_all(fd);
    close(fd);
    EXPECT_TRUE(resp.empty() || resp.rfind("HTTP/1.1 4", 0) == 0) << resp;
  }
  // Garbage instead of HTTP.
  {
    const int fd = connect_to(s.srv->port());
    ASSERT_GE(fd, 0);
    const std::string req = "\x01\x02 garbage\r\n\r\n";
    send(fd, req.data(), req.size(), 0);
    shutdown(fd, SHUT_WR);
    const std::string resp = read_all(fd);
    close(fd);
    EXPECT_TRUE(resp.empty() || resp.rfind("HTTP/1.1 4", 0) == 0) << resp;
  }
  auto h = c->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  int st = 0;
  post_json(*c, "/v1/completions", completion("Once", 4), &st);
  EXPECT_EQ(st, 200);
}

// Closes the client socket of the server's only live request and expects the server to cancel
// its thread and free its KV within a second.
void close_and_expect_cancelled(Running& s, int fd, int n_threads = 1) {
  close(fd);
  const auto t0 = Clock::now();
  while ((s.engine->stats().kv_blocks_used > 0 || s.srv->stats().n_live > 0) &&
         Clock::now() - t0 < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(s.engine->stats().kv_blocks_used, 0);
  EXPECT_EQ(s.srv->stats().n_live, 0);
  EXPECT_EQ(s.srv->stats().n_client_cancelled, 1);
  EXPECT_EQ(s.engine->stats().n_cancelled, n_threads);
  EXPECT_LT(waited, 1.0);
}

TEST(Server, DisconnectDuringStreamingFreesTheKv) {
  LLMT_REQUIRE_DATA(kModel);
  EngineConfig ec = test::server_engine_config();
  ec.kv.prefix_caching = false;
  Running s(test::server_test_options(), ec);
  json b = completion("Once upon a time", kLongTokens);
  b["stream"] = true;
  // Read until a few tokens arrived: the thread is generating and holds KV blocks.
  std::string got;
  const int fd = start_raw_stream(s.srv->port(), b, 3, &got);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(got.find("[DONE]"), std::string::npos) << "finished before the disconnect";
  EXPECT_GT(s.engine->stats().kv_blocks_used, 0);
  close_and_expect_cancelled(s, fd);
}

TEST(Server, ApiKeyIsEnforcedExceptOnHealth) {
  LLMT_REQUIRE_DATA(kModel);
  server::ServerOptions so = test::server_test_options();
  so.api_key = "sekret";
  Running s(so);
  auto c = s.client();
  auto h = c->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  auto m = c->Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 401);
  expect_error_body(json::parse(m->body, nullptr, false));
  int st = 0;
  post_json(*c, "/v1/completions", completion("Once", 4), &st, {{"Authorization", "Bearer nope"}});
  EXPECT_EQ(st, 401);
  post_json(*c, "/v1/completions", completion("Once", 4), &st, {{"Authorization", "sekret"}});
  EXPECT_EQ(st, 401);
  post_json(*c, "/v1/completions", completion("Once", 4), &st,
            {{"Authorization", "Bearer sekret"}});
  EXPECT_EQ(st, 200);
  c->set_bearer_token_auth("sekret");
  auto m2 = c->Get("/v1/models");
  ASSERT_TRUE(m2);
  EXPECT_EQ(m2->status, 200);
}

TEST(Server, HealthIs503WhileLoadingAndStopCancelsLiveThreads) {
  LLMT_REQUIRE_DATA(kModel);
  server::Server srv(test::server_test_options());
  ASSERT_TRUE(srv.start().is_ok());
  httplib::Client c("127.0.0.1", srv.port());
  auto h = c.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 503);
  EXPECT_EQ(json::parse(h->body)["status"], "loading");
  auto early = c.Post("/v1/completions", completion("Once", 4).dump(), "application/json");
  ASSERT_TRUE(early);
  EXPECT_EQ(early->status, 503);

  auto e = Engine::create(test::server_engine_config());
  ASSERT_TRUE(e.is_ok());
  ASSERT_TRUE(srv.attach_engine(e->get()).is_ok());
  h = c.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);

  // A second server cannot take the same port.
  server::ServerOptions same = test::server_test_options();
  same.port = srv.port();
  EXPECT_FALSE(server::Server(same).start().is_ok());

  // A long request in flight; stop() with a short grace cancels it and returns.
  auto fut = std::async(std::launch::async, [&] {
    httplib::Client c2("127.0.0.1", srv.port());
    json b = completion("Once upon a time", kLongTokens);
    b["stream"] = true;
    auto r = c2.Post("/v1/completions", b.dump(), "application/json");
    return r ? r->status : -1;
  });
  const auto t0 = Clock::now();
  while (srv.stats().n_live == 0 && Clock::now() - t0 < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(srv.stats().n_live, 1);
  const auto t1 = Clock::now();
  srv.stop(0.05);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t1).count(), 5.0);
  EXPECT_EQ(srv.stats().n_live, 0);
  EXPECT_EQ(fut.get(), 200);  // the stream ended (with finish_reason "stop") rather than hanging
  EXPECT_FALSE(httplib::Client("127.0.0.1", srv.port()).Get("/health"));
}

}  // namespace
}  // namespace llmt

namespace llmt {
namespace {

// synth-125m on one thread: slow enough (hundreds of tokens take seconds) that a request is
// certainly still running while a test acts on it.
const char* const kSynth = "models/synth/synth-125m-q4_k_m.gguf";
EngineConfig synth_engine_config() {
  EngineConfig ec = test::server_engine_config();
  ec.model.path = test::data_path(kSynth);
  ec.kv.budget_bytes = uint64_t{64} << 20;
  return ec;
}

// Per-tenant admission: with a limit of 1, a tenant's second concurrent request gets 429 while
// another tenant is still served. The first request runs on synth-125m (one thread, 150 tokens:
// most of a second), so it is certainly live while the others arrive.
TEST(Server, PerTenantLimit) {
  LLMT_REQUIRE_DATA(kSynth);
  EngineConfig ec = synth_engine_config();
  server::ServerOptions so = test::server_test_options();
  so.model_name = "synth";
  so.max_queue_per_tenant = 1;
  Running s(so, ec);
  ASSERT_TRUE(s.srv);
  auto body = [](const char* tenant, int max_tokens) {
    return json{{"prompt", "Once upon a time"},
                {"max_tokens", max_tokens},
                {"temperature", 0},
                {"tenant", tenant}};
  };
  auto long_request = std::async(std::launch::async, [&] {
    auto c = s.client();
    int st = 0;
    post_json(*c, "/v1/completions", body("a", 150), &st);
    return st;
  });
  const auto t0 = Clock::now();
  while (s.srv->stats().n_live < 1 && Clock::now() - t0 < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_EQ(s.srv->stats().n_live, 1);
  auto c = s.client();
  int st = 0;
  json r = post_json(*c, "/v1/completions", body("a", 1), &st);
  EXPECT_EQ(st, 429) << r.dump();
  EXPECT_NE(r["error"]["message"].get<std::string>().find("tenant"), std::string::npos);
  ASSERT_EQ(s.srv->stats().n_live, 1) << "the long request ended too early for this test";
  post_json(*c, "/v1/completions", body("b", 1), &st);
  EXPECT_EQ(st, 200);
  EXPECT_EQ(long_request.get(), 200);
  // The tenant's slot is free again.
  post_json(*c, "/v1/completions", body("a", 1), &st);
  EXPECT_EQ(st, 200);
}

}  // namespace
}  // namespace llmt

namespace llmt {
namespace {

// A non-streaming client that closes its connection while its request generates: the server
// notices (it polls the connection while waiting) and cancels the thread; its KV is freed.
TEST(Server, DisconnectDuringNonStreamingFreesTheKv) {
  LLMT_REQUIRE_DATA(kSynth);
  EngineConfig ec = synth_engine_config();
  server::ServerOptions so = test::server_test_options();
  so.model_name = "synth";
  Running s(so, ec);
  ASSERT_TRUE(s.srv);
  const int fd = connect_to(s.srv->port());
  ASSERT_GE(fd, 0);
  const std::string body =
      json{{"prompt", "Once upon a time"}, {"max_tokens", 400}, {"temperature", 0}}.dump();
  const std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  // Generating (400 tokens on one thread take seconds) and holding KV blocks.
  auto t0 = Clock::now();
  while (s.engine->stats().generated_tokens < 3 && Clock::now() - t0 < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_GT(s.engine->stats().kv_blocks_used, 0);
  close_and_expect_cancelled(s, fd);
  EXPECT_LT(s.engine->stats().generated_tokens, 400);
}

}  // namespace
}  // namespace llmt

namespace llmt {
namespace {

// ---------------------------------------------------------------------------------------------
// logprobs, n > 1, Retry-After

// One greedy step of the reference: the argmax token, its logprob and the log-softmax row.
struct RefStep {
  int32_t token = -1;
  std::vector<double> logprobs;  // over the vocabulary
};

// Greedy decoding of `text` (tokenized as the server does) through a plain Context with the
// engine's KV type; log-softmax of every step's logits computed here.
std::vector<RefStep> reference_greedy(const Engine& engine, const std::string& text, int steps) {
  std::shared_ptr<const Model> model = engine.model_ptr();
  TokenizeOptions to;
  to.add_special = true;
  to.parse_special = true;
  const std::vector<int32_t> prompt = model->tokenizer().encode(text, to);
  ContextOptions co;
  co.n_threads = 1;
  co.kv_type = engine.config().kv.type;
  auto ctx = Context::create(model, co);
  EXPECT_TRUE(ctx.is_ok());
  std::vector<RefStep> out;
  if (!ctx.is_ok() || !(*ctx)->eval(prompt).is_ok()) return out;
  for (int k = 0; k < steps; ++k) {
    const auto lg = (*ctx)->logits();
    double mx = -INFINITY, sum = 0.0;
    for (float v : lg) mx = std::max<double>(mx, v);
    for (float v : lg) sum += std::exp(static_cast<double>(v) - mx);
    RefStep st;
    st.token = argmax(lg);
    for (float v : lg) st.logprobs.push_back(static_cast<double>(v) - mx - std::log(sum));
    out.push_back(st);
    const int32_t next = st.token;
    if (!(*ctx)->eval(std::span<const int32_t>(&next, 1)).is_ok()) break;
  }
  return out;
}

json with(json body, const json& extra) {
  for (auto it = extra.begin(); it != extra.end(); ++it) body[it.key()] = it.value();
  return body;
}

json chat_request(int max_tokens) {
  return {{"messages", {{{"role", "user"}, {"content", "Tell me about a cat"}}}},
          {"max_tokens", max_tokens},
          {"temperature", 0}};
}

// The non-[DONE] chunks of an SSE body, which must end with exactly one [DONE].
std::vector<json> sse_chunks(const std::string& body) {
  std::vector<std::string> ev = sse_payloads(body);
  std::vector<json> out;
  EXPECT_FALSE(ev.empty());
  if (ev.empty()) return out;
  EXPECT_EQ(ev.back(), "[DONE]");
  for (size_t i = 0; i + 1 < ev.size(); ++i) {
    EXPECT_NE(ev[i], "[DONE]") << "[DONE] before the end";
    out.push_back(json::parse(ev[i]));
  }
  return out;
}

TEST(ServerTranslate, LogprobsAndNFields) {
  SamplingParams base;
  openai::OpenAiRequest r;
  using openai::Endpoint;
  ASSERT_TRUE(openai::parse_openai_request(json{{"prompt", "a"}}, Endpoint::kCompletions, base, &r)
                  .is_ok());
  EXPECT_EQ(r.logprobs, -1);
  EXPECT_EQ(r.n, 1);
  ASSERT_TRUE(openai::parse_openai_request(json{{"prompt", "a"}, {"logprobs", 0}, {"n", 16}},
                                           Endpoint::kCompletions, base, &r)
                  .is_ok());
  EXPECT_EQ(r.logprobs, 0);
  EXPECT_EQ(r.n, 16);
  ASSERT_TRUE(openai::parse_openai_request(json{{"prompt", "a"}, {"logprobs", nullptr}},
                                           Endpoint::kCompletions, base, &r)
                  .is_ok());
  EXPECT_EQ(r.logprobs, -1);
  const json msgs = json::array({{{"role", "user"}, {"content", "x"}}});
  ASSERT_TRUE(openai::parse_openai_request(json{{"messages", msgs}, {"logprobs", true}},
                                           Endpoint::kChatCompletions, base, &r)
                  .is_ok());
  EXPECT_EQ(r.logprobs, 0);
  ASSERT_TRUE(openai::parse_openai_request(
                  json{{"messages", msgs}, {"logprobs", true}, {"top_logprobs", 20}},
                  Endpoint::kChatCompletions, base, &r)
                  .is_ok());
  EXPECT_EQ(r.logprobs, 20);
  ASSERT_TRUE(openai::parse_openai_request(json{{"messages", msgs}, {"logprobs", false}},
                                           Endpoint::kChatCompletions, base, &r)
                  .is_ok());
  EXPECT_EQ(r.logprobs, -1);
  // The field at fault travels in the Status (the error body's "param"), not in its text.
  const Status bad_top = openai::parse_openai_request(
      json{{"messages", msgs}, {"logprobs", true}, {"top_logprobs", 21}},
      Endpoint::kChatCompletions, base, &r);
  EXPECT_EQ(bad_top.field(), "top_logprobs");
  EXPECT_EQ(openai::error_body_for(bad_top)["error"]["param"], "top_logprobs");
  const Status no_field = invalid_argument("the prompt is empty");
  EXPECT_EQ(no_field.field(), "");
  EXPECT_TRUE(openai::error_body_for(no_field)["error"]["param"].is_null());
  EXPECT_TRUE(openai::error_body_for(invalid_argument("\"a b\" x"))["error"]["param"].is_null());
  EXPECT_EQ(openai::choice_seed(41, 1), 42u);
  EXPECT_EQ(openai::choice_seed(~uint64_t{0}, 1), 0u);
  Usage a{5, 7, 3}, b{5, 4, 5};
  const Usage m = openai::merge_usage({a, b});
  EXPECT_EQ(m.prompt_tokens, 5);
  EXPECT_EQ(m.completion_tokens, 11);
  EXPECT_EQ(m.cached_tokens, 3);
}

TEST(ServerRetryAfter, RuleIsClampedIntegerSeconds) {
  EXPECT_EQ(server::retry_after_seconds(0, 100), 1);
  EXPECT_EQ(server::retry_after_seconds(1000, 100), 10);
  EXPECT_EQ(server::retry_after_seconds(1001, 100), 11);
  EXPECT_EQ(server::retry_after_seconds(1e12, 1), 60);
  EXPECT_EQ(server::retry_after_seconds(500, 0), 1);
  EXPECT_EQ(server::retry_after_seconds(500, -3), 1);
  EXPECT_EQ(server::retry_after_seconds(NAN, 10), 1);
  EXPECT_EQ(server::retry_after_seconds(10, INFINITY), 1);
}

// Completions logprobs: token_logprobs equal an independent log-softmax of a plain Context's
// logits on the same prompt; greedy tokens are the best alternative; top_logprobs have exactly
// N entries; text_offset counts from the start of the generated text; streaming gives the same
// entries spread over the chunks.
TEST(Server, CompletionsLogprobsMatchReference) {
  LLMT_REQUIRE_DATA(kModel);
  Running s;
  auto c = s.client();
  const std::string prompt = "Once upon a time";
  constexpr int kTokens = 12;
  int st = 0;
  json r =
      post_json(*c, "/v1/completions", with(completion(prompt, kTokens), {{"logprobs", 3}}), &st);
  ASSERT_EQ(st, 200) << r;
  const json& ch = r["choices"][0];
  const std::string text = ch["text"];
  const json& lp = ch["logprobs"];
  ASSERT_TRUE(lp.is_object()) << r;
  const size_t n = lp["tokens"].size();
  ASSERT_GT(n, 0u);
  EXPECT_EQ(lp["token_logprobs"].size(), n);
  EXPECT_EQ(lp["top_logprobs"].size(), n);
  EXPECT_EQ(lp["text_offset"].size(), n);
  const int completion_tokens = r["usage"]["completion_tokens"];
  EXPECT_TRUE(n == static_cast<size_t>(completion_tokens) ||
              (n + 1 == static_cast<size_t>(completion_tokens) && ch["finish_reason"] == "stop"));
  const std::vector<RefStep> ref = reference_greedy(*s.engine, prompt, kTokens);
  ASSERT_GE(ref.size(), n);
  const Tokenizer& tok = s.engine->model().tokenizer();
  std::string joined;
  for (size_t k = 0; k < n; ++k) {
    SCOPED_TRACE("token " + std::to_string(k));
    const std::string piece = tok.token_to_piece(ref[k].token);
    EXPECT_EQ(lp["tokens"][k], piece);
    const double got = lp["token_logprobs"][k];
    EXPECT_NEAR(got, ref[k].logprobs[ref[k].token], 1e-4);
    const json& top = lp["top_logprobs"][k];
    ASSERT_TRUE(top.is_object());
    EXPECT_EQ(top.size(), 3u);
    double best = -INFINITY;
    for (auto it = top.begin(); it != top.end(); ++it)
      best = std::max(best, it.value().get<double>());
    EXPECT_DOUBLE_EQ(best, got);  // greedy: the sampled token is the most likely one
    ASSERT_TRUE(top.contains(piece));
    EXPECT_DOUBLE_EQ(top[piece].get<double>(), got);
    EXPECT_EQ(lp["text_offset"][k], static_cast<int64_t>(joined.size()));  // ASCII text
    joined += piece;
  }
  EXPECT_EQ(joined, text);

  // Streaming: the same entries, spread over the chunks.
  json sreq = with(completion(prompt, kTokens), {{"logprobs", 3}, {"stream", true}});
  auto sr = c->Post("/v1/completions", sreq.dump(), "application/json");
  ASSERT_TRUE(sr);
  ASSERT_EQ(sr->status, 200);
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       offsets = json::array();
  std::string streamed;
  for (const json& chunk : sse_chunks(sr->body)) {
    const json& c0 = chunk["choices"][0];
    streamed += c0["text"].get<std::string>();
    if (c0["logprobs"].is_null()) {
      EXPECT_EQ(c0["text"], "") << chunk;
      continue;
    }
    for (const char* key : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
      EXPECT_EQ(c0["logprobs"][key].size(), c0["logprobs"]["tokens"].size()) << chunk;
    }
    for (size_t i = 0; i < c0["logprobs"]["tokens"].size(); ++i) {
      tokens.push_back(c0["logprobs"]["tokens"][i]);
      token_logprobs.push_back(c0["logprobs"]["token_logprobs"][i]);
      top_logprobs.push_back(c0["logprobs"]["top_logprobs"][i]);
      offsets.push_back(c0["logprobs"]["text_offset"][i]);
    }
  }
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(tokens, lp["tokens"]);
  EXPECT_EQ(token_logprobs, lp["token_logprobs"]);
  EXPECT_EQ(top_logprobs, lp["top_logprobs"]);
  EXPECT_EQ(offsets, lp["text_offset"]);

  // logprobs 0: the sampled token only; absent / null: no logprobs.
  r = post_json(*c, "/v1/completions", with(completion(prompt, 4), {{"logprobs", 0}}), &st);
  ASSERT_EQ(st, 200) << r;
  for (const json& top : r["choices"][0]["logprobs"]["top_logprobs"]) EXPECT_EQ(top.size(), 1u);
  r = post_json(*c, "/v1/completions", with(completion(prompt, 4), {{"logprobs", nullptr}}), &st);
  ASSERT_EQ(st, 200) << r;
  EXPECT_TRUE(r["choices"][0]["logprobs"].is_null());
}

// Chat logprobs: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}
// with exactly top_logprobs alternatives, most likely first; streaming deltas carry the same.
TEST(Server, ChatLogprobsShape) {
  LLMT_REQUIRE_DATA(kModel);
  Running s;
  auto c = s.client();
  int st = 0;
  const json req = with(chat_request(10), {{"logprobs", true}, {"top_logprobs", 2}});
  json r = post_json(*c, "/v1/chat/completions", req, &st);
  ASSERT_EQ(st, 200) << r;
  const json& ch = r["choices"][0];
  ASSERT_TRUE(ch["logprobs"].is_object()) << r;
  const json& content = ch["logprobs"]["content"];
  ASSERT_TRUE(content.is_array());
  ASSERT_FALSE(content.empty());
  std::string joined;
  for (const json& e : content) {
    ASSERT_TRUE(e["token"].is_string()) << e;
    const std::string token = e["token"];
    const double logprob = e["logprob"];
    EXPECT_LE(logprob, 0.0);
    std::vector<int> bytes(token.begin(), token.end());
    for (int& b : bytes) b &= 0xFF;
    EXPECT_EQ(e["bytes"].get<std::vector<int>>(), bytes) << e;
    const json& top = e["top_logprobs"];
    ASSERT_EQ(top.size(), 2u) << e;
    EXPECT_EQ(top[0]["token"], token);  // greedy
    EXPECT_DOUBLE_EQ(top[0]["logprob"].get<double>(), logprob);
    EXPECT_GE(top[0]["logprob"].get<double>(), top[1]["logprob"].get<double>());
    for (const json& t : top) EXPECT_TRUE(t["bytes"].is_array());
    joined += token;
  }
  EXPECT_EQ(joined, ch["message"]["content"].get<std::string>());

  // Streaming: the deltas' entries concatenated equal the non-streaming ones.
  auto sr =
      c->Post("/v1/chat/completions", with(req, {{"stream", true}}).dump(), "application/json");
  ASSERT_TRUE(sr);
  ASSERT_EQ(sr->status, 200);
  json streamed = json::array();
  for (const json& chunk : sse_chunks(sr->body)) {
    const json& lp = chunk["choices"][0]["logprobs"];
    if (lp.is_null()) continue;
    for (const json& e : lp["content"]) streamed.push_back(e);
  }
  EXPECT_EQ(streamed, content);

  // logprobs without top_logprobs: no alternatives; without logprobs: null.
  r = post_json(*c, "/v1/chat/completions", with(chat_request(4), {{"logprobs", true}}), &st);
  ASSERT_EQ(st, 200) << r;
  for (const json& e : r["choices"][0]["logprobs"]["content"]) {
    EXPECT_TRUE(e["top_logprobs"].is_array());
    EXPECT_TRUE(e["top_logprobs"].empty());
  }
  r = post_json(*c, "/v1/chat/completions", chat_request(4), &st);
  ASSERT_EQ(st, 200) << r;
  EXPECT_TRUE(r["choices"][0]["logprobs"].is_null());
}

// Out-of-range logprobs / top_logprobs / n: 400 invalid_request_error naming the field.
TEST(Server, LogprobsAndNOutOfRangeAre400) {
  LLMT_REQUIRE_DATA(kModel);
  Running s;
  auto c = s.client();
  const json comp = completion("Once", 4);
  const json chat = chat_request(4);
  const std::vector<std::tuple<std::string, json, std::string>> cases = {
      {"/v1/completions", with(comp, {{"logprobs", 6}}), "logprobs"},
      {"/v1/completions", with(comp, {{"logprobs", -1}}), "logprobs"},
      {"/v1/completions", with(comp, {{"logprobs", true}}), "logprobs"},
      {"/v1/completions", with(comp, {{"n", 17}}), "n"},
      {"/v1/completions", with(comp, {{"n", 0}}), "n"},
      {"/v1/chat/completions", with(chat, {{"logprobs", true}, {"top_logprobs", 21}}),
       "top_logprobs"},
      {"/v1/chat/completions", with(chat, {{"logprobs", true}, {"top_logprobs", -1}}),
       "top_logprobs"},
      {"/v1/chat/completions", with(chat, {{"top_logprobs", 2}}), "top_logprobs"},
      {"/v1/chat/completions", with(chat, {{"logprobs", false}, {"top_logprobs", 1}}),
       "top_logprobs"},
      {"/v1/chat/completions", with(chat, {{"logprobs", 1}}), "logprobs"},
      {"/v1/chat/completions", with(chat, {{"n", 17}}), "n"},
  };
  for (const auto& [path, body, param] : cases) {
    int st = 0;
    json r = post_json(*c, path, body, &st);
    EXPECT_EQ(st, 400) << path << " " << body;
    expect_error_body(r);
    EXPECT_EQ(r["error"]["type"], "invalid_request_error") << r;
    EXPECT_EQ(r["error"]["param"], param) << r;
    EXPECT_NE(r["error"]["message"].get<std::string>().find(param), std::string::npos) << r;
  }
}

// n = 3 with a seed: three choices equal to three requests with seeds s, s+1, s+2; usage counts
// the prompt once and sums the completions; temperature 0 gives equal choices.
TEST(Server, NChoicesEqualSeparateSeeds) {
  LLMT_REQUIRE_DATA(kModel);
  Running s;
  auto c = s.client();
  const json base = {
      {"prompt", "Once upon a time"}, {"max_tokens", 16}, {"temperature", 0.9}, {"seed", 42}};
  int st = 0;
  json r = post_json(*c, "/v1/completions", with(base, {{"n", 3}, {"logprobs", 1}}), &st);
  ASSERT_EQ(st, 200) << r;
  ASSERT_EQ(r["choices"].size(), 3u);
  int completion_sum = 0, prompt_tokens = 0;
  std::vector<std::string> texts;
  for (int i = 0; i < 3; ++i) {
    json one = post_json(*c, "/v1/completions", with(base, {{"seed", 42 + i}}), &st);
    ASSERT_EQ(st, 200) << one;
    const json& ch = r["choices"][i];
    EXPECT_EQ(ch["index"], i);
    EXPECT_EQ(ch["text"], one["choices"][0]["text"]) << "choice " << i;
    EXPECT_EQ(ch["finish_reason"], one["choices"][0]["finish_reason"]);
    EXPECT_TRUE(ch["logprobs"].is_object());
    completion_sum += one["usage"]["completion_tokens"].get<int>();
    prompt_tokens = one["usage"]["prompt_tokens"];
    texts.push_back(ch["text"]);
  }
  expect_usage(r["usage"]);
  EXPECT_EQ(r["usage"]["completion_tokens"], completion_sum);
  EXPECT_EQ(r["usage"]["prompt_tokens"], prompt_tokens);
  EXPECT_FALSE(texts[0] == texts[1] && texts[1] == texts[2]) << "seeds did not differ";

  // Greedy: all choices equal.
  r = post_json(*c, "/v1/completions", with(completion("Lily went", 12), {{"n", 3}}), &st);
  ASSERT_EQ(st, 200) << r;
  ASSERT_EQ(r["choices"].size(), 3u);
  for (int i = 1; i < 3; ++i) EXPECT_EQ(r["choices"][i]["text"], r["choices"][0]["text"]);
  // Chat too.
  r = post_json(*c, "/v1/chat/completions", with(chat_request(8), {{"n", 2}}), &st);
  ASSERT_EQ(st, 200) << r;
  ASSERT_EQ(r["choices"].size(), 2u);
  EXPECT_EQ(r["choices"][1]["index"], 1);
  EXPECT_EQ(r["choices"][1]["message"], r["choices"][0]["message"]);
  EXPECT_EQ(s.srv->stats().n_live_threads, 0);
}

// n = 2 streaming: chunks of both indexes interleaved, one finish chunk per index, the usage
// chunk, then exactly one [DONE]; the texts equal the non-streaming n = 2 answer.
TEST(Server, NChoicesStream) {
  LLMT_REQUIRE_DATA(kModel);
  Running s;
  auto c = s.client();
  const json base = {{"prompt", "Once upon a time"},
                     {"max_tokens", 20},
                     {"temperature", 1.0},
                     {"seed", 7},
                     {"n", 2}};
  int st = 0;
  const json plain = post_json(*c, "/v1/completions", base, &st);
  ASSERT_EQ(st, 200) << plain;
  auto sr =
      c->Post("/v1/completions",
              with(base, {{"stream", true}, {"stream_options", {{"include_usage", true}}}}).dump(),
              "application/json");
  ASSERT_TRUE(sr);
  ASSERT_EQ(sr->status, 200);
  std::vector<std::string> text(2);
  std::vector<int> finishes(2, 0);
  bool usage_seen = false;
  const std::vector<json> chunks = sse_chunks(sr->body);
  for (const json& chunk : chunks) {
    if (chunk.contains("usage")) {
      // The same counts (the prompt now comes from the prefix cache).
      EXPECT_EQ(chunk["usage"]["completion_tokens"], plain["usage"]["completion_tokens"]);
      EXPECT_EQ(chunk["usage"]["prompt_tokens"], plain["usage"]["prompt_tokens"]);
      usage_seen = true;
      continue;
    }
    EXPECT_FALSE(usage_seen) << "usage chunk before the end";
    ASSERT_EQ(chunk["choices"].size(), 1u);
    const json& ch = chunk["choices"][0];
    const int index = ch["index"];
    ASSERT_TRUE(index == 0 || index == 1) << chunk;
    EXPECT_EQ(finishes[index], 0) << "chunk after the finish of choice " << index;
    text[index] += ch["text"].get<std::string>();
    if (!ch["finish_reason"].is_null()) ++finishes[index];
  }
  EXPECT_TRUE(usage_seen);
  EXPECT_EQ(finishes, (std::vector<int>{1, 1}));
  for (int i = 0; i < 2; ++i) EXPECT_EQ(text[i], plain["choices"][i]["text"]) << i;

  // Chat: a role chunk per choice first.
  json chat = with(chat_request(6), {{"n", 2}, {"stream", true}});
  auto sc = c->Post("/v1/chat/completions", chat.dump(), "application/json");
  ASSERT_TRUE(sc);
  ASSERT_EQ(sc->status, 200);
  std::vector<int> roles(2, 0);
  std::vector<int> chat_finishes(2, 0);
  for (const json& chunk : sse_chunks(sc->body)) {
    const json& ch = chunk["choices"][0];
    const int index = ch["index"];
    if (ch["delta"].contains("role")) {
      EXPECT_EQ(chat_finishes[index], 0);
      ++roles[index];
    }
    if (!ch["finish_reason"].is_null()) ++chat_finishes[index];
  }
  EXPECT_EQ(roles, (std::vector<int>{1, 1}));
  EXPECT_EQ(chat_finishes, (std::vector<int>{1, 1}));
}

// A streaming client of an n = 2 request that goes away cancels both threads.
TEST(Server, NChoicesDisconnectCancelsAll) {
  LLMT_REQUIRE_DATA(kModel);
  EngineConfig ec = test::server_engine_config();
  ec.kv.prefix_caching = false;
  Running s(test::server_test_options(), ec);
  json b = with(completion("Once upon a time", kLongTokens), {{"stream", true}, {"n", 2}});
  std::string got;
  const int fd = start_raw_stream(s.srv->port(), b, 4, &got);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(got.find("[DONE]"), std::string::npos) << "finished before the disconnect";
  EXPECT_EQ(s.srv->stats().n_live_threads, 2);
  close_and_expect_cancelled(s, fd, 2);
}

}  // namespace
}  // namespace llmt

namespace llmt {
namespace {

// Admission counts threads: with --max-queue 3 and an n = 2 request running, another n = 2
// request gets 429 (with an integer Retry-After in [1, 60]) while an n = 1 one is served; n
// beyond max_queue is a 400. The running request is on synth-125m (one thread), so it is
// certainly live meanwhile.
TEST(Server, AdmissionCountsChoicesAsThreads) {
  LLMT_REQUIRE_DATA(kSynth);
  EngineConfig ec = synth_engine_config();
  server::ServerOptions so = test::server_test_options();
  so.model_name = "synth";
  so.max_queue = 3;
  Running s(so, ec);
  ASSERT_TRUE(s.srv);
  auto body = [](int n, int max_tokens) {
    return json{
        {"prompt", "Once upon a time"}, {"max_tokens", max_tokens}, {"temperature", 0}, {"n", n}};
  };
  auto long_request = std::async(std::launch::async, [&] {
    auto c = s.client();
    int st = 0;
    json r = post_json(*c, "/v1/completions", body(2, 150), &st);
    return st;
  });
  const auto t0 = Clock::now();
  while (s.srv->stats().n_live_threads < 2 && Clock::now() - t0 < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_EQ(s.srv->stats().n_live_threads, 2);
  auto c = s.client();
  auto r = c->Post("/v1/completions", body(2, 1).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429) << r->body;
  const std::string retry = r->get_header_value("Retry-After");
  ASSERT_FALSE(retry.empty());
  EXPECT_EQ(retry.find_first_not_of("0123456789"), std::string::npos) << retry;
  EXPECT_GE(std::atoi(retry.c_str()), 1);
  EXPECT_LE(std::atoi(retry.c_str()), 60);
  ASSERT_EQ(s.srv->stats().n_live_threads, 2) << "the long request ended too early for this test";
  int st = 0;
  post_json(*c, "/v1/completions", body(1, 1), &st);
  EXPECT_EQ(st, 200);
  json big = post_json(*c, "/v1/completions", body(4, 1), &st);
  EXPECT_EQ(st, 400) << big;
  EXPECT_EQ(long_request.get(), 200);
  EXPECT_EQ(s.srv->stats().n_live_threads, 0);
}

}  // namespace
}  // namespace llmt
