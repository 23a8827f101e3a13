// The C API (include/llmthreads/llmthreads.h) over the C++ Engine. Each C handle owns the C++
// object it wraps; no state outside them.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "llmthreads/engine.h"
#include "llmthreads/llmthreads.h"

struct llmt_engine {
  std::unique_ptr<llmt::Engine> engine;
};

struct llmt_thread {
  llmt::Engine* engine = nullptr;
  llmt::ThreadHandle handle;
  std::string last_text;    // text of the last TOKEN event handed out
  std::string result_text;  // the whole text once finished
  std::string finish_reason;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  bool finished = false;
};

namespace {

llmt_status c_code(llmt::StatusCode code) {
  switch (code) {
    case llmt::StatusCode::kOk:
      return LLMT_OK;
    case llmt::StatusCode::kInvalidArgument:
      return LLMT_ERR_INVALID_ARGUMENT;
    case llmt::StatusCode::kNotFound:
      return LLMT_ERR_NOT_FOUND;
    case llmt::StatusCode::kCorrupt:
      return LLMT_ERR_CORRUPT;
    case llmt::StatusCode::kUnsupported:
      return LLMT_ERR_UNSUPPORTED;
    case llmt::StatusCode::kIo:
      return LLMT_ERR_IO;
    case llmt::StatusCode::kOutOfMemory:
      return LLMT_ERR_OUT_OF_MEMORY;
    case llmt::StatusCode::kCannotFit:
      return LLMT_ERR_CANNOT_FIT;
    case llmt::StatusCode::kOverCapacity:
      return LLMT_ERR_OVER_CAPACITY;
    case llmt::StatusCode::kCancelled:
      return LLMT_ERR_CANCELLED;
    case llmt::StatusCode::kInternal:
      return LLMT_ERR_INTERNAL;
  }
  return LLMT_ERR_INTERNAL;
}

void copy_bounded(char* dst, size_t cap, const std::string& src) {
  size_t n = std::min(cap - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

llmt_status fail(llmt_error* err, llmt_status code, const char* code_name, const std::string& msg) {
  if (err != nullptr) {
    err->code = code;
    copy_bounded(err->code_name, sizeof(err->code_name), code_name);
    copy_bounded(err->message, sizeof(err->message), msg);
  }
  return code;
}

llmt_status fail(llmt_error* err, const llmt::Status& st) {
  return fail(err, c_code(st.code()), llmt::status_code_name(st.code()), st.message());
}

llmt_status ok(llmt_error* err) {
  if (err != nullptr) {
    err->code = LLMT_OK;
    err->code_name[0] = '\0';
    err->message[0] = '\0';
  }
  return LLMT_OK;
}

void take_result(llmt_thread* t, const llmt::ThreadResult& r) {
  t->finished = true;
  t->result_text = r.text;
  t->finish_reason = llmt::finish_reason_name(r.finish_reason);
  t->prompt_tokens = r.usage.prompt_tokens;
  t->completion_tokens = r.usage.completion_tokens;
}

}  // namespace

extern "C" {

const char* llmt_version(void) {
  return "0.1.0";
}

void llmt_engine_params_init(llmt_engine_params* params) {
  if (params == nullptr) return;
  llmt::EngineConfig defaults;
  *params = llmt_engine_params{};
  params->model_path = nullptr;
  params->n_threads = 0;
  params->n_ctx = 0;
  params->kv_budget_bytes = defaults.kv.budget_bytes;
  params->max_queue = 0;
}

void llmt_request_init(llmt_request* request) {
  if (request == nullptr) return;
  llmt::ThreadRequest defaults;
  *request = llmt_request{};
  request->max_tokens = defaults.max_tokens;
  request->temperature = defaults.sampling.temperature;
  request->top_k = defaults.sampling.top_k;
  request->top_p = defaults.sampling.top_p;
  request->min_p = defaults.sampling.min_p;
  request->repeat_penalty = defaults.sampling.repeat_penalty;
  request->seed = defaults.sampling.seed;
  request->priority = 0;
  request->add_special = 1;
}

llmt_status llmt_engine_create(const llmt_engine_params* params, llmt_engine** out,
                               llmt_error* err) {
  if (out == nullptr)
    return fail(err, LLMT_ERR_INVALID_ARGUMENT, "invalid_argument", "out is NULL");
  *out = nullptr;
  if (params == nullptr || params->model_path == nullptr || params->model_path[0] == '\0') {
    return fail(err, LLMT_ERR_INVALID_ARGUMENT, "invalid_argument", "model_path: required");
  }
  try {
    llmt::EngineConfig config;
    config.model.path = params->model_path;
    config.compute.n_threads = params->n_threads;
    config.model.n_ctx = params->n_ctx;
    config.kv.budget_bytes = params->kv_budget_bytes;
    config.limits.max_queue = params->max_queue;
    auto engine = llmt::Engine::create(config);
    if (!engine.is_ok()) return fail(err, engine.status());
    *out = new llmt_engine{std::move(engine).value()};
    return ok(err);
  } catch (const std::bad_alloc&) {
    return fail(err, LLMT_ERR_OUT_OF_MEMORY, "out_of_memory", "allocation failed");
  } catch (const std::exception& e) {
    return fail(err, LLMT_ERR_INTERNAL, "internal", e.what());
  }
}

void llmt_engine_free(llmt_engine* engine) {
  delete engine;
}

llmt_status llmt_engine_stats(const llmt_engine* engine, llmt_stats* out, llmt_error* err) {
  if (engine == nullptr || out == nullptr) {
    return fail(err, LLMT_ERR_INVALID_ARGUMENT, "invalid_argument", "engine or out is NULL");
  }
  llmt::EngineStats s = engine->engine->stats();
  *out = llmt_stats{s.n_waiting,      s.n_running,       s.n_swapped,
                    s.n_submitted,    s.n_finished,      s.generated_tokens,
                    s.prefill_tokens, s.kv_blocks_total, s.kv_blocks_used};
  return ok(err);
}

llmt_status llmt_submit(llmt_engine* engine, const llmt_request* request, llmt_thread** out,
                        llmt_error* err) {
  if (out == nullptr)
    return fail(err, LLMT_ERR_INVALID_ARGUMENT, "invalid_argument", "out is NULL");
  *out = nullptr;
  if (engine == nullptr || request == nullptr) {
    return fail(err, LLMT_ERR_INVALID_ARGUMENT, "invalid_argument", "engine or request is NULL");
  }
  if (request->prompt == nullptr) {
    return fail(err, LLMT_ERR_INVALID_ARGUMENT, "invalid_argument", "prompt: required");
  }
  if (request->n_stop > 0 && request->stop == nullptr) {
    return fail(err, LLMT_ERR_INVALID_ARGUMENT, "invalid_argument", "stop: NULL with n_stop > 0");
  }
  try {
    llmt::ThreadRequest r;
    r.prompt = request->prompt;
    r.max_tokens = request->max_tokens;
    r.sampling.temperature = request->temperature;
    r.sampling.top_k = request->top_k;
    r.sampling.top_p = request->top_p;
    r.sampling.min_p = request->min_p;
    r.sampling.repeat_penalty = request->repeat_penalty;
    r.sampling.seed = request->seed;
    r.priority = request->priority;
    r.add_special = request->add_special != 0;
    for (size_t i = 0; i < request->n_stop; ++i) {
      if (request->stop[i] == nullptr) {
        return fail(err, LLMT_ERR_INVALID_ARGUMENT, "invalid_argument",
                    "stop[" + std::to_string(i) + "]: NULL");
      }
      r.stop.emplace_back(request->stop[i]);
    }
    auto handle = engine->engine->submit(std::move(r));
    if (!handle.is_ok()) return fail(err, handle.status());
    auto* t = new llmt_thread;
    t->engine = engine->engine.get();
    t->handle = std::move(handle).value();
    *out = t;
    return ok(err);
  } catch (const std::bad_alloc&) {
    return fail(err, LLMT_ERR_OUT_OF_MEMORY, "out_of_memory", "allocation failed");
  } catch (const std::exception& e) {
    return fail(err, LLMT_ERR_INTERNAL, "internal", e.what());
  }
}

llmt_status llmt_thread_next(llmt_thread* thread, int32_t timeout_ms, llmt_event* out) {
  if (thread == nullptr || out == nullptr) return LLMT_ERR_INVALID_ARGUMENT;
  *out = llmt_event{};
  if (!thread->finished) {
    auto timeout = timeout_ms < 0 ? std::chrono::milliseconds(std::chrono::hours(24 * 365))
                                  : std::chrono::milliseconds(timeout_ms);
    std::optional<llmt::ThreadEvent> ev = thread->handle.next(timeout);
    if (!ev.has_value()) {
      // Timeout, or the finish event was consumed elsewhere: done() tells them apart.
      if (!thread->handle.done()) return LLMT_ERR_TIMEOUT;
      take_result(thread, thread->handle.wait());
    } else if (ev->kind == llmt::ThreadEvent::Kind::kToken) {
      thread->last_text = std::move(ev->text);
      out->kind = LLMT_EVENT_TOKEN;
      out->token = ev->token;
      out->text = thread->last_text.c_str();
      out->text_len = thread->last_text.size();
      return LLMT_OK;
    } else {
      take_result(thread, ev->result ? *ev->result : thread->handle.wait());
    }
  }
  out->kind = LLMT_EVENT_FINISHED;
  out->token = -1;
  out->text = "";
  out->text_len = 0;
  out->finish_reason = thread->finish_reason.c_str();
  return LLMT_OK;
}

void llmt_thread_cancel(llmt_thread* thread) {
  if (thread != nullptr && thread->engine != nullptr) thread->engine->cancel(thread->handle.id());
}

const char* llmt_thread_text(const llmt_thread* thread, size_t* len) {
  if (thread == nullptr) {
    if (len != nullptr) *len = 0;
    return "";
  }
  if (len != nullptr) *len = thread->result_text.size();
  return thread->result_text.c_str();
}

void llmt_thread_usage(const llmt_thread* thread, int32_t* prompt_tokens,
                       int32_t* completion_tokens) {
  if (prompt_tokens != nullptr) *prompt_tokens = thread != nullptr ? thread->prompt_tokens : 0;
  if (completion_tokens != nullptr) {
    *completion_tokens = thread != nullptr ? thread->completion_tokens : 0;
  }
}

void llmt_thread_free(llmt_thread* thread) {
  delete thread;
}

}  // extern "C"
