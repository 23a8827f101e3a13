// Embedding LLM threads (ThreadRequest::embed) through the engine:
//   - bert (encoder): the pooled vector of every reference prompt has cosine >= 0.9999 to
//     llama.cpp's (reference/arch/synth-bert-f16.json), equals Context::embed() bitwise, and is
//     bitwise the same submitted alone or together with the other prompts (one shared pass);
//   - the model layer's batched encoder pass (Context::embed_batch) equals one-by-one embed();
//   - decoders: the vector is the mean of the final hidden states (Context::batch_embd, checked
//     against the logits they produce), bitwise the same alone, batched with generation threads,
//     chunked by a small step budget, and after being evicted and recomputed; a file's
//     pooling_type cls / last picks the first / last position's state, rank is refused;
//   - errors: generation on an encoder, an embedding thread that also scores or has a grammar,
//     a prompt longer than the model takes.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llmthreads/engine.h"
#include "llmthreads/gguf.h"
#include "llmthreads/grammar.h"
#include "llmthreads/model.h"
#include "llmthreads/tokenizer.h"
#include "test-util.h"

namespace llmt {
namespace {

using nlohmann::json;

constexpr const char* kBert = "models/arch/synth-bert-f16.gguf";
constexpr const char* kBertRef = "reference/arch/synth-bert-f16.json";
constexpr const char* kDecoder = "models/arch/synth-llama3-f16.gguf";
constexpr const char* kGpt2 = "models/arch/synth-gpt2-f16.gguf";

double cosine(const std::vector<float>& a, const std::vector<double>& b) {
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (size_t i = 0; i < b.size(); ++i) {
    ab += a[i] * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += b[i] * b[i];
  }
  return ab / std::sqrt(std::max(aa * bb, 1e-300));
}

std::unique_ptr<Engine> make_engine(const std::string& rel, int32_t step_tokens = 256,
                                    uint64_t kv_bytes = uint64_t{16} << 20) {
  EngineConfig ec;
  ec.model.path = rel.starts_with("/") ? rel : test::data_path(rel);  // (absolute: a temp file)
  ec.compute.n_threads = 1;
  ec.sched.measure_costs = false;
  ec.kv.budget_bytes = kv_bytes;
  ec.sched.step_tokens = step_tokens;
  auto e = Engine::create(ec);
  EXPECT_TRUE(e.is_ok()) << e.status().to_string();
  return e.is_ok() ? std::move(*e) : nullptr;
}

ThreadRequest embed_request(std::vector<int32_t> ids, int32_t priority = 0) {
  ThreadRequest r;
  r.prompt_tokens = std::move(ids);
  r.embed = true;
  r.priority = priority;
  return r;
}

std::vector<float> embed_alone(Engine& e, const std::vector<int32_t>& ids) {
  auto h = e.submit(embed_request(ids));
  EXPECT_TRUE(h.is_ok()) << h.status().to_string();
  if (!h.is_ok()) return {};
  const ThreadResult& r = h->wait();
  EXPECT_EQ(r.finish_reason, FinishReason::kStop) << r.error;
  EXPECT_EQ(r.usage.prompt_tokens, static_cast<int32_t>(ids.size()));
  EXPECT_EQ(r.usage.completion_tokens, 0);
  EXPECT_TRUE(r.tokens.empty());
  return r.embedding;
}

std::vector<std::vector<int32_t>> bert_prompts(const json& ref) {
  std::vector<std::vector<int32_t>> out;
  for (const json& p : ref["prompts"])
    out.push_back(p["prompt_token_ids"].get<std::vector<int32_t>>());
  return out;
}

TEST(EmbedThreads, BertMatchesLlamaCppAloneAndBatched) {
  LLMT_REQUIRE_DATA(kBert);
  LLMT_REQUIRE_DATA(kBertRef);
  const json ref = json::parse(test::read_file(test::data_path(kBertRef)));
  const auto prompts = bert_prompts(ref);
  ASSERT_GE(prompts.size(), 3u);
  auto eng = make_engine(kBert);
  ASSERT_TRUE(eng);
  const int32_t n_embd = eng->model().hparams().n_embd;

  // Alone, one at a time.
  std::vector<std::vector<float>> alone;
  for (const auto& ids : prompts) alone.push_back(embed_alone(*eng, ids));

  // The model layer's own single-sequence embed().
  ContextOptions co;
  co.n_threads = 1;
  auto ctx = Context::create(eng->model_ptr(), co);
  ASSERT_TRUE(ctx.is_ok()) << ctx.status().to_string();

  for (size_t i = 0; i < prompts.size(); ++i) {
    SCOPED_TRACE("prompt " + std::to_string(i));
    ASSERT_EQ(alone[i].size(), static_cast<size_t>(n_embd));
    const double c =
        cosine(alone[i], ref["prompts"][i]["pooled_embedding"].get<std::vector<double>>());
    EXPECT_GE(c, 0.9999);
    auto direct = (*ctx)->embed(prompts[i]);
    ASSERT_TRUE(direct.is_ok());
    EXPECT_EQ(*direct, alone[i]);
    // The text tokenizes to the reference ids (so a text prompt gives the same vector).
    ThreadRequest tr;
    tr.prompt = ref["prompts"][i]["text"].get<std::string>();
    tr.embed = true;
    auto h = eng->submit(std::move(tr));
    ASSERT_TRUE(h.is_ok());
    EXPECT_EQ(h->wait().embedding, alone[i]);
  }

  // Together: all submitted before the loop can take them, several times over, mixed
  // priorities; each thread's vector is bitwise its alone vector.
  const int64_t steps_before = eng->stats().n_steps;
  std::vector<ThreadHandle> hs;
  std::vector<size_t> which;
  for (int rep = 0; rep < 4; ++rep) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto h = eng->submit(embed_request(prompts[i], static_cast<int32_t>((i + rep) % 3)));
      ASSERT_TRUE(h.is_ok());
      hs.push_back(*h);
      which.push_back(i);
    }
  }
  for (size_t k = 0; k < hs.size(); ++k) {
    const ThreadResult& r = hs[k].wait();
    EXPECT_EQ(r.finish_reason, FinishReason::kStop) << r.error;
    EXPECT_EQ(r.embedding, alone[which[k]]) << "thread " << k;
  }
  // Fewer passes than threads: they shared passes.
  EXPECT_LT(eng->stats().n_steps - steps_before, static_cast<int64_t>(hs.size()));
}

