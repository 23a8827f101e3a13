// The bodies of the server's embedding and tokenizer endpoints, shared by `llmthreads serve` and
// `llmthreads run --task embed`: parse and validate, and build the responses. Pure (no I/O, no
// engine), so all of it is unit-testable.
//
// POST /v1/embeddings (OpenAI's shape):
//   input            a string, an array of strings, an array of token ids (one input), or an
//                    array of arrays of token ids; at most kMaxEmbeddingInputs inputs, none empty.
//                    Text is tokenized with add_special and parse_special, as llama.cpp's server.
//   model            must be the served model when given.
//   encoding_format  "float" (default) or "base64" (the float32 little-endian bytes, base64).
//   dimensions       accepted only when it equals the model's n_embd (we do not shorten
//                    vectors); otherwise a 400 naming it.
//   user             a string (not used).
//   embd_normalize   extension, as llama.cpp: -1 none, 0 max-abs scaled to int16 range, 1
//                    taxicab, 2 Euclidean (default), p > 2 p-norm (llmt::normalize_embedding,
//                    llmthreads/tasks.h, applies it).
//   Any other field is a 400 naming it (refused, never ignored, as in the completions
//   endpoints). Response: {"object": "list",
//   "data": [{"object": "embedding", "index", "embedding"}], "model", "usage": {"prompt_tokens",
//   "total_tokens"}}.
// POST /tokenize (llama.cpp's shape): {"content": string, "add_special": bool (default false),
//   "parse_special": bool (default true), "with_pieces": bool (default false)} -> {"tokens":
//   [id, ...]} or, with_pieces, {"tokens": [{"id", "piece"}]} where piece is the token's text, or
//   the array of its byte values when it is not valid UTF-8 on its own.
// POST /detokenize: {"tokens": [id, ...]} -> {"content": text} (special tokens rendered, as
//   llama.cpp's server); ids outside the vocabulary are a 400 naming "tokens".
// POST /v1/rerank (also /rerank; the Jina / Cohere shape llama.cpp's server takes), for models
//   with a reranking head (bert with pooling_type rank):
//   query             a non-empty string.
//   documents         a non-empty array of strings or of {"text": string} objects (at most
//                     kMaxEmbeddingInputs).
//   top_n             integer >= 1: return only the best top_n (default: all).
//   return_documents  bool (default false): each result carries {"document": {"text"}}.
//   model             must be the served model when given.
//   Any other field is a 400 naming it. Each document is scored by one embedding LLM thread over
//   the pair (rerank_tokens); response: {"object": "list", "model", "results": [{"index",
//   "relevance_score"[, "document"]}] best first (ties by index), "usage": {"prompt_tokens",
//   "total_tokens"}}. relevance_score is the head's raw output (no sigmoid), as llama.cpp.
// A wrong type or value of any of these fields is a 400 naming the field.
//
// Thread-safety: every function is pure; call from any thread.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llmthreads/status.h"
#include "llmthreads/tokenizer.h"

namespace llmt::openai {

inline constexpr size_t kMaxEmbeddingInputs = 2048;  // OpenAI's limit of inputs per request

struct EmbeddingsRequest {
  std::string model;                         // "" when absent
  std::vector<std::vector<int32_t>> inputs;  // tokenized, in order
  bool base64 = false;
  int32_t normalize = 2;  // embd_normalize
};

// Parses `body` for a model of `n_embd` dimensions whose tokenizer is `tok`. Errors:
// kInvalidArgument naming the field (wrong type, empty input, too many inputs, token ids outside
// the vocabulary, bad encoding_format or embd_normalize) or kUnsupported ("dimensions").
Status parse_embeddings_request(const nlohmann::json& body, const Tokenizer& tok, int32_t n_embd,
                                EmbeddingsRequest* out);

// The float32 little-endian bytes of v, base64 (standard alphabet, padded).
std::string embedding_base64(const std::vector<float>& v);

// The whole /v1/embeddings response for vectors[i] of input i (already normalized).
nlohmann::json embeddings_body(const std::string& model,
                               const std::vector<std::vector<float>>& vectors, bool base64,
                               int64_t prompt_tokens);

struct RerankRequest {
  std::string model;  // "" when absent
  std::string query;
  std::vector<std::string> documents;
  int64_t top_n = 0;  // 0: all
  bool return_documents = false;
};
Status parse_rerank_request(const nlohmann::json& body, RerankRequest* out);

// The cross-encoder input of (query, document): the query tokenized with the model's special
// tokens (WordPiece: [CLS] query [SEP]), the document's tokens, then [SEP] (or EOS for a vocab
// without one): "[CLS] query [SEP] document [SEP]", the pair layout BERT rerankers are trained on.
std::vector<int32_t> rerank_tokens(const Tokenizer& tok, const std::string& query,
                                   const std::string& document);

// The /v1/rerank response for scores[i] of document i.
nlohmann::json rerank_body(const std::string& model, const RerankRequest& req,
                           const std::vector<float>& scores, int64_t prompt_tokens);

struct TokenizeRequest {
  std::string content;
  bool add_special = false;
  bool parse_special = true;
  bool with_pieces = false;
};
Status parse_tokenize_request(const nlohmann::json& body, TokenizeRequest* out);
// {"tokens": ...} for the request (tokenized with tok).
nlohmann::json tokenize_body(const Tokenizer& tok, const TokenizeRequest& req);

// The ids of a /detokenize body, checked against the vocabulary.
Status parse_detokenize_request(const nlohmann::json& body, int32_t n_vocab,
                                std::vector<int32_t>* out);
nlohmann::json detokenize_body(const Tokenizer& tok, const std::vector<int32_t>& ids);

// The object GET /v1/models lists and GET /v1/models/{id} returns.
nlohmann::json model_object(const std::string& id, int64_t created);

}  // namespace llmt::openai
