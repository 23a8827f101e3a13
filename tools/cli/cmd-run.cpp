// llmthreads run: a task (generate / classify / extract / summarize / embed) over a JSONL file, one
// output line per input line in input order, crash-safe and resumable. This file parses the
// arguments; batch-run.h is the driver (flow, signals, resume).
#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "batch-run.h"
#include "common/commands.h"
#include "common/engine-options.h"
#include "llmthreads/engine.h"
#include "llmthreads/tasks.h"
#include "mpi-run.h"

namespace llmt::cli {

namespace {

using nlohmann::json;

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
  if (s.ends_with("\r\n"))
    s.resize(s.size() - 2);
  else if (s.ends_with("\n"))
    s.pop_back();
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

// The flags of `run` (defaults as --help states them).
struct RunFlags {
  std::string model_arg, task_name = "generate", labels_arg, choices_arg, prompt_file, prompt_text,
                         reduce_prompt_file, system_prompt, chat_format, input_path, output_path,
                         split = "none", merge_name = "default", progress = "auto";
  std::vector<std::string> stop;
  bool chat = false, overwrite = false, details = false;
  int32_t priority = 0, max_tokens = 128, window = 0, embd_normalize = 2;
  double grace_s = 10.0, progress_interval_s = 5.0;
  SamplingParams sp = TaskSpec::greedy_sampling();
  std::string schema_path;
  EngineFlags ef;
};

void add_run_options(CLI::App& app, RunFlags* f) {
  app.add_option("-m,--model", f->model_arg,
                 "GGUF model (default: $LLMT_MODEL or stories260K.gguf)");
  app.add_option("--task", f->task_name,
                 "generate, classify, extract (or qa), summarize, embed (default generate)");
  app.add_option("--labels", f->labels_arg,
                 "classify: comma-separated labels, e.g. positive,negative");
  app.add_option("--choices", f->choices_arg,
                 "extract/qa: comma-separated allowed answers (scored)");
  app.add_option("--prompt-file", f->prompt_file,
                 "prompt template file with {text} (default: {text})");
  app.add_option("--prompt", f->prompt_text, "prompt template text with {text}");
  app.add_option("--reduce-prompt-file", f->reduce_prompt_file,
                 "summarize/reduce: template combining texts (default: the prompt template)");
  app.add_flag("--chat", f->chat, "render the filled prompt as a user turn with the chat template");
  app.add_option("--system", f->system_prompt, "system message for --chat");
  app.add_option("--chat-template", f->chat_format, "chat format name (default: the model's)");
  app.add_option("-i,--input", f->input_path,
                 "input JSONL ({\"id\",\"text\"} or OpenAI batch lines)")
      ->required();
  app.add_option("-o,--output", f->output_path, "output JSONL (resumed when it exists)")
      ->required();
  app.add_option("--split", f->split,
                 "none, sentence, paragraph, window:N[:M], hierarchical[:MAX]");
  app.add_option("--merge", f->merge_name,
                 "vote, mean, weighted-mean, concat, reduce (default by task)");
  app.add_option("--priority", f->priority, "priority of the job's LLM threads (default 0)");
  app.add_option("-n,--max-tokens", f->max_tokens,
                 "tokens generated per LLM thread at most (default 128)")
      ->check(CLI::Range(1, 1 << 24));
  app.add_option("--stop", f->stop, "stop string (repeatable)");
  app.add_option("--schema", f->schema_path,
                 "JSON Schema file: every output is JSON valid against it (generate/extract, "
                 "--split none)");
  app.add_option("--temp", f->sp.temperature, "temperature; 0 = greedy (default 0)");
  app.add_option("--top-k", f->sp.top_k, "top-k, 0 = off (default 40)");
  app.add_option("--top-p", f->sp.top_p, "top-p, 1 = off (default 0.95)");
  app.add_option("--min-p", f->sp.min_p, "min-p, 0 = off (default 0.05)");
  app.add_option("-s,--seed", f->sp.seed, "RNG seed of every LLM thread (default fixed)");
  app.add_option(
         "--embd-normalize", f->embd_normalize,
         "embed: -1 none, 0 max-abs (int16), 1 taxicab, 2 Euclidean (default), p > 2 p-norm")
      ->check(CLI::Range(-1, 1000));
  app.add_flag("--details", f->details, "add per-piece results to each output line");
  app.add_flag("--overwrite", f->overwrite, "discard an existing output instead of resuming it");
  app.add_option("--window", f->window, "documents in flight at most (default 4 x --max-running)")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--grace", f->grace_s,
                 "seconds to let running documents finish after a signal (default 10)")
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--progress", f->progress, "auto, bar, lines, none (default auto: bar on a TTY)");
  app.add_option("--progress-interval", f->progress_interval_s,
                 "seconds between progress lines without a TTY (default 5)")
      ->check(CLI::Range(0.1, 86400.0));
  add_engine_options(app, &f->ef);
  app.footer(
      "Exit status: 0 every record succeeded; 1 fatal error (nothing more was done); 2 some "
      "records got error lines; 128+N stopped by signal N (130 SIGINT, 143 SIGTERM) -- run the "
      "same command again to resume.");
}

// The TaskSpec of the flags, and the schema's text when --schema is given. Returns kExitFatal
// after printing the error, 0 when the spec is good.
int task_spec_from_flags(const RunFlags& f, TaskSpec* out, std::string* schema_text) {
  // The task.
  TaskSpec& spec = *out;
  {
    Result<TaskType> t = parse_task_type(f.task_name);
    if (!t.is_ok()) return fail("--task: " + t.status().message());
    spec.type = *t;
    Result<MergeKind> m = parse_merge_kind(f.merge_name);
    if (!m.is_ok()) return fail("--merge: " + m.status().message());
    spec.merge = *m;
  }
  if (!f.prompt_file.empty() && !f.prompt_text.empty())
    return fail("pass --prompt-file or --prompt, not both");
  if (!f.prompt_file.empty()) {
    Result<std::string> p = read_text_file(f.prompt_file, "prompt file");
    if (!p.is_ok()) return fail(p.status().message());
    spec.prompt_template = *p;
  } else if (!f.prompt_text.empty()) {
    spec.prompt_template = f.prompt_text;
  }
  if (!f.reduce_prompt_file.empty()) {
    Result<std::string> p = read_text_file(f.reduce_prompt_file, "reduce prompt file");
    if (!p.is_ok()) return fail(p.status().message());
    spec.reduce_template = *p;
  }
  spec.labels = split_list(f.labels_arg);
  spec.choices = split_list(f.choices_arg);
  if (spec.type == TaskType::kClassify && spec.labels.empty()) {
    return fail(
        "--task classify needs --labels, e.g. --labels positive,negative,neutral (for a "
        "classifier model: its own labels, in output order)");
  }
  spec.chat = f.chat;
  spec.system_prompt = f.system_prompt;
  spec.chat_format = f.chat_format;
  spec.split = f.split;
  spec.sampling = f.sp;
  spec.max_tokens = f.max_tokens;
  spec.stop = f.stop;
  if (!f.schema_path.empty()) {
    if (spec.type != TaskType::kGenerate && spec.type != TaskType::kExtract)
      return fail("--schema is for --task extract or generate");
    if (!spec.choices.empty()) return fail("--schema and --choices exclude each other");
    if (f.split != "none")
      return fail("--schema needs --split none (merged pieces would not be one JSON value)");
    Result<std::string> t = read_text_file(f.schema_path, "schema file");
    if (!t.is_ok()) return fail(t.status().message());
    *schema_text = *t;
    Result<std::shared_ptr<const Grammar>> g = Grammar::from_json_schema(*schema_text);
    if (!g.is_ok()) return fail("--schema " + f.schema_path + ": " + g.status().message());
    spec.grammar = *g;
  }
  spec.priority = f.priority;
  spec.piece_details = f.details;
  spec.embd_normalize = f.embd_normalize;
  if (Status s = f.sp.validate(); !s.is_ok()) return fail(s.message());
  if (f.progress != "auto" && f.progress != "bar" && f.progress != "lines" &&
      f.progress != "none") {
    return fail("--progress: expected auto, bar, lines or none, got '" + f.progress + "'");
  }

  return 0;
}

// What makes an existing output resumable by this run.
json run_fingerprint(const RunFlags& f, const TaskSpec& spec, const std::string& model_path,
                     const std::string& schema_text) {
  std::error_code fs_ec;
  const json fp = {
      {"task", task_type_name(spec.type)},
      {"labels", spec.labels},
      {"choices", spec.choices},
      {"prompt", spec.prompt_template},
      {"reduce_prompt", spec.reduce_template},
      {"chat", f.chat},
      {"system", f.system_prompt},
      {"chat_template", f.chat_format},
      {"split", f.split},
      {"merge", f.merge_name},
      {"max_tokens", f.max_tokens},
      {"stop", f.stop},
      {"temp", f.sp.temperature},
      {"top_k", f.sp.top_k},
      {"top_p", f.sp.top_p},
      {"min_p", f.sp.min_p},
      {"seed", f.sp.seed},
      {"details", f.details},
      {"kv_type", f.ef.kv_type},
      {"ctx_size", f.ef.n_ctx},
      {"model", std::filesystem::path(model_path).filename().string()},
      {"model_bytes", static_cast<uint64_t>(std::filesystem::file_size(model_path, fs_ec))}};

  json fp_all = fp;
  if (!schema_text.empty()) fp_all["schema"] = schema_text;  // only then: older ones stay valid
  if (spec.type == TaskType::kEmbed) fp_all["embd_normalize"] = f.embd_normalize;  // likewise
  return fp_all;
}

}  // namespace

