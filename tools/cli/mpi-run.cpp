// The MPI batch driver (mpi-run.h): the wire format, a rank's worker (queue -> Job -> lines),
// rank 0's coordinator and the other ranks' loop.
#include "mpi-run.h"

#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/signal-watcher.h"
#include "common/task-render.h"

namespace llmt::cli {

namespace {

using Clock = std::chrono::steady_clock;
using RawRecord = tasks::InputReader::RawRecord;

constexpr int kTag = 7;
constexpr size_t kMaxMessageBytes = size_t{32} << 20;  // a chunk or a batch of lines at most

int fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  return kExitFatal;
}

// ---------------------------------------------------------------------------------------------
// Wire format: a type byte, then fixed 8-byte little-endian integers and length-prefixed strings.

enum class Msg : uint8_t {
  kHello = 1,  // rank -> 0: fingerprint, host, threads, window
  kRequest,    // rank -> 0: wants a chunk
  kChunk,      // 0 -> rank: format, max_line_bytes, n, n x (index, line, offset, too_long, line);
               // n = 0: the end of the input for this rank
  kResults,    // rank -> 0: tokens so far, n, n x (index, failed, line)
  kSignal,     // rank -> 0: signals taken so far, the last signal
  kCancel,     // 0 -> rank: cancel what runs, take no more
  kError,      // rank -> 0: a fatal error (message); the rank then stops
  kDone,       // rank -> 0: finished (no more messages)
};

class Writer {
 public:
  explicit Writer(Msg type) { s_.push_back(static_cast<char>(type)); }
  void u64(uint64_t v) {
    char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    s_.append(b, 8);
  }
  void str(const std::string& v) {
    u64(v.size());
    s_ += v;
  }
  size_t size() const { return s_.size(); }
  std::string take() { return std::move(s_); }

 private:
  std::string s_;
};

class Reader {
 public:
  explicit Reader(const std::string& s) : s_(s), pos_(1) {}
  bool u64(uint64_t* v) {
    if (s_.size() - pos_ < 8) return false;
    *v = 0;
    for (int i = 0; i < 8; ++i) *v |= uint64_t{static_cast<unsigned char>(s_[pos_ + i])} << (8 * i);
    pos_ += 8;
    return true;
  }
  bool str(std::string* v) {
    uint64_t n = 0;
    if (!u64(&n) || s_.size() - pos_ < n) return false;
    v->assign(s_, pos_, n);
    pos_ += n;
    return true;
  }

