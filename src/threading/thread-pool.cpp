#include "threading/thread-pool.h"

#include <fstream>
#include <set>
#include <string>
#include <utility>

#include <sched.h>

namespace llmt {

int physical_core_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int n_allowed = 0;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) n_allowed = CPU_COUNT(&set);
  if (n_allowed <= 0) n_allowed = static_cast<int>(std::thread::hardware_concurrency());
  if (n_allowed <= 0) n_allowed = 1;
  // Count distinct (package, core) pairs among the allowed CPUs so SMT siblings count once.
  std::set<std::pair<std::string, std::string>> cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    const std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream pkg(base + "physical_package_id"), core(base + "core_id");
    std::string p, c;
    if (!(pkg >> p) || !(core >> c)) return n_allowed;
    cores.emplace(p, c);
  }
  return cores.empty() ? n_allowed : static_cast<int>(cores.size());
}

ThreadPool::ThreadPool(int n_threads) {
  n_threads_ = n_threads > 0 ? n_threads : physical_core_count();
  workers_.reserve(n_threads_ - 1);
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

namespace {
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}
constexpr int kSpinIterations = 1 << 14;  // ~ tens of microseconds before sleeping
}  // namespace

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  task_ = &fn;
  n_done_.store(0, std::memory_order_relaxed);
  {
    // Publish the new generation under the lock so a worker about to sleep cannot miss it.
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  if (n_sleeping_.load(std::memory_order_acquire) > 0) cv_.notify_all();
  fn(0, n_threads_);
  for (int spin = 0; n_done_.load(std::memory_order_acquire) != n_threads_ - 1; ++spin) {
    // Past a short spin, yield: a worker may have been descheduled (more threads than cores).
    if (spin < kSpinIterations) cpu_relax(); else std::this_thread::yield();
  }
  task_ = nullptr;
}

void ThreadPool::worker_main(int ith) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < kSpinIterations; ++spin) {
      cpu_relax();
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      n_sleeping_.fetch_add(1, std::memory_order_acq_rel);
      cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      n_sleeping_.fetch_sub(1, std::memory_order_acq_rel);
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_.load(std::memory_order_acquire)) return;
    (*task_)(ith, n_threads_);
    n_done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

}  // namespace llmt
