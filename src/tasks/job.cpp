// Job: documents -> pieces -> LLM threads -> merged per-document results (llmthreads/tasks.h).
//
// Structure. Job::add() (any caller thread) splits a document, builds and tokenizes the prompts
// and submits the threads while holding the job's state mutex `mu`. Each thread's on_event
// callback runs on the engine loop thread and only appends the finished result to the event
// queue (its own small mutex `ev_mu`; the loop thread never waits for `mu`). The job's worker
// thread takes events, updates the document under `mu`, submits the next reduce round when one
// is due, merges when a document is complete, and calls the user's callback with `mu` released.
//
// Flow control. `n_in_engine` (under `mu`) counts the job's threads submitted to the engine whose
// finish the worker has not processed yet; a thread submitted while it is at max_threads (or
// while others wait) waits in `waiting` and the worker submits it when one finishes. A waiting
// thread counts in its document's n_pending like a running one. feed() adds documents while
// fewer than max_documents are in flight, waking on deliveries (`idle_cv`).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "llmthreads/tasks.h"
#include "llmthreads/tokenizer.h"
#include "tasks/merge.h"
#include "tasks/split.h"

namespace llmt {

namespace {

constexpr std::string_view kPlaceholder = "{text}";
constexpr const char* kReduceJoin = "\n\n";
constexpr int32_t kMaxReduceRounds = 64;

std::string fill_template(const std::string& tmpl, std::string_view text) {
  std::string out;
  out.reserve(tmpl.size() + text.size());
  size_t pos = 0;
  while (true) {
    const size_t at = tmpl.find(kPlaceholder, pos);
    if (at == std::string::npos) break;
    out.append(tmpl, pos, at - pos);
    out.append(text);
    pos = at + kPlaceholder.size();
  }
  out.append(tmpl, pos, std::string::npos);
  return out;
}

bool ends_in_space(std::string_view s) {
  if (s.empty()) return true;
  const char c = s.back();
  return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

// Softmax of summed log-probs over the labels.
std::vector<double> softmax(const std::vector<double>& logprobs) {
  double mx = -INFINITY;
  for (double v : logprobs) mx = std::max(mx, v);
  std::vector<double> p(logprobs.size());
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] = std::isfinite(mx) ? std::exp(logprobs[i] - mx) : 1.0;
    sum += p[i];
  }
  for (double& v : p) v /= sum;
  return p;
}

int32_t argmax_d(const std::vector<double>& v) {
  int32_t best = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  return v.empty() ? -1 : best;
}

// The document error code of a refused Engine::submit (see its contract): beyond n_ctx
// (kInvalidArgument naming "prompt" / "max_tokens") is context_overflow; more KV blocks than the
// pool has (kCannotFit) or a full queue (kOverCapacity) is out_of_memory.
const char* code_for_submit_error(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOverCapacity:
    case StatusCode::kCannotFit:
      return "out_of_memory";
    case StatusCode::kInvalidArgument:
      return s.field() == "prompt" || s.field() == "max_tokens" ? "context_overflow"
                                                                : "invalid_request";
    default:
      return "invalid_request";
  }
}

struct Event {
  uint64_t seq = 0;
  int32_t round = 0;
  int32_t unit = 0;
  std::shared_ptr<const ThreadResult> result;  // null: `ready` holds a finished document
  std::optional<DocumentResult> ready;
};

// A thread held back by the job's window: its document and its request.
struct WaitingThread {
  uint64_t seq = 0;
  ThreadRequest request;
};

struct DocState {
  uint64_t seq = 0;
  std::string text;
  std::vector<tasks::Piece> pieces;  // the leaves, re-indexed 0..n-1
  bool verbatim = false;
  int32_t max_tokens = 0;
  SamplingParams sampling;
  std::vector<std::string> stop;
  std::shared_ptr<const Grammar> grammar;

  int32_t round = 0;      // 0: map; r >= 1: reduce round r
  int32_t n_pending = 0;  // threads of the current round not finished
  std::unordered_set<ThreadId> live;
  std::vector<std::vector<double>> logprobs;  // scoring: [piece][label]
  std::vector<std::string> texts;             // generation: outputs of the current round
  std::vector<FinishReason> finish;           // map round: per piece
  std::vector<std::vector<float>> vectors;    // embed: per piece
  std::vector<int32_t> piece_tokens;          // embed: prompt tokens per piece
  bool any_length = false;
  DocumentResult result;
};

}  // namespace

struct Job::Core : std::enable_shared_from_this<Job::Core> {
  Engine* engine = nullptr;
  TaskSpec spec;
  ResultCallback on_result;
  const Tokenizer* tok = nullptr;
  int32_t n_ctx = 0;
  std::optional<ChatFormat> chat_fmt;
  Status chat_fmt_error;
  tasks::SplitSpec split;
  MergeKind merge = MergeKind::kDefault;
  bool scoring = false;    // classify, extract with choices
  bool embedding = false;  // embed
  // classify on a model with a classification head (encoder, pooling rank): one embedding
  // thread per piece whose scores are the labels' logits (embedding and scoring both set).
  bool head = false;
  std::vector<std::string> options;  // labels or choices
  std::string reduce_template;

