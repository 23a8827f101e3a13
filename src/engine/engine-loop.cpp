// The engine's loop thread: it owns the model Context (paged KV), the KvManager, the Scheduler,
// the swap store and every live LLM thread's sampler and detokenizer.
//
// One loop iteration (a "step", Impl::step and its parts):
//   1. drain the inbox (new LLM threads, cancels); finish threads past their deadline;
//   2. plan = scheduler.schedule(now);
//   3. swap-outs (block bytes -> swap store), block copies, swap-ins (store -> new blocks);
//   4. one Context::decode_paged() over the plan's chunks;
//   5. sample the threads whose chunk reached their last token, detokenize, match stop strings,
//      push events; scheduler.complete(); remove finished threads.
// The engine's own code here takes no mutex: the inbox and the event channels are lock-free
// queues, and stats are published through relaxed atomics once per step. An on_event callback
// runs on this thread and may take its owner's lock (the Job's and the server's consumers take a
// short queue mutex of their own), so callbacks must only queue.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>

#include "engine/engine-impl.h"

namespace llmt {

namespace {

// The engine's one log-softmax over a row of logits (the full vocabulary), used by scoring
// threads and by generated-token logprobs: log P(i) = logits[i] - max - log_sum, in double.
struct LogSoftmax {
  double max = -INFINITY;
  double log_sum = 0.0;
  float logprob(float logit) const {
    return static_cast<float>(static_cast<double>(logit) - max - log_sum);
  }
};

// log_sum for a row whose maximum is known.
LogSoftmax log_softmax_with_max(std::span<const float> logits, double mx) {
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  return LogSoftmax{mx, std::log(sum)};
}

LogSoftmax log_softmax(std::span<const float> logits) {
  double mx = -INFINITY;
  for (float v : logits) mx = std::max<double>(mx, v);
  return log_softmax_with_max(logits, mx);
}

// Strict total order of alternatives: higher logit first, then lower id (NaN never ranks first).
bool ranks_before(float la, int32_t ia, float lb, int32_t ib) {
  return la > lb || (la == lb && ia < ib);
}

// Fills *out for the sampled `token` of a row of raw logits: its log-probability and the n_top
// most likely tokens (logprob descending, id ascending). One pass finds the maximum and the top
// n_top (insertion into a sorted list of at most n_top entries), a second sums the exponentials.
void token_logprobs(std::span<const float> logits, int32_t token, int32_t n_top,
                    TokenLogprobs* out) {
  const int32_t n = std::min<int32_t>(n_top, static_cast<int32_t>(logits.size()));
  out->token = token;
  out->top.clear();
  out->top.reserve(static_cast<size_t>(std::max(n, 0)));
  std::vector<TokenLogprob>& top = out->top;
  double mx = -INFINITY;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    mx = std::max<double>(mx, v);
    if (n <= 0) continue;
    const int32_t id = static_cast<int32_t>(i);
    if (static_cast<int32_t>(top.size()) == n &&
        !ranks_before(v, id, top.back().logprob, top.back().token)) {
      continue;
    }
    if (static_cast<int32_t>(top.size()) == n) top.pop_back();
    size_t at = top.size();
    while (at > 0 && ranks_before(v, id, top[at - 1].logprob, top[at - 1].token)) --at;
    top.insert(top.begin() + static_cast<std::ptrdiff_t>(at), TokenLogprob{id, v});
  }
  const LogSoftmax ls = log_softmax_with_max(logits, mx);
  for (TokenLogprob& t : top) t.logprob = ls.logprob(t.logprob);  // logit -> logprob
  out->logprob = token >= 0 && static_cast<size_t>(token) < logits.size()
                     ? ls.logprob(logits[static_cast<size_t>(token)])
                     : -INFINITY;
}

}  // namespace

void Engine::Impl::emit(Live& l, ThreadEvent ev) {
  if (l.req.on_event) {
    l.req.on_event(ev);
  } else {
    l.state->events.push(std::move(ev));
    l.state->notify();
  }
}

