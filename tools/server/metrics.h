// Prometheus metrics for the server: a small registry of counters, gauges and histograms that
// renders the Prometheus text exposition format, version 0.0.4
// (Content-Type: text/plain; version=0.0.4; charset=utf-8), and ServerMetrics, the server's own
// set of metrics (requests, engine state from EngineStats, TTFT and inter-token latency).
//
// Model: a MetricsRegistry owns metric families. A family has a name, a help text, a type and a
// list of label names; its children ("series") are one per distinct tuple of label values and
// are created on first use. A family without label names has exactly one child, created with
// it. Children live as long as the registry, so a Counter&/Gauge&/Histogram& obtained once may be
// kept and updated without any lookup.
//
// Rendering: families in registration order, each as `# HELP`, `# TYPE`, then its samples with
// children sorted by label values. Values print as integers when they are whole numbers below
// 2^53, else in the shortest form that reads back to the same double; +Inf, -Inf, NaN as
// Prometheus spells them. Label values are escaped (\ -> \\, " -> \", newline -> \n) and invalid
// UTF-8 in them becomes U+FFFD; help texts escape \ and newline. Histograms render cumulative
// `name_bucket{...,le="B"}` lines for every bound and le="+Inf", then `name_sum` and
// `name_count`; `_count` always equals the +Inf bucket.
//
// Thread-safety: every method of every class here may be called from any number of threads
// concurrently. Updates of a child (Counter::inc, Gauge::set, Histogram::observe, ...) are
// lock-free (relaxed atomics; the double sums use compare-and-swap loops). Looking a child up by
// label values takes a family's shared lock (exclusive only when the label set is new); keep the
// returned reference on hot paths. Registration and render() take the registry's lock. A render
// concurrent with updates sees each value at some moment during the render, not one snapshot.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "http-front.h"
#include "llmthreads/engine.h"
#include "llmthreads/status.h"

