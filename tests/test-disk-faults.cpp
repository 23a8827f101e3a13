// Disk and file faults, with `llmthreads run` run as a user would and with the engine in
// process: an output disk that fills up, a read-only output folder, an output path that is a
// folder, and a KV swap folder that fills up. Contracts checked: a clear error naming the path and
// the OS error, a non-zero exit without abort, only complete and synced lines in the output, a
// rerun after space is freed that resumes and ends with the bytes of an uninterrupted run; a full
// swap folder never fails a thread (its KV is recomputed: same tokens), and the engine (stats)
// and the CLI (one warning) report it.
//
// A full disk is a small tmpfs when this process may mount one (root, as in CI containers);
// otherwise the file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes writes fail the same way
// (EFBIG instead of ENOSPC). Each test prints which one it used.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "llmthreads/engine.h"
#include "llmthreads/model.h"
#include "test-util.h"

namespace llmt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::data_path;
using test::lines_of;
using test::make_reviews;
using test::read_file;
using test::run_command;
using test::shell_quote;

constexpr const char* kModel = "models/stories260K.gguf";
const std::string kSrc = LLMT_SOURCE_DIR;

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("llmt-disk-" + name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  fs::create_directories(d);
  return d;
}

// A tmpfs of `bytes` mounted on `dir` (read-only with `read_only`) while this object lives;
// mounted() is false when this process may not mount (not root).
class SmallFs {
 public:
  SmallFs(const fs::path& dir, size_t bytes, bool read_only = false) : dir_(dir) {
    const std::string opts = "size=" + std::to_string(bytes);
    mounted_ = ::mount("tmpfs", dir.c_str(), "tmpfs", read_only ? MS_RDONLY : 0, opts.c_str()) == 0;
  }
  ~SmallFs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  SmallFs(const SmallFs&) = delete;
  SmallFs& operator=(const SmallFs&) = delete;
  bool mounted() const { return mounted_; }

 private:
  fs::path dir_;
  bool mounted_ = false;
};

void write_file(const fs::path& p, size_t n) {
  std::ofstream f(p, std::ios::binary);
  f << std::string(n, 'x');
}

