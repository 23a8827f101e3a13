// POST /v1/embeddings (one embedding LLM thread per input), POST /v1/rerank (one per document),
// POST /tokenize, POST /detokenize and
// GET /v1/models/{id}; the bodies are common/embeddings.h's.
#include <deque>

#include "common/embeddings.h"
#include "server-impl.h"

namespace llmt::server {

namespace {

// A request's "model" field ("" when absent) against the served model's name.
Status check_model_name(const std::string& requested, const std::string& served) {
  if (requested.empty() || requested == served) return Status::ok();
  return invalid_argument(
      "unknown model '" + requested + "'; this server serves '" + served + "' (see GET /v1/models)",
      "model");
}

}  // namespace

bool Server::Impl::run_embedding_threads(const httplib::Request& req, httplib::Response& res,
                                         Engine* eng, std::vector<std::vector<int32_t>> inputs,
                                         int32_t priority, const char* input_field,
                                         std::vector<std::vector<float>>* out) {
  const size_t n = inputs.size();
  int64_t n_prompt = 0;
  for (const auto& in : inputs) n_prompt += static_cast<int64_t>(in.size());
  // At most max_queue threads of this request in the engine at once; more inputs go in as earlier
  // ones finish.
  const int32_t window = static_cast<int32_t>(std::min<size_t>(n, opt.max_queue));
  int retry_after_s = 1;
  Result<std::shared_ptr<Ticket>> ticket = admit(n_prompt, 0, window, 1, &retry_after_s);
  if (!ticket.is_ok()) {
    send_error(res, ticket.status(), retry_after_s);
    return false;
  }
  std::vector<std::vector<float>> vectors(n);
  std::deque<std::pair<size_t, ThreadHandle>> in_flight;
  size_t next = 0;
  auto cancel_all = [&] {
    for (auto& [i, h] : in_flight) eng->cancel(h.id());
  };
  while (next < n || !in_flight.empty()) {
    while (next < n && in_flight.size() < static_cast<size_t>(window)) {
      ThreadRequest r;
      r.prompt_tokens = std::move(inputs[next]);
      r.embed = true;
      r.priority = priority;
      Result<ThreadHandle> h = eng->submit(std::move(r));
      if (!h.is_ok()) {
        cancel_all();
        Status s = h.status();
        // The engine names the prompt; the client sent it as input_field.
        if (s.field() == "prompt") {
          s = Status(s.code(),
                     std::string("\"") + input_field + "\": " + input_field + " " +
                         std::to_string(next) + ": " + s.message(),
                     input_field);
        }
        send_error(res, s, retry_after_s);
        return false;
      }
      (*ticket)->add_thread(h->id());
      in_flight.emplace_back(next, *h);
      ++next;
    }
    auto& [i, h] = in_flight.front();
    // A client that went away cancels the request (checked every 100 ms once it has run that
    // long, as the completions do).
    const ThreadResult* rp = nullptr;
    while (!(rp = h.wait_for(std::chrono::milliseconds(100)))) {
      if (connection_closed(req)) {
        cancel_all();
        {
          std::lock_guard<std::mutex> lk(mu);
          counters.n_client_cancelled += static_cast<int64_t>(in_flight.size());
        }
        // Wait for the cancelled threads to end (their KV is freed within a step); nobody reads
        // the response.
        for (auto& f : in_flight) f.second.wait();
        return false;
      }
    }
    const ThreadResult& r = *rp;
    if (r.finish_reason != FinishReason::kStop) {
      cancel_all();
      if (r.finish_reason == FinishReason::kCancelled) {
        send_json(res, 503,
                  error_body("the request was cancelled (server shutting down)", "server_error",
                             "cancelled"));
        return false;
      } else {
        send_json(res, 500,
                  error_body("embedding failed: " + r.error, "server_error", "engine_error"));
      }
      return false;
    }
    vectors[i] = r.embedding;
    in_flight.pop_front();
  }
  *out = std::move(vectors);
  return true;
}

void Server::Impl::handle_rerank(const httplib::Request& req, httplib::Response& res,
                                 int32_t priority) {
  TranslateOptions tr;
  Engine* eng = ready_engine(res, &tr);
  if (!eng) return;
  json body;
  if (!parse_body(req, res, &body)) return;
  const Model& model = *tr.model;
  if (model.hparams().pooling != Pooling::kRank) {
    send_error(res, unsupported("the served model has no reranking head (a bert GGUF with "
                                "pooling_type rank and cls.* tensors); /v1/rerank needs one"));
    return;
  }
  RerankRequest rreq;
  if (Status s = parse_rerank_request(body, &rreq); !s.is_ok()) {
    send_error(res, s);
    return;
  }
  if (Status s = check_model_name(rreq.model, tr.model_name); !s.is_ok()) {
    send_error(res, s);
    return;
  }
  std::vector<std::vector<int32_t>> inputs;
  int64_t n_prompt = 0;
  for (const std::string& d : rreq.documents) {
    inputs.push_back(rerank_tokens(model.tokenizer(), rreq.query, d));
    n_prompt += static_cast<int64_t>(inputs.back().size());
  }
  std::vector<std::vector<float>> outs;
  if (!run_embedding_threads(req, res, eng, std::move(inputs), priority, "documents", &outs)) {
    return;
  }
  // The first output is the relevance score (a reranker has exactly one).
  std::vector<float> scores;
  for (const auto& o : outs) scores.push_back(o.empty() ? 0.0f : o[0]);
  send_json(res, 200, rerank_body(tr.model_name, rreq, scores, n_prompt));
}

void Server::Impl::handle_embeddings(const httplib::Request& req, httplib::Response& res,
                                     int32_t priority) {
  TranslateOptions tr;
  Engine* eng = ready_engine(res, &tr);
  if (!eng) return;
  json body;
  if (!parse_body(req, res, &body)) return;
  const Model& model = *tr.model;
  EmbeddingsRequest ereq;
  if (Status s = parse_embeddings_request(body, model.tokenizer(), model.hparams().n_embd, &ereq);
      !s.is_ok()) {
    send_error(res, s);
    return;
  }
  if (Status s = check_model_name(ereq.model, tr.model_name); !s.is_ok()) {
    send_error(res, s);
    return;
  }
  if (tr.model->hparams().pooling == Pooling::kRank) {
    send_error(res, unsupported("the served model is a reranker / classifier (pooling_type rank): "
                                "its outputs are scores, not embeddings; use POST /v1/rerank"));
    return;
  }
  int64_t n_prompt = 0;
  for (const auto& in : ereq.inputs) n_prompt += static_cast<int64_t>(in.size());
  std::vector<std::vector<float>> vectors;
  if (!run_embedding_threads(req, res, eng, std::move(ereq.inputs), priority, "input", &vectors)) {
    return;
  }
  for (auto& v : vectors) normalize_embedding(&v, ereq.normalize);
  send_json(res, 200, embeddings_body(tr.model_name, vectors, ereq.base64, n_prompt));
}

void Server::Impl::handle_tokenize(const httplib::Request& req, httplib::Response& res) {
  TranslateOptions tr;
  if (!ready_engine(res, &tr)) return;
  json body;
  if (!parse_body(req, res, &body)) return;
  TokenizeRequest treq;
  if (Status s = parse_tokenize_request(body, &treq); !s.is_ok()) {
    send_error(res, s);
    return;
  }
  send_json(res, 200, tokenize_body(tr.model->tokenizer(), treq));
}

void Server::Impl::handle_detokenize(const httplib::Request& req, httplib::Response& res) {
  TranslateOptions tr;
  if (!ready_engine(res, &tr)) return;
  json body;
  if (!parse_body(req, res, &body)) return;
  std::vector<int32_t> ids;
  if (Status s = parse_detokenize_request(body, tr.model->hparams().n_vocab, &ids); !s.is_ok()) {
    send_error(res, s);
    return;
  }
  send_json(res, 200, detokenize_body(tr.model->tokenizer(), ids));
}

void Server::Impl::handle_model(const httplib::Request& req, httplib::Response& res) {
  TranslateOptions tr;
  if (!ready_engine(res, &tr)) return;
  const std::string id = req.matches.size() > 1 ? std::string(req.matches[1]) : std::string();
  if (id != tr.model_name) {
    send_json(res, 404,
              error_body("the model '" + id + "' does not exist; this server serves '" +
                             tr.model_name + "'",
                         "invalid_request_error", "model_not_found", "model"));
    return;
  }
  send_json(res, 200, model_object(tr.model_name, unix_now()));
}

}  // namespace llmt::server
