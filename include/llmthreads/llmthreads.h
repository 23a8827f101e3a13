/* llmthreads C API: load a model into an engine, submit LLM threads, stream their tokens, cancel,
 * free. A thin layer over the C++ Engine (llmthreads/engine.h) for other languages (ctypes, cgo,
 * JNI, Rust bindgen). Plain C99; every struct here is owned by the caller unless said otherwise.
 *
 * Errors: a function that can fail returns an llmt_status (LLMT_OK = 0) and, when `err` is not
 * NULL, fills *err with the code, the library's code name ("invalid_argument", ...) and a message.
 * No call aborts on bad input, and the library keeps no global error state.
 *
 * Thread-safety: llmt_engine_create/llmt_engine_free must not run concurrently with other calls on
 * the same engine. llmt_submit, llmt_thread_cancel and llmt_engine_stats may be called from any
 * number of threads at once. An llmt_thread is for one thread at a time (llmt_thread_next and the
 * accessors); distinct llmt_thread objects are independent. llmt_thread_cancel may be called from
 * any thread while another waits in llmt_thread_next on the same LLM thread. Free every
 * llmt_thread before the engine that made it.
 */
#ifndef LLMTHREADS_LLMTHREADS_H
#define LLMTHREADS_LLMTHREADS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum llmt_status {
  LLMT_OK = 0,
  LLMT_ERR_INVALID_ARGUMENT = 1, /* bad parameter or request field: never works as it is */
  LLMT_ERR_NOT_FOUND = 2,        /* missing file, key, tensor */
  LLMT_ERR_CORRUPT = 3,          /* malformed model file */
  LLMT_ERR_UNSUPPORTED = 4,      /* valid input the engine does not handle (architecture, type) */
  LLMT_ERR_IO = 5,               /* OS-level failure */
  LLMT_ERR_OUT_OF_MEMORY = 6,    /* an allocation or a fixed budget was exceeded */
  LLMT_ERR_INTERNAL = 7,         /* a bug, or a library code this header does not name */
  LLMT_ERR_TIMEOUT = 8,          /* llmt_thread_next: nothing arrived within the timeout */
  LLMT_ERR_CANNOT_FIT = 9,       /* can never run with these limits (context, KV pool): no retry */
  LLMT_ERR_OVER_CAPACITY = 10,   /* a queue or in-flight limit is full now: retry later */
  LLMT_ERR_CANCELLED = 11        /* the operation was cancelled */
} llmt_status;

typedef struct llmt_error {
  llmt_status code;
  char code_name[32]; /* the library's name of the code, e.g. "invalid_argument" */
  char message[480];  /* NUL-terminated, truncated to fit */
} llmt_error;

typedef struct llmt_engine llmt_engine;
typedef struct llmt_thread llmt_thread;

typedef struct llmt_engine_params {
  const char* model_path;   /* GGUF file; required */
  int32_t n_threads;        /* compute threads; 0 = physical cores (default) */
  int32_t n_ctx;            /* positions per LLM thread; 0 = min(training context, 4096) */
  uint64_t kv_budget_bytes; /* KV pool size; default 256 MiB */
  int32_t max_queue;        /* live LLM threads accepted; 0 = unlimited (default) */
} llmt_engine_params;

typedef struct llmt_request {
  const char* prompt;      /* UTF-8 text; required, not empty */
  int32_t max_tokens;      /* default 128 */
  float temperature;       /* 0 = greedy (default 0.8) */
  int32_t top_k;           /* 0 = off (default 40) */
  float top_p;             /* 1 = off (default 0.95) */
  float min_p;             /* 0 = off (default 0.05) */
  float repeat_penalty;    /* 1 = off (default) */
  uint64_t seed;           /* sampling RNG seed */
  int32_t priority;        /* higher runs first (default 0) */
  int32_t add_special;     /* nonzero: BOS etc. as the vocabulary asks (default 1) */
  const char* const* stop; /* n_stop stop strings (not included in the output), may be NULL */
  size_t n_stop;
} llmt_request;

typedef enum llmt_event_kind {
  LLMT_EVENT_TOKEN = 0,   /* a sampled token; `text` is what it completes (may be empty) */
  LLMT_EVENT_FINISHED = 1 /* the LLM thread ended; see finish_reason and llmt_thread_text */
} llmt_event_kind;

typedef struct llmt_event {
  llmt_event_kind kind;
  int32_t token;             /* TOKEN: the id (-1 for held-back text released at the end) */
  const char* text;          /* TOKEN: NUL-terminated; valid until the next call on the thread */
  size_t text_len;           /* its length in bytes */
  const char* finish_reason; /* FINISHED: "stop", "length", "cancelled", "deadline", "error" */
} llmt_event;

typedef struct llmt_stats {
  int64_t n_waiting, n_running, n_swapped;
  int64_t n_submitted, n_finished;
  int64_t generated_tokens, prefill_tokens;
  int64_t kv_blocks_total, kv_blocks_used;
} llmt_stats;

/* "0.1.0": the library version. */
const char* llmt_version(void);

/* Fill with the defaults named above (model_path NULL). */
void llmt_engine_params_init(llmt_engine_params* params);
void llmt_request_init(llmt_request* request);

/* Load the model and start the engine. On success *out owns it (llmt_engine_free). */
llmt_status llmt_engine_create(const llmt_engine_params* params, llmt_engine** out,
                               llmt_error* err);
void llmt_engine_free(llmt_engine* engine); /* cancels live LLM threads; NULL is a no-op */
llmt_status llmt_engine_stats(const llmt_engine* engine, llmt_stats* out, llmt_error* err);

/* Validate and queue one LLM thread. On success *out owns its handle (llmt_thread_free). Errors
 * come back here and nothing is queued then (LLMT_ERR_OVER_CAPACITY: queue full, retry later;
 * LLMT_ERR_CANNOT_FIT: longer than the context or the KV pool, never retry). */
llmt_status llmt_submit(llmt_engine* engine, const llmt_request* request, llmt_thread** out,
                        llmt_error* err);

/* Wait up to timeout_ms (< 0: forever) for the next event. LLMT_ERR_TIMEOUT when none arrived;
 * after the FINISHED event, every further call returns FINISHED again at once. */
llmt_status llmt_thread_next(llmt_thread* thread, int32_t timeout_ms, llmt_event* out);
/* Ask the engine to stop the LLM thread; it finishes with "cancelled" within one step. */
void llmt_thread_cancel(llmt_thread* thread);
/* After FINISHED: the whole generated text (stop string cut) and its length; "" before. The
 * pointer stays valid until llmt_thread_free. */
const char* llmt_thread_text(const llmt_thread* thread, size_t* len);
/* After FINISHED: prompt and generated token counts (0 before). */
void llmt_thread_usage(const llmt_thread* thread, int32_t* prompt_tokens,
                       int32_t* completion_tokens);
void llmt_thread_free(llmt_thread* thread); /* NULL is a no-op; does not cancel */

#ifdef __cplusplus
}
#endif

#endif /* LLMTHREADS_LLMTHREADS_H */
