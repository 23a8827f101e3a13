// Golden tests: our forward pass against llama.cpp's outputs (reference/llamacpp/<stem>.json) for
// every model file that has one, and against the independent double-precision references
// (reference/fp64/). See reference/README.md for the comparison rules implemented here:
//   - prompt token ids exact;
//   - per prompt position, NMSE of our logits at the reference's top-10 ids < 1e-4 (F32, F16,
//     BF16, Q8_0 weights) or < 1e-3 (2-6 bit weights);
//   - our top-1 equals the reference top-1 where the reference top-1/top-2 logit gap > 0.05;
//   - greedy tokens exact up to the first step whose reference top-1/top-2 probability margin is
//     below 0.01.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llmthreads/model.h"
#include "llmthreads/tokenizer.h"
#include "test-util.h"
#include "tier-util.h"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Stems of reference/llamacpp/*.json, sorted. Empty when the data folder is absent.
std::vector<std::string> reference_stems() {
  std::vector<std::string> stems;
  const fs::path dir = llmt::test::data_path("reference/llamacpp");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".json") stems.push_back(e.path().stem().string());
  }
  std::sort(stems.begin(), stems.end());
  if (stems.empty()) stems.push_back("stories260K");  // reported as skipped / missing data
  return stems;
}

// models/<stem>.gguf or models/synth/<stem>.gguf; "" when neither exists.
std::string model_for_stem(const std::string& stem) {
  for (const char* sub : {"models/", "models/synth/"}) {
    const std::string p = llmt::test::data_path(std::string(sub) + stem + ".gguf");
    if (fs::exists(p)) return p;
  }
  return "";
}

bool high_precision(llmt::TensorType t) {
  using llmt::TensorType;
  return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16 ||
         t == TensorType::Q8_0;
}

bool all_high_precision(const llmt::Model& m) {
  bool ok = high_precision(m.token_embd().type) && high_precision(m.output().type);
  for (const auto* w : m.matrices()) ok = ok && high_precision(w->type);
  return ok;
}

// True when some matmul quantizes its activations (every format but F32/F16/BF16): then our
// logits and llama.cpp's differ by rounding noise of a few 1e-2 (measured: max |dlogit| ~0.05 on
// logits ~10 for synth-tiny-q8_0), so a reference top-1/top-2 gap a little above 0.05 can swap.
bool quantized_activations(const llmt::Model& m) {
  using llmt::TensorType;
  auto q = [](TensorType t) {
    return t != TensorType::F32 && t != TensorType::F16 && t != TensorType::BF16;
  };
  bool any = q(m.output().type);
  for (const auto* w : m.matrices()) any = any || q(w->type);
  return any;
}

// README rules.
constexpr double kTop1Gap = 0.05;       // check top-1 where the reference gap exceeds this
constexpr double kGreedyMargin = 0.01;  // compare greedy steps until a margin below this
// Allowances for quantized-activation formats (documented deviations from the README rules).
// Rounding of quantized activations makes the logits of these random-weight models jitter: our
// own scalar and AVX2 kernels (same math, different float summation order) differ from each
// other by NMSE ~2e-4 on synth-125m-q4_k_m, more than we differ from llama.cpp. So a top-1 swap
// is accepted when our top-1 is the reference's 2nd or 3rd and the reference gap is below
// kQuantTop1NoiseFactor times the RMS logit error measured at that very position; a greedy
// divergence is accepted when the reference margin is below kQuantGreedyMargin. Both are
// reported in the table.
constexpr double kQuantTop1NoiseFactor = 5.0;
constexpr double kQuantGreedyMargin = 0.1;

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

