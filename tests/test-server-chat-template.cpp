// The OpenAI translation with Jinja chat templates: unknown roles are 400s, tools and
// chat_template_kwargs reach the template, a template that raises is a 400 with its message, the
// prompt is the rendering (one BOS), and responses carry tool_calls / reasoning_content.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/openai.h"
#include "llmthreads/chat-template.h"
#include "llmthreads/model.h"
#include "llmthreads/tokenizer.h"
#include "server-fixture.h"
#include "test-util.h"

namespace llmt {
namespace {

using nlohmann::json;
using openai::Endpoint;

TEST(ServerChatTemplate, RequestsCarryMessagesToolsAndKwargs) {
  openai::OpenAiRequest r;
  SamplingParams base;
  const json tools = json::array({{{"type", "function"}, {"function", {{"name", "f"}}}}});
  const json body = {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                     {"tools", tools},
                     {"chat_template_kwargs", {{"enable_thinking", false}}}};
  ASSERT_TRUE(openai::parse_openai_request(body, Endpoint::kChatCompletions, base, &r).is_ok());
  EXPECT_TRUE(r.has_tools);
  const json chat = json::parse(r.chat_json);
  EXPECT_EQ(chat["messages"], body["messages"]);
  EXPECT_EQ(chat["tools"], tools);
  EXPECT_EQ(chat["enable_thinking"], false);
  EXPECT_EQ(chat["add_generation_prompt"], true);

  openai::OpenAiRequest bad;
  const Status st =
      openai::parse_openai_request(json{{"messages", {{{"role", "wizard"}, {"content", "x"}}}}},
                                   Endpoint::kChatCompletions, base, &bad);
  ASSERT_FALSE(st.is_ok());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("wizard"), std::string::npos);
}

TEST(ServerChatTemplate, PromptIsTheRenderingAndRaisesAre400) {
  LLMT_REQUIRE_DATA("models/stories260K.gguf");
  auto model = Model::load(test::data_path("models/stories260K.gguf"));
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  const Tokenizer& tok = (*model)->tokenizer();
  const std::string src =
      "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools "
      "here') }}"
      "{% endif %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if tools %}TOOLS{% endif %}"
      "{% if add_generation_prompt %}[assistant]{% endif %}";
  auto tmpl = ChatTemplate::from_jinja(src, "test", std::string(tok.token_text(tok.bos_id())), "");
  ASSERT_TRUE(tmpl.is_ok());
  openai::TranslateOptions opt;
  opt.model = model->get();
  opt.model_name = "m";
  opt.chat_template = *tmpl;
  SamplingParams base;
  openai::OpenAiRequest r;
  ASSERT_TRUE(
      openai::parse_openai_request(json{{"messages", {{{"role", "user"}, {"content", "Once"}}}}},
                                   Endpoint::kChatCompletions, base, &r)
          .is_ok());
  auto tr = openai::to_thread_request(r, opt);
  ASSERT_TRUE(tr.is_ok()) << tr.status().message();
  // The template's BOS text is dropped because the tokenizer adds BOS: one BOS in the prompt.
  EXPECT_EQ(tr->prompt_tokens,
            tok.encode("[user] Once\n[assistant]", {.add_special = true, .parse_special = true}));
  EXPECT_EQ(std::count(tr->prompt_tokens.begin(), tr->prompt_tokens.end(), tok.bos_id()), 1);

  openai::OpenAiRequest t;
  ASSERT_TRUE(openai::parse_openai_request(json{{"messages",
                                                 {{{"role", "user"}, {"content", "a"}},
                                                  {{"role", "tool"}, {"content", "b"}}}}},
                                           Endpoint::kChatCompletions, base, &t)
                  .is_ok());
  auto raised = openai::to_thread_request(t, opt);
  ASSERT_FALSE(raised.is_ok());
  EXPECT_EQ(raised.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(raised.status().message().find("no tools here"), std::string::npos);
}

TEST(ServerChatTemplate, ResponsesCarryToolCallsAndReasoning) {
  openai::ChoiceOutput c;
  c.text =
      "<think>look it up</think>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
      "{\"city\": \"Oslo\"}}\n</tool_call>";
  c.finish = FinishReason::kStop;
  c.tool_family = ToolCallFamily::kHermes;
  c.parse_reasoning = true;
  openai::ChoiceOutput plain;
  plain.text = "  just text ";
  const json body =
      openai::completion_body(Endpoint::kChatCompletions, "id", "m", 0, {c, plain}, Usage{});
  const json& m = body["choices"][0]["message"];
  EXPECT_EQ(m["role"], "assistant");
  EXPECT_TRUE(m["content"].is_null());
  EXPECT_EQ(m["reasoning_content"], "look it up");
  ASSERT_EQ(m["tool_calls"].size(), 1u);
  EXPECT_EQ(m["tool_calls"][0]["type"], "function");
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(m["tool_calls"][0]["function"]["arguments"].get<std::string>()),
            json({{"city", "Oslo"}}));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "tool_calls");
  // Without a family the text is untouched.
  EXPECT_EQ(body["choices"][1]["message"]["content"], "  just text ");
  EXPECT_FALSE(body["choices"][1]["message"].contains("tool_calls"));
  EXPECT_EQ(body["choices"][1]["finish_reason"], "stop");
}

