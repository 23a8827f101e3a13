// Tests of server::MetricsRegistry and server::ServerMetrics: the rendered Prometheus text is
// parsed back line by line (HELP/TYPE/sample grammar, label unescaping) and checked for exact
// lines with known values, escaping, name validation, cumulative histogram buckets, and exact
// totals after concurrent updates from 8 threads.
#include "metrics.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace llmt::server {
namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

bool has_line(const std::string& text, const std::string& line) {
  for (const auto& l : lines_of(text)) {
    if (l == line) return true;
  }
  return false;
}

// One sample line, parsed.
struct Sample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;  // unescaped values
  double value = 0.0;

  std::string label(const std::string& k) const {
    for (const auto& [n, v] : labels) {
      if (n == k) return v;
    }
    return "<absent>";
  }
};

double parse_value(const std::string& s) {
  if (s == "+Inf") return INFINITY;
  if (s == "-Inf") return -INFINITY;
  if (s == "NaN") return NAN;
  size_t pos = 0;
  const double v = std::stod(s, &pos);
  EXPECT_EQ(pos, s.size()) << "value '" << s << "'";
  return v;
}

// Parses a whole exposition text; fails the test on any line that is not valid 0.0.4 text or a
// sample that does not belong to the family its last # TYPE line declared.
std::vector<Sample> parse_exposition(const std::string& text) {
  std::vector<Sample> samples;
  EXPECT_TRUE(text.empty() || text.back() == '\n');
  std::string family, type;
  for (const std::string& line : lines_of(text)) {
    EXPECT_FALSE(line.empty());
    if (line.rfind("# HELP ", 0) == 0) {
      const std::string rest = line.substr(7);
      family = rest.substr(0, rest.find(' '));
      EXPECT_TRUE(is_valid_metric_name(family)) << line;
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream in(line.substr(7));
      std::string name;
      in >> name >> type;
      EXPECT_EQ(name, family) << "TYPE must follow the family's HELP: " << line;
      EXPECT_TRUE(type == "counter" || type == "gauge" || type == "histogram") << line;
      continue;
    }
    EXPECT_NE(line[0], '#') << line;
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = line.substr(0, i);
    EXPECT_TRUE(is_valid_metric_name(s.name)) << line;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        EXPECT_NE(eq, std::string::npos) << line;
        if (eq == std::string::npos) return samples;
        const std::string lname = line.substr(i, eq - i);
        EXPECT_TRUE(is_valid_label_name(lname)) << line;
        EXPECT_EQ(line[eq + 1], '"') << line;
        std::string value;
        size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\') {
            ++j;
            EXPECT_LT(j, line.size());
            const char c = line[j];
            EXPECT_TRUE(c == '\\' || c == '"' || c == 'n') << "bad escape in " << line;
            value += c == 'n' ? '\n' : c;
          } else {
            value += line[j];
          }
        }
        EXPECT_LT(j, line.size()) << "unterminated label value: " << line;
        s.labels.emplace_back(lname, value);
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      EXPECT_LT(i, line.size()) << line;
      ++i;  // '}'
    }
    EXPECT_EQ(line[i], ' ') << line;
    s.value = parse_value(line.substr(i + 1));
    if (type == "histogram") {
      EXPECT_TRUE(s.name == family + "_bucket" || s.name == family + "_sum" ||
                  s.name == family + "_count")
          << line;
    } else {
      EXPECT_EQ(s.name, family) << line;
    }
    samples.push_back(std::move(s));
  }
  return samples;
}

// Checks every histogram series in `samples`: buckets cumulative (non-decreasing in le order),
// the last one le="+Inf", and _count equal to it. Returns the number of series checked.
int check_histograms(const std::vector<Sample>& samples) {
  // key: name + non-le labels
  std::map<std::string, std::vector<std::pair<double, double>>> buckets;
  std::map<std::string, double> counts;
  for (const Sample& s : samples) {
    const bool bucket = s.name.size() > 7 && s.name.ends_with("_bucket");
    const bool count = s.name.ends_with("_count");
    if (!bucket && !count) continue;
    std::string key = s.name.substr(0, s.name.rfind('_'));
    double le = 0;
    for (const auto& [k, v] : s.labels) {
      if (k == "le") {
        le = parse_value(v);
      } else {
        key += "|" + k + "=" + v;
      }
    }
    if (bucket) buckets[key].emplace_back(le, s.value);
    if (count) counts[key] = s.value;
  }
  for (const auto& [key, b] : buckets) {
    EXPECT_FALSE(b.empty());
    for (size_t i = 1; i < b.size(); ++i) {
      EXPECT_LT(b[i - 1].first, b[i].first) << key;
      EXPECT_LE(b[i - 1].second, b[i].second) << key << " not cumulative at le=" << b[i].first;
    }
    EXPECT_TRUE(std::isinf(b.back().first)) << key;
    EXPECT_TRUE(counts.count(key)) << key;
    if (counts.count(key)) {
      EXPECT_EQ(counts[key], b.back().second) << key;
    }
  }
  return static_cast<int>(buckets.size());
}