 private:
  const std::string& s_;
  size_t pos_;
};

// MPI on the main thread: non-blocking sends (a buffer lives until its send completed), probes.
class Comm {
 public:
  void send(int dest, std::string bytes) {
    pending_.emplace_back();
    Pending& p = pending_.back();
    p.bytes = std::move(bytes);
    MPI_Isend(p.bytes.data(), static_cast<int>(p.bytes.size()), MPI_BYTE, dest, kTag,
              MPI_COMM_WORLD, &p.req);
  }
  // Completes finished sends; takes the next message, if any.
  bool poll(int* source, std::string* msg) {
    for (auto it = pending_.begin(); it != pending_.end();) {
      int done = 0;
      MPI_Test(&it->req, &done, MPI_STATUS_IGNORE);
      it = done ? pending_.erase(it) : std::next(it);
    }
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, kTag, MPI_COMM_WORLD, &flag, &st);
    if (!flag) return false;
    int n = 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    msg->resize(static_cast<size_t>(n));
    MPI_Recv(msg->data(), n, MPI_BYTE, st.MPI_SOURCE, kTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    *source = st.MPI_SOURCE;
    return !msg->empty();
  }
  // Waits for every send (before MPI_Finalize), polling rather than blocking in MPI.
  void drain_sends() {
    while (!pending_.empty()) {
      for (auto it = pending_.begin(); it != pending_.end();) {
        int done = 0;
        MPI_Test(&it->req, &done, MPI_STATUS_IGNORE);
        it = done ? pending_.erase(it) : std::next(it);
      }
      if (!pending_.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

 private:
  struct Pending {
    MPI_Request req;
    std::string bytes;
  };
  std::list<Pending> pending_;  // nodes do not move: the buffers stay put
};

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

struct Line {
  uint64_t index = 0;
  bool failed = false;
  std::string line;
};

// ---------------------------------------------------------------------------------------------
// One rank's worker: raw lines in (give), output lines out (take_lines), a Job on the rank's
// engine in between (fed on the job's own feed thread). Thread-safe: the main thread calls
// everything; the job's threads call the source and the result callback.
class Worker : public DocumentSource {
 public:
  Worker(Engine& engine, const BatchRunOptions& opt)
      : engine_(engine),
        opt_(opt),
        options_(tasks::result_options(opt.spec)),
        model_name_(default_model_name(opt)),
        stats0_(engine.stats()) {}
  ~Worker() override {
    cancel();
    job_.reset();  // joins the feed thread before the members it uses go
  }

  Status start() {
    JobLimits limits;
    limits.max_documents = opt_.window;
    auto job = Job::create(
        engine_, opt_.spec,
        [this](DocumentResult r) {
          bool failed = false;
          std::optional<std::string> line = result_line(r, options_, &failed);
          if (line) push_line(r.index, std::move(*line), failed);
        },
        limits);
    if (!job.is_ok()) return job.status();
    job_ = std::move(*job);
    const uint64_t window = job_->limits().max_documents;
    chunk_ = std::max<uint64_t>(1, window / 2);
    return job_->feed_async(*this, {}, [this](Status s) {
      std::lock_guard<std::mutex> lk(mu_);
      feed_status_ = std::move(s);
      feed_done_ = true;
    });
  }

  uint64_t window() const { return job_->limits().max_documents; }
  uint64_t chunk() const { return chunk_; }

  // Lines to run; empty = the end of the input.
  void give(tasks::InputFormat format, size_t max_line_bytes, std::vector<RawRecord> recs) {
    std::lock_guard<std::mutex> lk(mu_);
    format_ = format;
    max_line_bytes_ = max_line_bytes;
    if (recs.empty()) end_ = true;
    if (!cancelled_)
      for (auto& r : recs) queue_.push_back(std::move(r));
    cv_.notify_all();
  }
  // The queue ran low and more may come.
  bool wants_more() const {
    std::lock_guard<std::mutex> lk(mu_);
    return !end_ && !cancelled_ && queue_.size() < chunk_;
  }
  void cancel() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      cancelled_ = true;
      end_ = true;
      queue_.clear();
      cv_.notify_all();
    }
    if (job_) job_->cancel();
  }
  std::vector<Line> take_lines() {
    std::lock_guard<std::mutex> lk(mu_);
    return std::exchange(lines_, {});
  }
  // Every line given was run and its output line taken... once the caller takes the last lines.
  bool finished() const {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!feed_done_) return false;
    }
    return job_->n_in_flight() == 0;
  }
  Status feed_status() const {
    std::lock_guard<std::mutex> lk(mu_);
    return feed_status_;
  }
  uint64_t tokens() const {
    const EngineStats s = engine_.stats();
    return static_cast<uint64_t>((s.prefill_tokens - stats0_.prefill_tokens) +
                                 (s.generated_tokens - stats0_.generated_tokens));
  }

  // DocumentSource, on the feed thread: the next runnable record of the queue (records that
  // cannot run get their error line here).
  Result<bool> next(Document* doc) override {
    while (true) {
      RawRecord raw;
      InputFormat_t format;
      size_t max_line;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return !queue_.empty() || end_; });
        if (queue_.empty()) return false;
        raw = std::move(queue_.front());
        queue_.pop_front();
        format = format_;
        max_line = max_line_bytes_;
      }
      tasks::InputRecord rec;
      tasks::parse_raw_record(raw, format, max_line, &rec);
      std::string error_line;
      if (record_to_document(std::move(rec), opt_.spec.sampling, model_name_, doc, &error_line))
        return true;
      push_line(raw.index, std::move(error_line), true);
    }
  }

 private:
  using InputFormat_t = tasks::InputFormat;
  void push_line(uint64_t index, std::string line, bool failed) {
    std::lock_guard<std::mutex> lk(mu_);
    lines_.push_back(Line{index, failed, std::move(line)});
  }

  Engine& engine_;
  const BatchRunOptions& opt_;
  const std::vector<std::string>& options_;
  std::string model_name_;
  EngineStats stats0_;
  uint64_t chunk_ = 1;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RawRecord> queue_;
  InputFormat_t format_ = InputFormat_t::kSimple;
  size_t max_line_bytes_ = 0;
  bool end_ = false, cancelled_ = false;
  std::vector<Line> lines_;
  bool feed_done_ = false;
  Status feed_status_;
  std::unique_ptr<Job> job_;  // last: destroyed first
};

