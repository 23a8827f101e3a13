// llmthreads: one executable, subcommands dispatched on argv[1].
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "common/commands.h"

namespace llmt::cli {
int cmd_template(int argc, char** argv);  // tools/cli/cmd-template.cpp
}

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: llmthreads <command> [options]\n"
               "\n"
               "commands:\n"
               "  info      show a GGUF model's metadata, hyperparameters and tensors\n"
               "  tokenize  tokenize text with a model's tokenizer\n"
               "  template  render a chat request (JSON on stdin) with a chat template\n"
               "  generate  generate text from a prompt\n"
               "  chat      chat with a model (turns from stdin, replies streamed to stdout)\n"
               "  bench     measure prefill/decode/batched throughput, bandwidth and kernels\n"
               "  run       run a task (classify, generate, extract, summarize) over a JSONL file\n"
               "  serve     serve a model over an OpenAI-compatible HTTP API\n"
               "\n"
               "Run 'llmthreads <command> --help' for a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    usage(stdout);
    return 0;
  }
  if (cmd == "--version") {
    std::printf("llmthreads 0.1.0\n");
    return 0;
  }
  if (cmd == "info") return llmt::cli::cmd_info(argc - 1, argv + 1);
  if (cmd == "tokenize") return llmt::cli::cmd_tokenize(argc - 1, argv + 1);
  if (cmd == "template") return llmt::cli::cmd_template(argc - 1, argv + 1);
  if (cmd == "generate") return llmt::cli::cmd_generate(argc - 1, argv + 1);
  if (cmd == "chat") return llmt::cli::cmd_chat(argc - 1, argv + 1);
  if (cmd == "bench") return llmt::cli::cmd_bench(argc - 1, argv + 1);
  if (cmd == "run") return llmt::cli::cmd_run(argc - 1, argv + 1);
  if (cmd == "serve") return llmt::cli::cmd_serve(argc - 1, argv + 1);
  std::fprintf(stderr, "error: unknown command '%s'\n", cmd.c_str());
  usage(stderr);
  return 2;
}
