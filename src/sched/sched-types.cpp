// The name tables of llmthreads/sched-types.h: one per enum, read by both name() and parse().
#include "llmthreads/sched-types.h"

#include <string>

#include "core/name-table.h"

namespace llmt {

namespace {

constexpr NameTable<SchedPolicy> kPolicyNames[] = {{SchedPolicy::kFcfs, "fcfs"},
                                                   {SchedPolicy::kPriority, "priority"},
                                                   {SchedPolicy::kRoundRobin, "round-robin"},
                                                   {SchedPolicy::kFairShare, "fair-share"}};
constexpr NameTable<EvictionMethod> kEvictionNames[] = {{EvictionMethod::kAuto, "auto"},
                                                        {EvictionMethod::kSwapRam, "ram"},
                                                        {EvictionMethod::kSwapDisk, "disk"},
                                                        {EvictionMethod::kRecompute, "recompute"}};

}  // namespace

const char* sched_policy_name(SchedPolicy p) {
  return name_of(kPolicyNames, p);
}
Result<SchedPolicy> parse_sched_policy(const std::string& name) {
  return parse_of(kPolicyNames, name, "scheduling policy");
}
const char* eviction_method_name(EvictionMethod m) {
  return name_of(kEvictionNames, m);
}
Result<EvictionMethod> parse_eviction_method(const std::string& name) {
  return parse_of(kEvictionNames, name, "eviction method");
}

Status SchedConfig::validate() const {
  auto bad = [](const char* field, const std::string& why) {
    return invalid_argument(std::string("sched.") + field + " " + why,
                            std::string("sched.") + field);
  };
  if (step_tokens < 1)
    return bad("step_tokens", "must be >= 1, got " + std::to_string(step_tokens));
  if (max_running < 1)
    return bad("max_running", "must be >= 1, got " + std::to_string(max_running));
  if (quantum_tokens < 1) {
    return bad("quantum_tokens", "must be >= 1, got " + std::to_string(quantum_tokens));
  }
  if (!(aging_per_s >= 0)) return bad("aging_per_s", "must be >= 0");
  if (!(fair_decode_weight > 0)) return bad("fair_decode_weight", "must be > 0");
  if (!(preempt_margin >= 0)) return bad("preempt_margin", "must be >= 0");
  return Status::ok();
}

}  // namespace llmt
