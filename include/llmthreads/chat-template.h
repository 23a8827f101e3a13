// Chat templates without Jinja: the common formats are recognized from distinctive substrings of
// the GGUF `tokenizer.chat_template` string (the same heuristics, in the same precedence, as
// llama.cpp's llm_chat_detect_template) and rendered by hand. The rendered text matches what
// llama.cpp's built-in renderer (llm_chat_apply_template) produces for the same format, so
// `--chat` prompts are comparable with llama.cpp's; it can differ in whitespace from what the
// model's Jinja template itself would render.
//
// BOS: the rendered text never starts with a BOS token text. As in llama.cpp, the caller tokenizes
// it with TokenizeOptions{add_special = true, parse_special = true}: the tokenizer adds BOS when
// the vocabulary asks for it (add_bos), and special-token texts inside the rendered string
// ("<|im_start|>", "[INST]", "<|eot_id|>", "</s>", ...) become their control tokens. Formats that
// close assistant turns with "</s>" (llama2*, mistral*) contain that EOS text, and llama2-sys-bos
// also puts "<s>" before every [INST] after the first; with parse_special these become EOS / BOS.
// Message contents are inserted verbatim: special-token text typed by a user is parsed as special
// too (llama.cpp behaves the same way).
//
// Thread-safety: every function here is pure (no shared state); call from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"

namespace llmt {

class Tokenizer;

enum class ChatFormat {
  kChatml,           // "chatml":   <|im_start|>role\n...<|im_end|>\n (Qwen, Yi, many fine-tunes)
  kLlama2,           // "llama2":   [INST] ... [/INST]; system text prepended without <<SYS>>
  kLlama2Sys,        // "llama2-sys": as llama2, system in <<SYS>>\n...\n<</SYS>>\n\n
  kLlama2SysBos,     // "llama2-sys-bos": as llama2-sys, "<s>" before each later [INST]
  kLlama2SysStrip,   // "llama2-sys-strip": as llama2-sys, contents trimmed (Llama-2-chat)
  kMistralV1,        // "mistral-v1":  " [INST] sys\n\nuser [/INST] answer</s>"
  kMistralV3,        // "mistral-v3":  "[INST] sys\n\nuser[/INST] answer</s>" (answer trimmed)
  kMistralV3Tekken,  // "mistral-v3-tekken": "[INST]sys\n\nuser[/INST]answer</s>"
  kMistralV7,        // "mistral-v7":  "[SYSTEM_PROMPT] s[/SYSTEM_PROMPT][INST] u[/INST] a</s>"
  kMistralV7Tekken,  // "mistral-v7-tekken": as mistral-v7 without the spaces (by name only)
  kLlama3,           // "llama3":  <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
  kPhi3,             // "phi3":    <|role|>\n...<|end|>\n
  kPhi4,             // "phi4":    <|im_start|>role<|im_sep|>...<|im_end|>
  kZephyr,           // "zephyr":  <|role|>\n...<|endoftext|>\n
  kGemma,            // "gemma":   <start_of_turn>user|model\n...<end_of_turn>\n; system merged
                     //            into the next user turn
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (others: see render_chat)
  std::string content;
};

// The --chat-template name of a format ("chatml", "llama2-sys", ...).
std::string_view chat_format_name(ChatFormat format);
// Every format this file renders, in enum order.
std::span<const ChatFormat> all_chat_formats();
// "chatml, llama2, ..." (for messages and --help text).
std::string chat_format_names();

// Recognizes a format from a Jinja chat template. A template that is exactly a format name
// ("chatml") gives that format, as in llama.cpp. Empty -> invalid_argument; a template that is not
// recognized, or recognized as a family we do not render (e.g. chatglm, falcon3, deepseek),
// -> unsupported, with a message listing the recognized formats and suggesting
// `--chat-template NAME`.
Result<ChatFormat> detect_chat_format(std::string_view jinja_template);

// A format by its name (chat_format_name); unknown names -> invalid_argument listing the names.
Result<ChatFormat> chat_format_from_name(std::string_view name);

// Renders a conversation. Role handling: chatml, phi3, phi4, zephyr and llama3 write the role
// string as given; gemma writes "assistant" as "model", and folds "system" messages into the next
// non-assistant turn; the [INST] formats treat "system" and "user" specially and every other role
// as an assistant turn. add_generation_prompt appends the opening of an assistant turn; the
// [INST] formats ignore it (their text already ends where the answer begins).
std::string render_chat(ChatFormat format, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt);

// ---------------------------------------------------------------------------------------------
// Jinja chat templates, rendered as Hugging Face transformers' apply_chat_template does with
// python3-jinja2 (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols;
// `tojson` = json.dumps without ASCII escaping; globals raise_exception, strftime_now,
// namespace, range, dict). The interpreter is our own (src/tokenizer/jinja-*.cpp) and covers the
// subset real chat templates use: {{ }}, if/elif/else, for (else, loop.*, tuple targets,
// inline `if`), set (names, tuples, namespace attributes, blocks), macro, break/continue,
// generation, raw, comments and whitespace control; Python's None/undefined/str/list/dict
// semantics, slicing, str/dict methods, and the common filters and tests. A template that
// raises, calls something unknown or exceeds the limits is an error value, never a crash.
// Case mapping (upper/lower/title) is ASCII-only.
// ---------------------------------------------------------------------------------------------

struct JinjaLimits {
  size_t max_output_bytes = 8u << 20;  // the rendered text and any string built on the way
  uint64_t max_steps = 20'000'000;     // statements, loop iterations, calls and filters
  int max_depth = 200;                 // nesting of the source, and of macro calls
};

// The roles a chat message may have; any other is invalid_argument.
bool is_known_chat_role(std::string_view role);

// A chat template as the engine uses it: one of the built-in formats, or a Jinja template.
// Thread-safety: immutable after creation; copies share the parsed template; render*() may be
// called from any number of threads at once.
class ChatTemplate {
 public:
  // A built-in format (render_chat).
  static ChatTemplate from_format(ChatFormat format);
  // Parses Jinja source; syntax errors (with the line) -> invalid_argument. `origin` says where
  // it came from ("GGUF tokenizer.chat_template", "file t.jinja"). `bos_token`/`eos_token`
  // are the template variables of those names.
  static Result<ChatTemplate> from_jinja(std::string_view source, std::string origin,
                                         std::string bos_token, std::string eos_token,
                                         const JinjaLimits& limits = {});
  // What `--chat-template OPTION` selects: "" -> the GGUF's template (`gguf_template`; an
  // absent one is not_found naming the built-in formats); a built-in format name; otherwise the
  // path of a Jinja file (neither a name nor a readable file -> invalid_argument). bos/eos come
  // from `tok` (may be null: empty strings).
  static Result<ChatTemplate> select(std::string_view option, std::string_view gguf_template,
                                     const Tokenizer* tok, const JinjaLimits& limits = {});