struct Row {
  int n_prompts = 0;
  int ids_ok = 0;
  double max_nmse = 0.0;
  double tol = 0.0;
  int top1_checked = 0;
  int top1_ok = 0;
  int greedy_matched = 0;
  int greedy_total = 0;
  double worst_top1_gap = 0.0;       // largest reference gap among top-1 swaps (0: none)
  double worst_swap_ratio = 0.0;     // largest gap / local RMS logit error among swaps
  double worst_greedy_margin = 0.0;  // reference margin where greedy diverged (0: never)
  double seconds = 0.0;
};

// Collects one row per model and prints the table when the test program ends.
class GoldenTable : public ::testing::Environment {
 public:
  static GoldenTable* instance() {
    static GoldenTable* table = [] {
      auto* t = new GoldenTable();
      ::testing::AddGlobalTestEnvironment(t);  // gtest owns it
      return t;
    }();
    return table;
  }
  void add(const std::string& stem, const Row& r) {
    std::lock_guard<std::mutex> lock(mu_);
    rows_[stem] = r;
  }
  void TearDown() override {
    if (rows_.empty()) return;
    std::printf("\n%-27s %7s %10s %6s %9s %9s %6s %9s %9s %6s\n", "model", "ids ok", "max NMSE",
                "tol", "top1", "swap gap", "ratio", "greedy", "div marg", "sec");
    for (const auto& [stem, r] : rows_) {
      std::printf("%-27s %3d/%-3d %10.3g %6.0e %4d/%-4d %9.3f %6.2f %4d/%-4d %9.4f %6.2f\n",
                  stem.c_str(), r.ids_ok, r.n_prompts, r.max_nmse, r.tol, r.top1_ok, r.top1_checked,
                  r.worst_top1_gap, r.worst_swap_ratio, r.greedy_matched, r.greedy_total,
                  r.worst_greedy_margin, r.seconds);
    }
    std::printf(
        "top1: positions with reference gap > 0.05 whose top-1 matched; swap gap: the\n"
        "largest reference gap among swaps; ratio: largest swap gap / local RMS logit\n"
        "error; greedy: steps matched before the first\n"
        "reference margin < 0.01; div marg: reference margin where greedy diverged.\n");
  }

 private:
  std::mutex mu_;
  std::map<std::string, Row> rows_;
};

// Registered before main() so gtest calls TearDown() at the end of the run.
[[maybe_unused]] const GoldenTable* const kGoldenTable = GoldenTable::instance();

// Reference stem x CPU tier (LLMT_ISA capped at the tier; a tier this machine lacks is skipped).
class GoldenLlamaCpp
    : public ::testing::TestWithParam<std::tuple<std::string, llmt::kernels::Isa>> {};

