#include "embeddings.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace llmt::openai {

namespace {

using nlohmann::json;

Status field_error(const char* key, const std::string& what) {
  return invalid_argument(std::string("\"") + key + "\"" + what, key);
}

bool present(const json& body, const char* key) {
  return body.contains(key) && !body[key].is_null();
}

Status get_bool(const json& body, const char* key, bool* out) {
  if (!present(body, key)) return Status::ok();
  if (!body[key].is_boolean()) return field_error(key, " must be true or false");
  *out = body[key].get<bool>();
  return Status::ok();
}

// One array of token ids (json integers in [0, n_vocab)).
Status token_array(const json& a, const char* key, int32_t n_vocab, std::vector<int32_t>* out) {
  out->clear();
  for (size_t i = 0; i < a.size(); ++i) {
    const json& t = a[i];
    if (!t.is_number_integer()) return field_error(key, " must hold token ids (integers)");
    const int64_t id = t.get<int64_t>();
    if ((t.is_number_unsigned() && t.get<uint64_t>() >= static_cast<uint64_t>(n_vocab)) || id < 0 ||
        id >= n_vocab) {
      return field_error(key, ": token id " + t.dump() + " at index " + std::to_string(i) +
                                  " is outside the vocabulary [0, " + std::to_string(n_vocab) +
                                  ")");
    }
    out->push_back(static_cast<int32_t>(id));
  }
  return Status::ok();
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

}  // namespace

Status parse_rerank_request(const json& body, RerankRequest* out) {
  if (!body.is_object()) return invalid_argument("the body must be a JSON object");
  for (const auto& [key, value] : body.items()) {
    if (key != "query" && key != "documents" && key != "top_n" && key != "return_documents" &&
        key != "model") {
      return unsupported("\"" + key + "\" is not supported by this server (a field that could " +
                             "change the output is refused, not ignored)",
                         key);
    }
  }
  *out = RerankRequest{};
  if (present(body, "model")) {
    if (!body["model"].is_string()) return field_error("model", " must be a string");
    out->model = body["model"].get<std::string>();
  }
  if (!present(body, "query") || !body["query"].is_string() ||
      body["query"].get_ref<const std::string&>().empty()) {
    return field_error("query", " must be a non-empty string");
  }
  out->query = body["query"].get<std::string>();
  if (!valid_utf8(out->query)) return field_error("query", " is not valid UTF-8");
  if (!present(body, "documents") || !body["documents"].is_array() || body["documents"].empty()) {
    return field_error("documents", " must be a non-empty array of strings");
  }
  const json& docs = body["documents"];
  if (docs.size() > kMaxEmbeddingInputs) {
    return field_error("documents", ": at most " + std::to_string(kMaxEmbeddingInputs) +
                                        " documents per request, got " +
                                        std::to_string(docs.size()));
  }
  for (size_t i = 0; i < docs.size(); ++i) {
    const json& d = docs[i];
    const json* text = &d;
    if (d.is_object()) {
      if (d.size() != 1 || !d.contains("text")) {
        return field_error("documents", ": document " + std::to_string(i) +
                                            " must be a string or {\"text\": string}");
      }
      text = &d["text"];
    }
    if (!text->is_string()) {
      return field_error("documents", ": document " + std::to_string(i) + " must be a string");
    }
    std::string t = text->get<std::string>();
    if (!valid_utf8(t)) {
      return field_error("documents", ": document " + std::to_string(i) + " is not valid UTF-8");
    }
    out->documents.push_back(std::move(t));
  }
  if (present(body, "top_n")) {
    const json& n = body["top_n"];
    if (!n.is_number_integer() || n.get<int64_t>() < 1) {
      return field_error("top_n", " must be an integer >= 1");
    }
    out->top_n = n.get<int64_t>();
  }
  return get_bool(body, "return_documents", &out->return_documents);
}

std::vector<int32_t> rerank_tokens(const Tokenizer& tok, const std::string& query,
                                   const std::string& document) {
  TokenizeOptions with;
  with.add_special = true;
  TokenizeOptions without;
  without.add_special = false;
  std::vector<int32_t> ids = tok.encode(query, with);
  const std::vector<int32_t> doc = tok.encode(document, without);
  ids.insert(ids.end(), doc.begin(), doc.end());
  const int32_t end = tok.sep_id() >= 0 ? tok.sep_id() : tok.eos_id();
  if (end >= 0) ids.push_back(end);
  return ids;
}

json rerank_body(const std::string& model, const RerankRequest& req,
                 const std::vector<float>& scores, int64_t prompt_tokens) {
  std::vector<size_t> order(scores.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  if (req.top_n > 0 && static_cast<size_t>(req.top_n) < order.size()) {
    order.resize(static_cast<size_t>(req.top_n));
  }
  json results = json::array();
  for (size_t i : order) {
    json r = {{"index", i}, {"relevance_score", scores[i]}};
    if (req.return_documents) r["document"] = {{"text", req.documents[i]}};
    results.push_back(std::move(r));
  }
  return {{"object", "list"},
          {"model", model},
          {"results", std::move(results)},
          {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

Status parse_embeddings_request(const json& body, const Tokenizer& tok, int32_t n_embd,
                                EmbeddingsRequest* out) {
  if (!body.is_object()) return invalid_argument("the body must be a JSON object");
  // Every field honoured (user: a string, not used); anything else could change the output and is
  // refused rather than ignored.
  for (const auto& [key, value] : body.items()) {
    if (key != "input" && key != "model" && key != "encoding_format" && key != "dimensions" &&
        key != "user" && key != "embd_normalize") {
      return unsupported("\"" + key + "\" is not supported by this server (a field that could " +
                             "change the output is refused, not ignored)",
                         key);
    }
  }
  *out = EmbeddingsRequest{};
  if (present(body, "model")) {
    if (!body["model"].is_string()) return field_error("model", " must be a string");
    out->model = body["model"].get<std::string>();
  }
  if (present(body, "user") && !body["user"].is_string()) {
    return field_error("user", " must be a string");
  }
  if (present(body, "encoding_format")) {
    const json& f = body["encoding_format"];
    if (!f.is_string() || (f != "float" && f != "base64")) {
      return field_error("encoding_format", " must be \"float\" or \"base64\"");
    }
    out->base64 = f == "base64";
  }
  if (present(body, "dimensions")) {
    const json& d = body["dimensions"];
    if (!d.is_number_integer()) return field_error("dimensions", " must be an integer");
    if (d.get<int64_t>() != n_embd) {
      return unsupported("\"dimensions\": this model's embeddings have " + std::to_string(n_embd) +
                             " dimensions and cannot be shortened (got " + d.dump() + ")",
                         "dimensions");
    }
  }
  if (present(body, "embd_normalize")) {
    const json& m = body["embd_normalize"];
    if (!m.is_number_integer() || m.get<int64_t>() < -1 || m.get<int64_t>() > 1000) {
      return field_error("embd_normalize",
                         " must be an integer in [-1, 1000] (-1 none, 0 max-abs, 1 taxicab, 2 "
                         "Euclidean, p > 2 p-norm)");
    }
    out->normalize = static_cast<int32_t>(m.get<int64_t>());
  }
  if (!present(body, "input")) return field_error("input", " is required");
  const json& in = body["input"];
  const int32_t n_vocab = tok.n_vocab();
  TokenizeOptions to;
  to.add_special = true;
  to.parse_special = true;
  auto add_text = [&](const json& s, size_t index) -> Status {
    const std::string text = s.get<std::string>();
    if (text.empty()) {
      return field_error("input", ": input " + std::to_string(index) + " is an empty string");
    }
    out->inputs.push_back(tok.encode(text, to));
    if (out->inputs.back().empty()) {
      return field_error("input", ": input " + std::to_string(index) + " has no tokens");
    }
    return Status::ok();
  };
  if (in.is_string()) {
    LLMT_RETURN_IF_ERROR(add_text(in, 0));
  } else if (in.is_array()) {
    if (in.empty()) return field_error("input", " must not be an empty array");
    if (in.size() > kMaxEmbeddingInputs) {
      return field_error("input", " holds " + std::to_string(in.size()) + " inputs; at most " +
                                      std::to_string(kMaxEmbeddingInputs));
    }
    if (in[0].is_number()) {
      std::vector<int32_t> ids;
      LLMT_RETURN_IF_ERROR(token_array(in, "input", n_vocab, &ids));
      out->inputs.push_back(std::move(ids));
    } else {
      for (size_t i = 0; i < in.size(); ++i) {
        if (in[i].is_string()) {
          LLMT_RETURN_IF_ERROR(add_text(in[i], i));
        } else if (in[i].is_array()) {
          if (in[i].empty()) {
            return field_error("input", ": input " + std::to_string(i) + " is an empty array");
          }
          std::vector<int32_t> ids;
          LLMT_RETURN_IF_ERROR(token_array(in[i], "input", n_vocab, &ids));
          out->inputs.push_back(std::move(ids));
        } else {
          return field_error("input",
                             " must be a string, an array of strings, an array of token ids or "
                             "an array of token-id arrays");
        }
      }
    }
  } else {
    return field_error("input",
                       " must be a string, an array of strings, an array of token ids or an "
                       "array of token-id arrays");
  }
  return Status::ok();
}

std::string embedding_base64(const std::vector<float>& v) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string bytes(v.size() * sizeof(float), '\0');
  // Little-endian float32 (the host order on every target we build for: x86-64, AArch64).
  for (size_t i = 0; i < v.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &v[i], sizeof(u));
    for (int b = 0; b < 4; ++b) bytes[i * 4 + b] = static_cast<char>((u >> (8 * b)) & 0xFF);
  }
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t w = 0;
    for (size_t k = 0; k < 3; ++k) {
      w = (w << 8) | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0u);
    }
    out += kAlphabet[(w >> 18) & 63];
    out += kAlphabet[(w >> 12) & 63];
    out += n > 1 ? kAlphabet[(w >> 6) & 63] : '=';
    out += n > 2 ? kAlphabet[w & 63] : '=';
  }
  return out;
}

json embeddings_body(const std::string& model, const std::vector<std::vector<float>>& vectors,
                     bool base64, int64_t prompt_tokens) {
  json data = json::array();
  for (size_t i = 0; i < vectors.size(); ++i) {
    json item = {{"object", "embedding"}, {"index", i}};
    if (base64) {
      item["embedding"] = embedding_base64(vectors[i]);
    } else {
      item["embedding"] = vectors[i];
    }
    data.push_back(std::move(item));
  }
  return {{"object", "list"},
          {"data", std::move(data)},
          {"model", model},
          {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

Status parse_tokenize_request(const json& body, TokenizeRequest* out) {
  if (!body.is_object()) return invalid_argument("the body must be a JSON object");
  *out = TokenizeRequest{};
  if (!present(body, "content")) return field_error("content", " is required");
  if (!body["content"].is_string()) return field_error("content", " must be a string");
  out->content = body["content"].get<std::string>();
  LLMT_RETURN_IF_ERROR(get_bool(body, "add_special", &out->add_special));
  LLMT_RETURN_IF_ERROR(get_bool(body, "parse_special", &out->parse_special));
  LLMT_RETURN_IF_ERROR(get_bool(body, "with_pieces", &out->with_pieces));
  return Status::ok();
}

json tokenize_body(const Tokenizer& tok, const TokenizeRequest& req) {
  TokenizeOptions to;
  to.add_special = req.add_special;
  to.parse_special = req.parse_special;
  const std::vector<int32_t> ids = tok.encode(req.content, to);
  json tokens = json::array();
  for (int32_t id : ids) {
    if (!req.with_pieces) {
      tokens.push_back(id);
      continue;
    }
    const std::string piece = tok.token_to_piece(id, true);
    json pj;
    if (valid_utf8(piece)) {
      pj = piece;
    } else {
      pj = json::array();
      for (char c : piece) pj.push_back(static_cast<int>(static_cast<unsigned char>(c)));
    }
    tokens.push_back({{"id", id}, {"piece", std::move(pj)}});
  }
  return {{"tokens", std::move(tokens)}};
}

Status parse_detokenize_request(const json& body, int32_t n_vocab, std::vector<int32_t>* out) {
  if (!body.is_object()) return invalid_argument("the body must be a JSON object");
  if (!present(body, "tokens")) return field_error("tokens", " is required");
  if (!body["tokens"].is_array()) return field_error("tokens", " must be an array of token ids");
  return token_array(body["tokens"], "tokens", n_vocab, out);
}

json detokenize_body(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string text;
  for (int32_t id : ids) text += tok.token_to_piece(id, true);
  return {{"content", std::move(text)}};
}

json model_object(const std::string& id, int64_t created) {
  return {{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", "llmthreads"}};
}

}  // namespace llmt::openai