  bool is_jinja() const { return jinja_ != nullptr; }
  std::optional<ChatFormat> format() const { return format_; }
  // One line for `info` and logs: "built-in chatml", "Jinja from GGUF tokenizer.chat_template".
  const std::string& description() const { return description_; }
  const std::string& bos_token() const { return bos_token_; }

  // Renders a chat request given as a JSON object: "messages" (required; the OpenAI shape:
  // role, content (string, null or a list of parts), tool_calls, ...), optional "tools",
  // "add_generation_prompt" (default false) and any other keys as extra template variables
  // (e.g. "enable_thinking"). Keys keep their order (tojson output matches Python's). Bad
  // JSON, a message without a string role, an unknown role (is_known_chat_role), or a template
  // that raises -> invalid_argument with the template's message. Built-in formats accept only
  // string contents and the roles they can write. The text is exact: a BOS the template
  // writes stays.
  Result<std::string> render_json(std::string_view request_json) const;
  // The same for plain messages.
  Result<std::string> render(const std::vector<ChatMessage>& messages,
                             bool add_generation_prompt) const;
  // As render(), for a prompt that the caller tokenizes with add_special (and parse_special):
  // when the tokenizer adds BOS itself (`tokenizer_adds_bos`), a leading BOS text written by
  // the template is removed so the prompt has one BOS (as llama.cpp does).
  Result<std::string> render_prompt(const std::vector<ChatMessage>& messages,
                                    bool add_generation_prompt, bool tokenizer_adds_bos) const;
  Result<std::string> render_prompt_json(std::string_view request_json,
                                         bool tokenizer_adds_bos) const;