double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

void sleep_idle() {
  std::this_thread::sleep_for(std::chrono::microseconds(500));
}

// The main loops' pause when nothing happened: 0.25 ms doubling up to 4 ms while idle, so an
// idle rank costs about 250 wake-ups a second (each an MPI progress call) while a busy one
// answers at once. Ranks ask for the next chunk while a chunk is still queued, so the pause
// does not starve their engines.
class IdleBackoff {
 public:
  void pause(bool busy) {
    if (busy) {
      us_ = 250;
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(us_));
    us_ = std::min(us_ * 2, 4000);
  }

 private:
  int us_ = 250;
};

// ---------------------------------------------------------------------------------------------
// Ranks other than 0.
int run_rank(const BatchRunOptions& opt, int rank, Comm& comm, const std::atomic<int>& n_signals,
             const std::atomic<int>& last_signal) {
  auto send_error = [&](const std::string& m) {
    Writer w(Msg::kError);
    w.str(m);
    comm.send(0, w.take());
    comm.drain_sends();
    std::fprintf(stderr, "error: rank %d (%s): %s\n", rank, host_name().c_str(), m.c_str());
    return kExitFatal;
  };
  Result<std::unique_ptr<Engine>> engine_r = Engine::create(opt.engine);
  if (!engine_r.is_ok()) return send_error(engine_r.status().to_string());
  Worker worker(**engine_r, opt);
  if (Status s = worker.start(); !s.is_ok()) return send_error(s.message());
  {
    Writer w(Msg::kHello);
    w.str(opt.fingerprint);
    w.str(host_name());
    w.u64(static_cast<uint64_t>(std::max(0, (*engine_r)->config().compute.n_threads)));
    w.u64(worker.window());
    comm.send(0, w.take());
  }
  bool requested = false;
  int signals_sent = 0;
  uint64_t tokens_sent = 0;
  auto send_lines = [&](std::vector<Line> lines) {
    const uint64_t tokens = worker.tokens();
    if (lines.empty() && tokens == tokens_sent) return;
    size_t i = 0;
    do {
      Writer w(Msg::kResults);
      w.u64(tokens);
      std::vector<const Line*> batch;
      size_t bytes = 0;
      while (i < lines.size() &&
             (batch.empty() || bytes + lines[i].line.size() < kMaxMessageBytes)) {
        bytes += lines[i].line.size() + 17;
        batch.push_back(&lines[i++]);
      }
      w.u64(batch.size());
      for (const Line* l : batch) {
        w.u64(l->index);
        w.u64(l->failed ? 1 : 0);
        w.str(l->line);
      }
      comm.send(0, w.take());
    } while (i < lines.size());
    tokens_sent = tokens;
  };
  auto last_results = Clock::now();
  IdleBackoff backoff;
  while (true) {
    bool busy = false;
    if (!requested && worker.wants_more()) {
      comm.send(0, Writer(Msg::kRequest).take());
      requested = true;
    }
    int src = 0;
    std::string msg;
    while (comm.poll(&src, &msg)) {
      busy = true;
      const Msg type = static_cast<Msg>(msg[0]);
      Reader r(msg);
      if (type == Msg::kCancel) {
        worker.cancel();
      } else if (type == Msg::kChunk) {
        requested = false;
        uint64_t format = 0, max_line = 0, n = 0;
        bool ok = r.u64(&format) && r.u64(&max_line) && r.u64(&n);
        std::vector<RawRecord> recs(ok ? n : 0);
        for (auto& rec : recs) {
          uint64_t too_long = 0;
          ok = ok && r.u64(&rec.index) && r.u64(&rec.line_number) && r.u64(&rec.byte_offset) &&
               r.u64(&too_long) && r.str(&rec.line);
          rec.too_long = too_long != 0;
        }
        if (!ok) {
          worker.cancel();
          return send_error("malformed chunk message from rank 0");
        }
        worker.give(static_cast<tasks::InputFormat>(format), max_line, std::move(recs));
      }
    }
    if (const int ns = n_signals.load(); ns > signals_sent) {
      Writer w(Msg::kSignal);
      w.u64(static_cast<uint64_t>(ns));
      w.u64(static_cast<uint64_t>(last_signal.load()));
      comm.send(0, w.take());
      signals_sent = ns;
    }
    const bool finished = worker.finished();
    std::vector<Line> lines = worker.take_lines();
    if (!lines.empty() || Clock::now() - last_results > std::chrono::milliseconds(500)) {
      busy = busy || !lines.empty();
      send_lines(std::move(lines));
      last_results = Clock::now();
    }
    if (finished) {
      send_lines(worker.take_lines());
      if (Status s = worker.feed_status(); !s.is_ok() && s.code() != StatusCode::kCancelled)
        return send_error(s.to_string());
      comm.send(0, Writer(Msg::kDone).take());
      comm.drain_sends();
      return kExitOk;
    }
    backoff.pause(busy);
  }
}

