// Every request field the server accepts is honoured: each output-changing field, set alone on
// a fixed base request, changes the text; constraining fields (response_format, grammar,
// json_schema) make the text match; fields that only shape the response (n, logprobs) do; the
// scheduling fields leave the text alone. Refused fields, bad roles and bad response_format
// types are 400 naming the field. No seed: a fresh one per request, returned, and replayable.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llmthreads/grammar.h"
#include "server-fixture.h"

namespace llmt {
namespace {

using nlohmann::json;
using test::post_json;

json base_request() {
  return {{"prompt", "Once upon a time"},
          {"max_tokens", 32},
          {"temperature", 1.0},
          {"seed", 5},
          {"top_k", 0},
          {"top_p", 1.0},
          {"min_p", 0.0}};
}

json with(json j, const json& extra) {
  for (const auto& [k, v] : extra.items()) j[k] = v;
  return j;
}

std::string text_of(const json& body) {
  return body["choices"][0]["text"].get<std::string>();
}

TEST(ServerFields, EveryAcceptedFieldChangesTheOutput) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::RunningServer rs;
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  int st = 0;
  const json base = post_json(*c, "/v1/completions", base_request(), &st);
  ASSERT_EQ(st, 200) << base;
  const std::string base_text = text_of(base);
  // Deterministic with a seed.
  EXPECT_EQ(text_of(post_json(*c, "/v1/completions", base_request(), &st)), base_text);