void Engine::Impl::finish(Live& l, FinishReason reason, std::string error) {
  if (l.decoder && reason != FinishReason::kStop) {
    l.held += l.decoder->flush();
  } else if (l.decoder && l.result.stop_matched.empty()) {
    l.held += l.decoder->flush();
  }
  if (!l.held.empty()) {
    l.result.text += l.held;
    ThreadEvent ev;
    ev.kind = ThreadEvent::Kind::kToken;
    ev.id = l.id;
    ev.token = -1;
    ev.text = std::move(l.held);
    l.held.clear();
    emit(l, std::move(ev));
  }
  l.result.id = l.id;
  l.result.finish_reason = reason;
  l.result.error = std::move(error);
  l.result.usage.prompt_tokens = static_cast<int32_t>(l.prompt.size());
  l.result.usage.completion_tokens = static_cast<int32_t>(l.result.tokens.size());
  l.result.timings.total_s = seconds_since(l.submitted);
  // Counters first: a caller woken by `finished` sees them updated.
  st.n_finished.fetch_add(1, std::memory_order_relaxed);
  if (reason == FinishReason::kCancelled) st.n_cancelled.fetch_add(1, std::memory_order_relaxed);
  n_live.fetch_sub(1, std::memory_order_relaxed);
  auto shared = std::make_shared<const ThreadResult>(l.result);
  l.state->result = l.result;
  l.state->finished.store(true, std::memory_order_release);
  ThreadEvent ev;
  ev.kind = ThreadEvent::Kind::kFinished;
  ev.id = l.id;
  ev.result = std::move(shared);
  emit(l, std::move(ev));
  l.state->notify();
}

void Engine::Impl::admit(std::unique_ptr<Live> l) {
  if (encoder) {
    // Waits in `live` for encode_step(); the scheduler and the KV cache are not used.
    live.emplace(l->id, std::move(l));
    return;
  }
  sched::ThreadSpec spec;
  spec.id = l->id;
  spec.prompt = l->prompt;
  spec.n_kv_tokens = static_cast<int32_t>(l->prompt.size()) + l->req.max_tokens;
  if (l->n_score > 0) {
    spec.prompt.insert(spec.prompt.end(), l->req.score_tokens.begin(), l->req.score_tokens.end());
    spec.n_kv_tokens = static_cast<int32_t>(spec.prompt.size()) + 1;  // never generates
    spec.n_match_max = l->score_from + 1;
  }
  if (l->req.embed) spec.n_match_max = 0;  // every position's hidden state is needed
  spec.priority = l->req.priority;
  spec.tenant = l->req.tenant;
  spec.arrival_s = std::chrono::duration<double>(l->submitted - t0).count();
  Status s = sched->add(std::move(spec));
  if (!s.is_ok()) {
    finish(*l, FinishReason::kError, s.message());
    return;
  }
  if (l->req.grammar) {
    if (!grammar_vocab) grammar_vocab = TokenVocab::from_tokenizer(*tok);
    auto m = GrammarMatcher::create(l->req.grammar, grammar_vocab);
    if (!m.is_ok()) {
      (void)sched->remove(l->id);
      finish(*l, FinishReason::kError, m.status().message());
      return;
    }
    l->grammar.emplace(std::move(*m));
  }
  if (!l->req.embed) {
    for (int32_t t : l->prompt) l->sampler->accept(t);
  }
  live.emplace(l->id, std::move(l));
}

bool Engine::Impl::drain_inbox() {
  bool any = false;
  while (auto c = inbox.pop()) {
    any = true;
    switch (c->kind) {
      case Command::Kind::kSubmit:
        if (stopping) {
          finish(*c->live, FinishReason::kCancelled);
        } else {
          admit(std::move(c->live));
        }
        break;
      case Command::Kind::kCancel: {
        auto it = live.find(c->id);
        if (it == live.end()) break;
        auto ph = sched->remove(c->id);
        if (ph.is_ok() && *ph == sched::Phase::kSwapped && swap) swap->erase(c->id);
        finish(*it->second, FinishReason::kCancelled);
        live.erase(it);
        break;
      }
      case Command::Kind::kShutdown:
        stopping = true;
        break;
      case Command::Kind::kNone:
        break;
    }
  }
  return any;
}