// ---------------------------------------------------------------------------------------------
// Rank 0.

struct RankInfo {
  std::string host = "?";
  bool hello = false, requested = false, ended = false, done = false;
  uint64_t threads = 0, window = 0, chunk = 1;
  uint64_t tokens = 0, n_lines = 0;
};

// Tells every other rank to stop and waits until each said it is done (so MPI_Finalize has no
// message in flight), discarding what they send.
void stop_ranks(Comm& comm, std::vector<RankInfo>& ranks) {
  for (size_t r = 1; r < ranks.size(); ++r)
    if (!ranks[r].done) comm.send(static_cast<int>(r), Writer(Msg::kCancel).take());
  auto all_done = [&] {
    for (size_t r = 1; r < ranks.size(); ++r)
      if (!ranks[r].done) return false;
    return true;
  };
  int src = 0;
  std::string msg;
  while (!all_done()) {
    if (!comm.poll(&src, &msg)) {
      sleep_idle();
      continue;
    }
    const Msg t = static_cast<Msg>(msg[0]);
    if (t == Msg::kDone || t == Msg::kError) ranks[static_cast<size_t>(src)].done = true;
  }
  comm.drain_sends();
}

// Rank 0 of a batch run: opens the input and the output, hands chunks of records to every rank
// (itself included, through a local Worker), writes their results in order and reports.
class Coordinator {
 public:
  Coordinator(const BatchRunOptions& opt, int n_ranks, Comm& comm, std::atomic<int>& n_signals,
              std::atomic<int>& last_signal)
      : opt_(opt),
        n_ranks_(n_ranks),
        comm_(comm),
        n_signals_(n_signals),
        last_signal_(last_signal),
        ranks_(static_cast<size_t>(n_ranks)) {}

  // Runs the job to its end; the process exit code.
  int run();

 private:
  // Opens the input, the output and the local worker; an exit code when the run ends here.
  std::optional<int> open_job();
  // Records one output line of rank `rank`.
  void put(size_t rank, Line l);
  // Ranks still running.
  size_t n_alive() const;
  // Tokens generated so far, all ranks together.
  uint64_t total_tokens() const;
  // Cancels the work of every rank (once).
  void cancel_all();
  // Stops the job on rank r's fatal error m (the first one is reported).
  void rank_fatal(size_t r, const std::string& m);
  // Sends rank r its next chunk (none at the end: it ended); false when it has to wait.
  bool serve(size_t r);
  // Handles one message from rank src.
  void handle_message(int src, const std::string& msg);
  // Reacts to the signals seen by rank 0 or forwarded: makes the output durable and finishes
  // the documents in flight, and cancels on a second signal, after the grace or on a write
  // error.
  void handle_signals();
  // The coordination loop, until every rank is done; the coordinator's CPU seconds.
  double coordinate();
  // Flushes the output and reports the run; the exit code.
  int report(double coord_cpu_s);

