// llmthreads bench: prefill (pp), decode (tg), parallel-sequence (batched) throughput, memory
// read bandwidth and matmul kernel micro-benchmarks. One JSON object on stdout, a human table on
// stderr. Definitions follow llama-bench / llama-batched-bench so the figures compare (see
// bench/README.md and `llmthreads bench --help`).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <sys/resource.h>

#include "bench.h"
#include "common/commands.h"
#include "llmthreads/model.h"
#include "llmthreads/tokenizer.h"
#include "scenarios.h"

namespace llmt::cli {

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;
using bench::Stats;

constexpr const char* kVersion = "llmthreads 0.1.0";

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "error: bench: %s\n", msg.c_str());
  return 1;
}

json stats_json(const Stats& s) {
  return {{"median", s.median}, {"min", s.min}, {"max", s.max}, {"mean", s.mean}, {"n", s.n}};
}

// 1-minute load average, or -1 where unavailable.
double load_average() {
  double l[1] = {-1.0};
  return getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

// User + system CPU seconds this process has used so far.
double process_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

std::string utc_timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Fixed pseudo-random valid token ids (seeded, so every run feeds the same ones); the first is
// BOS when the vocabulary has one.
std::vector<int32_t> fixed_tokens(const Model& model, int32_t n, uint32_t seed, bool bos_first) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, model.hparams().n_vocab - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = dist(rng);
  const int32_t bos = model.tokenizer().bos_id();
  if (bos_first && n > 0 && bos >= 0) t[0] = bos;
  return t;
}

// Weight matrices a forward pass multiplies by for one token: every layer's projections and the
// output (token_embd is only gathered, so it is not counted unless the output is tied to it).
struct MatmulFootprint {
  uint64_t bytes = 0;   // weight bytes read per token
  uint64_t params = 0;  // sum of N*K (multiply-adds per token)
  std::set<TensorType> types;
};

MatmulFootprint matmul_footprint(const Model& model) {
  MatmulFootprint f;
  auto add = [&](const WeightMatrix& w) {
    if (!w.data) return;
    f.bytes += static_cast<uint64_t>(w.row_bytes) * static_cast<uint64_t>(w.n_rows);
    f.params += static_cast<uint64_t>(w.row_len) * static_cast<uint64_t>(w.n_rows);
    f.types.insert(w.type);
  };
  for (const WeightMatrix* w : model.matrices()) add(*w);  // every layer's, then the output
  return f;
}

struct Options {
  std::string model_arg;
  int32_t n_threads = 0;
  int32_t repetitions = 5;
  int32_t batched_repetitions = 0;
  int32_t pp = 512;
  int32_t tg = 128;
  std::vector<int32_t> npl;
  int32_t npp = 128;
  int32_t ntg = 128;
  bool kernels = false;
  std::vector<std::string> kernel_types;
  std::vector<int64_t> kernel_tokens = {1, 16, 64, 512};
  int64_t kernel_k = 4096;
  int64_t kernel_n = 0;
  int32_t kernel_mb = 64;
  bool bandwidth = false;
  int32_t bandwidth_mb = 512;
  std::string kv_type = "f32";
  bool all = false;
  int32_t n_batch = 512;
  std::string scenario;
  int32_t scenario_threads = 0;
  int32_t scenario_high = 0;
  int32_t scenario_naive = 0;
  int64_t kv_budget_mb = 512;
  std::string swap_dir;
};

// Which parts run.
struct Selection {
  bool pp = false, tg = false, batched = false, kernels = false, bandwidth = false;
};

Status check_positive(const std::vector<int64_t>& v, const char* flag) {
  for (int64_t x : v) {
    if (x <= 0) return invalid_argument(std::string(flag) + " values must be positive");
  }
  return Status::ok();
}

// The option objects whose presence selects a figure.
struct SelectionFlags {
  CLI::Option *pp = nullptr, *tg = nullptr, *npl = nullptr, *kernels = nullptr,
              *kernel_types = nullptr, *kernel_tokens = nullptr, *bandwidth = nullptr;
};

