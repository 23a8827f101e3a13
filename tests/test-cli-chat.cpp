// `llmthreads chat` with its turns piped in, on stories260K (which has no chat template: the
// built-in chatml is named): replies stream to stdout one after the other, the history is kept
// (each prompt holds the previous turns), /reset forgets it (the same greedy reply again), /exit
// ends the session, sampling flags are honoured, and a turn that does not fit the context is an
// error line after which the session goes on.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "test-util.h"

namespace llmt {
namespace {

using test::data_path;
using test::read_file;
using test::run_command;
using test::shell_quote;

constexpr const char* kModel = "models/stories260K.gguf";

struct ChatRun {
  int exit_code = -1;
  std::string out, err;
};

// Pipes `input` into `llmthreads chat` with `args`; stdout and stderr apart.
ChatRun chat(const std::string& input, const std::vector<std::string>& args) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string in = (dir / ("llmt-chat-in-" + std::to_string(getpid()))).string();
  const std::string err = (dir / ("llmt-chat-err-" + std::to_string(getpid()))).string();
  {
    FILE* f = std::fopen(in.c_str(), "wb");
    std::fwrite(input.data(), 1, input.size(), f);
    std::fclose(f);
  }
  std::string cmd = shell_quote(test::cli_path()) + " chat -m " + shell_quote(data_path(kModel)) +
                    " --chat-template chatml -t 2";
  for (const auto& a : args) {
    cmd += ' ';
    cmd += shell_quote(a);
  }
  cmd += " < " + shell_quote(in) + " 2> " + shell_quote(err);
  const auto r = run_command(cmd);
  ChatRun c{r.exit_code, r.out, read_file(err)};
  std::filesystem::remove(in);
  std::filesystem::remove(err);
  return c;
}

// The prompt sizes of the stats lines, in order.
std::vector<int> prompt_sizes(const std::string& err) {
  std::vector<int> out;
  const std::regex re(R"(\[prompt (\d+) tok \| reply \d+ tok)");
  for (auto it = std::sregex_iterator(err.begin(), err.end(), re); it != std::sregex_iterator();
       ++it) {
    out.push_back(std::stoi((*it)[1]));
  }
  return out;
}

TEST(CliChat, TwoTurnsKeepHistoryAndResetForgetsIt) {
  LLMT_REQUIRE_DATA(kModel);
  const std::vector<std::string> greedy = {"-n", "12", "--temp", "0"};
  const ChatRun one = chat("Hello there\n", greedy);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_GT(one.out.size(), 1u) << one.err;
  EXPECT_EQ(one.out.back(), '\n');
  EXPECT_NE(one.err.find("built-in chatml"), std::string::npos) << one.err;

  const ChatRun two =
      chat("Hello there\nTell me a story\n/reset\nHello there\n/exit\nnot read\n", greedy);
  ASSERT_EQ(two.exit_code, 0) << two.err;
  // stdout: reply 1, reply 2, then reply 1 again (the conversation was reset; greedy).
  ASSERT_GT(two.out.size(), 2 * one.out.size()) << two.out;
  EXPECT_EQ(two.out.substr(0, one.out.size()), one.out);
  EXPECT_EQ(two.out.substr(two.out.size() - one.out.size()), one.out);
  const auto sizes = prompt_sizes(two.err);
  ASSERT_EQ(sizes.size(), 3u) << two.err;  // "not read" came after /exit
  EXPECT_GT(sizes[1], sizes[0] + 12) << "the second prompt holds the first turn and its reply";
  EXPECT_EQ(sizes[2], sizes[0]);
  EXPECT_NE(two.err.find("(conversation cleared)"), std::string::npos);
  EXPECT_EQ(two.err.find("error"), std::string::npos) << two.err;
}

TEST(CliChat, SamplingFlagsAndSystemPrompt) {
  LLMT_REQUIRE_DATA(kModel);
  const std::vector<std::string> sampled = {"-n", "10", "--temp", "1.0", "--seed", "7"};
  const ChatRun a = chat("Once upon a time\n", sampled);
  const ChatRun b = chat("Once upon a time\n", sampled);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out) << "a fixed seed repeats";
  const auto plain = prompt_sizes(a.err);
  std::vector<std::string> with_system = sampled;
  with_system.insert(with_system.end(), {"--system", "You tell short stories."});
  const ChatRun s = chat("Once upon a time\n", with_system);
  ASSERT_EQ(s.exit_code, 0) << s.err;
  const auto sys = prompt_sizes(s.err);
  ASSERT_EQ(plain.size(), 1u);
  ASSERT_EQ(sys.size(), 1u);
  EXPECT_GT(sys[0], plain[0]) << "the system turn is rendered into the prompt";
  const ChatRun bad = chat("", {"--temp", "-1"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("error:"), std::string::npos) << bad.err;
}

TEST(CliChat, TurnPastTheContextIsAnErrorAndTheSessionGoesOn) {
  LLMT_REQUIRE_DATA(kModel);
  const std::vector<std::string> args = {"-n", "8", "--temp", "0", "-c", "72"};
  const ChatRun one = chat("Hello there\n", args);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const ChatRun r = chat("Hello there\n" + std::string(300, 'a') + "\n/reset\nHello there\n", args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("error: the conversation has"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("does not fit the context of 72"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, one.out + one.out);  // the failed turn printed nothing
}

TEST(CliChat, ModelWithoutTemplateNeedsChatTemplate) {
  LLMT_REQUIRE_DATA(kModel);
  const auto r = run_command(
      "echo hi | " + shell_quote(test::cli_path()) + " chat -m " + shell_quote(data_path(kModel)),
      true);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("error: the model has no tokenizer.chat_template"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("--chat-template"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace llmt
