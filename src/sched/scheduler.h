// Scheduler of LLM threads: decides, once per engine step, which threads compute which tokens,
// which threads are switched out (and how their KV is kept), and which are brought back. It is
// data-only: it owns each thread's token list and progress, drives the KvManager (match_prefix,
// open, allocate, commit, free), and emits a StepPlan that the runner executes (swap-outs, then
// block copies, then swap-ins, then one forward pass over `chunks`). The runner reports back in a
// StepResult. No model, no clock of its own (the caller passes `now_s`), no I/O: tests drive it
// with a fake runner and check exact block ids and exact preemption order.
//
// A thread's life (phase):
//   kWaiting  -> admitted (prefix matched, blocks allocated)  -> kRunning
//   kRunning  -> not chosen this step but its KV stays       -> kRunning (idle this step)
//   kRunning  -> evicted: KV saved to the swap store          -> kSwapped
//   kRunning  -> evicted: KV dropped, recomputed later        -> kWaiting (n_computed = 0)
//   kSwapped  -> chosen again: blocks allocated, KV restored  -> kRunning
//   any       -> finish()/cancel                              -> removed
// Each step a thread that is chosen computes tokens[n_computed, n_computed + n): a prefill chunk
// (n <= what is left of step_tokens) or its one newest token (decode). When the chunk reaches the
// end of its tokens the runner samples a new token from the chunk's last logits (Chunk::sample)
// and the thread's tokens grow by one. Recompute is the same path: a dropped thread re-prefills
// prompt + generated tokens (the prefix cache often still holds most of them) and then samples.
//
// Ordering (the policy, chosen per scheduler):
//   kFcfs        arrival order.
//   kPriority    effective priority = priority + aging_per_s * (now - last time it computed);
//                higher first, then arrival. Threads that run every step do not age; a thread
//                kept waiting rises until it runs (no starvation). Latency rule: in a step where a
//                thread prefills, threads whose effective priority is below that thread's base
//                priority are left out of the step (they keep their KV), so a high-priority
//                prompt is not slowed by a full batch of low-priority decodes.
//   kRoundRobin  a queue; a thread that has computed quantum_tokens new positions since it
//                reached the front goes to the back. Positions it computes again after a
//                recompute eviction are not new (they neither use its quantum nor are capped by
//                it), so each turn makes progress even when threads keep evicting each other.
//                Only matters when more threads are runnable than max_running (or than the KV
//                blocks hold).
//   kFairShare   per-tenant counters of tokens served (prefill tokens x 1 + generated tokens x
//                fair_decode_weight, the VTC rule); the tenant with the least service first,
//                arrival order within a tenant. A tenant that becomes active is lifted to the
//                smallest counter among active tenants (no credit for idle time).
// Choosing a step: threads in policy order are taken while fewer than max_running are taken and
// step_tokens allow (each running thread's decode token counts 1; a prefill chunk takes what is
// left of step_tokens, at most the thread's remaining tokens, less one token for each running
// decode later in order that max_running and the latency rule would still let in, so a long prompt
// never stalls decodes; kRoundRobin also caps it at what it recomputes plus what is left of the
// thread's quantum). A thread whose tokens reached n_kv_tokens is never taken (the caller removes
// it). A waiting thread whose prompt continues into blocks another running thread is computing
// right now (pending in the prefix cache) waits a step for them instead of computing them twice. A
// thread that needs KV blocks that are not available evicts threads that come after it in policy
// order and were not taken (last in order first); if that is not enough it is not taken this step
// (a running thread that cannot grow is itself evicted), and no further waiting or swapped thread
// is admitted in that step. Nothing is evicted unless evicting is enough. Hysteresis: since aging
// and service counters move every step, kPriority evicts only threads whose effective priority
// is at least preempt_margin lower, and kFairShare only threads of the same tenant or of a tenant
// served at least quantum_tokens more, so two threads that keep passing each other in the order
// do not swap each other out every step (a running thread that cannot grow only because of that
// margin stays idle with its KV instead of being evicted).
// Eviction method (per victim): kSwapRam / kSwapDisk (bytes = its tokens x kv_bytes_per_token,
// time = 2 x bytes / throughput) or kRecompute (time = n_computed / recompute_tokens_per_s),
// whichever is cheaper (a tie, or a thread with nothing computed, recomputes); disk only when RAM
// would go past ram_limit_bytes (counting the bytes currently swapped to RAM) and disk is
// available; SchedulerOptions::eviction forces one method.
//
// Thread-safety: none; one thread (the engine loop) uses a Scheduler.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kv/kv-manager.h"
#include "llmthreads/sched-types.h"
#include "llmthreads/status.h"

