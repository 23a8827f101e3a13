// The scheduling choices of an Engine (EngineConfig::policy, ::eviction), shared by the public
// API and the scheduler (src/sched uses these very enums), each with one name table: name() and
// parse() read the same table (src/sched/sched-types.cpp).
//
// Thread-safety: pure functions; call from any thread.
#pragma once

#include <string>

#include "llmthreads/status.h"

namespace llmt {

// Which waiting or running LLM thread runs first: first come first served, priority with aging,
// round-robin quanta, or fair share across tenants.
enum class SchedPolicy { kFcfs, kPriority, kRoundRobin, kFairShare };
// How a preempted LLM thread's KV is kept. kAuto picks per victim by measured cost (bytes to move
// vs tokens to recompute); the others force one method.
enum class EvictionMethod { kAuto, kSwapRam, kSwapDisk, kRecompute };

// The scheduler's section of EngineConfig, handed to the scheduler as it is (src/sched extends it
// with what the engine measures). Checked by validate(): kInvalidArgument naming "sched.<field>".
struct SchedConfig {
  SchedPolicy policy = SchedPolicy::kPriority;
  // Tokens per step (decode tokens + prefill chunks), >= 1. A new high-priority LLM thread waits
  // for the step in flight, so this bounds its extra latency (256 tokens: ~140 ms on a 125M model
  // on 2 cores); prefill throughput is within ~5% of 512-token steps.
  int32_t step_tokens = 256;
  int32_t max_running = 64;         // LLM threads per step, >= 1
  double aging_per_s = 1.0;         // kPriority: priority gained per second of waiting, >= 0
  int32_t quantum_tokens = 32;      // kRoundRobin: tokens per turn, >= 1
  double fair_decode_weight = 2.0;  // kFairShare: weight of a generated token vs a prompt token
  // Eviction hysteresis: kPriority evicts only threads whose effective priority is at least this
  // much lower; kFairShare only threads of the same tenant or of a tenant served at least
  // quantum_tokens (weighted) more. >= 0.
  double preempt_margin = 1.0;
  EvictionMethod eviction = EvictionMethod::kAuto;
  // Measure swap and prefill speed at start-up for kAuto (about 50 ms on a 125M model); false
  // uses fixed estimates.
  bool measure_costs = true;

  Status validate() const;
};

const char* sched_policy_name(SchedPolicy p);  // "fcfs", "priority", "round-robin", "fair-share"
// Parses those names; kInvalidArgument listing them otherwise.
Result<SchedPolicy> parse_sched_policy(const std::string& name);
const char* eviction_method_name(EvictionMethod m);  // "auto", "ram", "disk", "recompute"
Result<EvictionMethod> parse_eviction_method(const std::string& name);

}  // namespace llmt