TEST(EmbedThreads, ContextEmbedBatchEqualsEmbed) {
  LLMT_REQUIRE_DATA(kBert);
  LLMT_REQUIRE_DATA(kBertRef);
  const json ref = json::parse(test::read_file(test::data_path(kBertRef)));
  const auto prompts = bert_prompts(ref);
  auto model = Model::load(test::data_path(kBert));
  ASSERT_TRUE(model.is_ok());
  ContextOptions co;
  co.n_threads = 2;
  auto ctx = Context::create(*model, co);
  ASSERT_TRUE(ctx.is_ok());
  std::vector<std::span<const int32_t>> seqs(prompts.begin(), prompts.end());
  for (Pooling p : {Pooling::kMean, Pooling::kCls}) {
    std::vector<std::vector<float>> out;
    ASSERT_TRUE((*ctx)->embed_batch(seqs, &out, p).is_ok());
    ASSERT_EQ(out.size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto one = (*ctx)->embed(prompts[i], p);
      ASSERT_TRUE(one.is_ok());
      EXPECT_EQ(out[i], *one) << "prompt " << i;
    }
  }
  std::vector<std::vector<float>> out;
  EXPECT_FALSE((*ctx)->embed_batch({}, &out).is_ok());
  EXPECT_FALSE((*ctx)->embed_batch(seqs, &out, Pooling::kNone).is_ok());
  const std::vector<int32_t> bad = {101, (*model)->hparams().n_vocab};
  std::vector<std::span<const int32_t>> bad_seqs = {seqs[0], bad};
  Status s = (*ctx)->embed_batch(bad_seqs, &out);
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("sequence 1"), std::string::npos) << s.message();
}

TEST(EmbedThreads, EncoderRefusesOtherThreadsAndLongPrompts) {
  LLMT_REQUIRE_DATA(kBert);
  auto eng = make_engine(kBert);
  ASSERT_TRUE(eng);
  ThreadRequest gen;
  gen.prompt = "hello";
  auto r = eng->submit(gen);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("encoder"), std::string::npos) << r.status().message();
  const int32_t most = std::min(eng->config().model.n_ctx, eng->model().hparams().n_ctx_train);
  std::vector<int32_t> longest(static_cast<size_t>(most), 1037);
  longest.front() = 101;
  longest.back() = 102;
  auto ok = eng->submit(embed_request(longest));
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(ok->wait().finish_reason, FinishReason::kStop) << ok->wait().error;
  longest.push_back(102);
  auto too_long = eng->submit(embed_request(longest));
  ASSERT_FALSE(too_long.is_ok());
  EXPECT_EQ(too_long.status().field(), "prompt");
  ThreadRequest empty = embed_request({});
  empty.add_special = false;  // "" without [CLS] / [SEP]: no tokens at all
  EXPECT_FALSE(eng->submit(empty).is_ok());
}

