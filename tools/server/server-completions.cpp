// POST /v1/completions and /v1/chat/completions: the OpenAI body -> one LLM thread per choice ->
// the JSON response (or the SSE stream, server-streaming.cpp).
#include "server-impl.h"

#include <cstdlib>
#include <cstring>
#include <random>

namespace llmt::server {

void Server::Impl::handle_completion(const httplib::Request& req, httplib::Response& res,
                                     Endpoint ep) {
  TranslateOptions tr;
  Engine* eng = ready_engine(res, &tr);
  if (!eng) return;
  json body;
  if (!parse_body(req, res, &body)) return;
  OpenAiRequest oreq;
  if (Status s = parse_openai_request(body, ep, opt.sampling, &oreq); !s.is_ok()) {
    send_error(res, s);
    return;
  }
  PromptInfo prompt_info;
  Result<ThreadRequest> treq = to_thread_request(oreq, tr, &prompt_info);
  if (!treq.is_ok()) {
    send_error(res, treq.status());
    return;
  }
  if (!oreq.seed_given) {
    // No seed: a fresh one per request (as OpenAI and llama.cpp), returned as "seed". 53 bits,
    // so that it survives a JavaScript client and fits the body's signed 64-bit "seed".
    std::random_device rd;
    treq->sampling.seed = ((static_cast<uint64_t>(rd()) << 32) ^ rd()) & ((uint64_t{1} << 53) - 1);
  }
  // DeepSeek-R1's template ends the prompt in "<think>": the answer starts inside its reasoning.
  const bool reasoning_open = tr.parse_reasoning && prompt_info.reasoning_open;
  const int32_t n = oreq.n;
  if (n > opt.max_queue) {
    send_error(res, cannot_fit("\"n\" = " + std::to_string(n) + " exceeds the " +
                                   std::to_string(opt.max_queue) +
                                   " threads this server runs at once (--max-queue)",
                               "n"));
    return;
  }
  const int64_t n_prompt = static_cast<int64_t>(treq->prompt_tokens.size());
  int retry_after_s = 1;
  Result<std::shared_ptr<Ticket>> ticket =
      admit(n_prompt, treq->tenant, n, treq->max_tokens, &retry_after_s);
  if (!ticket.is_ok()) {
    send_error(res, ticket.status(), retry_after_s);
    return;
  }
  // One thread per choice, same prompt (the prefix cache computes it once), seeds seed + i; their
  // events meet in one queue.
  auto fan = std::make_shared<Fanin>();
  std::vector<ThreadId> ids;
  const uint64_t seed = treq->sampling.seed;
  for (int32_t i = 0; i < n; ++i) {
    ThreadRequest r = i + 1 < n ? *treq : std::move(*treq);
    r.sampling.seed = choice_seed(seed, i);
    r.on_event = [fan, i](const ThreadEvent& ev) { fan->push(i, ev); };
    Result<ThreadHandle> h = eng->submit(std::move(r));
    if (!h.is_ok()) {
      for (ThreadId id : ids) eng->cancel(id);
      send_error(res, h.status(), retry_after_s);
      return;
    }
    ids.push_back(h->id());
    (*ticket)->add_thread(h->id());
  }
  const std::string model = tr.model_name;
  const Tokenizer& tok = tr.model->tokenizer();
  const bool logprobs = oreq.logprobs >= 0;
  const ToolCallFamily tool_family = oreq.has_tools ? tr.tool_family : ToolCallFamily::kNone;
  if (oreq.stream) {
    StreamOptions so;
    so.model = model;
    so.include_usage = oreq.include_usage;
    so.logprobs_tok = logprobs ? &tok : nullptr;
    so.seed = seed;
    if (ep == Endpoint::kChatCompletions) {
      so.tool_family = tool_family;
      so.parse_reasoning = tr.parse_reasoning;
      so.reasoning_open = reasoning_open;
    }
    stream_response(res, ep, std::move(*ticket), std::move(fan), std::move(ids), eng,
                    std::move(so));
    return;
  }
  // Non-streaming: drain the events (the first token releases the queued prompt tokens).
  std::vector<std::shared_ptr<const ThreadResult>> results(static_cast<size_t>(n));
  std::vector<std::optional<Clock::time_point>> last_token(static_cast<size_t>(n));
  int32_t n_done = 0;
  // A client that closed its connection gets its threads cancelled (checked every 100 ms).
  bool client_gone = false;
  constexpr auto kCheckEvery = std::chrono::milliseconds(100);
  Clock::time_point next_check = Clock::now() + kCheckEvery;
  std::vector<Fanin::Item> items;
  while (n_done < n) {
    items.clear();
    fan->take(&items, kCheckEvery);
    if (!client_gone && Clock::now() >= next_check) {
      next_check = Clock::now() + kCheckEvery;
      if (connection_closed(req)) {
        client_gone = true;
        for (ThreadId id : ids) eng->cancel(id);
        std::lock_guard<std::mutex> lk(mu);
        ++counters.n_client_cancelled;
      }
    }
    for (Fanin::Item& it : items) {
      const size_t i = static_cast<size_t>(it.index);
      if (it.event.kind == ThreadEvent::Kind::kToken) {
        (*ticket)->on_token();
        observe_token(&last_token[i]);
      } else if (!results[i]) {
        results[i] = std::move(it.event.result);
        ++n_done;
        // A failed choice fails the request (500 below): stop the others now, as streaming does.
        if (results[i]->finish_reason == FinishReason::kError) {
          for (ThreadId id : ids) eng->cancel(id);
        }
      }
    }
  }
  observe_finished(results);
  std::vector<ChoiceOutput> choices;
  std::vector<Usage> usages;
  // A failure first: its siblings were cancelled because of it, not by a shutdown.
  for (const auto& r : results) {
    if (r->finish_reason == FinishReason::kError) {
      send_json(res, 500,
                error_body("generation failed: " + r->error, "server_error", "engine_error"));
      return;
    }
  }
  for (const auto& r : results) {
    if (r->finish_reason == FinishReason::kCancelled) {
      send_json(res, 503,
                error_body("the request was cancelled (server shutting down)", "server_error",
                           "cancelled"));
      return;
    }
    ChoiceOutput c;
    c.text = r->text;
    c.finish = r->finish_reason;
    c.tool_family = tool_family;
    c.parse_reasoning = tr.parse_reasoning;
    c.reasoning_open = reasoning_open;
    if (logprobs) {
      int64_t offset = 0;
      c.logprobs = logprobs_json(ep, tok, r->logprobs, &offset);
    }
    choices.push_back(std::move(c));
    usages.push_back(r->usage);
  }
  json out = completion_body(ep, new_id(ep), model, unix_now(), choices, merge_usage(usages));
  out["seed"] = seed;  // choice i used seed + i
  send_json(res, 200, out);
}

}  // namespace llmt::server
