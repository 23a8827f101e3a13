#include "openai.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "llmthreads/model.h"
#include "llmthreads/tokenizer.h"

namespace llmt::openai {

namespace {

using nlohmann::json;

std::string quoted(const char* key) {
  return std::string("\"") + key + "\"";
}

// kInvalidArgument for field `key`: the message starts with the field's name in quotes.
Status field_error(const char* key, const std::string& what) {
  return invalid_argument(quoted(key) + what, key);
}

bool present(const json& body, const char* key) {
  return body.contains(key) && !body[key].is_null();
}

// An integer field within [lo, hi]; absent or null leaves *out alone.
Status get_int(const json& body, const char* key, int64_t lo, int64_t hi, int64_t* out) {
  if (!present(body, key)) return Status::ok();
  const json& v = body[key];
  const std::string range = " in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (!v.is_number_integer()) return field_error(key, " must be an integer" + range);
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(hi)) {
      return field_error(key, " must be an integer" + range);
    }
  }
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) return field_error(key, " must be an integer" + range);
  *out = x;
  return Status::ok();
}

Status get_float(const json& body, const char* key, float* out) {
  if (!present(body, key)) return Status::ok();
  if (!body[key].is_number()) return field_error(key, " must be a number");
  *out = body[key].get<float>();
  return Status::ok();
}

Status get_bool(const json& body, const char* key, bool* out) {
  if (!present(body, key)) return Status::ok();
  if (!body[key].is_boolean()) return field_error(key, " must be true or false");
  *out = body[key].get<bool>();
  return Status::ok();
}

Status get_string(const json& body, const char* key, std::string* out) {
  if (!present(body, key)) return Status::ok();
  if (!body[key].is_string()) return field_error(key, " must be a string");
  *out = body[key].get<std::string>();
  return Status::ok();
}

Status parse_messages(const json& body, std::vector<ChatMessage>* out) {
  if (!present(body, "messages")) return invalid_argument("\"messages\" is required", "messages");
  const json& msgs = body["messages"];
  if (!msgs.is_array() || msgs.empty()) {
    return invalid_argument("\"messages\" must be a non-empty array of {role, content}",
                            "messages");
  }
  for (const json& m : msgs) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return invalid_argument("every message needs a string \"role\"");
    }
    ChatMessage cm;
    cm.role = m["role"].get<std::string>();
    if (!is_known_chat_role(cm.role)) {
      return invalid_argument(
          "unknown message role '" + cm.role + "' (system, user, assistant, tool, developer)",
          "messages");
    }
    const json content = m.value("content", json());
    if (content.is_string()) {
      cm.content = content.get<std::string>();
    } else if (content.is_array()) {
      for (const json& part : content) {
        if (part.is_object() && part.value("type", "") == "text" && part.contains("text") &&
            part["text"].is_string()) {
          cm.content += part["text"].get<std::string>();
        } else {
          return unsupported("only text content parts are supported");
        }
      }
    } else if (!content.is_null()) {
      return invalid_argument("message content must be a string or an array of parts");
    }
    out->push_back(std::move(cm));
  }
  return Status::ok();
}

Status parse_prompt(const json& body, std::string* out) {
  if (!present(body, "prompt")) return invalid_argument("\"prompt\" is required", "prompt");
  const json& p = body["prompt"];
  if (p.is_string()) {
    *out = p.get<std::string>();
  } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    *out = p[0].get<std::string>();
  } else {
    return unsupported("a completions prompt must be one string");
  }
  return Status::ok();
}

Status parse_stop(const json& body, std::optional<std::vector<std::string>>* out) {
  if (!present(body, "stop")) return Status::ok();
  std::vector<std::string> stop;
  const json& s = body["stop"];
  if (s.is_string()) {
    if (!s.get<std::string>().empty()) stop.push_back(s.get<std::string>());
  } else if (s.is_array()) {
    for (const json& x : s) {
      if (!x.is_string() || x.get<std::string>().empty()) {
        return invalid_argument("\"stop\" must hold non-empty strings", "stop");
      }
      stop.push_back(x.get<std::string>());
    }
  } else {
    return invalid_argument("\"stop\" must be a string or an array of strings", "stop");
  }
  *out = std::move(stop);
  return Status::ok();
}