// Mean of Context::batch_embd over every position of one sequence (fixed-slot decode()).
std::vector<float> mean_hidden(std::shared_ptr<const Model> model, const std::vector<int32_t>& ids,
                               std::vector<float>* last_logits, std::vector<float>* last_hidden) {
  ContextOptions co;
  co.n_threads = 1;
  co.kv_type = KvType::kF16;  // the engine's default
  auto ctx = Context::create(model, co);
  EXPECT_TRUE(ctx.is_ok());
  std::vector<Context::BatchEntry> batch;
  for (size_t i = 0; i < ids.size(); ++i) {
    const bool last = i + 1 == ids.size();
    batch.push_back({ids[i], 0, static_cast<int32_t>(i), last, true});
  }
  EXPECT_TRUE((*ctx)->decode(batch).is_ok());
  const size_t ne = static_cast<size_t>(model->hparams().n_embd);
  std::vector<double> acc(ne, 0.0);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto h = (*ctx)->batch_embd(static_cast<int32_t>(i));
    EXPECT_EQ(h.size(), ne);
    for (size_t j = 0; j < ne && j < h.size(); ++j) acc[j] += h[j];
  }
  EXPECT_TRUE((*ctx)->batch_embd(static_cast<int32_t>(ids.size())).empty());
  auto lg = (*ctx)->batch_logits(0);
  last_logits->assign(lg.begin(), lg.end());
  auto lh = (*ctx)->batch_embd(static_cast<int32_t>(ids.size()) - 1);
  last_hidden->assign(lh.begin(), lh.end());
  std::vector<float> out(ne);
  for (size_t j = 0; j < ne; ++j) out[j] = static_cast<float>(acc[j] / ids.size());
  return out;
}

class DecoderEmbed : public ::testing::TestWithParam<std::string> {};

