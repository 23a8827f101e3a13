// The server's /metrics and /v1/tasks endpoints in-process on a loopback ephemeral port, on
// stories260K: the Prometheus text parses and counts requests and completions; a classify task
// completes with probabilities summing to 1 in input order; DELETE cancels a long generate task
// and frees its KV; bad bodies get 400, unknown ids 404, over-size bodies 413; the API key guards
// both endpoints; finished tasks are evicted oldest-first beyond the limit.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "llmthreads/engine.h"
#include "server-fixture.h"
#include "server.h"
#include "task-api.h"
#include "test-util.h"

namespace llmt {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kModel = "models/stories260K.gguf";
constexpr int kLongTokens = 2000;  // as test-server.cpp: runs well past the DELETE

// One keep-alive connection per client: each request is handled (and counted) before the next.
using test::expect_error_body;
using test::get_json;
using test::post_json;

struct Running : test::RunningServer {
  using RunningServer::RunningServer;
  std::unique_ptr<httplib::Client> client() const { return RunningServer::client(true); }
};

// Polls GET /v1/tasks/{id} until its status is not "running" (or 60 s).
json wait_task(httplib::Client& c, const std::string& id) {
  const auto t0 = Clock::now();
  json t;
  while (Clock::now() - t0 < std::chrono::seconds(60)) {
    int st = 0;
    t = get_json(c, "/v1/tasks/" + id, &st);
    EXPECT_EQ(st, 200) << t;
    if (st != 200 || t["status"] != "running") return t;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << "task " << id << " still running: " << t;
  return t;
}

// Prometheus text -> {"name{labels}": value}; every line must be a comment or a sample.
std::map<std::string, double> parse_prometheus(const std::string& text) {
  std::map<std::string, double> out;
  const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})?) (\S+)$)");
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    std::smatch m;
    if (!std::regex_match(line, m, sample)) {
      ADD_FAILURE() << "not a Prometheus line: '" << line << "'";
      continue;
    }
    const std::string v = m[3].str();
    out[m[1].str()] = v == "+Inf" ? INFINITY : v == "-Inf" ? -INFINITY : std::stod(v);
  }
  EXPECT_TRUE(!text.empty() && text.back() == '\n');
  return out;
}

json completion(const std::string& prompt, int max_tokens) {
  return {
      {"model", "stories260K"}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}};
}