bool Engine::Impl::on_token(Live& l, int32_t token) {
  l.result.tokens.push_back(token);
  l.sampler->accept(token);
  if (l.grammar) {
    Status gs = l.grammar->accept(token);  // the mask allowed it: fails only on a bug
    if (!gs.is_ok()) {
      finish(l, FinishReason::kError, gs.message());
      return true;
    }
  }
  if (l.result.tokens.size() == 1) l.result.timings.ttft_s = seconds_since(l.submitted);
  const bool eog = !l.req.ignore_eos && tok->is_eog(token);
  const bool stop_tok = std::find(l.req.stop_tokens.begin(), l.req.stop_tokens.end(), token) !=
                        l.req.stop_tokens.end();
  ThreadEvent ev;
  ev.kind = ThreadEvent::Kind::kToken;
  ev.id = l.id;
  ev.token = token;
  if (l.next_logprob) {
    l.result.logprobs.push_back(*l.next_logprob);
    ev.logprob = std::move(l.next_logprob);
    l.next_logprob.reset();
  }
  if (eog || stop_tok) {
    l.result.stop_matched = tok->token_to_piece(token, true);
    emit(l, std::move(ev));
    l.held += l.decoder->flush();
    finish(l, FinishReason::kStop);
    return true;
  }
  l.held += l.decoder->push(token);
  // Stop strings: cut at the earliest match; otherwise hold back the longest tail of `held` that
  // could still grow into a stop string.
  if (!l.req.stop.empty()) {
    size_t best = std::string::npos;
    const std::string* matched = nullptr;
    for (const std::string& s : l.req.stop) {
      const size_t p = l.held.find(s);
      if (p != std::string::npos && p < best) {
        best = p;
        matched = &s;
      }
    }
    if (matched) {
      l.result.stop_matched = *matched;
      ev.text = l.held.substr(0, best);
      l.result.text += ev.text;
      l.held.clear();
      emit(l, std::move(ev));
      finish(l, FinishReason::kStop);
      return true;
    }
    size_t keep = 0;
    const size_t max_keep = std::min(l.held.size(), l.max_stop_len - 1);
    for (size_t k = max_keep; k > 0; --k) {
      const std::string_view tail(l.held.data() + l.held.size() - k, k);
      bool prefix = false;
      for (const std::string& s : l.req.stop) {
        if (s.size() > k && std::string_view(s).substr(0, k) == tail) {
          prefix = true;
          break;
        }
      }
      if (prefix) {
        keep = k;
        break;
      }
    }
    ev.text = l.held.substr(0, l.held.size() - keep);
    l.held.erase(0, l.held.size() - keep);
  } else {
    ev.text = std::move(l.held);
    l.held.clear();
  }
  l.result.text += ev.text;
  emit(l, std::move(ev));
  if (l.grammar && l.grammar->is_finished()) {
    finish(l, FinishReason::kStop);
    return true;
  }
  const int32_t n_pos = static_cast<int32_t>(l.prompt.size() + l.result.tokens.size());
  if (static_cast<int32_t>(l.result.tokens.size()) >= l.req.max_tokens || n_pos >= n_ctx) {
    finish(l, FinishReason::kLength);
    return true;
  }
  return false;
}

void Engine::Impl::step() {
  const double t_plan = now();
  expire_deadlines();
  if (encoder) {
    encode_step();
    return;
  }
  if (sched->idle()) return;

  const Clock::time_point t_start = Clock::now();
  const sched::StepPlan& plan = sched->schedule(t_plan);
  sched::StepResult result;
  {
    const kv::KvStats ks = kvm->stats();
    if (ks.n_used > st.kv_used_peak.load(std::memory_order_relaxed))
      set(st.kv_used_peak, ks.n_used);
    if (ks.n_window_used > st.kv_win_used_peak.load(std::memory_order_relaxed)) {
      set(st.kv_win_used_peak, ks.n_window_used);
    }
  }
  move_blocks(plan, &result);
  build_batch(plan, result);
  if (!forward(plan)) {
    sched->complete(result, now());
    return;
  }
  sample_and_score(plan, &result);
  sched->complete(result, now());
  end_threads(plan, result);
  st.busy_ns.fetch_add(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t_start).count(),
      std::memory_order_relaxed);
  st.n_steps.fetch_add(1, std::memory_order_relaxed);
}

