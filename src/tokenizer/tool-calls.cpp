// Tool calls and <think> reasoning parsed out of generated text. See chat-template.h.
#include <nlohmann/json.hpp>

#include "llmthreads/chat-template.h"

namespace llmt {
namespace {

using ojson = nlohmann::ordered_json;

constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kThinkClose = "</think>";
constexpr std::string_view kHermesOpen = "<tool_call>";
constexpr std::string_view kHermesClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";
// DeepSeek markers (U+FF5C fullwidth bar, U+2581 lower block).
constexpr std::string_view kDsCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr std::string_view kDsCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kDsCallBegin = "<｜tool▁call▁begin｜>";
constexpr std::string_view kDsCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kDsSep = "<｜tool▁sep｜>";
constexpr std::string_view kDsEos = "<｜end▁of▁sentence｜>";

bool has(std::string_view s, std::string_view what) {
  return s.find(what) != std::string_view::npos;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  auto sp = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  };
  while (b < e && sp(s[b])) ++b;
  while (e > b && sp(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

// The JSON text of an arguments value: objects compact (insertion order kept), strings as is.
std::string arguments_text(const ojson& args) {
  if (args.is_string()) return args.get<std::string>();
  return args.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

// A {"name": ..., "arguments"|"parameters": ...} object as a call; false when it is not one.
bool call_from_object(const ojson& j, ParsedToolCall* out) {
  if (!j.is_object()) return false;
  const ojson* obj = &j;
  if (j.contains("function") && j["function"].is_object()) obj = &j["function"];
  if (!obj->contains("name") || !(*obj)["name"].is_string()) return false;
  out->name = (*obj)["name"].get<std::string>();
  if (obj->contains("arguments")) {
    out->arguments = arguments_text((*obj)["arguments"]);
  } else if (obj->contains("parameters")) {
    out->arguments = arguments_text((*obj)["parameters"]);
  } else {
    out->arguments = "{}";
  }
  return true;
}

bool parse_json(std::string_view text, ojson* out) {
  *out = ojson::parse(text, nullptr, /*allow_exceptions=*/false);
  return !out->is_discarded();
}

void parse_hermes(std::string_view text, ParsedAssistantMessage* msg) {
  std::string content;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t open = text.find(kHermesOpen, pos);
    if (open == std::string_view::npos) break;
    const size_t body = open + kHermesOpen.size();
    size_t close = text.find(kHermesClose, body);
    const size_t end = close == std::string_view::npos ? text.size() : close + kHermesClose.size();
    if (close == std::string_view::npos) close = text.size();
    ojson j;
    ParsedToolCall call;
    if (parse_json(trim(text.substr(body, close - body)), &j) && call_from_object(j, &call)) {
      content.append(text.substr(pos, open - pos));
      msg->tool_calls.push_back(std::move(call));
    } else {
      content.append(text.substr(pos, end - pos));
    }
    pos = end;
  }
  content.append(text.substr(std::min(pos, text.size())));
  msg->content = trim(content);
}

void parse_llama3(std::string_view text, ParsedAssistantMessage* msg) {
  std::string body = trim(text);
  std::string_view b = body;
  if (b.substr(0, kPythonTag.size()) == kPythonTag) b.remove_prefix(kPythonTag.size());
  const std::string candidate = trim(b);
  if (candidate.empty() || (candidate[0] != '{' && candidate[0] != '[')) {
    msg->content = body;
    return;
  }
  std::vector<ParsedToolCall> calls;
  ojson j;
  bool ok = false;
  if (parse_json(candidate, &j)) {
    if (j.is_array()) {
      ok = !j.empty();
      for (const auto& e : j) {
        ParsedToolCall c;
        ok = ok && call_from_object(e, &c);
        calls.push_back(std::move(c));
      }
    } else {
      ParsedToolCall c;
      ok = call_from_object(j, &c);
      calls.push_back(std::move(c));
    }
  } else {
    // Several objects separated by ';'.
    ok = true;
    size_t pos = 0;
    while (ok && pos < candidate.size()) {
      size_t semi = candidate.find(';', pos);
      // A ';' inside a JSON string would split wrongly: accept a piece only when it parses.
      while (semi != std::string::npos) {
        ojson part;
        if (parse_json(std::string_view(candidate).substr(pos, semi - pos), &part)) break;
        semi = candidate.find(';', semi + 1);
      }
      const size_t end = semi == std::string::npos ? candidate.size() : semi;
      ojson part;
      ParsedToolCall c;
      ok = parse_json(std::string_view(candidate).substr(pos, end - pos), &part) &&
           call_from_object(part, &c);
      calls.push_back(std::move(c));
      pos = end + 1;
    }
  }
  if (!ok) {
    msg->content = body;
    return;
  }
  msg->tool_calls = std::move(calls);
}

void parse_deepseek(std::string_view text, ParsedAssistantMessage* msg) {
  const size_t begin = text.find(kDsCallsBegin);
  if (begin == std::string_view::npos) {
    msg->content = trim(text);
    return;
  }
  std::string_view calls = text.substr(begin + kDsCallsBegin.size());
  const size_t end = calls.find(kDsCallsEnd);
  std::string_view after;
  if (end != std::string_view::npos) {
    after = calls.substr(end + kDsCallsEnd.size());
    calls = calls.substr(0, end);
  }
  std::vector<ParsedToolCall> out;
  bool ok = true;
  size_t pos = 0;
  while (ok) {
    const size_t cb = calls.find(kDsCallBegin, pos);
    if (cb == std::string_view::npos) break;
    const size_t ce = calls.find(kDsCallEnd, cb);
    std::string_view one =
        calls.substr(cb + kDsCallBegin.size(),
                     (ce == std::string_view::npos ? calls.size() : ce) - cb - kDsCallBegin.size());
    pos = ce == std::string_view::npos ? calls.size() : ce + kDsCallEnd.size();
    const size_t sep = one.find(kDsSep);
    if (sep == std::string_view::npos) {
      ok = false;
      break;
    }
    std::string_view rest = one.substr(sep + kDsSep.size());
    const size_t nl = rest.find('\n');
    ParsedToolCall c;
    c.name = trim(rest.substr(0, nl));
    std::string args = nl == std::string_view::npos ? std::string() : trim(rest.substr(nl + 1));
    if (args.rfind("```json", 0) == 0) args = args.substr(7);
    if (args.size() >= 3 && args.compare(args.size() - 3, 3, "```") == 0)
      args.resize(args.size() - 3);
    args = trim(args);
    ojson j;
    if (c.name.empty() || !parse_json(args, &j)) {
      ok = false;
      break;
    }
    c.arguments = arguments_text(j);
    out.push_back(std::move(c));
  }
  if (!ok || out.empty()) {
    msg->content = trim(text);
    return;
  }
  std::string content(text.substr(0, begin));
  std::string tail(after);
  if (tail.rfind(kDsEos, 0) == 0) tail.erase(0, kDsEos.size());
  content += tail;
  msg->content = trim(content);
  msg->tool_calls = std::move(out);
}

}  // namespace

ToolCallFamily detect_tool_call_family(std::string_view src) {
  if (has(src, kDsCallsBegin)) return ToolCallFamily::kDeepseek;
  if (has(src, kHermesOpen)) return ToolCallFamily::kHermes;
  if (has(src, "<|start_header_id|>") &&
      (has(src, kPythonTag) || has(src, "\"parameters\": ") || has(src, "tool_calls"))) {
    return ToolCallFamily::kLlama3;
  }
  return ToolCallFamily::kNone;
}

std::string_view tool_call_family_name(ToolCallFamily family) {
  switch (family) {
    case ToolCallFamily::kHermes:
      return "hermes";
    case ToolCallFamily::kLlama3:
      return "llama3";
    case ToolCallFamily::kDeepseek:
      return "deepseek";
    case ToolCallFamily::kNone:
      break;
  }
  return "none";
}

ParsedAssistantMessage parse_assistant_output(std::string_view text, ToolCallFamily family,
                                              bool parse_reasoning) {
  ParsedAssistantMessage msg;
  std::string_view rest = text;
  if (parse_reasoning) {
    const size_t lead = rest.find_first_not_of(" \t\r\n");
    const bool opens =
        lead != std::string_view::npos && rest.substr(lead, kThinkOpen.size()) == kThinkOpen;
    const size_t close = rest.find(kThinkClose);
    if (close != std::string_view::npos) {
      const size_t start = opens ? lead + kThinkOpen.size() : 0;
      if (start <= close) {
        msg.reasoning_content = trim(rest.substr(start, close - start));
        rest = rest.substr(close + kThinkClose.size());
      }
    } else if (opens) {
      msg.reasoning_content = trim(rest.substr(lead + kThinkOpen.size()));
      rest = {};
    }
  }
  switch (family) {
    case ToolCallFamily::kHermes:
      parse_hermes(rest, &msg);
      break;
    case ToolCallFamily::kLlama3:
      parse_llama3(rest, &msg);
      break;
    case ToolCallFamily::kDeepseek:
      parse_deepseek(rest, &msg);
      break;
    case ToolCallFamily::kNone:
      msg.content = trim(rest);
      break;
  }
  for (size_t i = 0; i < msg.tool_calls.size(); ++i)
    msg.tool_calls[i].id = "call_" + std::to_string(i);
  // Nothing taken out: the text stays exactly as generated.
  if (msg.tool_calls.empty() && rest.size() == text.size()) msg.content = std::string(text);
  return msg;
}

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Bytes at the end of s that are a proper prefix of marker (they may be its start).
size_t partial_marker(std::string_view s, std::string_view marker) {
  for (size_t n = std::min(s.size(), marker.size() - 1); n > 0; --n) {
    if (s.substr(s.size() - n) == marker.substr(0, n)) return n;
  }
  return 0;
}

// s without trailing whitespace.
std::string_view rstrip(std::string_view s) {
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// The part of `safe` beyond what was sent (safe extends sent: see the callers).
std::string take_new(std::string_view safe, std::string* sent) {
  if (safe.size() <= sent->size() || safe.substr(0, sent->size()) != *sent) return {};
  std::string d(safe.substr(sent->size()));
  sent->append(d);
  return d;
}

}  // namespace

AssistantStreamParser::AssistantStreamParser(ToolCallFamily family, bool parse_reasoning,
                                             bool reasoning_open)
    : family_(family), parse_reasoning_(parse_reasoning) {
  if (parse_reasoning && reasoning_open) text_ = std::string(kThinkOpen);
}

AssistantDelta AssistantStreamParser::feed(std::string_view piece) {
  text_.append(piece);
  AssistantDelta d;
  const std::string_view t = text_;
  const size_t lead = t.find_first_not_of(" \t\r\n\f\v");
  if (lead == std::string_view::npos) return d;  // only whitespace so far
  size_t content_from = 0;
  bool reasoned = false;
  if (parse_reasoning_) {
    const std::string_view head = t.substr(lead);
    if (head.size() < kThinkOpen.size() && kThinkOpen.substr(0, head.size()) == head) {
      return d;  // may still become "<think>"
    }
    if (head.substr(0, kThinkOpen.size()) == kThinkOpen) {
      const size_t body = lead + kThinkOpen.size();
      const size_t close = t.find(kThinkClose, body);
      std::string_view r =
          t.substr(body, (close == std::string_view::npos ? t.size() : close) - body);
      if (close == std::string_view::npos) r.remove_suffix(partial_marker(r, kThinkClose));
      const size_t r_lead = r.find_first_not_of(" \t\r\n\f\v");
      r = r_lead == std::string_view::npos ? std::string_view() : rstrip(r.substr(r_lead));
      d.reasoning_content = take_new(r, &sent_reasoning_);
      if (close == std::string_view::npos) return d;
      content_from = close + kThinkClose.size();
      reasoned = true;
    }
  }
  std::string_view c = t.substr(content_from);
  if (reasoned) {
    const size_t c_lead = c.find_first_not_of(" \t\r\n\f\v");
    c = c_lead == std::string_view::npos ? std::string_view() : c.substr(c_lead);
  }
  // Where a tool call may start: everything from there waits for finish().
  switch (family_) {
    case ToolCallFamily::kHermes:
    case ToolCallFamily::kDeepseek: {
      const std::string_view marker =
          family_ == ToolCallFamily::kHermes ? kHermesOpen : kDsCallsBegin;
      const size_t at = c.find(marker);
      if (at != std::string_view::npos) {
        c = c.substr(0, at);
      } else {
        c.remove_suffix(partial_marker(c, marker));
      }
      break;
    }
    case ToolCallFamily::kLlama3: {
      // The whole answer is the call: hold it all when it starts like one.
      const size_t c_lead = c.find_first_not_of(" \t\r\n\f\v");
      if (c_lead == std::string_view::npos) {
        c = {};
        break;
      }
      const std::string_view head = c.substr(c_lead);
      const bool maybe_tag = head.size() < kPythonTag.size()
                                 ? kPythonTag.substr(0, head.size()) == head
                                 : head.substr(0, kPythonTag.size()) == kPythonTag;
      if (head[0] == '{' || head[0] == '[' || maybe_tag) c = {};
      break;
    }
    case ToolCallFamily::kNone:
      break;
  }
  d.content = take_new(rstrip(c), &sent_content_);
  return d;
}

AssistantStreamParser::Final AssistantStreamParser::finish() {
  Final f;
  ParsedAssistantMessage m = parse_assistant_output(text_, family_, parse_reasoning_);
  f.rest.reasoning_content = take_new(m.reasoning_content, &sent_reasoning_);
  f.rest.content = take_new(m.content, &sent_content_);
  f.tool_calls = std::move(m.tool_calls);
  return f;
}

}  // namespace llmt
