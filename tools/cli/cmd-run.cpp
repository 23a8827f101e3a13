// llmthreads run: a task (generate / classify / extract / summarize) over a JSONL file, one output
// line per input line in input order, crash-safe and resumable. This file parses the arguments;
// batch-run.h is the driver (flow, signals, resume).
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

}  // namespace

int cmd_run(int argc, char** argv) {
  CLI::App app{
      "Run a task over a JSONL file: one output line per input line, in input order; "
      "resumable (run the same command again after an interruption)",
      "run"};
  std::string model_arg, task_name = "generate", labels_arg, choices_arg, prompt_file, prompt_text,
                         reduce_prompt_file, system_prompt, chat_format, input_path, output_path,
                         split = "none", merge_name = "default", progress = "auto";
  std::vector<std::string> stop;
  bool chat = false, overwrite = false, details = false;
  int32_t priority = 0, max_tokens = 128, window = 0;
  double grace_s = 10.0, progress_interval_s = 5.0;
  SamplingParams sp = TaskSpec::greedy_sampling();
  EngineFlags ef;
  app.add_option("-m,--model", model_arg, "GGUF model (default: $LLMT_MODEL or stories260K.gguf)");
  app.add_option("--task", task_name,
                 "generate, classify, extract (or qa), summarize (default generate)");
  app.add_option("--labels", labels_arg,
                 "classify: comma-separated labels, e.g. positive,negative");
  app.add_option("--choices", choices_arg, "extract/qa: comma-separated allowed answers (scored)");
  app.add_option("--prompt-file", prompt_file,
                 "prompt template file with {text} (default: {text})");
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
  app.add_option("--merge", merge_name,
                 "vote, mean, weighted-mean, concat, reduce (default by task)");
  app.add_option("--priority", priority, "priority of the job's LLM threads (default 0)");
  app.add_option("-n,--max-tokens", max_tokens,
                 "tokens generated per LLM thread at most (default 128)")
      ->check(CLI::Range(1, 1 << 24));
  app.add_option("--stop", stop, "stop string (repeatable)");
  std::string schema_path;
  app.add_option("--schema", schema_path,
                 "JSON Schema file: every output is JSON valid against it (generate/extract, "
                 "--split none)");
  app.add_option("--temp", sp.temperature, "temperature; 0 = greedy (default 0)");
  app.add_option("--top-k", sp.top_k, "top-k, 0 = off (default 40)");
  app.add_option("--top-p", sp.top_p, "top-p, 1 = off (default 0.95)");
  app.add_option("--min-p", sp.min_p, "min-p, 0 = off (default 0.05)");
  app.add_option("-s,--seed", sp.seed, "RNG seed of every LLM thread (default fixed)");
  app.add_flag("--details", details, "add per-piece results to each output line");
  app.add_flag("--overwrite", overwrite, "discard an existing output instead of resuming it");
  app.add_option("--window", window, "documents in flight at most (default 4 x --max-running)")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--grace", grace_s,
                 "seconds to let running documents finish after a signal (default 10)")
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
  if (!prompt_file.empty() && !prompt_text.empty())
    return fail("pass --prompt-file or --prompt, not both");
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
  std::string schema_text;
  if (!schema_path.empty()) {
    if (spec.type != TaskType::kGenerate && spec.type != TaskType::kExtract)
      return fail("--schema is for --task extract or generate");
    if (!spec.choices.empty()) return fail("--schema and --choices exclude each other");
    if (split != "none")
      return fail("--schema needs --split none (merged pieces would not be one JSON value)");
    Result<std::string> t = read_text_file(schema_path, "schema file");
    if (!t.is_ok()) return fail(t.status().message());
    schema_text = *t;
    Result<std::shared_ptr<const Grammar>> g = Grammar::from_json_schema(schema_text);
    if (!g.is_ok()) return fail("--schema " + schema_path + ": " + g.status().message());
    spec.grammar = *g;
  }
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
  ecfg.model.path = model_path;

  // What makes an existing output resumable by this run.
  std::error_code fs_ec;
  const json fp = {
      {"task", task_type_name(spec.type)},
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

  json fp_all = fp;
  if (!schema_text.empty()) fp_all["schema"] = schema_text;  // only then: older ones stay valid

  BatchRunOptions opt;
  opt.spec = std::move(spec);
  opt.engine = std::move(ecfg);
  opt.input_path = input_path;
  opt.output_path = output_path;
  opt.overwrite = overwrite;
  opt.fingerprint = fp_all.dump();
  opt.window = static_cast<uint64_t>(window);
  opt.grace_s = grace_s;
  opt.progress = progress;
  opt.progress_interval_s = progress_interval_s;
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