// The top-level fields of a request body: every field parse_openai_request() honours, plus those
// known not to change the output (accepted and ignored). Anything else is refused with a 400
// naming it, never ignored: an unknown field could change the output (e.g. llama.cpp's mirostat,
// OpenAI's prediction), and an answer that silently ignored it would be wrong.
constexpr const char* kCommonFields[] = {
    // Honoured.
    "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream",
    "stream_options", "stop", "presence_penalty", "frequency_penalty", "logit_bias", "seed",
    "logprobs", "user", "priority", "tenant", "top_k", "min_p", "typical_p", "repeat_penalty",
    "repeat_last_n", "response_format", "grammar", "json_schema",
    // Known not to change the output: bookkeeping (metadata, store, safety_identifier), routing
    // and caching hints (service_tier, prompt_cache_key, cache_prompt: the prefix cache is always
    // on).
    "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key", "cache_prompt"};
constexpr const char* kCompletionsFields[] = {"prompt", "echo", "best_of"};
constexpr const char* kChatFields[] = {
    "messages",    "top_logprobs",        "tools",
    "tool_choice", "parallel_tool_calls", "chat_template_kwargs"};

bool listed(std::string_view key, const auto& list) {
  return std::any_of(std::begin(list), std::end(list), [&](const char* k) { return key == k; });
}

// kUnsupported naming the first field of `body` that is not on the endpoint's allow-list; also
// the values of known fields that we accept only as their default (tool_choice "auto",
// parallel_tool_calls true).
Status check_fields(const json& body, Endpoint endpoint) {
  const bool chat = endpoint == Endpoint::kChatCompletions;
  for (const auto& [key, value] : body.items()) {
    if (listed(key, kCommonFields) ||
        (chat ? listed(key, kChatFields) : listed(key, kCompletionsFields))) {
      continue;
    }
    return unsupported("\"" + key +
                           "\" is not supported by this server (a field that could change the "
                           "output is refused, not ignored)",
                       key);
  }
  if (chat && present(body, "tool_choice") && body["tool_choice"] != "auto") {
    return unsupported("\"tool_choice\": only \"auto\" is supported", "tool_choice");
  }
  if (chat && present(body, "parallel_tool_calls") && body["parallel_tool_calls"] != true) {
    return unsupported("\"parallel_tool_calls\": only true is supported", "parallel_tool_calls");
  }
  return Status::ok();
}

Status parse_logit_bias(const json& body, std::vector<std::pair<int32_t, float>>* out) {
  if (!present(body, "logit_bias")) return Status::ok();
  const json& lb = body["logit_bias"];
  auto add = [&](const json& key, const json& v) -> Status {
    int64_t id = -1;
    if (key.is_string()) {
      const std::string k = key.get<std::string>();
      if (k.empty() || k.size() > 10 || !std::all_of(k.begin(), k.end(), ::isdigit))
        return field_error("logit_bias", " keys must be token ids, got '" + k + "'");
      id = std::stoll(k);
    } else if (key.is_number_integer()) {
      id = key.get<int64_t>();
    }
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      return field_error("logit_bias", " keys must be token ids");
    float bias = 0.0f;
    if (v.is_boolean() && !v.get<bool>()) {
      bias = -std::numeric_limits<float>::infinity();
    } else if (v.is_number()) {
      bias = v.get<float>();
      if (!std::isfinite(bias)) return field_error("logit_bias", " values must be finite");
    } else {
      return field_error("logit_bias", " values must be numbers (or false to ban)");
    }
    out->emplace_back(static_cast<int32_t>(id), bias);
    return Status::ok();
  };
  if (lb.is_object()) {
    for (const auto& [k, v] : lb.items()) LLMT_RETURN_IF_ERROR(add(json(k), v));
  } else if (lb.is_array()) {
    for (const json& e : lb) {
      if (!e.is_array() || e.size() != 2)
        return field_error("logit_bias", " as an array must hold [token id, bias] pairs");
      LLMT_RETURN_IF_ERROR(add(e[0], e[1]));
    }
  } else {
    return field_error("logit_bias", " must be an object {\"token id\": bias}");
  }
  return Status::ok();
}