  // Event queue (engine loop thread -> worker).
  std::mutex ev_mu;
  std::condition_variable ev_cv;
  std::vector<Event> events;
  bool stop = false;

  // Document state (add() callers and the worker).
  std::mutex mu;
  std::map<uint64_t, DocState> docs;
  uint64_t next_seq = 0;
  bool cancelled = false;
  std::atomic<bool> cancel_requested{false};  // `cancelled`, readable without `mu` (feed)

  // Flow control (see the top of the file); under `mu` but the limits.
  JobLimits limits;
  std::atomic<uint64_t> n_in_engine{0};  // written under `mu`; stats() reads it
  std::deque<WaitingThread> waiting;
  std::atomic<uint64_t> n_waiting{0};  // waiting.size(), for stats()
  std::thread feeder;                  // feed_async

  // Counters.
  mutable std::mutex idle_mu;
  mutable std::condition_variable idle_cv;
  uint64_t n_added = 0, n_delivered = 0, n_failed = 0;
  std::atomic<uint64_t> n_threads_submitted{0}, n_threads_live{0};
  std::atomic<uint64_t> prompt_tokens{0}, completion_tokens{0};

  std::thread worker;

  void push_event(Event ev) {
    {
      std::lock_guard<std::mutex> lk(ev_mu);
      events.push_back(std::move(ev));
    }
    ev_cv.notify_one();
  }

  // The final prompt text for a filled template (chat rendering when asked).
  std::string render(const std::string& filled) const {
    if (!spec.chat) return filled;
    std::vector<ChatMessage> msgs;
    if (!spec.system_prompt.empty()) msgs.push_back({"system", spec.system_prompt});
    msgs.push_back({"user", filled});
    return render_chat(*chat_fmt, msgs, /*add_generation_prompt=*/true);
  }
  std::vector<int32_t> encode_prompt(const std::string& text, bool parse_special) const {
    return tok->encode(text, {.add_special = true, .parse_special = parse_special});
  }

  // Marks the document failed (first error wins) and cancels its other threads.
  void fail(DocState& d, std::string code, std::string message) {
    if (d.result.ok()) {
      d.result.error_code = std::move(code);
      d.result.error = std::move(message);
    }
    for (ThreadId id : d.live) engine->cancel(id);
  }

  // Submits one thread of document d. On error the document is failed.
  bool submit(DocState& d, int32_t unit, std::vector<int32_t> prompt,
              std::vector<int32_t> score_tokens, int32_t max_tokens) {
    if (cancelled) {
      fail(d, "cancelled", "the job was cancelled");
      return false;
    }
    ThreadRequest r;
    r.prompt_tokens = std::move(prompt);
    r.score_tokens = std::move(score_tokens);
    r.embed = embedding;
    r.max_tokens = std::max<int32_t>(1, max_tokens);
    r.sampling = d.sampling;
    r.stop = d.stop;
    if (r.score_tokens.empty()) r.grammar = d.grammar;
    r.priority = spec.priority;
    r.tenant = spec.tenant;
    std::weak_ptr<Core> weak = weak_from_this();
    const uint64_t seq = d.seq;
    const int32_t round = d.round;
    r.on_event = [weak, seq, round, unit](const ThreadEvent& ev) {
      if (ev.kind != ThreadEvent::Kind::kFinished) return;
      if (auto core = weak.lock()) {
        Event e;
        e.seq = seq;
        e.round = round;
        e.unit = unit;
        e.result = ev.result;
        core->push_event(std::move(e));
        // After the push: once the destructor sees no live thread, every event is queued.
        core->n_threads_live.fetch_sub(1, std::memory_order_acq_rel);
      }
    };
    ++d.n_pending;
    if (n_in_engine >= limits.max_threads || !waiting.empty()) {
      waiting.push_back(WaitingThread{d.seq, std::move(r)});
      n_waiting.store(waiting.size(), std::memory_order_relaxed);
      return true;
    }
    return submit_to_engine(d, std::move(r));
  }

  // Submits a thread counted in d.n_pending to the engine; on error the document is failed and
  // the thread no longer pending.
  bool submit_to_engine(DocState& d, ThreadRequest r) {
    n_threads_live.fetch_add(1, std::memory_order_relaxed);
    Result<ThreadHandle> h = engine->submit(std::move(r));
    if (!h.is_ok()) {
      n_threads_live.fetch_sub(1, std::memory_order_relaxed);
      --d.n_pending;
      fail(d, code_for_submit_error(h.status()), h.status().message());
      return false;
    }
    ++n_in_engine;
    n_threads_submitted.fetch_add(1, std::memory_order_relaxed);
    d.live.insert(h->id());
    return true;
  }

