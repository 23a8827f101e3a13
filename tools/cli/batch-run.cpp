#include "batch-run.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "common/job-io.h"
#include "common/openai.h"
#include "common/signal-watcher.h"
#include "common/task-render.h"

namespace llmt::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

int fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  return kExitFatal;
}

// What the output line of a document needs besides the job's result (Document::user_data).
struct RecordMeta {
  tasks::InputRecord record;  // text / body cleared
  std::string model;          // OpenAI: the body's "model" (or the model file's name)
};

// Builds a Document from an OpenAI batch request body; an error line reason otherwise.
Status document_from_openai(const tasks::InputRecord& rec, const SamplingParams& base,
                            Document* doc) {
  const bool chat = rec.endpoint == tasks::OpenAiEndpoint::kChatCompletions;
  openai::OpenAiRequest r;
  LLMT_RETURN_IF_ERROR(openai::parse_openai_request(
      rec.body, chat ? openai::Endpoint::kChatCompletions : openai::Endpoint::kCompletions, base,
      &r));
  // A batch line is one thread with one text result.
  if (r.n != 1) return unsupported("only n = 1 is supported in batch input", "n");
  if (r.logprobs >= 0) {
    return unsupported("\"logprobs\" is not supported in batch input", "logprobs");
  }
  if (chat) {
    doc->messages = std::move(r.messages);
  } else {
    doc->raw_prompt = std::move(r.prompt);
  }
  doc->max_tokens = r.max_tokens;
  doc->sampling = r.sampling;
  doc->stop = std::move(r.stop);
  if (r.grammar) doc->grammar = r.grammar;  // the line's response_format / grammar / json_schema
  return Status::ok();
}

// The outcome of a finished document, in the output format of its record.
tasks::RecordOutcome make_outcome(const RecordMeta& meta, const DocumentResult& r,
                                  const std::vector<std::string>& options) {
  tasks::RecordOutcome o;
  if (!r.ok()) {
    o.error = tasks::RecordError{r.error_code, r.error};
    o.status_code = r.error_code == "engine_error" ? 500 : 400;
    return o;
  }
  if (meta.record.format == tasks::InputFormat::kOpenAiBatch) {
    const bool chat = meta.record.endpoint == tasks::OpenAiEndpoint::kChatCompletions;
    o.result = openai::completion_body(
        chat ? openai::Endpoint::kChatCompletions : openai::Endpoint::kCompletions,
        (chat ? "chatcmpl-" : "cmpl-") + std::to_string(meta.record.index), meta.model,
        static_cast<int64_t>(std::time(nullptr)), r.text, r.finish_reason, r.usage);
    return o;
  }
  o.result = tasks::document_result_json(r, options);
  return o;
}

}  // namespace

bool record_to_document(tasks::InputRecord rec, const SamplingParams& base,
                        const std::string& model_name, Document* doc, std::string* error_line) {
  if (!rec.ok()) {
    *error_line = tasks::format_input_error_line(rec);
    return false;
  }
  *doc = Document();
  doc->index = rec.index;
  auto meta = std::make_shared<RecordMeta>();
  if (rec.format == tasks::InputFormat::kOpenAiBatch) {
    Status s = document_from_openai(rec, base, doc);
    if (!s.is_ok()) {
      tasks::RecordOutcome o;
      o.error = tasks::RecordError{
          s.code() == StatusCode::kUnsupported ? "unsupported" : "invalid_request", s.message()};
      o.status_code = 400;
      *error_line = tasks::format_output_line(rec, o);
      return false;
    }
    meta->model = rec.body.contains("model") && rec.body["model"].is_string()
                      ? rec.body["model"].get<std::string>()
                      : model_name;
    rec.body = json();
  } else {
    doc->text = std::move(rec.text);
    rec.text.clear();
  }
  meta->record = std::move(rec);
  doc->user_data = std::move(meta);
  return true;
}