TEST_P(DecoderEmbed, MeanOfHiddenStatesAloneBatchedChunkedEvicted) {
  const std::string rel = GetParam();
  LLMT_REQUIRE_DATA(rel);
  auto eng = make_engine(rel);
  ASSERT_TRUE(eng);
  const Tokenizer& tok = eng->model().tokenizer();
  const std::vector<std::string> texts = {
      "Once upon a time there was a little dog", "The quick brown fox", "Hello",
      "A much longer prompt that goes on and on, with commas, and more words than the others "
      "have, so that it spans several chunks when the step budget is small"};
  std::vector<std::vector<int32_t>> ids;
  for (const auto& t : texts) ids.push_back(tok.encode(t, TokenizeOptions{}));

  // The hidden states are the ones the logits come from: logits = output · h (row by row).
  {
    std::vector<float> logits, hidden;
    mean_hidden(eng->model_ptr(), ids[0], &logits, &hidden);
    ASSERT_FALSE(hidden.empty());
    const WeightMatrix& out = eng->model().output();
    ASSERT_TRUE(out.data);
    std::vector<float> row(static_cast<size_t>(out.row_len));
    double max_err = 0.0, max_abs = 0.0;
    // Compared through the output matrix where it is the (tied) embedding, which embed_token()
    // dequantizes (llama3's file ties them).
    if (eng->model().tied_output()) {
      for (int32_t t = 0; t < std::min<int32_t>(200, eng->model().hparams().n_vocab); ++t) {
        eng->model().embed_token(t, row.data());
        double d = 0.0;
        for (size_t j = 0; j < row.size(); ++j) d += static_cast<double>(row[j]) * hidden[j];
        max_err = std::max(max_err, std::abs(d - logits[t]));
        max_abs = std::max(max_abs, std::abs(static_cast<double>(logits[t])));
      }
      EXPECT_LT(max_err, 1e-2 * std::max(1.0, max_abs)) << "logits are not output · hidden";
    }
  }

  std::vector<std::vector<float>> alone;
  for (const auto& x : ids) {
    std::vector<float> lg, lh;
    const std::vector<float> want = mean_hidden(eng->model_ptr(), x, &lg, &lh);
    alone.push_back(embed_alone(*eng, x));
    EXPECT_EQ(alone.back(), want);
  }

  // Batched with generation threads (and each other), all submitted at once.
  std::vector<ThreadHandle> gens, embs;
  for (int i = 0; i < 3; ++i) {
    ThreadRequest g;
    g.prompt = texts[static_cast<size_t>(i)];
    g.max_tokens = 16;
    g.ignore_eos = true;
    auto h = eng->submit(std::move(g));
    ASSERT_TRUE(h.is_ok());
    gens.push_back(*h);
  }
  for (const auto& x : ids) {
    auto h = eng->submit(embed_request(x));
    ASSERT_TRUE(h.is_ok());
    embs.push_back(*h);
  }
  for (size_t i = 0; i < embs.size(); ++i) EXPECT_EQ(embs[i].wait().embedding, alone[i]);
  for (auto& g : gens) EXPECT_EQ(g.wait().finish_reason, FinishReason::kLength);

  // A small step budget: the long prompt is prefilled in several chunks.
  auto small = make_engine(rel, 8);
  ASSERT_TRUE(small);
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(embed_alone(*small, ids[i]), alone[i]);

  // A pool too small for everyone: threads are evicted (recomputed or swapped) and still give
  // the same vectors.
  EngineConfig ec;
  ec.model.path = test::data_path(rel);
  ec.compute.n_threads = 1;
  ec.sched.measure_costs = false;
  ec.sched.step_tokens = 8;
  ec.kv.block_size = 4;
  ec.sched.eviction = EvictionMethod::kRecompute;
  ec.sched.policy = SchedPolicy::kRoundRobin;
  ec.sched.quantum_tokens = 4;
  ec.sched.max_running = 4;
  const size_t per_token = eng->kv_bytes_per_token();
  ec.kv.budget_bytes = per_token * 4 * 20;  // 20 blocks of 4 tokens: evictions every few steps
  auto tight = Engine::create(ec);
  ASSERT_TRUE(tight.is_ok()) << tight.status().to_string();
  std::vector<ThreadHandle> hs, growing;
  for (int i = 0; i < 4; ++i) {
    ThreadRequest g;
    g.prompt = texts[static_cast<size_t>(i)];
    g.max_tokens = 24;
    g.ignore_eos = true;
    auto h = (*tight)->submit(std::move(g));
    ASSERT_TRUE(h.is_ok());
    growing.push_back(*h);
  }
  for (int rep = 0; rep < 3; ++rep) {
    for (size_t i = 0; i < ids.size(); ++i) {
      auto h = (*tight)->submit(embed_request(ids[i]));
      ASSERT_TRUE(h.is_ok()) << h.status().to_string();
      hs.push_back(*h);
    }
  }
  int32_t n_embed_evictions = 0;
  for (size_t k = 0; k < hs.size(); ++k) {
    const ThreadResult& r = hs[k].wait();
    EXPECT_EQ(r.finish_reason, FinishReason::kStop) << r.error;
    EXPECT_EQ(r.embedding, alone[k % ids.size()]) << "thread " << k;
    n_embed_evictions += r.timings.n_preemptions;
  }
  EXPECT_GT(n_embed_evictions, 0) << "no embedding thread was evicted mid-prompt";
  for (auto& g : growing) EXPECT_EQ(g.wait().finish_reason, FinishReason::kLength);
  EXPECT_GT((*tight)->stats().preempt_recompute, 0) << "the pool was meant to force evictions";
}

INSTANTIATE_TEST_SUITE_P(Files, DecoderEmbed, ::testing::Values(kDecoder, kGpt2),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return std::string(
                               info.param.find("gpt2") != std::string::npos ? "gpt2" : "llama3");
                         });

// A copy of the GGUF at `src` with the u32 metadata key `key` = `value` added (inserted before
// the first key, padded with a filler key so that the data section moves by a multiple of the
// alignment and every tensor offset stays valid).
std::string with_u32_key(const std::string& src, const std::string& key, uint32_t value,
                         const std::string& dst) {
  const std::string bytes = test::read_file(src);
  auto g = GgufFile::open(src);
  EXPECT_TRUE(g.is_ok());
  const size_t align = (*g)->alignment();
  auto put_u32 = [](std::string& o, uint32_t v) { o.append(reinterpret_cast<const char*>(&v), 4); };
  auto put_u64 = [](std::string& o, uint64_t v) { o.append(reinterpret_cast<const char*>(&v), 8); };
  auto put_str = [&](std::string& o, const std::string& s) {
    put_u64(o, s.size());
    o += s;
  };
  std::string kv;
  put_str(kv, key);
  put_u32(kv, 4);  // UINT32
  put_u32(kv, value);
  const std::string filler_key = "llmt.test.filler";
  const size_t fixed = kv.size() + 8 + filler_key.size() + 4 + 8;
  const size_t total = (fixed + align - 1) / align * align;
  put_str(kv, filler_key);
  put_u32(kv, 8);  // STRING
  put_str(kv, std::string(total - fixed, 'x'));
  std::string out = bytes.substr(0, 24);
  uint64_t n_kv;
  std::memcpy(&n_kv, out.data() + 16, 8);
  n_kv += 2;
  std::memcpy(out.data() + 16, &n_kv, 8);
  out += kv;
  out += bytes.substr(24);
  std::ofstream(dst, std::ios::binary) << out;
  return dst;
}

