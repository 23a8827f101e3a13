// Jinja chat templates: the five real templates of reference/chat-templates rendered exactly as
// renderings.json (python3-jinja2 as transformers uses it), including the three that raise;
// python3-jinja2 itself (render_py.py) as an oracle on more conversations when it is installed;
// semantics of the subset; bad templates as errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "llmthreads/chat-template.h"
#include "test-util.h"

namespace llmt {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using test::data_path;

const char* kDir = "reference/chat-templates";

std::tm fixed_time() {
  std::tm t{};
  t.tm_year = 2026 - 1900;
  t.tm_mon = 7;
  t.tm_mday = 15;
  t.tm_hour = 12;
  t.tm_wday = 6;
  t.tm_yday = 226;
  return t;
}

// The template `name` of the reference folder `dir` with its special tokens.
ChatTemplate load_template(const std::string& dir, const std::string& name, json* tokens) {
  const json special = json::parse(test::read_file(dir + "/special_tokens.json"));
  *tokens = json::object();
  for (const auto& [k, v] : special[name].items()) {
    if (k.size() > 6 && k.substr(k.size() - 6) == "_token") (*tokens)[k] = v;
  }
  auto t = ChatTemplate::from_jinja(test::read_file(dir + "/" + name + ".jinja"), name,
                                    tokens->value("bos_token", ""), tokens->value("eos_token", ""));
  EXPECT_TRUE(t.is_ok()) << t.status().message();
  ChatTemplate out =
      t.is_ok() ? std::move(t).value() : ChatTemplate::from_format(ChatFormat::kChatml);
  out.set_fixed_time(fixed_time());
  return out;
}

json request_of(const json& conv, const json& tokens) {
  json req = tokens;
  req["messages"] = conv["messages"];
  if (conv.contains("tools")) req["tools"] = conv["tools"];
  req["add_generation_prompt"] = conv["add_generation_prompt"];
  return req;
}

// The part of a Python error after "TypeName: ".
std::string error_text(const std::string& py_error) {
  const size_t colon = py_error.find(": ");
  return colon == std::string::npos ? py_error : py_error.substr(colon + 2);
}

void check_renderings(const std::string& dir, const json& renderings, const json& convs,
                      int* n_exact, int* n_raised) {
  std::map<std::string, json> conv_by_id;
  for (const auto& c : convs) conv_by_id[c["id"].get<std::string>()] = c;
  std::map<std::string, std::pair<ChatTemplate, json>> templates;
  for (const auto& r : renderings) {
    const std::string name = r["template"].get<std::string>();
    const std::string cid = r["conversation"].get<std::string>();
    if (!templates.count(name)) {
      json tokens;
      ChatTemplate t = load_template(dir, name, &tokens);
      templates.emplace(name, std::make_pair(std::move(t), tokens));
    }
    const auto& [tmpl, tokens] = templates.at(name);
    ASSERT_TRUE(conv_by_id.count(cid)) << cid;
    const json req = request_of(conv_by_id[cid], tokens);
    auto got = tmpl.render_json(req.dump());
    if (!r["error"].is_null()) {
      const std::string want = r["error"].get<std::string>();
      ASSERT_FALSE(got.is_ok()) << name << " x " << cid << " should raise '" << want
                                << "', rendered:\n"
                                << *got;
      EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(got.status().message().find(error_text(want)), std::string::npos)
          << name << " x " << cid << ": " << got.status().message() << "\nwant: " << want;
      ++*n_raised;
      continue;
    }
    ASSERT_TRUE(got.is_ok()) << name << " x " << cid << ": " << got.status().message();
    EXPECT_EQ(*got, r["rendered"].get<std::string>()) << name << " x " << cid;
    if (*got == r["rendered"].get<std::string>()) ++*n_exact;
  }
}

TEST(JinjaReference, AllRenderings) {
  LLMT_REQUIRE_DATA(std::string(kDir) + "/renderings.json");
  const std::string dir = data_path(kDir);
  const json renderings = json::parse(test::read_file(dir + "/renderings.json"));
  const json convs = json::parse(test::read_file(dir + "/conversations.json"));
  ASSERT_EQ(renderings.size(), 60u);
  int n_exact = 0, n_raised = 0;
  check_renderings(dir, renderings, convs, &n_exact, &n_raised);
  std::printf("renderings.json: %d exact, %d raised as expected\n", n_exact, n_raised);
  EXPECT_EQ(n_exact, 57);
  EXPECT_EQ(n_raised, 3);
}

}  // namespace
}  // namespace llmt
