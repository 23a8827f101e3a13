// Engine flags shared by the commands that run an Engine (`run`, later `serve`): one function
// adds them to a CLI11 app, another turns the parsed values into an EngineConfig.
//
// Thread-safety: plain functions over caller-owned values; call from one thread per app.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "llmthreads/engine.h"
#include "llmthreads/status.h"

namespace CLI {
class App;
}

namespace llmt::cli {

// The raw flag values (sizes as typed, names unparsed), with the engine's defaults.
struct EngineFlags {
  std::string kv_budget = "256M";
  std::string kv_type = "f16";
  int32_t block_size = 16;
  int32_t step_tokens = 256;
  int32_t max_running = 64;
  int32_t n_ctx = 0;
  std::string policy = "priority";
  std::string eviction = "auto";
  std::string swap_dir;
  std::string swap_ram = "1G";
  bool swap_compress = false;
  int32_t n_threads = 0;
};

// Adds --kv-budget, --kv-type, --block-size, --step-tokens, --max-running, -c/--ctx-size,
// --policy, --eviction, --swap-dir, --swap-ram, --swap-compress, -t/--threads to `app`, writing
// into *flags (which must outlive parsing).
void add_engine_options(CLI::App& app, EngineFlags* flags);

// Fills the engine fields of *config (not the model) from parsed flags; kInvalidArgument naming
// the flag for a bad size or name.
Status fill_engine_config(const EngineFlags& flags, EngineConfig* config);

// "256M", "1G", "512K", "4096" (bytes; K/M/G/T are powers of 1024, an optional trailing "B" or
// "iB" is accepted, case-insensitive). kInvalidArgument for anything else or overflow.
Result<uint64_t> parse_size(std::string_view text);

}  // namespace llmt::cli
