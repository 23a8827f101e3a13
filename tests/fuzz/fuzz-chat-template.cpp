// libFuzzer target: the Jinja chat-template interpreter (src/tokenizer/jinja-*.cpp through
// ChatTemplate). The input is split at its first NUL byte: the bytes before are the template
// source, the bytes after a JSON chat request (render_json's shape; when absent or not JSON, a
// fixed two-turn conversation is rendered instead). The template is parsed and rendered with
// small limits, so a runaway loop or a huge string stops on a limit rather than on the fuzzer's
// timeout. The contract checked: any template and any request yield a string or an error Status,
// never a crash, a hang or UB; and a rendered text respects max_output_bytes.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/chat-template.h"

namespace {

constexpr size_t kMaxOutput = 64u << 10;

// A rendered text stays within the limit; a failure is a user-facing code, never kInternal.
void check_output(const llmt::Result<std::string>& r) {
  if (!r.is_ok() && r.status().code() == llmt::StatusCode::kInternal) {
    std::fprintf(stderr, "fuzz-chat-template: internal error: %s\n", r.status().message().c_str());
    std::abort();
  }
  if (r.is_ok() && r->size() > kMaxOutput) {
    std::fprintf(stderr, "fuzz-chat-template: output of %zu bytes past max_output_bytes\n",
                 r->size());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view source = input.substr(0, nul);
  const std::string_view request =
      nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);

  llmt::JinjaLimits limits;
  limits.max_output_bytes = kMaxOutput;
  limits.max_steps = 200'000;
  limits.max_depth = 64;
  auto t = llmt::ChatTemplate::from_jinja(source, "fuzz", "<s>", "</s>", limits);
  if (!t.is_ok()) return 0;
  std::tm fixed{};
  fixed.tm_year = 126;
  fixed.tm_mon = 0;
  fixed.tm_mday = 2;
  t->set_fixed_time(fixed);

  auto r = t->render_json(request);
  check_output(r);
  if (!r.is_ok() && r.status().code() == llmt::StatusCode::kInvalidArgument) {
    const std::vector<llmt::ChatMessage> messages = {
        {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};
    check_output(t->render(messages, /*add_generation_prompt=*/true));
    check_output(t->render_prompt(messages, /*add_generation_prompt=*/false,
                                  /*tokenizer_adds_bos=*/true));
  }
  return 0;
}
