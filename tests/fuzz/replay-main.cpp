// A main() for the fuzz targets outside libFuzzer: runs LLVMFuzzerTestOneInput once on every file
// (or every file in every folder) named on the command line, so the seed corpus and the inputs
// of every crash found (tests/fuzz/regressions/<target>/) replay as ordinary tests in every build,
// sanitizers included. Exit status 0 when every input ran; a bug aborts (or trips a sanitizer).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

int run_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "replay: cannot read %s\n", p.c_str());
    return 1;
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int n_inputs = 0, n_failed = 0;
  for (int i = 1; i < argc; ++i) {
    std::filesystem::path arg(argv[i]);
    std::error_code ec;
    if (std::filesystem::is_directory(arg, ec)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(arg)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
      std::sort(files.begin(), files.end());
      for (const auto& f : files) {
        n_failed += run_file(f);
        ++n_inputs;
      }
    } else if (std::filesystem::exists(arg, ec)) {
      n_failed += run_file(arg);
      ++n_inputs;
    }
  }
  std::printf("replayed %d inputs\n", n_inputs);
  return n_failed == 0 && n_inputs > 0 ? 0 : 1;
}