TEST(ServerMetricsEndpoint, RendersAndCountsRequestsAndLatencies) {
  LLMT_REQUIRE_DATA(kModel);
  Running s;
  auto c = s.client();
  int st = 0;
  int64_t n_gaps = 0;
  // First: a 404 closes its connection (the client reconnects), so it is surely counted by the
  // time of the /metrics request below.
  auto nf = c->Get("/no/such/path/12345");
  ASSERT_TRUE(nf);
  EXPECT_EQ(nf->status, 404);
  for (int i = 0; i < 3; ++i) {
    json r = post_json(*c, "/v1/completions", completion("Once upon a time", 6 + i), &st);
    ASSERT_EQ(st, 200) << r;
    n_gaps += r["usage"]["completion_tokens"].get<int64_t>() - 1;
  }
  json chat = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
               {"max_tokens", 5},
               {"temperature", 0},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  auto sr = c->Post("/v1/chat/completions", chat.dump(), "application/json");
  ASSERT_TRUE(sr);
  ASSERT_EQ(sr->status, 200);
  {
    // The usage chunk is the last data event before [DONE].
    const size_t done = sr->body.rfind("data: [DONE]");
    ASSERT_NE(done, std::string::npos);
    const size_t p = sr->body.rfind("data: ", done - 1);
    json u = json::parse(sr->body.substr(p + 6, done - p - 6), nullptr, false);
    ASSERT_TRUE(u.contains("usage")) << u;
    n_gaps += u["usage"]["completion_tokens"].get<int64_t>() - 1;
  }
  post_json(*c, "/v1/completions", std::string("{bad json"), &st);
  EXPECT_EQ(st, 400);
  get_json(*c, "/v1/models", &st);
  EXPECT_EQ(st, 200);

  auto m = c->Get("/metrics");
  ASSERT_TRUE(m);
  ASSERT_EQ(m->status, 200);
  EXPECT_EQ(m->get_header_value("Content-Type"), "text/plain; version=0.0.4");
  const std::map<std::string, double> v = parse_prometheus(m->body);
  auto at = [&](const std::string& k) {
    auto it = v.find(k);
    EXPECT_NE(it, v.end()) << "missing sample " << k << " in\n" << m->body;
    return it == v.end() ? -1.0 : it->second;
  };
  EXPECT_EQ(at(R"(llmthreads_requests_total{endpoint="/v1/completions",status="200"})"), 3);
  EXPECT_EQ(at(R"(llmthreads_requests_total{endpoint="/v1/completions",status="400"})"), 1);
  EXPECT_EQ(at(R"(llmthreads_requests_total{endpoint="/v1/chat/completions",status="200"})"), 1);
  EXPECT_EQ(at(R"(llmthreads_requests_total{endpoint="/v1/models",status="200"})"), 1);
  EXPECT_EQ(at(R"(llmthreads_requests_total{endpoint="other",status="404"})"), 1);
  EXPECT_EQ(m->body.find("/no/such/path"), std::string::npos) << "raw paths must not be labels";
  EXPECT_EQ(at("llmthreads_time_to_first_token_seconds_count"), 4);
  EXPECT_GT(at("llmthreads_time_to_first_token_seconds_sum"), 0);
  EXPECT_EQ(at(R"(llmthreads_time_to_first_token_seconds_bucket{le="+Inf"})"), 4);
  EXPECT_EQ(at("llmthreads_inter_token_latency_seconds_count"), static_cast<double>(n_gaps));
  EXPECT_EQ(at("llmthreads_queue_tokens"), 0);
  EXPECT_EQ(at(R"(llmthreads_kv_blocks{state="used"})"), 0);
  EXPECT_GT(at("llmthreads_kv_blocks_capacity"), 0);
  EXPECT_GT(at("llmthreads_generated_tokens_total"), 0);

  // The /metrics request itself is counted too (after it was answered).
  auto m2 = c->Get("/metrics");
  ASSERT_TRUE(m2);
  const std::map<std::string, double> v2 = parse_prometheus(m2->body);
  EXPECT_EQ(v2.at(R"(llmthreads_requests_total{endpoint="/metrics",status="200"})"), 1);
}

