// OpenAI request/response translation, shared by `llmthreads serve` (the HTTP endpoints) and
// `llmthreads run` (OpenAI Batch API lines): parse and validate a /v1/completions or
// /v1/chat/completions body into engine terms, and build the response bodies, SSE stream chunks
// and OpenAI-style error bodies. No I/O and no HTTP here, so all of it is unit-testable.
//
// Request fields (an explicit allow-list per endpoint; any other top-level field is a 400 naming
// it, see below):
//   model (string), prompt (completions: a string or an array of one string), messages (chat: an
//   array of {role, content}, content a string, null or an array of text parts), max_tokens /
//   max_completion_tokens (positive integer), temperature, top_p, presence_penalty,
//   frequency_penalty (numbers), stop (string or array of non-empty strings), seed (integer),
//   n (integer in [1, kMaxChoices]), stream (bool), stream_options.include_usage (bool), user
//   (string); logprobs: completions an integer in [0, 5] (null = off), chat true / false with
//   top_logprobs an integer in [0, 20] (only with logprobs: true); echo (true) and best_of > 1
//   are rejected as unsupported (400); extensions: priority (integer, higher runs first) and
//   tenant (string; defaults to `user`).
// Sampling fields beyond OpenAI's (llama.cpp's names): top_k (integer >= 0), min_p, typical_p,
//   repeat_penalty (numbers), repeat_last_n (integer), logit_bias ({"id": bias} as OpenAI, or
//   llama.cpp's [[id, bias]]; a bias of false bans the token; ids must be in the vocabulary).
// Constrained output: response_format {"type": "text"}, {"type": "json_object"} (any JSON
//   object; llama.cpp's optional "schema" member narrows it) or {"type": "json_schema",
//   "json_schema": {"name", "schema", "strict"}} (always enforced, strict or not); anything else
//   is a 400 naming response_format. Extensions: grammar (GBNF text) and json_schema (a schema
//   object), as llama.cpp's server; at most one of grammar / json_schema / a constraining
//   response_format.
// Chat roles must be system, developer, user, assistant or tool. Chat also takes tools (rendered
//   by the template), chat_template_kwargs (object), tool_choice (only "auto") and
//   parallel_tool_calls (only true).
// Accepted and ignored, as known not to change the output: metadata, store, service_tier,
//   safety_identifier, prompt_cache_key, cache_prompt (the prefix cache is always on).
// Unknown fields: any other top-level field (llama.cpp's mirostat, tfs_z, dry_*, xtc_*,
//   top_n_sigma, dynatemp_*, samplers, ...; OpenAI's suffix, prediction, audio, modalities,
//   reasoning_effort, functions, ...; a typo) could change the output, so it is refused with a
//   400 (kUnsupported, field() = its name), never ignored. `llmthreads run` applies the same rule
//   to OpenAI batch lines.
//
// Logprobs (see ThreadRequest::logprobs: the model's distribution, before sampling transforms).
// A token's text is its piece as the detokenizer produces it (Tokenizer::token_to_piece; a
// byte-fallback token is its raw byte, which the JSON output shows as U+FFFD when it is not a
// whole character; chat's `bytes` gives the exact bytes). The end-of-generation token that ends
// a choice is not listed (its text is not in the output); tokens of a matched stop string are
// listed although the text is cut before it. Completions: {"tokens", "token_logprobs",
// "top_logprobs": [{text: logprob}] with the `logprobs` most likely tokens plus the sampled one
// when it is not among them (as OpenAI: up to logprobs + 1 entries; tokens with the same text
// keep the higher logprob), "text_offset": where each token starts in the choice's text, in
// Unicode code points from the start of the generated text (echo is not supported, so the prompt
// is never part of it)}. Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs":
// [{"token", "logprob", "bytes"}] with exactly top_logprobs entries, most likely first}]}.
// Streaming chunks carry the entries of the tokens whose text they carry (tokens whose text is
// held back, e.g. part of a character or of a possible stop string, go with the next chunk).
//
// n > 1: the caller runs n threads of the same prompt; choice i samples with seed + i (the
// body's seed, else the server's default), so choice 0 equals the n = 1 answer.
//
// Thread-safety: every function here is pure (no shared state); call from any thread.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/chat-template.h"
#include "llmthreads/engine.h"
#include "llmthreads/grammar.h"
#include "llmthreads/sampling.h"
#include "llmthreads/status.h"
#include "llmthreads/tokenizer.h"

