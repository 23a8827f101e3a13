// Merge operators of the tasks layer: the per-piece results of a split document arrive in any
// completion order, each tagged with its piece index; these functions restore document order and
// combine them (concatenation, majority vote, mean of class probabilities), and group texts into
// batches for the reduce steps of map-reduce summarization. Model-free.
//
// Validation (every merge): n_pieces >= 1 and the results carry each index in [0, n_pieces)
// exactly once. An index out of range, a duplicate or a missing index is kInvalidArgument naming
// that index (the first one in result order for out of range / duplicate, the smallest missing).
//
// Labels are indices into a label set [0, n_labels) held by the caller, in the caller's order.
//
// Thread-safety: pure functions of their arguments; any number of threads may call them
// concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"
#include "tasks/split.h"

namespace llmt::tasks {

// Checks that `indices` holds each of 0 .. n_pieces - 1 exactly once (see above) and returns
// order: order[i] = the position in `indices` of piece i.
Result<std::vector<size_t>> restore_order(std::span<const int32_t> indices, int32_t n_pieces);

struct TextResult {
  int32_t index = -1;  // piece index
  std::string text;
};

// The texts in piece order joined with `separator`.
Result<std::string> merge_concatenate(std::span<const TextResult> results, int32_t n_pieces,
                                      std::string_view separator = "\n");

struct ClassResult {
  int32_t index = -1;  // piece index
  // The piece's label, or -1: the argmax of `probs` (first of equal maxima) then.
  int32_t label = -1;
  // Per-label probabilities (size n_labels, finite, >= 0, positive sum; need not sum to 1 — each
  // piece's row is normalized before use), or empty. Majority vote uses them to break ties only;
  // the means need them on every piece.
  std::vector<double> probs;
};

struct Classification {
  int32_t label = -1;          // the winning label
  std::vector<double> probs;   // per label; sums to 1
  std::vector<int32_t> votes;  // per label: pieces whose label (or argmax) it is
};

// Majority vote over the pieces' labels. Ties go to the tied label with the highest summed
// probability (the normalized rows of the pieces that have probs), then to the first in label
// order. probs = votes / n_pieces.
Result<Classification> merge_majority_vote(std::span<const ClassResult> results, int32_t n_pieces,
                                           int32_t n_labels);

// Mean of the pieces' normalized probability rows; label = argmax (first of equal maxima).
Result<Classification> merge_mean(std::span<const ClassResult> results, int32_t n_pieces,
                                  int32_t n_labels);

// Weighted mean: piece i's row counts weights[i] (size n_pieces, finite, >= 0, positive sum), then
// renormalized so the result sums to 1.
Result<Classification> merge_weighted_mean(std::span<const ClassResult> results, int32_t n_pieces,
                                           int32_t n_labels, std::span<const double> weights);

// Weights for merge_weighted_mean from a split's pieces, in piece order: byte lengths, or token
// counts (Piece::n_tokens; kInvalidArgument naming the piece when one was not counted).
std::vector<double> byte_weights(std::span<const Piece> pieces);
Result<std::vector<double>> token_weights(std::span<const Piece> pieces);

// A batch of consecutive texts for one reduce prompt: texts[begin, end).
struct ReduceGroup {
  size_t begin = 0;
  size_t end = 0;
};

// Groups texts, in order, greedily into consecutive batches whose token total fits
// `token_budget`: a batch of k texts costs the sum of count_tokens(text) plus
// (k - 1) * n_separator_tokens. A text that does not fit the budget alone gets a group of its own.
// No texts give no groups. count_tokens is called once per text. kInvalidArgument when
// token_budget < 1, n_separator_tokens < 0 or count_tokens returns a negative count (naming the
// text). Note for a reduce loop: when every group holds one text, another round makes no progress.
Result<std::vector<ReduceGroup>> group_for_reduce(
    std::span<const std::string> texts, int32_t token_budget,
    const std::function<int32_t(std::string_view)>& count_tokens, int32_t n_separator_tokens = 0);

}  // namespace llmt::tasks