TEST(ServerTasks, ClassifyCompletesInInputOrderWithProbabilities) {
  LLMT_REQUIRE_DATA(kModel);
  Running s;
  auto c = s.client();
  const std::vector<std::string> texts = {
      "Lily was happy. She played with her ball in the sun.",
      "Tom cried because his toy was broken.", "The dog ran to the park and found a big stick.",
      "Sue lost her cat and she was very sad.", "They ate cake and laughed all day."};
  json docs = json::array();
  for (size_t i = 0; i < texts.size(); ++i) {
    docs.push_back({{"id", "doc-" + std::to_string(i)}, {"text", texts[i]}});
  }
  json body = {{"task", "classify"},
               {"prompt", "Story: {text}\nThe story is"},
               {"labels", {"happy", "sad"}},
               {"documents", docs},
               {"priority", 2},
               {"tenant", "batch"}};
  int st = 0;
  json created = post_json(*c, "/v1/tasks", body, &st);
  ASSERT_EQ(st, 202) << created;
  EXPECT_EQ(created["id"], "task_1");
  EXPECT_EQ(created["status"], "running");
  EXPECT_EQ(created["n_documents"], 5);
  json t = wait_task(*c, created["id"]);
  ASSERT_EQ(t["status"], "completed") << t;
  EXPECT_EQ(t["task"], "classify");
  EXPECT_EQ(t["progress"]["done"], 5);
  EXPECT_EQ(t["progress"]["total"], 5);
  ASSERT_EQ(t["results"].size(), 5u) << t;
  for (size_t i = 0; i < 5; ++i) {
    const json& r = t["results"][i];
    EXPECT_EQ(r["id"], "doc-" + std::to_string(i)) << r;
    EXPECT_TRUE(r["error"].is_null()) << r;
    ASSERT_TRUE(r["probs"].is_object()) << r;
    ASSERT_EQ(r["probs"].size(), 2u) << r;
    const double ph = r["probs"]["happy"].get<double>(), ps = r["probs"]["sad"].get<double>();
    EXPECT_NEAR(ph + ps, 1.0, 1e-6) << r;
    EXPECT_EQ(r["label"], ph >= ps ? "happy" : "sad") << r;
  }

  // inputs: ids are positions; generate gives text.
  json gen = {{"task", "generate"},
              {"prompt", "{text}"},
              {"inputs", {"Once upon a time", "Tom"}},
              {"max_tokens", 4}};
  json g = post_json(*c, "/v1/tasks", gen, &st);
  ASSERT_EQ(st, 202) << g;
  EXPECT_EQ(g["id"], "task_2");
  json gt = wait_task(*c, g["id"]);
  ASSERT_EQ(gt["status"], "completed") << gt;
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(gt["results"][i]["id"], i);
    EXPECT_TRUE(gt["results"][i]["text"].is_string());
    EXPECT_FALSE(gt["results"][i]["text"].get<std::string>().empty());
    EXPECT_EQ(gt["results"][i]["finish_reason"], "length");
    EXPECT_EQ(gt["results"][i]["usage"]["completion_tokens"], 4);
  }
}