namespace llmt::openai {

enum class Endpoint { kCompletions, kChatCompletions };

// The fields of a completions / chat request body that apply to an LLM thread.
struct OpenAiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;                  // "" when absent
  std::vector<ChatMessage> messages;  // chat
  // Chat: {"messages", "tools", "add_generation_prompt": true, and chat_template_kwargs' keys}
  // as JSON text, what a Jinja template renders (ChatTemplate::render_json).
  std::string chat_json;
  bool has_tools = false;             // chat: a non-empty "tools" array
  std::string prompt;                 // completions
  std::optional<int32_t> max_tokens;  // absent: the caller's default
  SamplingParams sampling;            // the caller's base with the body's fields applied
  std::optional<std::vector<std::string>> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int32_t priority = 0;
  std::string tenant;  // "tenant", else "user", else ""
  int32_t n = 1;       // choices, in [1, kMaxChoices]
  // ThreadRequest::logprobs: -1 = off; completions: the `logprobs` count; chat: `top_logprobs`
  // (0 when absent) when `logprobs` is true.
  int32_t logprobs = -1;
  bool seed_given = false;  // the body had a seed (else the caller may draw a fresh one)
  std::shared_ptr<const Grammar> grammar;  // response_format / grammar / json_schema
};

inline constexpr int32_t kMaxChoices = 16;            // largest n
inline constexpr int32_t kMaxCompletionLogprobs = 5;  // completions' logprobs
inline constexpr int32_t kMaxChatTopLogprobs = 20;    // chat's top_logprobs

// Parses `body` (a JSON object) for `endpoint`. `base` supplies the sampling fields the body does
// not set. Errors: kInvalidArgument (wrong type or range, missing prompt / messages; field() is
// the field at fault when it is a top-level one, which the message starts with in quotes) or
// kUnsupported (best_of > 1, echo, non-text content parts, several prompts, unimplemented
// sampling fields). Compiles the grammar of response_format / grammar / json_schema.
Status parse_openai_request(const nlohmann::json& body, Endpoint endpoint,
                            const SamplingParams& base, OpenAiRequest* out);

// What turning a parsed request into a ThreadRequest needs from the served model.
struct TranslateOptions {
  const Model* model = nullptr;           // tokenizer (required)
  std::string model_name;                 // the served model id; a body naming another one fails
  std::optional<ChatFormat> chat_format;  // chat requests fail without one (or chat_template)
  std::optional<ChatTemplate> chat_template;           // wins over chat_format when set
  ToolCallFamily tool_family = ToolCallFamily::kNone;  // how answers carry tool calls
  bool parse_reasoning = false;   // the template knows <think>: answers give reasoning_content
  std::string chat_format_error;  // why there is none (said to chat clients)
  // The engine that will run the request: to_thread_request() checks the request's limits with
  // its prepare() (the one place they are checked). Null: only tokenized; submit() checks.
  const Engine* engine = nullptr;
  int32_t default_max_tokens = 0;  // when the body has none; 0 = up to the context's end
};

// Tokenizes the prompt (completions: add_special, parse_special as llama.cpp's server does;
// chat: the messages rendered with the chat format plus the assistant opening) into
// ThreadRequest::prompt_tokens and fills sampling, max_tokens, stop, priority, tenant
// (tenant_id()) and logprobs (one thread: the caller makes req.n of them, see choice_seed()).
// Errors: kInvalidArgument for an unknown model or an empty prompt; with an engine, what its
// prepare() returns (a prompt or prompt + max_tokens beyond the context: kInvalidArgument naming
// "prompt" / "max_tokens"; beyond the KV pool: kCannotFit); kUnsupported: chat without a format.
// *info (when not null) gets what the rendered prompt tells about the answer.
struct PromptInfo {
  bool reasoning_open = false;  // chat: prompt_opens_reasoning() of the rendering
};
Result<ThreadRequest> to_thread_request(const OpenAiRequest& req, const TranslateOptions& opt,
                                        PromptInfo* info = nullptr);

// The seed of choice `index` of a request whose sampling seed is `seed`: seed + index (wrapping).
inline uint64_t choice_seed(uint64_t seed, int32_t index) {
  return seed + static_cast<uint64_t>(index);
}

// A stable 64-bit id for a tenant name (FNV-1a; "" -> 0, the engine's default tenant).
uint64_t tenant_id(std::string_view tenant);

// OpenAI's finish_reason for an engine finish reason: "length" for kLength, else "stop".
const char* openai_finish_reason(FinishReason r);

// {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details":
// {"cached_tokens"}}.
nlohmann::json usage_json(const Usage& usage);

