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

const char* sched_policy_name(SchedPolicy p);  // "fcfs", "priority", "round-robin", "fair-share"
// Parses those names; kInvalidArgument listing them otherwise.
Result<SchedPolicy> parse_sched_policy(const std::string& name);
const char* eviction_method_name(EvictionMethod m);  // "auto", "ram", "disk", "recompute"
Result<EvictionMethod> parse_eviction_method(const std::string& name);

}  // namespace llmt
