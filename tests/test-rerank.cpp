// The classification / reranking head of encoder models (bert with pooling_type 4 "rank" and the
// cls.* tensors, as llama.cpp lays them out for rerankers and sequence classifiers). No GGUF in
// ../shared carries one, so the tests write one: the real synth-bert-f16 file with a random head
// added. They check that
//   - the scores are the head applied to the first token's state, computed here in double from
//     Context::embed(kCls) (which test-embed checks against llama.cpp): dense + tanh + output,
//     and the output-only layout (no cls.weight);
//   - embed_batch() and engine embedding threads give bitwise the scores of embed() alone;
//   - the labels (<arch>.classifier.output_labels) and n_cls_out are exposed;
//   - a partial head, a label count that differs from the outputs, and rank pooling without a
//     head fail the load with the offending tensor or key named.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "llmthreads/engine.h"
#include "llmthreads/gguf.h"
#include "llmthreads/model.h"
#include "rerank-model.h"
#include "test-util.h"

namespace llmt {
namespace {

using nlohmann::json;
using test::Head;
using test::head_reference;
using test::random_floats;
using test::random_head;
using test::temp_path;
using test::write_with_head;

constexpr const char* kBert = "models/arch/synth-bert-f16.gguf";
constexpr const char* kBertRef = "reference/arch/synth-bert-f16.json";

std::vector<std::vector<int32_t>> ref_prompts() {
  const json ref = json::parse(test::read_file(test::data_path(kBertRef)));
  std::vector<std::vector<int32_t>> out;
  for (const json& p : ref["prompts"])
    out.push_back(p["prompt_token_ids"].get<std::vector<int32_t>>());
  return out;
}

struct HeadCase {
  const char* name;
  int64_t n_out;
  bool dense;
  std::vector<std::string> labels;
};

void PrintTo(const HeadCase& c, std::ostream* os) {
  *os << c.name;
}

class RerankHead : public ::testing::TestWithParam<HeadCase> {};

TEST_P(RerankHead, ScoresAreTheHeadOverTheFirstTokenAloneBatchedAndInTheEngine) {
  LLMT_REQUIRE_DATA(kBert);
  LLMT_REQUIRE_DATA(kBertRef);
  const HeadCase& hc = GetParam();
  auto plain = Model::load(test::data_path(kBert));
  ASSERT_TRUE(plain.is_ok()) << plain.status().to_string();
  const int64_t n_embd = (*plain)->hparams().n_embd;
  EXPECT_EQ((*plain)->hparams().n_cls_out, 0);
  Head head = random_head(n_embd, hc.n_out, hc.dense);
  head.labels = hc.labels;
  const std::string path = write_with_head(test::data_path(kBert), head, temp_path(hc.name));
  auto m = Model::load(path);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ((*m)->hparams().pooling, Pooling::kRank);
  EXPECT_EQ((*m)->hparams().n_cls_out, hc.n_out);
  EXPECT_EQ((*m)->hparams().cls_labels, hc.labels);

  const auto prompts = ref_prompts();
  ASSERT_GE(prompts.size(), 2u);
  ContextOptions co;
  co.n_threads = 1;
  auto plain_ctx = Context::create(*plain, co);
  auto ctx = Context::create(*m, co);
  ASSERT_TRUE(plain_ctx.is_ok() && ctx.is_ok());
  std::vector<std::vector<float>> alone;
  for (size_t p = 0; p < prompts.size(); ++p) {
    SCOPED_TRACE("prompt " + std::to_string(p));
    auto cls_state = (*plain_ctx)->embed(prompts[p], Pooling::kCls);
    ASSERT_TRUE(cls_state.is_ok()) << cls_state.status().to_string();
    // The head's file keeps every other tensor, so its kCls state is the plain file's.
    auto same_state = (*ctx)->embed(prompts[p], Pooling::kCls);
    ASSERT_TRUE(same_state.is_ok());
    EXPECT_EQ(*same_state, *cls_state);
    auto scores = (*ctx)->embed(prompts[p]);  // the file's pooling: rank
    ASSERT_TRUE(scores.is_ok()) << scores.status().to_string();
    const std::vector<double> want = head_reference(head, *cls_state);
    ASSERT_EQ(scores->size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR((*scores)[i], want[i], 1e-4 * (1.0 + std::fabs(want[i]))) << "output " << i;
    }
    alone.push_back(*scores);
  }
  // The scores differ between prompts (the head sees the state, not a constant).
  EXPECT_NE(alone[0], alone[1]);

  std::vector<std::span<const int32_t>> seqs(prompts.begin(), prompts.end());
  std::vector<std::vector<float>> batched;
  ASSERT_TRUE((*ctx)->embed_batch(seqs, &batched).is_ok());
  EXPECT_EQ(batched, alone);

  EngineConfig ec;
  ec.model.path = path;
  ec.compute.n_threads = 1;
  ec.sched.measure_costs = false;
  ec.kv.budget_bytes = uint64_t{16} << 20;
  auto eng = Engine::create(ec);
  std::filesystem::remove(path);
  ASSERT_TRUE(eng.is_ok()) << eng.status().to_string();
  std::vector<ThreadHandle> handles;
  for (const auto& p : prompts) {
    ThreadRequest r;
    r.prompt_tokens = p;
    r.embed = true;
    auto h = (*eng)->submit(std::move(r));
    ASSERT_TRUE(h.is_ok()) << h.status().to_string();
    handles.push_back(std::move(*h));
  }
  for (size_t p = 0; p < handles.size(); ++p) {
    const ThreadResult& r = handles[p].wait();
    EXPECT_EQ(r.finish_reason, FinishReason::kStop) << r.error;
    EXPECT_EQ(r.embedding, alone[p]) << "prompt " << p;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, RerankHead,
    ::testing::Values(HeadCase{"classifier", 3, true, {"negative", "neutral", "positive"}},
                      HeadCase{"reranker", 1, true, {}},
                      HeadCase{"output_only", 2, false, {"no", "yes"}}),
    [](const ::testing::TestParamInfo<HeadCase>& info) { return std::string(info.param.name); });

// Broken heads fail the load and name what is wrong.
TEST(RerankHeadLoad, BrokenHeadsAreNamed) {
  LLMT_REQUIRE_DATA(kBert);
  auto plain = Model::load(test::data_path(kBert));
  ASSERT_TRUE(plain.is_ok());
  const int64_t n_embd = (*plain)->hparams().n_embd;
  struct Case {
    const char* name;
    Head head;
    std::string want;  // in the message
  };
  Head labels_off = random_head(n_embd, 3, true);
  labels_off.labels = {"a", "b"};
  Head no_output = random_head(n_embd, 1, true);
  no_output.out.clear();
  Head no_head;
  Head bias_only = random_head(n_embd, 2, false);
  bias_only.cls_b = random_floats(static_cast<size_t>(n_embd), 0.1f, 3);
  for (const Case& c : {Case{"labels", labels_off, "classifier.output_labels has 2 labels"},
                        Case{"no-output", no_output, "'cls.weight' without cls.output.weight"},
                        Case{"no-head", no_head, "no classification head"},
                        Case{"bias-only", bias_only, "'cls.bias' without cls.weight"}}) {
    SCOPED_TRACE(c.name);
    const std::string path = write_with_head(test::data_path(kBert), c.head, temp_path(c.name));
    auto m = Model::load(path);
    std::filesystem::remove(path);
    ASSERT_FALSE(m.is_ok());
    EXPECT_EQ(m.status().code(), StatusCode::kCorrupt) << m.status().to_string();
    EXPECT_NE(m.status().message().find(c.want), std::string::npos) << m.status().message();
  }
}

// A head in a file with another pooling is bound (and checked) but only runs when rank pooling
// is asked for; the file's own pooling stays what it says.
TEST(RerankHeadLoad, HeadWithMeanPoolingRunsOnlyWhenAsked) {
  LLMT_REQUIRE_DATA(kBert);
  LLMT_REQUIRE_DATA(kBertRef);
  auto plain = Model::load(test::data_path(kBert));
  ASSERT_TRUE(plain.is_ok());
  Head head = random_head((*plain)->hparams().n_embd, 2, true);
  head.pooling = 1;
  const std::string path = write_with_head(test::data_path(kBert), head, temp_path("mean"));
  auto m = Model::load(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ((*m)->hparams().pooling, Pooling::kMean);
  EXPECT_EQ((*m)->hparams().n_cls_out, 2);
  ContextOptions co;
  co.n_threads = 1;
  auto ctx = Context::create(*m, co);
  auto pctx = Context::create(*plain, co);
  ASSERT_TRUE(ctx.is_ok() && pctx.is_ok());
  const auto prompts = ref_prompts();
  auto mean = (*ctx)->embed(prompts[0]);
  auto plain_mean = (*pctx)->embed(prompts[0]);
  ASSERT_TRUE(mean.is_ok() && plain_mean.is_ok());
  EXPECT_EQ(*mean, *plain_mean);
  auto scores = (*ctx)->embed(prompts[0], Pooling::kRank);
  ASSERT_TRUE(scores.is_ok()) << scores.status().to_string();
  EXPECT_EQ(scores->size(), 2u);
  // The plain file has no head: rank pooling is refused, naming the field.
  auto refused = (*pctx)->embed(prompts[0], Pooling::kRank);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().field(), "pooling");
}

// `llmthreads run --task embed` on a reranker is refused (its scores are not vectors to
// normalize and merge), with a message pointing at /v1/rerank.
TEST(RerankHeadLoad, EmbedTaskOnARerankerIsRefused) {
  LLMT_REQUIRE_DATA(kBert);
  auto plain = Model::load(test::data_path(kBert));
  ASSERT_TRUE(plain.is_ok());
  const std::string path = write_with_head(
      test::data_path(kBert), random_head((*plain)->hparams().n_embd, 1, true), temp_path("cli"));
  const std::filesystem::path dir = std::filesystem::path(path).replace_extension(".d");
  std::filesystem::create_directories(dir);
  const std::string in = (dir / "in.jsonl").string();
  std::ofstream(in) << "{\"id\": \"a\", \"text\": \"a fox\"}\n";
  const test::CommandResult r = test::run_cli({"run", "-m", path, "--task", "embed", "-i", in, "-o",
                                               (dir / "out.jsonl").string(), "--progress", "none"});
  std::filesystem::remove(path);
  std::filesystem::remove_all(dir);
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("/v1/rerank"), std::string::npos) << r.out;
}

// `llmthreads run --task classify` on a sequence classifier runs the model's head: each line's
// probs are the softmax of Context::embed()'s scores for the text (tokenized with the model's
// special tokens), label their argmax. Labels other than the file's are refused.
TEST(RerankHeadLoad, ClassifyTaskRunsTheHead) {
  LLMT_REQUIRE_DATA(kBert);
  auto plain = Model::load(test::data_path(kBert));
  ASSERT_TRUE(plain.is_ok());
  Head head = random_head((*plain)->hparams().n_embd, 3, true);
  head.labels = {"negative", "neutral", "positive"};
  const std::string path = write_with_head(test::data_path(kBert), head, temp_path("classify"));
  const std::filesystem::path dir = std::filesystem::path(path).replace_extension(".d");
  std::filesystem::create_directories(dir);
  const std::vector<std::string> texts = {"a fine fox", "the worst dog ever",
                                          "quick brown foxes jump over lazy dogs at night"};
  const std::string in = (dir / "in.jsonl").string();
  {
    std::ofstream f(in);
    for (size_t i = 0; i < texts.size(); ++i) {
      f << json{{"id", "d" + std::to_string(i)}, {"text", texts[i]}}.dump() << "\n";
    }
  }
  auto run = [&](const std::string& labels, const std::string& out) {
    return test::run_cli({"run", "-m", path, "--task", "classify", "--labels", labels, "-i", in,
                          "-o", out, "--progress", "none"});
  };
  const std::string out = (dir / "out.jsonl").string();
  const test::CommandResult r = run("negative,neutral,positive", out);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const test::CommandResult bad = run("positive,neutral,negative", (dir / "bad.jsonl").string());
  EXPECT_NE(bad.exit_code, 0) << bad.out;
  EXPECT_NE(bad.out.find("negative,neutral,positive"), std::string::npos) << bad.out;

  auto m = Model::load(path);
  ASSERT_TRUE(m.is_ok());
  ContextOptions co;
  co.n_threads = 1;
  auto ctx = Context::create(*m, co);
  ASSERT_TRUE(ctx.is_ok());
  const std::vector<std::string> lines = test::lines_of(test::read_file(out));
  ASSERT_EQ(lines.size(), texts.size());
  for (const std::string& l : lines) {
    const json line = json::parse(l);
    const json& j = line["result"];
    const size_t i = std::stoul(line["id"].get<std::string>().substr(1));
    SCOPED_TRACE(texts[i]);
    auto scores = (*ctx)->embed((*m)->tokenizer().encode(texts[i], {}));
    ASSERT_TRUE(scores.is_ok()) << scores.status().to_string();
    ASSERT_EQ(scores->size(), 3u);
    const double mx = *std::max_element(scores->begin(), scores->end());
    double z = 0.0;
    for (float v : *scores) z += std::exp(v - mx);
    size_t best = 0;
    for (size_t k = 0; k < 3; ++k) {
      const double p = std::exp((*scores)[k] - mx) / z;
      EXPECT_NEAR(j["probs"][head.labels[k]].get<double>(), p, 1e-5) << l;
      if ((*scores)[k] > (*scores)[best]) best = k;
    }
    EXPECT_EQ(j["label"], head.labels[best]) << l;
  }
  std::filesystem::remove(path);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace llmt
