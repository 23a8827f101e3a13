// llmthreads tokenize [-m MODEL] [--json] [--no-bos] [--parse-special] [--pieces] [--] TEXT...
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "common/commands.h"
#include "llmthreads/gguf.h"
#include "llmthreads/tokenizer.h"

namespace llmt::cli {

namespace {

// Escapes a piece for one-line display: control bytes as \n, \t, \r, \xNN; other bytes as is.
std::string printable_piece(const std::string& piece) {
  std::string out;
  for (unsigned char c : piece) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace

int cmd_tokenize(int argc, char** argv) {
  CLI::App app{
      "Tokenize TEXT with a model's tokenizer (vocab-only GGUF files work too).\n"
      "Output: one line of space-separated token ids; with --pieces, one line per token\n"
      "'ID<TAB>PIECE' (the piece's control bytes escaped); with --json exactly\n"
      "{\"token_ids\": [...]}. Put TEXT after -- when it starts with '-' or is empty;\n"
      "several TEXT arguments are joined with single spaces.",
      "tokenize"};
  std::string model;
  bool json = false, no_bos = false, parse_special = false, pieces = false;
  std::vector<std::string> words;
  app.add_option("-m,--model", model, "GGUF file (default: $LLMT_MODEL or stories260K.gguf)");
  app.add_flag("--json", json, "print {\"token_ids\": [...]}");
  app.add_flag("--no-bos", no_bos, "do not add BOS/EOS (add_special = false)");
  app.add_flag("--parse-special", parse_special,
               "turn special-token texts such as <s> in TEXT into their ids");
  app.add_flag("--pieces", pieces, "print one 'ID<TAB>PIECE' line per token");
  app.add_option("text", words, "the text to tokenize")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (json && pieces) {
    std::fprintf(stderr, "error: --json and --pieces cannot be combined\n");
    return 2;
  }
  std::string text;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i) text += ' ';
    text += words[i];
  }

  const std::string path = resolve_model_path(model);
  if (path.empty()) return 1;
  auto gguf = GgufFile::open(path);
  if (!gguf.is_ok()) {
    std::fprintf(stderr, "error: %s\n", gguf.status().to_string().c_str());
    return 1;
  }
  auto tok = Tokenizer::from_gguf(**gguf);
  if (!tok.is_ok()) {
    std::fprintf(stderr, "error: %s\n", tok.status().to_string().c_str());
    return 1;
  }
  TokenizeOptions options;
  options.add_special = !no_bos;
  options.parse_special = parse_special;
  const std::vector<int32_t> ids = (*tok)->encode(text, options);

  std::string out;
  if (json) {
    out = "{\"token_ids\": [";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ", ";
      out += std::to_string(ids[i]);
    }
    out += "]}\n";
  } else if (pieces) {
    for (int32_t id : ids) {
      out += std::to_string(id) + "\t" + printable_piece((*tok)->token_to_piece(id, true)) + "\n";
    }
  } else {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ' ';
      out += std::to_string(ids[i]);
    }
    out += '\n';
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace llmt::cli