// The data payloads of an SSE body, "[DONE]" included.
std::vector<std::string> sse_payloads(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    EXPECT_EQ(body.compare(pos, 6, "data: "), 0) << body.substr(pos, end - pos);
    out.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end + 2;
  }
  EXPECT_EQ(pos, body.size()) << "trailing bytes after the last event";
  return out;
}

// A streamed chat answer with tools gives, over its deltas, what the non-streaming response
// gives: reasoning_content, content, the tool calls (one tool_calls delta) and finish_reason
// "tool_calls"; marker text never reaches a content delta. The template's generation prompt ends
// in "<think>" (as DeepSeek-R1's does), so the answer starts inside its reasoning; a grammar
// makes stories260K write the answer.
TEST(ServerChatTemplate, StreamedToolCallsAndReasoningMatchTheWholeResponse) {
  LLMT_REQUIRE_DATA("models/stories260K.gguf");
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("llmt-stream-tools-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string tmpl_path = (dir / "t.jinja").string();
  {
    std::ofstream f(tmpl_path);
    f << "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
         "{% endfor %}{% if tools %}(tools: <tool_call>){% endif %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
         "{# answers close their reasoning with </think> #}";
  }
  server::ServerOptions so = test::server_test_options();
  so.chat_format = tmpl_path;
  test::RunningServer s(so);
  ASSERT_TRUE(s.srv);
  const std::string answer =
      "look it up</think>Sure, one moment. <tool_call>{\"name\": \"get_weather\", "
      "\"arguments\": {\"city\": \"Oslo\"}}</tool_call>";
  const json grammar_str = answer;  // a GBNF string literal, JSON escaping is the same here
  json body = {
      {"messages", {{{"role", "user"}, {"content", "weather?"}}}},
      {"tools", json::array({{{"type", "function"}, {"function", {{"name", "get_weather"}}}}})},
      {"grammar", "root ::= " + grammar_str.dump()},
      {"temperature", 0},
      {"max_tokens", 200}};
  auto c = s.client();
  int status = 0;
  const json whole = test::post_json(*c, "/v1/chat/completions", body, &status);
  ASSERT_EQ(status, 200) << whole;
  const json& m = whole["choices"][0]["message"];
  ASSERT_EQ(m["reasoning_content"], "look it up") << whole;
  ASSERT_EQ(m["content"], "Sure, one moment.") << whole;
  ASSERT_EQ(m["tool_calls"].size(), 1u) << whole;
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "tool_calls");

  body["stream"] = true;
  auto r = c->Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const std::vector<std::string> events = sse_payloads(r->body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string content, reasoning, finish;
  json calls;
  int n_reasoning_deltas = 0;
  for (size_t k = 0; k + 1 < events.size(); ++k) {
    const json ev = json::parse(events[k]);
    const json& ch = ev["choices"][0];
    const json& d = ch["delta"];
    if (d.contains("content") && d["content"].is_string()) {
      const std::string piece = d["content"];
      for (const char* marker : {"<think>", "</think>", "<tool_call>"}) {
        EXPECT_EQ(piece.find(marker), std::string::npos) << events[k];
      }
      content += piece;
    }
    if (d.contains("reasoning_content")) {
      reasoning += d["reasoning_content"].get<std::string>();
      ++n_reasoning_deltas;
    }
    if (d.contains("tool_calls")) {
      EXPECT_TRUE(calls.is_null()) << "one tool_calls delta";
      calls = d["tool_calls"];
    }
    if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
  }
  EXPECT_EQ(reasoning, m["reasoning_content"]);
  EXPECT_GE(n_reasoning_deltas, 2) << "reasoning is streamed as it comes, not at the end";
  EXPECT_EQ(content, m["content"]);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["index"], 0);
  EXPECT_EQ(calls[0]["type"], "function");
  EXPECT_EQ(calls[0]["function"]["name"], m["tool_calls"][0]["function"]["name"]);
  EXPECT_EQ(calls[0]["function"]["arguments"], m["tool_calls"][0]["function"]["arguments"]);
  EXPECT_EQ(finish, "tool_calls");

  // Without tools the same answer is text, its reasoning still parsed out.
  body.erase("tools");
  r = c->Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  content.clear();
  finish.clear();
  for (const std::string& e : sse_payloads(r->body)) {
    if (e == "[DONE]") continue;
    const json ev = json::parse(e);
    const json& d = ev["choices"][0]["delta"];
    EXPECT_FALSE(d.contains("tool_calls")) << e;
    if (d.contains("content") && d["content"].is_string())
      content += d["content"].get<std::string>();
    if (!ev["choices"][0]["finish_reason"].is_null()) finish = ev["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(content, answer.substr(answer.find("Sure")));
  EXPECT_EQ(finish, "stop");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace llmt
