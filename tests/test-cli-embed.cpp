// `llmthreads run --task embed` as a user runs it: one {"embedding": [...]} result per document,
// unit length by default and in the direction of llama.cpp's pooled vector (bert); a document
// longer than the model takes is a context_overflow error line unless --split cuts it into
// pieces (then their token-weighted mean); --embd-normalize -1 gives the engine's raw vector; a
// decoder model embeds too; merges other than mean and an encoder asked to generate are fatal.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "test-util.h"

namespace llmt {
namespace {

using nlohmann::json;
using test::data_path;

constexpr const char* kBert = "models/arch/synth-bert-f16.gguf";
constexpr const char* kBertRef = "reference/arch/synth-bert-f16.json";
constexpr const char* kStories = "models/stories260K.gguf";

std::filesystem::path temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() /
           ("llmt-cli-embed-" + name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

std::vector<json> output_lines(const std::string& path) {
  std::vector<json> out;
  std::istringstream in(test::read_file(path));
  std::string l;
  while (std::getline(in, l)) out.push_back(json::parse(l));
  return out;
}

using test::run_cli;

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

TEST(CliEmbed, BertDocumentsLongOnesAndNormalization) {
  LLMT_REQUIRE_DATA(kBert);
  LLMT_REQUIRE_DATA(kBertRef);
  const json ref = json::parse(test::read_file(data_path(kBertRef)));
  const auto dir = temp_dir("bert");
  const std::string in = (dir / "in.jsonl").string();
  std::string long_text;
  for (int i = 0; i < 700; ++i) long_text += (i ? " word" : "word") + std::to_string(i % 7);
  const size_t n_ref = ref["prompts"].size();
  {
    std::ofstream f(in);
    for (size_t i = 0; i < n_ref; ++i) {
      f << json{{"id", i}, {"text", ref["prompts"][i]["text"]}}.dump() << "\n";
    }
    f << json{{"id", "long"}, {"text", long_text}}.dump() << "\n";
  }
  auto run = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> args = {
        "run", "-m", data_path(kBert), "--task", "embed",      "-i",  in,
        "-o",  out,  "--threads",      "2",      "--progress", "none"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(args);
  };

  // Default: unit vectors; the long document is an error line (exit 2).
  const std::string out = (dir / "out.jsonl").string();
  auto r = run(out, {});
  EXPECT_EQ(r.exit_code, 2) << r.out;
  auto lines = output_lines(out);
  ASSERT_EQ(lines.size(), n_ref + 1) << test::read_file(out);
  std::vector<std::vector<float>> unit;
  for (size_t i = 0; i < n_ref; ++i) {
    SCOPED_TRACE("document " + std::to_string(i));
    ASSERT_TRUE(lines[i]["error"].is_null()) << lines[i];
    EXPECT_EQ(lines[i]["id"], i);
    const auto v = lines[i]["result"]["embedding"].get<std::vector<float>>();
    ASSERT_EQ(v.size(), 128u);
    EXPECT_NEAR(norm2(v), 1.0, 1e-5);
    EXPECT_GE(cosine(v, ref["prompts"][i]["pooled_embedding"].get<std::vector<double>>()), 0.9999);
    unit.push_back(v);
  }
  EXPECT_EQ(lines[n_ref]["error"]["code"], "context_overflow") << lines[n_ref];
  EXPECT_NE(lines[n_ref]["error"]["message"].get<std::string>().find("prompt"), std::string::npos);

  // --split window:N: the long document in pieces, one unit vector; the short ones (one window
  // each) unchanged.
  const std::string out_split = (dir / "split.jsonl").string();
  r = run(out_split, {"--split", "window:400:20"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  lines = output_lines(out_split);
  ASSERT_EQ(lines.size(), n_ref + 1);
  for (size_t i = 0; i < n_ref; ++i) {
    EXPECT_EQ(lines[i]["result"]["embedding"].get<std::vector<float>>(), unit[i]);
  }
  ASSERT_TRUE(lines[n_ref]["error"].is_null()) << lines[n_ref];
  EXPECT_GT(lines[n_ref]["result"]["n_pieces"].get<int>(), 1);
  EXPECT_NEAR(norm2(lines[n_ref]["result"]["embedding"].get<std::vector<float>>()), 1.0, 1e-5);

  // --embd-normalize -1: the raw pooled vector (llama.cpp's values, not unit length).
  const std::string out_raw = (dir / "raw.jsonl").string();
  r = run(out_raw, {"--embd-normalize", "-1"});
  EXPECT_EQ(r.exit_code, 2) << r.out;
  lines = output_lines(out_raw);
  ASSERT_EQ(lines.size(), n_ref + 1);
  const auto raw0 = lines[0]["result"]["embedding"].get<std::vector<float>>();
  const auto want0 = ref["prompts"][0]["pooled_embedding"].get<std::vector<double>>();
  double want_norm = 0.0;
  for (double x : want0) want_norm += x * x;
  EXPECT_NEAR(norm2(raw0), std::sqrt(want_norm), 1e-2 * std::sqrt(want_norm));
  EXPECT_GE(cosine(raw0, want0), 0.9999);

  // Fatal: a merge that does not fit, and generation on an encoder.
  auto bad = run((dir / "bad.jsonl").string(), {"--merge", "concat"});
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_NE(bad.out.find("embed"), std::string::npos) << bad.out;
  auto gen = run_cli({"run", "-m", data_path(kBert), "--task", "generate", "-i", in, "-o",
                      (dir / "gen.jsonl").string(), "--progress", "none"});
  EXPECT_EQ(gen.exit_code, 1) << gen.out;
  EXPECT_NE(gen.out.find("encoder"), std::string::npos) << gen.out;
  std::filesystem::remove_all(dir);
}

TEST(CliEmbed, DecoderModel) {
  LLMT_REQUIRE_DATA(kStories);
  const auto dir = temp_dir("decoder");
  const std::string in = (dir / "in.jsonl").string(), out = (dir / "out.jsonl").string();
  {
    std::ofstream f(in);
    f << R"({"id": "a", "text": "Once upon a time there was a cat."})"
      << "\n";
    f << R"({"id": "b", "text": "The dog ran home."})"
      << "\n";
    f << R"({"id": "c", "text": "Once upon a time there was a cat."})"
      << "\n";
  }
  auto r = run_cli({"run", "-m", data_path(kStories), "--task", "embed", "-i", in, "-o", out,
                    "--progress", "none"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  const auto lines = output_lines(out);
  ASSERT_EQ(lines.size(), 3u);
  const auto a = lines[0]["result"]["embedding"].get<std::vector<float>>();
  const auto b = lines[1]["result"]["embedding"].get<std::vector<float>>();
  const auto c = lines[2]["result"]["embedding"].get<std::vector<float>>();
  EXPECT_EQ(a.size(), 64u);  // stories260K's n_embd
  EXPECT_NEAR(norm2(a), 1.0, 1e-5);
  EXPECT_EQ(a, c);  // same text, same vector
  EXPECT_NE(a, b);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace llmt
