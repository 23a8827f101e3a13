// Lock-free plumbing between caller threads and the engine loop.
//
// MpscQueue<T>: an unbounded multi-producer / single-consumer queue of heap nodes (Vyukov's
// intrusive design: push is one atomic exchange, pop touches only consumer-side state). A push
// never blocks; pop() may briefly see the queue as empty while a push is half-way (the pushed
// item then shows up on a later pop()).
// Futex: waiting on a 32-bit counter with a timeout (C++20 atomic::wait has none). A waiter reads
// the counter, re-checks its condition, then sleeps while the counter still holds that value;
// a producer bumps the counter and wakes. No lost wake-ups.
//
// Thread-safety: as stated per class.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <utility>

namespace llmt::engine {

// Sleeps while *word == expected, at most `timeout` (spurious returns possible).
void futex_wait_for(std::atomic<uint32_t>* word, uint32_t expected,
                    std::chrono::nanoseconds timeout);
// Wakes every thread sleeping on word.
void futex_wake_all(std::atomic<uint32_t>* word);

// push(): any number of threads concurrently. pop(): one thread at a time.
template <typename T>
class MpscQueue {
 public:
  MpscQueue() : head_(&stub_), tail_(&stub_) {}
  ~MpscQueue() {
    while (pop()) {
    }
  }
  MpscQueue(const MpscQueue&) = delete;
  MpscQueue& operator=(const MpscQueue&) = delete;

  void push(T value) {
    Node* n = new Node;
    n->value = std::move(value);
    push_node(n);
  }

  std::optional<T> pop() {
    Node* tail = tail_;
    Node* next = tail->next.load(std::memory_order_acquire);
    if (tail == &stub_) {
      if (next == nullptr) return std::nullopt;
      tail_ = next;
      tail = next;
      next = next->next.load(std::memory_order_acquire);
    }
    if (next != nullptr) {
      tail_ = next;
      return take(tail);
    }
    if (tail != head_.load(std::memory_order_acquire)) return std::nullopt;  // push in progress
    push_node(&stub_);
    next = tail->next.load(std::memory_order_acquire);
    if (next != nullptr) {
      tail_ = next;
      return take(tail);
    }
    return std::nullopt;
  }

 private:
  struct Node {
    std::atomic<Node*> next{nullptr};
    T value{};
  };
  void push_node(Node* n) {
    n->next.store(nullptr, std::memory_order_relaxed);
    Node* prev = head_.exchange(n, std::memory_order_acq_rel);
    prev->next.store(n, std::memory_order_release);
  }
  std::optional<T> take(Node* n) {
    std::optional<T> v(std::move(n->value));
    delete n;
    return v;
  }

  Node stub_;
  alignas(64) std::atomic<Node*> head_;
  alignas(64) Node* tail_;
};

}  // namespace llmt::engine