int cmd_run(int argc, char** argv) {
  CLI::App app{
      "Run a task over a JSONL file: one output line per input line, in input order; "
      "resumable (run the same command again after an interruption)",
      "run"};
  RunFlags f;
  add_run_options(app, &f);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  TaskSpec spec;
  std::string schema_text;
  if (int rc = task_spec_from_flags(f, &spec, &schema_text); rc != 0) return rc;

  EngineConfig ecfg;
  if (Status s = fill_engine_config(f.ef, &ecfg); !s.is_ok()) return fail(s.message());
  const std::string model_path = resolve_model_path(f.model_arg, "stories260K.gguf");
  if (model_path.empty()) return kExitFatal;
  ecfg.model.path = model_path;

  const json fp_all = run_fingerprint(f, spec, model_path, schema_text);

  BatchRunOptions opt;
  opt.spec = std::move(spec);
  opt.engine = std::move(ecfg);
  opt.input_path = f.input_path;
  opt.output_path = f.output_path;
  opt.overwrite = f.overwrite;
  opt.fingerprint = fp_all.dump();
  // Fingerprint keys whose option is not "--" + the key with '_' -> '-'.
  opt.param_options = {{"prompt", "--prompt/--prompt-file"},
                       {"reduce_prompt", "--reduce-prompt-file"},
                       {"model", "-m (model file)"},
                       {"model_bytes", "-m (model file size)"},
                       {"schema", "--schema (its content)"}};
  opt.window = static_cast<uint64_t>(f.window);
  opt.grace_s = f.grace_s;
  opt.progress = f.progress;
  opt.progress_interval_s = f.progress_interval_s;
  if (const int n_ranks = mpi_launch_size(); n_ranks != 0) {
#if LLMT_HAVE_MPI
    return run_batch_mpi(opt);
#else
    // Every rank would run the whole job on the same output.
    if (n_ranks != 1) {
      return fail(
          "started by an MPI launcher, but this llmthreads was built without MPI: rebuild with "
          "Open MPI installed (libopenmpi-dev; CMake -DLLMT_MPI=ON), or run it without "
          "mpirun/srun");
    }
#endif
  }
  return run_batch(opt);
}

}  // namespace llmt::cli