namespace llmt::sched {

using ThreadId = uint64_t;

// The engine's enums themselves (llmthreads/sched-types.h), so nothing converts between copies.
using Policy = SchedPolicy;
using Eviction = EvictionMethod;
enum class Phase { kWaiting, kRunning, kSwapped };

inline const char* policy_name(Policy p) {
  return sched_policy_name(p);
}
inline const char* eviction_name(Eviction e) {
  return eviction_method_name(e);
}

// Measured by the engine at start-up; used to pick the cheapest eviction method.
struct EvictionCosts {
  double ram_bytes_per_s = 4e9;  // save + restore each move the bytes once
  double disk_bytes_per_s = 1e9;
  double recompute_tokens_per_s = 1e3;           // prefill speed
  uint64_t ram_limit_bytes = uint64_t{1} << 30;  // swap bytes kept in RAM before disk is used
  bool disk_available = false;
};

// The engine's SchedConfig as it is, plus what the engine measures at start-up. step_tokens,
// max_running and quantum_tokens below 1 are taken as 1 (the engine refuses them earlier).
struct SchedulerOptions : SchedConfig {
  EvictionCosts costs;
  uint64_t kv_bytes_per_token = 0;  // K+V bytes of one token (all layers); for eviction costs
};

// A new thread.
struct ThreadSpec {
  ThreadId id = 0;              // unique among live threads
  std::vector<int32_t> prompt;  // at least one token
  // Prompt + generated tokens the thread may reach: its KV reservation, not a stop rule. The
  // scheduler never decides that a thread is finished (the engine does: EOS, stop strings, its
  // own max_tokens, cancel, deadline); it only never schedules a thread past n_kv_tokens.
  int32_t n_kv_tokens = 0;
  int32_t priority = 0;    // higher runs first (kPriority)
  uint64_t tenant = 0;     // job / tenant for kFairShare
  double arrival_s = 0.0;  // the caller's clock
  // The prefix cache may serve at most the first n_match_max tokens (-1: no limit beyond the
  // KvManager's leave-one-token rule). Scoring threads set it so that the positions whose logits
  // they need are computed, not taken from the cache.
  int32_t n_match_max = -1;
};

// Compute tokens(id)[pos0, pos0 + n_tokens) for thread id, at those positions of its table.
struct Chunk {
  ThreadId id = 0;
  int32_t pos0 = 0;
  int32_t n_tokens = 0;
  bool sample = false;  // the chunk ends at the thread's last token: sample from its logits
};
// Save these blocks' bytes under key `id` (they are already released in the KvManager, and
// nothing overwrites them before the step's forward pass).
struct SwapOut {
  ThreadId id = 0;
  Eviction method = Eviction::kSwapRam;  // kSwapRam or kSwapDisk
  std::vector<int32_t> blocks;
  // With window slots (kv::KvManagerOptions): the slot of each block the thread's window
  // reaches, -1 for the others (their sliding-window K/V is not needed again). Their bytes are
  // saved too, as blocks' are.
  std::vector<int32_t> window_slots;
  int32_t n_tokens = 0;  // positions held (n_computed)
};
// Restore key `id` into these blocks (same count as at the swap-out), and into these window
// slots (-1 where the swap-out had none).
struct SwapIn {
  ThreadId id = 0;
  std::vector<int32_t> blocks;
  std::vector<int32_t> window_slots;
};

struct StepPlan {
  std::vector<SwapOut> swap_out;  // 1st
  std::vector<ThreadId> dropped;  // evicted for recompute (nothing to do but count them)
  // 2nd, in order: src bytes -> dst (partial prefix blocks, copy-on-write). A src may have been
  // released and handed out again in this plan; its bytes are intact until the swap-ins and the
  // forward pass, which is why copies run before them.
  std::vector<kv::BlockCopy> copies;
  std::vector<SwapIn> swap_in;  // 3rd
  std::vector<Chunk> chunks;    // 4th: one forward pass, in this order
  int32_t n_tokens = 0;         // sum of chunks' n_tokens
  bool empty() const { return chunks.empty() && swap_out.empty() && swap_in.empty(); }
};

struct StepResult {
  struct Sampled {
    ThreadId id = 0;
    int32_t token = 0;
  };
  std::vector<Sampled> sampled;  // one per chunk with sample == true that succeeded
  // Swap-out or swap-in failed: the thread's KV is lost and it is recomputed (kWaiting,
  // n_computed 0). The chunk of a thread whose swap-in failed counts as not executed (its sampled
  // token, if any, is ignored).
  std::vector<ThreadId> swap_failed;
};

struct SchedulerStats {
  int32_t n_waiting = 0, n_running = 0, n_swapped = 0;
  uint64_t n_steps = 0;
  uint64_t n_preempt_ram = 0, n_preempt_disk = 0, n_preempt_recompute = 0;
  uint64_t n_swap_in = 0;
  uint64_t prefill_tokens = 0;     // tokens computed by prefill chunks (recompute included)
  uint64_t decode_tokens = 0;      // tokens computed as single decode tokens
  uint64_t prefix_hit_tokens = 0;  // tokens taken from the prefix cache at admission (recompute
                                   // admissions included)
  uint64_t swap_ram_bytes = 0;     // bytes now swapped to RAM (counted against ram_limit_bytes)
};

class Scheduler {
 public:
  // kv outlives the scheduler and is used by it alone.
  Scheduler(const SchedulerOptions& options, kv::KvManager* kv);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a new thread (kWaiting). kInvalidArgument: duplicate id, empty prompt, n_kv_tokens <
  // prompt size, or n_kv_tokens needing more blocks than the pool has (it could never run).
  Status add(ThreadSpec spec);
  // Changes ThreadSpec::n_match_max of a live thread; it applies from the thread's next admission
  // (e.g. after a recompute eviction). Embedding threads raise it to the positions whose hidden
  // states they already hold, so a recomputed one re-uses its cached prefix instead of starting
  // over (which under steady KV pressure could repeat forever). kNotFound when not live.
  Status set_match_max(ThreadId id, int32_t n_match_max);
  // Removes a thread in any phase and frees its blocks at once. Returns its phase (kSwapped tells
  // the caller to erase its swap entry), or kNotFound.
  Result<Phase> remove(ThreadId id);

