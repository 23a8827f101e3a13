// SignalWatcher: SIGINT / SIGTERM taken by a sigtimedwait thread, so commands handle signals
// without a handler or any global state (`run`, `serve`).
//
// Thread-safety: construct it on the main thread before any other thread exists; on_signal runs
// on the watcher's thread and must be safe to call concurrently with the rest of the program.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <ctime>
#include <functional>
#include <thread>

namespace llmt::cli {

// Takes SIGINT / SIGTERM with sigtimedwait on its own thread. Construct it before any other
// thread exists: the signals are blocked in the calling thread and so in every thread created
// after it. The mask stays blocked after destruction (a late signal is then ignored rather than
// killing the process mid-flush).
class SignalWatcher {
 public:
  explicit SignalWatcher(std::function<void(int)> on_signal) : on_signal_(std::move(on_signal)) {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    thread_ = std::thread([this] {
      const timespec tick{0, 100'000'000};
      while (!stop_.load(std::memory_order_relaxed)) {
        const int sig = sigtimedwait(&set_, nullptr, &tick);
        if (sig > 0) on_signal_(sig);
      }
    });
  }
  ~SignalWatcher() {
    stop_.store(true, std::memory_order_relaxed);
    thread_.join();
  }

 private:
  sigset_t set_;
  std::function<void(int)> on_signal_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace llmt::cli
