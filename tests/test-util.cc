#include "test-util.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace llmt::test {

std::string data_dir() {
  if (const char* env = std::getenv("LLMT_DATA"); env && *env) return env;
  return LLMT_DATA;
}

std::string data_path(const std::string& rel) { return data_dir() + "/" + rel; }

bool data_available() { return std::filesystem::is_directory(data_dir()); }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace llmt::test