  const BatchRunOptions& opt_;
  const int n_ranks_;
  Comm& comm_;
  std::atomic<int>& n_signals_;
  std::atomic<int>& last_signal_;
  std::vector<RankInfo> ranks_;

  std::unique_ptr<tasks::InputReader> reader_;
  uint64_t n_total_ = 0;
  std::unique_ptr<tasks::OutputWriter> writer_;
  uint64_t n_done_at_open_ = 0;
  std::unique_ptr<Engine> engine_;
  std::optional<Worker> local_;

  // Output: lines in order, durable in batches; counts.
  uint64_t n_done_ = 0, n_failed_ = 0;
  Status write_error_;

  std::optional<tasks::ProgressMeter> meter_;
  bool progress_on_ = false;

  std::string fatal_;  // the first fatal error (names the rank)
  bool input_end_ = false, stopping_ = false, cancelled_ = false;
  int signals_seen_ = 0, forwarded_signals_ = 0, forwarded_last_ = 0;
  Clock::time_point signal_at_{};
  // The writer's reorder distance bound: the window and chunk of every rank that said hello,
  // twice.
  uint64_t max_ahead_ = 0;
};

std::optional<int> Coordinator::open_job() {
  const TaskSpec& spec = opt_.spec;
  Result<std::unique_ptr<tasks::InputReader>> reader_r = tasks::InputReader::open(opt_.input_path);
  if (!reader_r.is_ok()) return fail(reader_r.status().to_string());
  reader_ = std::move(*reader_r);
  tasks::InputReader& reader = *reader_;
  if (reader.format() == tasks::InputFormat::kOpenAiBatch && spec.type != TaskType::kGenerate) {
    return fail("OpenAI batch input runs as generations: use --task generate (the default)");
  }
  Result<uint64_t> n_total_r = tasks::count_input_records(opt_.input_path);
  if (!n_total_r.is_ok()) return fail(n_total_r.status().to_string());
  n_total_ = *n_total_r;
  Result<tasks::JobIdentity> ident = tasks::make_job_identity(opt_.input_path, opt_.fingerprint);
  if (!ident.is_ok()) return fail(ident.status().to_string());
  ident->param_options = opt_.param_options;
  tasks::OutputWriterOptions wopt;
  wopt.overwrite = opt_.overwrite;
  Result<std::unique_ptr<tasks::OutputWriter>> writer_r =
      tasks::OutputWriter::open(opt_.output_path, *ident, wopt);
  if (!writer_r.is_ok()) return fail(writer_r.status().message());
  writer_ = std::move(*writer_r);
  n_done_at_open_ = writer_->n_done_at_open();
  if (writer_->complete_at_open()) {
    std::fprintf(stderr,
                 "%s is already complete (%llu records); nothing to do (--overwrite to redo)\n",
                 opt_.output_path.c_str(), static_cast<unsigned long long>(n_done_at_open_));
    return kExitOk;
  }
  if (n_done_at_open_ > 0) {
    std::fprintf(stderr, "resuming: %llu of %llu records already in %s\n",
                 static_cast<unsigned long long>(n_done_at_open_),
                 static_cast<unsigned long long>(n_total_), opt_.output_path.c_str());
    Result<uint64_t> skipped = reader.skip(n_done_at_open_);
    if (!skipped.is_ok()) return fail(skipped.status().to_string());
  }

  Result<std::unique_ptr<Engine>> engine_r = Engine::create(opt_.engine);
  if (!engine_r.is_ok()) return fail(engine_r.status().to_string());
  engine_ = std::move(*engine_r);
  Engine& engine = *engine_;
  Worker& local = local_.emplace(engine, opt_);
  if (Status s = local.start(); !s.is_ok()) return fail(s.message());
  ranks_[0].hello = true;
  ranks_[0].threads = static_cast<uint64_t>(std::max(0, engine.config().compute.n_threads));
  ranks_[0].window = local.window();
  ranks_[0].chunk = local.chunk();
  return std::nullopt;
}

void Coordinator::put(size_t rank, Line l) {
  if (l.failed) ++n_failed_;
  ++n_done_;
  ++ranks_[rank].n_lines;
  Status s = writer_->submit_result(l.index, std::move(l.line));
  if (!s.is_ok() && write_error_.is_ok()) write_error_ = s;
}

