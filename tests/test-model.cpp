// Model loading errors and Context behaviour: batch vs token-by-token evaluation, thread-count
// invariance, context limits, bad token ids, truncate/reset, concurrent contexts on one Model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "kernels/ops.h"
#include "llmthreads/model.h"
#include "llmthreads/tokenizer.h"
#include "model/model-impl.h"  // bound layer weights (internal)
#include "test-util.h"

namespace {

namespace fs = std::filesystem;

// Minimal GGUF v3 writer for hand-made test files (metadata + F32/other tensors).
class GgufWriter {
 public:
  void kv_string(const std::string& key, const std::string& v) {
    str(key);
    u32(8);
    str(v);
    ++n_kv_;
  }
  void kv_u32(const std::string& key, uint32_t v) {
    str(key);
    u32(4);
    u32(v);
    ++n_kv_;
  }
  void kv_f32(const std::string& key, float v) {
    str(key);
    u32(6);
    uint32_t b;
    std::memcpy(&b, &v, 4);
    u32(b);
    ++n_kv_;
  }
  void kv_string_array(const std::string& key, const std::vector<std::string>& v) {
    str(key);
    u32(9);
    u32(8);
    u64(v.size());
    for (const auto& e : v) str(e);
    ++n_kv_;
  }
  void kv_f32_array(const std::string& key, const std::vector<float>& v) {
    str(key);
    u32(9);
    u32(6);
    u64(v.size());
    for (float f : v) {
      uint32_t b;
      std::memcpy(&b, &f, 4);
      u32(b);
    }
    ++n_kv_;
  }
  void kv_i32_array(const std::string& key, const std::vector<int32_t>& v) {
    str(key);
    u32(9);
    u32(5);
    u64(v.size());
    for (int32_t i : v) u32(static_cast<uint32_t>(i));
    ++n_kv_;
  }
  // A tensor of `type` with shape `shape` (ne[0] first). F32 data is filled with `values`
  // (repeated) when given, else zeros; other types are zeros.
  void tensor(const std::string& name, std::vector<int64_t> shape, uint32_t type = 0,
              std::vector<float> values = {}) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    const size_t elem = type == 1 ? 2 : 4;  // F16 or 4-byte types
    tensors_.push_back({name, std::move(shape), type, n * elem, std::move(values)});
  }
  void write(const std::string& path) const {
    std::vector<uint8_t> out;
    auto put = [&](const void* p, size_t n) {
      out.insert(out.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    };
    put("GGUF", 4);
    const uint32_t version = 3;
    put(&version, 4);
    const uint64_t n_tensors = tensors_.size();
    put(&n_tensors, 8);
    put(&n_kv_, 8);
    put(meta_.data(), meta_.size());
    uint64_t offset = 0;
    for (const auto& t : tensors_) {
      const uint64_t len = t.name.size();
      put(&len, 8);
      put(t.name.data(), len);
      const uint32_t nd = static_cast<uint32_t>(t.shape.size());
      put(&nd, 4);
      for (int64_t d : t.shape) {
        const uint64_t u = static_cast<uint64_t>(d);
        put(&u, 8);
      }
      put(&t.type, 4);
      put(&offset, 8);
      offset += (t.bytes + 31) / 32 * 32;
    }
    out.resize((out.size() + 31) / 32 * 32, 0);
    const size_t data0 = out.size();
    out.resize(out.size() + offset, 0);
    uint64_t off = 0;
    for (const auto& t : tensors_) {
      if (t.type == 0 && !t.values.empty()) {
        for (size_t i = 0; i < t.bytes / 4; ++i) {
          std::memcpy(&out[data0 + off + 4 * i], &t.values[i % t.values.size()], 4);
        }
      }
      off += (t.bytes + 31) / 32 * 32;
    }
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
  }

 private:
  struct T {
    std::string name;
    std::vector<int64_t> shape;
    uint32_t type;
    size_t bytes;
    std::vector<float> values;
  };
  void u64(uint64_t v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    meta_.insert(meta_.end(), p, p + 8);
  }
  void u32(uint32_t v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    meta_.insert(meta_.end(), p, p + 4);
  }
  void str(const std::string& s) {
    const uint64_t n = s.size();
    const auto* p = reinterpret_cast<const uint8_t*>(&n);
    meta_.insert(meta_.end(), p, p + 8);
    meta_.insert(meta_.end(), s.begin(), s.end());
  }
  std::vector<uint8_t> meta_;
  uint64_t n_kv_ = 0;
  std::vector<T> tensors_;
};

// A 1-layer llama with n_embd 8, 2 heads, 1 KV head, FFN 16, vocab 32 (no tokenizer keys), with
// optional changes applied by the caller before write().
GgufWriter tiny_llama(const std::string& arch = "llama", bool with_block_count = true) {
  GgufWriter w;
  w.kv_string("general.architecture", arch);
  if (with_block_count) w.kv_u32(arch + ".block_count", 1);
  w.kv_u32(arch + ".embedding_length", 8);
  w.kv_u32(arch + ".feed_forward_length", 16);
  w.kv_u32(arch + ".attention.head_count", 2);
  w.kv_u32(arch + ".attention.head_count_kv", 1);
  w.kv_f32(arch + ".attention.layer_norm_rms_epsilon", 1e-5f);
  w.kv_u32(arch + ".context_length", 64);
  return w;
}

void add_tensors(GgufWriter& w, const std::string& skip = "", const std::string& bad_shape = "",
                 uint32_t attn_q_type = 0) {
  auto t = [&](const std::string& name, std::vector<int64_t> shape, uint32_t type = 0) {
    if (name == skip) return;
    if (name == bad_shape) shape[0] += 1;
    w.tensor(name, shape, type);
  };
  t("token_embd.weight", {8, 32});
  t("output_norm.weight", {8});
  t("blk.0.attn_norm.weight", {8});
  t("blk.0.attn_q.weight", {8, 8}, attn_q_type);
  t("blk.0.attn_k.weight", {8, 4});
  t("blk.0.attn_v.weight", {8, 4});
  t("blk.0.attn_output.weight", {8, 8});
  t("blk.0.ffn_norm.weight", {8});
  t("blk.0.ffn_gate.weight", {8, 16});
  t("blk.0.ffn_up.weight", {8, 16});
  t("blk.0.ffn_down.weight", {16, 8});
}

// Deterministic pseudo-random values in [-scale, scale).
std::vector<float> noise(size_t n, uint32_t seed, float scale) {
  std::vector<float> v(n);
  uint32_t s = seed * 2654435761u + 12345u;
  for (auto& f : v) {
    s = s * 1664525u + 1013904223u;
    f = (static_cast<float>(s >> 8) / 16777216.0f * 2.0f - 1.0f) * scale;
  }
  return v;
}

// A complete tiny model with a 32-token SPM vocabulary and random weights. Without output.weight
// (tied to token_embd); qwen2 adds Q/K/V biases.
GgufWriter complete_tiny(const std::string& arch) {
  GgufWriter w = tiny_llama(arch);
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<int32_t> types = {2, 3, 3};
  for (int i = 0; i < 29; ++i) {
    tokens.push_back(std::string(1, static_cast<char>('a' + (i % 26))) + (i >= 26 ? "b" : ""));
    scores.push_back(-static_cast<float>(i));
    types.push_back(1);
  }
  w.kv_string("tokenizer.ggml.model", "llama");
  w.kv_string_array("tokenizer.ggml.tokens", tokens);
  w.kv_f32_array("tokenizer.ggml.scores", scores);
  w.kv_i32_array("tokenizer.ggml.token_type", types);
  w.kv_u32("tokenizer.ggml.bos_token_id", 1);
  w.kv_u32("tokenizer.ggml.eos_token_id", 2);
  w.kv_u32("tokenizer.ggml.unknown_token_id", 0);
  uint32_t seed = 1;
  auto t = [&](const std::string& name, std::vector<int64_t> shape, float scale, float base = 0) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    auto v = noise(n, seed++, scale);
    for (auto& f : v) f += base;
    w.tensor(name, shape, 0, v);
  };
  t("token_embd.weight", {8, 32}, 1.0f);
  t("output_norm.weight", {8}, 0.1f, 1.0f);
  t("blk.0.attn_norm.weight", {8}, 0.1f, 1.0f);
  t("blk.0.attn_q.weight", {8, 8}, 0.5f);
  t("blk.0.attn_k.weight", {8, 4}, 0.5f);
  t("blk.0.attn_v.weight", {8, 4}, 0.5f);
  if (arch == "qwen2") {
    t("blk.0.attn_q.bias", {8}, 0.2f);
    t("blk.0.attn_k.bias", {4}, 0.2f);
    t("blk.0.attn_v.bias", {4}, 0.2f);
  }
  t("blk.0.attn_output.weight", {8, 8}, 0.5f);
  t("blk.0.ffn_norm.weight", {8}, 0.1f, 1.0f);
  t("blk.0.ffn_gate.weight", {8, 16}, 0.5f);
  t("blk.0.ffn_up.weight", {8, 16}, 0.5f);
  t("blk.0.ffn_down.weight", {16, 8}, 0.3f);
  return w;
}