// Finishes the threads past their deadline.
void Engine::Impl::expire_deadlines() {
  finished_now.clear();
  for (auto& [id, l] : live) {
    if (l->req.deadline_s > 0 && seconds_since(l->submitted) >= l->req.deadline_s) {
      finished_now.push_back(id);
    }
  }
  for (ThreadId id : finished_now) {
    auto it = live.find(id);
    auto ph = sched->remove(id);
    if (ph.is_ok() && *ph == sched::Phase::kSwapped && swap) swap->erase(id);
    finish(*it->second, FinishReason::kDeadline);
    live.erase(it);
  }
}

// Step parts 1-3: swap-outs (their blocks are released but untouched until the forward pass),
// block copies, swap-ins; failures go to result->swap_failed.
void Engine::Impl::move_blocks(const sched::StepPlan& plan, sched::StepResult* result_ptr) {
  sched::StepResult& result = *result_ptr;
  // 1. Swap-outs. Their blocks are released but untouched until the forward pass.
  for (const sched::SwapOut& so : plan.swap_out) {
    auto it = live.find(so.id);
    if (it != live.end()) ++it->second->result.timings.n_preemptions;
    std::vector<std::span<const uint8_t>> parts;
    parts.reserve(so.blocks.size());
    size_t bytes = 0;
    for (int32_t b : so.blocks) parts.push_back(ctx->kv_block(b));
    for (int32_t w : so.window_slots) {
      if (w >= 0) parts.push_back(ctx->kv_window_slot(w));
    }
    for (const auto& p : parts) bytes += p.size();
    const kv::SwapWhere where =
        so.method == sched::Eviction::kSwapDisk ? kv::SwapWhere::kDisk : kv::SwapWhere::kRam;
    auto r = swap ? swap->put(so.id, parts, where)
                  : Result<kv::SwapWhere>(Status(StatusCode::kOutOfMemory, "no swap store"));
    if (!r.is_ok()) {
      result.swap_failed.push_back(so.id);
      st.swap_failures.fetch_add(1, std::memory_order_relaxed);
      st.set_swap_error(r.status());
    } else {
      st.swap_bytes_out.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed);
    }
  }
  for (ThreadId id : plan.dropped) {
    auto it = live.find(id);
    if (it != live.end()) ++it->second->result.timings.n_preemptions;
  }
  // 2. Block copies (partial prefix blocks, copy-on-write): before any block is written.
  for (const kv::BlockCopy& c : plan.copies) {
    auto src = ctx->kv_block(c.src);
    auto dst = ctx->kv_block(c.dst);
    std::memcpy(dst.data(), src.data(), src.size());
    if (c.src_slot >= 0 && c.dst_slot >= 0) {
      auto ws = ctx->kv_window_slot(c.src_slot);
      auto wd = ctx->kv_window_slot(c.dst_slot);
      std::memcpy(wd.data(), ws.data(), ws.size());
    }
  }
  // 3. Swap-ins.
  for (const sched::SwapIn& si : plan.swap_in) {
    if (std::find(result.swap_failed.begin(), result.swap_failed.end(), si.id) !=
        result.swap_failed.end()) {
      continue;
    }
    std::vector<std::span<uint8_t>> parts;
    parts.reserve(si.blocks.size());
    for (int32_t b : si.blocks) parts.push_back(ctx->kv_block(b));
    for (int32_t w : si.window_slots) {
      if (w >= 0) parts.push_back(ctx->kv_window_slot(w));
    }
    Status s = swap ? swap->take(si.id, parts) : Status(StatusCode::kNotFound, "no swap store");
    if (!s.is_ok()) {
      result.swap_failed.push_back(si.id);
      st.swap_failures.fetch_add(1, std::memory_order_relaxed);
      st.set_swap_error(s);
    }
  }
}

