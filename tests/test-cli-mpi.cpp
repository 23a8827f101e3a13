// `mpirun -n K llmthreads run` on one machine over TCP (--mca btl tcp,self), stories260K: the
// output of 1, 2 and 3 ranks (and of ranks with different thread counts) is byte for byte the
// single-process output; a rank killed with SIGKILL ends the job with the launcher naming the rank
// and host, and the rerun (with another rank count) resumes to the same bytes; Ctrl-C on mpirun
// leaves durable, complete lines that the rerun completes; empty input, a rank without documents,
// ranks that disagree on the job, an already complete output.
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
using test::read_file;
using test::run_command;
using test::shell_quote;

constexpr const char* kModel = "models/stories260K.gguf";
const std::string kSrc = LLMT_SOURCE_DIR;

std::filesystem::path temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() /
           ("llmt-cli-mpi-" + name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

size_t count_lines(const std::string& path) {
  if (!std::filesystem::exists(path)) return 0;
  const std::string s = read_file(path);
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

// n records cycling through the example reviews, ids doc0..
std::string make_reviews(const std::filesystem::path& dir, size_t n, const std::string& name) {
  std::vector<std::string> src;
  {
    std::istringstream in(read_file(kSrc + "/examples/reviews.jsonl"));
    for (std::string l; std::getline(in, l);) src.push_back(l);
  }
  const std::string path = (dir / name).string();
  std::ofstream f(path);
  for (size_t i = 0; i < n; ++i) {
    json j = json::parse(src[i % src.size()]);
    j["id"] = "doc" + std::to_string(i);
    f << j.dump() << "\n";
  }
  return path;
}

// The launcher's arguments: TCP only, as root when needed, more ranks than cores allowed, no
// binding (a rank may run several compute threads).
std::vector<std::string> mpirun_args(int n_ranks) {
  return {LLMT_MPIEXEC,
          "-n",
          std::to_string(n_ranks),
          "--oversubscribe",
          "--bind-to",
          "none",
          "--mca",
          "btl",
          "tcp,self",
          "--mca",
          "btl_tcp_if_include",
          "lo"};
}

std::string env_prefix() {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ";
}

std::string join(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args) {
    if (!s.empty()) s += ' ';
    s += shell_quote(a);
  }
  return s;
}

std::vector<std::string> cli(std::vector<std::string> args) {
  args.insert(args.begin(), cli_path());
  return args;
}

std::vector<std::string> under_mpi(int n_ranks, const std::vector<std::string>& cli_args) {
  std::vector<std::string> a = mpirun_args(n_ranks);
  a.insert(a.end(), cli_args.begin(), cli_args.end());
  return a;
}

test::CommandResult run(const std::vector<std::string>& argv) {
  return run_command(env_prefix() + join(argv), true);
}

std::vector<std::string> classify_args(const std::string& in, const std::string& out) {
  return cli({"run",
              "-m",
              data_path(kModel),
              "--task",
              "classify",
              "--labels",
              "positive,negative,neutral",
              "--prompt-file",
              kSrc + "/examples/prompts/classify-sentiment.txt",
              "--split",
              "sentence",
              "--merge",
              "mean",
              "-i",
              in,
              "-o",
              out,
              "--threads",
              "1",
              "--max-running",
              "8",
              "--progress",
              "none"});
}

std::vector<std::string> generate_args(const std::string& in, const std::string& out,
                                       const std::string& threads = "1",
                                       const std::string& max_running = "4") {
  return cli({"run", "-m", data_path(kModel), "--prompt", "Review: {text}\nReply:", "-n", "64",
              "-i", in, "-o", out, "--threads", threads, "--max-running", max_running, "--progress",
              "lines", "--progress-interval", "0.5"});
}

// Starts argv (launcher environment set, SIGINT at its default), stdout+stderr to `log`.
pid_t spawn(const std::vector<std::string>& argv, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    signal(SIGINT, SIG_DFL);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<std::string> copy = argv;
    std::vector<char*> a;
    for (auto& s : copy) a.push_back(s.data());
    a.push_back(nullptr);
    execv(a[0], a.data());
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

bool wait_partial(pid_t pid, const std::string& out, size_t n_total, size_t at_least = 1) {
  for (int i = 0; i < 30000; ++i) {
    const size_t n = count_lines(out);
    if (n >= at_least && n < n_total) return true;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

// The pid of MPI rank `rank` among the processes whose command line names `marker`; 0 if none.
pid_t find_rank(int rank, const std::string& marker) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream cmd(e.path() / "cmdline", std::ios::binary),
        env(e.path() / "environ", std::ios::binary);
    std::stringstream c, v;
    c << cmd.rdbuf();
    v << env.rdbuf();
    if (c.str().find(marker) == std::string::npos || c.str().find(cli_path()) == std::string::npos)
      continue;
    std::string vars = v.str();
    size_t pos = 0;
    while (pos < vars.size()) {
      const size_t end = vars.find('\0', pos);
      if (vars.compare(pos, (end == std::string::npos ? vars.size() : end) - pos, want) == 0)
        return static_cast<pid_t>(std::stol(name));
      if (end == std::string::npos) break;
      pos = end + 1;
    }
  }
  return 0;
}

// The host name up to its first dot (Open MPI prints short node names).
std::string hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  std::string h = buf;
  return h.substr(0, h.find('.'));
}

TEST(CliMpi, SameOutputOnOneTwoThreeRanks) {
  LLMT_REQUIRE_DATA(kModel);
  const auto dir = temp_dir("same");
  const std::string in = make_reviews(dir, 300, "in.jsonl");
  // Classify (split into sentences, mean merge) and generate.
  for (const bool classify : {true, false}) {
    auto args_for = [&](const std::string& out) {
      return classify ? classify_args(in, out) : generate_args(in, out);
    };
    const std::string ref = (dir / "ref.jsonl").string();
    std::filesystem::remove(ref);
    const auto r = run(args_for(ref));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const std::string want = read_file(ref);
    ASSERT_EQ(count_lines(ref), 300u);
    for (int k : {1, 2, 3}) {
      const std::string out = (dir / ("k" + std::to_string(k) + ".jsonl")).string();
      std::filesystem::remove(out);
      const auto m = run(under_mpi(k, args_for(out)));
      ASSERT_EQ(m.exit_code, 0) << m.out;
      EXPECT_NE(m.out.find("on " + std::to_string(k) + " ranks"), std::string::npos) << m.out;
      EXPECT_EQ(read_file(out), want) << (classify ? "classify" : "generate") << ", " << k
                                      << " ranks: output differs from the single process";
    }
  }
  // Ranks with different engines (MPMD: 2 compute threads, then 1 thread with a smaller batch),
  // on the same CPU tier: tiers round differently (src/kernels/kernels.h), so byte-identical
  // output across ranks needs one tier on all of them (LLMT_ISA caps a faster node's).
  const std::string ref = (dir / "ref.jsonl").string();  // the generate reference
  const std::string out = (dir / "hetero.jsonl").string();
  std::vector<std::string> a = mpirun_args(1);
  for (const auto& s : generate_args(in, out, "2")) a.push_back(s);
  a.push_back(":");
  for (const auto& s : std::vector<std::string>{"-n", "1"}) a.push_back(s);
  for (const auto& s : generate_args(in, out, "1", "2")) a.push_back(s);
  const auto h = run(a);
  ASSERT_EQ(h.exit_code, 0) << h.out;
  EXPECT_EQ(read_file(out), read_file(ref)) << "heterogeneous ranks";
  std::filesystem::remove_all(dir);
}

TEST(CliMpi, KilledRankIsNamedAndRerunResumes) {
  LLMT_REQUIRE_DATA(kModel);
  const auto dir = temp_dir("kill");
  constexpr size_t kN = 1500;
  const std::string in = make_reviews(dir, kN, "in.jsonl");
  const std::string ref = (dir / "ref.jsonl").string();
  const auto r = run(generate_args(in, ref));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::string out = (dir / "killed.jsonl").string();
  const std::string log = (dir / "kill.log").string();
  const pid_t pid = spawn(under_mpi(3, generate_args(in, out)), log);
  ASSERT_TRUE(wait_partial(pid, out, kN)) << "the job ended before a rank could be killed\n"
                                          << read_file(log);
  const pid_t victim = find_rank(1, out);
  ASSERT_GT(victim, 0) << "rank 1 not found";
  kill(victim, SIGKILL);
  const int code = wait_exit(pid);
  const std::string msg = read_file(log);
  EXPECT_NE(code, 0) << msg;
  EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find(hostname()), std::string::npos) << msg;
  const size_t n_partial = count_lines(out);
  EXPECT_LT(n_partial, kN);
  // Complete lines only, a prefix of the uninterrupted output.
  const std::string partial = read_file(out);
  const std::string want = read_file(ref);
  EXPECT_EQ(want.compare(0, partial.size(), partial), 0);
  // The rerun, on 2 ranks this time, resumes after the durable lines.
  const auto again = run(under_mpi(2, generate_args(in, out)));
  ASSERT_EQ(again.exit_code, 0) << again.out;
  if (n_partial > 0) {
    EXPECT_NE(again.out.find("resuming:"), std::string::npos) << again.out;
  }
  EXPECT_EQ(read_file(out), want) << "resumed output differs from an uninterrupted run";
  std::filesystem::remove_all(dir);
}