std::string temp_file(const std::string& name) {
  return (fs::temp_directory_path() /
          ("llmt-test-model-" + std::to_string(::getpid()) + "-" + name))
      .string();
}

llmt::Status load_status(GgufWriter w) {
  const std::string path = temp_file("m.gguf");
  w.write(path);
  auto r = llmt::Model::load(path);
  fs::remove(path);
  return r.status();
}

TEST(ModelLoad, UnknownArchitectureIsNamed) {
  GgufWriter w = tiny_llama("mamba");
  add_tensors(w);
  const llmt::Status st = load_status(w);
  ASSERT_FALSE(st.is_ok());
  EXPECT_EQ(st.code(), llmt::StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("mamba"), std::string::npos) << st.message();
}

TEST(ModelLoad, UnknownArchitectureListsSupported) {
  GgufWriter w = tiny_llama("mamba");
  add_tensors(w);
  const llmt::Status st = load_status(w);
  EXPECT_NE(st.message().find("supported: llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3, "
                              "gpt2, bert"),
            std::string::npos)
      << st.message();
}

// Pooling types the engine has no meaning for are refused with the value named (rank pooling,
// the classification head, is tested in test-rerank.cpp).
TEST(ModelLoad, BertUnknownPoolingIsUnsupported) {
  for (uint32_t pooling : {3u, 5u}) {
    GgufWriter w = tiny_llama("bert");
    w.kv_u32("bert.pooling_type", pooling);
    add_tensors(w);
    const llmt::Status st = load_status(w);
    ASSERT_FALSE(st.is_ok());
    EXPECT_EQ(st.code(), llmt::StatusCode::kUnsupported) << st.message();
    EXPECT_NE(st.message().find("pooling_type " + std::to_string(pooling)), std::string::npos)
        << st.message();
  }
}

