// Jobs: tasks over many documents, run as LLM threads on one Engine.
//
// A Job applies one TaskSpec (generate / classify / extract / summarize) to any number of
// documents. Each document is cut into pieces by the spec's splitter; every piece becomes one or
// more LLM threads on the engine; when all of a document's threads have finished, their results
// are merged (concatenation, majority vote, mean of class probabilities, or an LLM reduce) and
// one DocumentResult per document is delivered to the job's callback.
//
//   generate   one generation thread per piece: the prompt template with {text} = the piece.
//              Merge: concat (default, pieces in document order) or reduce.
//   classify   one *scoring* thread per (piece, label): log P(label | prompt) is computed from
//              the logits, nothing is sampled or parsed. Per piece, the label probabilities are
//              the softmax over labels of the summed label-token log-probabilities. Merge over
//              pieces: mean (default), weighted-mean (by piece bytes) or vote.
//              On a sequence-classifier model (an encoder with a classification head: bert,
//              pooling_type rank) instead one embedding thread per piece runs the model's own
//              head: its raw scores are the labels' logits (in logprobs), the probabilities their
//              softmax. The labels name its outputs in order: exactly the file's
//              classifier.output_labels when it has them, else n_cls_out names of your own.
//   extract    with `choices`: scored like classify and the best choice is the answer (no
//              free-text parsing); without: generation with the spec's stop strings, as
//              generate. (`qa` is the same task under another name.)
//   summarize  map: one generation per piece; reduce: the piece summaries are grouped (in order,
//              up to what fits the context) and each group is summarized again by further
//              threads with the reduce template, round after round, until one text is left.
//              Merge concat instead returns the map summaries joined.
//   embed      one embedding thread per piece (ThreadRequest::embed: the prompt template filled
//              with the piece, nothing generated); DocumentResult::embedding is the pieces'
//              vectors averaged with their token counts as weights (merge default / mean; with
//              --split none the one piece's vector), then scaled per TaskSpec::embd_normalize.
//              A piece longer than the model takes fails the document with context_overflow
//              (split long documents, e.g. window:N, to embed them in pieces).
//
// Prefix sharing: the engine shares the KV of identical prompt prefixes, so every piece of every
// document shares the template's text before {text}, and all label threads of one piece share
// the whole prompt. Put {text} late in the template (the instruction first) to benefit.
//
// Flow control: the Job keeps at most JobLimits::max_threads of its LLM threads in the engine
// (more wait in the job, in submission order, and go in as earlier ones finish), so the engine's
// queue stays within its limit whatever the input size; Job::feed() / feed_async() pull
// documents from a DocumentSource while at most JobLimits::max_documents are in flight, so memory
// stays bounded too. Results leave through the one result callback (the sink).
//
// Thread-safety: Job::add(), cancel(), stats(), n_in_flight(), wait_idle*() may be called from any
// thread concurrently; feed() / feed_async() by one caller at a time. The result callback runs on
// the job's own worker thread (never on the engine loop thread, never concurrently with itself), so
// it may block (e.g. write files); it must not call the job's destructor. The Engine must outlive
// every Job on it. The destructor cancels what is still running, waits for the worker, and calls no
// callback after it returns; it must not run concurrently with other calls on the same Job.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "llmthreads/chat-template.h"
#include "llmthreads/engine.h"
#include "llmthreads/sampling.h"
#include "llmthreads/status.h"

namespace llmt {

enum class TaskType { kGenerate, kClassify, kExtract, kSummarize, kEmbed };
// "generate", "classify", "extract", "summarize", "embed".
const char* task_type_name(TaskType t);
// Parses those names and "qa" (= extract); kInvalidArgument otherwise.
Result<TaskType> parse_task_type(const std::string& name);

enum class MergeKind {
  kDefault,       // by task: classify mean, extract-with-choices mean, generate/extract concat,
                  // summarize reduce
  kConcat,        // texts joined in piece order with TaskSpec::separator
  kVote,          // majority vote of the pieces' labels (classify / choices)
  kMean,          // mean of the pieces' label probabilities (classify / choices)
  kWeightedMean,  // mean weighted by piece length in bytes (classify / choices)
  kReduce,        // LLM reduce of the piece texts (generate / extract / summarize)
};
// "default", "concat", "vote", "mean", "weighted-mean", "reduce".
const char* merge_kind_name(MergeKind m);
Result<MergeKind> parse_merge_kind(const std::string& name);

// Scales v in place as llama.cpp's common_embd_normalize(mode): -1 unchanged; 0 max |x| ->
// 32760; 1 sum |x| -> 1; 2 Euclidean length -> 1; p > 2 p-norm -> 1. A zero vector stays zero.
// Pure; any thread.
void normalize_embedding(std::vector<float>* v, int32_t mode);

struct TaskSpec {
  TaskType type = TaskType::kGenerate;
  // The prompt; every "{text}" is replaced by the piece's text. Must contain "{text}".
  std::string prompt_template = "{text}";
  // Summarize / reduce: the template for combining texts ({text} = texts joined by a blank
  // line); empty = prompt_template.
  std::string reduce_template;