TEST(Metrics, NameValidation) {
  EXPECT_TRUE(is_valid_metric_name("llmthreads_requests_total"));
  EXPECT_TRUE(is_valid_metric_name("a:b_c9"));
  EXPECT_TRUE(is_valid_metric_name("_x"));
  EXPECT_FALSE(is_valid_metric_name(""));
  EXPECT_FALSE(is_valid_metric_name("9abc"));
  EXPECT_FALSE(is_valid_metric_name("a-b"));
  EXPECT_FALSE(is_valid_metric_name("a b"));
  EXPECT_FALSE(is_valid_metric_name("é"));
  EXPECT_TRUE(is_valid_label_name("endpoint"));
  EXPECT_TRUE(is_valid_label_name("_x1"));
  EXPECT_FALSE(is_valid_label_name("__reserved"));
  EXPECT_FALSE(is_valid_label_name("a:b"));
  EXPECT_FALSE(is_valid_label_name("1a"));
  EXPECT_FALSE(is_valid_label_name(""));
}

TEST(Metrics, ValueFormatting) {
  EXPECT_EQ(format_metric_value(0), "0");
  EXPECT_EQ(format_metric_value(-0.0), "0");
  EXPECT_EQ(format_metric_value(42), "42");
  EXPECT_EQ(format_metric_value(-7), "-7");
  EXPECT_EQ(format_metric_value(1e15), "1000000000000000");
  EXPECT_EQ(format_metric_value(0.1), "0.1");
  EXPECT_EQ(format_metric_value(2.5), "2.5");
  EXPECT_EQ(format_metric_value(0.0025), "0.0025");
  EXPECT_EQ(format_metric_value(INFINITY), "+Inf");
  EXPECT_EQ(format_metric_value(-INFINITY), "-Inf");
  EXPECT_EQ(format_metric_value(NAN), "NaN");
  for (double v : {1e-9, 1.0 / 3.0, 12345.678, 1e300, 9007199254740993.0}) {
    EXPECT_EQ(std::stod(format_metric_value(v)), v) << format_metric_value(v);
  }
}

TEST(Metrics, CounterAndGaugeExactLines) {
  MetricsRegistry r;
  auto c = r.add_counter("jobs_total", "Jobs done.\nSecond line with a \\ backslash.");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  auto g = r.add_gauge("temperature", "A gauge.");
  ASSERT_TRUE(g.is_ok());
  (*c)->inc();
  (*c)->inc(2);
  (*c)->inc(-5);   // ignored
  (*c)->inc(NAN);  // ignored
  (*g)->set(10);
  (*g)->dec();
  (*g)->add(0.5);
  EXPECT_EQ((*c)->value(), 3);
  const std::string text = r.render();
  const std::vector<std::string> expected = {
      "# HELP jobs_total Jobs done.\\nSecond line with a \\\\ backslash.",
      "# TYPE jobs_total counter",
      "jobs_total 3",
      "# HELP temperature A gauge.",
      "# TYPE temperature gauge",
      "temperature 9.5",
  };
  EXPECT_EQ(lines_of(text), expected) << text;
  parse_exposition(text);

  (*c)->advance_to(10);
  (*c)->advance_to(4);  // never goes down
  EXPECT_EQ((*c)->value(), 10);
}

