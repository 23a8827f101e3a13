#include "common/task-render.h"

#include <cstdio>
#include <cstdlib>

namespace llmt::tasks {

using nlohmann::json;

const std::vector<std::string>& result_options(const TaskSpec& spec) {
  return spec.type == TaskType::kClassify ? spec.labels : spec.choices;
}

double round_prob(double p) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", p);
  return std::strtod(buf, nullptr);
}

json document_result_json(const DocumentResult& r, const std::vector<std::string>& options) {
  json res = json::object();
  if (r.type == TaskType::kEmbed) {
    res["embedding"] = r.embedding;
  } else if (r.label >= 0) {
    res[r.type == TaskType::kClassify ? "label" : "answer"] = r.label_text;
    json probs = json::object();
    for (size_t i = 0; i < options.size() && i < r.probs.size(); ++i) {
      probs[options[i]] = round_prob(r.probs[i]);
    }
    res["probs"] = probs;
    if (!r.votes.empty()) {
      json votes = json::object();
      for (size_t i = 0; i < options.size() && i < r.votes.size(); ++i)
        votes[options[i]] = r.votes[i];
      res["votes"] = votes;
    }
  } else {
    res["text"] = r.text;
    res["finish_reason"] = finish_reason_name(r.finish_reason);
  }
  if (r.n_pieces > 1) res["n_pieces"] = r.n_pieces;
  if (r.n_reduce_rounds > 0) res["n_reduce_rounds"] = r.n_reduce_rounds;
  if (!r.pieces.empty()) {
    json pieces = json::array();
    for (const PieceDetail& p : r.pieces) {
      json jp = {{"index", p.index}, {"begin", p.begin}, {"end", p.end}};
      if (r.type == TaskType::kEmbed) {
        // (the spans only: one vector per document)
      } else if (p.label >= 0) {
        jp["label"] = options[static_cast<size_t>(p.label)];
        json probs = json::array();
        for (double v : p.probs) probs.push_back(round_prob(v));
        jp["probs"] = probs;
      } else {
        jp["text"] = p.text;
        jp["finish_reason"] = finish_reason_name(p.finish_reason);
      }
      pieces.push_back(std::move(jp));
    }
    res["pieces"] = std::move(pieces);
  }
  return res;
}

}  // namespace llmt::tasks
