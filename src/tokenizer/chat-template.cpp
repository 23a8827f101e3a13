// Chat template detection (substring heuristics) and rendering. See chat-template.h.
#include "llmthreads/chat-template.h"

#include <array>
#include <string>

namespace llmt {

namespace {

struct FormatName {
  ChatFormat format;
  std::string_view name;
};

constexpr std::array<FormatName, 15> kFormatNames = {{
    {ChatFormat::kChatml, "chatml"},
    {ChatFormat::kLlama2, "llama2"},
    {ChatFormat::kLlama2Sys, "llama2-sys"},
    {ChatFormat::kLlama2SysBos, "llama2-sys-bos"},
    {ChatFormat::kLlama2SysStrip, "llama2-sys-strip"},
    {ChatFormat::kMistralV1, "mistral-v1"},
    {ChatFormat::kMistralV3, "mistral-v3"},
    {ChatFormat::kMistralV3Tekken, "mistral-v3-tekken"},
    {ChatFormat::kMistralV7, "mistral-v7"},
    {ChatFormat::kMistralV7Tekken, "mistral-v7-tekken"},
    {ChatFormat::kLlama3, "llama3"},
    {ChatFormat::kPhi3, "phi3"},
    {ChatFormat::kPhi4, "phi4"},
    {ChatFormat::kZephyr, "zephyr"},
    {ChatFormat::kGemma, "gemma"},
}};

// C-locale isspace, as llama.cpp's trim.
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

std::string_view trim(std::string_view s) {
  size_t b = 0;
  size_t e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

Status not_rendered(std::string_view family) {
  return unsupported("chat template looks like the '" + std::string(family) +
                     "' format, which is not supported; supported formats: " + chat_format_names() +
                     " (choose one with --chat-template NAME)");
}

// The [INST] family. Mirrors the precedence of llama.cpp's detection: v7 by [SYSTEM_PROMPT],
// official v1/v3 templates by their system/tool markers, otherwise llama2 variants.
ChatFormat detect_inst_family(std::string_view t) {
  auto has = [t](std::string_view s) { return t.find(s) != std::string_view::npos; };
  if (has("[SYSTEM_PROMPT]")) return ChatFormat::kMistralV7;
  if (has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]")) {
    if (has(" [INST]")) return ChatFormat::kMistralV1;
    if (has("\"[INST]\"")) return ChatFormat::kMistralV3Tekken;
    return ChatFormat::kMistralV3;
  }
  if (has("content.strip()")) return ChatFormat::kLlama2SysStrip;
  if (has("bos_token + '[INST]")) return ChatFormat::kLlama2SysBos;
  if (has("<<SYS>>")) return ChatFormat::kLlama2Sys;
  return ChatFormat::kLlama2;
}

void render_llama2(ChatFormat format, const std::vector<ChatMessage>& messages, std::string& out) {
  const bool system_block = format != ChatFormat::kLlama2;
  const bool bos_in_history = format == ChatFormat::kLlama2SysBos;
  const bool strip = format == ChatFormat::kLlama2SysStrip;
  bool inside_turn = true;  // the first "[INST] " is written up front (BOS comes from tokenizer)
  out += "[INST] ";
  for (const ChatMessage& m : messages) {
    const std::string_view content = strip ? trim(m.content) : std::string_view(m.content);
    if (!inside_turn) {
      inside_turn = true;
      out += bos_in_history ? "<s>[INST] " : "[INST] ";
    }
    if (m.role == "system") {
      if (system_block) {
        out += "<<SYS>>\n";
        out += content;
        out += "\n<</SYS>>\n\n";
      } else {
        out += content;
        out += "\n";
      }
    } else if (m.role == "user") {
      out += content;
      out += " [/INST]";
    } else {
      out += content;
      out += "</s>";
      inside_turn = false;
    }
  }
}

void render_mistral_v1_v3(ChatFormat format, const std::vector<ChatMessage>& messages,
                          std::string& out) {
  const std::string_view lead = format == ChatFormat::kMistralV1 ? " " : "";
  const std::string_view trail = format == ChatFormat::kMistralV3Tekken ? "" : " ";
  const bool trim_answer = format == ChatFormat::kMistralV3;
  bool inside_turn = false;
  for (const ChatMessage& m : messages) {
    if (!inside_turn) {
      out += lead;
      out += "[INST]";
      out += trail;
      inside_turn = true;
    }
    if (m.role == "system") {
      out += m.content;
      out += "\n\n";
    } else if (m.role == "user") {
      out += m.content;
      out += lead;
      out += "[/INST]";
    } else {
      out += trail;
      out += trim_answer ? trim(m.content) : std::string_view(m.content);
      out += "</s>";
      inside_turn = false;
    }
  }
}

void render_mistral_v7(ChatFormat format, const std::vector<ChatMessage>& messages,
                       std::string& out) {
  const std::string_view sp = format == ChatFormat::kMistralV7 ? " " : "";
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      out += "[SYSTEM_PROMPT]";
      out += sp;
      out += m.content;
      out += "[/SYSTEM_PROMPT]";
    } else if (m.role == "user") {
      out += "[INST]";
      out += sp;
      out += m.content;
      out += "[/INST]";
    } else {
      out += sp;
      out += m.content;
      out += "</s>";
    }
  }
}