// The grammar from response_format, grammar or json_schema (null when none constrains).
Status parse_constraint(const json& body, std::shared_ptr<const Grammar>* out) {
  auto with_field = [](Status s, const char* field) {
    return s.is_ok() ? s : invalid_argument(quoted(field) + ": " + s.message(), field);
  };
  int n = 0;
  std::shared_ptr<const Grammar> g;
  if (present(body, "response_format")) {
    const json& rf = body["response_format"];
    if (!rf.is_object() || !rf.contains("type") || !rf["type"].is_string())
      return field_error("response_format", " must be an object with a string \"type\"");
    const std::string type = rf["type"].get<std::string>();
    if (type == "json_object") {
      Result<std::shared_ptr<const Grammar>> r =
          rf.contains("schema") && !rf["schema"].is_null()
              ? Grammar::from_json_schema(rf["schema"].dump())
              : Grammar::parse(json_value_gbnf(true));
      if (!r.is_ok()) return with_field(r.status(), "response_format");
      g = *r;
      ++n;
    } else if (type == "json_schema") {
      if (!rf.contains("json_schema") || !rf["json_schema"].is_object() ||
          !rf["json_schema"].contains("schema"))
        return field_error("response_format",
                           ": type json_schema needs \"json_schema\": {\"schema\": {...}}");
      const json& js = rf["json_schema"];
      if (js.contains("strict") && !js["strict"].is_null() && !js["strict"].is_boolean())
        return field_error("response_format", ": json_schema.strict must be true or false");
      auto r = Grammar::from_json_schema(js["schema"].dump());
      if (!r.is_ok()) return with_field(r.status(), "response_format");
      g = *r;
      ++n;
    } else if (type != "text") {
      return field_error("response_format",
                         ": unknown type '" + type + "' (text, json_object or json_schema)");
    }
  }
  if (present(body, "grammar")) {
    if (!body["grammar"].is_string()) return field_error("grammar", " must be a string (GBNF)");
    auto r = Grammar::parse(body["grammar"].get<std::string>());
    if (!r.is_ok()) return with_field(r.status(), "grammar");
    g = *r;
    ++n;
  }
  if (present(body, "json_schema")) {
    auto r = Grammar::from_json_schema(body["json_schema"].dump());
    if (!r.is_ok()) return with_field(r.status(), "json_schema");
    g = *r;
    ++n;
  }
  if (n > 1)
    return invalid_argument(
        "\"grammar\": use one of grammar, json_schema and a constraining response_format",
        "grammar");
  *out = std::move(g);
  return Status::ok();
}

}  // namespace

