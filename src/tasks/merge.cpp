#include "tasks/merge.h"

#include <cmath>

namespace llmt::tasks {
namespace {

template <typename R>
Result<std::vector<size_t>> order_of(std::span<const R> results, int32_t n_pieces) {
  std::vector<int32_t> indices;
  indices.reserve(results.size());
  for (const R& r : results) indices.push_back(r.index);
  return restore_order(indices, n_pieces);
}

// Each piece's label and normalized probability row (empty when it has none), in piece order.
struct Rows {
  std::vector<int32_t> labels;
  std::vector<std::vector<double>> probs;
};

Result<Rows> class_rows(std::span<const ClassResult> results, int32_t n_pieces, int32_t n_labels,
                        bool need_probs) {
  if (n_labels < 1) {
    return invalid_argument("the label set is empty (n_labels = " + std::to_string(n_labels) + ")");
  }
  LLMT_ASSIGN_OR_RETURN(std::vector<size_t> order, order_of(results, n_pieces));
  Rows rows;
  rows.labels.resize(order.size());
  rows.probs.resize(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const ClassResult& r = results[order[i]];
    const std::string where = "piece " + std::to_string(i);
    if (r.probs.empty()) {
      if (need_probs) return invalid_argument(where + " has no class probabilities");
    } else {
      if (r.probs.size() != static_cast<size_t>(n_labels)) {
        return invalid_argument(where + " has " + std::to_string(r.probs.size()) +
                                " probabilities for " + std::to_string(n_labels) + " labels");
      }
      double sum = 0;
      for (double p : r.probs) {
        if (!std::isfinite(p) || p < 0) {
          return invalid_argument(where + " has a probability that is negative or not finite");
        }
        sum += p;
      }
      if (!(sum > 0) || !std::isfinite(sum)) {
        return invalid_argument(where + " has probabilities that do not sum to a positive number");
      }
      rows.probs[i].resize(r.probs.size());
      for (size_t k = 0; k < r.probs.size(); ++k) rows.probs[i][k] = r.probs[k] / sum;
    }
    int32_t label = r.label;
    if (label == -1) {
      if (r.probs.empty())
        return invalid_argument(where + " has neither a label nor probabilities");
      label = 0;
      for (int32_t k = 1; k < n_labels; ++k) {
        if (r.probs[static_cast<size_t>(k)] > r.probs[static_cast<size_t>(label)]) label = k;
      }
    } else if (label < 0 || label >= n_labels) {
      return invalid_argument(where + " has label " + std::to_string(label) +
                              ", out of range [0, " + std::to_string(n_labels) + ")");
    }
    rows.labels[i] = label;
  }
  return rows;
}

int32_t argmax(const std::vector<double>& v) {
  int32_t best = 0;
  for (size_t k = 1; k < v.size(); ++k) {
    if (v[k] > v[static_cast<size_t>(best)]) best = static_cast<int32_t>(k);
  }
  return best;
}

Classification weighted(const Rows& rows, int32_t n_labels, std::span<const double> weights) {
  Classification c;
  c.votes.assign(static_cast<size_t>(n_labels), 0);
  c.probs.assign(static_cast<size_t>(n_labels), 0.0);
  double total = 0;
  for (size_t i = 0; i < rows.probs.size(); ++i) {
    ++c.votes[static_cast<size_t>(rows.labels[i])];
    const double w = weights.empty() ? 1.0 : weights[i];
    for (size_t k = 0; k < c.probs.size(); ++k) c.probs[k] += w * rows.probs[i][k];
    total += w;
  }
  double sum = 0;
  for (double& p : c.probs) sum += (p /= total);
  for (double& p : c.probs) p /= sum;  // rounding: make the sum 1 again
  c.label = argmax(c.probs);
  return c;
}

}  // namespace

Result<std::vector<size_t>> restore_order(std::span<const int32_t> indices, int32_t n_pieces) {
  if (n_pieces < 1) {
    return invalid_argument("nothing to merge: the document has " + std::to_string(n_pieces) +
                            " pieces");
  }
  constexpr size_t kNone = static_cast<size_t>(-1);
  std::vector<size_t> order(static_cast<size_t>(n_pieces), kNone);
  for (size_t pos = 0; pos < indices.size(); ++pos) {
    const int32_t index = indices[pos];
    if (index < 0 || index >= n_pieces) {
      return invalid_argument("piece index " + std::to_string(index) + " is out of range [0, " +
                              std::to_string(n_pieces) + ")");
    }
    size_t& slot = order[static_cast<size_t>(index)];
    if (slot != kNone) {
      return invalid_argument("piece index " + std::to_string(index) + " has more than one result");
    }
    slot = pos;
  }
  for (size_t i = 0; i < order.size(); ++i) {
    if (order[i] == kNone) {
      return invalid_argument("piece index " + std::to_string(i) + " has no result");
    }
  }
  return order;
}

Result<std::string> merge_concatenate(std::span<const TextResult> results, int32_t n_pieces,
                                      std::string_view separator) {
  LLMT_ASSIGN_OR_RETURN(std::vector<size_t> order, order_of(results, n_pieces));
  size_t size = separator.size() * (order.size() - 1);
  for (const TextResult& r : results) size += r.text.size();
  std::string out;
  out.reserve(size);
  for (size_t i = 0; i < order.size(); ++i) {
    if (i > 0) out += separator;
    out += results[order[i]].text;
  }
  return out;
}

Result<Classification> merge_majority_vote(std::span<const ClassResult> results, int32_t n_pieces,
                                           int32_t n_labels) {
  LLMT_ASSIGN_OR_RETURN(Rows rows, class_rows(results, n_pieces, n_labels, false));
  Classification c;
  c.votes.assign(static_cast<size_t>(n_labels), 0);
  std::vector<double> mass(static_cast<size_t>(n_labels), 0.0);
  for (size_t i = 0; i < rows.labels.size(); ++i) {
    ++c.votes[static_cast<size_t>(rows.labels[i])];
    for (size_t k = 0; k < rows.probs[i].size(); ++k) mass[k] += rows.probs[i][k];
  }
  int32_t best = 0;
  for (int32_t k = 1; k < n_labels; ++k) {
    const auto uk = static_cast<size_t>(k), ub = static_cast<size_t>(best);
    if (c.votes[uk] > c.votes[ub] || (c.votes[uk] == c.votes[ub] && mass[uk] > mass[ub])) best = k;
  }
  c.label = best;
  c.probs.resize(static_cast<size_t>(n_labels));
  for (size_t k = 0; k < c.probs.size(); ++k) {
    c.probs[k] = static_cast<double>(c.votes[k]) / static_cast<double>(n_pieces);
  }
  return c;
}

Result<Classification> merge_mean(std::span<const ClassResult> results, int32_t n_pieces,
                                  int32_t n_labels) {
  LLMT_ASSIGN_OR_RETURN(Rows rows, class_rows(results, n_pieces, n_labels, true));
  return weighted(rows, n_labels, {});
}

Result<Classification> merge_weighted_mean(std::span<const ClassResult> results, int32_t n_pieces,
                                           int32_t n_labels, std::span<const double> weights) {
  LLMT_ASSIGN_OR_RETURN(Rows rows, class_rows(results, n_pieces, n_labels, true));
  if (weights.size() != static_cast<size_t>(n_pieces)) {
    return invalid_argument(std::to_string(weights.size()) + " weights for " +
                            std::to_string(n_pieces) + " pieces");
  }
  double total = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!std::isfinite(weights[i]) || weights[i] < 0) {
      return invalid_argument("the weight of piece " + std::to_string(i) +
                              " is negative or not finite");
    }
    total += weights[i];
  }
  if (!(total > 0) || !std::isfinite(total)) {
    return invalid_argument("the piece weights do not sum to a positive number");
  }
  return weighted(rows, n_labels, weights);
}

