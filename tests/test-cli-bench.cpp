// `llmthreads bench` run as a user would run it, on the tiny stories260K model with small sizes
// so the whole suite takes a few seconds: the JSON names and shape, positive figures, and
// median within [min, max]; bad flags exit non-zero with a clear message.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "test-util.h"

namespace llmt {
namespace {

using nlohmann::json;
using test::cli_path;
using test::data_path;
using test::run_command;
using test::shell_quote;

constexpr const char* kModel = "models/stories260K.gguf";

std::string bench_cmd(const std::string& args) {
  return cli_path() + " bench -m " + shell_quote(data_path(kModel)) + " --threads 2 " + args +
         " 2>/dev/null";
}

// A {median, min, max} object with positive values and min <= median <= max.
void expect_stats(const json& s, const std::string& what) {
  ASSERT_TRUE(s.is_object()) << what;
  for (const char* k : {"median", "min", "max"}) {
    ASSERT_TRUE(s.contains(k) && s[k].is_number()) << what << "." << k;
    EXPECT_GT(s[k].get<double>(), 0.0) << what << "." << k;
  }
  EXPECT_LE(s["min"].get<double>(), s["median"].get<double>()) << what;
  EXPECT_LE(s["median"].get<double>(), s["max"].get<double>()) << what;
}

TEST(CliBench, PpTgKernelsBandwidth) {
  LLMT_REQUIRE_DATA(kModel);
  const auto r = run_command(
      bench_cmd("--pp 16 --tg 8 -r 2 --kernels --kernel-tokens 1,4 --kernel-types f32,q4_K "
                "--kernel-k 256 --kernel-n 128 --bandwidth --bandwidth-mb 16"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["threads"], 2);
  EXPECT_TRUE(j["model"].get<std::string>().ends_with("stories260K.gguf"));
  EXPECT_GT(j["model_bytes"].get<double>(), 0.0);
  EXPECT_GT(j["bandwidth_gbs"].get<double>(), 0.0);
  EXPECT_EQ(j["kv_type"], "f32");

  EXPECT_EQ(j["pp"]["n_prompt"], 16);
  expect_stats(j["pp"]["tok_s"], "pp.tok_s");
  EXPECT_EQ(j["pp"]["tok_s"]["n"], 2);
  EXPECT_EQ(j["tg"]["n_gen"], 8);
  expect_stats(j["tg"]["tok_s"], "tg.tok_s");
  EXPECT_GT(j["tg"]["fraction_of_bandwidth_limit"].get<double>(), 0.0);
  EXPECT_FALSE(j.contains("batched"));  // only with --npl

  ASSERT_TRUE(j["kernels"].is_array());
  ASSERT_EQ(j["kernels"].size(), 4u);  // 2 types x 2 token counts
  const std::string types[] = {"f32", "f32", "q4_K", "q4_K"};
  const int tokens[] = {1, 4, 1, 4};
  for (size_t i = 0; i < 4; ++i) {
    const json& k = j["kernels"][i];
    EXPECT_EQ(k["type"], types[i]);
    EXPECT_EQ(k["n_tokens"], tokens[i]);
    EXPECT_EQ(k["n_rows"], 128);
    EXPECT_EQ(k["row_len"], 256);
    for (const char* f : {"gbs", "gops", "fraction_of_limit"}) {
      ASSERT_TRUE(k[f].is_number()) << f;
      EXPECT_GT(k[f].get<double>(), 0.0) << f;
    }
    expect_stats(k["gbs_stats"], "kernels.gbs_stats");
    EXPECT_TRUE(k["compute_bound"].is_boolean());
    // The scaled-int8 fraction is reported for quantized weights only, against a measured peak.
    if (types[i] == "q4_K") {
      ASSERT_TRUE(k["fraction_of_scaled_int8_peak"].is_number());
      EXPECT_NEAR(k["fraction_of_scaled_int8_peak"].get<double>(),
                  k["gops"].get<double>() / j["compute_peak"]["int8_scaled_gops"].get<double>(),
                  1e-9);
    } else {
      EXPECT_FALSE(k.contains("fraction_of_scaled_int8_peak"));
    }
  }
  // Both int8 ceilings are measured (their ratio is not asserted: sanitizer builds time the
  // intrinsic loop and the asm loop differently).
  const json& peak = j["compute_peak"];
  ASSERT_TRUE(peak["int8_gops"].is_number() && peak["int8_scaled_gops"].is_number());
  EXPECT_GT(peak["int8_gops"].get<double>(), 0.0);
  EXPECT_GT(peak["int8_scaled_gops"].get<double>(), 0.0);
}

TEST(CliBench, Batched) {
  LLMT_REQUIRE_DATA(kModel);
  const auto r = run_command(bench_cmd("--npl 1,3 --npp 8 --ntg 4 -r 2"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const json j = json::parse(r.out);
  EXPECT_FALSE(j.contains("pp"));  // a selection flag turns off the default set
  EXPECT_FALSE(j.contains("kernels"));
  ASSERT_TRUE(j["batched"].is_array());
  ASSERT_EQ(j["batched"].size(), 2u);
  EXPECT_EQ(j["batched"][0]["npl"], 1);
  EXPECT_EQ(j["batched"][1]["npl"], 3);
  for (const json& b : j["batched"]) {
    EXPECT_EQ(b["npp"], 8);
    EXPECT_EQ(b["ntg"], 4);
    expect_stats(b["s_pp"], "batched.s_pp");
    expect_stats(b["s_tg"], "batched.s_tg");
  }
}

TEST(CliBench, BadFlagsFailClearly) {
  LLMT_REQUIRE_DATA(kModel);
  struct Case {
    const char* args;
    const char* message;  // expected in the merged output
  };
  const Case cases[] = {
      {"--kernel-types q9_9", "unknown --kernel-types entry 'q9_9'"},
      {"--npl 2,0", "--npl values must be positive"},
      {"--pp 0", "--pp"},
      {"--kv-type f8", "--kv-type"},
      {"--no-such-flag", "no-such-flag"},
      {"-r 0", "--repetitions"},
  };
  for (const Case& c : cases) {
    const auto r =
        run_command(cli_path() + " bench -m " + shell_quote(data_path(kModel)) + " " + c.args,
                    /*merge_stderr=*/true);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.out.find(c.message), std::string::npos) << c.args << "\n" << r.out;
  }
  const auto missing = run_command(cli_path() + " bench -m /nonexistent/model.gguf --pp 4", true);
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.out.find("not found"), std::string::npos) << missing.out;
}

}  // namespace
}  // namespace llmt