// Adds bench's options to `app`, writing into *o and *npl64 (which must outlive parsing).
SelectionFlags add_bench_options(CLI::App& app, Options* o_p, std::vector<int64_t>* npl64_p) {
  Options& o = *o_p;
  std::vector<int64_t>& npl64 = *npl64_p;
  app.add_option("-m,--model", o.model_arg,
                 "GGUF model (default: $LLMT_MODEL or synth/synth-125m-q4_k_m.gguf)");
  app.add_option("-t,--threads", o.n_threads, "compute threads (default: physical cores)")
      ->check(CLI::Range(0, 1024));
  app.add_option("-r,--repetitions", o.repetitions, "timed repetitions per figure (default 5)")
      ->check(CLI::Range(1, 10000));
  app.add_option("--batched-repetitions", o.batched_repetitions,
                 "repetitions of each batched run (default: -r)")
      ->check(CLI::Range(1, 10000));
  auto* pp_opt = app.add_option("-p,--pp", o.pp, "prompt tokens of the pp test (default 512)")
                     ->check(CLI::Range(1, 1 << 20));
  auto* tg_opt = app.add_option("-n,--tg", o.tg, "decode steps of the tg test (default 128)")
                     ->check(CLI::Range(1, 1 << 20));
  auto* npl_opt = app.add_option("--npl", npl64,
                                 "batched: comma-separated sequence counts (e.g. 1,2,4,8,16,32,64)")
                      ->delimiter(',');
  app.add_option("--npp", o.npp, "batched: prompt tokens per sequence (default 128)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--ntg", o.ntg, "batched: decode steps per sequence (default 128)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("-b,--batch-size", o.n_batch,
                 "most tokens per forward pass (ContextOptions::n_batch, default 512)")
      ->check(CLI::Range(1, 1 << 16));
  auto* k_flag = app.add_flag("--kernels", o.kernels, "matmul kernel micro-benchmarks");
  auto* kt_opt =
      app.add_option("--kernel-types", o.kernel_types,
                     "comma-separated weight types (default: the model's matmul weight types)")
          ->delimiter(',');
  auto* ktok_opt = app.add_option("--kernel-tokens", o.kernel_tokens,
                                  "comma-separated M values (default 1,16,64,512)")
                       ->delimiter(',');
  app.add_option("--kernel-k", o.kernel_k, "kernel matrix K (row length, default 4096)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--kernel-n", o.kernel_n,
                 "kernel matrix N (rows); default 0: enough rows for --kernel-mb")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  app.add_option("--kernel-mb", o.kernel_mb,
                 "kernel weight matrix size in MiB when --kernel-n is 0 (default 64: twice the "
                 "32 MiB L3, so weights stream from DRAM)")
      ->check(CLI::Range(1, 1 << 16));
  auto* bw_flag = app.add_flag("--bandwidth", o.bandwidth, "memory read bandwidth");
  app.add_option("--bandwidth-mb", o.bandwidth_mb, "bandwidth buffer in MiB (default 512)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--kv-type", o.kv_type, "KV cache type: f32 (default) or f16")
      ->check(CLI::IsMember({"f32", "f16"}));
  app.add_flag("--all", o.all, "pp, tg, bandwidth, kernels and batched (default --npl)");
  app.add_option("--scenario", o.scenario,
                 "engine scenario instead of the throughput figures: priority, shared-prefix, "
                 "switch, classify-job, grammar (see bench/README.md)");
  app.add_option("--scenario-threads", o.scenario_threads,
                 "LLM threads of the scenario (default: priority 64, shared-prefix 32, switch 16 "
                 "per batch; classify-job: documents, default 1000)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--scenario-high", o.scenario_high,
                 "priority scenario: high-priority arrivals (default 20)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--scenario-naive-docs", o.scenario_naive,
                 "classify-job: documents run through the naive path (default 200)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--kv-budget-mb", o.kv_budget_mb, "scenario KV pool in MiB (default 512)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--swap-dir", o.swap_dir, "scenario swap directory (default: system temp dir)");
  return SelectionFlags{pp_opt, tg_opt, npl_opt, k_flag, kt_opt, ktok_opt, bw_flag};
}

