#include "engine-options.h"

#include <CLI/CLI.hpp>
#include <cctype>
#include <limits>

namespace llmt::cli {

Result<uint64_t> parse_size(std::string_view text) {
  std::string s;
  for (char c : text) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::string original(text);
  if (s.ends_with("ib"))
    s.resize(s.size() - 2);
  else if (s.ends_with("b"))
    s.resize(s.size() - 1);
  uint64_t mult = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'k':
        mult = uint64_t{1} << 10;
        break;
      case 'm':
        mult = uint64_t{1} << 20;
        break;
      case 'g':
        mult = uint64_t{1} << 30;
        break;
      case 't':
        mult = uint64_t{1} << 40;
        break;
      default:
        break;
    }
    if (mult != 1) s.pop_back();
  }
  if (s.empty() || s.size() > 19) {
    return invalid_argument("bad size '" + original + "' (expected e.g. 4096, 512K, 256M, 1G)");
  }
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      return invalid_argument("bad size '" + original + "' (expected e.g. 4096, 512K, 256M, 1G)");
    }
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > std::numeric_limits<uint64_t>::max() / mult) {
    return invalid_argument("size '" + original + "' is too large");
  }
  return v * mult;
}

void add_engine_options(CLI::App& app, EngineFlags* f) {
  app.add_option("--kv-budget", f->kv_budget, "KV cache pool size, e.g. 256M, 1G (default 256M)");
  app.add_option("--kv-type", f->kv_type, "KV element type: f16 or f32 (default f16)");
  app.add_option("--block-size", f->block_size, "tokens per KV block (default 16)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--step-tokens", f->step_tokens, "tokens per engine step (default 256)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-running", f->max_running, "LLM threads per step at most (default 64)")
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("-c,--ctx-size", f->n_ctx,
                 "positions per LLM thread (default: min(model context, 4096))")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--policy", f->policy,
                 "scheduling: fcfs, priority, round-robin, fair-share (default priority)");
  app.add_option(
      "--eviction", f->eviction,
      "how preempted LLM threads keep their KV: auto, ram, disk, recompute (default auto)");
  app.add_option("--swap-dir", f->swap_dir, "folder for KV swapped to disk (default: none)");
  app.add_option("--swap-ram", f->swap_ram, "swapped KV kept in RAM, e.g. 1G (default 1G)");
  app.add_flag("--swap-compress", f->swap_compress, "lz4-compress swapped KV");
  app.add_option("-t,--threads", f->n_threads,
                 "compute threads of the forward pass (default: physical cores)")
      ->check(CLI::Range(0, 1024));
}

Status fill_engine_config(const EngineFlags& f, EngineConfig* c) {
  Result<uint64_t> budget = parse_size(f.kv_budget);
  if (!budget.is_ok()) return invalid_argument("--kv-budget: " + budget.status().message());
  Result<uint64_t> swap_ram = parse_size(f.swap_ram);
  if (!swap_ram.is_ok()) return invalid_argument("--swap-ram: " + swap_ram.status().message());
  Result<KvType> kv_type = parse_kv_type(f.kv_type);
  if (!kv_type.is_ok()) return invalid_argument("--kv-type: " + kv_type.status().message());
  c->kv.type = *kv_type;
  Result<SchedPolicy> policy = parse_sched_policy(f.policy);
  if (!policy.is_ok()) return invalid_argument("--policy: " + policy.status().message());
  Result<EvictionMethod> ev = parse_eviction_method(f.eviction);
  if (!ev.is_ok()) return invalid_argument("--eviction: " + ev.status().message());
  c->kv.budget_bytes = *budget;
  c->kv.swap.ram_bytes = *swap_ram;
  c->kv.block_size = f.block_size;
  c->sched.step_tokens = f.step_tokens;
  c->sched.max_running = f.max_running;
  c->model.n_ctx = f.n_ctx;
  c->sched.policy = *policy;
  c->sched.eviction = *ev;
  c->kv.swap.dir = f.swap_dir;
  c->kv.swap.compress = f.swap_compress;
  c->compute.n_threads = f.n_threads;
  return Status::ok();
}

}  // namespace llmt::cli