// Step part 4a: the batch of the forward pass (`batch`, `tables`, `logit_row`, `score_rows`)
// from the plan's chunks, skipping threads whose swap-in failed; marks threads started.
void Engine::Impl::build_batch(const sched::StepPlan& plan, const sched::StepResult& result) {
  batch.clear();
  tables.clear();
  logit_row.assign(plan.chunks.size(), -1);
  score_rows.clear();
  embd_rows.clear();
  int32_t n_rows = 0;
  int32_t n_embd = 0;
  for (size_t ci = 0; ci < plan.chunks.size(); ++ci) {
    const sched::Chunk& ch = plan.chunks[ci];
    if (!result.swap_failed.empty() &&
        std::find(result.swap_failed.begin(), result.swap_failed.end(), ch.id) !=
            result.swap_failed.end()) {
      continue;
    }
    const auto toks = sched->tokens(ch.id);
    const int32_t seq = static_cast<int32_t>(tables.size());
    tables.push_back(sched->table(ch.id));
    if (n_window_slots > 0) {
      // The slots of the thread's blocks (-1 where the window no longer reaches).
      if (win_store.size() <= static_cast<size_t>(seq)) win_store.resize(seq + 1);
      const std::span<const int32_t> slots = kvm->window_slots();
      std::vector<int32_t>& w = win_store[seq];
      w.clear();
      for (int32_t b : tables.back()) w.push_back(b >= 0 ? slots[b] : -1);
    }
    auto it = live.find(ch.id);
    Live* lp = it != live.end() ? it->second.get() : nullptr;
    if (lp && lp->req.embed) {
      // Embedding: the hidden state of every position, no logits.
      embd_rows.push_back({ci, n_embd});
      for (int32_t i = 0; i < ch.n_tokens; ++i) {
        const int32_t pos = ch.pos0 + i;
        batch.push_back(Context::BatchEntry{toks[pos], seq, pos, false, true});
      }
      n_embd += ch.n_tokens;
    } else if (lp && lp->n_score > 0) {
      // Scoring: logits where they predict a score token; none for sampling.
      const int32_t lo = lp->score_from, hi = lp->score_from + lp->n_score;
      score_rows.push_back({ci, n_rows});
      for (int32_t i = 0; i < ch.n_tokens; ++i) {
        const int32_t pos = ch.pos0 + i;
        const bool want = pos >= lo && pos < hi;
        batch.push_back(Context::BatchEntry{toks[pos], seq, pos, want});
        n_rows += want ? 1 : 0;
      }
    } else {
      for (int32_t i = 0; i < ch.n_tokens; ++i) {
        const int32_t pos = ch.pos0 + i;
        const bool last = i == ch.n_tokens - 1;
        batch.push_back(Context::BatchEntry{toks[pos], seq, pos, last && ch.sample});
      }
      if (ch.sample) logit_row[ci] = n_rows++;
    }
    if (it != live.end() && !it->second->started) {
      Live& l = *it->second;
      l.started = true;
      l.result.timings.queue_s = seconds_since(l.submitted);
      l.result.usage.cached_tokens = ch.pos0;
    }
  }
}

// Step part 4b: one forward pass; false after failing the plan's threads (a bug: the plan is
// validated by construction).
bool Engine::Impl::forward(const sched::StepPlan& plan) {
  if (!batch.empty()) {
    win_tables.clear();
    if (n_window_slots > 0) {
      for (size_t k = 0; k < tables.size(); ++k) win_tables.emplace_back(win_store[k]);
    }
    Status s = ctx->decode_paged(batch, tables, win_tables);
    if (!s.is_ok()) {
      for (const sched::Chunk& ch : plan.chunks) {
        auto it = live.find(ch.id);
        if (it == live.end()) continue;
        (void)sched->remove(ch.id);
        finish(*it->second, FinishReason::kError, "engine step failed: " + s.to_string());
        live.erase(it);
      }
      return false;
    }
  }
  return true;
}