// A failed benchmark step (the command prints it and exits 1).
Status bench_error(std::string message) {
  return internal_error(std::move(message));
}

// The memory read bandwidth (also the limit the tg and kernel fractions refer to).
Status bench_bandwidth(const Options& o, int32_t n_threads, json* out_p, double* bandwidth_gbs_p) {
  json& out = *out_p;
  double& bandwidth_gbs = *bandwidth_gbs_p;
  ThreadPool pool(n_threads);
  std::string err;
  const bench::BandwidthResult bw = bench::measure_read_bandwidth(
      pool, static_cast<size_t>(o.bandwidth_mb) << 20, std::max(o.repetitions, 5), &err);
  if (!err.empty()) return bench_error(err);
  bandwidth_gbs = bw.gbs.max;
  out["bandwidth_gbs"] = bandwidth_gbs;
  out["bandwidth"] = {
      {"bytes", bw.bytes},
      {"gbs", stats_json(bw.gbs)},
      {"definition",
       "read-only: all compute threads sum disjoint slices of one touched buffer with "
       "AVX2 loads; bandwidth_gbs is the best pass (max(R, 5) passes after a "
       "warm-up)"}};
  std::fprintf(stderr, "bandwidth  %8.2f GB/s best   (median %.2f, min %.2f, %zu MiB, %d passes)\n",
               bw.gbs.max, bw.gbs.median, bw.gbs.min, bw.bytes >> 20, bw.gbs.n);
  return Status::ok();
}

// pp (one eval of a fixed prompt) and tg (one-token decode steps), as llama-bench.
Status bench_pp_tg(const Options& o, const Selection& sel,
                   const std::shared_ptr<const Model>& model, const MatmulFootprint& fp,
                   int32_t n_threads, KvType kv_type, double bandwidth_gbs, json* out_p) {
  json& out = *out_p;
  ContextOptions co;
  co.n_ctx = std::max(sel.pp ? o.pp : 1, sel.tg ? o.tg : 1);
  co.n_threads = n_threads;
  co.n_batch = std::min(o.n_batch, co.n_ctx);
  co.kv_type = kv_type;
  auto ctx_r = Context::create(model, co);
  if (!ctx_r.is_ok()) return bench_error(ctx_r.status().to_string());
  Context& ctx = **ctx_r;
  if (sel.pp) {
    const std::vector<int32_t> prompt = fixed_tokens(*model, o.pp, 1, true);
    std::vector<double> tok_s;
    for (int32_t r = 0; r <= o.repetitions; ++r) {  // r == 0: warm-up
      ctx.reset();
      const auto t0 = Clock::now();
      if (Status st = ctx.eval(prompt); !st.is_ok()) return bench_error("pp: " + st.to_string());
      const double sec = seconds_since(t0);
      if (r > 0) tok_s.push_back(o.pp / sec);
    }
    const Stats s = bench::summarize(std::move(tok_s));
    out["pp"] = {{"n_prompt", o.pp},
                 {"n_batch", co.n_batch},
                 {"tok_s", stats_json(s)},
                 {"matmul_gops", s.median * 2.0 * static_cast<double>(fp.params) / 1e9}};
    std::fprintf(stderr, "pp%-7d  %8.1f t/s median (min %.1f, max %.1f; %.0f GOP/s in matmuls)\n",
                 o.pp, s.median, s.min, s.max,
                 s.median * 2.0 * static_cast<double>(fp.params) / 1e9);
  }
  if (sel.tg) {
    const std::vector<int32_t> gen = fixed_tokens(*model, o.tg, 2, true);
    std::vector<double> tok_s;
    for (int32_t r = 0; r <= o.repetitions; ++r) {
      ctx.reset();
      const auto t0 = Clock::now();
      for (int32_t i = 0; i < o.tg; ++i) {
        if (Status st = ctx.eval(std::span<const int32_t>(&gen[static_cast<size_t>(i)], 1));
            !st.is_ok())
          return bench_error("tg: " + st.to_string());
      }
      const double sec = seconds_since(t0);
      if (r > 0) tok_s.push_back(o.tg / sec);
    }
    const Stats s = bench::summarize(std::move(tok_s));
    json tg = {{"n_gen", o.tg}, {"tok_s", stats_json(s)}};
    if (bandwidth_gbs > 0.0) {
      const double roof = bandwidth_gbs * 1e9 / static_cast<double>(fp.bytes);
      tg["roofline_tok_s"] = roof;
      tg["fraction_of_bandwidth_limit"] = s.median / roof;
    }
    out["tg"] = tg;
    std::fprintf(stderr, "tg%-7d  %8.1f t/s median (min %.1f, max %.1f", o.tg, s.median, s.min,
                 s.max);
    if (bandwidth_gbs > 0.0)
      std::fprintf(stderr, "; %.0f%% of the %.0f t/s bandwidth roofline",
                   100.0 * tg["fraction_of_bandwidth_limit"].get<double>(),
                   tg["roofline_tok_s"].get<double>());
    std::fprintf(stderr, ")\n");
  }
  return Status::ok();
}

