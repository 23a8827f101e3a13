// The Batches API: input validation and create-body rules (pure), then in-process on
// stories260K: a completions batch end to end (OpenAI output / error lines, request_counts, the
// served model echoed, answers equal to the live endpoint's), chat and embeddings batches,
// validation failures, create errors, listing, cancel, "stream" refused per request, and a
// graceful stop mid-batch resumed by a new server on the same data dir with each custom_id
// answered exactly once. The SIGKILL case (the real `llmthreads serve`) is
// test-server-batches-kill.cpp.
#include <gtest/gtest.h>
#include <httplib.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "batch-fixture.h"
#include "batch-store.h"
#include "server-fixture.h"

namespace llmt {
namespace {

using nlohmann::json;
using server::BatchLine;
using server::validate_batch_input;

const std::string kCompletions = "/v1/completions";

std::string good_line(const std::string& id) {
  return test::batch_line(id, kCompletions, {{"prompt", "Hi"}, {"max_tokens", 2}});
}

TEST(BatchInput, ValidatesEveryLine) {
  std::vector<BatchLine> lines;
  json errors;
  // Blank lines (and CRLF) are fine; line numbers count them.
  ASSERT_TRUE(validate_batch_input(good_line("a") + "\n  \r\n" + good_line("b"), kCompletions,
                                   &lines, &errors))
      << errors;
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].custom_id, "a");
  EXPECT_EQ(lines[1].custom_id, "b");
  EXPECT_EQ(lines[1].line, 4u);
  EXPECT_EQ(lines[0].body["prompt"], "Hi");
  struct Bad {
    std::string content;
    const char* code;
    uint64_t line;
  };
  const std::vector<Bad> bad = {
      {good_line("a") + good_line("a"), "duplicate_custom_id", 2},
      {good_line("a") + test::batch_line("b", "/v1/chat/completions", {{"prompt", "x"}}),
       "mismatched_url", 2},
      {good_line("a") + "{not json\n", "invalid_json_line", 2},
      {"[1,2]\n", "invalid_json_line", 1},
      {R"({"custom_id":"a","method":"POST","url":"/v1/completions"})"
       "\n",
       "missing_field", 1},
      {R"({"custom_id":"a","method":"GET","url":"/v1/completions","body":{}})"
       "\n",
       "invalid_method", 1},
      {R"({"custom_id":"","method":"POST","url":"/v1/completions","body":{}})"
       "\n",
       "invalid_field", 1},
      {R"({"custom_id":7,"method":"POST","url":"/v1/completions","body":{}})"
       "\n",
       "invalid_field", 1},
      {R"({"custom_id":"a","method":"POST","url":"/v1/completions","body":"x"})"
       "\n",
       "invalid_field", 1},
      {R"({"custom_id":"a","method":"POST","url":"/v1/completions","body":{},"extra":1})"
       "\n",
       "unknown_field", 1},
      {"\n\n", "empty_file", 0},
  };
  for (const Bad& b : bad) {
    EXPECT_FALSE(validate_batch_input(b.content, kCompletions, &lines, &errors)) << b.content;
    EXPECT_TRUE(lines.empty());
    ASSERT_EQ(errors["object"], "list");
    ASSERT_GE(errors["data"].size(), 1u) << errors;
    EXPECT_EQ(errors["data"][0]["code"], b.code) << b.content << " -> " << errors;
    if (b.line > 0) {
      EXPECT_EQ(errors["data"][0]["line"].get<uint64_t>(), b.line) << errors;
    }
    EXPECT_TRUE(errors["data"][0]["message"].is_string());
  }
  // Every bad line is reported, up to kMaxBatchErrors.
  std::string many;
  for (int i = 0; i < 30; ++i) many += "x\n";
  EXPECT_FALSE(validate_batch_input(many, kCompletions, &lines, &errors));
  EXPECT_EQ(errors["data"].size(), server::kMaxBatchErrors);
}