size_t Coordinator::n_alive() const {
  size_t n = 0;
  for (const RankInfo& r : ranks_) n += r.done ? 0 : 1;
  return n;
}

uint64_t Coordinator::total_tokens() const {
  uint64_t t = local_->tokens();
  for (size_t r = 1; r < ranks_.size(); ++r) t += ranks_[r].tokens;
  return t;
}

void Coordinator::cancel_all() {
  if (cancelled_) return;
  cancelled_ = true;
  local_->cancel();
  for (size_t r = 1; r < ranks_.size(); ++r)
    if (!ranks_[r].done) comm_.send(static_cast<int>(r), Writer(Msg::kCancel).take());
}

void Coordinator::rank_fatal(size_t r, const std::string& m) {
  if (fatal_.empty()) fatal_ = "rank " + std::to_string(r) + " (" + ranks_[r].host + "): " + m;
  stopping_ = true;
  cancel_all();
}

// A chunk for rank r: at most its chunk size and the unassigned rest / 2K, and only while the
// writer's reorder distance stays bounded (max_ahead_).
bool Coordinator::serve(size_t r) {
  tasks::InputReader& reader = *reader_;
  if (!input_end_ && !stopping_) {
    if (reader.n_records_read() >= writer_->next_index() + max_ahead_) return false;
  }
  std::vector<RawRecord> recs;
  if (!input_end_ && !stopping_) {
    const uint64_t rest =
        n_total_ > reader.n_records_read() ? n_total_ - reader.n_records_read() : 0;
    const uint64_t n = std::max<uint64_t>(
        1, std::min<uint64_t>(ranks_[r].chunk, rest / (2 * static_cast<uint64_t>(n_ranks_))));
    size_t bytes = 0;
    while (recs.size() < n && bytes < kMaxMessageBytes) {
      RawRecord raw;
      Result<bool> got = reader.next_raw(&raw);
      if (!got.is_ok()) {
        if (fatal_.empty()) fatal_ = "reading " + opt_.input_path + ": " + got.status().to_string();
        stopping_ = true;
        cancel_all();
        break;
      }
      if (!*got) {
        input_end_ = true;
        break;
      }
      bytes += raw.line.size() + 40;
      recs.push_back(std::move(raw));
    }
  }
  if (!recs.empty() || input_end_ || stopping_) {
    if (recs.empty()) ranks_[r].ended = true;
    if (r == 0) {
      local_->give(reader.format(), reader.max_line_bytes(), std::move(recs));
    } else {
      Writer w(Msg::kChunk);
      w.u64(static_cast<uint64_t>(reader.format()));
      w.u64(reader.max_line_bytes());
      w.u64(recs.size());
      for (const RawRecord& rec : recs) {
        w.u64(rec.index);
        w.u64(rec.line_number);
        w.u64(rec.byte_offset);
        w.u64(rec.too_long ? 1 : 0);
        w.str(rec.line);
      }
      comm_.send(static_cast<int>(r), w.take());
    }
    return true;
  }
  return false;
}