TEST_P(GoldenLlamaCpp, MatchesReference) {
  const auto& [stem, tier] = GetParam();
  LLMT_REQUIRE_TIER(tier);
  const llmt::test::ScopedTier scoped_tier(tier);
  const std::string row_name = stem + " " + llmt::kernels::isa_name(tier);
  const std::string ref_rel = "reference/llamacpp/" + stem + ".json";
  LLMT_REQUIRE_DATA(ref_rel);
  const std::string model_path = model_for_stem(stem);
  if (model_path.empty()) {
    GTEST_SKIP() << "reference " << ref_rel << " has no model file models/" << stem
                 << ".gguf or models/synth/" << stem << ".gguf (not shipped; see MANIFEST.md)";
  }
  const auto t0 = std::chrono::steady_clock::now();
  const json ref = json::parse(llmt::test::read_file(llmt::test::data_path(ref_rel)));

  auto model_r = llmt::Model::load(model_path);
  ASSERT_TRUE(model_r.is_ok()) << model_r.status().to_string();
  auto model = *model_r;
  ASSERT_EQ(model->isa(), static_cast<int>(tier)) << "model bound another tier";
  ASSERT_EQ(model->hparams().n_vocab, ref["n_vocab"].get<int32_t>());

  size_t max_len = 0;
  for (const auto& p : ref["prompts"]) {
    max_len = std::max(max_len, p["prompt_token_ids"].size() + p["greedy_token_ids"].size());
  }
  llmt::ContextOptions copt;
  copt.n_ctx = static_cast<int32_t>(max_len + 8);
  copt.all_logits = true;
  // Tiny models run faster on one thread (per-op synchronization dominates).
  copt.n_threads = model->hparams().n_embd < 512 ? 1 : 0;
  auto ctx_r = llmt::Context::create(model, copt);
  ASSERT_TRUE(ctx_r.is_ok()) << ctx_r.status().to_string();
  auto& ctx = **ctx_r;

  Row row;
  row.tol = all_high_precision(*model) ? 1e-4 : 1e-3;
  const bool quant_act = quantized_activations(*model);
  for (size_t pi = 0; pi < ref["prompts"].size(); ++pi) {
    const json& p = ref["prompts"][pi];
    SCOPED_TRACE("prompt " + std::to_string(pi));
    const auto want_ids = p["prompt_token_ids"].get<std::vector<int32_t>>();
    const auto text = p["text"].get<std::string>();
    llmt::TokenizeOptions topt;
    topt.add_special = true;
    topt.parse_special = false;
    const auto got_ids = model->tokenizer().encode(text, topt);
    ++row.n_prompts;
    if (got_ids == want_ids) ++row.ids_ok;
    EXPECT_EQ(got_ids, want_ids) << "tokenization of prompt " << pi;

    // Logits over the reference ids (so this part is independent of the tokenizer).
    ctx.reset();
    ASSERT_TRUE(ctx.eval(want_ids).is_ok());
    const json& top10 = p["prompt_top10"];
    ASSERT_EQ(top10.size(), want_ids.size());
    for (size_t pos = 0; pos < want_ids.size(); ++pos) {
      auto lg = ctx.logits(static_cast<int32_t>(pos));
      ASSERT_EQ(lg.size(), static_cast<size_t>(model->hparams().n_vocab));
      double num = 0.0, den = 0.0;
      for (const auto& e : top10[pos]) {
        const int32_t id = e[0].get<int32_t>();
        const double r = e[1].get<double>();
        num += (lg[id] - r) * (lg[id] - r);
        den += r * r;
      }
      const double nmse = num / std::max(den, 1e-30);
      const double rms_abs = std::sqrt(num / static_cast<double>(top10[pos].size()));
      row.max_nmse = std::max(row.max_nmse, nmse);
      EXPECT_LT(nmse, row.tol) << "position " << pos;
      const double gap = top10[pos][0][1].get<double>() - top10[pos][1][1].get<double>();
      if (gap > kTop1Gap) {
        ++row.top1_checked;
        const int32_t ours = argmax(lg);
        const int32_t want = top10[pos][0][0].get<int32_t>();
        if (ours == want) {
          ++row.top1_ok;
        } else {
          row.worst_top1_gap = std::max(row.worst_top1_gap, gap);
          // Exact-activation formats must match; quantized-activation formats may swap a
          // near-tie within their measured logit noise (see kQuantTop1Gap).
          const bool in_top3 =
              ours == top10[pos][1][0].get<int32_t>() || ours == top10[pos][2][0].get<int32_t>();
          const bool allowed = quant_act && in_top3 && gap < kQuantTop1NoiseFactor * rms_abs;
          row.worst_swap_ratio = std::max(row.worst_swap_ratio, gap / rms_abs);
          EXPECT_TRUE(allowed) << "top-1 at position " << pos << ": got " << ours << ", want "
                               << want << " (reference top-1/top-2 gap " << gap
                               << ", rms logit error here " << rms_abs << ")";
        }
      }
    }

    // Greedy continuation, fed with the reference tokens.
    const auto greedy = p["greedy_token_ids"].get<std::vector<int32_t>>();
    const json& probs = p["greedy_top5_probs"];
    for (size_t s = 0; s < greedy.size(); ++s) {
      const double margin = probs[s][0][1].get<double>() - probs[s][1][1].get<double>();
      if (margin < kGreedyMargin) break;  // a near-tie: later divergence is allowed
      ++row.greedy_total;
      const int32_t ours = argmax(ctx.logits(-1));
      if (ours == greedy[s]) {
        ++row.greedy_matched;
      } else {
        row.worst_greedy_margin = std::max(row.worst_greedy_margin, margin);
        EXPECT_TRUE(quant_act && margin < kQuantGreedyMargin)
            << "greedy step " << s << ": got " << ours << ", want " << greedy[s]
            << " (reference top-1/top-2 probability margin " << margin << ")";
        break;
      }
      if (s + 1 < greedy.size()) {
        const int32_t tok = greedy[s];
        ASSERT_TRUE(ctx.eval(std::span<const int32_t>(&tok, 1)).is_ok());
      }
    }
  }
  row.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  GoldenTable::instance()->add(row_name, row);
  std::printf("[golden] %s: ids %d/%d, max NMSE %.3g (tol %.0e), top1 %d/%d, greedy %d/%d, %.2fs\n",
              row_name.c_str(), row.ids_ok, row.n_prompts, row.max_nmse, row.tol, row.top1_ok,
              row.top1_checked, row.greedy_matched, row.greedy_total, row.seconds);
}

