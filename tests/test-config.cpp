// EngineConfig sections and the enum name tables: every name parses back to its value, unknown
// names list the known ones, and Engine::create refuses a bad section value naming
// "section.field" before it loads anything.
#include <gtest/gtest.h>

#include <string>

#include "llmthreads/engine.h"
#include "llmthreads/tasks.h"

namespace {

using namespace llmt;

template <typename E, typename NameFn, typename ParseFn>
void expect_round_trip(std::initializer_list<E> values, NameFn name, ParseFn parse) {
  for (E v : values) {
    const std::string n = name(v);
    EXPECT_NE(n, "unknown");
    Result<E> back = parse(n);
    ASSERT_TRUE(back.is_ok()) << n;
    EXPECT_EQ(*back, v) << n;
  }
}

TEST(Names, EveryNameParsesBackToItsValue) {
  expect_round_trip({SchedPolicy::kFcfs, SchedPolicy::kPriority, SchedPolicy::kRoundRobin,
                     SchedPolicy::kFairShare},
                    sched_policy_name, parse_sched_policy);
  expect_round_trip({EvictionMethod::kAuto, EvictionMethod::kSwapRam, EvictionMethod::kSwapDisk,
                     EvictionMethod::kRecompute},
                    eviction_method_name, parse_eviction_method);
  expect_round_trip(
      {TaskType::kGenerate, TaskType::kClassify, TaskType::kExtract, TaskType::kSummarize},
      task_type_name, parse_task_type);
  expect_round_trip({MergeKind::kDefault, MergeKind::kConcat, MergeKind::kVote, MergeKind::kMean,
                     MergeKind::kWeightedMean, MergeKind::kReduce},
                    merge_kind_name, parse_merge_kind);
  expect_round_trip({KvType::kF32, KvType::kF16}, kv_type_name, parse_kv_type);
}

TEST(Names, AliasesAndUnknownNames) {
  Result<TaskType> qa = parse_task_type("qa");
  ASSERT_TRUE(qa.is_ok());
  EXPECT_EQ(*qa, TaskType::kExtract);
  EXPECT_STREQ(task_type_name(TaskType::kExtract), "extract");

  Result<KvType> bad = parse_kv_type("q8_0");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("f32 or f16"), std::string::npos) << bad.status().message();
  Result<SchedPolicy> p = parse_sched_policy("lifo");
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.status().message().find("fcfs, priority, round-robin or fair-share"),
            std::string::npos)
      << p.status().message();
}

// Each bad value is refused with its section-qualified field, without touching the model (none
// is given: a check that ran after the load would report the missing model instead).
TEST(EngineConfigSections, BadValuesNameTheirField) {
  struct Case {
    const char* field;
    void (*set)(EngineConfig&);
  };
  const Case cases[] = {
      {"model.n_ctx", [](EngineConfig& c) { c.model.n_ctx = -1; }},
      {"compute.n_threads", [](EngineConfig& c) { c.compute.n_threads = -2; }},
      {"kv.block_size", [](EngineConfig& c) { c.kv.block_size = 0; }},
      {"kv.block_size", [](EngineConfig& c) { c.kv.block_size = 4097; }},
      {"sched.step_tokens", [](EngineConfig& c) { c.sched.step_tokens = 0; }},
      {"sched.max_running", [](EngineConfig& c) { c.sched.max_running = 0; }},
      {"sched.quantum_tokens", [](EngineConfig& c) { c.sched.quantum_tokens = 0; }},
      {"sched.aging_per_s", [](EngineConfig& c) { c.sched.aging_per_s = -1; }},
      {"sched.preempt_margin", [](EngineConfig& c) { c.sched.preempt_margin = -0.5; }},
      {"kv.swap.dir", [](EngineConfig& c) { c.sched.eviction = EvictionMethod::kSwapDisk; }},
      {"limits.max_queue", [](EngineConfig& c) { c.limits.max_queue = -1; }},
  };
  for (const Case& k : cases) {
    EngineConfig c;
    k.set(c);
    auto r = Engine::create(c);
    ASSERT_FALSE(r.is_ok()) << k.field;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << k.field;
    EXPECT_EQ(r.status().field(), k.field) << r.status().message();
  }
  // A good config without a model: the missing model is what is reported.
  auto r = Engine::create(EngineConfig{});
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().field(), "model.path");
}

TEST(EngineConfigSections, SchedConfigDefaultsAreValid) {
  EXPECT_TRUE(SchedConfig{}.validate().is_ok());
  SchedConfig s;
  s.fair_decode_weight = 0;
  EXPECT_EQ(s.validate().field(), "sched.fair_decode_weight");
}

}  // namespace
