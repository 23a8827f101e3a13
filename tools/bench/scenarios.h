// Engine scenarios of `llmthreads bench --scenario NAME` (scenarios.cpp):
//   priority       64 low-priority threads saturate the engine, then high-priority threads arrive
//                  one at a time: their TTFT p50/p99 vs the same with no load.
//   shared-prefix  N threads with a common 200-token instruction and distinct 30-token tails:
//                  prefill tokens computed and peak KV bytes, with and without prefix sharing.
//   switch         save+restore cost per 1k tokens of context for RAM swap, disk swap and
//                  recompute; generated tokens/s of round-robin with 4x more threads than the KV
//                  holds vs the same work with no preemption.
//   classify-job   1,000 short documents classified into 3 labels with one shared ~200-token
//                  instruction: docs/s of a classify Job (shared prefix + label scoring) vs
//                  independent generation requests (full prompt, 8 in flight, label parsed).
//   grammar        64 sampled threads with and without a JSON Schema grammar: step time of each
//                  (overhead fraction) and the replayed grammar cost per token, cold and warm.
// Thread-safety: run_scenario drives its own engines from the calling thread.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "llmthreads/engine.h"

namespace llmt::bench {

struct ScenarioOptions {
  std::shared_ptr<const Model> model;
  int32_t n_threads = 0;  // compute threads (0 = physical cores)
  uint64_t kv_budget_bytes = uint64_t{512} << 20;
  std::string swap_dir;       // "" = a folder under the system temp dir (switch)
  int32_t n_threads_sim = 0;  // LLM threads (0 = the scenario's default)
  int32_t n_high = 0;         // priority: high-priority arrivals (0 = 20)
  int32_t repetitions = 3;    // switch: interleaved repetitions of the RR comparison
  int32_t n_naive = 0;        // classify-job: documents of the naive path (0 = 200)
};

// kInvalidArgument for an unknown name; engine errors otherwise.
Result<nlohmann::ordered_json> run_scenario(const std::string& name, const ScenarioOptions& o);

}  // namespace llmt::bench