TEST(Metrics, LabelsAndEscaping) {
  MetricsRegistry r;
  auto f = r.add_counter_family("requests_total", "Requests.", {"endpoint", "status"});
  ASSERT_TRUE(f.is_ok());
  ASSERT_TRUE((*f)->labels({"/v1/completions", "200"}).is_ok());
  (*(*f)->labels({"/v1/completions", "200"}))->inc(3);
  (*(*f)->labels({"/v1/chat/completions", "429"}))->inc();
  const std::string nasty = "a\"b\\c\nd";
  (*(*f)->labels({nasty, "400"}))->inc(7);
  const std::string invalid_utf8 = std::string("bad\xff") + "utf8\xc3";
  (*(*f)->labels({invalid_utf8, "500"}))->inc();
  EXPECT_EQ((*f)->n_series(), 4u);

  const std::string text = r.render();
  EXPECT_TRUE(has_line(text, "requests_total{endpoint=\"/v1/completions\",status=\"200\"} 3"))
      << text;
  EXPECT_TRUE(has_line(text, "requests_total{endpoint=\"/v1/chat/completions\",status=\"429\"} 1"))
      << text;
  EXPECT_TRUE(has_line(text, "requests_total{endpoint=\"a\\\"b\\\\c\\nd\",status=\"400\"} 7"))
      << text;
  EXPECT_TRUE(has_line(
      text, "requests_total{endpoint=\"bad\xEF\xBF\xBDutf8\xEF\xBF\xBD\",status=\"500\"} 1"))
      << text;

  // Parsed back, the escaped value is the original.
  bool found = false;
  for (const Sample& s : parse_exposition(text)) {
    if (s.label("status") == "400") {
      EXPECT_EQ(s.label("endpoint"), nasty);
      EXPECT_EQ(s.value, 7);
      found = true;
    }
  }
  EXPECT_TRUE(found);

  // Wrong arity.
  auto bad = (*f)->labels({"/v1/completions"});
  EXPECT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  // Valid UTF-8 passes unchanged.
  EXPECT_EQ(escape_label_value("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"),
            "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80");
  // Overlong and surrogate encodings do not.
  EXPECT_EQ(escape_label_value("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(escape_label_value("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(Metrics, RegistrationErrors) {
  MetricsRegistry r;
  ASSERT_TRUE(r.add_counter("x_total", "x").is_ok());
  EXPECT_FALSE(r.add_counter("x_total", "again").is_ok());
  EXPECT_FALSE(r.add_gauge("x_total", "as a gauge").is_ok());
  EXPECT_FALSE(r.add_counter("bad-name", "h").is_ok());
  EXPECT_FALSE(r.add_counter("", "h").is_ok());
  EXPECT_FALSE(r.add_counter_family("y", "h", {"a", "a"}).is_ok());
  EXPECT_FALSE(r.add_counter_family("y", "h", {"__a"}).is_ok());
  EXPECT_FALSE(r.add_counter_family("y", "h", {"a-b"}).is_ok());
  EXPECT_FALSE(r.add_histogram_family("h", "h", {"le"}, {1, 2}).is_ok());
  EXPECT_FALSE(r.add_histogram("h", "h", {}).is_ok());
  EXPECT_FALSE(r.add_histogram("h", "h", {2, 1}).is_ok());
  EXPECT_FALSE(r.add_histogram("h", "h", {1, 1}).is_ok());
  EXPECT_FALSE(r.add_histogram("h", "h", {1, INFINITY}).is_ok());
  EXPECT_FALSE(r.add_histogram("h", "h", {NAN}).is_ok());
  // A histogram owns its _bucket/_sum/_count names, both ways round.
  ASSERT_TRUE(r.add_histogram("lat", "h", {1}).is_ok());
  EXPECT_FALSE(r.add_gauge("lat_count", "h").is_ok());
  EXPECT_FALSE(r.add_counter("lat_bucket", "h").is_ok());
  ASSERT_TRUE(r.add_gauge("size_sum", "h").is_ok());
  EXPECT_FALSE(r.add_histogram("size", "h", {1}).is_ok());
  // Failed registrations left nothing behind: the name is still free.
  EXPECT_TRUE(r.add_counter("y", "h").is_ok());
  EXPECT_TRUE(r.add_histogram("h", "h", {1, 2}).is_ok());
  parse_exposition(r.render());
}

TEST(Metrics, HistogramExactLines) {
  MetricsRegistry r;
  auto h = r.add_histogram("latency_seconds", "Latency.", {1, 2, 5});
  ASSERT_TRUE(h.is_ok());
  for (double v : {0.5, 1.0, 1.5, 3.0, 7.0, 100.0, double{NAN}}) (*h)->observe(v);
  const std::string text = r.render();
  const std::vector<std::string> expected = {
      "# HELP latency_seconds Latency.",
      "# TYPE latency_seconds histogram",
      "latency_seconds_bucket{le=\"1\"} 2",  // 0.5 and 1 (le is inclusive)
      "latency_seconds_bucket{le=\"2\"} 3",
      "latency_seconds_bucket{le=\"5\"} 4",
      "latency_seconds_bucket{le=\"+Inf\"} 6",
      "latency_seconds_sum 113",
      "latency_seconds_count 6",
  };
  EXPECT_EQ(lines_of(text), expected) << text;
  EXPECT_EQ(check_histograms(parse_exposition(text)), 1);

  const Histogram::Snapshot s = (*h)->snapshot();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 3, 4, 6}));
  EXPECT_EQ(s.count, 6u);
  EXPECT_EQ(s.sum, 113.0);
}

