// The OpenAI translation with Jinja chat templates: unknown roles are 400s, tools and
// chat_template_kwargs reach the template, a template that raises is a 400 with its message, the
// prompt is the rendering (one BOS), and responses carry tool_calls / reasoning_content.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "common/openai.h"
#include "llmthreads/chat-template.h"
#include "llmthreads/model.h"
#include "llmthreads/tokenizer.h"
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

}  // namespace
}  // namespace llmt