TEST(ServerTasks, DeleteCancelsALongGenerateAndFreesTheKv) {
  LLMT_REQUIRE_DATA(kModel);
  EngineConfig ec = test::server_engine_config();
  ec.kv.prefix_caching = false;
  Running s(test::server_test_options(), ec);
  auto c = s.client();
  json body = {{"task", "generate"},
               {"prompt", "{text}"},
               {"inputs", {"Once upon a time", "One day", "Tom and Lily"}},
               {"max_tokens", kLongTokens}};
  int st = 0;
  json created = post_json(*c, "/v1/tasks", body, &st);
  ASSERT_EQ(st, 202) << created;
  const std::string id = created["id"];
  // All three documents in the engine and generating (the job's feeder adds them on its own
  // thread, so a DELETE right after the POST may find some not yet added; the engine publishes
  // its KV gauge at the end of a step, after the step's token count).
  auto in_engine = [&] {
    const EngineStats es = s.engine->stats();
    return es.n_submitted == 3 && es.generated_tokens >= 6 && es.kv_blocks_used > 0;
  };
  auto t0 = Clock::now();
  while (!in_engine() && Clock::now() - t0 < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(in_engine());
  auto d = c->Delete(("/v1/tasks/" + id).c_str());
  ASSERT_TRUE(d);
  ASSERT_EQ(d->status, 200) << d->body;
  json dj = json::parse(d->body, nullptr, false);
  EXPECT_EQ(dj["status"], "cancelled") << dj;
  t0 = Clock::now();
  while (s.engine->stats().kv_blocks_used > 0 && Clock::now() - t0 < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(s.engine->stats().kv_blocks_used, 0);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 1.0);
  // Every document is delivered as cancelled; the status stays "cancelled".
  json t;
  t0 = Clock::now();
  do {
    t = get_json(*c, "/v1/tasks/" + id, &st);
    ASSERT_EQ(st, 200);
  } while (t["progress"]["done"] != 3 && Clock::now() - t0 < std::chrono::seconds(5));
  EXPECT_EQ(t["status"], "cancelled") << t;
  ASSERT_EQ(t["results"].size(), 3u);
  for (const json& r : t["results"]) {
    EXPECT_EQ(r["error"]["code"], "cancelled") << r;
  }
  EXPECT_EQ(s.engine->stats().n_cancelled, 3);
}

// A DELETE racing the job's feeder (documents being taken from the task's source and added):
// every document still gets exactly one result, whatever point the cancel lands at.
TEST(ServerTasks, DeleteRightAfterPostDeliversEveryDocument) {
  LLMT_REQUIRE_DATA(kModel);
  Running s(test::server_test_options(), test::server_engine_config());
  auto c = s.client();
  for (int round = 0; round < 5; ++round) {
    json inputs = json::array();
    for (int i = 0; i < 40; ++i) inputs.push_back("Once upon a time " + std::to_string(i));
    json body = {{"task", "generate"},
                 {"prompt", "{text}"},
                 {"inputs", inputs},
                 {"max_tokens", kLongTokens}};
    int st = 0;
    json created = post_json(*c, "/v1/tasks", body, &st);
    ASSERT_EQ(st, 202) << created;
    const std::string id = created["id"];
    if (round > 0) std::this_thread::sleep_for(std::chrono::milliseconds(round));
    auto d = c->Delete(("/v1/tasks/" + id).c_str());
    ASSERT_TRUE(d);
    ASSERT_EQ(d->status, 200) << d->body;
    // The task reads "cancelled" from the DELETE on; its documents' results follow.
    json t;
    const auto t0 = Clock::now();
    do {
      t = get_json(*c, "/v1/tasks/" + id, &st);
      ASSERT_EQ(st, 200);
    } while (t["progress"]["done"] != 40 && Clock::now() - t0 < std::chrono::seconds(5));
    EXPECT_EQ(t["status"], "cancelled") << t;
    EXPECT_EQ(t["progress"]["done"], 40) << t;
    ASSERT_EQ(t["results"].size(), 40u);
    for (const json& r : t["results"]) {
      ASSERT_TRUE(r.is_object()) << t;
      EXPECT_EQ(r["error"]["code"], "cancelled") << r;
    }
  }
}

TEST(ServerTasks, BadBodiesGet400UnknownIds404) {
  LLMT_REQUIRE_DATA(kModel);
  server::ServerOptions so = test::server_test_options();
  so.max_body_bytes = size_t{1} << 20;
  Running s(so);
  auto c = s.client();
  json many = json::array();
  for (size_t i = 0; i <= server::kMaxTaskDocuments; ++i) many.push_back("x");
  const json ok = {
      {"task", "classify"}, {"prompt", "{text} is"}, {"labels", {"a", "b"}}, {"inputs", {"hello"}}};
  auto with = [&](const char* k, json v) {
    json b = ok;
    b[k] = std::move(v);
    return b.dump();
  };
  auto without = [&](const char* k) {
    json b = ok;
    b.erase(k);
    return b.dump();
  };
  const std::vector<std::string> bad = {"{not json",
                                        "[]",
                                        "{}",
                                        "\"classify\"",
                                        with("task", "dance"),
                                        with("task", 3),
                                        with("prompt", "no placeholder"),
                                        with("prompt", 5),
                                        with("labels", {"a"}),
                                        with("labels", "a,b"),
                                        with("labels", {"a", 1}),
                                        with("labels", {"a", "a"}),
                                        without("inputs"),
                                        with("documents", {{{"text", "x"}}}),
                                        with("inputs", json::array()),
                                        with("inputs", many),
                                        with("inputs", {1}),
                                        with("inputs", "hello"),
                                        with("split", "words"),
                                        with("split", 7),
                                        with("merge", "avg"),
                                        with("merge", "reduce"),
                                        with("max_tokens", 0),
                                        with("max_tokens", "5"),
                                        with("max_tokens", 1e30),
                                        with("max_tokens", 18446744073709551615ull),
                                        with("priority", 1.5),
                                        with("priority", 4294967296LL),
                                        with("tenant", 3)};
  int st = 0;
  for (const std::string& b : bad) {
    json r = post_json(*c, "/v1/tasks", b, &st);
    EXPECT_EQ(st, 400) << b << " -> " << r;
    expect_error_body(r);
  }
  json docs_bad = {{"task", "generate"}, {"documents", {{{"id", "a"}}}}};
  json r = post_json(*c, "/v1/tasks", docs_bad, &st);
  EXPECT_EQ(st, 400) << r;
  docs_bad["documents"] = {{{"id", {{"x", 1}}}, {"text", "t"}}};
  r = post_json(*c, "/v1/tasks", docs_bad, &st);
  EXPECT_EQ(st, 400) << r;
  // Too large a body.
  json big = ok;
  big["inputs"] = {std::string(size_t{2} << 20, 'a')};
  auto br = c->Post("/v1/tasks", big.dump(), "application/json");
  ASSERT_TRUE(br);
  EXPECT_EQ(br->status, 413);

  for (const char* path : {"/v1/tasks/task_999", "/v1/tasks/xyz", "/v1/tasks/task_0",
                           "/v1/tasks/task_99999999999999999999999"}) {
    json nf = get_json(*c, path, &st);
    EXPECT_EQ(st, 404) << path;
    expect_error_body(nf);
    auto d = c->Delete(path);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->status, 404) << path;
    expect_error_body(json::parse(d->body, nullptr, false));
  }
  // Still serving.
  r = post_json(*c, "/v1/tasks", ok.dump(), &st);
  EXPECT_EQ(st, 202) << r;
}

