// Command-line flags shared by the subcommands that sample tokens themselves (generate, chat).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "llmthreads/sampling.h"

namespace llmt::cli {

// Adds --temp, --top-k, --top-p, --min-p, --repeat-penalty, --repeat-last-n,
// --frequency-penalty, --presence-penalty and -s/--seed, writing into *sp (which must outlive
// the parse). `temp_default` is the default shown in --temp's help ("0.8").
void add_sampling_options(CLI::App& app, SamplingParams* sp, const std::string& temp_default);

}  // namespace llmt::cli
