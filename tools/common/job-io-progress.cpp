// Job I/O, progress: the numbers and the bar or lines the ProgressMeter prints (job-io.h).
#include "common/job-io.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>

#include "common/job-io-util.h"

namespace llmt::tasks {

using json = nlohmann::json;
using namespace io_detail;

// ---------------------------------------------------------------------------------------------
// Progress.

std::string format_compact_number(double v) {
  if (!std::isfinite(v) || v < 0) v = 0;
  char buf[32];
  if (v < 99.95) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
  }
  if (v < 999.5) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  static const char kSuffix[] = {'k', 'M', 'G', 'T', 'P'};
  for (int i = 0; i < 5; ++i) {
    v /= 1000.0;
    if (v < 9.95) {
      std::snprintf(buf, sizeof buf, "%.1f%c", v, kSuffix[i]);
      return buf;
    }
    if (v < 999.5 || i == 4) {
      std::snprintf(buf, sizeof buf, "%.0f%c", v, kSuffix[i]);
      return buf;
    }
  }
  return buf;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 27000.0 * 3600) return "--:--";
  auto t = static_cast<uint64_t>(std::ceil(seconds));
  uint64_t h = t / 3600, m = (t % 3600) / 60, s = t % 60;
  char buf[32];
  if (h > 0) {
    std::snprintf(buf, sizeof buf, "%llu:%02llu:%02llu", static_cast<unsigned long long>(h),
                  static_cast<unsigned long long>(m), static_cast<unsigned long long>(s));
  } else {
    std::snprintf(buf, sizeof buf, "%llu:%02llu", static_cast<unsigned long long>(m),
                  static_cast<unsigned long long>(s));
  }
  return buf;
}

namespace {

struct Rates {
  double docs_per_s = 0;
  double tok_per_s = 0;
  double eta_s = -1;  // unknown
};

Rates rates_of(const ProgressSnapshot& s) {
  Rates r;
  uint64_t run_done = s.n_done > s.n_done_at_start ? s.n_done - s.n_done_at_start : 0;
  if (s.elapsed_s > 0) {
    r.docs_per_s = static_cast<double>(run_done) / s.elapsed_s;
    r.tok_per_s = static_cast<double>(s.n_tokens) / s.elapsed_s;
  }
  if (s.n_total > 0 && s.n_done >= s.n_total) {
    r.eta_s = 0;
  } else if (s.n_total > 0 && r.docs_per_s > 0) {
    r.eta_s = static_cast<double>(s.n_total - s.n_done) / r.docs_per_s;
  }
  return r;
}

std::string bar_cells(uint64_t done, uint64_t total, size_t width) {
  uint64_t filled =
      done >= total ? width : static_cast<uint64_t>(static_cast<double>(done) / total * width);
  filled = std::min<uint64_t>(filled, width);
  std::string s(filled, '=');
  if (filled < width) {
    s += '>';
    s.append(width - filled - 1, ' ');
  }
  return s;
}

}  // namespace

std::string format_progress_bar(const ProgressSnapshot& s, size_t columns) {
  // The last column stays empty: writing it makes some terminals wrap, and the next "\r" would
  // then redraw on a new row, leaving the old one behind.
  const size_t max_cols = std::max<size_t>(columns, 2) - 1;
  constexpr size_t kBarWidth = 20, kMaxBarWidth = 40, kMinBar = 5;
  Rates r = rates_of(s);
  std::string docs = s.n_total > 0
                         ? std::to_string(s.n_done) + "/" + std::to_string(s.n_total) + " docs"
                         : std::to_string(s.n_done) + " docs";
  std::string rate = "  " + format_compact_number(r.docs_per_s) + " docs/s";
  std::string tok = "  " + format_compact_number(r.tok_per_s) + " tok/s";
  std::string ranks = s.n_ranks > 0 ? "  " + std::to_string(s.n_ranks_alive) + "/" +
                                          std::to_string(s.n_ranks) + " ranks"
                                    : "";
  std::string tail =
      s.n_total > 0 ? "  ETA " + format_duration(r.eta_s) : "  " + format_duration(s.elapsed_s);
  if (s.n_total == 0) {
    std::string line = docs + rate + tok + ranks + tail;
    if (line.size() > max_cols) line = docs + rate + tok + tail;
    if (line.size() > max_cols) line = docs + rate + tail;
    if (line.size() > max_cols) line = docs + tail;
    if (line.size() > max_cols) line = docs;
    return line.substr(0, max_cols);
  }
  // Fewer numbers before a shorter bar, a shorter bar before no bar; MPI: the ranks before tok/s.
  std::string text = " " + docs + rate + tok + tail;
  const std::string with_ranks = " " + docs + rate + tok + ranks + tail;
  if (!ranks.empty() && with_ranks.size() + kMinBar + 2 <= max_cols) {
    text = with_ranks;
  } else if (text.size() + kBarWidth + 2 > max_cols) {
    text = " " + docs + rate + tail;
  }
  size_t width = kBarWidth;
  if (text.size() + width + 2 > max_cols) {
    width = max_cols > text.size() + 2 + kMinBar ? max_cols - text.size() - 2 : 0;
  } else if (max_cols > 80) {
    // Wide terminals: a longer bar.
    width = std::min({kMaxBarWidth, max_cols - text.size() - 2, max_cols - 80 + kBarWidth});
  }
  if (width < kMinBar) {
    std::string line = text.substr(1);
    if (line.size() > max_cols) line = docs + tail;
    if (line.size() > max_cols) line = docs;
    return line.substr(0, max_cols);
  }
  return "[" + bar_cells(s.n_done, s.n_total, width) + "]" + text;
}