TEST(Metrics, LabelledHistogramAndEmptyFamily) {
  MetricsRegistry r;
  auto f = r.add_histogram_family("ttft_seconds", "TTFT.", {"priority"}, {0.01, 0.1});
  ASSERT_TRUE(f.is_ok());
  auto empty = r.add_gauge_family("nothing_yet", "No series.", {"k"});
  ASSERT_TRUE(empty.is_ok());
  (*(*f)->labels({"high"}))->observe(0.005);
  (*(*f)->labels({"low"}))->observe(0.05);
  (*(*f)->labels({"low"}))->observe(0.25);
  const std::string text = r.render();
  for (const char* line : {
           "ttft_seconds_bucket{priority=\"high\",le=\"0.01\"} 1",
           "ttft_seconds_bucket{priority=\"high\",le=\"0.1\"} 1",
           "ttft_seconds_bucket{priority=\"high\",le=\"+Inf\"} 1",
           "ttft_seconds_sum{priority=\"high\"} 0.005",
           "ttft_seconds_count{priority=\"high\"} 1",
           "ttft_seconds_bucket{priority=\"low\",le=\"0.01\"} 0",
           "ttft_seconds_bucket{priority=\"low\",le=\"0.1\"} 1",
           "ttft_seconds_bucket{priority=\"low\",le=\"+Inf\"} 2",
           "ttft_seconds_sum{priority=\"low\"} 0.3",
           "ttft_seconds_count{priority=\"low\"} 2",
           "# HELP nothing_yet No series.",
           "# TYPE nothing_yet gauge",
       }) {
    EXPECT_TRUE(has_line(text, line)) << "missing: " << line << "\n" << text;
  }
  EXPECT_EQ(check_histograms(parse_exposition(text)), 2);
}

TEST(Metrics, RandomHistogramIsCumulative) {
  MetricsRegistry r;
  auto h = r.add_histogram("rand_seconds", "Random.", latency_buckets_seconds());
  ASSERT_TRUE(h.is_ok());
  std::mt19937 rng(7);
  std::lognormal_distribution<double> dist(-3.0, 2.5);
  std::vector<double> values(5000);
  for (double& v : values) {
    v = dist(rng);
    (*h)->observe(v);
  }
  const auto samples = parse_exposition(r.render());
  EXPECT_EQ(check_histograms(samples), 1);
  // Every bucket holds exactly the values <= its bound.
  for (const Sample& s : samples) {
    if (s.name != "rand_seconds_bucket") continue;
    const double le = parse_value(s.label("le"));
    double n = 0;
    for (double v : values) n += v <= le ? 1 : 0;
    EXPECT_EQ(s.value, n) << "le=" << le;
  }
}

TEST(Metrics, SeriesLimit) {
  MetricsRegistry r;
  auto f = r.add_counter_family("many_total", "h", {"k"});
  ASSERT_TRUE(f.is_ok());
  for (size_t i = 0; i < kMaxSeriesPerFamily; ++i) {
    ASSERT_TRUE((*f)->labels({std::to_string(i)}).is_ok());
  }
  auto over = (*f)->labels({"one more"});
  EXPECT_FALSE(over.is_ok());
  EXPECT_EQ(over.status().code(), StatusCode::kOutOfMemory);
  EXPECT_TRUE((*f)->labels({"17"}).is_ok());  // existing ones still resolve
}