std::optional<std::string> result_line(const DocumentResult& r,
                                       const std::vector<std::string>& options, bool* failed) {
  if (r.error_code == "cancelled") return std::nullopt;
  const auto* meta = static_cast<const RecordMeta*>(r.user_data.get());
  if (!meta) return std::nullopt;
  tasks::RecordOutcome o = make_outcome(*meta, r, options);
  *failed = !r.ok();
  return tasks::format_output_line(meta->record, o);
}

std::string default_model_name(const BatchRunOptions& opt) {
  return std::filesystem::path(opt.engine.model.path).stem().string();
}

namespace {

// The output side: lines to the writer, counts, the first write error. Thread-safe (the job's
// worker and the main thread).
class LineSink {
 public:
  LineSink(tasks::OutputWriter& writer, uint64_t n_done) : writer_(writer), n_done_(n_done) {}
  void put(uint64_t index, std::string line, bool failed) {
    Status s = writer_.submit_result(index, std::move(line));
    std::lock_guard<std::mutex> lk(mu_);
    if (!s.is_ok() && error_.is_ok()) error_ = s;
    ++n_done_;
    if (failed) ++n_failed_;
  }
  void set_error(Status s) {
    std::lock_guard<std::mutex> lk(mu_);
    if (error_.is_ok()) error_ = std::move(s);
  }
  Status error() const {
    std::lock_guard<std::mutex> lk(mu_);
    return error_;
  }
  uint64_t n_done() const {
    std::lock_guard<std::mutex> lk(mu_);
    return n_done_;
  }
  uint64_t n_failed() const {
    std::lock_guard<std::mutex> lk(mu_);
    return n_failed_;
  }

 private:
  tasks::OutputWriter& writer_;
  mutable std::mutex mu_;
  uint64_t n_done_;        // records whose line was handed to the writer
  uint64_t n_failed_ = 0;  // this run
  Status error_;
};

// Input records -> Documents. A record that cannot run gets its error line here (and is skipped).
class RecordSource : public DocumentSource {
 public:
  RecordSource(tasks::InputReader& reader, LineSink& sink, const SamplingParams& base,
               std::string model_name)
      : reader_(reader), sink_(sink), base_(base), model_name_(std::move(model_name)) {}

  Result<bool> next(Document* doc) override {
    tasks::InputRecord rec;
    while (true) {
      Result<bool> got = reader_.next(&rec);
      if (!got.is_ok() || !*got) return got;
      const uint64_t index = rec.index;
      std::string error_line;
      if (record_to_document(std::move(rec), base_, model_name_, doc, &error_line)) return true;
      sink_.put(index, std::move(error_line), true);
    }
  }

 private:
  tasks::InputReader& reader_;
  LineSink& sink_;
  SamplingParams base_;
  std::string model_name_;
};

// Progress on stderr (a bar on a TTY, else a line every interval, or nothing).
class Progress {
 public:
  Progress(const BatchRunOptions& opt, uint64_t n_total, uint64_t n_done_at_open, Engine& engine,
           const LineSink& sink)
      : on_(opt.progress != "none"),
        tty_(on_ && (opt.progress == "bar" || (opt.progress == "auto" && isatty(STDERR_FILENO)))),
        meter_([&] {
          tasks::ProgressMeterOptions p;
          p.tty = opt.progress == "bar" || (opt.progress == "auto" && isatty(STDERR_FILENO));
          p.plain_interval_s = opt.progress_interval_s;
          p.n_total = n_total;
          p.n_done_at_start = n_done_at_open;
          return p;
        }()),
        engine_(engine),
        sink_(sink),
        stats0_(engine.stats()) {}
  void show() {
    warn_swap_once();
    if (!on_) return;
    const std::string s = meter_.update(sink_.n_done(), tokens());
    if (!s.empty()) std::fputs(s.c_str(), stderr);
  }
  void finish() {
    warn_swap_once();
    if (on_) std::fputs(meter_.finish(sink_.n_done(), tokens()).c_str(), stderr);
  }