void Coordinator::handle_message(int src, const std::string& msg) {
  const size_t r = static_cast<size_t>(src);
  RankInfo& ri = ranks_[r];
  Reader rd(msg);
  switch (static_cast<Msg>(msg[0])) {
    case Msg::kHello: {
      std::string fp;
      if (!rd.str(&fp) || !rd.str(&ri.host) || !rd.u64(&ri.threads) || !rd.u64(&ri.window)) {
        rank_fatal(r, "malformed hello message");
        break;
      }
      ri.hello = true;
      ri.chunk = std::max<uint64_t>(1, ri.window / 2);
      if (fp != opt_.fingerprint) {
        rank_fatal(r,
                   "its job parameters differ from rank 0's (task, prompt, labels, model, "
                   "sampling...): every rank must run the same job");
      }
      max_ahead_ += 2 * (ri.window + ri.chunk);
      break;
    }
    case Msg::kRequest:
      ri.requested = true;
      break;
    case Msg::kResults: {
      uint64_t n = 0;
      bool ok = rd.u64(&ri.tokens) && rd.u64(&n);
      for (uint64_t i = 0; ok && i < n; ++i) {
        Line l;
        uint64_t failed = 0;
        ok = rd.u64(&l.index) && rd.u64(&failed) && rd.str(&l.line);
        l.failed = failed != 0;
        if (ok) put(r, std::move(l));
      }
      if (!ok) rank_fatal(r, "malformed results message");
      break;
    }
    case Msg::kSignal: {
      uint64_t ns = 0, sig = 0;
      if (rd.u64(&ns) && rd.u64(&sig) && static_cast<int>(ns) > forwarded_signals_) {
        forwarded_signals_ = static_cast<int>(ns);
        forwarded_last_ = static_cast<int>(sig);
      }
      break;
    }
    case Msg::kError: {
      std::string m;
      if (!rd.str(&m)) m = "malformed error message";
      ri.done = true;
      rank_fatal(r, m);
      break;
    }
    case Msg::kDone:
      ri.done = true;
      break;
    default:
      rank_fatal(r, "unknown message type " + std::to_string(static_cast<int>(msg[0])));
  }
}

void Coordinator::handle_signals() {
  // Signals: rank 0's own or forwarded (mpirun signals every rank: the larger count counts).
  const int ns = std::max(n_signals_.load(), forwarded_signals_);
  if (ns > signals_seen_) {
    if (signals_seen_ == 0) {
      signal_at_ = Clock::now();
      const int sig = n_signals_.load() > 0 ? last_signal_.load() : forwarded_last_;
      if (last_signal_.load() == 0) last_signal_.store(sig);
      (void)writer_->flush_durable();  // at once: a launcher may SIGKILL soon
      std::fprintf(stderr,
                   "\n%s: output made durable; finishing the documents in flight on %zu ranks "
                   "(up to %.0f s; signal again to stop now). A launcher that stops the job "
                   "because a rank failed names that rank and host.\n",
                   sig == SIGINT ? "interrupted" : "terminated", n_alive(), opt_.grace_s);
      stopping_ = true;
    }
    signals_seen_ = ns;
  }
  if (!cancelled_ &&
      (!write_error_.is_ok() || ns > 1 ||
       (ns == 1 && Clock::now() - signal_at_ > std::chrono::duration<double>(opt_.grace_s)))) {
    cancel_all();
  }
}

double Coordinator::coordinate() {
  Worker& local = *local_;
  // The coordinator's own cost: CPU time of this (main) thread in the loop, per document.
  const double cpu0 = thread_cpu_seconds();
  IdleBackoff backoff;
  while (true) {
    bool busy = false;
    // Messages.
    int src = 0;
    std::string msg;
    while (comm_.poll(&src, &msg)) {
      busy = true;
      handle_message(src, msg);
    }
    // Rank 0's own results.
    for (Line& l : local.take_lines()) {
      busy = true;
      put(0, std::move(l));
    }
    handle_signals();
    // Requests (rank 0's own queue counts as one).
    if (!ranks_[0].ended && local.wants_more()) ranks_[0].requested = true;
    for (size_t r = 0; r < ranks_.size(); ++r) {
      if (ranks_[r].requested && !ranks_[r].done && serve(r)) {
        ranks_[r].requested = false;
        busy = true;
      }
    }
    (void)writer_->tick();
    if (progress_on_) {
      const std::string s =
          (meter_->set_ranks(n_alive(), ranks_.size()), meter_->update(n_done_, total_tokens()));
      if (!s.empty()) std::fputs(s.c_str(), stderr);
    }
    if (!ranks_[0].done && local.finished()) {
      for (Line& l : local.take_lines()) put(0, std::move(l));
      if (Status s = local.feed_status(); !s.is_ok() && s.code() != StatusCode::kCancelled)
        rank_fatal(0, s.to_string());
      ranks_[0].done = true;
    }
    if (n_alive() == 0) break;
    backoff.pause(busy);
  }
  comm_.drain_sends();
  return thread_cpu_seconds() - cpu0;
}