TEST(ModelLoad, VocabOnlyGpt2FileIsUnsupportedArch) {
  LLMT_REQUIRE_DATA("models/vocab/ggml-vocab-gpt-2.gguf");
  auto r = llmt::Model::load(llmt::test::data_path("models/vocab/ggml-vocab-gpt-2.gguf"));
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("gpt2"), std::string::npos) << r.status().message();
}

TEST(ModelLoad, VocabOnlyLlamaFileHasNoTensors) {
  LLMT_REQUIRE_DATA("models/vocab/ggml-vocab-llama-spm.gguf");
  auto r = llmt::Model::load(llmt::test::data_path("models/vocab/ggml-vocab-llama-spm.gguf"));
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), llmt::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("token_embd.weight"), std::string::npos)
      << r.status().message();
}

TEST(ModelLoad, MissingHyperparameterIsNamed) {
  GgufWriter w = tiny_llama("llama", /*with_block_count=*/false);
  add_tensors(w);
  const llmt::Status st = load_status(w);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("llama.block_count"), std::string::npos) << st.message();
}

TEST(ModelLoad, MissingTensorIsNamed) {
  GgufWriter w = tiny_llama();
  add_tensors(w, /*skip=*/"blk.0.ffn_down.weight");
  const llmt::Status st = load_status(w);
  ASSERT_FALSE(st.is_ok());
  EXPECT_EQ(st.code(), llmt::StatusCode::kNotFound);
  EXPECT_NE(st.message().find("blk.0.ffn_down.weight"), std::string::npos) << st.message();
}