  // Chat formatting: the filled template becomes one user message (after `system_prompt` when
  // not empty), rendered with the model's chat template or the format named by chat_format
  // (chat-template.h names), plus the assistant-turn opening.
  bool chat = false;
  std::string system_prompt;
  std::string chat_format;  // "" = detect from the model (needed for Document::messages too)

  std::vector<std::string> labels;   // classify: at least 2, distinct, non-empty
  std::vector<std::string> choices;  // extract: when not empty (>= 2), scored like labels
  // Text put between the prompt and a label (or choice) when scoring it. std::nullopt: " " when
  // the prompt text does not end in whitespace, else "".
  std::optional<std::string> label_separator;

  // Splitter: "none", "sentence", "paragraph", "window:N[:M]", "hierarchical[:MAX]" (the leaves
  // are the pieces).
  std::string split = "none";
  MergeKind merge = MergeKind::kDefault;
  std::string separator = "\n";  // kConcat

  // Generation threads (generate / extract without choices / summarize).
  SamplingParams sampling = greedy_sampling();
  int32_t max_tokens = 128;  // lowered per thread to what fits the context
  std::vector<std::string> stop;
  // Constrained output of every generation thread (e.g. a compiled JSON Schema for extract);
  // null = none. Shared and immutable (see ThreadRequest::grammar).
  std::shared_ptr<const Grammar> grammar;

  // Embed: how the merged vector is scaled, as llama.cpp's embd_normalize: -1 none, 0 max-abs
  // to the int16 range, 1 taxicab, 2 Euclidean (default: unit length), p > 2 the p-norm.
  int32_t embd_normalize = 2;

  int32_t priority = 0;  // every thread of the job
  uint64_t tenant = 0;
  bool piece_details = false;  // DocumentResult::pieces filled

  static SamplingParams greedy_sampling() {
    SamplingParams p;
    p.temperature = 0.0f;
    return p;
  }
};

// One input document.
struct Document {
  uint64_t index = 0;  // the caller's key, returned in DocumentResult::index
  std::string text;    // split and put into the template

  // Verbatim requests (OpenAI batch lines), generate tasks only. When `messages` is not empty,
  // the prompt is those messages rendered with the chat format (TaskSpec::chat_format or the
  // model's) plus the assistant-turn opening; else when `raw_prompt` is set, that text is the
  // whole prompt. Neither the splitter nor the template applies.
  std::vector<ChatMessage> messages;
  std::optional<std::string> raw_prompt;
  // Per-document overrides of the spec's generation settings.
  std::optional<int32_t> max_tokens;
  std::optional<SamplingParams> sampling;
  std::optional<std::vector<std::string>> stop;
  std::optional<std::shared_ptr<const Grammar>> grammar;  // (a null grammar = unconstrained)
  // The caller's, handed back unchanged in DocumentResult::user_data (e.g. what rendering the
  // result needs); the job never reads it.
  std::shared_ptr<const void> user_data;
};

struct PieceDetail {
  int32_t index = 0;          // piece index (document order)
  size_t begin = 0, end = 0;  // byte span in the document's text
  std::string text;           // generation: the piece's output
  FinishReason finish_reason = FinishReason::kStop;
  int32_t label = -1;            // classify / choices: argmax of probs
  std::vector<double> probs;     // classify / choices: per label, sums to 1
  std::vector<double> logprobs;  // classify / choices: summed log-prob of each label's tokens
};

struct DocumentResult {
  uint64_t index = 0;
  // Empty when the document succeeded; else a short code ("context_overflow", "empty_text",
  // "invalid_request", "unsupported", "out_of_memory", "cancelled", "deadline", "engine_error")
  // and a message.
  std::string error_code;
  std::string error;
  bool ok() const { return error_code.empty(); }

