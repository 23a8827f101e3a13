// Structured errors: Status codes and fields, their HTTP mapping (from the code alone, never the
// message text), and the end-to-end fix that a request which can never fit in the KV pool is a
// 400, not a 429 with Retry-After.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "common/openai.h"
#include "llmthreads/engine.h"
#include "llmthreads/status.h"
#include "server-fixture.h"
#include "test-util.h"

namespace llmt {
namespace {

using nlohmann::json;
using test::kServerModel;

// A KV budget of about n_blocks blocks of `block_size` tokens for the server test model (the
// block size in bytes is learnt from a 16 MiB pool).
uint64_t budget_for_blocks(int32_t n_blocks, int32_t block_size) {
  EngineConfig ec = test::server_engine_config();
  ec.kv.block_size = block_size;
  auto e = Engine::create(ec);
  EXPECT_TRUE(e.is_ok()) << e.status().to_string();
  if (!e.is_ok()) return 0;
  const uint64_t block_bytes = ec.kv.budget_bytes / static_cast<uint64_t>((*e)->n_kv_blocks());
  return block_bytes * static_cast<uint64_t>(n_blocks) + block_bytes / 2;
}

TEST(StatusCodes, FieldAndNames) {
  const Status s = invalid_argument("\"max_tokens\" must be positive", "max_tokens");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.field(), "max_tokens");
  EXPECT_EQ(invalid_argument("no field").field(), "");
  EXPECT_EQ(cannot_fit("x", "n").field(), "n");
  EXPECT_EQ(cannot_fit("x").code(), StatusCode::kCannotFit);
  EXPECT_EQ(over_capacity("x").code(), StatusCode::kOverCapacity);
  EXPECT_EQ(cancelled("x").code(), StatusCode::kCancelled);
  EXPECT_EQ(cannot_fit("big").to_string(), "cannot fit: big");
  EXPECT_EQ(over_capacity("busy").to_string(), "over capacity: busy");
  EXPECT_EQ(cancelled("bye").to_string(), "cancelled: bye");
}

// The HTTP status and body follow the code; a message that reads like another kind of error
// does not change them, and "param" is the Status's field.
TEST(StatusCodes, HttpMappingIgnoresMessageText) {
  struct Case {
    Status s;
    int http;
    const char* type;
    const char* code;
  };
  const Case cases[] = {
      {invalid_argument("\"top_p\" is bad", "temperature"), 400, "invalid_request_error",
       "invalid_request"},
      {unsupported("queue full", "echo"), 400, "invalid_request_error", "unsupported"},
      {not_found("the server is busy; retry later"), 400, "invalid_request_error",
       "invalid_request"},
      {cannot_fit("too many requests in flight; retry later", "max_tokens"), 400,
       "invalid_request_error", "invalid_request"},
      {over_capacity("\"n\" is invalid"), 429, "rate_limit_error", "queue_full"},
      {cancelled("invalid request"), 503, "server_error", "cancelled"},
      {io_error("\"x\" bad"), 500, "server_error", "internal_error"},
      {internal_error("rate limit"), 500, "server_error", "internal_error"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(openai::http_status_for(c.s), c.http) << c.s.to_string();
    const json b = openai::error_body_for(c.s);
    EXPECT_EQ(b["error"]["type"], c.type) << b;
    EXPECT_EQ(b["error"]["code"], c.code) << b;
    EXPECT_EQ(b["error"]["message"], c.s.message()) << b;
  }
  EXPECT_EQ(openai::error_body_for(cases[0].s)["error"]["param"], "temperature");
  EXPECT_EQ(openai::error_body_for(cases[3].s)["error"]["param"], "max_tokens");
  EXPECT_TRUE(openai::error_body_for(cases[2].s)["error"]["param"].is_null());
}

// The engine: more KV blocks than the pool has is kCannotFit (never retryable), a full queue
// kOverCapacity.
TEST(StatusCodes, EngineSubmitCannotFitVersusOverCapacity) {
  LLMT_REQUIRE_DATA(kServerModel);
  EngineConfig ec = test::server_engine_config();
  ec.model.n_ctx = 256;
  ec.kv.block_size = 16;
  ec.kv.budget_bytes = budget_for_blocks(4, ec.kv.block_size);
  ec.limits.max_queue = 1;
  auto e = Engine::create(ec);
  ASSERT_TRUE(e.is_ok()) << e.status().to_string();
  const int64_t pool_tokens = int64_t{(*e)->n_kv_blocks()} * ec.kv.block_size;
  ASSERT_LT(pool_tokens + 8, ec.model.n_ctx) << "the pool must be smaller than the context";
  ThreadRequest big;
  big.prompt_tokens = {1, 2, 3, 4};
  big.max_tokens = static_cast<int32_t>(pool_tokens);  // 4 + pool_tokens > pool, < n_ctx
  const Status s = (*e)->submit(big).status();
  EXPECT_EQ(s.code(), StatusCode::kCannotFit) << s.to_string();
  EXPECT_EQ(s.field(), "max_tokens");

  ThreadRequest small;
  small.prompt_tokens = {1, 2, 3, 4};
  small.max_tokens = 4;
  small.ignore_eos = true;
  auto first = (*e)->submit(small);
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  const Status full = (*e)->submit(small).status();
  // The first may already have finished on a fast machine; only a refusal is checked.
  if (!full.is_ok()) {
    EXPECT_EQ(full.code(), StatusCode::kOverCapacity) << full.to_string();
  }
  (*e)->cancel(first->id());
}

// The fix: a completion whose prompt + max_tokens fit the context but can never fit the KV pool
// answers 400 invalid_request_error without Retry-After (it was 429 + Retry-After: the client
// would have retried forever).
TEST(ServerErrors, RequestThatCanNeverFitTheKvPoolIs400) {
  LLMT_REQUIRE_DATA(kServerModel);
  EngineConfig ec = test::server_engine_config();
  ec.model.n_ctx = 256;
  ec.kv.block_size = 16;
  ec.kv.budget_bytes = budget_for_blocks(4, ec.kv.block_size);
  test::RunningServer s(test::server_test_options(), ec);
  ASSERT_TRUE(s.engine && s.srv);
  const int64_t pool_tokens = int64_t{s.engine->n_kv_blocks()} * ec.kv.block_size;
  ASSERT_LT(pool_tokens + 16, ec.model.n_ctx) << "the pool must be smaller than the context";
  auto c = s.client();
  int st = 0;
  const json body = {{"prompt", "Once upon a time"},
                     {"max_tokens", static_cast<int>(pool_tokens)},
                     {"temperature", 0}};
  auto r = c->Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(r);
  const json j = test::response_json(r, &st);
  EXPECT_EQ(st, 400) << j;
  test::expect_error_body(j);
  EXPECT_EQ(j["error"]["type"], "invalid_request_error") << j;
  EXPECT_EQ(j["error"]["param"], "max_tokens") << j;
  EXPECT_FALSE(r->has_header("Retry-After"));
  // A request that fits still runs.
  const json ok = test::post_json(
      *c, "/v1/completions", json{{"prompt", "Once"}, {"max_tokens", 4}, {"temperature", 0}}, &st);
  EXPECT_EQ(st, 200) << ok;
}

}  // namespace
}  // namespace llmt
