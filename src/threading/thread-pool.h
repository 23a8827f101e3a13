// Persistent compute pool: n_threads - 1 worker threads plus the calling thread run each op.
// Workers spin briefly waiting for the next op, then sleep on a condition variable, so an idle
// pool uses no CPU. Kernels get (ith, nth) and split their rows themselves.
//
// Thread-safety: run() must be called from one thread at a time (the pool's owner). The pool is
// not reentrant: a task must not call run() on the same pool.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace llmt {

// Number of physical cores (not SMT siblings) this process may run on; at least 1.
int physical_core_count();

class ThreadPool {
 public:
  // n_threads <= 0 picks physical_core_count().
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return n_threads_; }

  // Calls fn(ith, nth) once for every ith in [0, nth) (nth = n_threads()), ith 0 on the calling
  // thread, and returns when all calls have returned.
  void run(const std::function<void(int ith, int nth)>& fn);

 private:
  void worker_main(int ith);

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* task_ = nullptr;
  alignas(64) std::atomic<uint64_t> generation_{0};
  alignas(64) std::atomic<int> n_done_{0};
  alignas(64) std::atomic<int> n_sleeping_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
};

}  // namespace llmt
