// Tool calls and reasoning parsed back from model output for the Hermes/Qwen, Llama 3.x JSON
// and DeepSeek V3/R1 families; family detection on the real templates.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "llmthreads/chat-template.h"
#include "test-util.h"

namespace llmt {
namespace {

using nlohmann::json;

TEST(ToolCalls, DetectsFamiliesOfRealTemplates) {
  LLMT_REQUIRE_DATA("reference/chat-templates/qwen3.jinja");
  auto src = [](const char* name) {
    return test::read_file(test::data_path(std::string("reference/chat-templates/") + name));
  };
  EXPECT_EQ(detect_tool_call_family(src("qwen3.jinja")), ToolCallFamily::kHermes);
  EXPECT_EQ(detect_tool_call_family(src("deepseek_v3.jinja")), ToolCallFamily::kDeepseek);
  EXPECT_EQ(detect_tool_call_family(src("gemma3.jinja")), ToolCallFamily::kNone);
  EXPECT_EQ(detect_tool_call_family(src("llama3.jinja")), ToolCallFamily::kNone);
  const std::string ours = std::string(LLMT_SOURCE_DIR) + "/tests/data/jinja/llama3_1_tools.jinja";
  EXPECT_EQ(detect_tool_call_family(test::read_file(ours)), ToolCallFamily::kLlama3);
  EXPECT_EQ(tool_call_family_name(ToolCallFamily::kDeepseek), "deepseek");
}

TEST(ToolCalls, Hermes) {
  const std::string out =
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Z\\u00fcrich\", "
      "\"unit\": \"c\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"b\": 2, "
      "\"a\": 1}}\n"
      "</tool_call>";
  const ParsedAssistantMessage m = parse_assistant_output(out, ToolCallFamily::kHermes);
  EXPECT_EQ(m.content, "Let me check.");
  ASSERT_EQ(m.tool_calls.size(), 2u);
  EXPECT_EQ(m.tool_calls[0].id, "call_0");
  EXPECT_EQ(m.tool_calls[0].name, "get_weather");
  EXPECT_EQ(m.tool_calls[0].arguments, "{\"city\":\"Zürich\",\"unit\":\"c\"}");
  EXPECT_EQ(m.tool_calls[1].name, "add");
  EXPECT_EQ(m.tool_calls[1].arguments, "{\"b\":2,\"a\":1}");  // key order kept
  EXPECT_EQ(m.tool_calls[1].id, "call_1");

  // A block that does not parse stays text; no crash on an unclosed block.
  const auto bad =
      parse_assistant_output("x <tool_call>{not json}</tool_call> y", ToolCallFamily::kHermes);
  EXPECT_TRUE(bad.tool_calls.empty());
  EXPECT_EQ(bad.content, "x <tool_call>{not json}</tool_call> y");
  const auto open = parse_assistant_output("<tool_call>\n{\"name\": \"f\", \"arguments\": {}}",
                                           ToolCallFamily::kHermes);
  ASSERT_EQ(open.tool_calls.size(), 1u);
  EXPECT_EQ(open.tool_calls[0].arguments, "{}");
  EXPECT_EQ(open.content, "");
}

TEST(ToolCalls, Llama3Json) {
  auto m = parse_assistant_output(
      "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
      ToolCallFamily::kLlama3);
  ASSERT_EQ(m.tool_calls.size(), 1u);
  EXPECT_EQ(m.tool_calls[0].name, "get_weather");
  EXPECT_EQ(m.tool_calls[0].arguments, "{\"city\":\"Paris\"}");
  EXPECT_EQ(m.content, "");

  m = parse_assistant_output(
      "{\"name\": \"a\", \"parameters\": {\"s\": \"x;y\"}}; {\"type\": \"function\", \"name\": "
      "\"b\", "
      "\"arguments\": {}}",
      ToolCallFamily::kLlama3);
  ASSERT_EQ(m.tool_calls.size(), 2u);
  EXPECT_EQ(m.tool_calls[0].arguments, "{\"s\":\"x;y\"}");
  EXPECT_EQ(m.tool_calls[1].name, "b");

  m = parse_assistant_output("[{\"name\": \"a\", \"arguments\": \"{\\\"k\\\": 1}\"}]",
                             ToolCallFamily::kLlama3);
  ASSERT_EQ(m.tool_calls.size(), 1u);
  EXPECT_EQ(m.tool_calls[0].arguments, "{\"k\": 1}");  // a string argument is kept verbatim

  // Ordinary answers (also JSON that is not a call) are content, unchanged.
  for (const char* text : {"The capital is Paris.", "{\"answer\": 42}", "  {broken", "[1, 2]"}) {
    m = parse_assistant_output(text, ToolCallFamily::kLlama3);
    EXPECT_TRUE(m.tool_calls.empty()) << text;
    EXPECT_EQ(m.content, text);
  }
}

TEST(ToolCalls, DeepseekAndReasoning) {
  const std::string out =
      "<think>\nThe user wants weather.\n</think>\n\nChecking."
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"
      "\"city\": "
      "\"Tokyo\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```"
      "json\n{\"a\": "
      "1, \"b\": 2}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>";
  const ParsedAssistantMessage m = parse_assistant_output(out, ToolCallFamily::kDeepseek);
  EXPECT_EQ(m.reasoning_content, "The user wants weather.");
  EXPECT_EQ(m.content, "Checking.");
  ASSERT_EQ(m.tool_calls.size(), 2u);
  EXPECT_EQ(m.tool_calls[0].name, "get_weather");
  EXPECT_EQ(m.tool_calls[0].arguments, "{\"city\":\"Tokyo\"}");
  EXPECT_EQ(m.tool_calls[1].name, "add");
  EXPECT_EQ(m.tool_calls[1].arguments, "{\"a\":1,\"b\":2}");

  // R1: the generation prompt already opened <think>, so the output has only the close.
  auto r1 =
      parse_assistant_output("step 1, step 2\n</think>\n\nThe answer is 4.", ToolCallFamily::kNone);
  EXPECT_EQ(r1.reasoning_content, "step 1, step 2");
  EXPECT_EQ(r1.content, "The answer is 4.");
  // Cut off while thinking: all reasoning.
  auto cut = parse_assistant_output("<think>still going", ToolCallFamily::kHermes);
  EXPECT_EQ(cut.reasoning_content, "still going");
  EXPECT_EQ(cut.content, "");
  // Reasoning off, or none present: the text is untouched.
  auto off =
      parse_assistant_output("<think>a</think>b", ToolCallFamily::kNone, /*parse_reasoning=*/false);
  EXPECT_EQ(off.content, "<think>a</think>b");
  auto plain = parse_assistant_output("  hello \n", ToolCallFamily::kHermes);
  EXPECT_EQ(plain.content, "  hello \n");
  EXPECT_EQ(plain.reasoning_content, "");
  // A malformed DeepSeek block stays text.
  auto bad =
      parse_assistant_output("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>nosep<｜tool▁call▁end｜>",
                             ToolCallFamily::kDeepseek);
  EXPECT_TRUE(bad.tool_calls.empty());
  EXPECT_FALSE(bad.content.empty());
}

// Streamed in pieces, every answer gives what parse_assistant_output gives for the whole text:
// the concatenated deltas are its content and reasoning_content, finish() its tool calls; and no
// marker text leaks into a delta before it is known not to be one.
TEST(ToolCalls, StreamParserMatchesTheWholeTextParseForEverySplit) {
  struct Case {
    ToolCallFamily family;
    bool reasoning;
    bool open;  // the prompt ended in "<think>"
    std::string text;
  };
  const std::string ds_calls =
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"
      "\"city\": \"Tokyo\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>";
  const std::vector<Case> cases = {
      {ToolCallFamily::kHermes, true, false,
       "<think>\nLet me look.\n</think>\n\nSure. <tool_call>\n{\"name\": \"f\", \"arguments\": "
       "{\"x\": 1}}\n</tool_call>\n<tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>"},
      {ToolCallFamily::kHermes, true, false, "Plain answer, no call.  "},
      {ToolCallFamily::kHermes, false, false, "a < b and <tool_ is not a call"},
      {ToolCallFamily::kHermes, true, false, "<think>cut off while thinking"},
      {ToolCallFamily::kHermes, true, false, "<tool_call>not json</tool_call> tail"},
      {ToolCallFamily::kLlama3, false, false,
       "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}"},
      {ToolCallFamily::kLlama3, false, false,
       "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": "
       "{}}"},
      {ToolCallFamily::kLlama3, false, false, "{not a call} but text"},
      {ToolCallFamily::kLlama3, false, false, "The weather is fine."},
      {ToolCallFamily::kDeepseek, true, false,
       "<think>\nThe user wants weather.\n</think>\n\nChecking." + ds_calls},
      {ToolCallFamily::kDeepseek, true, true, "step 1, step 2\n</think>\n\nThe answer is 4."},
      {ToolCallFamily::kNone, true, true, "only thinking, cut off"},
      {ToolCallFamily::kNone, true, false, "<thinking> is not <think>"},
      {ToolCallFamily::kNone, true, false, "<think>a</think>b < c </thin"},
  };
  for (const Case& cs : cases) {
    const std::string whole = (cs.open ? "<think>" : "") + cs.text;
    const ParsedAssistantMessage want = parse_assistant_output(whole, cs.family, cs.reasoning);
    // Every split into two pieces, and one byte at a time.
    std::vector<std::vector<std::string>> splits;
    for (size_t k = 0; k <= cs.text.size(); ++k)
      splits.push_back({cs.text.substr(0, k), cs.text.substr(k)});
    std::vector<std::string> bytes;
    for (char ch : cs.text) bytes.emplace_back(1, ch);
    splits.push_back(bytes);
    for (const auto& pieces : splits) {
      AssistantStreamParser p(cs.family, cs.reasoning, cs.open);
      std::string content, reasoning;
      for (const std::string& piece : pieces) {
        const AssistantDelta d = p.feed(piece);
        content += d.content;
        reasoning += d.reasoning_content;
        for (const char* marker : {"<think>", "</think>", "<tool_call>", "<|python_tag|>"}) {
          // (unless the answer's content really holds that text)
          if (want.content.find(marker) != std::string::npos) continue;
          EXPECT_EQ(d.content.find(marker), std::string::npos) << cs.text;
        }
      }
      AssistantStreamParser::Final f = p.finish();
      content += f.rest.content;
      reasoning += f.rest.reasoning_content;
      ASSERT_EQ(content, want.content) << cs.text << " | pieces " << pieces.size();
      ASSERT_EQ(reasoning, want.reasoning_content) << cs.text;
      ASSERT_EQ(f.tool_calls.size(), want.tool_calls.size()) << cs.text;
      for (size_t i = 0; i < want.tool_calls.size(); ++i) {
        EXPECT_EQ(f.tool_calls[i].name, want.tool_calls[i].name);
        EXPECT_EQ(f.tool_calls[i].arguments, want.tool_calls[i].arguments);
      }
    }
  }
  // Text is sent as it comes, not held to the end: the first words of a long answer.
  AssistantStreamParser p(ToolCallFamily::kHermes, true, false);
  EXPECT_EQ(p.feed("<think>Hmm").reasoning_content, "Hmm");
  EXPECT_EQ(p.feed(" yes</think>The ").content, "The");
  EXPECT_EQ(p.feed("answer <tool").content, " answer");
  EXPECT_EQ(p.feed("_call>{").content, "");
}

// What the templates render for an assistant tool call parses back into the same call.
TEST(ToolCalls, RoundTripThroughTemplates) {
  LLMT_REQUIRE_DATA("reference/chat-templates/qwen3.jinja");
  const json call = {{"id", "c1"},
                     {"type", "function"},
                     {"function", {{"name", "get_weather"}, {"arguments", {{"city", "Oslo"}}}}}};
  for (const char* name : {"qwen3", "deepseek_v3"}) {
    const std::string src = test::read_file(
        test::data_path(std::string("reference/chat-templates/") + name + ".jinja"));
    auto t = ChatTemplate::from_jinja(src, name, "", "");
    ASSERT_TRUE(t.is_ok()) << t.status().message();
    json c = call;
    const bool ds = std::string(name) == "deepseek_v3";
    if (ds) c["function"]["arguments"] = "{\"city\": \"Oslo\"}";  // it concatenates strings
    // qwen3 needs a string content ('</think>' in content), deepseek a null one.
    const json content = ds ? json(nullptr) : json("");
    const json req = {{"messages",
                       {{{"role", "user"}, {"content", "weather?"}},
                        {{"role", "assistant"}, {"content", content}, {"tool_calls", {c}}}}}};
    auto text = t->render_json(req.dump());
    ASSERT_TRUE(text.is_ok()) << name << ": " << text.status().message();
    // The assistant turn: after the last user turn's end.
    const std::string marker =
        std::string(name) == "qwen3" ? "<|im_start|>assistant\n" : "<｜Assistant｜>";
    const size_t at = text->rfind(marker);
    ASSERT_NE(at, std::string::npos) << *text;
    const auto m =
        parse_assistant_output(text->substr(at + marker.size()), detect_tool_call_family(src));
    ASSERT_EQ(m.tool_calls.size(), 1u) << name << ": " << *text;
    EXPECT_EQ(m.tool_calls[0].name, "get_weather");
    EXPECT_EQ(json::parse(m.tool_calls[0].arguments), json({{"city", "Oslo"}})) << name;
  }
}

}  // namespace
}  // namespace llmt
