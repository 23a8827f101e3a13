// SSE responses of completion requests (stream: true).
#include "server-impl.h"

namespace llmt::server {

// Per request; touched by the content provider and then the release callback, which run one
// after the other on the connection's thread.
struct Server::Impl::StreamState {
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
  // The chunks' endpoint, response id, creation time and options.
  Endpoint ep = Endpoint::kCompletions;
  std::string id;
  int64_t created = 0;
  StreamOptions so;
};

// One call of a stream's content provider: writes the choices' events to the sink as they come
// until every choice finished.
class Server::Impl::StreamWriter {
 public:
  StreamWriter(Impl& server, StreamState& st, httplib::DataSink& sink)
      : server_(server), st_(st), sink_(sink) {}

  // Streams the whole response; false when the client went away (its threads are cancelled).
  bool run();

 private:
  // Writes s to the sink; false when the client went away.
  bool write(const std::string& s) { return sink_.write(s.data(), s.size()); }
  // A chunk (not an error event) with the request's seed, as the non-streaming body has.
  std::string chunk(json c) const {
    c["seed"] = st_.so.seed;
    return sse_event(c);
  }
  // Cancels the request's threads and counts the client as gone; returns false.
  bool client_gone();
  // The logprobs of choice i's pending tokens (null when not requested or none).
  json take_logprobs(size_t i);
  // Choice i's next chunk, with the logprobs of its pending tokens: a chat delta (chat answers
  // parsed for tools or reasoning) or a text chunk (finish: the finish reason, or nullptr).
  std::string delta_chunk(size_t i, json delta, const char* finish) {
    return chunk(chat_delta_chunk(st_.id, st_.so.model, st_.created, std::move(delta), finish,
                                  static_cast<int32_t>(i), take_logprobs(i)));
  }
  std::string text_chunk(size_t i, std::string_view text, const char* finish) {
    return chunk(chunk_body(st_.ep, st_.id, st_.so.model, st_.created, text, finish, false,
                            static_cast<int32_t>(i), take_logprobs(i)));
  }
  // Writes the text of a token event; false when the client went away.
  bool on_token(Fanin::Item& it);
  // Records a choice's result and writes its last chunks; false when the client went away.
  bool on_finished(Fanin::Item& it, size_t& n_done);
  // After every choice finished: the usage chunk (when asked for) and [DONE].
  bool finish();

  Impl& server_;
  StreamState& st_;
  httplib::DataSink& sink_;
  bool failed_ = false;  // a choice failed: its error event was sent, the others cancelled
};

bool Server::Impl::StreamWriter::client_gone() {
  for (ThreadId tid : st_.ids) st_.engine->cancel(tid);
  std::lock_guard<std::mutex> lk(server_.mu);
  ++server_.counters.n_client_cancelled;
  return false;
}

json Server::Impl::StreamWriter::take_logprobs(size_t i) {
  const Tokenizer* logprobs_tok = st_.so.logprobs_tok;
  if (!logprobs_tok || st_.pending[i].empty()) return nullptr;
  json lp = logprobs_json(st_.ep, *logprobs_tok, st_.pending[i], &st_.offsets[i]);
  st_.pending[i].clear();
  return lp;
}

bool Server::Impl::StreamWriter::on_token(Fanin::Item& it) {
  const size_t i = static_cast<size_t>(it.index);
  ThreadEvent& ev = it.event;
  st_.ticket->on_token();
  server_.observe_token(&st_.last_token[i]);
  if (st_.so.logprobs_tok && ev.logprob) st_.pending[i].push_back(std::move(*ev.logprob));
  if (ev.text.empty() || failed_) return true;
  if (st_.parsers[i]) {
    const AssistantDelta d = st_.parsers[i]->feed(ev.text);
    if (d.empty()) return true;  // held back: the logprobs wait with the text
    return write(delta_chunk(i, assistant_delta_json(d), nullptr));
  }
  return write(text_chunk(i, ev.text, nullptr));
}

bool Server::Impl::StreamWriter::on_finished(Fanin::Item& it, size_t& n_done) {
  const size_t i = static_cast<size_t>(it.index);
  ThreadEvent& ev = it.event;
  if (st_.results[i]) return true;
  st_.results[i] = ev.result;
  ++n_done;
  const ThreadResult& r = *ev.result;
  if (failed_) return true;
  bool ok = true;
  if (r.finish_reason == FinishReason::kError) {
    failed_ = true;
    for (ThreadId tid : st_.ids) st_.engine->cancel(tid);
    ok = write(
        sse_event(error_body("generation failed: " + r.error, "server_error", "engine_error")));
  } else if (st_.parsers[i]) {
    // What was held back, the tool calls, then the finish.
    AssistantStreamParser::Final f = st_.parsers[i]->finish();
    const char* finish = openai_finish_reason(r.finish_reason);
    if (!f.rest.empty()) {
      ok = write(delta_chunk(i, assistant_delta_json(f.rest), nullptr));
    }
    if (ok && !f.tool_calls.empty()) {
      ok = write(delta_chunk(i, tool_calls_delta_json(f.tool_calls), nullptr));
      if (r.finish_reason != FinishReason::kLength) finish = "tool_calls";
    }
    if (ok) {
      ok = write(delta_chunk(i, json::object(), finish));
    }
  } else {
    ok = write(text_chunk(i, "", openai_finish_reason(r.finish_reason)));
  }
  return ok;
}

bool Server::Impl::StreamWriter::finish() {
  server_.observe_finished(st_.results);
  bool ok = true;
  if (!failed_ && st_.so.include_usage) {
    std::vector<Usage> usages;
    for (const auto& r : st_.results) usages.push_back(r->usage);
    ok = write(
        chunk(usage_chunk_body(st_.ep, st_.id, st_.so.model, st_.created, merge_usage(usages))));
  }
  if (ok) ok = write(std::string(kSseDone));
  if (!ok) return false;
  sink_.done();
  return true;
}

bool Server::Impl::StreamWriter::run() {
  const size_t n_choices = st_.ids.size();
  if (st_.ep == Endpoint::kChatCompletions) {
    for (size_t i = 0; i < n_choices; ++i) {
      if (!write(chunk(chunk_body(st_.ep, st_.id, st_.so.model, st_.created, "", nullptr, true,
                                  static_cast<int32_t>(i))))) {
        return client_gone();
      }
    }
  }
  size_t n_done = 0;
  std::vector<Fanin::Item> items;
  while (n_done < n_choices) {
    items.clear();
    if (!st_.fan->take(&items, std::chrono::milliseconds(100))) {
      if (!sink_.is_writable()) return client_gone();
      continue;
    }
    for (Fanin::Item& it : items) {
      const bool ok =
          it.event.kind == ThreadEvent::Kind::kToken ? on_token(it) : on_finished(it, n_done);
      if (!ok) return client_gone();
    }
  }
  return finish();
}

void Server::Impl::stream_response(httplib::Response& res, Endpoint ep,
                                   std::shared_ptr<Ticket> ticket, std::shared_ptr<Fanin> fan,
                                   std::vector<ThreadId> ids, Engine* eng, StreamOptions so) {
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
  st->ep = ep;
  st->id = new_id(ep);
  st->created = unix_now();
  st->so = std::move(so);
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, st](size_t, httplib::DataSink& sink) { return StreamWriter(*this, *st, sink).run(); },
      [st](bool) {
        // The response is gone (sent, or the connection failed between provider calls): cancel
        // what still runs.
        for (size_t i = 0; i < st->ids.size(); ++i) {
          if (!st->results[i]) st->engine->cancel(st->ids[i]);
        }
      });
}

}  // namespace llmt::server