  TaskType type = TaskType::kGenerate;
  // Generation tasks: the merged text. finish_reason: kLength when any generation that
  // contributed to it stopped at its token limit, else kStop.
  std::string text;
  FinishReason finish_reason = FinishReason::kStop;
  // Classify / choices: the winning label index and name, per-label probabilities (sum 1) and
  // per-label vote counts (vote merge only; empty otherwise).
  int32_t label = -1;
  std::string label_text;
  std::vector<double> probs;
  std::vector<int32_t> votes;
  // Embed: the document's vector [n_embd] (see TaskType::kEmbed).
  std::vector<float> embedding;

  int32_t n_pieces = 0;
  int32_t n_reduce_rounds = 0;
  int32_t n_threads = 0;                  // LLM threads run for this document
  Usage usage;                            // summed over its threads
  std::vector<PieceDetail> pieces;        // TaskSpec::piece_details
  std::shared_ptr<const void> user_data;  // Document::user_data
};

struct JobStats {
  uint64_t n_added = 0;      // documents accepted by add()
  uint64_t n_delivered = 0;  // results delivered (callback returned)
  uint64_t n_failed = 0;     // of those, with an error
  uint64_t n_threads_submitted = 0;
  uint64_t n_threads_live = 0;     // submitted to the engine, finish not yet taken by the job
  uint64_t n_threads_waiting = 0;  // held by the job until its threads in the engine drop below
                                   // JobLimits::max_threads
  uint64_t prompt_tokens = 0, completion_tokens = 0;
};

// The bounded window of a Job.
struct JobLimits {
  // The job's LLM threads in the engine at once; 0 = the engine's max_queue when it has one, else
  // 4 x its max_running.
  uint64_t max_threads = 0;
  // Documents in flight (added, result not yet delivered) while feeding; 0 = 4 x the engine's
  // max_running.
  uint64_t max_documents = 0;
};

// Where a fed job's documents come from. Called on the feeding thread only.
class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  // Fills *doc with the next document and returns true; false at the end of the input. An error
  // ends the feed (feed() returns it).
  virtual Result<bool> next(Document* doc) = 0;
};

struct FeedOptions {
  // Polled before each document and about every 100 ms while the window is full: true ends the
  // feed (e.g. on a signal). May be empty.
  std::function<bool()> stop;
  // A further condition for taking the next document (e.g. an output writer's reorder
  // distance), polled like stop. May be empty.
  std::function<bool()> room;
  // Called after each document and about every 100 ms while waiting (e.g. flushing output,
  // progress). May be empty.
  std::function<void()> tick;
};

class Job {
 public:
  using ResultCallback = std::function<void(DocumentResult)>;

  // Validates the spec against the engine's model (template has {text}, labels, split spec,
  // merge kind fits the task, chat format resolvable when chat is set, sampling params) and
  // starts the worker thread. kInvalidArgument / kUnsupported naming the field.
  static Result<std::unique_ptr<Job>> create(Engine& engine, TaskSpec spec,
                                             ResultCallback on_result, JobLimits limits = {});
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  // Splits the document and submits its threads. Every accepted document gets exactly one
  // result, possibly an error one (a piece too long for the context, an empty text, ...).
  // Returns kInvalidArgument (and delivers nothing) only when the job was cancelled or the
  // document uses messages/raw_prompt in a task other than generate.
  Status add(Document doc);

  // Cancels every running thread of the job; documents not yet finished are delivered with
  // error_code "cancelled"; later add() calls are refused. Idempotent.
  void cancel();

  // Adds documents from `source` on the calling thread while fewer than max_documents are in
  // flight (and opt.room() allows), until the source ends (Status::ok()), opt.stop() says so
  // (ok), the job is cancelled (kCancelled) or the source or add() fails (that error). Does not
  // wait for the documents' results (wait_idle*()). Every document added gets one result; a
  // cancel that lands between the source's next() and add() leaves that one document unadded
  // (no result): it is the caller's still, e.g. re-read by a resumed batch run.
  Status feed(DocumentSource& source, const FeedOptions& opt = {});
  // feed() on a thread of the job's own; on_done (may be empty) gets its Status on that thread.
  // `source` must outlive the job. kInvalidArgument when a feed_async is already running.
  Status feed_async(DocumentSource& source, FeedOptions opt = {},
                    std::function<void(Status)> on_done = {});
  const JobLimits& limits() const;  // with the defaults resolved

  JobStats stats() const;
  uint64_t n_in_flight() const;  // added - delivered
  // Blocks until every added document was delivered (its callback returned).
  void wait_idle() const;
  // Same with a limit; false when documents are still in flight after `timeout`.
  bool wait_idle_for(std::chrono::milliseconds timeout) const;

  struct Core;  // implementation detail

 private:
  explicit Job(std::shared_ptr<Core> core);
  std::shared_ptr<Core> core_;
};

}  // namespace llmt
