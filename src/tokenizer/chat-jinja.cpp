// ChatTemplate: built-in formats and Jinja templates behind one interface. See chat-template.h.
#include <fstream>
#include <sstream>

#include "llmthreads/chat-template.h"
#include "llmthreads/tokenizer.h"
#include "tokenizer/jinja-eval.h"

namespace llmt {

struct ChatTemplate::Jinja {
  std::shared_ptr<const jinja::Template> tmpl;
};

namespace {

constexpr std::string_view kRoles[] = {"system", "user", "assistant", "tool", "developer"};

// Roles each built-in format can write (the [INST] and gemma formats know only three).
bool format_takes_role(ChatFormat f, std::string_view role) {
  switch (f) {
    case ChatFormat::kChatml:
    case ChatFormat::kLlama3:
    case ChatFormat::kPhi3:
    case ChatFormat::kPhi4:
    case ChatFormat::kZephyr:
      return true;
    default:
      return role == "system" || role == "user" || role == "assistant";
  }
}

Result<nlohmann::ordered_json> parse_request(std::string_view text) {
  nlohmann::ordered_json j =
      nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid_argument("chat request is not valid JSON");
  if (!j.is_object()) return invalid_argument("chat request must be a JSON object");
  if (!j.contains("messages") || !j["messages"].is_array()) {
    return invalid_argument("chat request: 'messages' must be an array");
  }
  for (const auto& m : j["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return invalid_argument("chat request: every message needs a string 'role'");
    }
    const std::string role = m["role"].get<std::string>();
    if (!is_known_chat_role(role)) {
      return invalid_argument("chat message role '" + role +
                              "' is not one of system, user, assistant, tool, developer");
    }
  }
  if (j.contains("add_generation_prompt") && !j["add_generation_prompt"].is_boolean()) {
    return invalid_argument("chat request: 'add_generation_prompt' must be a boolean");
  }
  if (j.contains("tools") && !j["tools"].is_array() && !j["tools"].is_null()) {
    return invalid_argument("chat request: 'tools' must be an array");
  }
  return j;
}

std::tm local_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  return tm;
}

}  // namespace

bool is_known_chat_role(std::string_view role) {
  for (std::string_view r : kRoles) {
    if (r == role) return true;
  }
  return false;
}

ChatTemplate ChatTemplate::from_format(ChatFormat format) {
  ChatTemplate t;
  t.format_ = format;
  t.description_ = "built-in " + std::string(chat_format_name(format));
  return t;
}

Result<ChatTemplate> ChatTemplate::from_jinja(std::string_view source, std::string origin,
                                              std::string bos_token, std::string eos_token,
                                              const JinjaLimits& limits) {
  jinja::Limits l;
  l.max_output_bytes = limits.max_output_bytes;
  l.max_steps = limits.max_steps;
  l.max_depth = limits.max_depth;
  auto parsed = jinja::Template::parse(source, l);
  if (!parsed.is_ok()) {
    return Status(parsed.status().code(), origin + ": " + parsed.status().message());
  }
  ChatTemplate t;
  auto j = std::make_shared<Jinja>();
  j->tmpl = std::move(parsed).value();
  t.jinja_ = std::move(j);
  t.description_ = "Jinja from " + origin;
  t.source_ = std::string(source);
  t.bos_token_ = std::move(bos_token);
  t.eos_token_ = std::move(eos_token);
  return t;
}

