// POST /v1/rerank (and /rerank) on a bert reranker (the synth-bert file with a one-output head
// written into it, tests/rerank-model.h): every document's relevance_score is bitwise the model's
// score of the "[CLS] query [SEP] document [SEP]" pair (Context::embed), results come best
// first, top_n and return_documents are honoured, documents may be {"text"} objects, and every bad
// field is a 400 naming it. /v1/embeddings on the reranker and /v1/rerank on a plain embedding
// model are 400s.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/embeddings.h"
#include "llmthreads/model.h"
#include "rerank-model.h"
#include "server-fixture.h"

namespace llmt {
namespace {

using nlohmann::json;
using test::post_json;

constexpr const char* kBert = "models/arch/synth-bert-f16.gguf";

server::ServerOptions rerank_options() {
  server::ServerOptions so = test::server_test_options();
  so.model_name = "synth-reranker";
  so.chat_format = "";
  return so;
}

TEST(ServerRerank, ScoresOrderTopNAndFields) {
  LLMT_REQUIRE_DATA(kBert);
  auto plain = Model::load(test::data_path(kBert));
  ASSERT_TRUE(plain.is_ok());
  const test::Head head = test::random_head((*plain)->hparams().n_embd, 1, true);
  const std::string path =
      test::write_with_head(test::data_path(kBert), head, test::temp_path("server"));
  auto model = Model::load(path);
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  EngineConfig ec = test::server_engine_config();
  ec.model.path = path;
  test::RunningServer rs(rerank_options(), ec);
  std::filesystem::remove(path);
  ASSERT_TRUE(rs.srv);
  auto c = rs.client(true);

  const std::string query = "where do foxes live";
  const std::vector<std::string> docs = {
      "The quick brown fox jumps over the lazy dog.", "Foxes live in dens in forests and fields.",
      "Interest rates rose again this quarter.", "A den is a fox's home."};
  // The expected scores: the model's, pair by pair, alone.
  ContextOptions co;
  co.n_threads = 1;
  auto ctx = Context::create(*model, co);
  ASSERT_TRUE(ctx.is_ok());
  const Tokenizer& tok = (*model)->tokenizer();
  std::vector<float> want;
  int64_t n_tokens = 0;
  for (const std::string& d : docs) {
    const std::vector<int32_t> ids = openai::rerank_tokens(tok, query, d);
    // [CLS] query [SEP] document [SEP]
    ASSERT_GE(ids.size(), 4u);
    EXPECT_EQ(ids.front(), tok.bos_id());
    EXPECT_EQ(ids.back(), tok.sep_id());
    EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.sep_id()), 2);
    n_tokens += static_cast<int64_t>(ids.size());
    auto s = (*ctx)->embed(ids);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    ASSERT_EQ(s->size(), 1u);
    want.push_back((*s)[0]);
  }
  std::vector<size_t> order = {0, 1, 2, 3};
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return want[a] > want[b]; });
  ASSERT_NE(want[order[0]], want[order[3]]);

  int st = 0;
  for (const char* route : {"/v1/rerank", "/rerank"}) {
    SCOPED_TRACE(route);
    json j = post_json(*c, route, json{{"query", query}, {"documents", docs}}, &st);
    ASSERT_EQ(st, 200) << j;
    EXPECT_EQ(j["model"], "synth-reranker");
    EXPECT_EQ(j["usage"]["prompt_tokens"], n_tokens);
    ASSERT_EQ(j["results"].size(), docs.size());
    for (size_t r = 0; r < docs.size(); ++r) {
      EXPECT_EQ(j["results"][r]["index"], order[r]);
      EXPECT_EQ(j["results"][r]["relevance_score"].get<float>(), want[order[r]]);
      EXPECT_FALSE(j["results"][r].contains("document"));
    }
  }
  // top_n, return_documents, {"text"} documents.
  json objs = json::array();
  for (const auto& d : docs) objs.push_back({{"text", d}});
  json j = post_json(*c, "/v1/rerank",
                     json{{"model", "synth-reranker"},
                          {"query", query},
                          {"documents", objs},
                          {"top_n", 2},
                          {"return_documents", true}},
                     &st);
  ASSERT_EQ(st, 200) << j;
  ASSERT_EQ(j["results"].size(), 2u);
  for (size_t r = 0; r < 2; ++r) {
    EXPECT_EQ(j["results"][r]["index"], order[r]);
    EXPECT_EQ(j["results"][r]["document"]["text"], docs[order[r]]);
  }
  // Bad fields: a 400 naming each.
  struct Bad {
    json body;
    const char* field;
  };
  for (const Bad& b :
       {Bad{json{{"documents", docs}}, "query"},
        Bad{json{{"query", ""}, {"documents", docs}}, "query"},
        Bad{json{{"query", query}}, "documents"},
        Bad{json{{"query", query}, {"documents", json::array()}}, "documents"},
        Bad{json{{"query", query}, {"documents", json::array({1})}}, "documents"},
        Bad{json{{"query", query}, {"documents", json::array({json{{"txt", "a"}}})}}, "documents"},
        Bad{json{{"query", query}, {"documents", docs}, {"top_n", 0}}, "top_n"},
        Bad{json{{"query", query}, {"documents", docs}, {"return_documents", 1}},
            "return_documents"},
        Bad{json{{"query", query}, {"documents", docs}, {"model", "other"}}, "model"},
        Bad{json{{"query", query}, {"documents", docs}, {"rank_fields", json::array()}},
            "rank_fields"}}) {
    SCOPED_TRACE(b.body.dump());
    json e = post_json(*c, "/v1/rerank", b.body, &st);
    EXPECT_EQ(st, 400) << e;
    test::expect_error_body(e);
    EXPECT_EQ(e["error"]["param"], b.field) << e;
  }
  // A document too long for the model: a 400 naming "documents".
  std::string long_doc;
  for (int i = 0; i < 4000; ++i) long_doc += "fox ";
  json e = post_json(*c, "/v1/rerank", json{{"query", query}, {"documents", {long_doc}}}, &st);
  EXPECT_EQ(st, 400) << e;
  EXPECT_EQ(e["error"]["param"], "documents") << e;
  // Embeddings from a reranker: refused.
  e = post_json(*c, "/v1/embeddings", json{{"input", "a fox"}}, &st);
  EXPECT_EQ(st, 400) << e;
  EXPECT_NE(e["error"]["message"].get<std::string>().find("/v1/rerank"), std::string::npos) << e;
}

TEST(ServerRerank, EmbeddingModelRefusesRerank) {
  LLMT_REQUIRE_DATA(kBert);
  EngineConfig ec = test::server_engine_config();
  ec.model.path = test::data_path(kBert);
  test::RunningServer rs(rerank_options(), ec);
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  int st = 0;
  json e = post_json(*c, "/v1/rerank", json{{"query", "q"}, {"documents", {"d"}}}, &st);
  EXPECT_EQ(st, 400) << e;
  EXPECT_NE(e["error"]["message"].get<std::string>().find("reranking head"), std::string::npos)
      << e;
}

}  // namespace
}  // namespace llmt