  // Worker, under `mu`: submits waiting threads while the window has room (all of them are
  // dropped, failing their documents, once the job is cancelled); documents that thereby
  // complete go to `out`.
  void drain_waiting(std::vector<DocumentResult>* out) {
    while (!waiting.empty() && (cancelled || n_in_engine < limits.max_threads)) {
      WaitingThread w = std::move(waiting.front());
      waiting.pop_front();
      auto it = docs.find(w.seq);
      if (it == docs.end()) continue;
      DocState& d = it->second;
      if (cancelled) fail(d, "cancelled", "the job was cancelled");
      if (d.result.ok()) {
        submit_to_engine(d, std::move(w.request));
      } else {
        --d.n_pending;  // its document failed meanwhile: not run
      }
      if (d.n_pending == 0 && advance(d)) {
        out->push_back(std::move(d.result));
        docs.erase(it);
      }
    }
    n_waiting.store(waiting.size(), std::memory_order_relaxed);
  }

  // Generation of one prompt text; checks the context first.
  bool submit_generation(DocState& d, int32_t unit, const std::vector<int32_t>& prompt) {
    const int64_t room = static_cast<int64_t>(n_ctx) - static_cast<int64_t>(prompt.size());
    if (room < 1) {
      fail(d, "context_overflow",
           "prompt of " + std::to_string(prompt.size()) + " tokens does not fit the context of " +
               std::to_string(n_ctx) + " positions (split the text into smaller pieces)");
      return false;
    }
    const int32_t max_tokens = static_cast<int32_t>(std::min<int64_t>(d.max_tokens, room));
    return submit(d, unit, prompt, {}, max_tokens);
  }

  // The threads of the map round of a (non-verbatim) document.
  void submit_map(DocState& d) {
    const int32_t n = static_cast<int32_t>(d.pieces.size());
    const bool parse_special = spec.chat;
    if (embedding) {
      d.vectors.assign(static_cast<size_t>(n), {});
      d.piece_tokens.assign(static_cast<size_t>(n), 0);
    }
    if (scoring)
      d.logprobs.assign(static_cast<size_t>(n), std::vector<double>(options.size()));
    else
      d.texts.assign(static_cast<size_t>(n), std::string());
    d.finish.assign(static_cast<size_t>(n), FinishReason::kStop);
    for (int32_t p = 0; p < n && d.result.ok(); ++p) {
      const std::string prompt_text = render(
          fill_template(spec.prompt_template, d.pieces[static_cast<size_t>(p)].text(d.text)));
      std::vector<int32_t> prompt = encode_prompt(prompt_text, parse_special);
      if (embedding) {
        d.piece_tokens[static_cast<size_t>(p)] = static_cast<int32_t>(prompt.size());
        submit(d, p, std::move(prompt), {}, 1);  // the engine bounds the prompt
        continue;
      }
      if (!scoring) {
        submit_generation(d, p, prompt);
        continue;
      }
      const std::string sep =
          spec.label_separator ? *spec.label_separator : (ends_in_space(prompt_text) ? "" : " ");
      for (size_t l = 0; l < options.size() && d.result.ok(); ++l) {
        // The label's tokens are those of prompt text + label after the prompt's own tokens, so
        // the label is tokenized as it would appear in running text. When tokenizing the two
        // together changes the prompt's last tokens (a merge across the boundary), the prompt's
        // tokens are not a prefix; then the label is scored as tokenized alone (no BOS), which
        // the model still sees right after the prompt's tokens.
        std::vector<int32_t> all = encode_prompt(prompt_text + sep + options[l], parse_special);
        std::vector<int32_t> label_tokens;
        if (all.size() > prompt.size() && std::equal(prompt.begin(), prompt.end(), all.begin())) {
          label_tokens.assign(all.begin() + static_cast<std::ptrdiff_t>(prompt.size()), all.end());
        } else {
          label_tokens = tok->encode(options[l], {.add_special = false, .parse_special = false});
        }
        if (label_tokens.empty()) {
          fail(d, "invalid_request", "label '" + options[l] + "' has no tokens");
          break;
        }
        if (prompt.size() + label_tokens.size() + 1 > static_cast<size_t>(n_ctx)) {
          fail(d, "context_overflow",
               "prompt of " + std::to_string(prompt.size()) + " tokens plus label '" + options[l] +
                   "' does not fit the context of " + std::to_string(n_ctx) +
                   " positions (split the text into smaller pieces)");
          break;
        }
        submit(d, p * static_cast<int32_t>(options.size()) + static_cast<int32_t>(l), prompt,
               std::move(label_tokens), 1);
      }
    }
  }