 private:
  uint64_t tokens() const {
    const EngineStats s = engine_.stats();
    return static_cast<uint64_t>((s.prefill_tokens - stats0_.prefill_tokens) +
                                 (s.generated_tokens - stats0_.generated_tokens));
  }
  // The first failed KV swap (e.g. --swap-dir full) is worth a warning: threads go on (their KV
  // is recomputed) but slower. Printed once per run; the count is in the engine's stats.
  void warn_swap_once() {
    if (swap_warned_) return;
    const EngineStats s = engine_.stats();
    if (s.swap_failures <= stats0_.swap_failures) return;
    swap_warned_ = true;
    std::fprintf(stderr,
                 "%swarning: KV swap failed (%s); preempted threads recompute their KV instead "
                 "(slower; free space in --swap-dir or raise --kv-budget)\n",
                 tty_ ? "\r\x1b[K" : "", s.swap_last_error.c_str());
  }
  bool on_;
  bool tty_ = false;
  bool swap_warned_ = false;
  tasks::ProgressMeter meter_;
  Engine& engine_;
  const LineSink& sink_;
  EngineStats stats0_;
};

// Waits for the documents in flight; after a signal, for at most the grace period (a second
// signal, or a write error, cancels them at once).
void drain(Job& job, tasks::OutputWriter& writer, Progress& progress, const LineSink& sink,
           const std::atomic<int>& n_signals, const std::atomic<int>& last_signal, double grace_s) {
  bool cancelled = false;
  Clock::time_point signal_at{};
  int signals_seen = 0;
  while (!job.wait_idle_for(std::chrono::milliseconds(100))) {
    (void)writer.tick();
    progress.show();
    const int ns = n_signals.load();
    if (ns > signals_seen) {
      if (signals_seen == 0) {
        signal_at = Clock::now();
        std::fprintf(stderr,
                     "\n%s: finishing %llu documents in flight (up to %.0f s; signal again to stop "
                     "now)\n",
                     last_signal.load() == SIGINT ? "interrupted" : "terminated",
                     static_cast<unsigned long long>(job.n_in_flight()), grace_s);
      }
      signals_seen = ns;
    }
    if (!cancelled &&
        (!sink.error().is_ok() || ns > 1 ||
         (ns == 1 && Clock::now() - signal_at > std::chrono::duration<double>(grace_s)))) {
      job.cancel();
      cancelled = true;
    }
  }
  if (n_signals.load() > 0 && signals_seen == 0) {
    std::fprintf(stderr, "\n%s: stopping\n",
                 last_signal.load() == SIGINT ? "interrupted" : "terminated");
  }
}

}  // namespace

