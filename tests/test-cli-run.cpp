// `llmthreads run` run as a user would, on stories260K: a classify job end to end over reviews;
// error records for bad lines and exit code 2; OpenAI batch lines; the kill test (SIGKILL in the
// middle, rerun, exactly one line per record in order, equal to an uninterrupted run); SIGTERM
// exits cleanly with partial output and the rerun completes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test-util.h"

namespace llmt {
namespace {

using nlohmann::json;
using test::cli_path;
using test::data_path;
using test::lines_of;
using test::make_reviews;
using test::read_file;
using test::run_command;
using test::shell_quote;

constexpr const char* kModel = "models/stories260K.gguf";
const std::string kSrc = LLMT_SOURCE_DIR;

std::filesystem::path temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() /
           ("llmt-cli-run-" + name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

size_t count_lines(const std::string& path) {
  const std::string s = read_file(path);
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

std::string join_cmd(const std::vector<std::string>& args) {
  std::string s = shell_quote(cli_path());
  for (const auto& a : args) {
    s += ' ';
    s += shell_quote(a);
  }
  return s;
}

// Starts the CLI with `args`, stdout+stderr to `log`; returns the pid.
pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> argv;
    std::string exe = cli_path();
    argv.push_back(exe.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 1000 + WTERMSIG(status);
  return -1;
}

// Polls until the output has some lines but not all; false if the process ended first.
bool wait_partial(pid_t pid, const std::string& out, size_t n_total) {
  for (int i = 0; i < 60000; ++i) {
    const size_t n = std::filesystem::exists(out) ? count_lines(out) : 0;
    if (n > 0 && n < n_total) return true;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

std::vector<std::string> generate_args(const std::string& in, const std::string& out) {
  return {"run",
          "-m",
          data_path(kModel),
          "--task",
          "generate",
          "--prompt",
          "Review: {text}\nReply:",
          "-n",
          "64",
          "-i",
          in,
          "-o",
          out,
          "--threads",
          "2",
          "--max-running",
          "4",
          "--progress",
          "lines",
          "--progress-interval",
          "0.5"};
}

// Every line parses, ids are doc0..doc{n-1} in order.
void expect_in_order(const std::string& path, size_t n) {
  const auto lines = lines_of(read_file(path));
  ASSERT_EQ(lines.size(), n);
  for (size_t i = 0; i < n; ++i) {
    const json j = json::parse(lines[i]);
    ASSERT_EQ(j["id"], "doc" + std::to_string(i)) << "line " << i;
    ASSERT_TRUE(j["error"].is_null()) << lines[i];
  }
}

class CliRunResume : public ::testing::Test {
 protected:
  static constexpr size_t kN = 1200;
  static void SetUpTestSuite() {
    if (!test::data_available()) return;
    dir_ = temp_dir("resume");
    in_ = make_reviews(dir_, kN);
    const std::string ref = (dir_ / "ref.jsonl").string();
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = run_command(join_cmd(generate_args(in_, ref)), true);
    ref_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_EQ(r.exit_code, 0) << r.out;
    reference_ = read_file(ref);
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  static inline std::filesystem::path dir_;
  static inline std::string in_;
  static inline std::string reference_;
  static inline double ref_seconds_ = 0;
};

TEST_F(CliRunResume, KillDashNineThenResume) {
  LLMT_REQUIRE_DATA(kModel);
  ASSERT_FALSE(reference_.empty());
  expect_in_order((dir_ / "ref.jsonl").string(), kN);
  const std::string out = (dir_ / "kill.jsonl").string();
  const auto args = generate_args(in_, out);
  // Kill at a few different points; each rerun resumes where the file is.
  for (int round = 0; round < 2; ++round) {
    const pid_t pid = spawn(args, (dir_ / "kill.log").string());
    const bool partial = wait_partial(pid, out, kN);
    kill(pid, SIGKILL);
    EXPECT_EQ(wait_exit(pid), 1000 + SIGKILL);
    if (round == 0) {
      ASSERT_TRUE(partial) << "the job ended before it could be killed";
    }
    if (!partial) break;  // the rest was done before the second kill: still checked below
    const size_t n = count_lines(out);
    EXPECT_LT(n, kN) << "round " << round;
  }
  const auto r = run_command(join_cmd(args), true);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  expect_in_order(out, kN);
  EXPECT_EQ(read_file(out), reference_) << "resumed output differs from an uninterrupted run";
}

TEST_F(CliRunResume, SigtermExitsCleanlyThenResume) {
  LLMT_REQUIRE_DATA(kModel);
  ASSERT_FALSE(reference_.empty());
  const std::string out = (dir_ / "term.jsonl").string();
  const std::string log = (dir_ / "term.log").string();
  const auto args = generate_args(in_, out);
  const pid_t pid = spawn(args, log);
  ASSERT_TRUE(wait_partial(pid, out, kN)) << "the job ended before it could be stopped";
  kill(pid, SIGTERM);
  EXPECT_EQ(wait_exit(pid), 128 + SIGTERM) << read_file(log);
  const std::string msg = read_file(log);
  EXPECT_NE(msg.find("run the same command again to resume"), std::string::npos) << msg;
  // Complete lines only, a prefix of the reference.
  const std::string partial = read_file(out);
  ASSERT_FALSE(partial.empty());
  EXPECT_EQ(partial.back(), '\n');
  EXPECT_LT(count_lines(out), kN);
  EXPECT_EQ(reference_.compare(0, partial.size(), partial), 0);

  const auto r = run_command(join_cmd(args), true);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("resuming:"), std::string::npos) << r.out;
  EXPECT_EQ(read_file(out), reference_);
  // Once complete, running again changes nothing.
  const auto again = run_command(join_cmd(args), true);
  EXPECT_EQ(again.exit_code, 0) << again.out;
  EXPECT_NE(again.out.find("already complete"), std::string::npos) << again.out;
  EXPECT_EQ(read_file(out), reference_);
}

TEST(CliRun, ClassifyReviews) {
  LLMT_REQUIRE_DATA(kModel);
  const auto dir = temp_dir("classify");
  const auto src = lines_of(read_file(kSrc + "/examples/reviews.jsonl"));
  const std::string in = (dir / "in.jsonl").string(), out = (dir / "out.jsonl").string();
  {
    std::ofstream f(in);
    for (size_t i = 0; i < 24; ++i) f << src[i] << "\n";
  }
  const std::vector<std::string> args = {"run",
                                         "-m",
                                         data_path(kModel),
                                         "--task",
                                         "classify",
                                         "--labels",
                                         "positive,negative,neutral",
                                         "--prompt-file",
                                         kSrc + "/examples/prompts/classify-sentiment.txt",
                                         "-i",
                                         in,
                                         "-o",
                                         out,
                                         "--threads",
                                         "2",
                                         "--split",
                                         "sentence",
                                         "--merge",
                                         "mean",
                                         "--progress",
                                         "none"};
  const auto r = run_command(join_cmd(args), true);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto lines = lines_of(read_file(out));
  ASSERT_EQ(lines.size(), 24u);
  for (size_t i = 0; i < lines.size(); ++i) {
    const json j = json::parse(lines[i]);
    const json want = json::parse(src[i]);
    EXPECT_EQ(j["id"], want["id"]);
    EXPECT_EQ(j["domain"], want["domain"]);  // extra fields pass through
    EXPECT_FALSE(j.contains("text"));
    ASSERT_TRUE(j["error"].is_null()) << lines[i];
    const json& res = j["result"];
    double sum = 0;
    for (const char* lab : {"positive", "negative", "neutral"})
      sum += res["probs"][lab].get<double>();
    EXPECT_NEAR(sum, 1.0, 1e-5);
    const std::string label = res["label"];
    EXPECT_TRUE(label == "positive" || label == "negative" || label == "neutral");
  }
  std::filesystem::remove_all(dir);
}

TEST(CliRun, BadLinesGetErrorRecords) {
  LLMT_REQUIRE_DATA(kModel);
  const auto dir = temp_dir("bad");
  const std::string in = (dir / "in.jsonl").string(), out = (dir / "out.jsonl").string();
  {
    std::ofstream f(in);
    f << R"({"id": 1, "text": "A good day."})"
      << "\n";
    f << R"({"id": 2, "text": )"
      << "\n";  // invalid JSON
    f << R"({"id": 3, "text": ""})"
      << "\n";  // empty text
    f << R"({"id": 4, "txt": "no text field"})"
      << "\n";                                                            // missing text
    f << "\n";                                                            // blank: no record
    f << R"({"id": 5, "text": ")" << std::string(3000, 'x') << " \"}\n";  // too long for ctx
    f << R"({"id": 6, "text": "The end."})"
      << "\n";
  }
  const std::vector<std::string> args = {
      "run", "-m", data_path(kModel), "--task", "generate",   "-n",  "8", "-i", in,
      "-o",  out,  "--threads",       "2",      "--progress", "none"};
  const auto r = run_command(join_cmd(args), true);
  EXPECT_EQ(r.exit_code, 2) << r.out;
  const auto lines = lines_of(read_file(out));
  ASSERT_EQ(lines.size(), 6u) << read_file(out);
  const char* codes[] = {nullptr,         "invalid_json",     "empty_text",
                         "missing_field", "context_overflow", nullptr};
  for (size_t i = 0; i < 6; ++i) {
    const json j = json::parse(lines[i]);
    if (codes[i]) {
      EXPECT_TRUE(j["result"].is_null()) << lines[i];
      EXPECT_EQ(j["error"]["code"], codes[i]) << lines[i];
    } else {
      EXPECT_TRUE(j["error"].is_null()) << lines[i];
      EXPECT_TRUE(j["result"]["text"].is_string()) << lines[i];
    }
  }
  // A bad flag is a fatal error (exit 1) with a message.
  const auto bad = run_command(join_cmd({"run", "-m", data_path(kModel), "--task", "classify", "-i",
                                         in, "-o", (dir / "x.jsonl").string()}),
                               true);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("--labels"), std::string::npos) << bad.out;
  std::filesystem::remove_all(dir);
}

TEST(CliRun, OpenAiBatchLines) {
  LLMT_REQUIRE_DATA(kModel);
  const auto dir = temp_dir("openai");
  const std::string in = (dir / "in.jsonl").string(), out = (dir / "out.jsonl").string();
  {
    std::ofstream f(in);
    f << R"({"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"model": "m1", "prompt": "Once upon a time", "max_tokens": 8}})"
      << "\n";
    f << R"({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m2", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5, "temperature": 0.7, "seed": 3}})"
      << "\n";
    f << R"({"custom_id": "c", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "n": 2}})"
      << "\n";
  }
  const std::vector<std::string> args = {
      "run",       "-m", data_path(kModel), "-i",  in, "-o", out, "--chat-template", "chatml",
      "--threads", "2",  "--progress",      "none"};
  const auto r = run_command(join_cmd(args), true);
  EXPECT_EQ(r.exit_code, 2) << r.out;  // "c" asks for n = 2
  const auto lines = lines_of(read_file(out));
  ASSERT_EQ(lines.size(), 3u);
  const json a = json::parse(lines[0]), b = json::parse(lines[1]), c = json::parse(lines[2]);
  EXPECT_EQ(a["custom_id"], "a");
  EXPECT_EQ(a["response"]["status_code"], 200);
  const json& ab = a["response"]["body"];
  EXPECT_EQ(ab["object"], "text_completion");
  EXPECT_EQ(ab["model"], "m1");
  EXPECT_TRUE(ab["created"].is_number_integer());
  EXPECT_TRUE(ab["choices"][0]["text"].is_string());
  EXPECT_EQ(ab["usage"]["completion_tokens"].get<int>(), 8);
  EXPECT_EQ(ab["usage"]["total_tokens"].get<int>(), ab["usage"]["prompt_tokens"].get<int>() + 8);
  const json& bb = b["response"]["body"];
  EXPECT_EQ(bb["object"], "chat.completion");
  EXPECT_EQ(bb["choices"][0]["message"]["role"], "assistant");
  EXPECT_TRUE(bb["choices"][0]["message"]["content"].is_string());
  EXPECT_LE(bb["usage"]["completion_tokens"].get<int>(), 5);
  EXPECT_TRUE(c["response"].is_null()) << lines[2];
  EXPECT_EQ(c["error"]["code"], "unsupported");
  std::filesystem::remove_all(dir);
}