  // One reduce round over d.texts; false when the document failed.
  bool submit_reduce_round(DocState& d) {
    ++d.round;
    d.result.n_reduce_rounds = d.round;
    if (d.round > kMaxReduceRounds) {
      fail(d, "internal", "reduce did not converge");
      return false;
    }
    const std::string empty_prompt = render(fill_template(reduce_template, ""));
    const int32_t overhead =
        static_cast<int32_t>(encode_prompt(empty_prompt, spec.chat).size()) + 4;
    const int32_t budget = n_ctx - std::min(d.max_tokens, n_ctx / 2) - overhead;
    if (budget < 1) {
      fail(d, "context_overflow", "the reduce template leaves no room for text in the context");
      return false;
    }
    auto count = [this](std::string_view s) {
      return static_cast<int32_t>(tok->encode(s, {.add_special = false}).size());
    };
    auto groups_r = tasks::group_for_reduce(d.texts, budget, count, /*n_separator_tokens=*/2);
    if (!groups_r.is_ok()) {
      fail(d, "internal", groups_r.status().message());
      return false;
    }
    std::vector<tasks::ReduceGroup> groups = std::move(*groups_r);
    // Every text alone fills the budget: pair them anyway so the round makes progress (a
    // prompt that then does not fit fails the document with context_overflow).
    if (groups.size() == d.texts.size() && groups.size() > 1) {
      groups.clear();
      for (size_t b = 0; b < d.texts.size(); b += 2) {
        groups.push_back({b, std::min(b + 2, d.texts.size())});
      }
    }
    std::vector<std::string> inputs;
    for (const auto& g : groups) {
      std::string joined;
      for (size_t i = g.begin; i < g.end; ++i) {
        if (i > g.begin) joined += kReduceJoin;
        joined += d.texts[i];
      }
      inputs.push_back(std::move(joined));
    }
    d.texts.assign(groups.size(), std::string());
    for (size_t g = 0; g < inputs.size() && d.result.ok(); ++g) {
      const std::string prompt_text = render(fill_template(reduce_template, inputs[g]));
      submit_generation(d, static_cast<int32_t>(g), encode_prompt(prompt_text, spec.chat));
    }
    return d.result.ok();
  }

  // Called when the current round of d has no thread left. Returns true when the document is
  // complete (result ready to deliver).
  bool advance(DocState& d) {
    if (!d.result.ok()) return true;
    DocumentResult& res = d.result;
    if (embedding && !head) {
      merge_embeddings(d);
      return true;
    }
    if (head) {
      // The head's raw scores are the labels' logits: the scoring branch's softmax over them is
      // the classifier's probabilities.
      d.logprobs.assign(d.vectors.size(), {});
      for (size_t p = 0; p < d.vectors.size(); ++p) {
        if (d.vectors[p].size() != options.size()) {
          fail(d, "internal",
               "the classification head returned " + std::to_string(d.vectors[p].size()) +
                   " scores for " + std::to_string(options.size()) + " labels");
          return true;
        }
        d.logprobs[p].assign(d.vectors[p].begin(), d.vectors[p].end());
      }
    }
    if (scoring) {
      const int32_t n = static_cast<int32_t>(d.pieces.size());
      std::vector<tasks::ClassResult> rows;
      for (int32_t p = 0; p < n; ++p) {
        tasks::ClassResult c;
        c.index = p;
        c.probs = softmax(d.logprobs[static_cast<size_t>(p)]);
        c.label = argmax_d(c.probs);
        if (spec.piece_details) {
          PieceDetail pd;
          pd.index = p;
          pd.begin = d.pieces[static_cast<size_t>(p)].begin;
          pd.end = d.pieces[static_cast<size_t>(p)].end;
          pd.label = c.label;
          pd.probs = c.probs;
          pd.logprobs = d.logprobs[static_cast<size_t>(p)];
          res.pieces.push_back(std::move(pd));
        }
        rows.push_back(std::move(c));
      }
      const int32_t n_labels = static_cast<int32_t>(options.size());
      Result<tasks::Classification> cls =
          merge == MergeKind::kVote ? tasks::merge_majority_vote(rows, n, n_labels)
          : merge == MergeKind::kWeightedMean
              ? tasks::merge_weighted_mean(rows, n, n_labels, tasks::byte_weights(d.pieces))
              : tasks::merge_mean(rows, n, n_labels);
      if (!cls.is_ok()) {
        fail(d, "internal", cls.status().message());
        return true;
      }
      res.label = cls->label;
      res.label_text = options[static_cast<size_t>(cls->label)];
      res.probs = std::move(cls->probs);
      if (merge == MergeKind::kVote) res.votes = std::move(cls->votes);
      return true;
    }
    if (d.round == 0) {
      if (spec.piece_details) {
        for (size_t p = 0; p < d.pieces.size(); ++p) {
          PieceDetail pd;
          pd.index = static_cast<int32_t>(p);
          pd.begin = d.pieces[p].begin;
          pd.end = d.pieces[p].end;
          pd.text = d.texts[p];
          pd.finish_reason = d.finish[p];
          res.pieces.push_back(std::move(pd));
        }
      }
      if (merge == MergeKind::kConcat || d.texts.size() == 1) {
        std::vector<tasks::TextResult> rows;
        for (size_t p = 0; p < d.texts.size(); ++p) {
          rows.push_back({static_cast<int32_t>(p), d.texts[p]});
        }
        auto text =
            tasks::merge_concatenate(rows, static_cast<int32_t>(rows.size()), spec.separator);
        if (!text.is_ok()) {
          fail(d, "internal", text.status().message());
          return true;
        }
        res.text = std::move(*text);
        res.finish_reason = d.any_length ? FinishReason::kLength : FinishReason::kStop;
        return true;
      }
    } else if (d.texts.size() == 1) {
      res.text = std::move(d.texts[0]);
      res.finish_reason = d.any_length ? FinishReason::kLength : FinishReason::kStop;
      return true;
    }
    submit_reduce_round(d);
    return d.n_pending == 0;  // failed before submitting anything: complete (with the error)
  }