TEST(BatchCreate, BodyRulesNameTheField) {
  const json ok = {{"input_file_id", "file-1"},
                   {"endpoint", "/v1/embeddings"},
                   {"completion_window", "24h"},
                   {"metadata", {{"k", "v"}}}};
  server::BatchRecord rec;
  ASSERT_TRUE(server::parse_batch_create(ok, &rec).is_ok());
  EXPECT_EQ(rec.endpoint, "/v1/embeddings");
  EXPECT_EQ(rec.metadata["k"], "v");
  auto with = [&](const char* k, const json& v) {
    json j = ok;
    if (v.is_discarded()) {
      j.erase(k);
    } else {
      j[k] = v;
    }
    return j;
  };
  const json gone = json::value_t::discarded;
  const std::vector<std::pair<json, const char*>> bad = {
      {with("input_file_id", gone), "input_file_id"},
      {with("input_file_id", 3), "input_file_id"},
      {with("endpoint", "/v1/responses"), "endpoint"},
      {with("completion_window", "1h"), "completion_window"},
      {with("completion_window", gone), "completion_window"},
      {with("metadata", "x"), "metadata"},
      {with("metadata", {{"k", 1}}), "metadata"},
      {with("metadata", {{std::string(65, 'k'), "v"}}), "metadata"},
      {with("bogus", 1), "bogus"},
  };
  for (const auto& [body, field] : bad) {
    const Status s = server::parse_batch_create(body, &rec);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << body;
    EXPECT_EQ(s.field(), field) << body << " -> " << s.to_string();
  }
  // The persisted state reads back.
  rec.id = "batch_x";
  rec.seq = 4;
  rec.counts = {3, 2, 1};
  rec.status = server::BatchStatus::kInProgress;
  Result<server::BatchRecord> back = server::BatchRecord::from_state_json(rec.to_state_json());
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->to_state_json(), rec.to_state_json());
}

server::ServerOptions batch_options(const test::TempDir& dir, int concurrency = 0) {
  server::ServerOptions so = test::server_test_options();
  so.data_dir = dir.str();
  so.batch_concurrency = concurrency;
  return so;
}

// Uploads `content` and creates a batch of it for `endpoint`; the batch object (status 200).
json create_batch(httplib::Client& c, const std::string& content, const std::string& endpoint,
                  const json& metadata = nullptr) {
  int st = 0;
  const json f = test::upload(c, content, &st);
  EXPECT_EQ(st, 200) << f;
  json body = {
      {"input_file_id", f.value("id", "")}, {"endpoint", endpoint}, {"completion_window", "24h"}};
  if (!metadata.is_null()) body["metadata"] = metadata;
  const json b = test::post_json(c, "/v1/batches", body, &st);
  EXPECT_EQ(st, 200) << b;
  return b;
}

// custom_id -> output line, failing on a custom_id answered twice.
std::map<std::string, json> by_custom_id(const std::string& text) {
  std::map<std::string, json> out;
  for (const json& l : test::jsonl(text)) {
    EXPECT_TRUE(l.is_object()) << text;
    const std::string id = l.value("custom_id", "");
    EXPECT_FALSE(out.count(id)) << "custom_id " << id << " answered twice";
    out[id] = l;
  }
  return out;
}

