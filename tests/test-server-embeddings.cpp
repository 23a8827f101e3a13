// POST /v1/embeddings, GET /v1/models/{id}, POST /tokenize and POST /detokenize: every accepted
// field is honoured (input shapes, encoding_format, dimensions when equal to n_embd,
// embd_normalize), every bad one is a 400 naming it; the vectors are the engine's embedding
// threads' (bert: cosine >= 0.9999 to llama.cpp's pooled reference, unit length by default), in
// input order however many inputs there are.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/embeddings.h"
#include "llmthreads/tasks.h"
#include "server-fixture.h"

namespace llmt {
namespace {

using nlohmann::json;
using test::get_json;
using test::post_json;

constexpr const char* kBert = "models/arch/synth-bert-f16.gguf";
constexpr const char* kBertRef = "reference/arch/synth-bert-f16.json";

EngineConfig bert_config() {
  EngineConfig ec = test::server_engine_config();
  ec.model.path = test::data_path(kBert);
  return ec;
}

server::ServerOptions bert_options() {
  server::ServerOptions so = test::server_test_options();
  so.model_name = "synth-bert";
  so.chat_format = "";
  return so;
}

std::vector<float> floats(const json& a) {
  return a.get<std::vector<float>>();
}

double norm2(const std::vector<float>& v) {
  double s = 0.0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

double cosine(const std::vector<float>& a, const std::vector<double>& b) {
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (size_t i = 0; i < b.size(); ++i) {
    ab += a[i] * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += b[i] * b[i];
  }
  return ab / std::sqrt(std::max(aa * bb, 1e-300));
}

std::vector<float> from_base64(const std::string& s) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::string bytes;
  for (size_t i = 0; i + 3 < s.size(); i += 4) {
    uint32_t w = 0;
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const int v = s[i + k] == '=' ? (++pad, 0) : val(s[i + k]);
      EXPECT_GE(v, 0);
      w = (w << 6) | static_cast<uint32_t>(v);
    }
    bytes += static_cast<char>((w >> 16) & 0xFF);
    if (pad < 2) bytes += static_cast<char>((w >> 8) & 0xFF);
    if (pad < 1) bytes += static_cast<char>(w & 0xFF);
  }
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), out.size() * 4);
  return out;
}

// The engine's raw vector for these tokens (an embedding thread submitted directly).
std::vector<float> engine_vector(Engine& e, std::vector<int32_t> ids) {
  ThreadRequest r;
  r.prompt_tokens = std::move(ids);
  r.embed = true;
  auto h = e.submit(std::move(r));
  EXPECT_TRUE(h.is_ok());
  return h.is_ok() ? h->wait().embedding : std::vector<float>{};
}

void expect_400(httplib::Client& c, const std::string& path, const json& body, const char* param) {
  int st = 0;
  const json j = post_json(c, path, body, &st);
  EXPECT_EQ(st, 400) << body << " -> " << j;
  test::expect_error_body(j);
  if (j.contains("error")) {
    EXPECT_EQ(j["error"]["param"], param) << body << " -> " << j;
  }
}

