#include "cli-flags.h"

namespace llmt::cli {

void add_sampling_options(CLI::App& app, SamplingParams* sp, const std::string& temp_default) {
  app.add_option("--temp", sp->temperature,
                 "temperature; 0 = greedy (default " + temp_default + ")");
  app.add_option("--top-k", sp->top_k, "top-k, 0 = off (default 40)");
  app.add_option("--top-p", sp->top_p, "top-p, 1 = off (default 0.95)");
  app.add_option("--min-p", sp->min_p, "min-p, 0 = off (default 0.05)");
  app.add_option("--repeat-penalty", sp->repeat_penalty, "repeat penalty, 1 = off (default 1)");
  app.add_option("--repeat-last-n", sp->repeat_last_n, "penalty window in tokens (default 64)");
  app.add_option("--frequency-penalty", sp->frequency_penalty, "frequency penalty (default 0)");
  app.add_option("--presence-penalty", sp->presence_penalty, "presence penalty (default 0)");
  app.add_option("-s,--seed", sp->seed, "RNG seed (default fixed, so runs repeat)");
}

}  // namespace llmt::cli