TEST(ModelLoad, WrongShapeIsNamed) {
  GgufWriter w = tiny_llama();
  add_tensors(w, "", /*bad_shape=*/"blk.0.attn_k.weight");
  const llmt::Status st = load_status(w);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("blk.0.attn_k.weight"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("[9, 4]"), std::string::npos) << st.message();
}

TEST(ModelLoad, UnsupportedTensorTypeIsNamed) {
  GgufWriter w = tiny_llama();
  add_tensors(w, "", "", /*attn_q_type=*/26);  // I32
  const llmt::Status st = load_status(w);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("blk.0.attn_q.weight"), std::string::npos) << st.message();
}

TEST(ModelLoad, MissingTokenizerIsAnError) {
  GgufWriter w = tiny_llama();
  add_tensors(w);
  const llmt::Status st = load_status(w);
  ASSERT_FALSE(st.is_ok());  // all tensors fine, but no tokenizer.* keys
  EXPECT_NE(st.message().find("tokenizer"), std::string::npos) << st.message();
}

class CompleteTiny : public ::testing::TestWithParam<std::string> {};

TEST_P(CompleteTiny, LoadsTiedAndEvaluatesConsistently) {
  const std::string path = temp_file(GetParam() + ".gguf");
  complete_tiny(GetParam()).write(path);
  auto r = llmt::Model::load(path);
  fs::remove(path);  // the mapping stays valid
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  auto model = *r;
  EXPECT_TRUE(model->tied_output());
  EXPECT_EQ(model->hparams().n_vocab, 32);
  EXPECT_EQ(model->hparams().head_dim, 4);
  EXPECT_EQ(model->hparams().rope_type,
            GetParam() == "qwen2" ? llmt::RopeType::kNeox : llmt::RopeType::kNormal);
  EXPECT_EQ(model->weights().layers[0].bq != nullptr, GetParam() == "qwen2");
  llmt::ContextOptions o;
  o.n_ctx = 16;
  o.all_logits = true;
  auto batch = llmt::Context::create(model, o);
  o.all_logits = false;
  auto single = llmt::Context::create(model, o);
  ASSERT_TRUE(batch.is_ok() && single.is_ok());
  const std::vector<int32_t> ids = {1, 5, 9, 3, 30, 7, 7, 12};
  ASSERT_TRUE((*batch)->eval(ids).is_ok());
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_TRUE((*single)->eval(std::span<const int32_t>(&ids[i], 1)).is_ok());
    auto a = (*batch)->logits(static_cast<int32_t>(i));
    auto b = (*single)->logits();
    ASSERT_EQ(a.size(), 32u);
    for (size_t j = 0; j < a.size(); ++j) {
      ASSERT_TRUE(std::isfinite(a[j]));
      EXPECT_NEAR(a[j], b[j], 1e-5f) << "position " << i << " id " << j;
    }
  }
  // Position matters (RoPE + attention): the same token at two positions gives different logits.
  auto l5 = (*batch)->logits(5);
  auto l6 = (*batch)->logits(6);
  float diff = 0;
  for (size_t j = 0; j < l5.size(); ++j) diff = std::max(diff, std::abs(l5[j] - l6[j]));
  EXPECT_GT(diff, 1e-4f);
}

INSTANTIATE_TEST_SUITE_P(Archs, CompleteTiny, ::testing::Values("llama", "qwen2"));

