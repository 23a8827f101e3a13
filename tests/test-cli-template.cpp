// `llmthreads template` and the chat-template line of `llmthreads info`, run as a user would.
#include <gtest/gtest.h>

#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "test-util.h"

namespace llmt {
namespace {

namespace fs = std::filesystem;
using test::cli_path;
using test::data_path;
using test::run_command;
using test::shell_quote;

// Writes `content` to a fresh temporary file and returns its path.
std::string temp_file(const std::string& name, const std::string& content) {
  const fs::path p =
      fs::temp_directory_path() / ("llmt-cli-template-" + std::to_string(::getpid()) + "-" + name);
  std::ofstream(p, std::ios::binary) << content;
  return p.string();
}

TEST(CliTemplate, RendersFileExactlyAndAsJson) {
  LLMT_REQUIRE_DATA("reference/chat-templates/renderings.json");
  const std::string dir = data_path("reference/chat-templates");
  const auto renderings = nlohmann::json::parse(test::read_file(dir + "/renderings.json"));
  const auto convs = nlohmann::ordered_json::parse(test::read_file(dir + "/conversations.json"));
  const auto special = nlohmann::json::parse(test::read_file(dir + "/special_tokens.json"));
  int n_checked = 0;
  for (const auto& r : renderings) {
    if (r["template"] != "qwen3" && r["template"] != "gemma3") continue;
    nlohmann::ordered_json req;
    for (const auto& c : convs) {
      if (c["id"] == r["conversation"]) {
        req["messages"] = c["messages"];
        if (c.contains("tools")) req["tools"] = c["tools"];
        req["add_generation_prompt"] = c["add_generation_prompt"];
      }
    }
    for (const auto& [k, v] : special[r["template"].get<std::string>()].items()) {
      if (k.find("_token") != std::string::npos) req[k] = v;
    }
    const std::string in = temp_file("req.json", req.dump());
    const std::string file = dir + "/" + r["template"].get<std::string>() + ".jinja";
    auto out =
        run_command(cli_path() + " template --file " + shell_quote(file) + " < " + shell_quote(in));
    auto js = run_command(cli_path() + " template --json --file " + shell_quote(file) + " < " +
                          shell_quote(in));
    auto err = run_command(cli_path() + " template --file " + shell_quote(file) + " < " +
                           shell_quote(in) + " 2>&1 >/dev/null");
    fs::remove(in);
    if (!r["error"].is_null()) {
      EXPECT_NE(out.exit_code, 0) << r["conversation"];
      EXPECT_EQ(out.out, "");
      const std::string want = r["error"].get<std::string>();
      EXPECT_NE(err.out.find(want.substr(want.find(": ") + 2)), std::string::npos) << err.out;
    } else {
      ASSERT_EQ(out.exit_code, 0) << r["conversation"] << err.out;
      EXPECT_EQ(out.out, r["rendered"].get<std::string>()) << r["conversation"];
      ASSERT_EQ(js.exit_code, 0);
      EXPECT_EQ(nlohmann::json::parse(js.out).get<std::string>(), r["rendered"].get<std::string>());
    }
    ++n_checked;
  }
  EXPECT_EQ(n_checked, 24);
}

TEST(CliTemplate, ModelTemplateNamesAndErrors) {
  LLMT_REQUIRE_DATA("models/arch/synth-qwen3-f16.gguf");
  const std::string model = data_path("models/arch/synth-qwen3-f16.gguf");
  const std::string in = temp_file(
      "chat.json",
      R"({"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true})");
  auto r = run_command(cli_path() + " template -m " + shell_quote(model) + " < " + shell_quote(in));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
            std::string::npos)
      << r.out;

  // A built-in format by name.
  r = run_command(cli_path() + " template --chat-template llama3 < " + shell_quote(in));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out,
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|"
            "end_header_id|>\n\n");

  // Unknown role, bad JSON, a template that raises, a syntax error, a model without a template.
  const std::string bad_role =
      temp_file("bad-role.json", R"({"messages": [{"role": "wizard", "content": "x"}]})");
  r = run_command(cli_path() + " template -m " + shell_quote(model) + " < " +
                  shell_quote(bad_role) + " 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("wizard"), std::string::npos) << r.out;
  const std::string bad_json = temp_file("bad.json", "{nope");
  r = run_command(cli_path() + " template -m " + shell_quote(model) + " < " +
                  shell_quote(bad_json) + " 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("not valid JSON"), std::string::npos) << r.out;
  const std::string raising =
      temp_file("raise.jinja", "{{ raise_exception('no system role here') }}");
  r = run_command(cli_path() + " template --file " + shell_quote(raising) + " < " +
                  shell_quote(in) + " 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("no system role here"), std::string::npos) << r.out;
  const std::string broken = temp_file("broken.jinja", "ok\n{% for m in messages %}");
  r = run_command(cli_path() + " template --file " + shell_quote(broken) + " < " + shell_quote(in) +
                  " 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("syntax error (line 2)"), std::string::npos) << r.out;
  r = run_command(cli_path() + " template -m " + shell_quote(data_path("models/stories260K.gguf")) +
                  " < " + shell_quote(in) + " 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("no tokenizer.chat_template"), std::string::npos) << r.out;
  for (const std::string& f : {in, bad_role, bad_json, raising, broken}) fs::remove(f);
}

TEST(CliTemplate, InfoSaysWhichTemplateIsUsed) {
  LLMT_REQUIRE_DATA("models/arch/synth-qwen3-f16.gguf");
  auto r = run_command(cli_path() + " info " +
                       shell_quote(data_path("models/arch/synth-qwen3-f16.gguf")));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("chat template: Jinja from GGUF tokenizer.chat_template ("),
            std::string::npos)
      << r.out;
  r = run_command(cli_path() + " info --json " + shell_quote(data_path("models/stories260K.gguf")));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["chat_template"], false);
  EXPECT_NE(j["chat_template_used"].get<std::string>().find("--chat-template"), std::string::npos);
}

}  // namespace
}  // namespace llmt
