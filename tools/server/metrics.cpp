// Prometheus text-format registry and the server's metrics (see metrics.h).
#include "metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <mutex>
#include <utility>
#include <variant>

namespace llmt::server {

namespace {

// Adds v to an atomic double with a compare-and-swap loop (lock-free on every platform where
// std::atomic<double> is).
void atomic_add(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed,
                                  std::memory_order_relaxed)) {
  }
}

bool is_name_start(char c, bool allow_colon) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
}
bool is_name_char(char c, bool allow_colon) {
  return is_name_start(c, allow_colon) || (c >= '0' && c <= '9');
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not one (overlong forms,
// surrogates and code points past U+10FFFF are invalid).
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  uint32_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

void escape_help(std::string_view s, std::string& out) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// `{a="x",b="y"` without the closing brace (so that `le` can follow), or "" when no labels.
std::string label_prefix(const std::vector<std::string>& names,
                         const std::vector<std::string>& values) {
  if (names.empty()) return {};
  std::string s = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) s += ',';
    s += names[i];
    s += "=\"";
    s += escape_label_value(values[i]);
    s += '"';
  }
  return s;
}

void append_sample(std::string& out, const std::string& name, const std::string& labels,
                   double value) {
  out += name;
  if (!labels.empty()) {
    out += labels;
    out += '}';
  }
  out += ' ';
  out += format_metric_value(value);
  out += '\n';
}

template <typename M>
constexpr MetricType type_of() {
  if constexpr (std::is_same_v<M, Counter>) {
    return MetricType::kCounter;
  } else if constexpr (std::is_same_v<M, Gauge>) {
    return MetricType::kGauge;
  } else {
    return MetricType::kHistogram;
  }
}

}  // namespace

const char* metric_type_name(MetricType t) {
  switch (t) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

bool is_valid_metric_name(std::string_view name) {
  if (name.empty() || !is_name_start(name[0], true)) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return is_name_char(c, true); });
}

bool is_valid_label_name(std::string_view name) {
  if (name.empty() || !is_name_start(name[0], false)) return false;
  if (name.size() >= 2 && name[0] == '_' && name[1] == '_') return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return is_name_char(c, false); });
}

std::string escape_label_value(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      const size_t n = utf8_sequence_length(s, i);
      if (n == 0) {
        out += "\xEF\xBF\xBD";  // U+FFFD for one invalid byte
        ++i;
        continue;
      }
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    ++i;
  }
  return out;
}

std::string format_metric_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {  // whole and below 2^53
    if (v == 0) return "0";                                       // also -0
    return std::to_string(static_cast<int64_t>(v));
  }
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);  // shortest round-trip form
  return std::string(buf, r.ptr);
}

// ---- Counter, Gauge, Histogram ---------------------------------------------------------------

void Counter::inc(double v) {
  if (!(v >= 0)) return;  // negative or NaN
  atomic_add(value_, v);
}

void Counter::advance_to(double total) {
  double cur = value_.load(std::memory_order_relaxed);
  while (total > cur && !value_.compare_exchange_weak(cur, total, std::memory_order_relaxed,
                                                      std::memory_order_relaxed)) {
  }
}

void Gauge::add(double v) {
  atomic_add(value_, v);
}