// 8 threads update the same counter, gauge and histogram, and look up (and create) labelled
// series concurrently, while another thread renders; the totals are exact.
TEST(Metrics, ConcurrentUpdatesSumExactly) {
  MetricsRegistry r;
  Counter* c = *r.add_counter("ops_total", "h");
  Gauge* g = *r.add_gauge("level", "h");
  Histogram* h = *r.add_histogram("obs_seconds", "h", {0.25, 0.5, 1});
  CounterFamily* fam = *r.add_counter_family("by_key_total", "h", {"thread", "key"});

  constexpr int kThreads = 8;
  constexpr int kIters = 50000;
  std::atomic<bool> stop{false};
  std::thread renderer([&] {
    while (!stop.load()) parse_exposition(r.render());
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIters; ++i) {
        c->inc();
        g->add(i % 2 == 0 ? 2.0 : -1.0);
        h->observe(0.25 * (i % 5));  // 0, 0.25, 0.5, 0.75, 1: exact in binary
        if (i % 100 == 0) {
          (*fam->labels({"shared", std::to_string(i % 7)}))->inc();
          (*fam->labels({std::to_string(t), "k"}))->inc(0.5);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  stop = true;
  renderer.join();

  const double n = double{kThreads} * kIters;
  EXPECT_EQ(c->value(), n);
  EXPECT_EQ(g->value(), double{kThreads} * (kIters / 2) * 1.0);  // +2 -1 per pair
  const Histogram::Snapshot s = h->snapshot();
  EXPECT_EQ(s.count, static_cast<uint64_t>(n));
  // per thread: each of the 5 values kIters/5 times
  const double per = double{kThreads} * kIters / 5;
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{
                              static_cast<uint64_t>(2 * per), static_cast<uint64_t>(3 * per),
                              static_cast<uint64_t>(5 * per), static_cast<uint64_t>(5 * per)}));
  EXPECT_EQ(s.sum, per * (0 + 0.25 + 0.5 + 0.75 + 1.0));
  EXPECT_EQ(fam->n_series(), 7u + kThreads);

  const std::string text = r.render();
  EXPECT_TRUE(has_line(text, "ops_total 400000")) << text;
  EXPECT_TRUE(has_line(text, "level 200000")) << text;
  EXPECT_TRUE(has_line(text, "obs_seconds_count 400000")) << text;
  EXPECT_TRUE(has_line(text, "obs_seconds_sum 200000")) << text;
  EXPECT_TRUE(has_line(text, "obs_seconds_bucket{le=\"0.25\"} 160000")) << text;
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_TRUE(has_line(text, "by_key_total{thread=\"" + std::to_string(t) + "\",key=\"k\"} 250"))
        << text;
  }
  double shared = 0;
  for (const Sample& smp : parse_exposition(text)) {
    if (smp.name == "by_key_total" && smp.label("thread") == "shared") shared += smp.value;
  }
  EXPECT_EQ(shared, double{kThreads} * (kIters / 100));
}