Status parse_openai_request(const json& body, Endpoint endpoint, const SamplingParams& base,
                            OpenAiRequest* out) {
  if (!body.is_object()) return invalid_argument("the request body must be a JSON object");
  LLMT_RETURN_IF_ERROR(check_fields(body, endpoint));
  OpenAiRequest r;
  r.endpoint = endpoint;
  LLMT_RETURN_IF_ERROR(get_string(body, "model", &r.model));
  {
    int64_t n = 1;
    LLMT_RETURN_IF_ERROR(get_int(body, "n", 1, kMaxChoices, &n));
    r.n = static_cast<int32_t>(n);
  }
  if (present(body, "best_of")) {
    int64_t b = 1;
    LLMT_RETURN_IF_ERROR(get_int(body, "best_of", 1, 1 << 20, &b));
    if (b != 1) return unsupported("only best_of = 1 is supported");
  }
  if (endpoint == Endpoint::kCompletions) {
    int64_t lp = -1;
    LLMT_RETURN_IF_ERROR(get_int(body, "logprobs", 0, kMaxCompletionLogprobs, &lp));
    r.logprobs = static_cast<int32_t>(lp);
  } else {
    bool lp = false;
    LLMT_RETURN_IF_ERROR(get_bool(body, "logprobs", &lp));
    int64_t top = 0;
    LLMT_RETURN_IF_ERROR(get_int(body, "top_logprobs", 0, kMaxChatTopLogprobs, &top));
    if (present(body, "top_logprobs") && !lp) {
      return invalid_argument("\"top_logprobs\" needs \"logprobs\": true", "top_logprobs");
    }
    r.logprobs = lp ? static_cast<int32_t>(top) : -1;
  }
  if (present(body, "echo")) {
    bool echo = false;
    LLMT_RETURN_IF_ERROR(get_bool(body, "echo", &echo));
    if (echo) return unsupported("\"echo\" is not supported by this server", "echo");
  }
  if (endpoint == Endpoint::kChatCompletions) {
    LLMT_RETURN_IF_ERROR(parse_messages(body, &r.messages));
    // What a Jinja template renders: the messages and tools as sent, the generation prompt,
    // and the variables of "chat_template_kwargs" (e.g. enable_thinking).
    json chat = json::object();
    if (present(body, "chat_template_kwargs")) {
      if (!body["chat_template_kwargs"].is_object()) {
        return field_error("chat_template_kwargs", " must be an object");
      }
      chat = body["chat_template_kwargs"];
    }
    chat["messages"] = body["messages"];
    if (present(body, "tools")) {
      if (!body["tools"].is_array()) return field_error("tools", " must be an array");
      chat["tools"] = body["tools"];
      r.has_tools = !body["tools"].empty();
    }
    chat["add_generation_prompt"] = true;
    r.chat_json = chat.dump();
  } else {
    LLMT_RETURN_IF_ERROR(parse_prompt(body, &r.prompt));
  }
  for (const char* key : {"max_completion_tokens", "max_tokens"}) {
    if (present(body, key)) {
      int64_t n = 0;
      LLMT_RETURN_IF_ERROR(get_int(body, key, 1, 1 << 24, &n));
      r.max_tokens = static_cast<int32_t>(n);
      break;
    }
  }
  r.sampling = base;
  LLMT_RETURN_IF_ERROR(get_float(body, "temperature", &r.sampling.temperature));
  LLMT_RETURN_IF_ERROR(get_float(body, "min_p", &r.sampling.min_p));
  LLMT_RETURN_IF_ERROR(get_float(body, "typical_p", &r.sampling.typical_p));
  LLMT_RETURN_IF_ERROR(get_float(body, "repeat_penalty", &r.sampling.repeat_penalty));
  {
    int64_t k = r.sampling.top_k;
    LLMT_RETURN_IF_ERROR(get_int(body, "top_k", 0, 1 << 30, &k));
    r.sampling.top_k = static_cast<int32_t>(k);
    int64_t last_n = r.sampling.repeat_last_n;
    LLMT_RETURN_IF_ERROR(
        get_int(body, "repeat_last_n", 0, SamplingParams::kMaxRepeatLastN, &last_n));
    r.sampling.repeat_last_n = static_cast<int32_t>(last_n);
  }
  LLMT_RETURN_IF_ERROR(parse_logit_bias(body, &r.sampling.logit_bias));
  LLMT_RETURN_IF_ERROR(parse_constraint(body, &r.grammar));
  LLMT_RETURN_IF_ERROR(get_float(body, "top_p", &r.sampling.top_p));
  LLMT_RETURN_IF_ERROR(get_float(body, "frequency_penalty", &r.sampling.frequency_penalty));
  LLMT_RETURN_IF_ERROR(get_float(body, "presence_penalty", &r.sampling.presence_penalty));
  if (present(body, "seed")) {
    int64_t seed = 0;
    LLMT_RETURN_IF_ERROR(get_int(body, "seed", std::numeric_limits<int64_t>::min(),
                                 std::numeric_limits<int64_t>::max(), &seed));
    r.sampling.seed = static_cast<uint64_t>(seed);
    r.seed_given = true;
  }
  LLMT_RETURN_IF_ERROR(r.sampling.validate());
  LLMT_RETURN_IF_ERROR(parse_stop(body, &r.stop));
  LLMT_RETURN_IF_ERROR(get_bool(body, "stream", &r.stream));
  if (present(body, "stream_options")) {
    const json& so = body["stream_options"];
    if (!so.is_object())
      return invalid_argument("\"stream_options\" must be an object", "stream_options");
    LLMT_RETURN_IF_ERROR(get_bool(so, "include_usage", &r.include_usage));
  }
  int64_t priority = 0;
  LLMT_RETURN_IF_ERROR(get_int(body, "priority", -(1 << 20), 1 << 20, &priority));
  r.priority = static_cast<int32_t>(priority);
  std::string user;
  LLMT_RETURN_IF_ERROR(get_string(body, "user", &user));
  LLMT_RETURN_IF_ERROR(get_string(body, "tenant", &r.tenant));
  if (r.tenant.empty()) r.tenant = user;
  *out = std::move(r);
  return Status::ok();
}