size_t terminal_columns(int fd) {
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* env = std::getenv("COLUMNS"); env != nullptr) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0 && v < 100000) return static_cast<size_t>(v);
  }
  return 80;
}

std::string format_progress_line(const ProgressSnapshot& s) {
  Rates r = rates_of(s);
  std::string line = "progress: " + std::to_string(s.n_done);
  if (s.n_total > 0) {
    char pct[32];
    double p =
        std::min(100.0, 100.0 * static_cast<double>(s.n_done) / static_cast<double>(s.n_total));
    std::snprintf(pct, sizeof pct, " (%.1f%%)", p);
    line += "/" + std::to_string(s.n_total) + " docs" + pct;
  } else {
    line += " docs";
  }
  line += "  " + format_compact_number(r.docs_per_s) + " docs/s  " +
          format_compact_number(r.tok_per_s) + " tok/s";
  if (s.n_ranks > 0) {
    line += "  " + std::to_string(s.n_ranks_alive) + "/" + std::to_string(s.n_ranks) + " ranks";
  }
  line += "  elapsed " + format_duration(s.elapsed_s);
  if (s.n_total > 0) line += "  ETA " + format_duration(r.eta_s);
  return line;
}

ProgressMeter::ProgressMeter(ProgressMeterOptions options) : options_(std::move(options)) {
  start_ = now();
  last_print_ = start_;
}

double ProgressMeter::now() const {
  return options_.clock ? options_.clock() : steady_seconds();
}

ProgressSnapshot ProgressMeter::snapshot(uint64_t n_done, uint64_t n_tokens) const {
  ProgressSnapshot s;
  s.n_done = n_done;
  s.n_total = options_.n_total;
  s.n_done_at_start = options_.n_done_at_start;
  s.n_tokens = n_tokens;
  s.elapsed_s = std::max(0.0, now() - start_);
  s.n_ranks = n_ranks_;
  s.n_ranks_alive = n_ranks_alive_;
  return s;
}

std::string ProgressMeter::render(const ProgressSnapshot& s) const {
  std::string out;
  if (options_.tty) {
    out = "\r";
    out += format_progress_bar(
        s, options_.columns ? options_.columns() : terminal_columns(STDERR_FILENO));
    out += "\x1b[K";
  } else {
    out = format_progress_line(s);
    out += '\n';
  }
  return out;
}

std::string ProgressMeter::update(uint64_t n_done, uint64_t n_tokens) {
  double t = now();
  double interval = options_.tty ? options_.tty_interval_s : options_.plain_interval_s;
  bool due =
      options_.tty ? (!printed_ || t - last_print_ >= interval) : (t - last_print_ >= interval);
  if (!due) return "";
  printed_ = true;
  last_print_ = t;
  return render(snapshot(n_done, n_tokens));
}

std::string ProgressMeter::finish(uint64_t n_done, uint64_t n_tokens) {
  printed_ = true;
  last_print_ = now();
  std::string s = render(snapshot(n_done, n_tokens));
  if (options_.tty) s += "\n";
  return s;
}

}  // namespace llmt::tasks