Histogram::Histogram(std::shared_ptr<const std::vector<double>> bounds)
    : bounds_(std::move(bounds)),
      counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds_->size() + 1)) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v) {
  if (std::isnan(v)) return;
  const auto& b = *bounds_;
  const size_t i = static_cast<size_t>(std::lower_bound(b.begin(), b.end(), v) - b.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  atomic_add(sum_, v);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = *bounds_;
  s.cumulative.resize(bounds_->size() + 1);
  uint64_t acc = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    acc += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = acc;
  }
  s.count = acc;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

// ---- MetricFamily ----------------------------------------------------------------------------

template <typename M>
struct MetricFamily<M>::Series {
  std::vector<std::string> values;
  M metric;
  Series(std::vector<std::string> v,
         const std::shared_ptr<const std::vector<double>>& bounds) requires
      std::is_same_v<M, Histogram> : values(std::move(v)),
                                     metric(bounds) {}
  Series(std::vector<std::string> v,
         const std::shared_ptr<const std::vector<double>>&) requires(!std::is_same_v<M, Histogram>)
      : values(std::move(v)) {}
};

template <typename M>
MetricFamily<M>::MetricFamily(std::string name, std::string help,
                              std::vector<std::string> label_names,
                              std::shared_ptr<const std::vector<double>> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      bounds_(std::move(bounds)) {
  if (label_names_.empty())
    series_.push_back(std::make_unique<Series>(std::vector<std::string>{}, bounds_));
}

template <typename M>
Result<M*> MetricFamily<M>::labels(const std::vector<std::string>& values) {
  if (values.size() != label_names_.size()) {
    return invalid_argument("metric " + name_ + ": " + std::to_string(values.size()) +
                            " label values for " + std::to_string(label_names_.size()) +
                            " label names");
  }
  const auto less = [](const std::unique_ptr<Series>& s, const std::vector<std::string>& v) {
    return s->values < v;
  };
  {
    std::shared_lock lock(mutex_);
    auto it = std::lower_bound(series_.begin(), series_.end(), values, less);
    if (it != series_.end() && (*it)->values == values) return &(*it)->metric;
  }
  std::unique_lock lock(mutex_);
  auto it = std::lower_bound(series_.begin(), series_.end(), values, less);
  if (it != series_.end() && (*it)->values == values) return &(*it)->metric;
  if (series_.size() >= kMaxSeriesPerFamily) {
    return Status(
        StatusCode::kOutOfMemory,
        "metric " + name_ + ": more than " + std::to_string(kMaxSeriesPerFamily) + " label sets");
  }
  it = series_.insert(it, std::make_unique<Series>(values, bounds_));
  return &(*it)->metric;
}

template <typename M>
size_t MetricFamily<M>::n_series() const {
  std::shared_lock lock(mutex_);
  return series_.size();
}

template <typename M>
void MetricFamily<M>::render(std::string& out) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  escape_help(help_, out);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += metric_type_name(type_of<M>());
  out += '\n';
  std::shared_lock lock(mutex_);
  for (const auto& s : series_) {
    const std::string labels = label_prefix(label_names_, s->values);
    if constexpr (std::is_same_v<M, Histogram>) {
      const Histogram::Snapshot snap = s->metric.snapshot();
      const std::string bucket = name_ + "_bucket";
      const std::string sep = labels.empty() ? "{" : labels + ",";
      for (size_t i = 0; i <= snap.bounds.size(); ++i) {
        const double le = i < snap.bounds.size() ? snap.bounds[i] : INFINITY;
        append_sample(out, bucket, sep + "le=\"" + format_metric_value(le) + "\"",
                      static_cast<double>(snap.cumulative[i]));
      }
      append_sample(out, name_ + "_sum", labels, snap.sum);
      append_sample(out, name_ + "_count", labels, static_cast<double>(snap.count));
    } else {
      append_sample(out, name_, labels, s->metric.value());
    }
  }
}

template class MetricFamily<Counter>;
template class MetricFamily<Gauge>;
template class MetricFamily<Histogram>;

// ---- MetricsRegistry -------------------------------------------------------------------------

struct MetricsRegistry::Entry {
  std::variant<std::unique_ptr<CounterFamily>, std::unique_ptr<GaugeFamily>,
               std::unique_ptr<HistogramFamily>>
      family;
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

namespace {

Status check_label_names(const std::string& metric, const std::vector<std::string>& names,
                         bool histogram) {
  for (size_t i = 0; i < names.size(); ++i) {
    if (!is_valid_label_name(names[i])) {
      return invalid_argument("metric " + metric + ": invalid label name '" + names[i] + "'");
    }
    if (histogram && names[i] == "le") {
      return invalid_argument("metric " + metric + ": a histogram cannot have a label 'le'");
    }
    for (size_t j = 0; j < i; ++j) {
      if (names[j] == names[i]) {
        return invalid_argument("metric " + metric + ": label name '" + names[i] + "' given twice");
      }
    }
  }
  return Status::ok();
}

std::vector<std::string> sample_names_of(const std::string& name, MetricType type) {
  if (type != MetricType::kHistogram) return {name};
  return {name, name + "_bucket", name + "_sum", name + "_count"};
}

}  // namespace

// Caller holds mutex_ exclusively.
Status MetricsRegistry::reserve_names(const std::string& name, MetricType type) {
  if (!is_valid_metric_name(name)) {
    return invalid_argument("invalid metric name '" + name + "'");
  }
  const std::vector<std::string> mine = sample_names_of(name, type);
  for (const std::string& n : mine) {
    if (std::find(sample_names_.begin(), sample_names_.end(), n) != sample_names_.end()) {
      return invalid_argument("metric name '" + n + "' is already in use");
    }
  }
  sample_names_.insert(sample_names_.end(), mine.begin(), mine.end());
  return Status::ok();
}

Result<CounterFamily*> MetricsRegistry::add_counter_family(const std::string& name,
                                                           const std::string& help,
                                                           std::vector<std::string> label_names) {
  LLMT_RETURN_IF_ERROR(check_label_names(name, label_names, false));
  std::unique_lock lock(mutex_);
  LLMT_RETURN_IF_ERROR(reserve_names(name, MetricType::kCounter));
  auto f = std::make_unique<CounterFamily>(name, help, std::move(label_names), nullptr);
  CounterFamily* p = f.get();
  entries_.push_back(Entry{std::move(f)});
  return p;
}

Result<GaugeFamily*> MetricsRegistry::add_gauge_family(const std::string& name,
                                                       const std::string& help,
                                                       std::vector<std::string> label_names) {
  LLMT_RETURN_IF_ERROR(check_label_names(name, label_names, false));
  std::unique_lock lock(mutex_);
  LLMT_RETURN_IF_ERROR(reserve_names(name, MetricType::kGauge));
  auto f = std::make_unique<GaugeFamily>(name, help, std::move(label_names), nullptr);
  GaugeFamily* p = f.get();
  entries_.push_back(Entry{std::move(f)});
  return p;
}

Result<HistogramFamily*> MetricsRegistry::add_histogram_family(const std::string& name,
                                                               const std::string& help,
                                                               std::vector<std::string> label_names,
                                                               std::vector<double> bounds) {
  LLMT_RETURN_IF_ERROR(check_label_names(name, label_names, true));
  if (bounds.empty()) return invalid_argument("histogram " + name + ": no bucket bounds");
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      return invalid_argument("histogram " + name + ": bucket bounds must be finite");
    }
    if (i > 0 && !(bounds[i] > bounds[i - 1])) {
      return invalid_argument("histogram " + name + ": bucket bounds must be strictly increasing");
    }
  }
  std::unique_lock lock(mutex_);
  LLMT_RETURN_IF_ERROR(reserve_names(name, MetricType::kHistogram));
  auto f = std::make_unique<HistogramFamily>(
      name, help, std::move(label_names),
      std::make_shared<const std::vector<double>>(std::move(bounds)));
  HistogramFamily* p = f.get();
  entries_.push_back(Entry{std::move(f)});
  return p;
}

