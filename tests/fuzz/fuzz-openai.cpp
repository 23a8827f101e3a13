// libFuzzer target: the OpenAI request translation (tools/common/openai) on arbitrary bytes read
// as a JSON body, for both endpoints, then to a ThreadRequest against a real model's tokenizer and
// an engine's limits (stories260K, n_ctx 512, with the ChatML format so chat requests are rendered
// too; nothing is submitted). The contract: any body yields either a request within the context
// or an error Status naming the problem, never a crash, a hang or UB.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/openai.h"
#include "llmthreads/chat-template.h"
#include "llmthreads/engine.h"
#include "llmthreads/model.h"

namespace {

// Loaded once per process (libFuzzer calls the target many times); immutable afterwards.
const llmt::Model& model() {
  static const std::shared_ptr<const llmt::Model> m = [] {
    const char* env = std::getenv("LLMT_DATA");
    std::string path = std::string(env != nullptr ? env : LLMT_DATA) + "/models/stories260K.gguf";
    auto r = llmt::Model::load(path);
    if (!r.is_ok()) {
      std::fprintf(stderr, "fuzz-openai: %s\n", r.status().message().c_str());
      std::abort();
    }
    return std::move(r).value();
  }();
  return *m;
}

constexpr int32_t kCtx = 512;

// Created once per process like the model; only its const prepare() is called.
const llmt::Engine& engine() {
  static const std::unique_ptr<llmt::Engine> e = [] {
    llmt::EngineConfig c;
    c.model.model = std::shared_ptr<const llmt::Model>(&model(), [](const llmt::Model*) {});
    c.model.n_ctx = kCtx;
    c.compute.n_threads = 1;
    c.kv.budget_bytes = uint64_t{8} << 20;
    c.sched.measure_costs = false;
    auto r = llmt::Engine::create(c);
    if (!r.is_ok()) {
      std::fprintf(stderr, "fuzz-openai: %s\n", r.status().message().c_str());
      std::abort();
    }
    return std::move(r).value();
  }();
  return *e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using llmt::openai::Endpoint;
  nlohmann::json body =
      nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  for (Endpoint ep : {Endpoint::kCompletions, Endpoint::kChatCompletions}) {
    llmt::openai::OpenAiRequest req;
    llmt::Status st = llmt::openai::parse_openai_request(body, ep, llmt::SamplingParams{}, &req);
    if (!st.is_ok()) {
      (void)llmt::openai::error_body_for(st);
      continue;
    }
    llmt::openai::TranslateOptions opt;
    opt.model = &model();
    opt.model_name = "stories260K";
    opt.chat_format = llmt::ChatFormat::kChatml;
    opt.engine = &engine();
    opt.default_max_tokens = 16;
    auto tr = llmt::openai::to_thread_request(req, opt);
    if (tr.is_ok()) {
      if (static_cast<int32_t>(tr->prompt_tokens.size()) + tr->max_tokens > kCtx ||
          tr->max_tokens < 1) {
        std::fprintf(stderr, "fuzz-openai: accepted a request past n_ctx or without max_tokens\n");
        std::abort();
      }
      (void)tr->sampling.validate();
    }
  }
  return 0;
}
