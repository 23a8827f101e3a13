// Chat template detection from Jinja template strings and exact rendering per format.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "llmthreads/chat-template.h"

namespace llmt {
namespace {

// Template snippets in the shape of the tokenizer.chat_template strings that ship with the models
// (Jinja source; "\n" inside Jinja string literals is a backslash and an n, as in the GGUF).

// Qwen2 / Qwen2.5 instruct (chatml with a default system prompt).
constexpr const char* kQwen2 =
    R"({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})";

// Phi-4 (chatml markers plus <|im_sep|>).
constexpr const char* kPhi4 =
    R"({% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'assistant') %}{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %})";

// Meta-Llama-3-8B-Instruct.
constexpr const char* kLlama3 =
    R"({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %})";

// Llama 3.1 style (abridged: tool handling left out, markers as in the real one).
constexpr const char* kLlama31 =
    R"({{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %})";

// Llama-2-7b-chat-hf.
constexpr const char* kLlama2Chat =
    R"({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})";

// Mistral-7B-Instruct-v0.2 (no system prompt support, no <<SYS>>).
constexpr const char* kMistral02 =
    R"({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})";

// A llama2 fine-tune with <<SYS>> and "<s>" inside the history (FusionNet-like).
constexpr const char* kLlama2SysBos =
    R"({%- for idx in range(0, messages|length) -%}{%- if messages[idx]['role'] == 'user' -%}{%- if idx > 1 -%}{{- bos_token + '[INST] ' + messages[idx]['content'] + ' [/INST]' -}}{%- else -%}{{- messages[idx]['content'] + ' [/INST]' -}}{%- endif -%}{% elif messages[idx]['role'] == 'system' %}{{- '[INST] <<SYS>>\n' + messages[idx]['content'] + '\n<</SYS>>\n\n' -}}{%- elif messages[idx]['role'] == 'assistant' -%}{{- ' '  + messages[idx]['content'] + ' ' + eos_token -}}{% endif %}{% endfor %})";

// A llama2 fine-tune with <<SYS>>, neither strip() nor BOS in the history.
constexpr const char* kLlama2Sys =
    R"({% for message in messages %}{% if message['role'] == 'system' %}{{ '[INST] <<SYS>>\n' + message['content'] + '\n<</SYS>>\n\n' }}{% elif message['role'] == 'user' %}{{ message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %})";

// Mistral's official v1 template (Mistral-7B-Instruct-v0.1, Mixtral-8x7B-Instruct-v0.1).
constexpr const char* kMistralV1 =
    R"({%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}{{- bos_token }}{%- for message in loop_messages %}{%- if message['role'] == 'user' %}{%- if loop.first and system_message is defined %}{{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token}}{%- endif %}{%- endfor %})";

// Mistral-7B-Instruct-v0.3 (v3: tool markers, no space before [INST]).
constexpr const char* kMistralV3 =
    R"({%- if messages[0]["role"] == "system" %}{%- set system_message = messages[0]["content"] %}{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}{{- bos_token }}{%- for message in loop_messages %}{%- if message["role"] == "user" %}{%- if tools is not none and (message == user_messages[-1]) %}{{- "[AVAILABLE_TOOLS] [" }}{{- "]" }}{{- "[/AVAILABLE_TOOLS]" }}{%- endif %}{%- if loop.last and system_message is defined %}{{- '[INST] ' + system_message + '\n\n' + message["content"] + '[/INST]' }}{%- else %}{{- '[INST] ' + message["content"] + '[/INST]' }}{%- endif %}{%- elif message["role"] == "assistant" %}{{- " " + message["content"]|trim + eos_token}}{%- endif %}{%- endfor %})";

// Mistral-Nemo-Instruct-2407 (v3-tekken: "[INST]" with double quotes, no spaces).
constexpr const char* kMistralV3Tekken =
    R"({%- if messages[0]["role"] == "system" %}{%- set system_message = messages[0]["content"] %}{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}{{- bos_token }}{%- for message in loop_messages %}{%- if message["role"] == "user" %}{%- if tools is not none and (message == user_messages[-1]) %}{{- "[AVAILABLE_TOOLS]" }}{{- "[/AVAILABLE_TOOLS]" }}{%- endif %}{%- if loop.last and system_message is defined %}{{- "[INST]" + system_message + "\n\n" + message["content"] + "[/INST]" }}{%- else %}{{- "[INST]" + message["content"] + "[/INST]" }}{%- endif %}{%- elif message["role"] == "assistant" %}{{- message["content"] + eos_token}}{%- endif %}{%- endfor %})";

// Mistral-Large-Instruct-2411 (v7: [SYSTEM_PROMPT]).
constexpr const char* kMistralV7 =
    R"({{- bos_token }}{%- for message in messages %}{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- elif message['role'] == 'system' %}{{- '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}{%- endif %}{%- endfor %})";

// Phi-3-small.
constexpr const char* kPhi3 =
    R"({{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %})";

// A zephyr-style template (StableLM-2 Zephyr shape: role tags and <|endoftext|>).
constexpr const char* kZephyr =
    R"({% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|endoftext|>\n' }}{% else %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|endoftext|>\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|' + 'assistant' + '|>\n' }}{% endif %})";

// gemma-2-9b-it.
constexpr const char* kGemma =
    R"({{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %})";

// GLM-4 (recognized, not rendered).
constexpr const char* kGlm4 =
    R"([gMASK]<sop>{% for item in messages %}{% if item['content'] %}<|{{ item['role'] }}|>{{ item['metadata'] }}
{{ item['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %})";

ChatFormat detect_ok(const char* tmpl) {
  auto r = detect_chat_format(tmpl);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? *r : ChatFormat::kChatml;
}

TEST(ChatTemplate, DetectsRealTemplates) {
  EXPECT_EQ(detect_ok(kQwen2), ChatFormat::kChatml);
  EXPECT_EQ(detect_ok(kPhi4), ChatFormat::kPhi4);
  EXPECT_EQ(detect_ok(kLlama3), ChatFormat::kLlama3);
  EXPECT_EQ(detect_ok(kLlama31), ChatFormat::kLlama3);
  EXPECT_EQ(detect_ok(kLlama2Chat), ChatFormat::kLlama2SysStrip);
  EXPECT_EQ(detect_ok(kMistral02), ChatFormat::kLlama2);
  EXPECT_EQ(detect_ok(kLlama2SysBos), ChatFormat::kLlama2SysBos);
  EXPECT_EQ(detect_ok(kLlama2Sys), ChatFormat::kLlama2Sys);
  EXPECT_EQ(detect_ok(kMistralV1), ChatFormat::kMistralV1);
  EXPECT_EQ(detect_ok(kMistralV3), ChatFormat::kMistralV3);
  EXPECT_EQ(detect_ok(kMistralV3Tekken), ChatFormat::kMistralV3Tekken);
  EXPECT_EQ(detect_ok(kMistralV7), ChatFormat::kMistralV7);
  EXPECT_EQ(detect_ok(kPhi3), ChatFormat::kPhi3);
  EXPECT_EQ(detect_ok(kZephyr), ChatFormat::kZephyr);
  EXPECT_EQ(detect_ok(kGemma), ChatFormat::kGemma);
}

TEST(ChatTemplate, TemplateThatIsAFormatName) {
  EXPECT_EQ(detect_ok("chatml"), ChatFormat::kChatml);
  EXPECT_EQ(detect_ok("mistral-v7-tekken"), ChatFormat::kMistralV7Tekken);
  EXPECT_EQ(detect_ok("llama3"), ChatFormat::kLlama3);
}

TEST(ChatTemplate, UnknownAndEmptyTemplates) {
  auto unknown = detect_chat_format("{% for m in messages %}{{ m['content'] }}{% endfor %}");
  ASSERT_FALSE(unknown.is_ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnsupported);
  const std::string msg = unknown.status().message();
  for (const char* name : {"chatml", "llama2", "llama3", "mistral-v7", "gemma", "--chat-template"})
    EXPECT_NE(msg.find(name), std::string::npos) << msg;

  auto glm = detect_chat_format(kGlm4);
  ASSERT_FALSE(glm.is_ok());
  EXPECT_EQ(glm.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(glm.status().message().find("chatglm4"), std::string::npos);

  auto empty = detect_chat_format("");
  ASSERT_FALSE(empty.is_ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("chatml"), std::string::npos);
}

TEST(ChatTemplate, NamesRoundTrip) {
  EXPECT_EQ(all_chat_formats().size(), 15u);
  for (ChatFormat f : all_chat_formats()) {
    auto r = chat_format_from_name(chat_format_name(f));
    ASSERT_TRUE(r.is_ok()) << chat_format_name(f);
    EXPECT_EQ(*r, f);
  }
  auto bad = chat_format_from_name("jinja");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("mistral-v3-tekken"), std::string::npos);
  EXPECT_FALSE(chat_format_from_name("").is_ok());
  EXPECT_FALSE(chat_format_from_name("ChatML").is_ok());  // names are exact
}

// system + user + assistant + user; the answer has surrounding spaces to show which formats trim.
const std::vector<ChatMessage> kConversation = {
    {"system", "You are helpful."},
    {"user", "Hello"},
    {"assistant", "  Hi there  "},
    {"user", "How are you?"},
};

std::string render(ChatFormat f, bool gen = true) {
  return render_chat(f, kConversation, gen);
}

TEST(ChatTemplate, RenderChatml) {
  EXPECT_EQ(render(ChatFormat::kChatml),
            "<|im_start|>system\nYou are helpful.<|im_end|>\n"
            "<|im_start|>user\nHello<|im_end|>\n"
            "<|im_start|>assistant\n  Hi there  <|im_end|>\n"
            "<|im_start|>user\nHow are you?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(render_chat(ChatFormat::kChatml, {{"user", "Hi"}}, false),
            "<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatTemplate, RenderLlama2Family) {
  EXPECT_EQ(render(ChatFormat::kLlama2),
            "[INST] You are helpful.\nHello [/INST]  Hi there  </s>[INST] How are you? [/INST]");
  EXPECT_EQ(render(ChatFormat::kLlama2Sys),
            "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHello [/INST]  Hi there  </s>"
            "[INST] How are you? [/INST]");
  EXPECT_EQ(render(ChatFormat::kLlama2SysBos),
            "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHello [/INST]  Hi there  </s>"
            "<s>[INST] How are you? [/INST]");
  EXPECT_EQ(render(ChatFormat::kLlama2SysStrip),
            "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHello [/INST]Hi there</s>"
            "[INST] How are you? [/INST]");
  // The generation prompt flag changes nothing for [INST] formats.
  EXPECT_EQ(render(ChatFormat::kLlama2, false), render(ChatFormat::kLlama2, true));
}

TEST(ChatTemplate, RenderMistral) {
  EXPECT_EQ(
      render(ChatFormat::kMistralV1),
      " [INST] You are helpful.\n\nHello [/INST]   Hi there  </s> [INST] How are you? [/INST]");
  EXPECT_EQ(render(ChatFormat::kMistralV3),
            "[INST] You are helpful.\n\nHello[/INST] Hi there</s>[INST] How are you?[/INST]");
  EXPECT_EQ(render(ChatFormat::kMistralV3Tekken),
            "[INST]You are helpful.\n\nHello[/INST]  Hi there  </s>[INST]How are you?[/INST]");
  EXPECT_EQ(render(ChatFormat::kMistralV7),
            "[SYSTEM_PROMPT] You are helpful.[/SYSTEM_PROMPT][INST] Hello[/INST]   Hi there  </s>"
            "[INST] How are you?[/INST]");
  EXPECT_EQ(render(ChatFormat::kMistralV7Tekken),
            "[SYSTEM_PROMPT]You are helpful.[/SYSTEM_PROMPT][INST]Hello[/INST]  Hi there  </s>"
            "[INST]How are you?[/INST]");
}

TEST(ChatTemplate, RenderLlama3) {
  EXPECT_EQ(render(ChatFormat::kLlama3),
            "<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  const std::string no_gen = render(ChatFormat::kLlama3, false);
  EXPECT_EQ(no_gen.substr(no_gen.size() - 10), "<|eot_id|>");
}

TEST(ChatTemplate, RenderPhiZephyrGemma) {
  EXPECT_EQ(render(ChatFormat::kPhi3),
            "<|system|>\nYou are helpful.<|end|>\n<|user|>\nHello<|end|>\n"
            "<|assistant|>\n  Hi there  <|end|>\n<|user|>\nHow are you?<|end|>\n<|assistant|>\n");
  EXPECT_EQ(render(ChatFormat::kPhi4),
            "<|im_start|>system<|im_sep|>You are helpful.<|im_end|>"
            "<|im_start|>user<|im_sep|>Hello<|im_end|>"
            "<|im_start|>assistant<|im_sep|>  Hi there  <|im_end|>"
            "<|im_start|>user<|im_sep|>How are you?<|im_end|>"
            "<|im_start|>assistant<|im_sep|>");
  EXPECT_EQ(render(ChatFormat::kZephyr),
            "<|system|>\nYou are helpful.<|endoftext|>\n<|user|>\nHello<|endoftext|>\n"
            "<|assistant|>\n  Hi there  <|endoftext|>\n<|user|>\nHow are you?<|endoftext|>\n"
            "<|assistant|>\n");
  EXPECT_EQ(render(ChatFormat::kGemma),
            "<start_of_turn>user\nYou are helpful.\n\nHello<end_of_turn>\n"
            "<start_of_turn>model\nHi there<end_of_turn>\n"
            "<start_of_turn>user\nHow are you?<end_of_turn>\n"
            "<start_of_turn>model\n");
  EXPECT_EQ(render_chat(ChatFormat::kGemma, {{"user", " Hi "}}, false),
            "<start_of_turn>user\nHi<end_of_turn>\n");
}

TEST(ChatTemplate, NoFormatStartsWithBosText) {
  for (ChatFormat f : all_chat_formats()) {
    const std::string s = render(f);
    EXPECT_NE(s.rfind("<s>", 0), 0u) << chat_format_name(f);
    EXPECT_NE(s.rfind("<|begin_of_text|>", 0), 0u) << chat_format_name(f);
    EXPECT_NE(s.rfind("<bos>", 0), 0u) << chat_format_name(f);
  }
  EXPECT_EQ(render_chat(ChatFormat::kChatml, {}, false), "");
}

}  // namespace
}  // namespace llmt