TEST(ServerMetrics, EngineStatsAndRequests) {
  auto m = ServerMetrics::create();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  ServerMetrics& sm = **m;

  EngineStats s;
  s.n_waiting = 3;
  s.n_running = 8;
  s.n_swapped = 1;
  s.n_submitted = 70;
  s.n_finished = 60;
  s.n_cancelled = 2;
  s.n_steps = 1234;
  s.prompt_tokens = 16000;
  s.prefill_tokens = 2500;
  s.generated_tokens = 512;
  s.prefix_hit_tokens = 4000;
  s.kv_blocks_total = 1000;
  s.kv_blocks_used = 600;
  s.kv_blocks_cached = 150;
  s.kv_blocks_free = 250;
  s.kv_blocks_used_peak = 700;
  s.kv_window_slots = 40;
  s.kv_window_slots_used = 12;
  s.kv_window_slots_used_peak = 17;
  s.preempt_ram = 5;
  s.preempt_disk = 2;
  s.preempt_recompute = 9;
  s.swap_failures = 1;
  s.swap_bytes_ram = 1 << 20;
  s.swap_bytes_disk = 3 << 20;
  s.swap_bytes_out_total = 7 << 20;
  s.busy_s = 12.5;
  sm.update_engine(s);
  sm.set_queue_tokens(2048);
  sm.count_request("/v1/completions", 200);
  sm.count_request("/v1/completions", 200);
  sm.count_request("/v1/chat/completions", 429);
  sm.observe_ttft(0.003);
  sm.observe_ttft(0.2);
  sm.observe_itl(0.012);

  const std::string text = sm.render();
  for (const char* line : {
           "# TYPE llmthreads_requests_total counter",
           "llmthreads_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 2",
           "llmthreads_requests_total{endpoint=\"/v1/chat/completions\",status=\"429\"} 1",
           "# TYPE llmthreads_queue_threads gauge",
           "llmthreads_queue_threads 3",
           "llmthreads_queue_tokens 2048",
           "llmthreads_running_threads 8",
           "llmthreads_swapped_threads 1",
           "llmthreads_kv_blocks{state=\"used\"} 600",
           "llmthreads_kv_blocks{state=\"cached\"} 150",
           "llmthreads_kv_blocks{state=\"free\"} 250",
           "llmthreads_kv_blocks_capacity 1000",
           "llmthreads_kv_blocks_used_peak 700",
           "llmthreads_kv_window_slots 40",
           "llmthreads_kv_window_slots_used 12",
           "llmthreads_kv_window_slots_used_peak 17",
           "llmthreads_prefix_cache_hit_ratio 0.25",
           "llmthreads_prefix_cache_hit_tokens_total 4000",
           "# TYPE llmthreads_prompt_tokens_total counter",
           "llmthreads_prompt_tokens_total 16000",
           "llmthreads_prefill_tokens_total 2500",
           "llmthreads_generated_tokens_total 512",
           "llmthreads_preemptions_total{method=\"ram\"} 5",
           "llmthreads_preemptions_total{method=\"disk\"} 2",
           "llmthreads_preemptions_total{method=\"recompute\"} 9",
           "llmthreads_swap_failures_total 1",
           "llmthreads_swap_bytes{location=\"ram\"} 1048576",
           "llmthreads_swap_bytes{location=\"disk\"} 3145728",
           "llmthreads_swap_out_bytes_total 7340032",
           "llmthreads_threads_submitted_total 70",
           "llmthreads_threads_finished_total 60",
           "llmthreads_threads_cancelled_total 2",
           "llmthreads_engine_steps_total 1234",
           "llmthreads_engine_busy_seconds_total 12.5",
           "# TYPE llmthreads_time_to_first_token_seconds histogram",
           "llmthreads_time_to_first_token_seconds_bucket{le=\"0.001\"} 0",
           "llmthreads_time_to_first_token_seconds_bucket{le=\"0.005\"} 1",
           "llmthreads_time_to_first_token_seconds_bucket{le=\"0.1\"} 1",
           "llmthreads_time_to_first_token_seconds_bucket{le=\"0.25\"} 2",
           "llmthreads_time_to_first_token_seconds_bucket{le=\"30\"} 2",
           "llmthreads_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2",
           "llmthreads_time_to_first_token_seconds_count 2",
           "llmthreads_inter_token_latency_seconds_bucket{le=\"0.01\"} 0",
           "llmthreads_inter_token_latency_seconds_bucket{le=\"0.025\"} 1",
           "llmthreads_inter_token_latency_seconds_count 1",
       }) {
    EXPECT_TRUE(has_line(text, line)) << "missing: " << line << "\n" << text;
  }
  EXPECT_EQ(check_histograms(parse_exposition(text)), 2);

  // A stale snapshot never makes a counter go down; gauges follow it.
  EngineStats older = s;
  older.generated_tokens = 100;
  older.n_running = 2;
  older.prompt_tokens = 0;
  sm.update_engine(older);
  const std::string t2 = sm.render();
  EXPECT_TRUE(has_line(t2, "llmthreads_generated_tokens_total 512")) << t2;
  EXPECT_TRUE(has_line(t2, "llmthreads_running_threads 2")) << t2;
  EXPECT_TRUE(has_line(t2, "llmthreads_prefix_cache_hit_ratio 0")) << t2;

  // The server can add metrics of its own next to these.
  auto extra = sm.registry().add_counter("llmthreads_client_disconnects_total", "h");
  ASSERT_TRUE(extra.is_ok());
  EXPECT_FALSE(sm.registry().add_counter("llmthreads_requests_total", "dup").is_ok());
}

TEST(ServerMetrics, LatencyBuckets) {
  const std::vector<double> b = latency_buckets_seconds();
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(b.front(), 0.001);
  EXPECT_EQ(b.back(), 30.0);
  for (size_t i = 1; i < b.size(); ++i) EXPECT_LT(b[i - 1], b[i]);
}

}  // namespace
}  // namespace llmt::server