TEST(CliMpi, CtrlCOnMpirunLeavesDurableLinesThenResumes) {
  LLMT_REQUIRE_DATA(kModel);
  const auto dir = temp_dir("sigint");
  constexpr size_t kN = 1500;
  const std::string in = make_reviews(dir, kN, "in.jsonl");
  const std::string ref = (dir / "ref.jsonl").string();
  ASSERT_EQ(run(generate_args(in, ref)).exit_code, 0);
  const std::string out = (dir / "int.jsonl").string();
  const std::string log = (dir / "int.log").string();
  const pid_t pid = spawn(under_mpi(2, generate_args(in, out)), log);
  ASSERT_TRUE(wait_partial(pid, out, kN)) << read_file(log);
  kill(pid, SIGINT);
  const int code = wait_exit(pid);
  const std::string msg = read_file(log);
  EXPECT_NE(code, 0) << msg;
  EXPECT_NE(msg.find("output made durable"), std::string::npos) << msg;
  const std::string partial = read_file(out);
  const std::string want = read_file(ref);
  ASSERT_FALSE(partial.empty());
  EXPECT_EQ(partial.back(), '\n');
  EXPECT_EQ(want.compare(0, partial.size(), partial), 0);
  const auto again = run(under_mpi(3, generate_args(in, out)));
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_EQ(read_file(out), want);
  // Complete: running again does nothing, on any number of ranks.
  const auto done = run(under_mpi(2, generate_args(in, out)));
  EXPECT_EQ(done.exit_code, 0) << done.out;
  EXPECT_NE(done.out.find("already complete"), std::string::npos) << done.out;
  std::filesystem::remove_all(dir);
}

