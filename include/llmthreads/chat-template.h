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

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"

namespace llmt {

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

}  // namespace llmt