// npl sequences decoded together, as llama-batched-bench.
Status bench_batched(const Options& o, const std::shared_ptr<const Model>& model, int32_t n_threads,
                     KvType kv_type, json* out_p) {
  json& out = *out_p;
  json rows = json::array();
  std::fprintf(stderr, "%6s %6s %6s %10s %10s %10s %10s\n", "npl", "npp", "ntg", "S_PP t/s",
               "S_TG t/s", "T_PP s", "T_TG s");
  for (int32_t npl : o.npl) {
    ContextOptions co;
    co.n_ctx = o.npp + o.ntg;
    co.n_seq_max = npl;
    co.n_threads = n_threads;
    co.n_batch = o.n_batch;
    co.kv_type = kv_type;
    auto ctx_r = Context::create(model, co);
    if (!ctx_r.is_ok()) return bench_error(ctx_r.status().to_string());
    Context& ctx = **ctx_r;
    // Prompts: sequence s gets its own fixed random tokens (BOS first); one decode() for all.
    std::vector<Context::BatchEntry> prefill;
    prefill.reserve(static_cast<size_t>(npl) * static_cast<size_t>(o.npp));
    for (int32_t s = 0; s < npl; ++s) {
      const std::vector<int32_t> p =
          fixed_tokens(*model, o.npp, 100u + static_cast<uint32_t>(s), true);
      for (int32_t i = 0; i < o.npp; ++i)
        prefill.push_back({p[static_cast<size_t>(i)], s, i, i == o.npp - 1});
    }
    const std::vector<int32_t> gen = fixed_tokens(*model, o.ntg * npl, 3, false);
    std::vector<Context::BatchEntry> step(static_cast<size_t>(npl));
    std::vector<double> s_pp, s_tg, t_pp, t_tg;
    // Warm-up: one token per sequence, then the timed repetitions.
    {
      std::vector<Context::BatchEntry> warm;
      for (int32_t s = 0; s < npl; ++s) warm.push_back({prefill[0].token, s, 0, true});
      if (Status st = ctx.decode(warm); !st.is_ok())
        return bench_error("batched: " + st.to_string());
    }
    for (int32_t r = 0; r < o.batched_repetitions; ++r) {
      ctx.reset();
      const auto t0 = Clock::now();
      if (Status st = ctx.decode(prefill); !st.is_ok())
        return bench_error("batched prefill: " + st.to_string());
      const double pp_sec = seconds_since(t0);
      const auto t1 = Clock::now();
      for (int32_t i = 0; i < o.ntg; ++i) {
        for (int32_t s = 0; s < npl; ++s) {
          step[static_cast<size_t>(s)] = {gen[static_cast<size_t>(i * npl + s)], s, o.npp + i,
                                          true};
        }
        if (Status st = ctx.decode(step); !st.is_ok())
          return bench_error("batched decode: " + st.to_string());
      }
      const double tg_sec = seconds_since(t1);
      t_pp.push_back(pp_sec);
      t_tg.push_back(tg_sec);
      s_pp.push_back(static_cast<double>(npl) * o.npp / pp_sec);
      s_tg.push_back(static_cast<double>(npl) * o.ntg / tg_sec);
    }
    const Stats spp = bench::summarize(s_pp), stg = bench::summarize(s_tg);
    const Stats tpp = bench::summarize(t_pp), ttg = bench::summarize(t_tg);
    rows.push_back(
        {{"npl", npl},
         {"npp", o.npp},
         {"ntg", o.ntg},
         {"n_kv", static_cast<int64_t>(npl) * (o.npp + o.ntg)},
         {"s_pp", stats_json(spp)},
         {"s_tg", stats_json(stg)},
         {"t_pp_s", stats_json(tpp)},
         {"t_tg_s", stats_json(ttg)},
         {"s", (static_cast<double>(npl) * (o.npp + o.ntg)) / (tpp.median + ttg.median)}});
    std::fprintf(stderr, "%6d %6d %6d %10.1f %10.1f %10.3f %10.3f\n", npl, o.npp, o.ntg, spp.median,
                 stg.median, tpp.median, ttg.median);
  }
  out["batched"] = rows;
  out["batched_repetitions"] = o.batched_repetitions;
  return Status::ok();
}