TEST(ServerBatches, CompletionsBatchEndToEnd) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("batches-e2e");
  test::RunningServer rs(batch_options(dir));
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  const json seeded = {
      {"prompt", "Once upon a time"}, {"max_tokens", 12}, {"seed", 5}, {"temperature", 1.0}};
  std::string in;
  for (int i = 0; i < 10; ++i) {
    in += test::batch_line("ok-" + std::to_string(i), kCompletions,
                           {{"prompt", "Once upon a time"}, {"max_tokens", 4 + i}});
  }
  in += test::batch_line("seeded", kCompletions, seeded);
  in += test::batch_line("bad-field", kCompletions, {{"prompt", "Hi"}, {"mirostat", 2}});
  in += test::batch_line("bad-tokens", kCompletions, {{"prompt", "Hi"}, {"max_tokens", -1}});
  const json created = create_batch(*c, in, kCompletions, {{"job", "e2e"}});
  ASSERT_TRUE(created.contains("id"));
  EXPECT_EQ(created["object"], "batch");
  EXPECT_EQ(created["endpoint"], kCompletions);
  EXPECT_EQ(created["completion_window"], "24h");
  EXPECT_EQ(created["metadata"], (json{{"job", "e2e"}}));
  EXPECT_TRUE(created["status"] == "validating" || created["status"] == "in_progress") << created;
  EXPECT_EQ(created["expires_at"].get<int64_t>(), created["created_at"].get<int64_t>() + 86400);
  const std::string id = created["id"];
  EXPECT_EQ(id.rfind("batch_", 0), 0u);

  const json b = test::wait_batch_end(*c, id);
  ASSERT_EQ(b["status"], "completed") << b;
  EXPECT_EQ(b["request_counts"], (json{{"total", 13}, {"completed", 11}, {"failed", 2}})) << b;
  EXPECT_TRUE(b["in_progress_at"].is_number_integer());
  EXPECT_TRUE(b["finalizing_at"].is_number_integer());
  EXPECT_TRUE(b["completed_at"].is_number_integer());
  EXPECT_TRUE(b["errors"].is_null());
  ASSERT_TRUE(b["output_file_id"].is_string()) << b;
  ASSERT_TRUE(b["error_file_id"].is_string()) << b;
  int st = 0;
  const json of = test::get_json(*c, "/v1/files/" + b["output_file_id"].get<std::string>(), &st);
  EXPECT_EQ(st, 200);
  EXPECT_EQ(of["purpose"], "batch_output");

  const auto out = by_custom_id(test::file_content(*c, b["output_file_id"]));
  ASSERT_EQ(out.size(), 11u);
  std::set<std::string> line_ids;
  for (const auto& [cid, l] : out) {
    EXPECT_EQ(l["response"]["status_code"], 200) << l;
    EXPECT_TRUE(l["error"].is_null());
    EXPECT_EQ(l["id"].get<std::string>().rfind("batch_req_", 0), 0u) << l;
    EXPECT_TRUE(line_ids.insert(l["id"]).second) << "two lines share an id: " << l;
    EXPECT_TRUE(l["response"]["request_id"].is_string());
    const json& body = l["response"]["body"];
    EXPECT_EQ(body["object"], "text_completion") << l;
    EXPECT_EQ(body["model"], "stories260K") << l;
  }
  EXPECT_EQ(out.at("ok-3")["response"]["body"]["usage"]["completion_tokens"], 7);
  // The same translation and engine as the live endpoint: equal answers for a seeded request.
  const json live = test::post_json(*c, kCompletions, seeded, &st);
  ASSERT_EQ(st, 200) << live;
  EXPECT_EQ(out.at("seeded")["response"]["body"]["choices"][0]["text"], live["choices"][0]["text"]);

  const auto err = by_custom_id(test::file_content(*c, b["error_file_id"]));
  ASSERT_EQ(err.size(), 2u);
  EXPECT_EQ(err.at("bad-field")["response"]["status_code"], 400);
  EXPECT_EQ(err.at("bad-field")["response"]["body"]["error"]["param"], "mirostat");
  EXPECT_EQ(err.at("bad-tokens")["response"]["status_code"], 400);
  EXPECT_EQ(err.at("bad-tokens")["response"]["body"]["error"]["param"], "max_tokens");
  // Nothing of the batch's working files is left once it ended.
  EXPECT_FALSE(std::filesystem::exists(dir.path / "batches" / id / "results.jsonl"));
  EXPECT_TRUE(std::filesystem::exists(dir.path / "batches" / id / "batch.json"));
  // A finished batch cannot be cancelled.
  const json cancel = test::post_json(*c, "/v1/batches/" + id + "/cancel", json::object(), &st);
  EXPECT_EQ(st, 409) << cancel;
}