std::string stem_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string s = info.param;
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

std::string stem_tier_name(
    const ::testing::TestParamInfo<std::tuple<std::string, llmt::kernels::Isa>>& info) {
  return stem_name({std::get<0>(info.param), info.index}) + "_" +
         llmt::kernels::isa_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Models, GoldenLlamaCpp,
                         ::testing::Combine(::testing::ValuesIn(reference_stems()),
                                            ::testing::ValuesIn(llmt::test::kTestTiers)),
                         stem_tier_name);

// stories260K: 256 greedy tokens from BOS and full logits at positions 0..3, from an independent
// double-precision forward pass.
TEST(GoldenFp64, Stories260KGreedy) {
  LLMT_REQUIRE_DATA("reference/fp64/stories260K.greedy.json");
  LLMT_REQUIRE_DATA("models/stories260K.gguf");
  const json ref = json::parse(
      llmt::test::read_file(llmt::test::data_path("reference/fp64/stories260K.greedy.json")));
  auto model_r = llmt::Model::load(llmt::test::data_path("models/stories260K.gguf"));
  ASSERT_TRUE(model_r.is_ok()) << model_r.status().to_string();
  llmt::ContextOptions one_thread;
  one_thread.n_threads = 1;
  auto ctx_r = llmt::Context::create(*model_r, one_thread);
  ASSERT_TRUE(ctx_r.is_ok()) << ctx_r.status().to_string();
  auto& ctx = **ctx_r;

  const auto want = ref["generated_tokens"].get<std::vector<int32_t>>();
  const json& first = ref["logits_at_first_positions"];
  std::vector<int32_t> all = {ref["bos_token_id"].get<int32_t>()};
  double max_abs = 0.0;
  int32_t tok = all[0];
  for (size_t s = 0; s < want.size(); ++s) {
    ASSERT_TRUE(ctx.eval(std::span<const int32_t>(&tok, 1)).is_ok());
    auto lg = ctx.logits(-1);
    if (s < first.size()) {
      const auto ref_lg = first[s]["logits"].get<std::vector<double>>();
      ASSERT_EQ(ref_lg.size(), lg.size());
      for (size_t i = 0; i < lg.size(); ++i) {
        max_abs = std::max(max_abs, std::abs(lg[i] - ref_lg[i]));
      }
    }
    const int32_t got = argmax(lg);
    ASSERT_EQ(got, want[s]) << "greedy step " << s;
    tok = got;
    all.push_back(got);
  }
  EXPECT_LT(max_abs, 1e-3) << "max |logit - fp64 reference| at positions 0..3";
  std::printf("[golden] stories260K fp64: 256/256 greedy tokens, max |dlogit| %.3g\n", max_abs);
  std::vector<int32_t> gen(all.begin() + 1, all.end());
  const std::string text = (*model_r)->tokenizer().decode(gen);
  EXPECT_EQ(text.rfind("Once upon a time, there was a little girl named Lily", 0), 0u) << text;
}