Result<ChatTemplate> ChatTemplate::select(std::string_view option, std::string_view gguf_template,
                                          const Tokenizer* tok, const JinjaLimits& limits) {
  std::string bos, eos;
  if (tok) {
    if (tok->bos_id() >= 0) bos = std::string(tok->token_text(tok->bos_id()));
    if (tok->eos_id() >= 0) eos = std::string(tok->token_text(tok->eos_id()));
  }
  if (option.empty()) {
    if (gguf_template.empty()) {
      return not_found("the model has no tokenizer.chat_template; choose a built-in format (" +
                       chat_format_names() + ") or a Jinja file with --chat-template");
    }
    return from_jinja(gguf_template, "GGUF tokenizer.chat_template", bos, eos, limits);
  }
  if (auto f = chat_format_from_name(option); f.is_ok()) return from_format(*f);
  std::ifstream in{std::string(option), std::ios::binary};
  if (!in) {
    return invalid_argument("--chat-template '" + std::string(option) +
                            "' is neither a built-in format (" + chat_format_names() +
                            ") nor a readable file");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return io_error("cannot read chat template file '" + std::string(option) + "'");
  return from_jinja(ss.str(), "file " + std::string(option), bos, eos, limits);
}

Result<std::string> ChatTemplate::render_json(std::string_view request_json) const {
  LLMT_ASSIGN_OR_RETURN(auto req, parse_request(request_json));
  const bool add_gen = req.value("add_generation_prompt", false);
  if (!jinja_) {
    std::vector<ChatMessage> msgs;
    for (const auto& m : req["messages"]) {
      ChatMessage cm;
      cm.role = m["role"].get<std::string>();
      if (!format_takes_role(*format_, cm.role)) {
        return invalid_argument("chat format " + std::string(chat_format_name(*format_)) +
                                " cannot write a '" + cm.role + "' message");
      }
      if (m.contains("content") && m["content"].is_string()) {
        cm.content = m["content"].get<std::string>();
      } else if (m.contains("content") && !m["content"].is_null()) {
        return invalid_argument("built-in chat formats take string message contents only");
      }
      msgs.push_back(std::move(cm));
    }
    return render_chat(*format_, msgs, add_gen);
  }
  jinja::Value ctx = jinja::from_json(req);
  jinja::Dict& d = ctx.dict();
  if (!d.find("tools")) d.set("tools", jinja::Value::none());
  d.set("add_generation_prompt", jinja::Value(add_gen));
  d.set("documents", jinja::Value::none());
  if (!bos_token_.empty()) d.set("bos_token", jinja::Value(bos_token_));
  if (!eos_token_.empty()) d.set("eos_token", jinja::Value(eos_token_));
  // Special-token variables passed in the request (bos_token, ...) win over the tokenizer's.
  for (const auto& [k, v] : req.items()) {
    if (k == "bos_token" || k == "eos_token") d.set(k, jinja::from_json(v));
  }
  try {
    jinja::Interp interp(*jinja_->tmpl, fixed_time_ ? *fixed_time_ : local_now());
    return interp.render(ctx);
  } catch (const jinja::Error& e) {
    return invalid_argument(std::string("chat template error: ") + e.what());
  } catch (const std::bad_alloc&) {
    return invalid_argument("chat template error: out of memory");
  } catch (const std::exception& e) {
    // Any other exception is a bug of the interpreter: an error value, never a crash.
    return internal_error(std::string("chat template: internal error: ") + e.what());
  }
}

Result<std::string> ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                         bool add_generation_prompt) const {
  nlohmann::ordered_json req;
  req["messages"] = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) {
    req["messages"].push_back({{"role", m.role}, {"content", m.content}});
  }
  req["add_generation_prompt"] = add_generation_prompt;
  return render_json(req.dump());
}

namespace {
std::string strip_bos(std::string text, const std::string& bos, bool tokenizer_adds_bos) {
  if (tokenizer_adds_bos && !bos.empty() && text.compare(0, bos.size(), bos) == 0)
    text.erase(0, bos.size());
  return text;
}
}  // namespace

Result<std::string> ChatTemplate::render_prompt(const std::vector<ChatMessage>& messages,
                                                bool add_generation_prompt,
                                                bool tokenizer_adds_bos) const {
  LLMT_ASSIGN_OR_RETURN(std::string text, render(messages, add_generation_prompt));
  return strip_bos(std::move(text), bos_token_, tokenizer_adds_bos);
}

Result<std::string> ChatTemplate::render_prompt_json(std::string_view request_json,
                                                     bool tokenizer_adds_bos) const {
  LLMT_ASSIGN_OR_RETURN(std::string text, render_json(request_json));
  return strip_bos(std::move(text), bos_token_, tokenizer_adds_bos);
}

}  // namespace llmt
