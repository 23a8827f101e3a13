// Test helpers for running a test on each CPU tier (src/kernels/kernels.h): the tiers, a
// param-name helper, a skip for tiers this machine lacks (named in the message), and a scoped
// LLMT_ISA cap so a Model loaded inside the scope binds that tier's kernels.
// Thread-safety: ScopedTier changes the process environment; use it only on the test's thread
// before any model load of that test.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "kernels/kernels.h"

namespace llmt::test {

// Every non-scalar tier of every architecture (a tier of another architecture is skipped).
inline constexpr kernels::Isa kTestTiers[] = {kernels::Isa::kAvx2,   kernels::Isa::kAvxVnni,
                                              kernels::Isa::kAvx512, kernels::Isa::kAmx,
                                              kernels::Isa::kNeon,   kernels::Isa::kI8mm};

// Sets LLMT_ISA=<tier> for the scope, restoring the previous value after.
class ScopedTier {
 public:
  explicit ScopedTier(kernels::Isa tier) {
    if (const char* old = std::getenv("LLMT_ISA")) {
      had_ = true;
      old_ = old;
    }
    ::setenv("LLMT_ISA", kernels::isa_name(tier), 1);
  }
  ~ScopedTier() {
    if (had_) {
      ::setenv("LLMT_ISA", old_.c_str(), 1);
    } else {
      ::unsetenv("LLMT_ISA");
    }
  }
  ScopedTier(const ScopedTier&) = delete;
  ScopedTier& operator=(const ScopedTier&) = delete;

 private:
  bool had_ = false;
  std::string old_;
};

}  // namespace llmt::test

// Skips the test, naming the tier, when this CPU/build cannot run it.
#define LLMT_REQUIRE_TIER(isa)                                  \
  if (!::llmt::kernels::isa_supported(isa))                     \
  GTEST_SKIP() << "tier " << ::llmt::kernels::isa_name(isa)     \
               << " is not available on this CPU/build (best: " \
               << ::llmt::kernels::isa_name(::llmt::kernels::best_isa()) << ")"