// The usage of a request of several choices (one thread each, same prompt): prompt_tokens
// counted once (the first's), completion_tokens summed, cached_tokens the smallest (the prompt
// tokens every choice found in the cache). Zeros for an empty list.
Usage merge_usage(const std::vector<Usage>& per_choice);

// The logprobs of `entries` (engine entries of consecutive generated tokens of one choice) in
// the endpoint's format (see the top of this file); the end-of-generation token is left out.
// Completions: *text_offset is where the first entry's token starts (code points) and is
// advanced past the entries; chat ignores it. `tok` renders token texts.
nlohmann::json logprobs_json(Endpoint endpoint, const Tokenizer& tok,
                             const std::vector<TokenLogprobs>& entries, int64_t* text_offset);

// One choice of a non-streaming response.
struct ChoiceOutput {
  std::string text;
  FinishReason finish = FinishReason::kStop;
  nlohmann::json logprobs;  // null (not requested), or logprobs_json()
  // Chat: parse the text with parse_assistant_output() into content, reasoning_content and
  // tool_calls (finish_reason "tool_calls" when there are calls).
  ToolCallFamily tool_family = ToolCallFamily::kNone;
  bool parse_reasoning = false;
  bool reasoning_open = false;  // prompt_opens_reasoning(): the text is parsed after a "<think>"
};

// The whole non-streaming response: a "text_completion" or "chat.completion" object with the
// choices (index 0..n-1, in order) and usage.
nlohmann::json completion_body(Endpoint endpoint, const std::string& id, const std::string& model,
                               int64_t created, const std::vector<ChoiceOutput>& choices,
                               const Usage& usage);
// One choice without logprobs.
nlohmann::json completion_body(Endpoint endpoint, const std::string& id, const std::string& model,
                               int64_t created, const std::string& text, FinishReason finish,
                               const Usage& usage);

// One streaming chunk ("text_completion" or "chat.completion.chunk"): a choice with `index`,
// `text` (completions) or `delta` (chat: with the role when `first`), `logprobs` (null, or
// logprobs_json() of the chunk's tokens) and finish_reason (null when `finish` is nullptr).
nlohmann::json chunk_body(Endpoint endpoint, const std::string& id, const std::string& model,
                          int64_t created, std::string_view text, const char* finish, bool first,
                          int32_t index = 0, const nlohmann::json& logprobs = nullptr);
// A "chat.completion.chunk" of one choice whose delta is `delta` as given (see
// assistant_delta_json() and tool_calls_delta_json()).
nlohmann::json chat_delta_chunk(const std::string& id, const std::string& model, int64_t created,
                                nlohmann::json delta, const char* finish, int32_t index,
                                const nlohmann::json& logprobs = nullptr);
// A streamed answer's delta: {"content"} and/or {"reasoning_content"}, only those not empty.
nlohmann::json assistant_delta_json(const AssistantDelta& d);
// {"tool_calls": [{"index": k, "id", "type": "function", "function": {"name", "arguments"}}]}:
// every call whole, in one delta (OpenAI may split arguments over several; clients join them).
nlohmann::json tool_calls_delta_json(const std::vector<ParsedToolCall>& calls);
// Whether the rendered chat prompt leaves the answer inside a reasoning block: it ends in
// "<think>" (and whitespace), as DeepSeek-R1's template does; the answer then starts with its
// reasoning and has only the closing "</think>".
bool prompt_opens_reasoning(std::string_view prompt);

// The final usage chunk of a stream with include_usage: no choices, usage set.
nlohmann::json usage_chunk_body(Endpoint endpoint, const std::string& id, const std::string& model,
                                int64_t created, const Usage& usage);

// "data: <json>\n\n".
std::string sse_event(const nlohmann::json& j);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// JSON text; invalid UTF-8 in strings (model output cut mid-character) becomes U+FFFD instead of
// throwing.
std::string dump_json(const nlohmann::json& j);

// {"error": {"message", "type", "param", "code"}} as the OpenAI API returns.
nlohmann::json error_body(std::string_view message, std::string_view type,
                          std::string_view code = {}, std::string_view param = {});
// The HTTP status and error body for a failed Status, from its code alone (never its message):
// kInvalidArgument, kNotFound, kCannotFit (can never run: context or KV pool) and kUnsupported
// -> 400 "invalid_request_error" (code "unsupported" for kUnsupported, else "invalid_request");
// kOverCapacity (a queue limit; retryable) -> 429 "rate_limit_error" "queue_full"; kCancelled ->
// 503 "server_error" "cancelled"; anything else -> 500 "server_error". `param` is Status::field()
// (null when empty).
int http_status_for(const Status& s);
nlohmann::json error_body_for(const Status& s);

}  // namespace llmt::openai