// A resume whose options changed names them (old -> new), in one short line.
TEST(CliRun, ResumeWithChangedOptionsNamesThem) {
  LLMT_REQUIRE_DATA(kModel);
  const auto dir = temp_dir("changed");
  const std::string in = make_reviews(dir, 6), out = (dir / "out.jsonl").string();
  auto args = [&](const std::string& temp) {
    return std::vector<std::string>{"run",        "-m",        data_path(kModel),
                                    "--task",     "generate",  "-n",
                                    "4",          "--temp",    temp,
                                    "-i",         in,          "-o",
                                    out,          "--threads", "2",
                                    "--progress", "none"};
  };
  const auto first = run_command(join_cmd(args("0.7")), true);
  ASSERT_EQ(first.exit_code, 0) << first.out;
  // Cut the output to leave the job unfinished, as an interruption would.
  const auto lines = lines_of(read_file(out));
  ASSERT_EQ(lines.size(), 6u);
  std::filesystem::resize_file(out, lines[0].size() + 1);
  const auto changed = run_command(join_cmd(args("0.9")), true);
  EXPECT_EQ(changed.exit_code, 1) << changed.out;
  EXPECT_EQ(changed.out, "error: " + out +
                             " was written with --temp 0.7; this run has 0.9 (use --overwrite to "
                             "start over, or the same options)\n");
  const auto same = run_command(join_cmd(args("0.7")), true);
  EXPECT_EQ(same.exit_code, 0) << same.out;
  EXPECT_NE(same.out.find("resuming: 1 of 6"), std::string::npos) << same.out;
  std::filesystem::remove_all(dir);
}

