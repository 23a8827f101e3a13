// Persistent compute pool: n_threads - 1 worker threads plus the calling thread run each op.
// Kernels get (ith, nth) and split their rows themselves (run), or pull chunks from a shared
// counter (run_chunks).
//
// Waiting. A worker waiting for the next op spins briefly on a cache-line-aligned generation
// word, then backs off with sched_yield (giving its core to anything else runnable), then sleeps
// on a futex on that word, so an idle pool uses no CPU. The caller waiting for stragglers spins
// briefly and then sleeps on a futex too, leaving its core free for a descheduled worker.
//
// Graceful degradation. Every index ith in [1, nth) is claimed by exactly one thread through an
// atomic claim slot: normally its own worker, but a thread that has finished its own index takes
// over any index whose worker has not started yet. So when a worker is descheduled (another
// process holds its core) the op still completes at the speed of the threads that do run, instead
// of waiting a scheduler time slice for the late worker. The hot path allocates nothing, takes no
// lock and makes no system call unless a thread is asleep.
//
// Thread-safety: run() and run_chunks() must be called from one thread at a time (the pool's
// owner). The pool is not reentrant: a task must not call run() on the same pool. n_threads() may
// be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace llmt {

// Number of physical cores (not SMT siblings) this process may run on; at least 1.
int physical_core_count();

struct ThreadPoolOptions {
  int n_threads = 0;  // <= 0 picks physical_core_count()
  // Pin worker ith (1 <= ith < n_threads) to the ith CPU this process may run on, distinct
  // physical cores first, then SMT siblings (wrapping around when there are more threads than
  // CPUs). The calling thread (ith 0) is never pinned: its affinity belongs to the caller.
  // Pinning is best effort: a CPU that cannot be pinned to leaves that worker unpinned, silently.
  bool pin = false;
};

class ThreadPool {
 public:
  // n_threads <= 0 picks physical_core_count().
  explicit ThreadPool(int n_threads = 0);
  explicit ThreadPool(const ThreadPoolOptions& options);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return n_threads_; }

  // Calls fn(ith, nth) exactly once for every ith in [0, nth) (nth = n_threads()) and returns when
  // all calls have returned; everything they wrote is then visible to the caller. ith 0 runs on
  // the calling thread; any other ith runs on its worker, or, when that worker is late, on
  // another thread of the pool after that thread's own ith (never two ith at once on one
  // thread). So fn must not wait for another ith of the same run (no barrier inside fn); it may
  // keep per-ith scratch indexed by ith.
  void run(const std::function<void(int ith, int nth)>& fn);

  // Calls fn(chunk, ith) exactly once for every chunk in [0, n_chunks); threads claim chunks
  // one at a time from a shared counter, so a late or slow thread just gets fewer chunks. ith
  // (in [0, n_threads())) names the calling pool thread slot, for per-thread scratch; calls
  // with the same ith never overlap. Returns when all calls have returned (results visible).
  void run_chunks(int64_t n_chunks, const std::function<void(int64_t chunk, int ith)>& fn);

 private:
  // Type-erased op: invoke(ctx, ith, nth). A plain pointer pair so publishing an op allocates
  // nothing.
  using InvokeFn = void (*)(const void* ctx, int ith, int nth);

  // One cache line per worker index: the generation that last claimed it.
  struct alignas(64) Slot {
    std::atomic<uint32_t> claimed{0};
  };

  void start(const ThreadPoolOptions& options);
  void dispatch(InvokeFn invoke, const void* ctx);
  // Claims index ith for generation gen; true when this thread won it.
  bool try_claim(int ith, uint32_t gen);
  // Runs ith (already claimed) and counts it done.
  void run_claimed(int ith);
  // Claims and runs every index in [1, nth) not yet claimed for gen, starting after `after`.
  void help(uint32_t gen, int after);
  void worker_main(int ith);
  // Blocks until generation_ differs from seen; returns the new value.
  uint32_t wait_for_generation(uint32_t seen);

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::unique_ptr<Slot[]> slots_;  // [n_threads_]; slot 0 unused

  // The current op; written by the caller before generation_ is bumped (release), read by a
  // worker only after it has claimed an index of that generation.
  std::atomic<InvokeFn> invoke_{nullptr};
  std::atomic<const void*> ctx_{nullptr};

  // Bumped once per op (and at shutdown); the futex word sleeping workers wait on.
  alignas(64) std::atomic<uint32_t> generation_{0};
  // Indices in [1, nth) of the current op not yet finished; the futex word the caller sleeps on.
  alignas(64) std::atomic<uint32_t> n_pending_{0};
  // Workers asleep (or about to sleep) on generation_; the caller issues a wake only when > 0.
  alignas(64) std::atomic<int> n_sleeping_{0};
  // 1 while the caller is asleep (or about to sleep) on n_pending_.
  alignas(64) std::atomic<uint32_t> caller_waiting_{0};
  // Next chunk of the current run_chunks op.
  alignas(64) std::atomic<int64_t> next_chunk_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace llmt