// Step part 5: sampling of the rows that end a chunk, and the score-token log-probabilities of
// scoring chunks.
void Engine::Impl::sample_and_score(const sched::StepPlan& plan, sched::StepResult* result_ptr) {
  sched::StepResult& result = *result_ptr;
  for (size_t ci = 0; ci < plan.chunks.size(); ++ci) {
    if (logit_row[ci] < 0) continue;
    const sched::Chunk& ch = plan.chunks[ci];
    auto it = live.find(ch.id);
    if (it == live.end()) continue;
    Live& l = *it->second;
    const auto logits = ctx->batch_logits(logit_row[ci]);
    int32_t token = 0;
    if (l.grammar) {
      auto mask = l.grammar->allowed();
      if (mask.is_ok()) {
        token = l.sampler->sample(logits, *mask);
      } else {
        l.grammar_error = mask.status().message();  // ends the thread below, not sampled
      }
    } else {
      token = l.sampler->sample(logits);  // reads the raw logits, does not change them
    }
    if (l.req.logprobs >= 0)
      token_logprobs(logits, token, l.req.logprobs, &l.next_logprob.emplace());
    result.sampled.push_back({ch.id, token});
  }
  // Embedding chunks: add each position's hidden state once, in position order.
  for (const auto& [ci, row0] : embd_rows) {
    const sched::Chunk& ch = plan.chunks[ci];
    auto it = live.find(ch.id);
    if (it == live.end()) continue;
    Live& l = *it->second;
    // The model's pooling: cls keeps position 0, last the prompt's last position, else mean.
    const Pooling pool = model->hparams().pooling;
    const int32_t last = static_cast<int32_t>(l.prompt.size()) - 1;
    for (int32_t i = 0; i < ch.n_tokens; ++i) {
      const int32_t pos = ch.pos0 + i;
      if (pos != l.embd_next) continue;  // recomputed after an eviction: already added
      const auto h = ctx->batch_embd(row0 + i);
      const bool keep =
          (pool == Pooling::kCls && pos == 0) || (pool == Pooling::kLast && pos == last);
      for (size_t j = 0; j < h.size(); ++j) {
        if (pool == Pooling::kCls || pool == Pooling::kLast) {
          if (keep) l.embd_sum[j] = h[j];
        } else {
          l.embd_sum[j] += h[j];
        }
      }
      ++l.embd_next;
    }
    // A recompute after an eviction may take what is already added from the prefix cache.
    (void)sched->set_match_max(ch.id, l.embd_next);
  }
  // Scoring chunks: log-probabilities of the score tokens their rows predict.
  for (const auto& [ci, row0] : score_rows) {
    const sched::Chunk& ch = plan.chunks[ci];
    auto it = live.find(ch.id);
    if (it == live.end()) continue;
    Live& l = *it->second;
    const auto toks = sched->tokens(ch.id);
    int32_t row = row0;
    for (int32_t i = 0; i < ch.n_tokens; ++i) {
      const int32_t pos = ch.pos0 + i;
      if (pos < l.score_from || pos >= l.score_from + l.n_score) continue;
      const auto logits = ctx->batch_logits(row++);
      const int32_t next = toks[pos + 1];
      l.result.score_logprobs[pos - l.score_from] = log_softmax(logits).logprob(logits[next]);
    }
  }
}