// Decoder embedding models declare their pooling: cls keeps the first position's state, last the
// last one's (Context::batch_embd), rank is refused; an unknown value fails the load.
TEST(EmbedThreads, DecoderPoolingTypeFromTheFile) {
  LLMT_REQUIRE_DATA(kDecoder);
  const std::string dir = std::filesystem::temp_directory_path().string();
  std::vector<float> logits, last_hidden;
  auto plain = Model::load(test::data_path(kDecoder));
  ASSERT_TRUE(plain.is_ok());
  const std::vector<int32_t> ids = (*plain)->tokenizer().encode("The quick brown fox, and", {});
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ((*plain)->hparams().pooling, Pooling::kNone);
  const std::vector<float> mean = mean_hidden(*plain, ids, &logits, &last_hidden);
  // The first position's state: a one-token prompt's mean.
  std::vector<float> l1, first;
  mean_hidden(*plain, {ids[0]}, &l1, &first);
  struct Case {
    uint32_t pooling;
    const std::vector<float>* want;
  };
  for (const Case& c : {Case{1, &mean}, Case{2, &first}, Case{3, &last_hidden}}) {
    SCOPED_TRACE("pooling_type " + std::to_string(c.pooling));
    const std::string path =
        with_u32_key(test::data_path(kDecoder), "llama.pooling_type", c.pooling,
                     dir + "/llmt-pooling-" + std::to_string(getpid()) + ".gguf");
    auto eng = make_engine(path);
    std::filesystem::remove(path);
    ASSERT_TRUE(eng);
    EXPECT_EQ(static_cast<uint32_t>(eng->model().hparams().pooling), c.pooling);
    EXPECT_EQ(embed_alone(*eng, ids), *c.want);
  }
  {
    const std::string path = with_u32_key(test::data_path(kDecoder), "llama.pooling_type", 4,
                                          dir + "/llmt-pooling-rank.gguf");
    auto eng = make_engine(path);
    std::filesystem::remove(path);
    ASSERT_TRUE(eng);
    auto r = eng->submit(embed_request(ids));
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
    ThreadRequest gen;  // generation still runs
    gen.prompt_tokens = ids;
    gen.max_tokens = 2;
    auto g = eng->submit(gen);
    ASSERT_TRUE(g.is_ok());
    EXPECT_EQ(g->wait().finish_reason, FinishReason::kLength);
  }
  const std::string bad = with_u32_key(test::data_path(kDecoder), "llama.pooling_type", 9,
                                       dir + "/llmt-pooling-bad.gguf");
  auto m = Model::load(bad);
  std::filesystem::remove(bad);
  ASSERT_FALSE(m.is_ok());
  EXPECT_NE(m.status().message().find("pooling_type 9"), std::string::npos);
}

TEST(EmbedThreads, RefusedCombinations) {
  LLMT_REQUIRE_DATA(kDecoder);
  auto eng = make_engine(kDecoder);
  ASSERT_TRUE(eng);
  ThreadRequest r = embed_request({1, 2, 3});
  r.score_tokens = {4};
  EXPECT_FALSE(eng->submit(r).is_ok());
  ThreadRequest g = embed_request({1, 2, 3});
  auto gr = Grammar::parse("root ::= \"a\"");
  ASSERT_TRUE(gr.is_ok()) << gr.status().to_string();
  g.grammar = *gr;
  EXPECT_FALSE(eng->submit(g).is_ok());
  std::vector<int32_t> too_long(static_cast<size_t>(eng->config().model.n_ctx), 1);
  auto t = eng->submit(embed_request(too_long));
  ASSERT_FALSE(t.is_ok());
  EXPECT_EQ(t.status().field(), "prompt");
}

}  // namespace
}  // namespace llmt