uint64_t tenant_id(std::string_view tenant) {
  if (tenant.empty()) return 0;
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : tenant) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h == 0 ? 1 : h;
}

Result<ThreadRequest> to_thread_request(const OpenAiRequest& req, const TranslateOptions& opt,
                                        PromptInfo* info) {
  if (!req.model.empty() && req.model != opt.model_name) {
    return invalid_argument("unknown model '" + req.model + "'; this server serves '" +
                            opt.model_name + "' (see GET /v1/models)");
  }
  std::string text;
  if (req.endpoint == Endpoint::kChatCompletions) {
    if (opt.chat_template) {
      Result<std::string> r = opt.chat_template->render_prompt_json(
          req.chat_json, /*tokenizer_adds_bos=*/opt.model->tokenizer().add_bos());
      if (!r.is_ok()) return r.status();  // kInvalidArgument: a 400 with the template's message
      text = std::move(*r);
    } else if (!opt.chat_format) {
      return unsupported("chat completions need a chat format: " + opt.chat_format_error);
    } else {
      text = render_chat(*opt.chat_format, req.messages, /*add_generation_prompt=*/true);
    }
  } else {
    text = req.prompt;
  }
  if (text.empty()) return invalid_argument("the prompt is empty");
  if (info) {
    info->reasoning_open =
        req.endpoint == Endpoint::kChatCompletions && prompt_opens_reasoning(text);
  }
  // Completions and chat alike: special tokens added as the vocabulary asks and control-token
  // texts parsed (as llama.cpp's server does). The engine's prepare() tokenizes; without an
  // engine the model's tokenizer does the same here.
  ThreadRequest tr;
  tr.prompt = std::move(text);
  tr.add_special = true;
  tr.parse_special = true;
  if (!opt.engine) {
    tr.prompt_tokens = opt.model->tokenizer().encode(
        tr.prompt, {.add_special = tr.add_special, .parse_special = tr.parse_special});
    if (tr.prompt_tokens.empty()) return invalid_argument("the prompt is empty");
    tr.prompt.clear();
  }
  tr.max_tokens = req.max_tokens ? *req.max_tokens : ThreadRequest::kToContextEnd;
  tr.sampling = req.sampling;
  for (const auto& [id, bias] : tr.sampling.logit_bias) {
    if (id >= opt.model->tokenizer().n_vocab()) {
      return invalid_argument("\"logit_bias\": token id " + std::to_string(id) +
                                  " is outside the vocabulary (" +
                                  std::to_string(opt.model->tokenizer().n_vocab()) + " tokens)",
                              "logit_bias");
    }
  }
  tr.grammar = req.grammar;
  if (req.stop) tr.stop = *req.stop;
  tr.priority = req.priority;
  tr.tenant = tenant_id(req.tenant);
  tr.logprobs = req.logprobs;
  if (opt.engine) LLMT_RETURN_IF_ERROR(opt.engine->prepare(&tr));
  if (!req.max_tokens && opt.default_max_tokens > 0 &&
      (tr.max_tokens == ThreadRequest::kToContextEnd || tr.max_tokens > opt.default_max_tokens)) {
    tr.max_tokens = opt.default_max_tokens;
  }
  return tr;
}

Usage merge_usage(const std::vector<Usage>& per_choice) {
  Usage u;
  if (per_choice.empty()) return u;
  u.prompt_tokens = per_choice[0].prompt_tokens;
  u.cached_tokens = per_choice[0].cached_tokens;
  for (const Usage& c : per_choice) {
    u.completion_tokens += c.completion_tokens;
    u.cached_tokens = std::min(u.cached_tokens, c.cached_tokens);
  }
  return u;
}