int run_batch(const BatchRunOptions& opt) {
  const TaskSpec& spec = opt.spec;
  // Input and resumable output.
  Result<std::unique_ptr<tasks::InputReader>> reader_r = tasks::InputReader::open(opt.input_path);
  if (!reader_r.is_ok()) return fail(reader_r.status().to_string());
  tasks::InputReader& reader = **reader_r;
  if (reader.format() == tasks::InputFormat::kOpenAiBatch && spec.type != TaskType::kGenerate) {
    return fail("OpenAI batch input runs as generations: use --task generate (the default)");
  }
  Result<uint64_t> n_total_r = tasks::count_input_records(opt.input_path);
  if (!n_total_r.is_ok()) return fail(n_total_r.status().to_string());
  const uint64_t n_total = *n_total_r;
  Result<tasks::JobIdentity> ident = tasks::make_job_identity(opt.input_path, opt.fingerprint);
  if (!ident.is_ok()) return fail(ident.status().to_string());
  ident->param_options = opt.param_options;
  tasks::OutputWriterOptions wopt;
  wopt.overwrite = opt.overwrite;
  Result<std::unique_ptr<tasks::OutputWriter>> writer_r =
      tasks::OutputWriter::open(opt.output_path, *ident, wopt);
  if (!writer_r.is_ok()) return fail(writer_r.status().message());
  tasks::OutputWriter& writer = **writer_r;
  const uint64_t n_done_at_open = writer.n_done_at_open();
  if (writer.complete_at_open()) {
    std::fprintf(stderr,
                 "%s is already complete (%llu records); nothing to do (--overwrite to redo)\n",
                 opt.output_path.c_str(), static_cast<unsigned long long>(n_done_at_open));
    return kExitOk;
  }
  if (n_done_at_open > 0) {
    std::fprintf(stderr, "resuming: %llu of %llu records already in %s\n",
                 static_cast<unsigned long long>(n_done_at_open),
                 static_cast<unsigned long long>(n_total), opt.output_path.c_str());
    Result<uint64_t> skipped = reader.skip(n_done_at_open);
    if (!skipped.is_ok()) return fail(skipped.status().to_string());
  }

  // Signals first: the watcher must exist before any other thread.
  std::atomic<int> n_signals{0};
  std::atomic<int> last_signal{0};
  SignalWatcher watcher([&](int sig) {
    last_signal.store(sig, std::memory_order_relaxed);
    n_signals.fetch_add(1, std::memory_order_relaxed);
  });

  Result<std::unique_ptr<Engine>> engine_r = Engine::create(opt.engine);
  if (!engine_r.is_ok()) return fail(engine_r.status().to_string());
  Engine& engine = **engine_r;
  const std::vector<std::string>& options = tasks::result_options(spec);

  // The sink: each result rendered into its line; cancelled documents are not written (they are
  // redone when the job resumes).
  LineSink sink(writer, n_done_at_open);
  JobLimits limits;
  limits.max_documents = opt.window;
  auto job_r = Job::create(
      engine, spec,
      [&](DocumentResult r) {
        bool failed = false;
        std::optional<std::string> line = result_line(r, options, &failed);
        if (line) sink.put(r.index, std::move(*line), failed);
      },
      limits);
  if (!job_r.is_ok()) return fail(job_r.status().message());
  Job& job = **job_r;
  const uint64_t max_docs = job.limits().max_documents;

  Progress progress(opt, n_total, n_done_at_open, engine, sink);
  RecordSource source(reader, sink, spec.sampling, default_model_name(opt));
  FeedOptions feed;
  feed.stop = [&] { return n_signals.load() > 0 || !sink.error().is_ok(); };
  // The writer holds lines that arrive ahead of the next one to write: bound that distance too.
  feed.room = [&] { return reader.n_records_read() < writer.next_index() + max_docs; };
  feed.tick = [&] {
    (void)writer.tick();
    progress.show();
  };
  if (Status s = job.feed(source, feed); !s.is_ok()) sink.set_error(s);
  drain(job, writer, progress, sink, n_signals, last_signal, opt.grace_s);

  Status flushed = writer.flush_durable();
  progress.finish();
  // A write error (disk full, read-only, EIO) keeps the complete lines written so far: say how
  // to go on.
  auto write_failed = [&](const Status& e) {
    const bool named = e.message().rfind(opt.output_path, 0) == 0;  // starts with the path
    return fail((named ? "" : "writing " + opt.output_path + ": ") + e.message() +
                (e.code() == StatusCode::kIo
                     ? "; fix that (e.g. free some space) and run the same command again to resume"
                     : ""));
  };
  if (Status e = sink.error(); !e.is_ok()) return write_failed(e);
  if (!flushed.is_ok()) return write_failed(flushed);
  const uint64_t n_durable = writer.n_durable();
  if (n_signals.load() > 0 || n_durable < n_total) {
    std::fprintf(stderr,
                 "stopped: %llu of %llu records are in %s; run the same command again to resume\n",
                 static_cast<unsigned long long>(n_durable),
                 static_cast<unsigned long long>(n_total), opt.output_path.c_str());
    const int sig = last_signal.load();
    return sig > 0 ? 128 + sig : kExitFatal;
  }
  if (Status s = writer.mark_complete(n_total); !s.is_ok()) return fail(s.to_string());
  const uint64_t n_failed = sink.n_failed();
  std::fprintf(stderr, "done: %llu records (%llu this run, %llu failed) -> %s\n",
               static_cast<unsigned long long>(n_total),
               static_cast<unsigned long long>(n_total - n_done_at_open),
               static_cast<unsigned long long>(n_failed), opt.output_path.c_str());
  return n_failed > 0 ? kExitSomeFailed : kExitOk;
}

}  // namespace llmt::cli