TEST(ServerEmbeddings, BertVectorsMatchReferenceAndEveryFieldIsHonoured) {
  LLMT_REQUIRE_DATA(kBert);
  LLMT_REQUIRE_DATA(kBertRef);
  const json ref = json::parse(test::read_file(test::data_path(kBertRef)));
  test::RunningServer rs(bert_options(), bert_config());
  ASSERT_TRUE(rs.srv);
  auto c = rs.client(true);
  const int32_t n_embd = rs.engine->model().hparams().n_embd;
  int st = 0;

  // Every reference prompt, as one array of strings: order kept, unit length, the reference's
  // direction, the engine's vector scaled, usage counts the tokens.
  json texts = json::array();
  int64_t n_tokens = 0;
  for (const json& p : ref["prompts"]) {
    texts.push_back(p["text"]);
    n_tokens += static_cast<int64_t>(p["prompt_token_ids"].size());
  }
  const json all =
      post_json(*c, "/v1/embeddings", {{"input", texts}, {"model", "synth-bert"}}, &st);
  ASSERT_EQ(st, 200) << all;
  EXPECT_EQ(all["object"], "list");
  EXPECT_EQ(all["model"], "synth-bert");
  EXPECT_EQ(all["usage"]["prompt_tokens"], n_tokens);
  EXPECT_EQ(all["usage"]["total_tokens"], n_tokens);
  ASSERT_EQ(all["data"].size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    SCOPED_TRACE("prompt " + std::to_string(i));
    const json& d = all["data"][i];
    EXPECT_EQ(d["object"], "embedding");
    EXPECT_EQ(d["index"], i);
    const std::vector<float> v = floats(d["embedding"]);
    ASSERT_EQ(v.size(), static_cast<size_t>(n_embd));
    EXPECT_NEAR(norm2(v), 1.0, 1e-5);
    const auto want = ref["prompts"][i]["pooled_embedding"].get<std::vector<double>>();
    EXPECT_GE(cosine(v, want), 0.9999);
    std::vector<float> raw = engine_vector(
        *rs.engine, ref["prompts"][i]["prompt_token_ids"].get<std::vector<int32_t>>());
    llmt::normalize_embedding(&raw, 2);
    EXPECT_EQ(v, raw);
  }

  // One string; token ids; arrays of token ids: the same vector as the text.
  const std::string text = ref["prompts"][0]["text"];
  const auto ids = ref["prompts"][0]["prompt_token_ids"].get<std::vector<int32_t>>();
  const std::vector<float> v0 = floats(all["data"][0]["embedding"]);
  json one = post_json(*c, "/v1/embeddings", {{"input", text}}, &st);
  ASSERT_EQ(st, 200) << one;
  EXPECT_EQ(floats(one["data"][0]["embedding"]), v0);
  json by_ids = post_json(*c, "/v1/embeddings", {{"input", ids}}, &st);
  ASSERT_EQ(st, 200) << by_ids;
  EXPECT_EQ(floats(by_ids["data"][0]["embedding"]), v0);
  json by_id_arrays = post_json(*c, "/v1/embeddings", {{"input", json::array({ids, ids})}}, &st);
  ASSERT_EQ(st, 200) << by_id_arrays;
  ASSERT_EQ(by_id_arrays["data"].size(), 2u);
  EXPECT_EQ(floats(by_id_arrays["data"][1]["embedding"]), v0);

  // encoding_format base64: the same floats; "float" explicitly: the same list.
  json b64 = post_json(*c, "/v1/embeddings", {{"input", text}, {"encoding_format", "base64"}}, &st);
  ASSERT_EQ(st, 200) << b64;
  ASSERT_TRUE(b64["data"][0]["embedding"].is_string());
  EXPECT_EQ(from_base64(b64["data"][0]["embedding"]), v0);
  json fl = post_json(*c, "/v1/embeddings", {{"input", text}, {"encoding_format", "float"}}, &st);
  EXPECT_EQ(floats(fl["data"][0]["embedding"]), v0);

  // dimensions = n_embd is a no-op; embd_normalize -1 gives the raw vector, 1 the taxicab norm.
  json dims = post_json(*c, "/v1/embeddings", {{"input", text}, {"dimensions", n_embd}}, &st);
  ASSERT_EQ(st, 200) << dims;
  EXPECT_EQ(floats(dims["data"][0]["embedding"]), v0);
  json raw = post_json(*c, "/v1/embeddings", {{"input", text}, {"embd_normalize", -1}}, &st);
  ASSERT_EQ(st, 200) << raw;
  EXPECT_EQ(floats(raw["data"][0]["embedding"]), engine_vector(*rs.engine, ids));
  json taxi = post_json(*c, "/v1/embeddings", {{"input", text}, {"embd_normalize", 1}}, &st);
  ASSERT_EQ(st, 200) << taxi;
  double l1 = 0.0;
  for (float x : floats(taxi["data"][0]["embedding"])) l1 += std::abs(x);
  EXPECT_NEAR(l1, 1.0, 1e-4);

  // Refused: each names its field.
  expect_400(*c, "/v1/embeddings", {{"input", text}, {"dimensions", n_embd / 2}}, "dimensions");
  expect_400(*c, "/v1/embeddings", {{"input", text}, {"dimensions", "8"}}, "dimensions");
  expect_400(*c, "/v1/embeddings", {{"input", text}, {"encoding_format", "int8"}},
             "encoding_format");
  expect_400(*c, "/v1/embeddings", {{"input", text}, {"embd_normalize", -2}}, "embd_normalize");
  expect_400(*c, "/v1/embeddings", {{"input", text}, {"embd_normalize", "2"}}, "embd_normalize");
  expect_400(*c, "/v1/embeddings", {{"input", text}, {"model", "other"}}, "model");
  expect_400(*c, "/v1/embeddings", {{"input", text}, {"user", 5}}, "user");
  expect_400(*c, "/v1/embeddings", json::object(), "input");
  expect_400(*c, "/v1/embeddings", {{"input", ""}}, "input");
  expect_400(*c, "/v1/embeddings", {{"input", json::array()}}, "input");
  expect_400(*c, "/v1/embeddings", {{"input", json::array({json::array()})}}, "input");
  expect_400(*c, "/v1/embeddings", {{"input", json::array({text, 5})}}, "input");
  expect_400(*c, "/v1/embeddings", {{"input", 7}}, "input");
  expect_400(*c, "/v1/embeddings", {{"input", json::array({101, -1})}}, "input");
  expect_400(*c, "/v1/embeddings", {{"input", json::array({101, 1 << 30})}}, "input");
  // Longer than the model takes (512 positions).
  std::string longer;
  for (int i = 0; i < 600; ++i) longer += "word ";
  expect_400(*c, "/v1/embeddings", {{"input", longer}}, "input");

  // An encoder generates nothing: completions are a 400.
  const json comp = post_json(*c, "/v1/completions", {{"prompt", "hello"}, {"max_tokens", 4}}, &st);
  EXPECT_EQ(st, 400) << comp;
  test::expect_error_body(comp);
}

