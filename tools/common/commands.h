// Subcommands of the `llmthreads` executable. Each parses its own arguments (argv[0] is the
// subcommand name) and returns the process exit code; errors go to stderr as one clear line.
#pragma once

#include <string>

namespace llmt::cli {

int cmd_info(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_chat(int argc, char** argv);  // tools/cli/cmd-chat.cpp
int cmd_bench(int argc, char** argv);
int cmd_run(int argc, char** argv);
int cmd_serve(int argc, char** argv);  // tools/server/cmd-serve.cpp

// Resolves the model path: the explicit value if non-empty, else $LLMT_MODEL, else
// <LLMT_DATA or the build's default data folder>/models/<default_file>. Returns "" and prints a
// one-line error saying how to pass a model when the file does not exist.
std::string resolve_model_path(const std::string& explicit_path,
                               const std::string& default_file = "stories260K.gguf");

}  // namespace llmt::cli
