// llmthreads run: a task (generate / classify / extract / summarize) over a JSONL file, one output
// line per input line in input order, crash-safe and resumable.
//
// Flow: the main thread reads records and adds them to a Job while a bounded window allows
// (documents and LLM threads in flight, and the output writer's reorder distance), so memory
// stays bounded for inputs of any size. The job's worker thread formats each document's result
// and hands the line to the OutputWriter, which writes lines in order and makes them durable in
// batches. SIGINT / SIGTERM are blocked in every thread and taken by a watcher thread with
// sigtimedwait (so no handler and no global state): the first stops reading input and lets the
// documents in flight finish for up to --grace seconds, a second one (or the end of the grace)
// cancels them; what is complete is flushed durably and the command exits with 128 + signal.
// Running the same command again resumes after the lines already in the output.
#include <CLI/CLI.hpp>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/commands.h"
#include "common/engine-options.h"
#include "llmthreads/engine.h"
#include "llmthreads/tasks.h"
#include "common/openai.h"
#include "common/signal-watcher.h"
#include "common/job-io.h"

namespace llmt::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Exit codes (also in --help).
constexpr int kExitOk = 0;
constexpr int kExitFatal = 1;
constexpr int kExitSomeFailed = 2;

int fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  return kExitFatal;
}

Result<std::string> read_text_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found(std::string("cannot read ") + what + " '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  // A file's final line break is not part of the prompt.
  if (s.ends_with("\r\n")) s.resize(s.size() - 2);
  else if (s.ends_with("\n")) s.pop_back();
  return s;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!s.empty()) out.push_back(cur);
  return out;
}

// Probabilities in output lines: 6 significant digits.
double round6(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return std::strtod(buf, nullptr);
}

// What the output line of a document needs besides the job's result.
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
  if (r.n != 1) return unsupported("only n = 1 is supported in batch input");
  if (r.logprobs >= 0) return unsupported("\"logprobs\" is not supported in batch input");
  if (chat) {
    doc->messages = std::move(r.messages);
  } else {
    doc->raw_prompt = std::move(r.prompt);
  }
  doc->max_tokens = r.max_tokens;
  doc->sampling = r.sampling;
  doc->stop = std::move(r.stop);
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
  json res = json::object();
  if (r.label >= 0) {
    res[r.type == TaskType::kClassify ? "label" : "answer"] = r.label_text;
    json probs = json::object();
    for (size_t i = 0; i < options.size() && i < r.probs.size(); ++i) {
      probs[options[i]] = round6(r.probs[i]);
    }
    res["probs"] = probs;
    if (!r.votes.empty()) {
      json votes = json::object();
      for (size_t i = 0; i < options.size() && i < r.votes.size(); ++i) votes[options[i]] = r.votes[i];
      res["votes"] = votes;
    }
  } else {
    res["text"] = r.text;
    res["finish_reason"] = finish_reason_name(r.finish_reason);
  }
  if (r.n_pieces > 1) res["n_pieces"] = r.n_pieces;
  if (r.n_reduce_rounds > 0) res["n_reduce_rounds"] = r.n_reduce_rounds;
  if (!r.pieces.empty()) {
    json pieces = json::array();
    for (const PieceDetail& p : r.pieces) {
      json jp = {{"index", p.index}, {"begin", p.begin}, {"end", p.end}};
      if (p.label >= 0) {
        jp["label"] = options[static_cast<size_t>(p.label)];
        json probs = json::array();
        for (double v : p.probs) probs.push_back(round6(v));
        jp["probs"] = probs;
      } else {
        jp["text"] = p.text;
        jp["finish_reason"] = finish_reason_name(p.finish_reason);
      }
      pieces.push_back(std::move(jp));
    }
    res["pieces"] = std::move(pieces);
  }
  o.result = std::move(res);
  return o;
}

}  // namespace