std::string run_cmd(const std::string& in, const std::string& out,
                    const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = {"run",
                                   "-m",
                                   data_path(kModel),
                                   "--task",
                                   "generate",
                                   "--prompt",
                                   "Review: {text}\nReply:",
                                   "-n",
                                   "32",
                                   "-i",
                                   in,
                                   "-o",
                                   out,
                                   "--threads",
                                   "2",
                                   "--progress",
                                   "none"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::string s = shell_quote(test::cli_path());
  for (const auto& a : args) {
    s += ' ';
    s += shell_quote(a);
  }
  return s;
}

// The exit code is an error code (1..127), not a signal (abort, a sanitizer's SIGABRT...).
void expect_clean_failure(const test::CommandResult& r) {
  EXPECT_GE(r.exit_code, 1) << r.out;
  EXPECT_LT(r.exit_code, 128) << "killed by a signal? " << r.out;
  EXPECT_EQ(r.out.find("Abort"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("terminate called"), std::string::npos) << r.out;
}

// Every line of `partial` parses, it ends with LF and it is a prefix of `reference`.
void expect_complete_prefix(const std::string& partial, const std::string& reference) {
  ASSERT_FALSE(partial.empty());
  EXPECT_EQ(partial.back(), '\n');
  for (const auto& l : lines_of(partial)) EXPECT_TRUE(json::accept(l)) << l;
  EXPECT_LT(partial.size(), reference.size());
  EXPECT_EQ(reference.compare(0, partial.size(), partial), 0) << "not a prefix of the reference";
}

class DiskFaults : public ::testing::Test {
 protected:
  static constexpr size_t kN = 300;  // ~50 KB of output
  static void SetUpTestSuite() {
    if (!test::data_available()) return;
    dir_ = temp_dir("suite");
    in_ = make_reviews(dir_, kN);
    const std::string ref = (dir_ / "ref.jsonl").string();
    const auto r = run_command(run_cmd(in_, ref), true);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    reference_ = read_file(ref);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static inline fs::path dir_;
  static inline std::string in_;
  static inline std::string reference_;
};

TEST_F(DiskFaults, FullOutputDiskKeepsCompleteLinesAndResumesToTheSameBytes) {
  LLMT_REQUIRE_DATA(kModel);
  ASSERT_GT(reference_.size(), 40000u);
  const fs::path mnt = dir_ / "full";
  fs::create_directories(mnt);
  SmallFs tmpfs(mnt, 64 << 10);
  const std::string out = (mnt / "out.jsonl").string();
  test::CommandResult r;
  if (tmpfs.mounted()) {
    std::printf("full disk: a 64 KiB tmpfs with a 40 KB filler\n");
    write_file(mnt / "filler", 40000);
    r = run_command(run_cmd(in_, out), true);
    EXPECT_NE(r.out.find("No space left on device"), std::string::npos) << r.out;
  } else {
    std::printf("full disk: not root (cannot mount), RLIMIT_FSIZE of 24 KiB instead\n");
    r = run_command("ulimit -f 24; trap '' XFSZ; " + run_cmd(in_, out), true);
    EXPECT_NE(r.out.find("File too large"), std::string::npos) << r.out;
  }
  expect_clean_failure(r);
  EXPECT_NE(r.out.find("error: " + out), std::string::npos) << "the path is named: " << r.out;
  EXPECT_NE(r.out.find("run the same command again to resume"), std::string::npos) << r.out;
  expect_complete_prefix(read_file(out), reference_);

  // Space freed: the rerun resumes and completes to the bytes of an uninterrupted run.
  fs::remove(mnt / "filler");
  const auto again = run_command(run_cmd(in_, out), true);
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_NE(again.out.find("resuming:"), std::string::npos) << again.out;
  EXPECT_EQ(read_file(out), reference_);
}

TEST_F(DiskFaults, ReadOnlyOutputFolderIsAClearError) {
  LLMT_REQUIRE_DATA(kModel);
  const fs::path ro = dir_ / "ro";
  fs::create_directories(ro);
  SmallFs tmpfs(ro, 64 << 10, /*read_only=*/true);
  if (tmpfs.mounted()) {
    std::printf("read-only folder: a read-only tmpfs\n");
  } else {
    std::printf("read-only folder: chmod 0555 (not root)\n");
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                            fs::perms::group_exec | fs::perms::others_read |
                            fs::perms::others_exec);
  }
  const std::string out = (ro / "out.jsonl").string();
  const auto r = run_command(run_cmd(in_, out), true);
  expect_clean_failure(r);
  EXPECT_NE(r.out.find(out), std::string::npos) << r.out;
  EXPECT_TRUE(r.out.find("Read-only file system") != std::string::npos ||
              r.out.find("Permission denied") != std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(out));
  if (!tmpfs.mounted()) fs::permissions(ro, fs::perms::owner_all);
}

TEST_F(DiskFaults, OutputPathThatIsAFolderIsAClearError) {
  LLMT_REQUIRE_DATA(kModel);
  const fs::path out = dir_ / "a-folder";
  fs::create_directories(out);
  const auto r = run_command(run_cmd(in_, out.string()), true);
  expect_clean_failure(r);
  EXPECT_NE(r.out.find(out.string() + ": cannot write the output there: Is a directory"),
            std::string::npos)
      << r.out;
  EXPECT_TRUE(fs::is_empty(out));
}

// ---- the KV swap folder ----

// Threads that cannot all fit in a tiny KV pool (round-robin quanta preempt them all the time),
// swapping to disk only.
EngineConfig swapping_config(std::shared_ptr<const Model> model, const std::string& swap_dir) {
  EngineConfig c;
  c.model.model = std::move(model);
  c.compute.n_threads = 2;
  c.sched.measure_costs = false;
  c.sched.policy = SchedPolicy::kRoundRobin;
  c.sched.eviction = EvictionMethod::kSwapDisk;
  c.sched.quantum_tokens = 8;
  c.sched.max_running = 6;
  c.kv.block_size = 8;
  c.kv.swap.dir = swap_dir;
  c.kv.swap.ram_bytes = 0;
  return c;
}

std::vector<ThreadRequest> swap_requests() {
  std::vector<ThreadRequest> out;
  const char* starts[] = {"Once upon a time", "The little dog", "Lily and Tom went",
                          "One day, a big bear"};
  for (int i = 0; i < 16; ++i) {
    ThreadRequest r;
    r.prompt = starts[i % 4];
    r.max_tokens = 48;
    r.ignore_eos = true;
    r.sampling.temperature = i % 2 == 0 ? 0.0f : 0.8f;
    r.sampling.seed = 100 + i;
    out.push_back(r);
  }
  return out;
}

std::vector<ThreadResult> run_all(Engine& e, const std::vector<ThreadRequest>& reqs) {
  std::vector<ThreadHandle> hs;
  for (const auto& r : reqs) {
    auto h = e.submit(r);
    EXPECT_TRUE(h.is_ok()) << h.status().to_string();
    if (h.is_ok()) hs.push_back(*h);
  }
  std::vector<ThreadResult> out;
  for (auto& h : hs) out.push_back(h.wait());
  return out;
}

// RLIMIT_FSIZE at `bytes` for this process while the object lives (SIGXFSZ ignored).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &old_);
    old_handler_ = signal(SIGXFSZ, SIG_IGN);
    rlimit l = old_;
    l.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &l);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &old_);
    signal(SIGXFSZ, old_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit old_{};
  sighandler_t old_handler_ = SIG_DFL;
};

