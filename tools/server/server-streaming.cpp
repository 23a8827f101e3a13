// SSE responses of completion requests (stream: true).
#include "server-impl.h"

namespace llmt::server {

void Server::Impl::stream_response(httplib::Response& res, Endpoint ep,
                                   std::shared_ptr<Ticket> ticket, std::shared_ptr<Fanin> fan,
                                   std::vector<ThreadId> ids, Engine* eng, StreamOptions so) {
  // Per request; touched by the content provider and then the release callback, which run one
  // after the other on the connection's thread.
  struct StreamState {
    std::shared_ptr<Ticket> ticket;
    std::shared_ptr<Fanin> fan;
    std::vector<ThreadId> ids;
    Engine* engine = nullptr;
    std::vector<std::shared_ptr<const ThreadResult>> results;  // per choice, once finished
    // Inter-token latency, per choice.
    std::vector<std::optional<Clock::time_point>> last_token;
    // Logprobs of tokens whose text was not sent yet, and where the next one starts (per choice).
    std::vector<std::vector<TokenLogprobs>> pending;
    std::vector<int64_t> offsets;
    // Chat answers with tools or reasoning: what each choice's text adds to the message so far.
    std::vector<std::optional<AssistantStreamParser>> parsers;
  };
  auto st = std::make_shared<StreamState>();
  const size_t n = ids.size();
  st->ticket = std::move(ticket);
  st->fan = std::move(fan);
  st->ids = std::move(ids);
  st->engine = eng;
  st->results.resize(n);
  st->last_token.resize(n);
  st->pending.resize(n);
  st->offsets.assign(n, 0);
  st->parsers.resize(n);
  if (ep == Endpoint::kChatCompletions &&
      (so.tool_family != ToolCallFamily::kNone || so.parse_reasoning)) {
    for (auto& p : st->parsers) p.emplace(so.tool_family, so.parse_reasoning, so.reasoning_open);
  }
  const std::string id = new_id(ep);
  const int64_t created = unix_now();
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, st, ep, id, created, so](size_t, httplib::DataSink& sink) {
        const std::string& model = so.model;
        const Tokenizer* logprobs_tok = so.logprobs_tok;
        auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
        // A chunk (not an error event) with the request's seed, as the non-streaming body has.
        auto chunk = [&](json c) {
          c["seed"] = so.seed;
          return sse_event(c);
        };
        auto client_gone = [&] {
          for (ThreadId tid : st->ids) st->engine->cancel(tid);
          std::lock_guard<std::mutex> lk(mu);
          ++counters.n_client_cancelled;
          return false;
        };
        // The logprobs of choice i's pending tokens (null when not requested or none).
        auto take_logprobs = [&](size_t i) -> json {
          if (!logprobs_tok || st->pending[i].empty()) return nullptr;
          json lp = logprobs_json(ep, *logprobs_tok, st->pending[i], &st->offsets[i]);
          st->pending[i].clear();
          return lp;
        };
        const size_t n_choices = st->ids.size();
        if (ep == Endpoint::kChatCompletions) {
          for (size_t i = 0; i < n_choices; ++i) {
            if (!write(chunk(chunk_body(ep, id, model, created, "", nullptr, true,
                                        static_cast<int32_t>(i))))) {
              return client_gone();
            }
          }
        }
        size_t n_done = 0;
        bool failed = false;  // a choice failed: its error event was sent, the others cancelled
        std::vector<Fanin::Item> items;
        while (n_done < n_choices) {
          items.clear();
          if (!st->fan->take(&items, std::chrono::milliseconds(100))) {
            if (!sink.is_writable()) return client_gone();
            continue;
          }
          for (Fanin::Item& it : items) {
            const size_t i = static_cast<size_t>(it.index);
            const int32_t index = it.index;
            ThreadEvent& ev = it.event;
            if (ev.kind == ThreadEvent::Kind::kToken) {
              st->ticket->on_token();
              observe_token(&st->last_token[i]);
              if (logprobs_tok && ev.logprob) st->pending[i].push_back(std::move(*ev.logprob));
              if (ev.text.empty() || failed) continue;
              if (st->parsers[i]) {
                const AssistantDelta d = st->parsers[i]->feed(ev.text);
                if (d.empty()) continue;  // held back: the logprobs wait with the text
                if (!write(chunk(chat_delta_chunk(id, model, created, assistant_delta_json(d),
                                                  nullptr, index, take_logprobs(i))))) {
                  return client_gone();
                }
                continue;
              }
              if (!write(chunk(chunk_body(ep, id, model, created, ev.text, nullptr, false, index,
                                          take_logprobs(i))))) {
                return client_gone();
              }
              continue;
            }
            if (st->results[i]) continue;
            st->results[i] = ev.result;
            ++n_done;
            const ThreadResult& r = *ev.result;
            if (failed) continue;
            bool ok = true;
            if (r.finish_reason == FinishReason::kError) {
              failed = true;
              for (ThreadId tid : st->ids) st->engine->cancel(tid);
              ok = write(sse_event(
                  error_body("generation failed: " + r.error, "server_error", "engine_error")));
            } else if (st->parsers[i]) {
              // What was held back, the tool calls, then the finish.
              AssistantStreamParser::Final f = st->parsers[i]->finish();
              const char* finish = openai_finish_reason(r.finish_reason);
              if (!f.rest.empty()) {
                ok = write(chunk(chat_delta_chunk(id, model, created, assistant_delta_json(f.rest),
                                                  nullptr, index, take_logprobs(i))));
              }
              if (ok && !f.tool_calls.empty()) {
                ok = write(
                    chunk(chat_delta_chunk(id, model, created, tool_calls_delta_json(f.tool_calls),
                                           nullptr, index, take_logprobs(i))));
                if (r.finish_reason != FinishReason::kLength) finish = "tool_calls";
              }
              if (ok) {
                ok = write(chunk(chat_delta_chunk(id, model, created, json::object(), finish, index,
                                                  take_logprobs(i))));
              }
            } else {
              ok = write(chunk(chunk_body(ep, id, model, created, "",
                                          openai_finish_reason(r.finish_reason), false, index,
                                          take_logprobs(i))));
            }
            if (!ok) return client_gone();
          }
        }
        observe_finished(st->results);
        bool ok = true;
        if (!failed && so.include_usage) {
          std::vector<Usage> usages;
          for (const auto& r : st->results) usages.push_back(r->usage);
          ok = write(chunk(usage_chunk_body(ep, id, model, created, merge_usage(usages))));
        }
        if (ok) ok = write(std::string(kSseDone));
        if (!ok) return false;
        sink.done();
        return true;
      },
      [st](bool) {
        // The response is gone (sent, or the connection failed between provider calls): cancel
        // what still runs.
        for (size_t i = 0; i < st->ids.size(); ++i) {
          if (!st->results[i]) st->engine->cancel(st->ids[i]);
        }
      });
}

}  // namespace llmt::server