Result<Counter*> MetricsRegistry::add_counter(const std::string& name, const std::string& help) {
  LLMT_ASSIGN_OR_RETURN(CounterFamily * f, add_counter_family(name, help, {}));
  return f->labels({});
}

Result<Gauge*> MetricsRegistry::add_gauge(const std::string& name, const std::string& help) {
  LLMT_ASSIGN_OR_RETURN(GaugeFamily * f, add_gauge_family(name, help, {}));
  return f->labels({});
}

Result<Histogram*> MetricsRegistry::add_histogram(const std::string& name, const std::string& help,
                                                  std::vector<double> bounds) {
  LLMT_ASSIGN_OR_RETURN(HistogramFamily * f,
                        add_histogram_family(name, help, {}, std::move(bounds)));
  return f->labels({});
}

std::string MetricsRegistry::render() const {
  std::string out;
  std::shared_lock lock(mutex_);
  for (const Entry& e : entries_) {
    std::visit([&](const auto& f) { f->render(out); }, e.family);
  }
  return out;
}

std::vector<double> latency_buckets_seconds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

// ---- ServerMetrics ---------------------------------------------------------------------------

Result<std::unique_ptr<ServerMetrics>> ServerMetrics::create() {
  std::unique_ptr<ServerMetrics> m(new ServerMetrics());
  LLMT_RETURN_IF_ERROR(m->init());
  return m;
}