// Records without an id are known by their 1-based input line number (blank lines count).
TEST(CliRun, RecordsWithoutIdGetTheirLineNumber) {
  LLMT_REQUIRE_DATA(kModel);
  const auto dir = temp_dir("noid");
  const std::string in = (dir / "in.jsonl").string(), out = (dir / "out.jsonl").string();
  {
    std::ofstream f(in);
    f << R"({"text": "A good day."})"
      << "\n\n";
    f << R"({"id": "x", "text": "With an id."})"
      << "\n";
    f << R"({"text": ")" << std::string(3000, 'x') << " \"}\n";  // too long for the context
    f << R"({"txt": "no text field"})"
      << "\n";
  }
  const std::vector<std::string> args = {
      "run", "-m", data_path(kModel), "--task", "generate",  "-n", "4",          "-i",  in,
      "-o",  out,  "--ctx-size",      "256",    "--threads", "2",  "--progress", "none"};
  const auto r = run_command(join_cmd(args), true);
  EXPECT_EQ(r.exit_code, 2) << r.out;
  const auto lines = lines_of(read_file(out));
  ASSERT_EQ(lines.size(), 4u);
  const json a = json::parse(lines[0]), b = json::parse(lines[1]), c = json::parse(lines[2]),
             d = json::parse(lines[3]);
  EXPECT_TRUE(a["id"].is_null());
  EXPECT_EQ(a["line"], 1);
  EXPECT_TRUE(a["error"].is_null()) << lines[0];
  EXPECT_EQ(b["id"], "x");
  EXPECT_FALSE(b.contains("line")) << lines[1];
  EXPECT_EQ(c["line"], 4);
  EXPECT_EQ(c["error"]["code"], "context_overflow") << lines[2];
  EXPECT_EQ(c["error"]["line"], 4);
  EXPECT_EQ(c["error"]["message"].get<std::string>().rfind("line 4: ", 0), 0u) << lines[2];
  EXPECT_EQ(d["line"], 5);
  EXPECT_EQ(d["error"]["code"], "missing_field");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace llmt
