// Compute pool: every (ith, nth) runs exactly once per op and every chunk exactly once, across
// many thousand rounds and thread counts (more threads than cores included); results written by
// workers are visible to the caller after run() returns; one ith never runs twice at once; an
// idle pool sleeps (uses ~no CPU); pinning is optional and best effort.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <thread>
#include <vector>

#include <sched.h>

#include "threading/thread-pool.h"

namespace llmt {
namespace {

// Fewer rounds when threads outnumber cores: a descheduled worker makes ops slow.
int rounds_for(int n_threads, int full) {
  return n_threads <= physical_core_count() ? full : full / 10;
}

// Called by ith 0: waits (bounded, so a descheduled worker cannot hang the test) until `calls`
// reaches nth, so that workers, not the caller taking over their indices, usually run them.
void linger(const std::atomic<int>& calls, int nth) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
  while (calls.load() < nth && std::chrono::steady_clock::now() < until) {
  }
}

TEST(ThreadPool, PhysicalCoresPositive) {
  EXPECT_GE(physical_core_count(), 1);
}

TEST(ThreadPool, DefaultIsPhysicalCores) {
  ThreadPool pool;
  EXPECT_EQ(pool.n_threads(), physical_core_count());
}

TEST(ThreadPool, ConstructAndDestroyWithoutRunning) {
  for (int n_threads : {1, 2, 3, 4, 8}) ThreadPool pool(n_threads);
}

TEST(ThreadPool, StressManyRounds) {
  for (int n_threads : {1, 2, 3, 4}) {
    ThreadPool pool(n_threads);
    ASSERT_EQ(pool.n_threads(), n_threads);
    std::vector<int64_t> per_thread(n_threads, 0);
    std::vector<std::atomic<int>> active(n_threads);
    int64_t total = 0;
    int64_t on_workers = 0;  // indices run by a thread other than the caller
    const std::thread::id caller = std::this_thread::get_id();
    const int n_rounds = rounds_for(n_threads, 20000);
    for (int round = 0; round < n_rounds; ++round) {
      std::atomic<int> calls{0};
      std::atomic<int> worker_calls{0};
      pool.run([&](int ith, int nth) {
        ASSERT_EQ(nth, n_threads);
        ASSERT_EQ(active[ith].fetch_add(1), 0) << "ith " << ith << " ran twice at once";
        per_thread[ith] += round;  // disjoint slots, plain writes: ordering comes from the pool
        if (std::this_thread::get_id() != caller) worker_calls.fetch_add(1);
        active[ith].fetch_sub(1);
        calls.fetch_add(1);
        if (ith == 0) linger(calls, nth);
      });
      ASSERT_EQ(calls.load(), n_threads) << "round " << round;
      total += round;
      on_workers += worker_calls.load();
    }
    for (int i = 0; i < n_threads; ++i) EXPECT_EQ(per_thread[i], total) << "thread " << i;
    std::printf("[   info   ] %d threads: %lld of %lld indices ran on workers\n", n_threads,
                static_cast<long long>(on_workers),
                static_cast<long long>(n_rounds) * (n_threads - 1));
  }
}

// While ith 0 is still running nobody else can take over the other indices' work, so the workers
// themselves must run them (bounded wait: a starved worker fails the test instead of hanging it).
TEST(ThreadPool, WorkersRunConcurrently) {
  for (int n_threads : {2, 3, 4}) {
    ThreadPool pool(n_threads);
    const std::thread::id caller = std::this_thread::get_id();
    std::atomic<int> started{0};
    std::atomic<int> on_workers{0};
    pool.run([&](int ith, int nth) {
      if (ith != 0) {
        if (std::this_thread::get_id() != caller) on_workers.fetch_add(1);
        started.fetch_add(1);
        return;
      }
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      while (started.load() < nth - 1 && std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();
      }
    });
    EXPECT_EQ(started.load(), n_threads - 1);
    EXPECT_GE(on_workers.load(), 1) << n_threads << " threads";
  }
}

TEST(ThreadPool, ResultsVisibleAfterRun) {
  for (int n_threads : {1, 2, 3, 4}) {
    ThreadPool pool(n_threads);
    std::vector<int> data(1000, 0);
    const int n_rounds = rounds_for(n_threads, 5000);
    for (int round = 1; round <= n_rounds; ++round) {
      // Plain (non-atomic) writes by every thread, read by the caller right after run().
      std::atomic<int> calls{0};
      pool.run([&](int ith, int nth) {
        for (size_t i = ith; i < data.size(); i += nth) data[i] = round;
        calls.fetch_add(1);
        if (ith == 0) linger(calls, nth);
      });
      for (size_t i = 0; i < data.size(); ++i) {
        ASSERT_EQ(data[i], round) << "round " << round << " index " << i;
      }
    }
  }
}

TEST(ThreadPool, RunChunksCoversEveryChunkOnce) {
  for (int n_threads : {1, 2, 3, 4}) {
    ThreadPool pool(n_threads);
    std::atomic<int64_t> worker_chunks{0};
    int64_t all_chunks = 0;
    const int n_rounds = rounds_for(n_threads, 3000);
    for (int round = 0; round < n_rounds; ++round) {
      const int64_t n_chunks = round % 67;  // 0, 1, fewer and more chunks than threads
      std::vector<int> hits(static_cast<size_t>(n_chunks), 0);  // plain writes
      std::vector<std::atomic<int>> active(n_threads);
      pool.run_chunks(n_chunks, [&](int64_t chunk, int ith) {
        ASSERT_GE(ith, 0);
        ASSERT_LT(ith, n_threads);
        ASSERT_GE(chunk, 0);
        ASSERT_LT(chunk, n_chunks);
        ASSERT_EQ(active[ith].fetch_add(1), 0) << "ith " << ith << " ran twice at once";
        hits[static_cast<size_t>(chunk)] += 1;
        if (ith != 0) worker_chunks.fetch_add(1, std::memory_order_relaxed);
        const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(500);
        while (std::chrono::steady_clock::now() < until) {
        }
        active[ith].fetch_sub(1);
      });
      for (int64_t c = 0; c < n_chunks; ++c) {
        ASSERT_EQ(hits[static_cast<size_t>(c)], 1) << "round " << round << " chunk " << c;
      }
      all_chunks += n_chunks;
    }
    std::printf("[   info   ] %d threads: %lld of %lld chunks ran on workers\n", n_threads,
                static_cast<long long>(worker_chunks.load()), static_cast<long long>(all_chunks));
  }
}

TEST(ThreadPool, RunAndRunChunksInterleave) {
  ThreadPool pool(3);
  std::vector<int64_t> sums(3, 0);
  int64_t chunk_sum = 0;
  for (int round = 0; round < 2000; ++round) {
    pool.run([&](int ith, int) { sums[ith] += 1; });
    std::atomic<int64_t> s{0};
    pool.run_chunks(10, [&](int64_t c, int) { s.fetch_add(c); });
    chunk_sum += s.load();
  }
  for (int64_t v : sums) EXPECT_EQ(v, 2000);
  EXPECT_EQ(chunk_sum, 2000 * 45);
}

// Uneven work: ith 0 is instant and the others are slow, so the caller often takes over indices
// whose workers have not started; still exactly once each.
TEST(ThreadPool, UnevenWorkExactlyOnce) {
  for (int n_threads : {2, 4, 8}) {
    ThreadPool pool(n_threads);
    std::vector<int64_t> count(n_threads, 0);
    const int n_rounds = rounds_for(n_threads, 2000);
    for (int round = 0; round < n_rounds; ++round) {
      pool.run([&](int ith, int) {
        if (ith != 0 && round % 7 == 0) {
          volatile int x = 0;
          for (int i = 0; i < 2000; ++i) x = x + i;
        }
        count[ith] += 1;
      });
    }
    for (int i = 0; i < n_threads; ++i) EXPECT_EQ(count[i], n_rounds) << "thread " << i;
  }
}

// Process CPU time (all threads) used while the pool sits idle for `idle`.
double idle_cpu_seconds(ThreadPool& pool, std::chrono::milliseconds idle) {
  pool.run([](int, int) {});
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // past spin and yield: asleep
  const clock_t c0 = std::clock();
  std::this_thread::sleep_for(idle);
  return static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
}

TEST(ThreadPool, IdlePoolSleeps) {
  for (int n_threads : {2, 4}) {
    ThreadPool pool(n_threads);
    // A spinning worker would burn ~0.5 s of CPU per worker here.
    const double cpu_s = idle_cpu_seconds(pool, std::chrono::milliseconds(500));
    EXPECT_LT(cpu_s, 0.02) << n_threads << " threads: idle pool used " << cpu_s
                           << " s of CPU in 0.5 s";
    // And it still wakes up, for both APIs.
    std::atomic<int> calls{0};
    pool.run([&](int, int) { calls++; });
    EXPECT_EQ(calls.load(), n_threads);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::atomic<int> chunks{0};
    pool.run_chunks(100, [&](int64_t, int) { chunks++; });
    EXPECT_EQ(chunks.load(), 100);
  }
}

TEST(ThreadPool, PinnedPoolWorks) {
  ThreadPoolOptions options;
  options.n_threads = 3;
  options.pin = true;
  ThreadPool pool(options);
  ASSERT_EQ(pool.n_threads(), 3);
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  std::vector<int64_t> count(3, 0);
  std::vector<int> cpu(3, -1);
  for (int round = 0; round < 1000; ++round) {
    pool.run([&](int ith, int) {
      count[ith] += 1;
      cpu[ith] = sched_getcpu();
    });
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(count[i], 1000);
    EXPECT_TRUE(cpu[i] >= 0 && CPU_ISSET(cpu[i], &allowed)) << "ith " << i << " cpu " << cpu[i];
  }
  // The caller's own affinity is left alone.
  cpu_set_t after;
  CPU_ZERO(&after);
  ASSERT_EQ(sched_getaffinity(0, sizeof(after), &after), 0);
  EXPECT_TRUE(CPU_EQUAL(&allowed, &after));
}

}  // namespace
}  // namespace llmt
