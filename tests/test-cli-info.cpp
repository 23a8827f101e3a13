// `llmthreads info` and the model-path rules, run as a user would run them.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "test-util.h"

namespace llmt {
namespace {

using test::cli_path;
using test::data_path;
using test::run_command;
using test::shell_quote;

TEST(CliInfo, JsonOnBenchModel) {
  LLMT_REQUIRE_DATA("models/synth/synth-125m-q4_k_m.gguf");
  auto r = run_command(cli_path() + " info --json " +
                       shell_quote(data_path("models/synth/synth-125m-q4_k_m.gguf")));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["architecture"], "llama");
  EXPECT_EQ(j["hparams"]["block_count"], 12);
  EXPECT_EQ(j["hparams"]["embedding_length"], 768);
  EXPECT_EQ(j["hparams"]["attention.head_count_kv"], 4);
  EXPECT_EQ(j["tokenizer"]["model"], "llama");
  EXPECT_EQ(j["tokenizer"]["n_vocab"], 32000);
  EXPECT_EQ(j["chat_template"], false);
  EXPECT_EQ(j["n_params"], 124668672);
  bool saw_q4k = false, saw_q6k = false;
  for (const auto& t : j["tensors"]) {
    saw_q4k |= t["type"] == "q4_K";
    saw_q6k |= t["type"] == "q6_K";
    if (t["name"] == "output.weight") {
      EXPECT_EQ(t["shape"], nlohmann::json::array({768, 32000}));
      EXPECT_EQ(t["bytes"], 20160000);
    }
  }
  EXPECT_TRUE(saw_q4k && saw_q6k);
}

TEST(CliInfo, TextOnVocabOnlyFile) {
  LLMT_REQUIRE_DATA("models/vocab/ggml-vocab-gpt-2.gguf");
  auto r = run_command(cli_path() + " info " +
                       shell_quote(data_path("models/vocab/ggml-vocab-gpt-2.gguf")));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("gpt2 (pre: gpt-2), 50257 tokens"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tensors (0)"), std::string::npos) << r.out;
}

TEST(CliInfo, CorruptFileGivesOneLineError) {
  const std::string path = ::testing::TempDir() + "/not-a-model.gguf";
  {
    FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fputs("GGUF\x03\x00\x00\x00garbage", f);
    std::fclose(f);
  }
  auto r = run_command(cli_path() + " info " + shell_quote(path), /*merge_stderr=*/true);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("error: corrupt: " + path), std::string::npos) << r.out;
  std::filesystem::remove(path);
}

TEST(CliInfo, MissingModelSaysHowToPassOne) {
  auto r = run_command("LLMT_MODEL= LLMT_DATA=/nonexistent " + cli_path() + " info",
                       /*merge_stderr=*/true);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("pass one with -m"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  auto env = run_command("LLMT_MODEL=/nonexistent/m.gguf " + cli_path() + " info",
                         /*merge_stderr=*/true);
  EXPECT_NE(env.exit_code, 0);
  EXPECT_NE(env.out.find("/nonexistent/m.gguf"), std::string::npos) << env.out;
  EXPECT_NE(env.out.find("$LLMT_MODEL"), std::string::npos) << env.out;
}

TEST(CliInfo, UnknownCommand) {
  auto r = run_command(cli_path() + " frobnicate", /*merge_stderr=*/true);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("unknown command 'frobnicate'"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace llmt