TEST(ServerTasks, ApiKeyIsEnforcedOnMetricsAndTasks) {
  LLMT_REQUIRE_DATA(kModel);
  server::ServerOptions so = test::server_test_options();
  so.api_key = "sekret";
  Running s(so);
  auto c = s.client();
  const json ok = {{"task", "generate"}, {"inputs", {"Once"}}, {"max_tokens", 2}};
  int st = 0;
  EXPECT_EQ(c->Get("/metrics")->status, 401);
  post_json(*c, "/v1/tasks", ok, &st);
  EXPECT_EQ(st, 401);
  EXPECT_EQ(c->Get("/v1/tasks/task_1")->status, 401);
  EXPECT_EQ(c->Delete("/v1/tasks/task_1")->status, 401);
  c->set_bearer_token_auth("sekret");
  auto m = c->Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  EXPECT_NE(m->body.find(R"(llmthreads_requests_total{endpoint="/v1/tasks",status="401"} 1)"),
            std::string::npos)
      << m->body;
  json r = post_json(*c, "/v1/tasks", ok, &st);
  ASSERT_EQ(st, 202) << r;
  EXPECT_EQ(wait_task(*c, r["id"])["status"], "completed");
}

TEST(ServerTasks, FinishedTasksAreEvictedOldestFirst) {
  LLMT_REQUIRE_DATA(kModel);
  Running s;
  auto c = s.client();
  const json ok = {{"task", "generate"}, {"inputs", {"Once"}}, {"max_tokens", 1}};
  int st = 0;
  for (int i = 1; i <= 66; ++i) {
    json r = post_json(*c, "/v1/tasks", ok, &st);
    ASSERT_EQ(st, 202) << r;
    ASSERT_EQ(r["id"], "task_" + std::to_string(i));
    ASSERT_EQ(wait_task(*c, r["id"])["status"], "completed");
  }
  // 64 kept: task_1 and task_2 were evicted.
  get_json(*c, "/v1/tasks/task_1", &st);
  EXPECT_EQ(st, 404);
  get_json(*c, "/v1/tasks/task_2", &st);
  EXPECT_EQ(st, 404);
  get_json(*c, "/v1/tasks/task_3", &st);
  EXPECT_EQ(st, 200);
  get_json(*c, "/v1/tasks/task_66", &st);
  EXPECT_EQ(st, 200);
}

}  // namespace
}  // namespace llmt