TEST(ServerEmbeddings, DecoderModelAndManyInputs) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  server::ServerOptions so = test::server_test_options();
  so.max_queue = 3;  // 10 inputs go in three at a time
  test::RunningServer rs(so);
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  json inputs = json::array();
  for (int i = 0; i < 10; ++i) inputs.push_back("Once upon a time number " + std::to_string(i));
  int st = 0;
  const json j = post_json(*c, "/v1/embeddings", {{"input", inputs}}, &st);
  ASSERT_EQ(st, 200) << j;
  ASSERT_EQ(j["data"].size(), 10u);
  const Tokenizer& tok = rs.engine->model().tokenizer();
  TokenizeOptions to;
  to.parse_special = true;
  int64_t n_tokens = 0;
  for (size_t i = 0; i < 10; ++i) {
    const auto ids = tok.encode(inputs[i].get<std::string>(), to);
    n_tokens += static_cast<int64_t>(ids.size());
    std::vector<float> want = engine_vector(*rs.engine, ids);
    ASSERT_EQ(want.size(), static_cast<size_t>(rs.engine->model().hparams().n_embd));
    llmt::normalize_embedding(&want, 2);
    EXPECT_EQ(j["data"][i]["index"], i);
    EXPECT_EQ(floats(j["data"][i]["embedding"]), want) << "input " << i;
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], n_tokens);
  // Different inputs, different vectors.
  EXPECT_NE(j["data"][0]["embedding"], j["data"][1]["embedding"]);
}

