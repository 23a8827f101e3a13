// The job API (llmthreads/tasks.h) on stories260K: classify probabilities equal a direct
// computation from engine scoring threads and sum to 1; vote / mean over sentence pieces;
// generate pieces concatenated in document order, each equal to a direct generation; summarize
// map + LLM reduce ends with one text; cancel; two jobs at once on one engine.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "llmthreads/engine.h"
#include "llmthreads/tasks.h"
#include "llmthreads/tokenizer.h"
#include "test-util.h"

namespace llmt {
namespace {

const char* kStories = "models/stories260K.gguf";

const char* kStory =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "
    "One day, she saw a big dog in the park. The dog was sad because it was lost. Lily helped "
    "the dog find its home, and they became best friends.";

std::unique_ptr<Engine> make_engine(int32_t n_ctx = 0) {
  EngineConfig c;
  c.model.path = test::data_path(kStories);
  c.compute.n_threads = 2;
  c.kv.budget_bytes = 64u << 20;
  c.sched.measure_costs = false;
  c.model.n_ctx = n_ctx;
  auto e = Engine::create(c);
  EXPECT_TRUE(e.is_ok()) << e.status().to_string();
  return e.is_ok() ? std::move(*e) : nullptr;
}

// Runs a job over documents and returns the results by index.
std::map<uint64_t, DocumentResult> run_job(Engine& e, const TaskSpec& spec,
                                           const std::vector<std::string>& texts) {
  std::mutex mu;
  std::map<uint64_t, DocumentResult> out;
  auto job = Job::create(e, spec, [&](DocumentResult r) {
    std::lock_guard<std::mutex> lk(mu);
    EXPECT_EQ(out.count(r.index), 0u) << "delivered twice: " << r.index;
    out[r.index] = std::move(r);
  });
  EXPECT_TRUE(job.is_ok()) << job.status().to_string();
  if (!job.is_ok()) return out;
  for (size_t i = 0; i < texts.size(); ++i) {
    Document d;
    d.index = i;
    d.text = texts[i];
    EXPECT_TRUE((*job)->add(std::move(d)).is_ok());
  }
  (*job)->wait_idle();
  EXPECT_EQ(out.size(), texts.size());
  return out;
}

TEST(Tasks, ClassifyMatchesDirectScoring) {
  LLMT_REQUIRE_DATA(kStories);
  auto e = make_engine();
  ASSERT_TRUE(e);
  TaskSpec spec;
  spec.type = TaskType::kClassify;
  spec.prompt_template = "Read the story and say how it feels.\nStory: {text}\nThe story is";
  spec.labels = {"happy", "sad", "scary"};
  spec.piece_details = true;
  const auto res = run_job(*e, spec, {kStory, "The dog was lost and cried all night."});
  ASSERT_EQ(res.size(), 2u);
  const Tokenizer& tok = e->model().tokenizer();
  for (const auto& [idx, r] : res) {
    ASSERT_TRUE(r.ok()) << r.error;
    ASSERT_EQ(r.probs.size(), 3u);
    double sum = 0;
    for (double p : r.probs) sum += p;
    EXPECT_NEAR(sum, 1.0, 1e-12);
    EXPECT_EQ(r.n_pieces, 1);
    EXPECT_EQ(r.n_threads, 3);
    EXPECT_EQ(r.label_text, spec.labels[static_cast<size_t>(r.label)]);

    // Direct: one scoring thread per label on the engine, softmax of the summed log-probs.
    const std::string prompt_text = std::string("Read the story and say how it feels.\nStory: ") +
                                    (idx == 0 ? kStory : "The dog was lost and cried all night.") +
                                    "\nThe story is";
    const std::vector<int32_t> prompt = tok.encode(prompt_text);
    std::vector<double> lp;
    for (const std::string& lab : spec.labels) {
      std::vector<int32_t> all = tok.encode(prompt_text + " " + lab);
      ASSERT_TRUE(std::equal(prompt.begin(), prompt.end(), all.begin()));
      ThreadRequest q;
      q.prompt_tokens = prompt;
      q.score_tokens.assign(all.begin() + static_cast<std::ptrdiff_t>(prompt.size()), all.end());
      auto h = e->submit(q);
      ASSERT_TRUE(h.is_ok());
      lp.push_back(h->wait().score_logprob);
    }
    double mx = std::max({lp[0], lp[1], lp[2]}), z = 0;
    for (double v : lp) z += std::exp(v - mx);
    for (size_t l = 0; l < 3; ++l) {
      EXPECT_NEAR(r.probs[l], std::exp(lp[l] - mx) / z, 1e-12) << "label " << l;
      EXPECT_EQ(r.pieces[0].logprobs[l], lp[l]);
    }
  }
}

TEST(Tasks, VoteAndMeanOverSentences) {
  LLMT_REQUIRE_DATA(kStories);
  auto e = make_engine();
  ASSERT_TRUE(e);
  TaskSpec spec;
  spec.type = TaskType::kClassify;
  spec.prompt_template = "Sentence: {text}\nThis sentence is";
  spec.labels = {"happy", "sad"};
  spec.split = "sentence";
  spec.piece_details = true;
  spec.merge = MergeKind::kVote;
  const auto vote = run_job(*e, spec, {kStory});
  spec.merge = MergeKind::kMean;
  const auto mean = run_job(*e, spec, {kStory});
  const DocumentResult& v = vote.at(0);
  const DocumentResult& m = mean.at(0);
  ASSERT_TRUE(v.ok() && m.ok()) << v.error << m.error;
  EXPECT_EQ(v.n_pieces, 5);
  EXPECT_EQ(v.n_threads, 10);
  ASSERT_EQ(v.votes.size(), 2u);
  EXPECT_EQ(v.votes[0] + v.votes[1], 5);
  ASSERT_EQ(m.pieces.size(), 5u);
  std::vector<int32_t> votes(2, 0);
  std::vector<double> avg(2, 0.0);
  for (const PieceDetail& p : m.pieces) {
    ++votes[static_cast<size_t>(p.label)];
    for (size_t l = 0; l < 2; ++l) avg[l] += p.probs[l] / 5;
  }
  EXPECT_EQ(votes, v.votes);
  EXPECT_NEAR(v.probs[0], votes[0] / 5.0, 1e-12);
  for (size_t l = 0; l < 2; ++l) EXPECT_NEAR(m.probs[l], avg[l], 1e-12);
  EXPECT_TRUE(m.votes.empty());
  // Pieces are in document order and cover the sentences.
  for (size_t i = 1; i < m.pieces.size(); ++i) EXPECT_GT(m.pieces[i].begin, m.pieces[i - 1].begin);
}

TEST(Tasks, GenerateConcatInDocumentOrder) {
  LLMT_REQUIRE_DATA(kStories);
  auto e = make_engine();
  ASSERT_TRUE(e);
  TaskSpec spec;
  spec.type = TaskType::kGenerate;
  spec.prompt_template = "{text}";
  spec.split = "sentence";
  spec.max_tokens = 12;
  spec.piece_details = true;
  spec.separator = " | ";
  const auto res = run_job(*e, spec, {kStory});
  const DocumentResult& r = res.at(0);
  ASSERT_TRUE(r.ok()) << r.error;
  ASSERT_EQ(r.pieces.size(), 5u);
  std::string want;
  const std::string doc = kStory;
  for (size_t i = 0; i < r.pieces.size(); ++i) {
    const PieceDetail& p = r.pieces[i];
    EXPECT_EQ(p.index, static_cast<int32_t>(i));
    // Each piece equals a direct greedy generation of its prompt.
    ThreadRequest q;
    q.prompt = doc.substr(p.begin, p.end - p.begin);
    q.max_tokens = 12;
    q.sampling.temperature = 0;
    auto h = e->submit(q);
    ASSERT_TRUE(h.is_ok());
    EXPECT_EQ(p.text, h->wait().text) << "piece " << i;
    want += (i ? " | " : "") + p.text;
  }
  EXPECT_EQ(r.text, want);
  EXPECT_EQ(r.n_reduce_rounds, 0);
}

TEST(Tasks, SummarizeReducesToOneText) {
  LLMT_REQUIRE_DATA(kStories);
  auto e = make_engine(/*n_ctx=*/96);  // small context: several reduce rounds
  ASSERT_TRUE(e);
  TaskSpec spec;
  spec.type = TaskType::kSummarize;
  spec.prompt_template = "Summary of: {text}\nIt was about";
  spec.reduce_template = "{text}\nIn short,";
  spec.split = "sentence";
  spec.max_tokens = 16;
  std::string doc;
  for (int i = 0; i < 4; ++i) doc += std::string(kStory) + " ";
  const auto res = run_job(*e, spec, {doc});
  const DocumentResult& r = res.at(0);
  ASSERT_TRUE(r.ok()) << r.error_code << ": " << r.error;
  EXPECT_EQ(r.n_pieces, 20);
  EXPECT_GE(r.n_reduce_rounds, 2);
  EXPECT_GT(r.n_threads, 20);
  EXPECT_FALSE(r.text.empty());

  // Concat instead of reduce: the map summaries only.
  spec.merge = MergeKind::kConcat;
  const auto c = run_job(*e, spec, {doc});
  EXPECT_EQ(c.at(0).n_threads, 20);
  EXPECT_EQ(c.at(0).n_reduce_rounds, 0);
}

TEST(Tasks, CancelDeliversEveryDocument) {
  LLMT_REQUIRE_DATA(kStories);
  auto e = make_engine();
  ASSERT_TRUE(e);
  TaskSpec spec;
  spec.type = TaskType::kGenerate;
  spec.max_tokens = 200;
  spec.sampling.temperature = 0.8f;
  std::mutex mu;
  std::map<uint64_t, DocumentResult> out;
  auto job = Job::create(*e, spec, [&](DocumentResult r) {
    std::lock_guard<std::mutex> lk(mu);
    out[r.index] = std::move(r);
  });
  ASSERT_TRUE(job.is_ok());
  for (uint64_t i = 0; i < 64; ++i) {
    Document d;
    d.index = i;
    d.text = "Once upon a time " + std::to_string(i);
    ASSERT_TRUE((*job)->add(std::move(d)).is_ok());
  }
  (*job)->cancel();
  (*job)->wait_idle();
  EXPECT_EQ(out.size(), 64u);
  int n_cancelled = 0;
  for (auto& [i, r] : out) n_cancelled += r.error_code == "cancelled";
  EXPECT_GT(n_cancelled, 0);
  // The engine ends the cancelled threads asynchronously (within a step): all are gone soon.
  for (int i = 0; i < 2000 && (*job)->stats().n_threads_live != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ((*job)->stats().n_threads_live, 0u);
  Document late;
  late.text = "x";
  EXPECT_FALSE((*job)->add(late).is_ok());
}

TEST(Tasks, ErrorsAndTwoJobsAtOnce) {
  LLMT_REQUIRE_DATA(kStories);
  auto e = make_engine(/*n_ctx=*/64);
  ASSERT_TRUE(e);
  TaskSpec bad;
  bad.type = TaskType::kClassify;
  bad.labels = {"a"};
  EXPECT_FALSE(Job::create(*e, bad, nullptr).is_ok());
  bad.labels = {"a", "b"};
  bad.merge = MergeKind::kConcat;
  EXPECT_FALSE(Job::create(*e, bad, nullptr).is_ok());
  bad.merge = MergeKind::kDefault;
  bad.prompt_template = "no placeholder";
  EXPECT_FALSE(Job::create(*e, bad, nullptr).is_ok());

  TaskSpec cls;
  cls.type = TaskType::kClassify;
  cls.prompt_template = "Text: {text}\nMood:";
  cls.labels = {"good", "bad"};
  TaskSpec gen;
  gen.max_tokens = 8;
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += "word" + std::to_string(i) + " ";
  const std::vector<std::string> texts = {"A happy day.", "   ", long_text, "A sad night."};
  // Alone, then both jobs at once: the same results.
  const auto cls_alone = run_job(*e, cls, texts);
  const auto gen_alone = run_job(*e, gen, texts);
  std::map<uint64_t, DocumentResult> a, b;
  std::mutex mu;
  auto ja = Job::create(*e, cls, [&](DocumentResult r) {
    std::lock_guard<std::mutex> lk(mu);
    a[r.index] = std::move(r);
  });
  auto jb = Job::create(*e, gen, [&](DocumentResult r) {
    std::lock_guard<std::mutex> lk(mu);
    b[r.index] = std::move(r);
  });
  ASSERT_TRUE(ja.is_ok() && jb.is_ok());
  for (size_t i = 0; i < texts.size(); ++i) {
    Document d;
    d.index = i;
    d.text = texts[i];
    ASSERT_TRUE((*ja)->add(d).is_ok());
    ASSERT_TRUE((*jb)->add(d).is_ok());
  }
  (*ja)->wait_idle();
  (*jb)->wait_idle();
  EXPECT_EQ(cls_alone.at(1).error_code, "empty_text");
  EXPECT_EQ(cls_alone.at(2).error_code, "context_overflow");
  EXPECT_EQ(gen_alone.at(2).error_code, "context_overflow");
  EXPECT_EQ((*ja)->stats().n_failed, 2u);
  for (size_t i : {0u, 3u}) {
    ASSERT_TRUE(a.at(i).ok()) << a.at(i).error;
    EXPECT_EQ(a.at(i).probs, cls_alone.at(i).probs);
    EXPECT_EQ(b.at(i).text, gen_alone.at(i).text);
  }
}

}  // namespace
}  // namespace llmt
