#include "test-util.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace llmt::test {

std::string data_dir() {
  if (const char* env = std::getenv("LLMT_DATA"); env && *env) return env;
  return LLMT_DATA;
}

std::string data_path(const std::string& rel) {
  return data_dir() + "/" + rel;
}

Loaded load(const std::string& rel) {
  Loaded l;
  auto g = GgufFile::open(data_path(rel));
  EXPECT_TRUE(g.is_ok()) << g.status().to_string();
  if (!g.is_ok()) return l;
  l.gguf = std::move(g).value();
  auto t = Tokenizer::from_gguf(*l.gguf);
  EXPECT_TRUE(t.is_ok()) << rel << ": " << t.status().to_string();
  if (t.is_ok()) l.tok = std::move(t).value();
  return l;
}

bool data_available() {
  return std::filesystem::is_directory(data_dir());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

std::string make_reviews(const std::filesystem::path& dir, size_t n) {
  const auto src = lines_of(read_file(std::string(LLMT_SOURCE_DIR) + "/examples/reviews.jsonl"));
  const std::string path = (dir / "in.jsonl").string();
  std::ofstream f(path);
  for (size_t i = 0; i < n; ++i) {
    nlohmann::json j = nlohmann::json::parse(src[i % src.size()]);
    j["id"] = "doc" + std::to_string(i);
    f << j.dump() << "\n";
  }
  return path;
}

CommandResult run_command(const std::string& command_line, bool merge_stderr) {
  CommandResult r;
  std::string cmd = command_line + (merge_stderr ? " 2>&1" : "");
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string shell_quote(const std::string& arg) {
  std::string q = "'";
  for (char c : arg) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  return q + "'";
}

CommandResult run_cli(const std::vector<std::string>& args) {
  std::string s = shell_quote(cli_path());
  for (const auto& a : args) s += " " + shell_quote(a);
  return run_command(s, true);
}

}  // namespace llmt::test
