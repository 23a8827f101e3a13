// Durability of the Batches API with the real `llmthreads serve`: a server SIGKILLed mid-batch
// and restarted on the same --data-dir resumes the batch; the output file then has every
// custom_id exactly once, and the answers that were in the results log before the kill are the
// ones delivered (they were not run again).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "batch-fixture.h"
#include "server-fixture.h"
#include "test-util.h"

namespace llmt {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// A `llmthreads serve` child on an ephemeral port, stderr to `log`.
struct ServeProcess {
  pid_t pid = -1;
  int port = 0;

  ServeProcess(const std::string& data_dir, const std::string& log) {
    std::vector<std::string> args = {test::cli_path(),
                                     "serve",
                                     "-m",
                                     test::data_path(test::kServerModel),
                                     "--port",
                                     "0",
                                     "--data-dir",
                                     data_dir,
                                     "--batch-concurrency",
                                     "2",
                                     "--threads",
                                     "1",
                                     "--model-name",
                                     "stories260K"};
    pid = fork();
    if (pid == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    // Ready once it says so; the port is in its "listening on" line.
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    const std::regex listening(R"(listening on http://[^:]+:(\d+))");
    while (Clock::now() < deadline) {
      const std::string text = test::read_file(log);
      std::smatch m;
      if (text.find("ready:") != std::string::npos && std::regex_search(text, m, listening)) {
        port = std::stoi(m[1]);
        return;
      }
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        ADD_FAILURE() << "serve exited early: " << text;
        pid = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "serve did not get ready: " << test::read_file(log);
  }
  ~ServeProcess() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port);
    c->set_read_timeout(60, 0);
    return c;
  }
  // Signals the server and returns its exit status (1000 + signal when killed by one).
  int stop(int sig) {
    kill(pid, sig);
    int status = 0;
    waitpid(pid, &status, 0);
    pid = -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 1000 + WTERMSIG(status) : -1;
  }
};

// custom_id -> line of a JSONL text (complete lines only).
std::map<std::string, json> lines_by_custom_id(const std::string& text, size_t* n_lines) {
  std::map<std::string, json> out;
  *n_lines = 0;
  const size_t end = text.rfind('\n');
  if (end == std::string::npos) return out;
  for (const json& l : test::jsonl(text.substr(0, end + 1))) {
    ++*n_lines;
    out[l.value("custom_id", "")] = l;
  }
  return out;
}

TEST(ServerBatchesKill, SigkillMidBatchResumesWithEachCustomIdOnce) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("batches-kill");
  const std::string data = (dir.path / "data").string();
  const int n = 300;
  std::string in;
  for (int i = 0; i < n; ++i) {
    in += test::batch_line("r" + std::to_string(i), "/v1/completions",
                           {{"prompt", "Once upon a time"},
                            {"max_tokens", 120},
                            {"temperature", 1.0},
                            {"model", "stories260K"}});
  }
  std::string id;
  std::map<std::string, json> before;
  {
    ServeProcess p(data, (dir.path / "serve1.log").string());
    ASSERT_GT(p.port, 0);
    auto c = p.client();
    int st = 0;
    const json f = test::upload(*c, in, &st);
    ASSERT_EQ(st, 200) << f;
    const json b = test::post_json(*c, "/v1/batches",
                                   json{{"input_file_id", f["id"]},
                                        {"endpoint", "/v1/completions"},
                                        {"completion_window", "24h"}},
                                   &st);
    ASSERT_EQ(st, 200) << b;
    id = b["id"];
    const json mid = test::poll_batch(*c, id, [](const json& x) {
      return x.value("status", "") == "in_progress" && x["request_counts"]["completed"] >= 10;
    });
    ASSERT_EQ(mid["status"], "in_progress") << mid;
    EXPECT_EQ(p.stop(SIGKILL), 1000 + SIGKILL);
  }
  // What the killed server had made durable: some answers, not all.
  size_t n_before = 0;
  before = lines_by_custom_id(
      test::read_file((dir.path / "data" / "batches" / id / "results.jsonl").string()), &n_before);
  EXPECT_GT(n_before, 0u);
  EXPECT_LT(n_before, static_cast<size_t>(n)) << "the batch ended before the kill";
  EXPECT_EQ(before.size(), n_before) << "a custom_id twice in the results log";

  ServeProcess p(data, (dir.path / "serve2.log").string());
  ASSERT_GT(p.port, 0);
  auto c = p.client();
  const json b = test::wait_batch_end(*c, id, 300);
  ASSERT_EQ(b["status"], "completed") << b;
  EXPECT_EQ(b["request_counts"], (json{{"total", n}, {"completed", n}, {"failed", 0}}));
  size_t n_out = 0;
  const auto out = lines_by_custom_id(test::file_content(*c, b["output_file_id"]), &n_out);
  EXPECT_EQ(n_out, static_cast<size_t>(n));
  ASSERT_EQ(out.size(), static_cast<size_t>(n)) << "a custom_id missing or twice";
  for (int i = 0; i < n; ++i) EXPECT_TRUE(out.count("r" + std::to_string(i))) << i;
  // The answers from before the kill were kept, not recomputed (response ids are per run).
  for (const auto& [cid, line] : before) {
    ASSERT_TRUE(out.count(cid)) << cid;
    EXPECT_EQ(out.at(cid), line) << cid;
  }
  EXPECT_EQ(p.stop(SIGTERM), 0);
}

}  // namespace
}  // namespace llmt