TEST(Ops, RopePairsNormalAndNeox) {
  const float c0 = std::cos(0.5f), s0 = std::sin(0.5f), c1 = std::cos(0.25f), s1 = std::sin(0.25f);
  const float cs[4] = {c0, s0, c1, s1};
  // One head of 6 dims, 4 rotated.
  float a[6] = {1, 2, 3, 4, 5, 6};
  llmt::ops::rope(a, 1, 6, 4, cs, /*neox=*/false);  // pairs (0,1), (2,3)
  EXPECT_FLOAT_EQ(a[0], 1 * c0 - 2 * s0);
  EXPECT_FLOAT_EQ(a[1], 1 * s0 + 2 * c0);
  EXPECT_FLOAT_EQ(a[2], 3 * c1 - 4 * s1);
  EXPECT_FLOAT_EQ(a[3], 3 * s1 + 4 * c1);
  EXPECT_EQ(a[4], 5);
  EXPECT_EQ(a[5], 6);
  float b[6] = {1, 2, 3, 4, 5, 6};
  llmt::ops::rope(b, 1, 6, 4, cs, /*neox=*/true);  // pairs (0,2), (1,3)
  EXPECT_FLOAT_EQ(b[0], 1 * c0 - 3 * s0);
  EXPECT_FLOAT_EQ(b[2], 1 * s0 + 3 * c0);
  EXPECT_FLOAT_EQ(b[1], 2 * c1 - 4 * s1);
  EXPECT_FLOAT_EQ(b[3], 2 * s1 + 4 * c1);
  EXPECT_EQ(b[4], 5);
}

TEST(Ops, NormSoftmaxSilu) {
  const float x[4] = {1, -2, 3, -4};
  const float w[4] = {1, 1, 2, 1};
  float y[4];
  llmt::ops::rms_norm(x, w, y, 4, 0.0f);
  const float r = 1.0f / std::sqrt((1 + 4 + 9 + 16) / 4.0f);
  EXPECT_FLOAT_EQ(y[0], 1 * r);
  EXPECT_FLOAT_EQ(y[2], 6 * r);
  float p[3] = {1, 2, 3};
  llmt::ops::softmax(p, 3);
  const float z = std::exp(-2.0f) + std::exp(-1.0f) + 1.0f;
  EXPECT_NEAR(p[2], 1.0f / z, 1e-7);
  EXPECT_NEAR(p[0] + p[1] + p[2], 1.0f, 1e-6);
  float g[2] = {0.0f, 2.0f};
  const float u[2] = {3.0f, 0.5f};
  llmt::ops::silu_mul(g, u, 2);
  EXPECT_FLOAT_EQ(g[0], 0.0f);
  EXPECT_NEAR(g[1], 2.0f / (1.0f + std::exp(-2.0f)) * 0.5f, 1e-6);
  const float va[19] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
  for (auto isa : {llmt::kernels::Isa::kScalar, llmt::kernels::detect_isa()}) {
    const auto& t = llmt::ops::ops_table(isa);
    EXPECT_FLOAT_EQ(t.dot(va, va, 19), 2470.0f);
    float acc[19] = {};
    t.axpy(2.0f, va, acc, 19);
    EXPECT_FLOAT_EQ(acc[18], 38.0f);
  }
}

TEST(ModelLoad, MissingFile) {
  auto r = llmt::Model::load("/nonexistent/dir/model.gguf");
  ASSERT_FALSE(r.is_ok());
}

TEST(ModelLoad, Stories260KHparams) {
  LLMT_REQUIRE_DATA("models/stories260K.gguf");
  auto r = llmt::Model::load(llmt::test::data_path("models/stories260K.gguf"));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const auto& hp = (*r)->hparams();
  EXPECT_EQ(hp.arch, "llama");
  EXPECT_EQ(hp.n_layer, 5);
  EXPECT_EQ(hp.n_embd, 64);
  EXPECT_EQ(hp.n_ff, 172);
  EXPECT_EQ(hp.n_head, 8);
  EXPECT_EQ(hp.n_head_kv, 4);
  EXPECT_EQ(hp.head_dim, 8);
  EXPECT_EQ(hp.n_rot, 8);
  EXPECT_EQ(hp.n_vocab, 512);
  EXPECT_EQ(hp.n_ctx_train, 2048);
  EXPECT_FLOAT_EQ(hp.rope_freq_base, 10000.0f);
  EXPECT_EQ(hp.rope_type, llmt::RopeType::kNormal);
  EXPECT_FALSE((*r)->tied_output());
}

class ContextTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    rel_ = GetParam();
    LLMT_REQUIRE_DATA(rel_);
    auto r = llmt::Model::load(llmt::test::data_path(rel_));
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    model_ = *r;
  }
  std::unique_ptr<llmt::Context> make(llmt::ContextOptions o) {
    auto r = llmt::Context::create(model_, o);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? std::move(*r) : nullptr;
  }
  std::vector<int32_t> prompt() const {
    return model_->tokenizer().encode("Once upon a time, there was a little dog named Max.");
  }
  std::string rel_;
  std::shared_ptr<const llmt::Model> model_;
};

float max_abs_diff(std::span<const float> a, std::span<const float> b) {
  float m = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

TEST_P(ContextTest, BatchEqualsTokenByToken) {
  const auto ids = prompt();
  ASSERT_GT(ids.size(), 8u);
  llmt::ContextOptions o;
  o.n_ctx = 64;
  o.all_logits = true;
  auto batch = make(o);
  ASSERT_TRUE(batch->eval(ids).is_ok());
  EXPECT_EQ(batch->n_past(), static_cast<int32_t>(ids.size()));
  EXPECT_EQ(batch->n_logits(), static_cast<int32_t>(ids.size()));

  o.all_logits = false;
  auto single = make(o);
  o.n_batch = 3;  // chunked prefill
  o.all_logits = true;
  auto chunked = make(o);
  ASSERT_TRUE(chunked->eval(ids).is_ok());
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_TRUE(single->eval(std::span<const int32_t>(&ids[i], 1)).is_ok());
    EXPECT_LT(max_abs_diff(batch->logits(static_cast<int32_t>(i)), single->logits()), 1e-4f)
        << "position " << i;
    EXPECT_LT(max_abs_diff(batch->logits(static_cast<int32_t>(i)),
                           chunked->logits(static_cast<int32_t>(i))),
              1e-4f)
        << "position " << i;
  }
}

TEST_P(ContextTest, ThreadCountDoesNotChangeLogits) {
  const auto ids = prompt();
  llmt::ContextOptions o;
  o.n_ctx = 64;
  o.n_threads = 1;
  auto one = make(o);
  o.n_threads = 3;
  auto three = make(o);
  ASSERT_TRUE(one->eval(ids).is_ok());
  ASSERT_TRUE(three->eval(ids).is_ok());
  EXPECT_EQ(three->n_threads(), 3);
  EXPECT_EQ(max_abs_diff(one->logits(), three->logits()), 0.0f);
}

TEST_P(ContextTest, ContextFullIsAnError) {
  llmt::ContextOptions o;
  o.n_ctx = 8;
  auto ctx = make(o);
  std::vector<int32_t> ids(8, 1);
  std::vector<int32_t> nine(9, 1);
  EXPECT_FALSE(ctx->eval(nine).is_ok());
  EXPECT_EQ(ctx->n_past(), 0);
  ASSERT_TRUE(ctx->eval(ids).is_ok());
  const int32_t one = 1;
  const llmt::Status st = ctx->eval(std::span<const int32_t>(&one, 1));
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("context full"), std::string::npos) << st.message();
  EXPECT_EQ(ctx->n_past(), 8);
  EXPECT_FALSE(ctx->logits().empty());  // the last good logits stay available
}

TEST_P(ContextTest, BadTokenIdIsAnError) {
  auto ctx = make({});
  const int32_t n_vocab = model_->hparams().n_vocab;
  for (int32_t bad : {-1, n_vocab, n_vocab + 1000}) {
    std::vector<int32_t> ids = {1, bad};
    const llmt::Status st = ctx->eval(ids);
    ASSERT_FALSE(st.is_ok());
    EXPECT_EQ(st.code(), llmt::StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find(std::to_string(bad)), std::string::npos) << st.message();
    EXPECT_EQ(ctx->n_past(), 0);
  }
  EXPECT_FALSE(ctx->eval({}).is_ok());
  EXPECT_TRUE(ctx->logits().empty());
}