// After Scheduler::complete: scoring threads whose last chunk ran are done; sampled tokens go
// through on_token() (stop conditions, events).
void Engine::Impl::end_threads(const sched::StepPlan& plan, const sched::StepResult& result) {
  for (const auto& [ci, row0] : score_rows) {
    const sched::Chunk& ch = plan.chunks[ci];
    if (!ch.sample) continue;
    auto it = live.find(ch.id);
    if (it == live.end()) continue;
    Live& l = *it->second;
    double total = 0.0;
    for (float v : l.result.score_logprobs) total += v;
    l.result.score_logprob = total;
    (void)sched->remove(ch.id);
    finish(l, FinishReason::kStop);
    live.erase(it);
  }
  for (const auto& [ci, row0] : embd_rows) {
    const sched::Chunk& ch = plan.chunks[ci];
    if (!ch.sample) continue;
    auto it = live.find(ch.id);
    if (it == live.end()) continue;
    Live& l = *it->second;
    const Pooling pool = model->hparams().pooling;
    const double n = pool == Pooling::kCls || pool == Pooling::kLast
                         ? 1.0
                         : static_cast<double>(l.prompt.size());
    l.result.embedding.resize(l.embd_sum.size());
    for (size_t j = 0; j < l.embd_sum.size(); ++j) {
      l.result.embedding[j] = static_cast<float>(l.embd_sum[j] / n);
    }
    (void)sched->remove(ch.id);
    finish(l, FinishReason::kStop);
    live.erase(it);
  }
  st.generated_tokens.fetch_add(static_cast<int64_t>(result.sampled.size()),
                                std::memory_order_relaxed);
  for (const auto& smp : result.sampled) {
    auto it = live.find(smp.id);
    if (it == live.end()) continue;
    if (!it->second->grammar_error.empty()) {
      (void)sched->remove(smp.id);
      finish(*it->second, FinishReason::kError, it->second->grammar_error);
      live.erase(it);
      continue;
    }
    if (on_token(*it->second, smp.token)) {
      (void)sched->remove(smp.id);
      live.erase(it);
    }
  }
}

void Engine::Impl::encode_step() {
  if (live.empty()) return;
  const Clock::time_point t_start = Clock::now();
  // Priority (higher first), then arrival (ids grow with submission).
  encode_pick.clear();
  for (auto& [id, l] : live) encode_pick.push_back(l.get());
  std::sort(encode_pick.begin(), encode_pick.end(), [](const Live* a, const Live* b) {
    if (a->req.priority != b->req.priority) return a->req.priority > b->req.priority;
    return a->id < b->id;
  });
  // As many as fit the pass (the first always does: submit() bounds a prompt by it).
  const int64_t budget = std::max<int64_t>(cfg.sched.step_tokens, encoder_max_tokens);
  int64_t n_tokens = 0;
  size_t n_take = 0;
  encode_seqs.clear();
  for (Live* l : encode_pick) {
    const int64_t n = static_cast<int64_t>(l->prompt.size());
    if (n_take > 0 &&
        (n_tokens + n > budget || n_take >= static_cast<size_t>(cfg.sched.max_running))) {
      break;
    }
    n_tokens += n;
    encode_seqs.emplace_back(l->prompt);
    ++n_take;
  }
  encode_pick.resize(n_take);
  for (Live* l : encode_pick) {
    l->started = true;
    l->result.timings.queue_s = seconds_since(l->submitted);
  }
  Status s = ctx->embed_batch(encode_seqs, &encode_out);
  for (size_t i = 0; i < encode_pick.size(); ++i) {
    Live& l = *encode_pick[i];
    const ThreadId id = l.id;
    if (s.is_ok()) {
      l.result.embedding = std::move(encode_out[i]);
      finish(l, FinishReason::kStop);
    } else {
      finish(l, FinishReason::kError, "engine step failed: " + s.to_string());
    }
    live.erase(id);
  }
  encoded_tokens += n_tokens;
  st.busy_ns.fetch_add(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t_start).count(),
      std::memory_order_relaxed);
  st.n_steps.fetch_add(1, std::memory_order_relaxed);
}