TEST(ServerBatches, ChatAndEmbeddingsBatches) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("batches-chat");
  test::RunningServer rs(batch_options(dir));
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  std::string chat, emb;
  for (int i = 0; i < 3; ++i) {
    chat += test::batch_line("c" + std::to_string(i), "/v1/chat/completions",
                             {{"model", "stories260K"},
                              {"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                              {"max_tokens", 3}});
    emb += test::batch_line("e" + std::to_string(i), "/v1/embeddings",
                            {{"input", i == 0 ? json("Once") : json({"a", "b"})}});
  }
  emb += test::batch_line("e-bad", "/v1/embeddings", {{"input", "x"}, {"dimensions", 3}});
  const json bc = create_batch(*c, chat, "/v1/chat/completions");
  const json be = create_batch(*c, emb, "/v1/embeddings");
  // The batch keeps its input: deleting the file does not affect it.
  auto del = c->Delete(("/v1/files/" + bc["input_file_id"].get<std::string>()).c_str());
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200);
  const json rc = test::wait_batch_end(*c, bc["id"]);
  ASSERT_EQ(rc["status"], "completed") << rc;
  EXPECT_EQ(rc["request_counts"]["completed"], 3);
  EXPECT_TRUE(rc["error_file_id"].is_null()) << rc;
  for (const auto& [cid, l] : by_custom_id(test::file_content(*c, rc["output_file_id"]))) {
    EXPECT_EQ(l["response"]["body"]["object"], "chat.completion") << l;
    EXPECT_EQ(l["response"]["body"]["model"], "stories260K");
    EXPECT_EQ(l["response"]["body"]["choices"][0]["message"]["role"], "assistant");
  }
  const json re = test::wait_batch_end(*c, be["id"]);
  ASSERT_EQ(re["status"], "completed") << re;
  EXPECT_EQ(re["request_counts"], (json{{"total", 4}, {"completed", 3}, {"failed", 1}}));
  const auto out = by_custom_id(test::file_content(*c, re["output_file_id"]));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out.at("e0")["response"]["body"]["data"].size(), 1u);
  EXPECT_EQ(out.at("e1")["response"]["body"]["data"].size(), 2u);
  EXPECT_EQ(out.at("e1")["response"]["body"]["model"], "stories260K");
  const auto err = by_custom_id(test::file_content(*c, re["error_file_id"]));
  EXPECT_EQ(err.at("e-bad")["response"]["body"]["error"]["param"], "dimensions");
}

TEST(ServerBatches, BadInputFailsValidationAndBadCreatesAre400) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("batches-invalid");
  test::RunningServer rs(batch_options(dir));
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  const json dup = create_batch(*c, good_line("a") + good_line("b") + good_line("a"), kCompletions);
  const json b = test::wait_batch_end(*c, dup["id"]);
  ASSERT_EQ(b["status"], "failed") << b;
  EXPECT_TRUE(b["failed_at"].is_number_integer());
  EXPECT_EQ(b["errors"]["object"], "list");
  ASSERT_EQ(b["errors"]["data"].size(), 1u) << b;
  EXPECT_EQ(b["errors"]["data"][0]["code"], "duplicate_custom_id");
  EXPECT_EQ(b["errors"]["data"][0]["line"], 3);
  EXPECT_TRUE(b["output_file_id"].is_null());
  const json url =
      create_batch(*c, good_line("a"), "/v1/chat/completions");  // lines say /v1/completions
  EXPECT_EQ(test::wait_batch_end(*c, url["id"])["errors"]["data"][0]["code"], "mismatched_url");

  int st = 0;
  const json f = test::upload(*c, good_line("a"), &st);
  const json other = test::upload(*c, good_line("a"), &st, "user_data");
  struct Bad {
    json body;
    const char* param;
  };
  const json base = {
      {"input_file_id", f["id"]}, {"endpoint", kCompletions}, {"completion_window", "24h"}};
  auto with = [&](const char* k, const json& v) {
    json j = base;
    j[k] = v;
    return j;
  };
  const std::vector<Bad> bad = {
      {with("input_file_id", "file-nope"), "input_file_id"},
      {with("input_file_id", other["id"]), "input_file_id"},
      {with("endpoint", "/v1/tasks"), "endpoint"},
      {with("completion_window", "48h"), "completion_window"},
      {with("output_expires_after", 3), "output_expires_after"},
  };
  for (const Bad& x : bad) {
    const json r = test::post_json(*c, "/v1/batches", x.body, &st);
    EXPECT_EQ(st, 400) << x.body << " -> " << r;
    test::expect_error_body(r);
    EXPECT_EQ(r["error"]["param"], x.param) << r;
  }
  test::get_json(*c, "/v1/batches/batch_nope", &st);
  EXPECT_EQ(st, 404);
  test::post_json(*c, "/v1/batches/batch_nope/cancel", json::object(), &st);
  EXPECT_EQ(st, 404);
}

