// resolve_model_path (commands.h).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/commands.h"

namespace llmt::cli {

std::string resolve_model_path(const std::string& explicit_path, const std::string& default_file) {
  std::string path = explicit_path;
  const char* how = "-m";
  if (path.empty()) {
    if (const char* env = std::getenv("LLMT_MODEL"); env && *env) {
      path = env;
      how = "$LLMT_MODEL";
    } else {
      const char* data = std::getenv("LLMT_DATA");
      std::string dir = (data && *data) ? data : LLMT_DATA_DEFAULT;
      path = dir + "/models/" + default_file;
      how = "the default (LLMT_DATA)";
    }
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    std::fprintf(stderr,
                 "error: model file '%s' (from %s) not found; pass one with -m MODEL.gguf or set "
                 "LLMT_MODEL (or LLMT_DATA to the folder holding models/)\n",
                 path.c_str(), how);
    return "";
  }
  return path;
}

}  // namespace llmt::cli
