// The batch driver behind `llmthreads run`: a Job over a JSONL file, one output line per input
// line in input order, crash-safe and resumable.
//
// Flow: a RecordSource turns input records into Documents (a malformed line, or an OpenAI line
// that cannot run, gets its error line at once); Job::feed pulls from it while the job's window
// allows (documents in flight, and the output writer's reorder distance), so memory stays bounded
// for inputs of any size, and the job keeps its LLM threads in the engine within its limit. The
// job's worker renders each result (common/task-render.h) and hands the line to the OutputWriter,
// which writes lines in order and makes them durable in batches. SIGINT / SIGTERM are taken by a
// SignalWatcher: the first stops reading input and lets the documents in flight finish for up to
// `grace_s`, a second one (or the end of the grace) cancels them; what is complete is flushed
// durably and the run ends with 128 + signal. Running the same command again resumes after the
// lines already in the output.
//
// Thread-safety: run_batch() is called once per process from its main thread, before any other
// thread exists (it installs the SignalWatcher).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/job-io.h"
#include "llmthreads/engine.h"
#include "llmthreads/tasks.h"

namespace llmt::cli {

// Exit codes of `run` (also in its --help).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFatal = 1;
inline constexpr int kExitSomeFailed = 2;

struct BatchRunOptions {
  TaskSpec spec;
  EngineConfig engine;  // model.path set
  std::string input_path, output_path;
  bool overwrite = false;  // discard an existing output instead of resuming it
  // The parameters that make an output resumable by this run (JSON text; see make_job_identity).
  std::string fingerprint;
  // The option behind each fingerprint key, for the message of a refused resume
  // (tasks::JobIdentity::param_options).
  std::map<std::string, std::string> param_options;
  uint64_t window = 0;            // documents in flight at most; 0 = 4 x max_running
  double grace_s = 10.0;          // after a first signal
  std::string progress = "auto";  // auto, bar, lines, none
  double progress_interval_s = 5.0;
};

// Runs the job; returns the process exit code (kExit*, or 128 + signal) after printing errors and
// the summary to stderr.
int run_batch(const BatchRunOptions& opt);

// Building blocks shared with the MPI driver (mpi-run.h). Thread-safe (pure).
//
// A record to run: fills *doc (its user_data holds what result_line() needs) and returns true;
// when the record cannot run (a malformed line, an OpenAI request that cannot be served) sets
// *error_line to its output line and returns false.
bool record_to_document(tasks::InputRecord rec, const SamplingParams& base,
                        const std::string& model_name, Document* doc, std::string* error_line);
// The output line of a document made by record_to_document; std::nullopt for a cancelled one
// (not written: a resumed run redoes it). *failed: the line is an error line.
std::optional<std::string> result_line(const DocumentResult& r,
                                       const std::vector<std::string>& options, bool* failed);
// The "model" of OpenAI output lines whose request names none: the model file's stem.
std::string default_model_name(const BatchRunOptions& opt);

}  // namespace llmt::cli