TEST(DiskFaultsSwap, FullSwapFolderFallsBackToRecomputeWithTheSameTokens) {
  LLMT_REQUIRE_DATA(kModel);
  auto m = Model::load(data_path(kModel));
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  const auto reqs = swap_requests();
  std::vector<ThreadResult> want;
  {
    EngineConfig c;
    c.model.model = *m;
    c.compute.n_threads = 2;
    c.sched.measure_costs = false;
    auto ref = Engine::create(c);
    ASSERT_TRUE(ref.is_ok()) << ref.status().to_string();
    want = run_all(**ref, reqs);
  }
  const fs::path dir = temp_dir("swap");
  const fs::path swap = dir / "swap";
  fs::create_directories(swap);
  auto tmpfs = std::make_unique<SmallFs>(swap, 24 << 10);  // an entry or two, then ENOSPC
  std::unique_ptr<FileSizeLimit> limit;
  if (tmpfs->mounted()) {
    std::printf("full swap folder: a 24 KiB tmpfs\n");
  } else {
    std::printf("full swap folder: not root (cannot mount), RLIMIT_FSIZE of 2 KiB instead\n");
    limit = std::make_unique<FileSizeLimit>(2048);
  }
  EngineConfig c = swapping_config(*m, swap.string());
  auto probe = Engine::create(c);
  ASSERT_TRUE(probe.is_ok()) << probe.status().to_string();
  c.kv.budget_bytes = (*probe)->kv_bytes_per_token() * 8 * 24;  // ~3 threads of 64 positions
  probe->reset();
  auto e = Engine::create(c);
  ASSERT_TRUE(e.is_ok()) << e.status().to_string();
  const auto got = run_all(**e, reqs);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].finish_reason, FinishReason::kLength) << "thread " << i;
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "thread " << i;
  }
  const EngineStats s = (*e)->stats();
  EXPECT_GT(s.swap_failures, 0);
  EXPECT_GT(s.preempt_disk, 0);
  EXPECT_NE(s.swap_last_error.find(swap.string()), std::string::npos) << s.swap_last_error;
  EXPECT_TRUE(s.swap_last_error.find("No space left on device") != std::string::npos ||
              s.swap_last_error.find("File too large") != std::string::npos)
      << s.swap_last_error;
  EXPECT_EQ(s.swap_bytes_disk, 0);  // every entry restored or dropped
  e->reset();
  limit.reset();
  tmpfs.reset();
  fs::remove_all(dir);
}

TEST_F(DiskFaults, CliWarnsOnceWhenTheSwapFolderIsFull) {
  LLMT_REQUIRE_DATA(kModel);
  const fs::path swap = dir_ / "cli-swap";
  fs::create_directories(swap);
  SmallFs tmpfs(swap, 24 << 10);
  const std::string out = (dir_ / "swap-out.jsonl").string();
  const std::vector<std::string> extra = {"--kv-budget",   "256k", "--block-size", "8",
                                          "--max-running", "16",   "--policy",     "round-robin",
                                          "--eviction",    "disk", "--swap-dir",   swap.string(),
                                          "--swap-ram",    "0"};
  if (!tmpfs.mounted()) {
    // RLIMIT_FSIZE would limit the output file as well; the engine-level test above covers the
    // failing swap writes without root.
    GTEST_SKIP() << "needs a small tmpfs for --swap-dir, and mount(2) is not permitted here (not "
                    "root); DiskFaultsSwap.FullSwapFolderFallsBackToRecomputeWithTheSameTokens "
                    "covers the engine side";
  }
  const std::string cmd = run_cmd(in_, out, extra);
  const auto r = run_command(cmd, true);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::string warn = "warning: KV swap failed";
  const size_t at = r.out.find(warn);
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(warn, at + 1), std::string::npos) << "warned more than once: " << r.out;
  EXPECT_NE(r.out.find(swap.string()), std::string::npos) << r.out;
  EXPECT_EQ(read_file(out), reference_);
}

}  // namespace
}  // namespace llmt
