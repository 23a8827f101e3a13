// /v1/tasks with 10,000 documents: the task's Job pulls them while its window allows, so the
// engine's queue stays within its limit (max_queue) and the job's documents in flight within
// the window, and every document completes (before, all 10,000 were added at once and those
// beyond the engine's queue failed with out_of_memory).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "llmthreads/engine.h"
#include "server-fixture.h"
#include "task-api.h"
#include "test-util.h"

namespace llmt {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using test::kServerModel;

TEST(ServerTasksFlow, TenThousandDocumentsStayWithinTheEngineQueue) {
  LLMT_REQUIRE_DATA(kServerModel);
  EngineConfig ec = test::server_engine_config();
  ec.limits.max_queue = 8;
  ec.sched.max_running = 8;
  test::RunningServer s(test::server_test_options(), ec);
  ASSERT_TRUE(s.engine && s.srv);
  constexpr size_t kDocs = server::kMaxTaskDocuments;
  ASSERT_EQ(kDocs, 10000u);
  json inputs = json::array();
  for (size_t i = 0; i < kDocs; ++i) inputs.push_back("Tom " + std::to_string(i % 97));
  const json body = {
      {"task", "generate"}, {"prompt", "{text}"}, {"inputs", inputs}, {"max_tokens", 1}};

  // The engine's live threads, sampled while the task runs.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> peak{0};
  std::thread sampler([&] {
    while (!stop.load()) {
      const EngineStats es = s.engine->stats();
      // Submitted and not finished: what max_queue bounds.
      const int64_t live = es.n_submitted - es.n_finished;
      if (live > peak.load()) peak.store(live);
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  });
  auto c = s.client();
  int st = 0;
  const json created = test::post_json(*c, "/v1/tasks", body, &st);
  ASSERT_EQ(st, 202) << created;
  EXPECT_EQ(created["n_documents"], kDocs);
  const std::string id = created["id"];
  json t;
  const auto t0 = Clock::now();
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    // Results are large: read the progress only until done.
    t = test::get_json(*c, "/v1/tasks/" + id, &st);
    ASSERT_EQ(st, 200);
  } while (t["status"] == "running" && Clock::now() - t0 < std::chrono::seconds(600));
  stop.store(true);
  sampler.join();
  ASSERT_EQ(t["status"], "completed") << t["progress"];
  EXPECT_EQ(t["progress"]["done"], kDocs);
  ASSERT_EQ(t["results"].size(), kDocs);
  size_t n_failed = 0;
  for (const json& r : t["results"]) n_failed += r["status"] != "completed";
  EXPECT_EQ(n_failed, 0u) << t["results"][0];
  EXPECT_GT(peak.load(), 0);
  EXPECT_LE(peak.load(), ec.limits.max_queue);
  EXPECT_EQ(s.engine->stats().n_submitted, static_cast<int64_t>(kDocs));
  EXPECT_EQ(s.engine->stats().n_finished, static_cast<int64_t>(kDocs));
}

}  // namespace
}  // namespace llmt
