// The field policy of the model endpoints, in-process on stories260K: every streaming chunk
// carries the request's seed (drawn by the server when the body has none, as the non-streaming
// body's "seed"), and that seed replays the stream; a top-level field outside an endpoint's
// allow-list is a 400 naming it (completions, chat, embeddings), while the fields known not to
// change the output are accepted and leave it unchanged.
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server-fixture.h"

namespace llmt {
namespace {

using nlohmann::json;
using test::post_json;

// The JSON events of an SSE response body (without [DONE]); *done: whether [DONE] came.
std::vector<json> sse_events(const std::string& body, bool* done) {
  std::vector<json> out;
  *done = false;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    const std::string data = body.substr(pos + 6, end - pos - 6);
    pos = end;
    if (data == "[DONE]") {
      *done = true;
    } else {
      out.push_back(json::parse(data, nullptr, false));
    }
  }
  return out;
}

// Streams `body` to `path`; the chunks' seeds must all be one number, returned in *seed.
std::string stream_text(httplib::Client& c, const std::string& path, json body, uint64_t* seed) {
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto r = c.Post(path.c_str(), body.dump(), "application/json");
  EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no response");
  if (!r) return "";
  bool done = false;
  const std::vector<json> events = sse_events(r->body, &done);
  EXPECT_TRUE(done);
  EXPECT_GE(events.size(), 2u);
  std::string text;
  bool first = true;
  for (const json& e : events) {
    EXPECT_TRUE(e.contains("seed") && e["seed"].is_number_unsigned()) << e;
    if (!e.contains("seed")) continue;
    if (first) *seed = e["seed"].get<uint64_t>();
    EXPECT_EQ(e["seed"].get<uint64_t>(), *seed) << "chunks of one stream carry one seed";
    first = false;
    if (e["choices"].empty()) continue;  // the usage chunk
    const json& ch = e["choices"][0];
    if (ch.contains("text")) text += ch["text"].get<std::string>();
    if (ch.contains("delta") && ch["delta"].contains("content")) {
      text += ch["delta"]["content"].get<std::string>();
    }
  }
  return text;
}

TEST(ServerFieldPolicy, StreamingChunksCarryTheSeedThatReplaysThem) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::RunningServer rs;
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  const json completions = {
      {"prompt", "Once upon a time"}, {"max_tokens", 24}, {"temperature", 1.0}};
  const json chat = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                     {"max_tokens", 24},
                     {"temperature", 1.0}};
  for (const auto& [path, body] :
       {std::pair{"/v1/completions", completions}, std::pair{"/v1/chat/completions", chat}}) {
    uint64_t s1 = 0, s2 = 0, s3 = 0;
    const std::string t1 = stream_text(*c, path, body, &s1);
    const std::string t2 = stream_text(*c, path, body, &s2);
    EXPECT_NE(s1, s2) << path << ": a fresh seed per request";
    EXPECT_LT(s1, uint64_t{1} << 53) << "a seed a JavaScript client keeps exactly";
    // The returned seed replays the stream, and the non-streaming answer too.
    json seeded = body;
    seeded["seed"] = static_cast<int64_t>(s1);
    EXPECT_EQ(stream_text(*c, path, seeded, &s3), t1) << path;
    EXPECT_EQ(s3, s1);
    int st = 0;
    const json full = post_json(*c, path, seeded, &st);
    ASSERT_EQ(st, 200) << full;
    EXPECT_EQ(full["seed"].get<uint64_t>(), s1);
    const json& ch = full["choices"][0];
    EXPECT_EQ(ch.contains("text") ? ch["text"] : ch["message"]["content"], t1) << path;
  }
}

TEST(ServerFieldPolicy, UnknownFieldsAre400NamingThem) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::RunningServer rs;
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  const json completions = {{"prompt", "Once upon a time"}, {"max_tokens", 8}, {"seed", 3}};
  const json chat = {
      {"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 8}, {"seed", 3}};
  const json embeddings = {{"input", "Once upon a time"}};
  auto with = [](json j, const char* k, const json& v) {
    j[k] = v;
    return j;
  };
  struct Bad {
    const char* path;
    json body;
    const char* param;
  };
  const std::vector<Bad> bad = {
      {"/v1/completions", with(completions, "temprature", 0.5), "temprature"},
      {"/v1/completions", with(completions, "mirostat", 2), "mirostat"},
      {"/v1/completions", with(completions, "messages", json::array()), "messages"},
      {"/v1/completions", with(completions, "reasoning_effort", "low"), "reasoning_effort"},
      {"/v1/chat/completions", with(chat, "prompt", "x"), "prompt"},
      {"/v1/chat/completions", with(chat, "prediction", {{"type", "content"}}), "prediction"},
      {"/v1/chat/completions", with(chat, "modalities", {"text"}), "modalities"},
      {"/v1/chat/completions", with(chat, "tool_choice", "none"), "tool_choice"},
      {"/v1/chat/completions", with(chat, "parallel_tool_calls", false), "parallel_tool_calls"},
      {"/v1/embeddings", with(embeddings, "truncate", true), "truncate"},
      {"/v1/embeddings", with(embeddings, "priority", 1), "priority"},
  };
  int st = 0;
  for (const Bad& b : bad) {
    const json r = post_json(*c, b.path, b.body, &st);
    EXPECT_EQ(st, 400) << b.path << " " << b.body << " -> " << r;
    test::expect_error_body(r);
    EXPECT_EQ(r["error"]["param"], b.param) << r;
    EXPECT_NE(r["error"]["message"].get<std::string>().find(b.param), std::string::npos) << r;
  }
  // Fields known not to change the output: accepted, same answer.
  const json base = post_json(*c, "/v1/completions", completions, &st);
  ASSERT_EQ(st, 200) << base;
  const json ignorable = {{"metadata", {{"k", "v"}}},
                          {"store", false},
                          {"service_tier", "auto"},
                          {"safety_identifier", "s"},
                          {"prompt_cache_key", "p"},
                          {"cache_prompt", true},
                          {"user", "u"},
                          {"stream_options", {{"include_usage", true}}}};
  json all = completions;
  for (const auto& [k, v] : ignorable.items()) all[k] = v;
  const json r = post_json(*c, "/v1/completions", all, &st);
  ASSERT_EQ(st, 200) << r;
  EXPECT_EQ(r["choices"][0]["text"], base["choices"][0]["text"]);
  const json rc =
      post_json(*c, "/v1/chat/completions",
                with(with(chat, "tool_choice", "auto"), "parallel_tool_calls", true), &st);
  EXPECT_EQ(st, 200) << rc;
  post_json(*c, "/v1/embeddings", with(embeddings, "user", "u"), &st);
  EXPECT_EQ(st, 200);
}

}  // namespace
}  // namespace llmt