TEST_P(ContextTest, TruncateAndResetReproduceLogits) {
  const auto ids = prompt();
  llmt::ContextOptions o;
  o.n_ctx = 64;
  auto ctx = make(o);
  ASSERT_TRUE(ctx->eval(ids).is_ok());
  const std::vector<float> want(ctx->logits().begin(), ctx->logits().end());
  ASSERT_TRUE(ctx->truncate(3).is_ok());
  EXPECT_TRUE(ctx->logits().empty());
  ASSERT_TRUE(ctx->eval(std::span<const int32_t>(ids).subspan(3)).is_ok());
  EXPECT_LT(max_abs_diff(ctx->logits(), want), 1e-4f);
  EXPECT_FALSE(ctx->truncate(1000).is_ok());
  EXPECT_FALSE(ctx->truncate(-1).is_ok());
  ctx->reset();
  EXPECT_EQ(ctx->n_past(), 0);
  ASSERT_TRUE(ctx->eval(ids).is_ok());
  EXPECT_LT(max_abs_diff(ctx->logits(), want), 1e-4f);
}

TEST_P(ContextTest, ContextsShareOneModelConcurrently) {
  const auto ids = prompt();
  llmt::ContextOptions o;
  o.n_ctx = 64;
  o.n_threads = 1;
  auto ref = make(o);
  ASSERT_TRUE(ref->eval(ids).is_ok());
  auto a = make(o);
  auto b = make(o);
  llmt::Status sa, sb;
  std::thread ta([&] { sa = a->eval(ids); });
  std::thread tb([&] { sb = b->eval(ids); });
  ta.join();
  tb.join();
  ASSERT_TRUE(sa.is_ok() && sb.is_ok());
  EXPECT_EQ(max_abs_diff(a->logits(), ref->logits()), 0.0f);
  EXPECT_EQ(max_abs_diff(b->logits(), ref->logits()), 0.0f);
}

TEST(ContextOptionsTest, BadOptionsAreErrors) {
  LLMT_REQUIRE_DATA("models/stories260K.gguf");
  auto r = llmt::Model::load(llmt::test::data_path("models/stories260K.gguf"));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  llmt::ContextOptions o;
  o.n_ctx = -1;
  EXPECT_FALSE(llmt::Context::create(*r, o).is_ok());
  o = {};
  o.n_batch = 0;
  EXPECT_FALSE(llmt::Context::create(*r, o).is_ok());
  o = {};
  auto c = llmt::Context::create(*r, o);
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ((*c)->n_ctx(), 2048);  // min(context_length 2048, 4096)
  EXPECT_EQ((*c)->n_seq_max(), 1);
  EXPECT_EQ((*c)->kv_type(), llmt::KvType::kF32);
  EXPECT_FALSE(llmt::Context::create(nullptr, {}).is_ok());
  for (int32_t bad : {0, -1, 4097}) {
    o = {};
    o.n_seq_max = bad;
    EXPECT_FALSE(llmt::Context::create(*r, o).is_ok()) << bad;
  }
  o = {};
  o.kv_type = static_cast<llmt::KvType>(7);
  EXPECT_FALSE(llmt::Context::create(*r, o).is_ok());
  // Default cells per sequence with many sequences: min(2048, max(256, 16384 / n_seq_max)).
  for (auto [n_seq, want] :
       {std::pair{4, 2048}, std::pair{16, 1024}, std::pair{64, 256}, std::pair{128, 256}}) {
    o = {};
    o.n_seq_max = n_seq;
    o.kv_type = llmt::KvType::kF16;
    auto cs = llmt::Context::create(*r, o);
    ASSERT_TRUE(cs.is_ok()) << cs.status().to_string();
    EXPECT_EQ((*cs)->n_ctx(), want) << n_seq;
    EXPECT_EQ((*cs)->n_seq_max(), n_seq);
    EXPECT_EQ((*cs)->kv_type(), llmt::KvType::kF16);
    EXPECT_EQ((*cs)->seq_len(n_seq - 1), 0);
    EXPECT_EQ((*cs)->seq_len(n_seq), 0);  // out of range
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ContextTest,
                         ::testing::Values("models/stories260K.gguf",
                                           "models/synth/synth-tiny-q4_k_m.gguf",
                                           "models/synth/synth-tiny-q8_0.gguf"),
                         [](const auto& info) {
                           std::string s = fs::path(info.param).stem().string();
                           for (char& c : s) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return s;
                         });

}  // namespace