  // Plans the next step. The plan stays valid until complete().
  const StepPlan& schedule(double now_s);
  // Applies a step's outcome: chunks' tokens are computed (KV committed), sampled tokens appended,
  // swap failures turned into recompute. Call once per schedule(), before the next one. A thread
  // that reached n_kv_tokens or should stop is removed by the caller through remove(). A sample
  // chunk with no sampled token leaves its last position to be computed again. Chunks of threads
  // removed since schedule() are ignored.
  void complete(const StepResult& result, double now_s);

  // Tokens (prompt + generated) of a live thread; empty when unknown.
  std::span<const int32_t> tokens(ThreadId id) const;
  int32_t n_prompt(ThreadId id) const;  // 0 when unknown
  // Positions with K/V in the cache (in the swap store while kSwapped; 0 when unknown).
  int32_t n_computed(ThreadId id) const;
  Result<Phase> phase(ThreadId id) const;
  // Block table of a live thread (through the KvManager).
  std::span<const int32_t> table(ThreadId id) const;
  bool idle() const;  // no live thread
  SchedulerStats stats() const;
  // Tokens served per tenant (the kFairShare counters' raw inputs: prompt and generated tokens
  // computed), for tests and metrics.
  uint64_t tenant_tokens(uint64_t tenant) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmt::sched