TEST(CliMpi, EmptyInputIdleRanksAndMismatchedJobs) {
  LLMT_REQUIRE_DATA(kModel);
  const auto dir = temp_dir("edge");
  // Empty input: every rank ends, an empty complete output.
  const std::string empty = (dir / "empty.jsonl").string();
  std::ofstream(empty).close();
  const std::string out0 = (dir / "out0.jsonl").string();
  const auto e = run(under_mpi(3, classify_args(empty, out0)));
  EXPECT_EQ(e.exit_code, 0) << e.out;
  EXPECT_EQ(count_lines(out0), 0u);
  // One record on three ranks: two get no document; the line equals the single-process one, and
  // a malformed line gets its error line whichever rank parses it.
  const std::string one = (dir / "one.jsonl").string();
  {
    std::ofstream f(one);
    f << R"({"id": "a", "text": "A lovely little phone."})"
      << "\n{\"id\": 2, \"text\": \n";
  }
  const std::string ref1 = (dir / "ref1.jsonl").string(), out1 = (dir / "out1.jsonl").string();
  EXPECT_EQ(run(classify_args(one, ref1)).exit_code, 2);
  const auto o = run(under_mpi(3, classify_args(one, out1)));
  EXPECT_EQ(o.exit_code, 2) << o.out;
  EXPECT_EQ(read_file(out1), read_file(ref1));
  EXPECT_EQ(count_lines(out1), 2u);
  // Ranks that run different jobs: a clear error naming the rank, nothing written.
  const std::string in = make_reviews(dir, 20, "in.jsonl");
  const std::string out2 = (dir / "out2.jsonl").string();
  std::vector<std::string> a = mpirun_args(1);
  for (const auto& s : classify_args(in, out2)) a.push_back(s);
  a.push_back(":");
  a.push_back("-n");
  a.push_back("1");
  auto other = classify_args(in, out2);
  other[7] = "positive,negative";  // --labels
  for (const auto& s : other) a.push_back(s);
  const auto m = run(a);
  EXPECT_NE(m.exit_code, 0) << m.out;
  EXPECT_NE(m.out.find("rank 1 (" + hostname()), std::string::npos) << m.out;
  EXPECT_NE(m.out.find("job parameters differ"), std::string::npos) << m.out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace llmt