TEST(ServerBatches, ListsNewestFirstWithLimitAndAfter) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("batches-list");
  test::RunningServer rs(batch_options(dir));
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(create_batch(*c, good_line("a"), kCompletions)["id"]);
  int st = 0;
  json page = test::get_json(*c, "/v1/batches?limit=2", &st);
  ASSERT_EQ(st, 200) << page;
  EXPECT_EQ(page["object"], "list");
  ASSERT_EQ(page["data"].size(), 2u);
  EXPECT_EQ(page["data"][0]["id"], ids[2]);
  EXPECT_EQ(page["data"][1]["id"], ids[1]);
  EXPECT_EQ(page["has_more"], true);
  EXPECT_EQ(page["last_id"], ids[1]);
  page = test::get_json(*c, "/v1/batches?after=" + ids[1], &st);
  ASSERT_EQ(page["data"].size(), 1u);
  EXPECT_EQ(page["data"][0]["id"], ids[0]);
  EXPECT_EQ(page["has_more"], false);
  test::get_json(*c, "/v1/batches?limit=101", &st);
  EXPECT_EQ(st, 400);
  for (const std::string& id : ids) EXPECT_EQ(test::wait_batch_end(*c, id)["status"], "completed");
}

// A batch long enough to be caught mid-way: n requests of `tokens` tokens each.
std::string long_input(int n, int tokens) {
  std::string in;
  for (int i = 0; i < n; ++i) {
    in += test::batch_line(
        "r" + std::to_string(i), kCompletions,
        {{"prompt", "Once upon a time"}, {"max_tokens", tokens}, {"temperature", 1.0}});
  }
  return in;
}

bool some_progress(const json& b) {
  return b.value("status", "") == "in_progress" && b["request_counts"]["completed"] >= 3;
}