  // Each field alone (with what it needs to act).
  struct Field {
    const char* name;
    json extra;
  };
  const std::vector<Field> fields = {
      {"temperature", {{"temperature", 0.0}}},
      {"top_p", {{"top_p", 0.2}}},
      {"top_k", {{"top_k", 1}}},
      {"min_p", {{"min_p", 0.6}}},
      {"typical_p", {{"typical_p", 0.2}}},
      {"repeat_penalty", {{"repeat_penalty", 3.0}}},
      {"frequency_penalty", {{"frequency_penalty", 3.0}}},
      {"presence_penalty", {{"presence_penalty", 3.0}}},
      {"seed", {{"seed", 6}}},
      {"logit_bias", {{"logit_bias", {{"300", 100}}}}},
      {"max_tokens", {{"max_tokens", 3}}},
      {"max_completion_tokens", {{"max_completion_tokens", 3}}},
      {"stop", {{"stop", {"e"}}}},
      {"response_format", {{"response_format", {{"type", "json_object"}}}}},
      {"grammar", {{"grammar", R"(root ::= "yes" | "no")"}}},
      {"json_schema", {{"json_schema", {{"type", "integer"}}}}},
  };
  for (const Field& f : fields) {
    const json r = post_json(*c, "/v1/completions", with(base_request(), f.extra), &st);
    ASSERT_EQ(st, 200) << f.name << ": " << r;
    EXPECT_NE(text_of(r), base_text) << f.name << " did not change the output";
  }
  // repeat_last_n acts through a penalty: with repeat_penalty on, a window of 0 turns it off.
  {
    const json pen = with(base_request(), {{"repeat_penalty", 3.0}});
    const std::string a = text_of(post_json(*c, "/v1/completions", pen, &st));
    const std::string b =
        text_of(post_json(*c, "/v1/completions", with(pen, {{"repeat_last_n", 0}}), &st));
    EXPECT_NE(a, b) << "repeat_last_n did not change the output";
    EXPECT_EQ(b, base_text);  // penalty off = the base
  }
  // Constraints: the text is a sentence of the grammar.
  {
    const json r =
        post_json(*c, "/v1/completions",
                  with(base_request(), {{"response_format",
                                         {{"type", "json_schema"},
                                          {"json_schema",
                                           {{"name", "p"},
                                            {"strict", true},
                                            {"schema",
                                             {{"type", "object"},
                                              {"properties", {{"n", {{"type", "integer"}}}}},
                                              {"required", {"n"}},
                                              {"additionalProperties", false}}}}}}},
                                        {"max_tokens", 200}}),
                  &st);
    ASSERT_EQ(st, 200) << r;
    const std::string t = text_of(r);
    EXPECT_TRUE(json::accept(t)) << t;
    EXPECT_TRUE(
        validate_json(
            t,
            R"({"type":"object","properties":{"n":{"type":"integer"}},"required":["n"],"additionalProperties":false})")
            .is_ok())
        << t;
    const json g = post_json(*c, "/v1/completions",
                             with(base_request(), {{"grammar", R"(root ::= "yes" | "no")"}}), &st);
    EXPECT_TRUE(text_of(g) == "yes" || text_of(g) == "no") << g;
    const json o = post_json(
        *c, "/v1/completions",
        with(base_request(), {{"response_format", {{"type", "json_object"}}}, {"max_tokens", 200}}),
        &st);
    if (o["choices"][0]["finish_reason"] == "stop") {
      EXPECT_TRUE(json::accept(text_of(o))) << o;
      EXPECT_EQ(text_of(o).front(), '{');
    }
  }
  // Response-shaping fields.
  {
    const json r = post_json(*c, "/v1/completions", with(base_request(), {{"n", 2}}), &st);
    ASSERT_EQ(st, 200);
    EXPECT_EQ(r["choices"].size(), 2u);
    const json lp = post_json(*c, "/v1/completions", with(base_request(), {{"logprobs", 1}}), &st);
    EXPECT_TRUE(lp["choices"][0]["logprobs"].is_object());
  }
  // Scheduling / bookkeeping fields leave the text alone.
  for (const json& extra : {json{{"priority", 3}}, json{{"user", "u"}}, json{{"tenant", "t"}},
                            json{{"model", "stories260K"}}}) {
    EXPECT_EQ(text_of(post_json(*c, "/v1/completions", with(base_request(), extra), &st)),
              base_text)
        << extra;
  }
}

TEST(ServerFields, RefusedFieldsRolesAndFormatsAre400WithTheField) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::RunningServer rs;
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  int st = 0;
  struct Bad {
    json extra;
    const char* param;
  };
  const std::vector<Bad> bad = {
      {{{"mirostat", 2}}, "mirostat"},
      {{{"tfs_z", 0.9}}, "tfs_z"},
      {{{"dry_multiplier", 0.8}}, "dry_multiplier"},
      {{{"xtc_probability", 0.5}}, "xtc_probability"},
      {{{"suffix", "x"}}, "suffix"},
      {{{"response_format", {{"type", "bogus"}}}}, "response_format"},
      {{{"response_format", {{"type", "json_schema"}}}}, "response_format"},
      {{{"response_format",
         {{"type", "json_schema"},
          {"json_schema", {{"schema", {{"type", "string"}, {"pattern", "a+"}}}}}}}},
       "response_format"},
      {{{"grammar", "root ::= nothing"}}, "grammar"},
      {{{"grammar", 3}}, "grammar"},
      {{{"grammar", "root ::= \"a\""}, {"json_schema", {{"type", "integer"}}}}, "grammar"},
      {{{"logit_bias", {{"abc", 1}}}}, "logit_bias"},
      {{{"logit_bias", {{"99999", 1}}}}, "logit_bias"},
      {{{"logit_bias", {{"1", "x"}}}}, "logit_bias"},
      {{{"top_k", -1}}, "top_k"},
      {{{"repeat_last_n", -1}}, "repeat_last_n"},
  };
  for (const Bad& b : bad) {
    const json r = post_json(*c, "/v1/completions", with(base_request(), b.extra), &st);
    EXPECT_EQ(st, 400) << b.extra << " -> " << r;
    test::expect_error_body(r);
    EXPECT_EQ(r["error"]["param"], b.param) << b.extra << " -> " << r;
  }
  // A schema keyword we cannot enforce is named in the message.
  const json pat = post_json(
      *c, "/v1/completions",
      with(base_request(), {{"json_schema", {{"type", "string"}, {"pattern", "a+"}}}}), &st);
  EXPECT_EQ(st, 400);
  EXPECT_NE(pat["error"]["message"].get<std::string>().find("'pattern'"), std::string::npos) << pat;
  // Roles.
  for (const char* role : {"nonsense", "User", ""}) {
    const json r = post_json(
        *c, "/v1/chat/completions",
        json{{"messages", {{{"role", role}, {"content", "hi"}}}}, {"max_tokens", 2}}, &st);
    EXPECT_EQ(st, 400) << role << " -> " << r;
    EXPECT_EQ(r["error"]["param"], "messages") << r;
  }
  for (const char* role : {"system", "developer", "user", "assistant"}) {
    const json r = post_json(
        *c, "/v1/chat/completions",
        json{{"messages", {{{"role", role}, {"content", "hi"}}}}, {"max_tokens", 2}}, &st);
    EXPECT_EQ(st, 200) << role << " -> " << r;
  }
}

TEST(ServerFields, NoSeedMeansAFreshSeedThatIsReturned) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::RunningServer rs;
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  int st = 0;
  json req = base_request();
  req.erase("seed");
  std::vector<std::string> texts;
  std::vector<uint64_t> seeds;
  for (int i = 0; i < 4; ++i) {
    const json r = post_json(*c, "/v1/completions", req, &st);
    ASSERT_EQ(st, 200) << r;
    ASSERT_TRUE(r["seed"].is_number_unsigned()) << r;
    seeds.push_back(r["seed"].get<uint64_t>());
    texts.push_back(text_of(r));
  }
  EXPECT_FALSE(texts[0] == texts[1] && texts[1] == texts[2] && texts[2] == texts[3]);
  EXPECT_FALSE(seeds[0] == seeds[1] && seeds[1] == seeds[2]);
  // The returned seed replays the answer (the body's seed is signed 64-bit, as OpenAI's).
  const json again =
      post_json(*c, "/v1/completions", with(req, {{"seed", static_cast<int64_t>(seeds[0])}}), &st);
  ASSERT_EQ(st, 200) << again;
  EXPECT_EQ(text_of(again), texts[0]);
  EXPECT_EQ(again["seed"].get<uint64_t>(), seeds[0]);
}

}  // namespace
}  // namespace llmt