Status ServerMetrics::init() {
  MetricsRegistry& r = registry_;
  const std::string p = "llmthreads_";
  LLMT_ASSIGN_OR_RETURN(requests_,
                        r.add_counter_family(p + "requests_total",
                                             "HTTP requests answered, by endpoint and status code.",
                                             {"endpoint", "status"}));
  LLMT_ASSIGN_OR_RETURN(queue_threads_,
                        r.add_gauge(p + "queue_threads", "Threads waiting for their first step."));
  LLMT_ASSIGN_OR_RETURN(queue_tokens_,
                        r.add_gauge(p + "queue_tokens",
                                    "Prompt tokens of admitted requests that have not produced "
                                    "their first token, as admission control counts them."));
  LLMT_ASSIGN_OR_RETURN(running_threads_,
                        r.add_gauge(p + "running_threads", "Threads in the running set."));
  LLMT_ASSIGN_OR_RETURN(
      swapped_threads_,
      r.add_gauge(p + "swapped_threads", "Preempted threads whose KV is swapped out or dropped."));
  LLMT_ASSIGN_OR_RETURN(GaugeFamily * kv,
                        r.add_gauge_family(p + "kv_blocks",
                                           "KV-cache blocks by state (used: referenced by a "
                                           "thread; cached: in the prefix cache, evictable; "
                                           "free).",
                                           {"state"}));
  LLMT_ASSIGN_OR_RETURN(kv_used_, kv->labels({"used"}));
  LLMT_ASSIGN_OR_RETURN(kv_cached_, kv->labels({"cached"}));
  LLMT_ASSIGN_OR_RETURN(kv_free_, kv->labels({"free"}));
  LLMT_ASSIGN_OR_RETURN(kv_capacity_,
                        r.add_gauge(p + "kv_blocks_capacity", "KV-cache blocks in the pool."));
  LLMT_ASSIGN_OR_RETURN(
      kv_used_peak_,
      r.add_gauge(p + "kv_blocks_used_peak", "Most KV-cache blocks in use at once since start."));
  LLMT_ASSIGN_OR_RETURN(kv_win_slots_,
                        r.add_gauge(p + "kv_window_slots",
                                    "Slots of the sliding-window KV pool (models with "
                                    "sliding-window layers; 0 without one)."));
  LLMT_ASSIGN_OR_RETURN(kv_win_used_, r.add_gauge(p + "kv_window_slots_used",
                                                  "Window slots holding a thread's window now."));
  LLMT_ASSIGN_OR_RETURN(kv_win_used_peak_,
                        r.add_gauge(p + "kv_window_slots_used_peak",
                                    "Most window slots in use at once since start."));
  LLMT_ASSIGN_OR_RETURN(prefix_hit_ratio_,
                        r.add_gauge(p + "prefix_cache_hit_ratio",
                                    "Prompt tokens served from the prefix cache / prompt tokens "
                                    "submitted, since start."));
  LLMT_ASSIGN_OR_RETURN(prefix_hit_tokens_,
                        r.add_counter(p + "prefix_cache_hit_tokens_total",
                                      "Prompt tokens served from the prefix cache."));
  LLMT_ASSIGN_OR_RETURN(prompt_tokens_, r.add_counter(p + "prompt_tokens_total",
                                                      "Prompt tokens of submitted threads."));
  LLMT_ASSIGN_OR_RETURN(prefill_tokens_,
                        r.add_counter(p + "prefill_tokens_total",
                                      "Tokens computed by prefill (recompute included)."));
  LLMT_ASSIGN_OR_RETURN(generated_tokens_,
                        r.add_counter(p + "generated_tokens_total", "Tokens generated."));
  LLMT_ASSIGN_OR_RETURN(
      CounterFamily * pre,
      r.add_counter_family(p + "preemptions_total",
                           "Threads switched out, by how their KV was kept.", {"method"}));
  LLMT_ASSIGN_OR_RETURN(preempt_ram_, pre->labels({"ram"}));
  LLMT_ASSIGN_OR_RETURN(preempt_disk_, pre->labels({"disk"}));
  LLMT_ASSIGN_OR_RETURN(preempt_recompute_, pre->labels({"recompute"}));
  LLMT_ASSIGN_OR_RETURN(http_open_,
                        r.add_gauge(p + "http_connections_open", "Open HTTP connections."));
  LLMT_ASSIGN_OR_RETURN(
      CounterFamily * hc,
      r.add_counter_family(p + "http_connections_total",
                           "HTTP connections accepted, evicted at a connection limit to make "
                           "room, refused at a limit, or closed at a deadline.",
                           {"event"}));
  LLMT_ASSIGN_OR_RETURN(http_accepted_, hc->labels({"accepted"}));
  LLMT_ASSIGN_OR_RETURN(http_evicted_, hc->labels({"evicted"}));
  LLMT_ASSIGN_OR_RETURN(http_refused_, hc->labels({"refused"}));
  LLMT_ASSIGN_OR_RETURN(http_timed_out_, hc->labels({"timed_out"}));
  LLMT_ASSIGN_OR_RETURN(swap_failures_,
                        r.add_counter(p + "swap_failures_total",
                                      "Swap saves or restores that failed (turned into "
                                      "recompute)."));
  LLMT_ASSIGN_OR_RETURN(
      GaugeFamily * sb,
      r.add_gauge_family(p + "swap_bytes", "Swapped KV bytes currently stored, by location.",
                         {"location"}));
  LLMT_ASSIGN_OR_RETURN(swap_bytes_ram_, sb->labels({"ram"}));
  LLMT_ASSIGN_OR_RETURN(swap_bytes_disk_, sb->labels({"disk"}));
  LLMT_ASSIGN_OR_RETURN(swap_out_bytes_,
                        r.add_counter(p + "swap_out_bytes_total", "KV bytes swapped out."));
  LLMT_ASSIGN_OR_RETURN(threads_submitted_,
                        r.add_counter(p + "threads_submitted_total", "Threads submitted."));
  LLMT_ASSIGN_OR_RETURN(threads_finished_,
                        r.add_counter(p + "threads_finished_total", "Threads finished."));
  LLMT_ASSIGN_OR_RETURN(threads_cancelled_,
                        r.add_counter(p + "threads_cancelled_total", "Threads cancelled."));
  LLMT_ASSIGN_OR_RETURN(steps_, r.add_counter(p + "engine_steps_total", "Engine steps run."));
  LLMT_ASSIGN_OR_RETURN(
      busy_s_, r.add_counter(p + "engine_busy_seconds_total", "Time the engine spent in steps."));
  LLMT_ASSIGN_OR_RETURN(ttft_,
                        r.add_histogram(p + "time_to_first_token_seconds",
                                        "Time from request arrival to the first generated token.",
                                        latency_buckets_seconds()));
  LLMT_ASSIGN_OR_RETURN(itl_,
                        r.add_histogram(p + "inter_token_latency_seconds",
                                        "Time between consecutive generated tokens of a request.",
                                        latency_buckets_seconds()));
  return Status::ok();
}