// Matmul kernel micro-benchmarks against the measured compute peak and bandwidth.
Status bench_kernels(const Options& o, std::vector<TensorType> kernel_types,
                     const MatmulFootprint& fp, kernels::Isa isa, int32_t n_threads,
                     double bandwidth_gbs, json* out_p) {
  json& out = *out_p;
  if (kernel_types.empty()) kernel_types.assign(fp.types.begin(), fp.types.end());
  ThreadPool pool(n_threads);
  const bench::ComputePeak peak = bench::measure_compute_peak(pool, 10, isa);
  out["compute_peak"] = {
      {"tier", peak.tier},
      {"int8_gops", peak.int8_gops},
      {"int8_scaled_gops", peak.int8_scaled_gops},
      {"f32_gops", peak.f32_gops},
      {"definition",
       "best of 10 passes of register-only loops of the tier on all threads (multiply and add "
       "counted as 2 ops): int8 = the tier's int8 dot instruction (avx2 vpmaddubsw+vpaddw, "
       "avxvnni {vex} vpdpbusd ymm, avx512/amx vpdpbusd zmm, neon sdot, i8mm smmla); "
       "int8_scaled = that plus the per-sub-block scale multiply every k-quant dot needs (avx2 "
       "vpmaddubsw+vpmaddwd+vpaddd, avxvnni vpmaddubsw+{vex} vpdpwssd, avx512/amx 8 vpdpbusd + "
       "vpmulld + vpaddd per 512 products, neon/i8mm 2 sdot + 2 mla per 32 products): the "
       "ceiling of a k-quant kernel; f32 = the widest FMA (256-bit on avx2/avxvnni, 512-bit on "
       "avx512/amx, 128-bit fmla on neon/i8mm). All 0 on the scalar tier"}};
  out["kernels_definition"] =
      "Y[M,N] = X[M,K]*W[N,K]^T with random weights (valid fp16 scales) through "
      "matmul_prepare+matmul_compute on the thread pool; gbs = weight bytes / time, gops = "
      "2*N*K*M / time; fraction_of_limit = max(gbs / bandwidth_gbs, gops / peak) where peak is "
      "compute_peak.int8_gops for quantized types and f32_gops for f32/f16/bf16 (the roofline "
      "fraction); bound names the larger term; fraction_of_scaled_int8_peak (quantized types only) "
      "= gops / compute_peak.int8_scaled_gops";
  std::fprintf(stderr,
               "compute peak (%s loops): int8 %.0f GOP/s, int8 scaled %.0f GOP/s, f32 FMA "
               "%.0f GOP/s\n",
               peak.tier, peak.int8_gops, peak.int8_scaled_gops, peak.f32_gops);
  std::fprintf(stderr, "%-7s %6s %6s %5s %10s %9s %9s %7s %7s %s\n", "type", "N", "K", "M", "ms",
               "GB/s", "GOP/s", "frac", "scaled", "bound");
  json rows = json::array();
  for (TensorType t : kernel_types) {
    const auto rb = tensor_row_bytes(t, o.kernel_k);
    if (!rb) {
      return bench_error("--kernel-k " + std::to_string(o.kernel_k) + " is not a multiple of the " +
                         tensor_type_name(t) + " block size");
    }
    const int64_t n = o.kernel_n > 0 ? o.kernel_n
                                     : bench::rows_for_bytes(
                                           t, o.kernel_k, static_cast<size_t>(o.kernel_mb) << 20);
    const bool is_float = t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16;
    const double peak_gops = is_float ? peak.f32_gops : peak.int8_gops;
    for (int64_t m : o.kernel_tokens) {
      bench::KernelResult kr;
      std::string err;
      if (!bench::run_kernel_case(pool, isa, {t, n, o.kernel_k, m}, o.repetitions, &kr, &err))
        return bench_error(err);
      const double mem_frac = bandwidth_gbs > 0.0 ? kr.gbs.median / bandwidth_gbs : 0.0;
      const double cmp_frac = peak_gops > 0.0 ? kr.gops.median / peak_gops : 0.0;
      const bool compute_bound = cmp_frac > mem_frac;
      // Against the k-quant ceiling (vpmaddubsw + vpmaddwd per 32 products); quantized only.
      const double scaled_frac =
          !is_float && peak.int8_scaled_gops > 0.0 ? kr.gops.median / peak.int8_scaled_gops : 0.0;
      json row = {{"type", tensor_type_name(t)},
                  {"n_tokens", m},
                  {"n_rows", n},
                  {"row_len", o.kernel_k},
                  {"weight_bytes", kr.weight_bytes},
                  {"ms", stats_json({kr.seconds.median * 1e3, kr.seconds.min * 1e3,
                                     kr.seconds.max * 1e3, kr.seconds.mean * 1e3, kr.seconds.n})},
                  {"gbs", kr.gbs.median},
                  {"gops", kr.gops.median},
                  {"gbs_stats", stats_json(kr.gbs)},
                  {"gops_stats", stats_json(kr.gops)},
                  {"fraction_of_limit", std::max(mem_frac, cmp_frac)},
                  {"bound", compute_bound ? "compute" : "bandwidth"},
                  {"compute_bound", compute_bound}};
      if (!is_float) row["fraction_of_scaled_int8_peak"] = scaled_frac;
      rows.push_back(std::move(row));
      char scaled_col[16] = "-";
      if (!is_float) std::snprintf(scaled_col, sizeof(scaled_col), "%.2f", scaled_frac);
      std::fprintf(
          stderr, "%-7s %6lld %6lld %5lld %10.3f %9.2f %9.1f %7.2f %7s %s\n", tensor_type_name(t),
          static_cast<long long>(n), static_cast<long long>(o.kernel_k), static_cast<long long>(m),
          kr.seconds.median * 1e3, kr.gbs.median, kr.gops.median, std::max(mem_frac, cmp_frac),
          scaled_col, compute_bound ? "compute" : "bandwidth");
    }
  }
  out["kernels"] = rows;
  return Status::ok();
}