void Engine::Impl::publish_stats() {
  const sched::SchedulerStats ss = sched->stats();
  // An encoder's threads never enter the scheduler: every live one is waiting for its pass.
  set(st.n_waiting, encoder ? static_cast<int64_t>(live.size()) : ss.n_waiting);
  set(st.n_running, ss.n_running);
  set(st.n_swapped, ss.n_swapped);
  set(st.prefill_tokens, static_cast<int64_t>(ss.prefill_tokens) + encoded_tokens);
  set(st.prefix_hit_tokens, static_cast<int64_t>(ss.prefix_hit_tokens));
  set(st.preempt_ram, static_cast<int64_t>(ss.n_preempt_ram));
  set(st.preempt_disk, static_cast<int64_t>(ss.n_preempt_disk));
  set(st.preempt_recompute, static_cast<int64_t>(ss.n_preempt_recompute));
  const kv::KvStats ks = kvm->stats();
  set(st.kv_used, ks.n_used);
  if (ks.n_used > st.kv_used_peak.load(std::memory_order_relaxed)) set(st.kv_used_peak, ks.n_used);
  set(st.kv_cached, ks.n_cached);
  set(st.kv_free, ks.n_free);
  set(st.kv_win_used, ks.n_window_used);
  if (swap) {
    const kv::SwapStats sw = swap->stats();
    set(st.swap_bytes_ram, static_cast<int64_t>(sw.bytes_ram));
    set(st.swap_bytes_disk, static_cast<int64_t>(sw.bytes_disk));
  }
}

void Engine::Impl::run_loop() {
  for (;;) {
    const uint32_t seen = inbox_seq.load(std::memory_order_acquire);
    drain_inbox();
    if (stopping) {
      // Cancel everything still live, then leave. Late submissions are cancelled by drain.
      for (auto& [id, l] : live) {
        auto ph = sched->remove(id);
        if (ph.is_ok() && *ph == sched::Phase::kSwapped && swap) swap->erase(id);
        finish(*l, FinishReason::kCancelled);
      }
      live.clear();
      publish_stats();
      return;
    }
    if (live.empty()) {
      publish_stats();
      engine::futex_wait_for(&inbox_seq, seen, std::chrono::milliseconds(200));
      continue;
    }
    const int64_t steps_before = st.n_steps.load(std::memory_order_relaxed);
    step();
    publish_stats();
    if (st.n_steps.load(std::memory_order_relaxed) == steps_before && !live.empty()) {
      // Nothing could run (e.g. every thread waits for a prefix another one computes, or all are
      // blocked on KV): do not spin.
      engine::futex_wait_for(&inbox_seq, seen, std::chrono::milliseconds(1));
    }
  }
}

Status Engine::Impl::measure_costs(sched::EvictionCosts* costs) {
  // Prefill speed: one chunk of up to 64 tokens through blocks 0.. (they hold garbage afterwards,
  // which is fine: the KvManager treats them as free and every position is written before use).
  const int32_t n = std::min<int32_t>({64, n_ctx, n_blocks * cfg.kv.block_size});
  std::vector<int32_t> table((n + cfg.kv.block_size - 1) / cfg.kv.block_size);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>(i);
  std::vector<Context::BatchEntry> entries;
  const int32_t tok_id = std::max(0, tok->bos_id());
  for (int32_t i = 0; i < n; ++i) entries.push_back({tok_id, 0, i, i == n - 1});
  std::span<const int32_t> t(table);
  std::vector<std::span<const int32_t>> tabs{t};
  // With window slots: slots 0.. as well (as many as the blocks; the pool has more).
  std::vector<std::span<const int32_t>> wtabs;
  if (n_window_slots > 0) wtabs.push_back(t);
  LLMT_RETURN_IF_ERROR(ctx->decode_paged(entries, tabs, wtabs));  // warm-up
  const auto t0m = Clock::now();
  LLMT_RETURN_IF_ERROR(ctx->decode_paged(entries, tabs, wtabs));
  const double dt = std::max(1e-6, seconds_since(t0m));
  costs->recompute_tokens_per_s = n / dt;
  if (swap) {
    auto tp = swap->measure(std::min<size_t>(ctx->kv_block_bytes() * 8, size_t{32} << 20));
    if (tp.is_ok()) {
      if (tp->ram_bytes_per_s > 0) costs->ram_bytes_per_s = tp->ram_bytes_per_s;
      if (tp->disk_bytes_per_s > 0) costs->disk_bytes_per_s = tp->disk_bytes_per_s;
    }
  }
  return Status::ok();
}

}  // namespace llmt