void ServerMetrics::count_request(std::string_view endpoint, int status) {
  auto c = requests_->labels({std::string(endpoint), std::to_string(status)});
  if (c.is_ok()) (*c)->inc();  // only kMaxSeriesPerFamily can fail: then it is not counted
}

void ServerMetrics::update_engine(const EngineStats& s) {
  const auto d = [](int64_t v) { return static_cast<double>(v); };
  queue_threads_->set(d(s.n_waiting));
  running_threads_->set(d(s.n_running));
  swapped_threads_->set(d(s.n_swapped));
  kv_used_->set(d(s.kv_blocks_used));
  kv_cached_->set(d(s.kv_blocks_cached));
  kv_free_->set(d(s.kv_blocks_free));
  kv_capacity_->set(d(s.kv_blocks_total));
  kv_used_peak_->set(d(s.kv_blocks_used_peak));
  kv_win_slots_->set(d(s.kv_window_slots));
  kv_win_used_->set(d(s.kv_window_slots_used));
  kv_win_used_peak_->set(d(s.kv_window_slots_used_peak));
  prefix_hit_ratio_->set(s.prompt_tokens > 0 ? d(s.prefix_hit_tokens) / d(s.prompt_tokens) : 0.0);
  prefix_hit_tokens_->advance_to(d(s.prefix_hit_tokens));
  prompt_tokens_->advance_to(d(s.prompt_tokens));
  prefill_tokens_->advance_to(d(s.prefill_tokens));
  generated_tokens_->advance_to(d(s.generated_tokens));
  preempt_ram_->advance_to(d(s.preempt_ram));
  preempt_disk_->advance_to(d(s.preempt_disk));
  preempt_recompute_->advance_to(d(s.preempt_recompute));
  swap_failures_->advance_to(d(s.swap_failures));
  swap_bytes_ram_->set(d(s.swap_bytes_ram));
  swap_bytes_disk_->set(d(s.swap_bytes_disk));
  swap_out_bytes_->advance_to(d(s.swap_bytes_out_total));
  threads_submitted_->advance_to(d(s.n_submitted));
  threads_finished_->advance_to(d(s.n_finished));
  threads_cancelled_->advance_to(d(s.n_cancelled));
  steps_->advance_to(d(s.n_steps));
  busy_s_->advance_to(s.busy_s);
}

void ServerMetrics::update_http(const HttpFrontStats& s) {
  const auto d = [](int64_t v) { return static_cast<double>(v); };
  http_open_->set(d(s.n_open));
  http_accepted_->advance_to(d(s.n_accepted));
  http_evicted_->advance_to(d(s.n_evicted));
  http_refused_->advance_to(d(s.n_refused));
  http_timed_out_->advance_to(d(s.n_timed_out));
}

}  // namespace llmt::server