namespace llmt::server {

enum class MetricType { kCounter, kGauge, kHistogram };
const char* metric_type_name(MetricType t);  // "counter", "gauge", "histogram"

// Names as Prometheus defines them: metric [a-zA-Z_:][a-zA-Z0-9_:]*, label [a-zA-Z_][a-zA-Z0-9_]*
// (label names starting with "__" are reserved and rejected here).
bool is_valid_metric_name(std::string_view name);
bool is_valid_label_name(std::string_view name);
// `s` as a label value inside double quotes: \ " and newline escaped, invalid UTF-8 as U+FFFD.
std::string escape_label_value(std::string_view s);
// A sample value as the exposition format writes it (see the header comment).
std::string format_metric_value(double v);

// A monotonically increasing value.
class Counter {
 public:
  // Adds v; v must be >= 0 (negative or NaN values are ignored: a counter never goes down).
  void inc(double v = 1.0);
  // Raises the value to `total` if it is larger, else leaves it: for mirroring a cumulative
  // counter kept elsewhere (EngineStats), so that races between stale snapshots never make the
  // counter go down. NaN is ignored.
  void advance_to(double total);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down.
class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double v);
  void inc() { add(1.0); }
  void dec() { add(-1.0); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into fixed buckets (upper bounds, inclusive, as Prometheus' `le`).
class Histogram {
 public:
  // `bounds` strictly increasing and finite (the registry checks this); +Inf is implicit.
  explicit Histogram(std::shared_ptr<const std::vector<double>> bounds);
  // Counts v into the first bucket whose bound is >= v (or +Inf) and adds it to the sum.
  // NaN is ignored.
  void observe(double v);

  struct Snapshot {
    std::vector<double> bounds;        // without +Inf
    std::vector<uint64_t> cumulative;  // bounds.size() + 1 entries; the last is the +Inf bucket
    uint64_t count = 0;                // == cumulative.back()
    double sum = 0.0;
  };
  Snapshot snapshot() const;
  const std::vector<double>& bounds() const { return *bounds_; }

 private:
  std::shared_ptr<const std::vector<double>> bounds_;
  // Per-bucket (not cumulative) counts; index bounds_->size() is the +Inf bucket.
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0.0};
};

// The most children (label sets) one family holds; labels() beyond it is kOutOfMemory. Label
// values must come from a bounded set (route names, status codes), never from raw request text.
inline constexpr size_t kMaxSeriesPerFamily = 10000;

// A family of metrics of type M (Counter, Gauge or Histogram) sharing a name and label names.
template <typename M>
class MetricFamily {
 public:
  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  // The child for these label values (one per label name, in order), created on first use.
  // Errors: a wrong number of values (kInvalidArgument), kMaxSeriesPerFamily reached
  // (kOutOfMemory). The pointer stays valid for the registry's life.
  Result<M*> labels(const std::vector<std::string>& values);
  size_t n_series() const;

  // Internal (used by MetricsRegistry).
  MetricFamily(std::string name, std::string help, std::vector<std::string> label_names,
               std::shared_ptr<const std::vector<double>> bounds);
  void render(std::string& out) const;

 private:
  struct Series;
  std::string name_;
  std::string help_;
  std::vector<std::string> label_names_;
  std::shared_ptr<const std::vector<double>> bounds_;  // histograms only
  mutable std::shared_mutex mutex_;
  std::vector<std::unique_ptr<Series>> series_;  // sorted by label values
};

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;

// Owns metric families and renders them.
class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Registration. Errors (kInvalidArgument): an invalid metric or label name, a label name given
  // twice, a histogram label named "le", histogram bounds empty / not finite / not strictly
  // increasing, and a name that is already registered or collides with the samples of another
  // family (histogram "x" owns x_bucket, x_sum and x_count). The pointers stay valid for the
  // registry's life.
  Result<CounterFamily*> add_counter_family(const std::string& name, const std::string& help,
                                            std::vector<std::string> label_names);
  Result<GaugeFamily*> add_gauge_family(const std::string& name, const std::string& help,
                                        std::vector<std::string> label_names);
  Result<HistogramFamily*> add_histogram_family(const std::string& name, const std::string& help,
                                                std::vector<std::string> label_names,
                                                std::vector<double> bounds);
  // Label-less metrics: the family's one child.
  Result<Counter*> add_counter(const std::string& name, const std::string& help);
  Result<Gauge*> add_gauge(const std::string& name, const std::string& help);
  Result<Histogram*> add_histogram(const std::string& name, const std::string& help,
                                   std::vector<double> bounds);

  // The whole exposition text (ends with a newline when not empty).
  std::string render() const;

 private:
  struct Entry;
  Status reserve_names(const std::string& name, MetricType type);
  mutable std::shared_mutex mutex_;
  std::vector<Entry> entries_;
  std::vector<std::string> sample_names_;  // every sample name in use, for collision checks
};

// Bucket bounds in seconds for request latencies from 1 ms to 30 s:
// 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30.
std::vector<double> latency_buckets_seconds();

// The server's metrics. Names (all prefixed llmthreads_):
//   requests_total{endpoint,status}           counter  count_request()
//   time_to_first_token_seconds               histogram observe_ttft() (latency_buckets_seconds)
//   inter_token_latency_seconds               histogram observe_itl()
//   queue_tokens                              gauge    set_queue_tokens(): tokens of queued
//                                                      requests as admission counts them (the
//                                                      server: their prompt tokens)
// from update_engine(EngineStats):
//   queue_threads                             gauge    n_waiting
//   running_threads                           gauge    n_running
//   swapped_threads                           gauge    n_swapped
//   kv_blocks{state="used|cached|free"}       gauge    disjoint; they sum to kv_blocks_capacity
//   kv_blocks_capacity                        gauge    kv_blocks_total
//   kv_blocks_used_peak                       gauge
//   kv_window_slots                           gauge    sliding-window slot pool (0: none)
//   kv_window_slots_used                      gauge
//   kv_window_slots_used_peak                 gauge
//   prefix_cache_hit_ratio                    gauge    prefix_hit_tokens / prompt_tokens, or 0
//   prefix_cache_hit_tokens_total             counter
//   prompt_tokens_total                       counter  prompt tokens of submitted threads
//   prefill_tokens_total                      counter  tokens computed by prefill (recompute too)
//   generated_tokens_total                    counter
//   preemptions_total{method="ram|disk|recompute"}  counter
//   swap_failures_total                       counter
//   swap_bytes{location="ram|disk"}           gauge    swapped KV bytes currently stored
//   swap_out_bytes_total                      counter
//   threads_submitted_total, threads_finished_total, threads_cancelled_total   counters
//   engine_steps_total                        counter
//   engine_busy_seconds_total                 counter
// from update_http(HttpFrontStats):
//   http_connections_open                     gauge
//   http_connections_total{event="accepted|evicted|refused|timed_out"}  counter
// Rates (tokens/s, requests/s) are left to Prometheus: rate(llmthreads_generated_tokens_total[1m]).
// Thread-safety: as the registry (any method from any thread).
class ServerMetrics {
 public:
  static Result<std::unique_ptr<ServerMetrics>> create();

