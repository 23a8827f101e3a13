// Shared helpers for tests: locating test data under LLMT_DATA.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "llmthreads/gguf.h"
#include "llmthreads/tokenizer.h"

namespace llmt::test {

// LLMT_DATA (the CMake cache variable), overridable by the LLMT_DATA environment variable.
std::string data_dir();
// data_dir() + "/" + rel.
std::string data_path(const std::string& rel);
// True when the data folder exists at all. Tests that need data call LLMT_REQUIRE_DATA(): they
// skip (with a message) only when the whole folder is absent, and fail when one file is missing.
bool data_available();
std::string read_file(const std::string& path);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout (stderr too when merge_stderr)
};
// Runs a shell command line and captures its output.
CommandResult run_command(const std::string& command_line, bool merge_stderr = false);
// Quotes one argument for /bin/sh.
std::string shell_quote(const std::string& arg);
// A model / vocab file under the data folder and the tokenizer built from it.
struct Loaded {
  std::unique_ptr<GgufFile> gguf;
  std::unique_ptr<Tokenizer> tok;
};
// Opens data_path(rel) and builds its tokenizer; a test failure (and null members) on error.
Loaded load(const std::string& rel);

// The lines of s (without their '\n').
std::vector<std::string> lines_of(const std::string& s);
// Writes dir/in.jsonl: n simple-format records cycling through examples/reviews.jsonl, ids
// "doc0".."doc<n-1>"; returns its path.
std::string make_reviews(const std::filesystem::path& dir, size_t n);

// The built `llmthreads` executable (CLI tests run it as a user would).
inline std::string cli_path() {
  return LLMT_CLI;
}
// Runs the CLI with `args` (each shell-quoted), stderr merged into the output.
CommandResult run_cli(const std::vector<std::string>& args);

}  // namespace llmt::test

#define LLMT_REQUIRE_DATA(rel)                                         \
  do {                                                                 \
    if (!::llmt::test::data_available())                               \
      GTEST_SKIP() << "test data folder " << ::llmt::test::data_dir()  \
                   << " is absent (configure with -DLLMT_DATA=...)";   \
    ASSERT_TRUE(std::filesystem::exists(::llmt::test::data_path(rel))) \
        << "missing test data file " << ::llmt::test::data_path(rel);  \
  } while (0)