// --scenario: an engine scenario (scenarios.h) instead of the throughput figures.
int bench_scenario(const Options& o, const std::string& path, int32_t n_threads) {
  auto model_s = Model::load(path);
  if (!model_s.is_ok()) return fail(model_s.status().to_string());
  bench::ScenarioOptions so;
  so.model = *model_s;
  so.n_threads = n_threads;
  so.kv_budget_bytes = static_cast<uint64_t>(o.kv_budget_mb) << 20;
  so.swap_dir = o.swap_dir;
  so.n_threads_sim = o.scenario_threads;
  so.n_high = o.scenario_high;
  so.n_naive = o.scenario_naive;
  so.repetitions = std::max(1, std::min(o.repetitions, 5));
  const double load0 = load_average();
  const auto t0 = Clock::now();
  auto r = bench::run_scenario(o.scenario, so);
  if (!r.is_ok()) return fail(r.status().to_string());
  json j = std::move(*r);
  j["model_name"] = std::filesystem::path(path).filename().string();
  j["threads"] = n_threads;
  j["host"] = {{"loadavg_1m_before", load0},
               {"loadavg_1m_after", load_average()},
               {"wall_s", seconds_since(t0)}};
  const std::string s = j.dump(1, ' ', false, json::error_handler_t::replace);
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  CLI::App app{
      "Measure throughput: pp (prompt tokens/s of one eval of n_prompt fixed random tokens, BOS "
      "first, context reset between repetitions; as llama-bench pp), tg (n_gen one-token decode "
      "steps from an empty context feeding fixed random tokens, no sampling; as llama-bench tg), "
      "batched (npl sequences: S_PP = npl*npp / prefill time of one decode() of all prompts, "
      "S_TG = npl*ntg / time of ntg decode() steps of npl tokens; as llama-batched-bench), read "
      "bandwidth (a SIMD sum of a touched buffer on all compute threads) and matmul kernels. Every "
      "figure "
      "is the median/min/max of R repetitions after one warm-up. JSON on stdout, a table on "
      "stderr. With no selection flag: pp, tg, bandwidth and the kernels of the model's weight "
      "types; --all adds batched with the default --npl.",
      "bench"};
  Options o;
  std::vector<int64_t> npl64;
  const SelectionFlags flags = add_bench_options(app, &o, &npl64);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (Status st = check_positive(npl64, "--npl"); !st.is_ok()) return fail(st.message());
  if (Status st = check_positive(o.kernel_tokens, "--kernel-tokens"); !st.is_ok())
    return fail(st.message());
  for (int64_t v : npl64) {
    if (v > 4096) return fail("--npl values must be at most 4096");
    o.npl.push_back(static_cast<int32_t>(v));
  }
  for (int64_t v : o.kernel_tokens) {
    if (v > 65536) return fail("--kernel-tokens values must be at most 65536");
  }
  std::vector<TensorType> kernel_types;
  for (const std::string& name : o.kernel_types) {
    TensorType t;
    if (!bench::parse_kernel_type(name, &t)) {
      std::string known;
      for (TensorType k : bench::kernel_bench_types()) {
        known += (known.empty() ? "" : ",") + std::string(tensor_type_name(k));
      }
      return fail("unknown --kernel-types entry '" + name + "' (known: " + known + ")");
    }
    kernel_types.push_back(t);
  }
  if (o.batched_repetitions == 0) o.batched_repetitions = o.repetitions;

  Selection sel;
  sel.pp = flags.pp->count() > 0;
  sel.tg = flags.tg->count() > 0;
  sel.batched = flags.npl->count() > 0;
  sel.kernels = flags.kernels->count() > 0 || flags.kernel_types->count() > 0 ||
                flags.kernel_tokens->count() > 0;
  sel.bandwidth = flags.bandwidth->count() > 0;
  const bool none = !sel.pp && !sel.tg && !sel.batched && !sel.kernels && !sel.bandwidth;
  if (none || o.all) {
    sel.pp = sel.tg = sel.kernels = sel.bandwidth = true;
  }
  if (o.all) {
    sel.batched = true;
    if (o.npl.empty()) o.npl = {1, 2, 4, 8, 16, 32, 64};
  }

  const std::string path = resolve_model_path(o.model_arg, "synth/synth-125m-q4_k_m.gguf");
  if (path.empty()) return 1;
  const int32_t n_threads = o.n_threads > 0 ? o.n_threads : physical_core_count();
  Result<KvType> kv_type_r = parse_kv_type(o.kv_type);
  if (!kv_type_r.is_ok()) return fail("--kv-type: " + kv_type_r.status().message());
  const KvType kv_type = *kv_type_r;

  if (!o.scenario.empty()) return bench_scenario(o, path, n_threads);

  const double load_before = load_average();
  const double cpu_start = process_cpu_seconds();
  const auto t_start = Clock::now();
  const auto t_load = Clock::now();
  auto model_r = Model::load(path);
  if (!model_r.is_ok()) return fail(model_r.status().to_string());
  const double load_ms = seconds_since(t_load) * 1e3;
  std::shared_ptr<const Model> model = *model_r;
  const ModelHparams& hp = model->hparams();
  const MatmulFootprint fp = matmul_footprint(*model);
  const auto isa = static_cast<kernels::Isa>(model->isa());

  json out;
  out["model"] = path;
  out["model_name"] = std::filesystem::path(path).filename().string();
  out["model_bytes"] = model->weight_bytes();
  out["model_shape"] = {
      {"arch", hp.arch},     {"n_layer", hp.n_layer},     {"n_embd", hp.n_embd},  {"n_ff", hp.n_ff},
      {"n_head", hp.n_head}, {"n_head_kv", hp.n_head_kv}, {"n_vocab", hp.n_vocab}};
  out["matmul_bytes_per_token"] = fp.bytes;
  out["matmul_bytes_per_token_definition"] =
      "sum of weight bytes of every matrix a token is multiplied by (all layer projections and "
      "the output matrix; token_embd is only gathered and not counted unless tied to the output)";
  out["threads"] = n_threads;
  out["isa"] = kernels::isa_name(isa);
  out["tier"] = kernels::isa_name(isa);
  out["tier_best"] = kernels::isa_name(kernels::best_isa());
  out["kv_type"] = o.kv_type;
  out["repetitions"] = o.repetitions;
  out["load_ms"] = load_ms;
  out["version"] = kVersion;
  out["timestamp"] = utc_timestamp();
  std::fprintf(
      stderr,
      "model %s (%s, %.1f MB of weights, %.1f MB read per token), %d threads, tier %s, kv %s\n",
      out["model_name"].get<std::string>().c_str(), hp.arch.c_str(),
      static_cast<double>(model->weight_bytes()) / 1e6, static_cast<double>(fp.bytes) / 1e6,
      n_threads, kernels::isa_name(isa), o.kv_type.c_str());

  double bandwidth_gbs = 0.0;
  if (sel.bandwidth || sel.tg || sel.kernels) {
    if (Status st = bench_bandwidth(o, n_threads, &out, &bandwidth_gbs); !st.is_ok()) {
      return fail(st.message());
    }
  }
  if (sel.pp || sel.tg) {
    Status st = bench_pp_tg(o, sel, model, fp, n_threads, kv_type, bandwidth_gbs, &out);
    if (!st.is_ok()) return fail(st.message());
  }
  if (sel.batched && !o.npl.empty()) {
    if (Status st = bench_batched(o, model, n_threads, kv_type, &out); !st.is_ok()) {
      return fail(st.message());
    }
  }
  if (sel.kernels) {
    Status st = bench_kernels(o, std::move(kernel_types), fp, isa, n_threads, bandwidth_gbs, &out);
    if (!st.is_ok()) return fail(st.message());
  }

  // Noise indicators: the load before the run, and the share of `threads` cores this process got
  // (well below 1 means other processes took the cores and the figures are low).
  const double wall_s = seconds_since(t_start);
  const double cpu_s = process_cpu_seconds() - cpu_start;
  out["host"] = {{"loadavg_1m_before", load_before},
                 {"loadavg_1m_after", load_average()},
                 {"wall_s", wall_s},
                 {"process_cpu_s", cpu_s},
                 {"cpu_share", cpu_s / (wall_s * n_threads)}};
  std::fprintf(stderr,
               "load average %.2f before, %.2f after; this process got %.0f%% of %d cores\n",
               load_before, load_average(), 100.0 * cpu_s / (wall_s * n_threads), n_threads);
  const std::string s = out.dump(1, ' ', false, json::error_handler_t::replace);
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

}  // namespace llmt::cli