  // Tests: the time strftime_now formats (default: the local time at each render).
  void set_fixed_time(const std::tm& t) { fixed_time_ = t; }

  struct Jinja;  // implementation (chat-jinja.cpp)

  // The source of a Jinja template ("" for built-in formats).
  const std::string& source() const { return source_; }

 private:
  std::optional<ChatFormat> format_;
  std::shared_ptr<const Jinja> jinja_;
  std::string description_;
  std::string bos_token_, eos_token_;
  std::optional<std::tm> fixed_time_;
  std::string source_;
};

// ---------------------------------------------------------------------------------------------
// Tool calls and reasoning in a model's output (src/tokenizer/tool-calls.cpp).
// ---------------------------------------------------------------------------------------------

// How a template family writes tool calls, which is how its models answer with them:
//  kHermes    Qwen2.5/Qwen3, Hermes: <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>
//             (one block per call);
//  kLlama3    Llama 3.1/3.2/3.3: the whole answer is {"name": ..., "parameters": {...}} (or
//             "arguments"), optionally after <|python_tag|>; several calls separated by ';'
//             or given as a JSON array;
//  kDeepseek  DeepSeek V3/R1: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
//             \n```json\nARGS\n```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>.
enum class ToolCallFamily { kNone, kHermes, kLlama3, kDeepseek };

// Recognizes the family from a Jinja template's source (distinctive markers); kNone when the
// template writes no tool calls we know.
ToolCallFamily detect_tool_call_family(std::string_view jinja_source);
std::string_view tool_call_family_name(ToolCallFamily family);  // "none", "hermes", ...

struct ParsedToolCall {
  std::string id;  // "call_0", "call_1", ... in order
  std::string name;
  std::string arguments;  // JSON text (an object, compact); a string argument is kept verbatim
};

struct ParsedAssistantMessage {
  // The text outside reasoning and tool calls, trimmed; the text exactly as given when neither
  // was found.
  std::string content;
  std::string reasoning_content;  // the <think> ... </think> text, trimmed ("" when none)
  std::vector<ParsedToolCall> tool_calls;
};

// Parses generated text (decoded with its special-token texts, e.g. render_special) into an
// OpenAI assistant message: with `parse_reasoning`, text up to "</think>" (after an optional
// leading "<think>"; all of it after "<think>" when the close is missing) becomes
// reasoning_content; then the family's tool calls are taken out. A call that does not parse
// (bad JSON, no name) stays in `content` as text: this never fails.
// Thread-safety: pure.
ParsedAssistantMessage parse_assistant_output(std::string_view text, ToolCallFamily family,
                                              bool parse_reasoning = true);

// What a streamed answer may send now: new content and reasoning text.
struct AssistantDelta {
  std::string content;
  std::string reasoning_content;
  bool empty() const { return content.empty() && reasoning_content.empty(); }
};

// parse_assistant_output() for a streamed answer: fed the generated text piece by piece, it
// returns what can be sent at once, holding back only what may still turn out to be a marker
// (a partial "</think>", "<tool_call>", ...), a tool call (from its start marker to the end; for
// kLlama3 a whole answer that starts like one), and whitespace that may end up trimmed. finish()
// parses the whole text as parse_assistant_output() does and returns the rest, so that the
// concatenated deltas equal its content and reasoning_content, with its tool calls. Exceptions,
// where already-sent text cannot be taken back: leading whitespace of an answer without
// reasoning is sent as is (parse_assistant_output trims it only when a tool call is found), and a
// "</think>" without an opening "<think>" leaves the text before it as content (give
// reasoning_open when the prompt ends in "<think>", as DeepSeek-R1's template does: the answer is
// then parsed as if it began with "<think>", streamed or not).
// Thread-safety: none (one per streamed choice).
class AssistantStreamParser {
 public:
  AssistantStreamParser(ToolCallFamily family, bool parse_reasoning, bool reasoning_open);
  AssistantDelta feed(std::string_view piece);
  struct Final {
    AssistantDelta rest;
    std::vector<ParsedToolCall> tool_calls;
  };
  Final finish();

 private:
  ToolCallFamily family_;
  bool parse_reasoning_;
  std::string text_;  // the answer so far ("<think>" first with reasoning_open)
  std::string sent_content_, sent_reasoning_;
};

}  // namespace llmt