// POST /v1/tasks {"task": "embed"}: the same vectors as /v1/embeddings, one per document.
TEST(ServerEmbeddings, EmbedTask) {
  LLMT_REQUIRE_DATA(kBert);
  test::RunningServer rs(bert_options(), bert_config());
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  const json inputs = {"Once upon a time", "The little dog was happy because"};
  int st = 0;
  const json emb = post_json(*c, "/v1/embeddings", {{"input", inputs}}, &st);
  ASSERT_EQ(st, 200) << emb;
  const json created = post_json(*c, "/v1/tasks", {{"task", "embed"}, {"inputs", inputs}}, &st);
  ASSERT_EQ(st, 202) << created;
  json task;
  for (int i = 0; i < 600; ++i) {
    task = get_json(*c, "/v1/tasks/" + created["id"].get<std::string>(), &st);
    ASSERT_EQ(st, 200) << task;
    if (task["status"] != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(task["status"], "completed") << task;
  ASSERT_EQ(task["results"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(task["results"][i]["embedding"].get<std::vector<float>>(),
              floats(emb["data"][i]["embedding"]))
        << i;
  }
  // embd_normalize -1: the raw vector; a bad value names the field.
  const json raw_task = post_json(
      *c, "/v1/tasks", {{"task", "embed"}, {"inputs", {inputs[0]}}, {"embd_normalize", -1}}, &st);
  ASSERT_EQ(st, 202) << raw_task;
  for (int i = 0; i < 600; ++i) {
    task = get_json(*c, "/v1/tasks/" + raw_task["id"].get<std::string>(), &st);
    if (task["status"] != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(task["status"], "completed") << task;
  EXPECT_GT(norm2(task["results"][0]["embedding"].get<std::vector<float>>()), 1.5);
  expect_400(*c, "/v1/tasks", {{"task", "embed"}, {"inputs", inputs}, {"embd_normalize", -3}},
             "embd_normalize");
}

// A client that closes its connection mid-request gets its embedding threads cancelled.
TEST(ServerEmbeddings, ClientGoneCancels) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  server::ServerOptions so = test::server_test_options();
  so.max_queue = 2;
  test::RunningServer rs(so);
  ASSERT_TRUE(rs.srv);
  std::string doc;
  for (int i = 0; i < 120; ++i) doc += "Once upon a time there was a cat. ";
  const json body = {{"input", json(std::vector<std::string>(2000, doc))}};
  const std::string payload = body.dump();
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(rs.srv->port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  const std::string head =
      "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(payload.size()) + "\r\n\r\n";
  const std::string req = head + payload;
  size_t sent = 0;
  while (sent < req.size()) {
    const ssize_t n = send(fd, req.data() + sent, req.size() - sent, 0);
    ASSERT_GT(n, 0);
    sent += static_cast<size_t>(n);
  }
  // Running: some inputs done, far from all.
  auto t0 = std::chrono::steady_clock::now();
  while (rs.engine->stats().n_finished < 4 &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_GE(rs.engine->stats().n_finished, 4);
  close(fd);
  t0 = std::chrono::steady_clock::now();
  while ((rs.srv->stats().n_live > 0 || rs.engine->stats().kv_blocks_used > 0) &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(rs.srv->stats().n_live, 0);
  EXPECT_EQ(rs.engine->stats().kv_blocks_used, 0);
  EXPECT_GT(rs.srv->stats().n_client_cancelled, 0);
  EXPECT_GT(rs.engine->stats().n_cancelled, 0);
  EXPECT_LT(rs.engine->stats().n_submitted, 2000) << "the request ran to its end";
}

TEST(ServerModels, ModelByIdAnd404) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::RunningServer rs;
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  int st = 0;
  const json m = get_json(*c, "/v1/models/stories260K", &st);
  ASSERT_EQ(st, 200) << m;
  EXPECT_EQ(m["id"], "stories260K");
  EXPECT_EQ(m["object"], "model");
  EXPECT_TRUE(m["created"].is_number_integer());
  EXPECT_EQ(m["owned_by"], "llmthreads");
  const json list = get_json(*c, "/v1/models", &st);
  ASSERT_EQ(st, 200);
  EXPECT_EQ(list["data"][0]["id"], m["id"]);
  for (const char* other :
       {"/v1/models/gpt-4", "/v1/models/org/stories260K", "/v1/models/stories260K-x"}) {
    const json e = get_json(*c, other, &st);
    EXPECT_EQ(st, 404) << other << " " << e;
    test::expect_error_body(e);
    EXPECT_EQ(e["error"]["code"], "model_not_found");
  }
  // Counted under the route's name, never the raw id.
  auto metrics = c->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(
      metrics->body.find(R"(llmthreads_requests_total{endpoint="/v1/models/{id}",status="404"} 3)"),
      std::string::npos)
      << metrics->body;
  EXPECT_NE(
      metrics->body.find(R"(llmthreads_requests_total{endpoint="/v1/models/{id}",status="200"} 1)"),
      std::string::npos)
      << metrics->body;
  EXPECT_EQ(metrics->body.find("gpt-4"), std::string::npos);
}

TEST(ServerTokenize, TokenizeDetokenizeAndFields) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::RunningServer rs;
  ASSERT_TRUE(rs.srv);
  auto c = rs.client(true);
  const Tokenizer& tok = rs.engine->model().tokenizer();
  const std::string text = "Once upon a time, <s> a cat";
  int st = 0;
  auto ids_for = [&](bool add_special, bool parse_special) {
    TokenizeOptions to;
    to.add_special = add_special;
    to.parse_special = parse_special;
    return tok.encode(text, to);
  };
  // Defaults as llama.cpp: add_special false, parse_special true.
  json j = post_json(*c, "/tokenize", {{"content", text}}, &st);
  ASSERT_EQ(st, 200) << j;
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), ids_for(false, true));
  j = post_json(*c, "/tokenize", {{"content", text}, {"add_special", true}}, &st);
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), ids_for(true, true));
  j = post_json(*c, "/tokenize", {{"content", text}, {"parse_special", false}}, &st);
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), ids_for(false, false));
  EXPECT_NE(ids_for(false, false), ids_for(false, true));  // "<s>" is parsed only with it
  EXPECT_NE(ids_for(true, true), ids_for(false, true));
  j = post_json(*c, "/tokenize", {{"content", text}, {"with_pieces", true}}, &st);
  ASSERT_EQ(st, 200) << j;
  const auto ids = ids_for(false, true);
  ASSERT_EQ(j["tokens"].size(), ids.size());
  std::string joined;
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(j["tokens"][i]["id"], ids[i]);
    ASSERT_TRUE(j["tokens"][i]["piece"].is_string()) << j["tokens"][i];
    joined += j["tokens"][i]["piece"].get<std::string>();
  }
  // Detokenize: the pieces joined (special tokens rendered).
  j = post_json(*c, "/detokenize", {{"tokens", ids}}, &st);
  ASSERT_EQ(st, 200) << j;
  EXPECT_EQ(j["content"], joined);
  EXPECT_NE(j["content"].get<std::string>().find("upon a time"), std::string::npos) << j;
  j = post_json(*c, "/detokenize", {{"tokens", json::array()}}, &st);
  ASSERT_EQ(st, 200);
  EXPECT_EQ(j["content"], "");
  // A byte-fallback token alone is not valid UTF-8: its piece is the byte values.
  ASSERT_GE(tok.find_token("<0xE2>"), 0) << "stories260K has byte-fallback tokens";
  {
    openai::TokenizeRequest tr;
    tr.content = "\xF0\x9F\x98\x80 \xE6\xBC\xA2";  // not in a 260K vocabulary: byte tokens
    tr.with_pieces = true;
    const json p = openai::tokenize_body(tok, tr);
    bool any_bytes = false;
    for (const json& t : p["tokens"]) any_bytes = any_bytes || t["piece"].is_array();
    EXPECT_TRUE(any_bytes) << p;
  }

  expect_400(*c, "/tokenize", json::object(), "content");
  expect_400(*c, "/tokenize", {{"content", 5}}, "content");
  expect_400(*c, "/tokenize", {{"content", text}, {"add_special", "yes"}}, "add_special");
  expect_400(*c, "/tokenize", {{"content", text}, {"parse_special", 1}}, "parse_special");
  expect_400(*c, "/tokenize", {{"content", text}, {"with_pieces", "true"}}, "with_pieces");
  expect_400(*c, "/detokenize", json::object(), "tokens");
  expect_400(*c, "/detokenize", {{"tokens", "1 2"}}, "tokens");
  expect_400(*c, "/detokenize", {{"tokens", json::array({1, -1})}}, "tokens");
  expect_400(*c, "/detokenize",
             {{"tokens", json::array({1, rs.engine->model().hparams().n_vocab})}}, "tokens");
  expect_400(*c, "/detokenize", {{"tokens", json::array({1, 2.5})}}, "tokens");
}

}  // namespace
}  // namespace llmt