std::vector<double> byte_weights(std::span<const Piece> pieces) {
  std::vector<double> w;
  w.reserve(pieces.size());
  for (const Piece& p : pieces) w.push_back(static_cast<double>(p.size()));
  return w;
}

Result<std::vector<double>> token_weights(std::span<const Piece> pieces) {
  std::vector<double> w;
  w.reserve(pieces.size());
  for (const Piece& p : pieces) {
    if (p.n_tokens < 0) {
      return invalid_argument("piece " + std::to_string(p.index) + " has no token count");
    }
    w.push_back(static_cast<double>(p.n_tokens));
  }
  return w;
}

Result<std::vector<ReduceGroup>> group_for_reduce(
    std::span<const std::string> texts, int32_t token_budget,
    const std::function<int32_t(std::string_view)>& count_tokens, int32_t n_separator_tokens) {
  if (token_budget < 1) {
    return invalid_argument("reduce token budget must be at least 1, got " +
                            std::to_string(token_budget));
  }
  if (n_separator_tokens < 0) {
    return invalid_argument("separator token count must be >= 0, got " +
                            std::to_string(n_separator_tokens));
  }
  if (!count_tokens) return invalid_argument("no token counter given");
  std::vector<ReduceGroup> groups;
  int64_t used = 0;  // tokens of the open group (groups.back())
  for (size_t i = 0; i < texts.size(); ++i) {
    const int32_t n = count_tokens(texts[i]);
    if (n < 0) {
      return invalid_argument("token counter returned " + std::to_string(n) + " for text " +
                              std::to_string(i));
    }
    if (!groups.empty() && used + n_separator_tokens + n <= token_budget) {
      used += n_separator_tokens + n;
      groups.back().end = i + 1;
    } else {
      groups.push_back(ReduceGroup{i, i + 1});
      used = n;
    }
  }
  return groups;
}

}  // namespace llmt::tasks
