// Helpers shared by the kernel test binaries (test-kernels: weight formats; test-kernel-ops:
// attention and elementwise ops): seeded random inputs, the perf-mode switch, and a main() that
// turns --perf into LLMT_KERNEL_PERF=1 (define LLMT_KERNEL_TEST_MAIN in one file per binary).
// Thread-safety: random_floats is pure; perf_mode reads the environment.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

namespace llmt::test {

// n floats from a standard normal distribution, the same for the same seed.
inline std::vector<float> random_floats(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  return x;
}

// Perf mode (timed tables instead of skips): LLMT_KERNEL_PERF set and not "0", or --perf.
inline bool perf_mode() {
  const char* env = std::getenv("LLMT_KERNEL_PERF");
  return env && *env && std::strcmp(env, "0") != 0;
}

}  // namespace llmt::test

#if defined(LLMT_KERNEL_TEST_MAIN)
int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--perf") == 0) setenv("LLMT_KERNEL_PERF", "1", 1);
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
#endif