namespace {

// Unicode code points in UTF-8 bytes: the bytes that do not continue a sequence.
int64_t count_code_points(std::string_view s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

json bytes_json(std::string_view s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

}  // namespace

json logprobs_json(Endpoint endpoint, const Tokenizer& tok,
                   const std::vector<TokenLogprobs>& entries, int64_t* text_offset) {
  if (endpoint == Endpoint::kChatCompletions) {
    json content = json::array();
    for (const TokenLogprobs& e : entries) {
      if (tok.is_eog(e.token)) continue;
      const std::string piece = tok.token_to_piece(e.token);
      json top = json::array();
      for (const TokenLogprob& t : e.top) {
        const std::string tp = tok.token_to_piece(t.token);
        top.push_back({{"token", tp}, {"logprob", t.logprob}, {"bytes", bytes_json(tp)}});
      }
      content.push_back({{"token", piece},
                         {"logprob", e.logprob},
                         {"bytes", bytes_json(piece)},
                         {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       offsets = json::array();
  int64_t offset = text_offset ? *text_offset : 0;
  for (const TokenLogprobs& e : entries) {
    if (tok.is_eog(e.token)) continue;
    const std::string piece = tok.token_to_piece(e.token);
    json top = json::object();
    bool has_sampled = false;
    for (const TokenLogprob& t : e.top) {
      const std::string tp = tok.token_to_piece(t.token);
      if (!top.contains(tp)) top[tp] = t.logprob;  // best first: the higher logprob stays
      has_sampled = has_sampled || t.token == e.token;
    }
    if (!has_sampled && !top.contains(piece)) top[piece] = e.logprob;
    tokens.push_back(piece);
    token_logprobs.push_back(e.logprob);
    top_logprobs.push_back(std::move(top));
    offsets.push_back(offset);
    offset += count_code_points(piece);
  }
  if (text_offset) *text_offset = offset;
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top_logprobs)},
          {"text_offset", std::move(offsets)}};
}

const char* openai_finish_reason(FinishReason r) {
  return r == FinishReason::kLength ? "length" : "stop";
}

json usage_json(const Usage& u) {
  const int64_t p = u.prompt_tokens, c = u.completion_tokens;
  return {{"prompt_tokens", p},
          {"completion_tokens", c},
          {"total_tokens", p + c},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

json completion_body(Endpoint endpoint, const std::string& id, const std::string& model,
                     int64_t created, const std::vector<ChoiceOutput>& choices,
                     const Usage& usage) {
  const bool chat = endpoint == Endpoint::kChatCompletions;
  json out = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceOutput& c = choices[i];
    json choice = {{"index", i}};
    if (chat && (c.tool_family != ToolCallFamily::kNone || c.parse_reasoning)) {
      const ParsedAssistantMessage m = parse_assistant_output(
          c.reasoning_open && c.parse_reasoning ? "<think>" + c.text : c.text, c.tool_family,
          c.parse_reasoning);
      json msg = {{"role", "assistant"}};
      msg["content"] = m.content.empty() && !m.tool_calls.empty() ? json(nullptr) : json(m.content);
      if (!m.reasoning_content.empty()) msg["reasoning_content"] = m.reasoning_content;
      if (!m.tool_calls.empty()) {
        json calls = json::array();
        for (const ParsedToolCall& tc : m.tool_calls) {
          calls.push_back({{"id", tc.id},
                           {"type", "function"},
                           {"function", {{"name", tc.name}, {"arguments", tc.arguments}}}});
        }
        msg["tool_calls"] = std::move(calls);
      }
      choice["message"] = std::move(msg);
    } else if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = c.logprobs;
    choice["finish_reason"] = openai_finish_reason(c.finish);
    if (chat && choice["message"].contains("tool_calls") && c.finish != FinishReason::kLength) {
      choice["finish_reason"] = "tool_calls";
    }
    out.push_back(std::move(choice));
  }
  return {{"id", id},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", std::move(out)},
          {"usage", usage_json(usage)}};
}

json completion_body(Endpoint endpoint, const std::string& id, const std::string& model,
                     int64_t created, const std::string& text, FinishReason finish,
                     const Usage& usage) {
  return completion_body(endpoint, id, model, created,
                         std::vector<ChoiceOutput>{ChoiceOutput{text, finish, nullptr}}, usage);
}

json chunk_body(Endpoint endpoint, const std::string& id, const std::string& model, int64_t created,
                std::string_view text, const char* finish, bool first, int32_t index,
                const json& logprobs) {
  if (endpoint == Endpoint::kChatCompletions) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && !finish)) delta["content"] = std::string(text);
    return chat_delta_chunk(id, model, created, std::move(delta), finish, index, logprobs);
  }
  json choice = {{"index", index}, {"text", std::string(text)}};
  choice["logprobs"] = logprobs;
  choice["finish_reason"] = finish ? json(finish) : json(nullptr);
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

json chat_delta_chunk(const std::string& id, const std::string& model, int64_t created, json delta,
                      const char* finish, int32_t index, const json& logprobs) {
  json choice = {{"index", index}, {"delta", std::move(delta)}};
  choice["logprobs"] = logprobs;
  choice["finish_reason"] = finish ? json(finish) : json(nullptr);
  return {{"id", id},
          {"object", "chat.completion.chunk"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

json assistant_delta_json(const AssistantDelta& d) {
  json delta = json::object();
  if (!d.content.empty()) delta["content"] = d.content;
  if (!d.reasoning_content.empty()) delta["reasoning_content"] = d.reasoning_content;
  return delta;
}

json tool_calls_delta_json(const std::vector<ParsedToolCall>& calls) {
  json arr = json::array();
  for (size_t k = 0; k < calls.size(); ++k) {
    const ParsedToolCall& tc = calls[k];
    arr.push_back({{"index", k},
                   {"id", tc.id},
                   {"type", "function"},
                   {"function", {{"name", tc.name}, {"arguments", tc.arguments}}}});
  }
  return {{"tool_calls", std::move(arr)}};
}

bool prompt_opens_reasoning(std::string_view prompt) {
  while (!prompt.empty() && std::isspace(static_cast<unsigned char>(prompt.back()))) {
    prompt.remove_suffix(1);
  }
  constexpr std::string_view kOpen = "<think>";
  return prompt.size() >= kOpen.size() && prompt.substr(prompt.size() - kOpen.size()) == kOpen;
}

json usage_chunk_body(Endpoint endpoint, const std::string& id, const std::string& model,
                      int64_t created, const Usage& usage) {
  const bool chat = endpoint == Endpoint::kChatCompletions;
  return {{"id", id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array()},
          {"usage", usage_json(usage)}};
}

std::string dump_json(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string sse_event(const json& j) {
  return "data: " + dump_json(j) + "\n\n";
}

json error_body(std::string_view message, std::string_view type, std::string_view code,
                std::string_view param) {
  return {{"error",
           {{"message", std::string(message)},
            {"type", std::string(type)},
            {"param", param.empty() ? json(nullptr) : json(std::string(param))},
            {"code", code.empty() ? json(nullptr) : json(std::string(code))}}}};
}

int http_status_for(const Status& s) {
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kUnsupported:
    case StatusCode::kNotFound:
    case StatusCode::kCannotFit:
      return 400;
    case StatusCode::kOverCapacity:
      return 429;
    case StatusCode::kCancelled:
      return 503;
    default:
      return 500;
  }
}

json error_body_for(const Status& s) {
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
    case StatusCode::kCannotFit:
      return error_body(s.message(), "invalid_request_error", "invalid_request", s.field());
    case StatusCode::kUnsupported:
      return error_body(s.message(), "invalid_request_error", "unsupported", s.field());
    case StatusCode::kOverCapacity:
      return error_body(s.message(), "rate_limit_error", "queue_full");
    case StatusCode::kCancelled:
      return error_body(s.message(), "server_error", "cancelled");
    default:
      return error_body(s.message(), "server_error", "internal_error");
  }
}

}  // namespace llmt::openai
