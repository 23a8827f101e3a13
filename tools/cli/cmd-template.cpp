// llmthreads template [--file T.jinja | -m MODEL] [--chat-template NAME|FILE] [--json] < REQUEST
//
// Renders a chat request read as JSON on stdin ({"messages", "tools", "add_generation_prompt",
// and any other template variables}) with a Jinja file or the model's chat template, and prints
// the exact text (no newline added), or with --json the text as one JSON string and a newline.
// A template that raises, a bad request or a bad template exits 1 with the message on stderr.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/commands.h"
#include "llmthreads/chat-template.h"
#include "llmthreads/gguf.h"
#include "llmthreads/tokenizer.h"

namespace llmt::cli {

int cmd_template(int argc, char** argv) {
  CLI::App app{
      "Render a chat request (JSON on stdin: {\"messages\": [...], \"tools\": [...],\n"
      "\"add_generation_prompt\": bool, other template variables}) with a chat template, as\n"
      "Hugging Face's apply_chat_template does, and print the exact text. The template is\n"
      "--file, else --chat-template (a built-in format name or a file), else the model's\n"
      "tokenizer.chat_template; bos_token/eos_token come from the model when one is given.",
      "template"};
  std::string model, file, chat_template;
  bool json = false;
  app.add_option("-m,--model", model, "GGUF file whose chat template (and BOS/EOS) to use");
  app.add_option("--file", file, "a Jinja template file");
  app.add_option("--chat-template", chat_template, "a built-in format name or a Jinja file");
  app.add_flag("--json", json, "print the rendered text as a JSON string");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!file.empty() && !chat_template.empty()) {
    std::fprintf(stderr, "error: --file and --chat-template cannot be combined\n");
    return 2;
  }
  const std::string option = !file.empty() ? file : chat_template;

  std::unique_ptr<GgufFile> gguf;
  std::unique_ptr<Tokenizer> tok;
  std::string gguf_template;
  if (!model.empty() || option.empty()) {
    const std::string path = resolve_model_path(model);
    if (path.empty()) return 1;
    auto g = GgufFile::open(path);
    if (!g.is_ok()) {
      std::fprintf(stderr, "error: %s\n", g.status().to_string().c_str());
      return 1;
    }
    gguf = std::move(g).value();
    auto t = Tokenizer::from_gguf(*gguf);
    if (t.is_ok()) tok = std::move(t).value();
    auto s = gguf->get_string("tokenizer.chat_template");
    if (s.is_ok() && *s) gguf_template = std::string(**s);
  }
  auto tmpl = ChatTemplate::select(option, gguf_template, tok.get());
  if (!tmpl.is_ok()) {
    std::fprintf(stderr, "error: %s\n", tmpl.status().message().c_str());
    return 1;
  }
  const std::string request((std::istreambuf_iterator<char>(std::cin)),
                            std::istreambuf_iterator<char>());
  auto text = tmpl->render_json(request);
  if (!text.is_ok()) {
    std::fprintf(stderr, "error: %s\n", text.status().message().c_str());
    return 1;
  }
  if (json) {
    const std::string s = nlohmann::json(*text).dump(-1, ' ', /*ensure_ascii=*/false,
                                                     nlohmann::json::error_handler_t::replace);
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fputc('\n', stdout);
  } else {
    std::fwrite(text->data(), 1, text->size(), stdout);
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace llmt::cli