  // Counts one finished request. `endpoint` is a route name from a fixed set (e.g.
  // "/v1/completions", or "other" for unknown paths), never the raw request path.
  void count_request(std::string_view endpoint, int status);
  void observe_ttft(double seconds) { ttft_->observe(seconds); }
  void observe_itl(double seconds) { itl_->observe(seconds); }
  void set_queue_tokens(int64_t n) { queue_tokens_->set(static_cast<double>(n)); }
  // Copies an engine snapshot into the gauges and counters above.
  void update_engine(const EngineStats& s);
  // Copies the HTTP front's connection figures (http-front.h) into the metrics above.
  void update_http(const HttpFrontStats& s);

  Histogram& ttft() { return *ttft_; }
  Histogram& itl() { return *itl_; }
  // For metrics of the server's own (registered next to these).
  MetricsRegistry& registry() { return registry_; }
  std::string render() const { return registry_.render(); }

 private:
  ServerMetrics() = default;
  Status init();

  MetricsRegistry registry_;
  CounterFamily* requests_ = nullptr;
  Histogram* ttft_ = nullptr;
  Histogram* itl_ = nullptr;
  Gauge* queue_tokens_ = nullptr;
  Gauge* queue_threads_ = nullptr;
  Gauge* running_threads_ = nullptr;
  Gauge* swapped_threads_ = nullptr;
  Gauge* kv_used_ = nullptr;
  Gauge* kv_cached_ = nullptr;
  Gauge* kv_free_ = nullptr;
  Gauge* kv_capacity_ = nullptr;
  Gauge* kv_used_peak_ = nullptr;
  Gauge* kv_win_slots_ = nullptr;
  Gauge* kv_win_used_ = nullptr;
  Gauge* kv_win_used_peak_ = nullptr;
  Gauge* prefix_hit_ratio_ = nullptr;
  Counter* prefix_hit_tokens_ = nullptr;
  Counter* prompt_tokens_ = nullptr;
  Counter* prefill_tokens_ = nullptr;
  Counter* generated_tokens_ = nullptr;
  Counter* preempt_ram_ = nullptr;
  Counter* preempt_disk_ = nullptr;
  Counter* preempt_recompute_ = nullptr;
  Counter* swap_failures_ = nullptr;
  Gauge* swap_bytes_ram_ = nullptr;
  Gauge* swap_bytes_disk_ = nullptr;
  Counter* swap_out_bytes_ = nullptr;
  Counter* threads_submitted_ = nullptr;
  Counter* threads_finished_ = nullptr;
  Counter* threads_cancelled_ = nullptr;
  Counter* steps_ = nullptr;
  Counter* busy_s_ = nullptr;
  Gauge* http_open_ = nullptr;
  Counter* http_accepted_ = nullptr;
  Counter* http_evicted_ = nullptr;
  Counter* http_refused_ = nullptr;
  Counter* http_timed_out_ = nullptr;
};

}  // namespace llmt::server