  // Embed: the pieces' vectors averaged with their token counts as weights (double, piece order),
  // then normalized; piece details carry the spans only.
  void merge_embeddings(DocState& d) {
    DocumentResult& res = d.result;
    const size_t ne = d.vectors.empty() ? 0 : d.vectors[0].size();
    std::vector<double> acc(ne, 0.0);
    double total = 0.0;
    for (size_t p = 0; p < d.vectors.size(); ++p) {
      const double w = d.piece_tokens[p];
      for (size_t j = 0; j < ne && j < d.vectors[p].size(); ++j) acc[j] += w * d.vectors[p][j];
      total += w;
      if (spec.piece_details) {
        PieceDetail pd;
        pd.index = static_cast<int32_t>(p);
        pd.begin = d.pieces[p].begin;
        pd.end = d.pieces[p].end;
        res.pieces.push_back(std::move(pd));
      }
    }
    res.embedding.resize(ne);
    for (size_t j = 0; j < ne; ++j) res.embedding[j] = static_cast<float>(acc[j] / total);
    normalize_embedding(&res.embedding, spec.embd_normalize);
  }

  // Handles one finished thread; appends completed documents to `out`.
  void on_finished(const Event& ev, std::vector<DocumentResult>* out) {
    auto it = docs.find(ev.seq);
    if (it == docs.end()) return;
    DocState& d = it->second;
    const ThreadResult& r = *ev.result;
    d.live.erase(r.id);
    --d.n_pending;
    ++d.result.n_threads;
    d.result.usage.prompt_tokens += r.usage.prompt_tokens;
    d.result.usage.completion_tokens += r.usage.completion_tokens;
    d.result.usage.cached_tokens += r.usage.cached_tokens;
    prompt_tokens.fetch_add(static_cast<uint64_t>(r.usage.prompt_tokens),
                            std::memory_order_relaxed);
    completion_tokens.fetch_add(static_cast<uint64_t>(r.usage.completion_tokens),
                                std::memory_order_relaxed);
    switch (r.finish_reason) {
      case FinishReason::kCancelled:
        fail(d, "cancelled", cancelled ? "the job was cancelled" : "a thread was cancelled");
        break;
      case FinishReason::kDeadline:
        fail(d, "deadline", "a thread ran past its deadline");
        break;
      case FinishReason::kError:
        fail(d, "engine_error", r.error);
        break;
      case FinishReason::kStop:
      case FinishReason::kLength:
        if (ev.round != d.round || !d.result.ok()) break;
        if (embedding) {
          d.vectors[static_cast<size_t>(ev.unit)] = r.embedding;
        } else if (scoring) {
          const size_t n_opt = options.size();
          d.logprobs[static_cast<size_t>(ev.unit) / n_opt][static_cast<size_t>(ev.unit) % n_opt] =
              r.score_logprob;
        } else {
          d.texts[static_cast<size_t>(ev.unit)] = r.text;
          if (r.finish_reason == FinishReason::kLength) d.any_length = true;
          if (d.round == 0) d.finish[static_cast<size_t>(ev.unit)] = r.finish_reason;
        }
        break;
    }
    if (d.n_pending > 0) return;
    if (advance(d)) {
      out->push_back(std::move(d.result));
      docs.erase(it);
    }
  }

  void deliver(std::vector<DocumentResult>& done) {
    for (DocumentResult& r : done) {
      const bool failed = !r.ok();
      if (on_result) on_result(std::move(r));
      {
        std::lock_guard<std::mutex> lk(idle_mu);
        ++n_delivered;
        if (failed) ++n_failed;
      }
      idle_cv.notify_all();
    }
    done.clear();
  }

  void run_worker() {
    std::vector<Event> batch;
    std::vector<DocumentResult> done;
    while (true) {
      {
        std::unique_lock<std::mutex> lk(ev_mu);
        ev_cv.wait(lk, [&] { return stop || !events.empty(); });
        if (events.empty() && stop) return;
        batch.swap(events);
      }
      {
        std::lock_guard<std::mutex> lk(mu);
        for (Event& ev : batch) {
          if (ev.ready) {
            done.push_back(std::move(*ev.ready));
          } else {
            --n_in_engine;
            on_finished(ev, &done);
          }
        }
        drain_waiting(&done);
      }
      batch.clear();
      deliver(done);
    }
  }
};