int cmd_run(int argc, char** argv) {
  CLI::App app{"Run a task over a JSONL file: one output line per input line, in input order; "
               "resumable (run the same command again after an interruption)",
               "run"};
  std::string model_arg, task_name = "generate", labels_arg, choices_arg, prompt_file,
                         prompt_text, reduce_prompt_file, system_prompt, chat_format, input_path,
                         output_path, split = "none", merge_name = "default", progress = "auto";
  std::vector<std::string> stop;
  bool chat = false, overwrite = false, details = false;
  int32_t priority = 0, max_tokens = 128, window = 0;
  double grace_s = 10.0, progress_interval_s = 5.0;
  SamplingParams sp = TaskSpec::greedy_sampling();
  EngineFlags ef;
  app.add_option("-m,--model", model_arg, "GGUF model (default: $LLMT_MODEL or stories260K.gguf)");
  app.add_option("--task", task_name, "generate, classify, extract (or qa), summarize (default generate)");
  app.add_option("--labels", labels_arg, "classify: comma-separated labels, e.g. positive,negative");
  app.add_option("--choices", choices_arg, "extract/qa: comma-separated allowed answers (scored)");
  app.add_option("--prompt-file", prompt_file, "prompt template file with {text} (default: {text})");
  app.add_option("--prompt", prompt_text, "prompt template text with {text}");
  app.add_option("--reduce-prompt-file", reduce_prompt_file,
                 "summarize/reduce: template combining texts (default: the prompt template)");
  app.add_flag("--chat", chat, "render the filled prompt as a user turn with the chat template");
  app.add_option("--system", system_prompt, "system message for --chat");
  app.add_option("--chat-template", chat_format, "chat format name (default: the model's)");
  app.add_option("-i,--input", input_path, "input JSONL ({\"id\",\"text\"} or OpenAI batch lines)")
      ->required();
  app.add_option("-o,--output", output_path, "output JSONL (resumed when it exists)")->required();
  app.add_option("--split", split, "none, sentence, paragraph, window:N[:M], hierarchical[:MAX]");
  app.add_option("--merge", merge_name, "vote, mean, weighted-mean, concat, reduce (default by task)");
  app.add_option("--priority", priority, "priority of the job's LLM threads (default 0)");
  app.add_option("-n,--max-tokens", max_tokens, "tokens generated per thread at most (default 128)")
      ->check(CLI::Range(1, 1 << 24));
  app.add_option("--stop", stop, "stop string (repeatable)");
  app.add_option("--temp", sp.temperature, "temperature; 0 = greedy (default 0)");
  app.add_option("--top-k", sp.top_k, "top-k, 0 = off (default 40)");
  app.add_option("--top-p", sp.top_p, "top-p, 1 = off (default 0.95)");
  app.add_option("--min-p", sp.min_p, "min-p, 0 = off (default 0.05)");
  app.add_option("-s,--seed", sp.seed, "RNG seed of every thread (default fixed)");
  app.add_flag("--details", details, "add per-piece results to each output line");
  app.add_flag("--overwrite", overwrite, "discard an existing output instead of resuming it");
  app.add_option("--window", window, "documents in flight at most (default 4 x --max-running)")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--grace", grace_s, "seconds to let running documents finish after a signal (default 10)")
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--progress", progress, "auto, bar, lines, none (default auto: bar on a TTY)");
  app.add_option("--progress-interval", progress_interval_s,
                 "seconds between progress lines without a TTY (default 5)")
      ->check(CLI::Range(0.1, 86400.0));
  add_engine_options(app, &ef);
  app.footer(
      "Exit status: 0 every record succeeded; 1 fatal error (nothing more was done); 2 some "
      "records got error lines; 128+N stopped by signal N (130 SIGINT, 143 SIGTERM) -- run the "
      "same command again to resume.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  // The task.
  TaskSpec spec;
  {
    Result<TaskType> t = parse_task_type(task_name);
    if (!t.is_ok()) return fail("--task: " + t.status().message());
    spec.type = *t;
    Result<MergeKind> m = parse_merge_kind(merge_name);
    if (!m.is_ok()) return fail("--merge: " + m.status().message());
    spec.merge = *m;
  }
  if (!prompt_file.empty() && !prompt_text.empty()) return fail("pass --prompt-file or --prompt, not both");
  if (!prompt_file.empty()) {
    Result<std::string> p = read_text_file(prompt_file, "prompt file");
    if (!p.is_ok()) return fail(p.status().message());
    spec.prompt_template = *p;
  } else if (!prompt_text.empty()) {
    spec.prompt_template = prompt_text;
  }
  if (!reduce_prompt_file.empty()) {
    Result<std::string> p = read_text_file(reduce_prompt_file, "reduce prompt file");
    if (!p.is_ok()) return fail(p.status().message());
    spec.reduce_template = *p;
  }
  spec.labels = split_list(labels_arg);
  spec.choices = split_list(choices_arg);
  if (spec.type == TaskType::kClassify && spec.labels.empty()) {
    return fail("--task classify needs --labels, e.g. --labels positive,negative,neutral");
  }
  spec.chat = chat;
  spec.system_prompt = system_prompt;
  spec.chat_format = chat_format;
  spec.split = split;
  spec.sampling = sp;
  spec.max_tokens = max_tokens;
  spec.stop = stop;
  spec.priority = priority;
  spec.piece_details = details;
  if (Status s = sp.validate(); !s.is_ok()) return fail(s.message());
  if (progress != "auto" && progress != "bar" && progress != "lines" && progress != "none") {
    return fail("--progress: expected auto, bar, lines or none, got '" + progress + "'");
  }

  EngineConfig ecfg;
  if (Status s = fill_engine_config(ef, &ecfg); !s.is_ok()) return fail(s.message());
  const std::string model_path = resolve_model_path(model_arg, "stories260K.gguf");
  if (model_path.empty()) return kExitFatal;

  // Input and resumable output.
  Result<std::unique_ptr<tasks::InputReader>> reader_r = tasks::InputReader::open(input_path);
  if (!reader_r.is_ok()) return fail(reader_r.status().to_string());
  tasks::InputReader& reader = **reader_r;
  if (reader.format() == tasks::InputFormat::kOpenAiBatch && spec.type != TaskType::kGenerate) {
    return fail("OpenAI batch input runs as generations: use --task generate (the default)");
  }
  Result<uint64_t> n_total_r = tasks::count_input_records(input_path);
  if (!n_total_r.is_ok()) return fail(n_total_r.status().to_string());
  const uint64_t n_total = *n_total_r;

  std::error_code fs_ec;
  json fp = {{"task", task_type_name(spec.type)},
             {"labels", spec.labels},
             {"choices", spec.choices},
             {"prompt", spec.prompt_template},
             {"reduce_prompt", spec.reduce_template},
             {"chat", chat},
             {"system", system_prompt},
             {"chat_template", chat_format},
             {"split", split},
             {"merge", merge_name},
             {"max_tokens", max_tokens},
             {"stop", stop},
             {"temp", sp.temperature},
             {"top_k", sp.top_k},
             {"top_p", sp.top_p},
             {"min_p", sp.min_p},
             {"seed", sp.seed},
             {"details", details},
             {"kv_type", ef.kv_type},
             {"ctx_size", ef.n_ctx},
             {"model", std::filesystem::path(model_path).filename().string()},
             {"model_bytes", static_cast<uint64_t>(std::filesystem::file_size(model_path, fs_ec))}};
  Result<tasks::JobIdentity> ident = tasks::make_job_identity(input_path, fp.dump());
  if (!ident.is_ok()) return fail(ident.status().to_string());
  tasks::OutputWriterOptions wopt;
  wopt.overwrite = overwrite;
  Result<std::unique_ptr<tasks::OutputWriter>> writer_r =
      tasks::OutputWriter::open(output_path, *ident, wopt);
  if (!writer_r.is_ok()) return fail(writer_r.status().message());
  tasks::OutputWriter& writer = **writer_r;
  const uint64_t n_done_at_open = writer.n_done_at_open();
  if (writer.complete_at_open()) {
    std::fprintf(stderr, "%s is already complete (%llu records); nothing to do (--overwrite to redo)\n",
                 output_path.c_str(), static_cast<unsigned long long>(n_done_at_open));
    return kExitOk;
  }
  if (n_done_at_open > 0) {
    std::fprintf(stderr, "resuming: %llu of %llu records already in %s\n",
                 static_cast<unsigned long long>(n_done_at_open),
                 static_cast<unsigned long long>(n_total), output_path.c_str());
    Result<uint64_t> skipped = reader.skip(n_done_at_open);
    if (!skipped.is_ok()) return fail(skipped.status().to_string());
  }

  // Shared state between the main thread, the job's worker (results) and the signal watcher.
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, RecordMeta> meta;  // records in flight
  uint64_t n_done = n_done_at_open;     // records whose line was handed to the writer
  uint64_t n_failed = 0;                // this run
  Status write_error;
  std::atomic<int> n_signals{0};
  std::atomic<int> last_signal{0};
  auto handle_result_line = [&](uint64_t index, std::string line, bool failed) {
    Status s = writer.submit_result(index, std::move(line));
    std::lock_guard<std::mutex> lk(mu);
    if (!s.is_ok() && write_error.is_ok()) write_error = s;
    ++n_done;
    if (failed) ++n_failed;
  };

  SignalWatcher watcher([&](int sig) {
    last_signal.store(sig, std::memory_order_relaxed);
    n_signals.fetch_add(1, std::memory_order_relaxed);
    cv.notify_all();
  });

  ecfg.model_path = model_path;
  Result<std::unique_ptr<Engine>> engine_r = Engine::create(ecfg);
  if (!engine_r.is_ok()) return fail(engine_r.status().to_string());
  Engine& engine = **engine_r;
  const std::string model_name = std::filesystem::path(model_path).stem().string();
  const std::vector<std::string> options =
      spec.type == TaskType::kClassify ? spec.labels : spec.choices;

  auto job_r = Job::create(engine, spec, [&](DocumentResult r) {
    RecordMeta m;
    {
      std::lock_guard<std::mutex> lk(mu);
      auto it = meta.find(r.index);
      if (it == meta.end()) return;
      m = std::move(it->second);
      meta.erase(it);
    }
    if (r.error_code == "cancelled") {
      // Not written: the record is redone when the job resumes.
      cv.notify_all();
      return;
    }
    tasks::RecordOutcome o = make_outcome(m, r, options);
    handle_result_line(r.index, tasks::format_output_line(m.record, o), !r.ok());
    cv.notify_all();
  });
  if (!job_r.is_ok()) return fail(job_r.status().message());
  Job& job = **job_r;

  const uint64_t max_docs = window > 0 ? static_cast<uint64_t>(window)
                                       : 4 * static_cast<uint64_t>(engine.config().max_running);
  const uint64_t max_threads = 4 * static_cast<uint64_t>(engine.config().max_running);

  tasks::ProgressMeterOptions popt;
  popt.tty = progress == "bar" || (progress == "auto" && isatty(STDERR_FILENO));
  popt.plain_interval_s = progress_interval_s;
  popt.n_total = n_total;
  popt.n_done_at_start = n_done_at_open;
  tasks::ProgressMeter meter(popt);
  const EngineStats stats0 = engine.stats();
  auto tokens_now = [&] {
    const EngineStats s = engine.stats();
    return static_cast<uint64_t>((s.prefill_tokens - stats0.prefill_tokens) +
                                 (s.generated_tokens - stats0.generated_tokens));
  };
  auto done_now = [&] {
    std::lock_guard<std::mutex> lk(mu);
    return n_done;
  };
  auto show_progress = [&] {
    if (progress == "none") return;
    const std::string s = meter.update(done_now(), tokens_now());
    if (!s.empty()) std::fputs(s.c_str(), stderr);
  };
  auto writer_failed = [&] {
    std::lock_guard<std::mutex> lk(mu);
    return !write_error.is_ok();
  };

  // Feed records while the window allows.
  bool eof = false;
  tasks::InputRecord rec;
  while (!eof && n_signals.load() == 0 && !writer_failed()) {
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait_for(lk, std::chrono::milliseconds(100), [&] {
        return n_signals.load() > 0 || !write_error.is_ok() ||
               (meta.size() < max_docs && job.stats().n_threads_live < max_threads &&
                reader.n_records_read() < writer.next_index() + max_docs);
      });
      const bool room = meta.size() < max_docs && job.stats().n_threads_live < max_threads &&
                        reader.n_records_read() < writer.next_index() + max_docs;
      if (!room || n_signals.load() > 0 || !write_error.is_ok()) {
        lk.unlock();
        (void)writer.tick();
        show_progress();
        continue;
      }
    }
    Result<bool> got = reader.next(&rec);
    if (!got.is_ok()) {
      std::lock_guard<std::mutex> lk(mu);
      write_error = got.status();
      break;
    }
    if (!*got) {
      eof = true;
      break;
    }
    if (!rec.ok()) {
      handle_result_line(rec.index, tasks::format_input_error_line(rec), true);
      continue;
    }
    Document doc;
    doc.index = rec.index;
    RecordMeta m;
    if (rec.format == tasks::InputFormat::kOpenAiBatch) {
      Status s = document_from_openai(rec, sp, &doc);
      if (!s.is_ok()) {
        tasks::RecordOutcome o;
        o.error = tasks::RecordError{
            s.code() == StatusCode::kUnsupported ? "unsupported" : "invalid_request", s.message()};
        o.status_code = 400;
        handle_result_line(rec.index, tasks::format_output_line(rec, o), true);
        continue;
      }
      m.model = rec.body.contains("model") && rec.body["model"].is_string()
                    ? rec.body["model"].get<std::string>()
                    : model_name;
      rec.body = json();
    } else {
      doc.text = std::move(rec.text);
      rec.text.clear();
    }
    m.record = rec;
    {
      std::lock_guard<std::mutex> lk(mu);
      meta.emplace(rec.index, std::move(m));
    }
    if (Status s = job.add(std::move(doc)); !s.is_ok()) {
      std::lock_guard<std::mutex> lk(mu);
      meta.erase(rec.index);
      break;
    }
    (void)writer.tick();
    show_progress();
  }

  // Drain: wait for the documents in flight; after a signal, for at most the grace period.
  bool cancelled = false;
  Clock::time_point signal_at{};
  int signals_seen = 0;
  while (!job.wait_idle_for(std::chrono::milliseconds(100))) {
    (void)writer.tick();
    show_progress();
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
    if (!cancelled && (writer_failed() || ns > 1 ||
                       (ns == 1 && Clock::now() - signal_at > std::chrono::duration<double>(grace_s)))) {
      job.cancel();
      cancelled = true;
    }
  }
  if (n_signals.load() > 0 && signals_seen == 0) {
    std::fprintf(stderr, "\n%s: stopping\n", last_signal.load() == SIGINT ? "interrupted" : "terminated");
  }

  Status flushed = writer.flush_durable();
  const uint64_t done = done_now();
  if (progress != "none") std::fputs(meter.finish(done, tokens_now()).c_str(), stderr);
  {
    std::lock_guard<std::mutex> lk(mu);
    if (!write_error.is_ok()) return fail("writing " + output_path + ": " + write_error.to_string());
  }
  if (!flushed.is_ok()) return fail("writing " + output_path + ": " + flushed.to_string());
  const uint64_t n_durable = writer.n_durable();
  if (n_signals.load() > 0 || n_durable < n_total) {
    std::fprintf(stderr,
                 "stopped: %llu of %llu records are in %s; run the same command again to resume\n",
                 static_cast<unsigned long long>(n_durable),
                 static_cast<unsigned long long>(n_total), output_path.c_str());
    const int sig = last_signal.load();
    return sig > 0 ? 128 + sig : kExitFatal;
  }
  if (Status s = writer.mark_complete(n_total); !s.is_ok()) return fail(s.to_string());
  std::fprintf(stderr, "done: %llu records (%llu this run, %llu failed) -> %s\n",
               static_cast<unsigned long long>(n_total),
               static_cast<unsigned long long>(n_total - n_done_at_open),
               static_cast<unsigned long long>(n_failed), output_path.c_str());
  return n_failed > 0 ? kExitSomeFailed : kExitOk;
}

}  // namespace llmt::cli