int Coordinator::report(double coord_cpu_s) {
  tasks::OutputWriter& writer = *writer_;
  Status flushed = writer.flush_durable();
  if (progress_on_)
    std::fputs(
        (meter_->set_ranks(0, ranks_.size()), meter_->finish(n_done_, total_tokens())).c_str(),
        stderr);
  std::string per_rank = "ranks:";
  for (size_t r = 0; r < ranks_.size(); ++r) {
    per_rank += " " + std::to_string(r) + "@" + ranks_[r].host + " " +
                std::to_string(ranks_[r].n_lines) + " docs" + (r + 1 < ranks_.size() ? "," : "");
  }
  const uint64_t n_run = n_done_ - n_done_at_open_;
  std::fprintf(stderr, "%s; rank 0 coordination %.1f us CPU per document\n", per_rank.c_str(),
               n_run > 0 ? 1e6 * coord_cpu_s / static_cast<double>(n_run) : 0.0);
  if (!fatal_.empty()) return fail(fatal_);
  if (!write_error_.is_ok())
    return fail("writing " + opt_.output_path + ": " + write_error_.to_string());
  if (!flushed.is_ok()) return fail("writing " + opt_.output_path + ": " + flushed.to_string());
  const uint64_t n_durable = writer.n_durable();
  if (signals_seen_ > 0 || n_durable < n_total_) {
    std::fprintf(stderr,
                 "stopped: %llu of %llu records are in %s; run the same command again to resume\n",
                 static_cast<unsigned long long>(n_durable),
                 static_cast<unsigned long long>(n_total_), opt_.output_path.c_str());
    const int sig = last_signal_.load();
    return sig > 0 ? 128 + sig : kExitFatal;
  }
  if (Status s = writer.mark_complete(n_total_); !s.is_ok()) return fail(s.to_string());
  std::fprintf(stderr, "done: %llu records (%llu this run, %llu failed) on %d ranks -> %s\n",
               static_cast<unsigned long long>(n_total_),
               static_cast<unsigned long long>(n_total_ - n_done_at_open_),
               static_cast<unsigned long long>(n_failed_), n_ranks_, opt_.output_path.c_str());
  return n_failed_ > 0 ? kExitSomeFailed : kExitOk;
}

int Coordinator::run() {
  ranks_[0].host = host_name();
  if (std::optional<int> code = open_job()) {
    stop_ranks(comm_, ranks_);
    return *code;
  }
  n_done_ = n_done_at_open_;

  tasks::ProgressMeterOptions popt;
  popt.tty = opt_.progress == "bar" || (opt_.progress == "auto" && isatty(STDERR_FILENO));
  popt.plain_interval_s = opt_.progress_interval_s;
  popt.n_total = n_total_;
  popt.n_done_at_start = n_done_at_open_;
  meter_.emplace(popt);
  progress_on_ = opt_.progress != "none";
  max_ahead_ = 2 * (ranks_[0].window + ranks_[0].chunk);

  const double coord_cpu_s = coordinate();
  return report(coord_cpu_s);
}

int run_rank0(const BatchRunOptions& opt, int n_ranks, Comm& comm, std::atomic<int>& n_signals,
              std::atomic<int>& last_signal) {
  return Coordinator(opt, n_ranks, comm, n_signals, last_signal).run();
}

}  // namespace

int run_batch_mpi(const BatchRunOptions& opt) {
  // Signals first: the watcher must exist before any other thread, MPI's own included.
  std::atomic<int> n_signals{0};
  std::atomic<int> last_signal{0};
  SignalWatcher watcher([&](int sig) {
    last_signal.store(sig, std::memory_order_relaxed);
    n_signals.fetch_add(1, std::memory_order_relaxed);
  });
  int provided = 0;
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    return fail("MPI_Init_thread failed");
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int code = kExitFatal;
  {
    Comm comm;
    if (provided < MPI_THREAD_FUNNELED) {
      code = fail("the MPI library does not provide MPI_THREAD_FUNNELED");
    } else if (rank == 0) {
      code = run_rank0(opt, size, comm, n_signals, last_signal);
    } else {
      code = run_rank(opt, rank, comm, n_signals, last_signal);
    }
    comm.drain_sends();
  }
  MPI_Finalize();
  return code;
}

}  // namespace llmt::cli