Result<std::unique_ptr<Job>> Job::create(Engine& engine, TaskSpec spec, ResultCallback on_result,
                                         JobLimits limits) {
  auto core = std::make_shared<Core>();
  core->engine = &engine;
  const uint64_t max_running =
      static_cast<uint64_t>(std::max(1, engine.config().sched.max_running));
  if (limits.max_threads == 0) {
    limits.max_threads = engine.config().limits.max_queue > 0
                             ? static_cast<uint64_t>(engine.config().limits.max_queue)
                             : 4 * max_running;
  }
  if (limits.max_documents == 0) limits.max_documents = 4 * max_running;
  core->limits = limits;
  core->tok = &engine.model().tokenizer();
  core->n_ctx = engine.config().model.n_ctx;
  LLMT_RETURN_IF_ERROR(spec.sampling.validate());
  if (spec.prompt_template.find(kPlaceholder) == std::string::npos) {
    return invalid_argument("the prompt template has no {text} placeholder");
  }
  if (!spec.reduce_template.empty() &&
      spec.reduce_template.find(kPlaceholder) == std::string::npos) {
    return invalid_argument("the reduce template has no {text} placeholder");
  }
  if (spec.max_tokens < 1) {
    return invalid_argument("max_tokens must be >= 1, got " + std::to_string(spec.max_tokens));
  }
  LLMT_ASSIGN_OR_RETURN(core->split, tasks::parse_split_spec(spec.split));

  // The scored option set.
  auto check_options = [](const std::vector<std::string>& v, const char* what) -> Status {
    if (v.size() < 2) {
      return invalid_argument(std::string("at least 2 ") + what + " are needed, got " +
                              std::to_string(v.size()));
    }
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i].empty()) return invalid_argument(std::string("empty entry in ") + what);
      for (size_t j = 0; j < i; ++j) {
        if (v[i] == v[j])
          return invalid_argument(std::string("duplicate '") + v[i] + "' in " + what);
      }
    }
    return Status::ok();
  };
  const ModelHparams& hp = engine.model().hparams();
  if (spec.type == TaskType::kClassify && !hp.causal && hp.pooling == Pooling::kRank) {
    // The model's own classifier: the labels name its outputs in order, so they must be exactly
    // the file's when it names them (a differing list would silently relabel the outputs).
    // They are still passed explicitly: the results and the resume identity are keyed by them.
    const std::vector<std::string>& labels = spec.labels;
    if (!hp.cls_labels.empty() && labels != hp.cls_labels) {
      std::string names;
      for (const auto& l : hp.cls_labels) names += (names.empty() ? "" : ",") + l;
      return invalid_argument("the model is a classifier whose labels are " + names +
                                  " (classifier.output_labels, in output order); pass exactly "
                                  "those",
                              "labels");
    }
    if (static_cast<int32_t>(labels.size()) != hp.n_cls_out) {
      return invalid_argument("the model's classification head has " +
                                  std::to_string(hp.n_cls_out) + " outputs, got " +
                                  std::to_string(labels.size()) + " labels",
                              "labels");
    }
    LLMT_RETURN_IF_ERROR(check_options(labels, "labels"));
    if (spec.grammar) return invalid_argument("a classify task takes no grammar (schema)");
    core->scoring = true;
    core->embedding = true;
    core->head = true;
    core->options = labels;
  } else if (spec.type == TaskType::kClassify) {
    LLMT_RETURN_IF_ERROR(check_options(spec.labels, "labels"));
    core->scoring = true;
    core->options = spec.labels;
  } else if (!spec.labels.empty()) {
    return invalid_argument(std::string("labels are for classify tasks, not ") +
                            task_type_name(spec.type));
  }
  if (spec.type == TaskType::kExtract && !spec.choices.empty()) {
    LLMT_RETURN_IF_ERROR(check_options(spec.choices, "choices"));
    core->scoring = true;
    core->options = spec.choices;
  } else if (!spec.choices.empty()) {
    return invalid_argument(std::string("choices are for extract/qa tasks, not ") +
                            task_type_name(spec.type));
  }

  if (spec.type == TaskType::kEmbed) {
    core->embedding = true;
    if (spec.merge != MergeKind::kDefault && spec.merge != MergeKind::kMean) {
      return invalid_argument(std::string("merge '") + merge_kind_name(spec.merge) +
                              "' does not fit an embed task; use mean (the default)");
    }
    if (spec.grammar) return invalid_argument("an embed task takes no grammar (schema)");
    if (engine.model().hparams().pooling == Pooling::kRank) {
      // Its outputs are a head's scores: normalizing and merging them as vectors would be wrong.
      return unsupported(
          "the model is a reranker / classifier (pooling_type rank): its outputs are scores, not "
          "embeddings; embed tasks need an embedding model (serve it and use POST /v1/rerank)");
    }
    if (spec.embd_normalize < -1) {
      return invalid_argument("embd_normalize must be >= -1, got " +
                              std::to_string(spec.embd_normalize));
    }
  } else if (!hp.causal && !core->head) {
    return invalid_argument("'" + hp.arch + "' is an encoder model: it runs embed tasks only" +
                            (hp.pooling == Pooling::kRank ? " (and classify with its head)" : ""));
  }
  // Merge kind for the task.
  MergeKind m = spec.merge;
  if (m == MergeKind::kDefault) {
    m = core->scoring || core->embedding    ? MergeKind::kMean
        : spec.type == TaskType::kSummarize ? MergeKind::kReduce
                                            : MergeKind::kConcat;
  }
  const bool class_merge =
      m == MergeKind::kVote || m == MergeKind::kMean || m == MergeKind::kWeightedMean;
  if ((!core->embedding || core->head) && core->scoring != class_merge) {
    return invalid_argument(std::string("merge '") + merge_kind_name(m) + "' does not fit a " +
                            (core->scoring ? "scoring (labels / choices)" : "generation") +
                            " task; use " +
                            (core->scoring ? "mean, weighted-mean or vote" : "concat or reduce"));
  }
  core->merge = m;
  core->reduce_template =
      spec.reduce_template.empty() ? spec.prompt_template : spec.reduce_template;

  // Chat format: needed when chat is set; otherwise resolved when possible for message documents.
  const Model& model = engine.model();
  Result<ChatFormat> fmt =
      !spec.chat_format.empty() ? chat_format_from_name(spec.chat_format)
      : model.chat_template().empty()
          ? Result<ChatFormat>(
                invalid_argument("the model has no tokenizer.chat_template; name a chat format (" +
                                 chat_format_names() + ")"))
          : detect_chat_format(model.chat_template());
  if (fmt.is_ok()) {
    core->chat_fmt = *fmt;
  } else {
    if (spec.chat || !spec.chat_format.empty()) return fmt.status();
    core->chat_fmt_error = fmt.status();
  }

  core->spec = std::move(spec);
  core->on_result = std::move(on_result);
  Core* raw = core.get();
  core->worker = std::thread([raw] { raw->run_worker(); });
  return std::unique_ptr<Job>(new Job(std::move(core)));
}

