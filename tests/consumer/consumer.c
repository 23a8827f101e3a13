/* Consumer of the installed C API: greedy-generates from argv[2] with the model argv[1], streams
 * the tokens, checks the stream equals the final text and that bad input is an error value; prints
 * the text on stdout. Exit status 0 only if every check held. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llmthreads/llmthreads.h>

static int check(int ok, const char* what) {
  if (!ok) fprintf(stderr, "consumer-c: FAILED: %s\n", what);
  return ok ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  int failures = 0;
  llmt_error err;
  llmt_engine* engine = NULL;
  llmt_engine_params params;
  llmt_engine_params_init(&params);

  params.model_path = "/nonexistent/model.gguf";
  failures += check(llmt_engine_create(&params, &engine, &err) != LLMT_OK && engine == NULL,
                    "a missing model file is an error");
  failures += check(err.message[0] != '\0' && err.code_name[0] != '\0', "the error has a message");

  params.model_path = argv[1];
  params.n_threads = 1;
  if (llmt_engine_create(&params, &engine, &err) != LLMT_OK) {
    fprintf(stderr, "consumer-c: engine: %s: %s\n", err.code_name, err.message);
    return 1;
  }
  llmt_request req;
  llmt_request_init(&req);
  req.prompt = argv[2];
  req.top_p = 0.0f;
  llmt_thread* thread = NULL;
  failures += check(llmt_submit(engine, &req, &thread, &err) == LLMT_ERR_INVALID_ARGUMENT &&
                        thread == NULL && strstr(err.message, "top_p") != NULL,
                    "top_p = 0 is invalid_argument naming the field");
  req.top_p = 0.95f;

  req.temperature = 0.0f;
  req.max_tokens = 24;
  if (llmt_submit(engine, &req, &thread, &err) != LLMT_OK) {
    fprintf(stderr, "consumer-c: submit: %s\n", err.message);
    return 1;
  }
  char streamed[4096] = {0};
  size_t n_streamed = 0;
  int n_token_events = 0;
  llmt_event ev;
  for (;;) {
    if (llmt_thread_next(thread, -1, &ev) != LLMT_OK) return check(0, "next");
    if (ev.kind == LLMT_EVENT_FINISHED) break;
    if (ev.token >= 0) n_token_events++;
    if (n_streamed + ev.text_len < sizeof(streamed)) {
      memcpy(streamed + n_streamed, ev.text, ev.text_len);
      n_streamed += ev.text_len;
    }
  }
  size_t len = 0;
  const char* text = llmt_thread_text(thread, &len);
  int32_t n_prompt = 0, n_completion = 0;
  llmt_thread_usage(thread, &n_prompt, &n_completion);
  failures +=
      check(strcmp(ev.finish_reason, "length") == 0 || strcmp(ev.finish_reason, "stop") == 0,
            "finished by length or stop");
  failures += check(len == n_streamed && memcmp(text, streamed, len) == 0, "stream == final text");
  failures += check(n_completion == n_token_events && n_completion > 0, "usage counts the tokens");
  failures += check(n_prompt > 0, "usage counts the prompt");
  /* Further calls keep answering FINISHED. */
  failures += check(llmt_thread_next(thread, 0, &ev) == LLMT_OK && ev.kind == LLMT_EVENT_FINISHED,
                    "FINISHED again after the end");
  llmt_stats stats;
  failures += check(llmt_engine_stats(engine, &stats, &err) == LLMT_OK && stats.n_submitted == 1,
                    "stats count the submitted LLM thread");
  /* Cancel: a long generation stops with "cancelled". */
  llmt_thread* longer = NULL;
  req.max_tokens = 100000;
  failures += check(llmt_submit(engine, &req, &longer, &err) == LLMT_ERR_INVALID_ARGUMENT,
                    "max_tokens past the context is invalid_argument");
  req.max_tokens = 200;
  req.temperature = 1.0f;
  if (llmt_submit(engine, &req, &longer, &err) != LLMT_OK) return check(0, "submit long");
  llmt_thread_cancel(longer);
  do {
    if (llmt_thread_next(longer, -1, &ev) != LLMT_OK) return check(0, "next after cancel");
  } while (ev.kind != LLMT_EVENT_FINISHED);
  failures += check(strcmp(ev.finish_reason, "cancelled") == 0, "cancel ends with cancelled");
  llmt_thread_free(longer);
  fwrite(text, 1, len, stdout);
  fputc('\n', stdout);
  llmt_thread_free(thread);
  llmt_engine_free(engine);
  return failures == 0 ? 0 : 1;
}