// Second llama.cpp reference (reference/llamacpp-server/, F16 KV cache there): prompt ids, the
// last prompt position's top-10 logits (NMSE < 1e-3, looser for the F16 cache), and greedy tokens
// up to the first step whose top-1/top-2 probability margin is below 0.01.
class GoldenServer : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenServer, MatchesReference) {
  const std::string stem = GetParam();
  const std::string ref_rel = "reference/llamacpp-server/" + stem + ".json";
  LLMT_REQUIRE_DATA(ref_rel);
  LLMT_REQUIRE_DATA("models/" + stem + ".gguf");
  const json ref = json::parse(llmt::test::read_file(llmt::test::data_path(ref_rel)));
  auto model_r = llmt::Model::load(llmt::test::data_path("models/" + stem + ".gguf"));
  ASSERT_TRUE(model_r.is_ok()) << model_r.status().to_string();
  auto model = *model_r;
  llmt::ContextOptions copt;
  copt.n_ctx = 1024;
  copt.n_threads = 1;
  auto ctx_r = llmt::Context::create(model, copt);
  ASSERT_TRUE(ctx_r.is_ok()) << ctx_r.status().to_string();
  auto& ctx = **ctx_r;
  int matched = 0, total = 0;
  double max_nmse = 0.0;
  for (size_t pi = 0; pi < ref["prompts"].size(); ++pi) {
    const json& p = ref["prompts"][pi];
    SCOPED_TRACE("prompt " + std::to_string(pi));
    const auto want_ids = p["prompt_token_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(model->tokenizer().encode(p["text"].get<std::string>()), want_ids);
    ctx.reset();
    ASSERT_TRUE(ctx.eval(want_ids).is_ok());
    double num = 0.0, den = 0.0;
    for (const auto& e : p["last_prompt_pos_top10"]) {
      const double r = e[1].get<double>();
      const double d = ctx.logits()[e[0].get<int32_t>()] - r;
      num += d * d;
      den += r * r;
    }
    max_nmse = std::max(max_nmse, num / den);
    EXPECT_LT(num / den, 1e-3);
    const auto greedy = p["greedy_token_ids"].get<std::vector<int32_t>>();
    const json& probs = p["top_probs"];
    for (size_t s = 0; s < greedy.size() && s < probs.size(); ++s) {
      if (probs[s][0][1].get<double>() - probs[s][1][1].get<double>() < kGreedyMargin) break;
      ++total;
      const int32_t ours = argmax(ctx.logits());
      ASSERT_EQ(ours, greedy[s]) << "greedy step " << s;
      ++matched;
      const int32_t tok = greedy[s];
      ASSERT_TRUE(ctx.eval(std::span<const int32_t>(&tok, 1)).is_ok());
    }
  }
  std::printf("[golden] %s (llamacpp-server): max NMSE %.3g, greedy %d/%d\n", stem.c_str(),
              max_nmse, matched, total);
}

INSTANTIATE_TEST_SUITE_P(Models, GoldenServer,
                         ::testing::Values("stories260K", "llama-2-tiny-random"), stem_name);

// End to end through the CLI: `llmthreads generate --temp 0 --json` from BOS reproduces the
// fp64 reference's first 64 greedy tokens, with 1 and 2 threads.
TEST(GoldenCli, GenerateGreedyStories260K) {
  LLMT_REQUIRE_DATA("reference/fp64/stories260K.greedy.json");
  LLMT_REQUIRE_DATA("models/stories260K.gguf");
  const json ref = json::parse(
      llmt::test::read_file(llmt::test::data_path("reference/fp64/stories260K.greedy.json")));
  auto want = ref["generated_tokens"].get<std::vector<int32_t>>();
  want.resize(64);
  for (int threads : {1, 2}) {
    const std::string cmd = std::string(LLMT_CLI) + " generate -m '" +
                            llmt::test::data_path("models/stories260K.gguf") +
                            "' -p '' --temp 0 -n 64 --ignore-eos --json -t " +
                            std::to_string(threads) + " 2>&1";
    FILE* pipe = popen(cmd.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string out;
    char buf[4096];
    while (size_t got = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, got);
    ASSERT_EQ(pclose(pipe), 0) << out;
    const json j = json::parse(out);
    EXPECT_EQ(j["prompt_token_ids"].get<std::vector<int32_t>>(), std::vector<int32_t>{1});
    EXPECT_EQ(j["token_ids"].get<std::vector<int32_t>>(), want) << "threads " << threads;
    // The first piece after BOS keeps its SentencePiece space (" Once").
    EXPECT_EQ(j["text"].get<std::string>().rfind(" Once upon a time, there was a little girl", 0),
              0u)
        << j["text"];
    EXPECT_EQ(j["timings"]["threads"].get<int>(), threads);
    EXPECT_EQ(j["timings"]["n_gen"].get<int>(), 64);
  }
}

// llama-2-tiny-random: top-20 logits at 5 prompt positions and 8 greedy tokens.
TEST(GoldenFp64, LlamaTinyRandomLogits) {
  LLMT_REQUIRE_DATA("reference/fp64/llama-2-tiny-random.logits.json");
  LLMT_REQUIRE_DATA("models/llama-2-tiny-random.gguf");
  const json ref = json::parse(llmt::test::read_file(
      llmt::test::data_path("reference/fp64/llama-2-tiny-random.logits.json")));
  auto model_r = llmt::Model::load(llmt::test::data_path("models/llama-2-tiny-random.gguf"));
  ASSERT_TRUE(model_r.is_ok()) << model_r.status().to_string();
  llmt::ContextOptions copt;
  copt.n_ctx = 64;
  copt.n_threads = 1;
  copt.all_logits = true;
  auto ctx_r = llmt::Context::create(*model_r, copt);
  ASSERT_TRUE(ctx_r.is_ok()) << ctx_r.status().to_string();
  auto& ctx = **ctx_r;
  const auto prompt = ref["prompt_tokens"].get<std::vector<int32_t>>();
  ASSERT_TRUE(ctx.eval(prompt).is_ok());
  double max_abs = 0.0;
  for (const auto& pos : ref["positions"]) {
    auto lg = ctx.logits(pos["position"].get<int32_t>());
    for (const auto& e : pos["top20"]) {
      max_abs = std::max(max_abs, std::abs(lg[e[0].get<int32_t>()] - e[1].get<double>()));
    }
  }
  EXPECT_LT(max_abs, 1e-4);
  // Greedy: exact while our own top-1/top-2 gap is clear of rounding noise.
  const auto want = ref["greedy_continuation"].get<std::vector<int32_t>>();
  int matched = 0;
  for (size_t s = 0; s < want.size(); ++s) {
    auto lg = ctx.logits(-1);
    std::vector<float> sorted(lg.begin(), lg.end());
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    if (sorted[0] - sorted[1] < 1e-4f) break;
    ASSERT_EQ(argmax(lg), want[s]) << "greedy step " << s;
    ++matched;
    const int32_t tok = want[s];
    ASSERT_TRUE(ctx.eval(std::span<const int32_t>(&tok, 1)).is_ok());
  }
  std::printf("[golden] llama-2-tiny-random fp64: max |dlogit| %.3g, greedy %d/%zu\n", max_abs,
              matched, want.size());
}

}  // namespace