Job::Job(std::shared_ptr<Core> core) : core_(std::move(core)) {}

Job::~Job() {
  cancel();
  if (core_->feeder.joinable()) core_->feeder.join();  // sees the cancel within ~100 ms
  // Every submitted thread ends with an event (cancelled at worst); wait for them, then for the
  // worker to drain the queue.
  while (core_->n_threads_live.load(std::memory_order_acquire) > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  {
    std::lock_guard<std::mutex> lk(core_->ev_mu);
    core_->stop = true;
  }
  core_->ev_cv.notify_all();
  core_->worker.join();
}

Status Job::add(Document doc) {
  Core& c = *core_;
  const bool verbatim = !doc.messages.empty() || doc.raw_prompt.has_value();
  if (verbatim && c.spec.type != TaskType::kGenerate) {
    return invalid_argument("chat messages and raw prompts are for generate tasks only");
  }
  DocState d;
  d.result.index = doc.index;
  d.result.type = c.spec.type;
  d.result.user_data = std::move(doc.user_data);
  d.verbatim = verbatim;
  d.max_tokens = doc.max_tokens.value_or(c.spec.max_tokens);
  d.sampling = doc.sampling.value_or(c.spec.sampling);
  d.stop = doc.stop.value_or(c.spec.stop);
  d.grammar = doc.grammar.value_or(c.spec.grammar);
  if (Status s = d.sampling.validate(); !s.is_ok()) {
    d.result.error_code = "invalid_request";
    d.result.error = s.message();
  } else if (d.max_tokens < 1) {
    d.result.error_code = "invalid_request";
    d.result.error = "max_tokens must be >= 1";
  }

  // Pieces and prompts are prepared outside the lock where they do not touch shared state.
  std::vector<int32_t> verbatim_prompt;
  if (d.result.ok() && verbatim) {
    if (!doc.messages.empty()) {
      if (!c.chat_fmt) {
        d.result.error_code = "unsupported";
        d.result.error = c.chat_fmt_error.message();
      } else {
        verbatim_prompt = c.encode_prompt(render_chat(*c.chat_fmt, doc.messages, true), true);
      }
    } else {
      verbatim_prompt = c.encode_prompt(*doc.raw_prompt, false);
    }
    if (d.result.ok() && verbatim_prompt.empty()) {
      d.result.error_code = "empty_text";
      d.result.error = "the prompt is empty";
    }
    tasks::Piece whole;
    whole.end = 0;
    d.pieces.push_back(whole);
  } else if (d.result.ok()) {
    d.text = std::move(doc.text);
    Result<std::vector<tasks::Piece>> pieces = tasks::split(d.text, c.split, c.tok);
    if (!pieces.is_ok()) {
      d.result.error_code = "invalid_request";
      d.result.error = pieces.status().message();
    } else {
      for (int32_t i : tasks::leaf_indices(*pieces)) {
        tasks::Piece p = (*pieces)[static_cast<size_t>(i)];
        p.index = static_cast<int32_t>(d.pieces.size());
        d.pieces.push_back(p);
      }
      if (d.pieces.empty()) {
        d.result.error_code = "empty_text";
        d.result.error = "the text is empty or only whitespace";
      }
    }
  }
  d.result.n_pieces = static_cast<int32_t>(d.pieces.size());

  std::lock_guard<std::mutex> lk(c.mu);
  if (c.cancelled) return invalid_argument("the job was cancelled");
  {
    std::lock_guard<std::mutex> ilk(c.idle_mu);
    ++c.n_added;
  }
  d.seq = c.next_seq++;
  if (d.result.ok()) {
    if (verbatim) {
      d.texts.assign(1, std::string());
      d.finish.assign(1, FinishReason::kStop);
      c.submit_generation(d, 0, verbatim_prompt);
    } else {
      c.submit_map(d);
    }
  }
  if (d.n_pending == 0) {
    // Nothing runs (failed before any submit): deliver from the worker.
    Event ev;
    ev.seq = d.seq;
    ev.ready = std::move(d.result);
    c.push_event(std::move(ev));
    return Status::ok();
  }
  const uint64_t seq = d.seq;
  c.docs.emplace(seq, std::move(d));
  return Status::ok();
}

void Job::cancel() {
  Core& c = *core_;
  std::vector<ThreadId> ids;
  {
    std::lock_guard<std::mutex> lk(c.mu);
    c.cancelled = true;
    c.cancel_requested.store(true, std::memory_order_relaxed);
    for (auto& [seq, d] : c.docs) ids.insert(ids.end(), d.live.begin(), d.live.end());
    // Waiting threads never run: fail their documents; the ones with nothing else pending are
    // delivered by the worker.
    std::vector<DocumentResult> done;
    c.drain_waiting(&done);
    for (DocumentResult& r : done) {
      Event ev;
      ev.ready = std::move(r);
      c.push_event(std::move(ev));
    }
  }
  c.idle_cv.notify_all();  // a feed() waiting for room
  for (ThreadId id : ids) c.engine->cancel(id);
}

Status Job::feed(DocumentSource& source, const FeedOptions& opt) {
  Core& c = *core_;
  Document doc;
  while (true) {
    if (c.cancel_requested.load(std::memory_order_relaxed)) {
      return cancelled("the job was cancelled");
    }
    if (opt.stop && opt.stop()) return Status::ok();
    uint64_t n_delivered = 0;
    bool room = false;
    {
      std::lock_guard<std::mutex> lk(c.idle_mu);
      n_delivered = c.n_delivered;
      room = c.n_added - c.n_delivered < c.limits.max_documents;
    }
    if (room && opt.room && !opt.room()) room = false;
    if (!room) {
      if (opt.tick) opt.tick();
      // Room comes with a delivery (or whatever opt.room waits for: polled).
      std::unique_lock<std::mutex> lk(c.idle_mu);
      c.idle_cv.wait_for(lk, std::chrono::milliseconds(100), [&] {
        return c.n_delivered != n_delivered || c.cancel_requested.load(std::memory_order_relaxed);
      });
      continue;
    }
    Result<bool> got = source.next(&doc);
    if (!got.is_ok()) return got.status();
    if (!*got) return Status::ok();
    Status s = add(std::move(doc));
    doc = Document();
    if (!s.is_ok()) {
      return c.cancel_requested.load(std::memory_order_relaxed) ? cancelled(s.message()) : s;
    }
    if (opt.tick) opt.tick();
  }
}

Status Job::feed_async(DocumentSource& source, FeedOptions opt,
                       std::function<void(Status)> on_done) {
  if (core_->feeder.joinable()) return invalid_argument("the job is already being fed");
  core_->feeder = std::thread([this, &source, opt = std::move(opt), on_done = std::move(on_done)] {
    Status s = feed(source, opt);
    if (on_done) on_done(std::move(s));
  });
  return Status::ok();
}

const JobLimits& Job::limits() const {
  return core_->limits;
}

JobStats Job::stats() const {
  const Core& c = *core_;
  JobStats s;
  {
    std::lock_guard<std::mutex> lk(c.idle_mu);
    s.n_added = c.n_added;
    s.n_delivered = c.n_delivered;
    s.n_failed = c.n_failed;
  }
  s.n_threads_submitted = c.n_threads_submitted.load(std::memory_order_relaxed);
  s.n_threads_live = c.n_in_engine.load(std::memory_order_relaxed);
  s.n_threads_waiting = c.n_waiting.load(std::memory_order_relaxed);
  s.prompt_tokens = c.prompt_tokens.load(std::memory_order_relaxed);
  s.completion_tokens = c.completion_tokens.load(std::memory_order_relaxed);
  return s;
}

uint64_t Job::n_in_flight() const {
  std::lock_guard<std::mutex> lk(core_->idle_mu);
  return core_->n_added - core_->n_delivered;
}

void Job::wait_idle() const {
  std::unique_lock<std::mutex> lk(core_->idle_mu);
  core_->idle_cv.wait(lk, [&] { return core_->n_delivered == core_->n_added; });
}

bool Job::wait_idle_for(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lk(core_->idle_mu);
  return core_->idle_cv.wait_for(lk, timeout, [&] { return core_->n_delivered == core_->n_added; });
}

}  // namespace llmt