TEST(ServerBatches, CancelStopsTheBatchAndKeepsWhatFinished) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("batches-cancel");
  test::RunningServer rs(batch_options(dir, 1));
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  const int n = 400;
  const json created = create_batch(*c, long_input(n, 200), kCompletions);
  const std::string id = created["id"];
  // A second batch waits its turn (one batch runs at a time); cancelling it ends it at once.
  const json queued = create_batch(*c, good_line("q"), kCompletions);
  test::poll_batch(*c, id, some_progress);
  int st = 0;
  const json q = test::post_json(*c, "/v1/batches/" + queued["id"].get<std::string>() + "/cancel",
                                 json::object(), &st);
  EXPECT_EQ(st, 200) << q;
  EXPECT_EQ(q["status"], "cancelled") << q;
  const json cancelling = test::post_json(*c, "/v1/batches/" + id + "/cancel", json::object(), &st);
  EXPECT_EQ(st, 200) << cancelling;
  EXPECT_TRUE(cancelling["status"] == "cancelling" || cancelling["status"] == "cancelled")
      << cancelling;
  EXPECT_TRUE(cancelling["cancelling_at"].is_number_integer());
  const json b = test::wait_batch_end(*c, id);
  ASSERT_EQ(b["status"], "cancelled") << b;
  EXPECT_TRUE(b["cancelled_at"].is_number_integer());
  const int64_t done = b["request_counts"]["completed"];
  EXPECT_GE(done, 3);
  EXPECT_LT(done, n) << "the cancel came too late to test anything";
  EXPECT_EQ(b["request_counts"]["total"], n);
  ASSERT_TRUE(b["output_file_id"].is_string()) << b;
  const auto out = by_custom_id(test::file_content(*c, b["output_file_id"]));
  EXPECT_EQ(static_cast<int64_t>(out.size()), done);
  // Cancelling again is a no-op; nothing is left running in the engine.
  const json again = test::post_json(*c, "/v1/batches/" + id + "/cancel", json::object(), &st);
  EXPECT_EQ(st, 200);
  EXPECT_EQ(again["status"], "cancelled");
  EXPECT_EQ(rs.srv->stats().n_live, 0);
}

TEST(ServerBatches, StreamIsRefusedPerRequest) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("batches-stream");
  test::RunningServer rs(batch_options(dir));
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  const json created = create_batch(
      *c,
      good_line("a") + test::batch_line("s", kCompletions,
                                        {{"prompt", "Hi"}, {"max_tokens", 2}, {"stream", true}}),
      kCompletions);
  const json b = test::wait_batch_end(*c, created["id"]);
  ASSERT_EQ(b["status"], "completed") << b;
  EXPECT_EQ(b["request_counts"], (json{{"total", 2}, {"completed", 1}, {"failed", 1}}));
  const auto err = by_custom_id(test::file_content(*c, b["error_file_id"]));
  EXPECT_EQ(err.at("s")["response"]["status_code"], 400);
  EXPECT_EQ(err.at("s")["response"]["body"]["error"]["param"], "stream");
}

TEST(ServerBatches, AStoppedServerResumesTheBatchOnTheSameDataDir) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("batches-resume");
  const int n = 300;
  std::string id;
  int64_t done_before = 0;
  {
    test::RunningServer rs(batch_options(dir, 2));
    ASSERT_TRUE(rs.srv);
    auto c = rs.client();
    id = create_batch(*c, long_input(n, 120), kCompletions)["id"];
    const json b = test::poll_batch(*c, id, some_progress);
    ASSERT_EQ(b["status"], "in_progress") << b;
    rs.srv->stop(0.0);
    done_before = b["request_counts"]["completed"];
  }
  test::RunningServer rs(batch_options(dir, 4));
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  int st = 0;
  const json resumed = test::get_json(*c, "/v1/batches/" + id, &st);
  ASSERT_EQ(st, 200) << resumed;
  EXPECT_GE(resumed["request_counts"]["completed"].get<int64_t>(), done_before);
  const json b = test::wait_batch_end(*c, id, 300);
  ASSERT_EQ(b["status"], "completed") << b;
  EXPECT_EQ(b["request_counts"], (json{{"total", n}, {"completed", n}, {"failed", 0}}));
  const std::string content = test::file_content(*c, b["output_file_id"]);
  const auto out = by_custom_id(content);
  ASSERT_EQ(out.size(), static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) EXPECT_TRUE(out.count("r" + std::to_string(i))) << i;
  rs.srv.reset();  // releases the data dir
  // An ended batch and its files are kept as they are across another restart.
  test::RunningServer again(batch_options(dir));
  ASSERT_TRUE(again.srv);
  auto c2 = again.client();
  EXPECT_EQ(test::get_json(*c2, "/v1/batches/" + id, &st), b);
  EXPECT_EQ(test::file_content(*c2, b["output_file_id"]), content);
}

}  // namespace
}  // namespace llmt