void render_gemma(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                  std::string& out) {
  std::string system_prompt;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      system_prompt += trim(m.content);
      continue;
    }
    const std::string_view role = m.role == "assistant" ? std::string_view("model") : m.role;
    out += "<start_of_turn>";
    out += role;
    out += "\n";
    if (!system_prompt.empty() && role != "model") {
      out += system_prompt;
      out += "\n\n";
      system_prompt.clear();
    }
    out += trim(m.content);
    out += "<end_of_turn>\n";
  }
  if (add_generation_prompt) out += "<start_of_turn>model\n";
}

}  // namespace

std::string_view chat_format_name(ChatFormat format) {
  for (const FormatName& f : kFormatNames)
    if (f.format == format) return f.name;
  return "unknown";
}

std::span<const ChatFormat> all_chat_formats() {
  static constexpr std::array<ChatFormat, kFormatNames.size()> kFormats = [] {
    std::array<ChatFormat, kFormatNames.size()> a{};
    for (size_t i = 0; i < kFormatNames.size(); ++i) a[i] = kFormatNames[i].format;
    return a;
  }();
  return kFormats;
}

std::string chat_format_names() {
  std::string out;
  for (const FormatName& f : kFormatNames) {
    if (!out.empty()) out += ", ";
    out += f.name;
  }
  return out;
}

Result<ChatFormat> chat_format_from_name(std::string_view name) {
  for (const FormatName& f : kFormatNames)
    if (f.name == name) return f.format;
  return invalid_argument("unknown chat template name '" + std::string(name) +
                          "'; known names: " + chat_format_names());
}

Result<ChatFormat> detect_chat_format(std::string_view t) {
  if (t.empty())
    return invalid_argument(
        "the chat template is empty; choose a format with --chat-template "
        "NAME, one of: " +
        chat_format_names());
  for (const FormatName& f : kFormatNames)
    if (f.name == t) return f.format;

  auto has = [t](std::string_view s) { return t.find(s) != std::string_view::npos; };
  // Same order as llama.cpp: earlier rules win when a template matches several.
  if (has("<|im_start|>")) {
    if (has("<|im_sep|>")) return ChatFormat::kPhi4;
    if (has("<end_of_utterance>")) return not_rendered("smolvlm");
    return ChatFormat::kChatml;
  }
  if (t.substr(0, 7) == "mistral" || has("[INST]")) return detect_inst_family(t);
  if (has("<|assistant|>") && has("<|end|>")) return ChatFormat::kPhi3;
  if (has("[gMASK]<sop>")) return not_rendered("chatglm4");
  if (has("<|assistant|>") && has("<|user|>"))
    return not_rendered(has("</s>") ? "falcon3" : "glmedge");
  if (has("<|user|>") && has("<|endoftext|>")) return ChatFormat::kZephyr;
  if (has("bos_token + message['role']")) return not_rendered("monarch");
  if (has("<start_of_turn>")) return ChatFormat::kGemma;
  if (has("GPT4 Correct ")) return not_rendered("openchat");
  if (has("USER: ") && has("ASSISTANT: ")) return not_rendered("vicuna");
  if (has("### Instruction:") && has("<|EOT|>")) return not_rendered("deepseek");
  if (has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>")) return not_rendered("command-r");
  if (has("<|start_header_id|>") && has("<|end_header_id|>")) return ChatFormat::kLlama3;
  if (has("<|header_start|>") && has("<|header_end|>")) return not_rendered("llama4");
  return unsupported("chat template not recognized; supported formats: " + chat_format_names() +
                     " (choose one with --chat-template NAME)");
}

std::string render_chat(ChatFormat format, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt) {
  std::string out;
  switch (format) {
    case ChatFormat::kChatml:
      for (const ChatMessage& m : messages)
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      break;
    case ChatFormat::kLlama2:
    case ChatFormat::kLlama2Sys:
    case ChatFormat::kLlama2SysBos:
    case ChatFormat::kLlama2SysStrip:
      render_llama2(format, messages, out);
      break;
    case ChatFormat::kMistralV1:
    case ChatFormat::kMistralV3:
    case ChatFormat::kMistralV3Tekken:
      render_mistral_v1_v3(format, messages, out);
      break;
    case ChatFormat::kMistralV7:
    case ChatFormat::kMistralV7Tekken:
      render_mistral_v7(format, messages, out);
      break;
    case ChatFormat::kLlama3:
      for (const ChatMessage& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n";
        out += trim(m.content);
        out += "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatFormat::kPhi3:
      for (const ChatMessage& m : messages) out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
      if (add_generation_prompt) out += "<|assistant|>\n";
      break;
    case ChatFormat::kPhi4:
      for (const ChatMessage& m : messages)
        out += "<|im_start|>" + m.role + "<|im_sep|>" + m.content + "<|im_end|>";
      if (add_generation_prompt) out += "<|im_start|>assistant<|im_sep|>";
      break;
    case ChatFormat::kZephyr:
      for (const ChatMessage& m : messages)
        out += "<|" + m.role + "|>\n" + m.content + "<|endoftext|>\n";
      if (add_generation_prompt) out += "<|assistant|>\n";
      break;
    case ChatFormat::kGemma:
      render_gemma(messages, add_generation_prompt, out);
      break;
  }
  return out;
}

}  // namespace llmt
