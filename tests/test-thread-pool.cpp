// Compute pool: every (ith, nth) runs exactly once per op, across many thousand rounds and thread
// counts; an idle pool sleeps (uses ~no CPU).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <thread>
#include <vector>

#include "threading/thread-pool.h"

namespace llmt {
namespace {

TEST(ThreadPool, PhysicalCoresPositive) { EXPECT_GE(physical_core_count(), 1); }

TEST(ThreadPool, StressManyRounds) {
  for (int n_threads : {1, 2, 3, 4}) {
    ThreadPool pool(n_threads);
    ASSERT_EQ(pool.n_threads(), n_threads);
    std::vector<int64_t> per_thread(n_threads, 0);
    int64_t total = 0;
    // More threads than cores is legal but slow (spinning waits get descheduled): fewer rounds.
    const int n_rounds = n_threads <= physical_core_count() ? 20000 : 1000;
    for (int round = 0; round < n_rounds; ++round) {
      std::atomic<int> calls{0};
      pool.run([&](int ith, int nth) {
        ASSERT_EQ(nth, n_threads);
        per_thread[ith] += round;  // disjoint slots: a data race would show under TSan/ASan
        calls.fetch_add(1, std::memory_order_relaxed);
      });
      ASSERT_EQ(calls.load(), n_threads) << "round " << round;
      total += round;
    }
    for (int i = 0; i < n_threads; ++i) EXPECT_EQ(per_thread[i], total) << "thread " << i;
  }
}

TEST(ThreadPool, ResultsVisibleAfterRun) {
  ThreadPool pool(2);
  std::vector<int> data(1000, 0);
  for (int round = 1; round <= 2000; ++round) {
    pool.run([&](int ith, int nth) {
      for (size_t i = ith; i < data.size(); i += nth) data[i] = round;
    });
    for (int v : data) ASSERT_EQ(v, round);
  }
}

TEST(ThreadPool, IdlePoolSleeps) {
  ThreadPool pool(2);
  pool.run([](int, int) {});
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // workers pass spin into sleep
  const clock_t c0 = std::clock();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const double cpu_s = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
  // A spinning worker would burn ~0.5 s of CPU here.
  EXPECT_LT(cpu_s, 0.05) << "idle pool used " << cpu_s << " s of CPU in 0.5 s";
  // And it still wakes up.
  std::atomic<int> calls{0};
  pool.run([&](int, int) { calls++; });
  EXPECT_EQ(calls.load(), 2);
}

}  // namespace
}  // namespace llmt
