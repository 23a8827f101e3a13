// Token sampling: turns one row of logits into a token id.
//
// The chain follows llama.cpp's common sampler default order (common/common.h,
// `common_params_sampling::samplers`, with the stages we do not implement left out):
//
//   logit bias -> penalties -> top-k -> typical -> top-p -> min-p -> temperature -> draw
//
// (llama.cpp's default list is penalties, dry, top-n-sigma, top-k, typical, top-p, min-p, xtc,
// temperature, then dist. Temperature therefore only shapes the final draw: top-p and min-p see
// the probabilities of the untempered, penalized logits, as in llama.cpp.)
// temperature == 0 is greedy: penalties, then argmax (lowest id on ties); no RNG use.
//
// Determinism: the RNG is xoshiro256** seeded through splitmix64, both implemented here, and a
// uniform double is built from the top 53 bits of one output; no <random> distributions are used,
// so the draw for a given seed is the same with every compiler and standard library. Every
// non-greedy sample() consumes exactly one 64-bit RNG output, whatever the candidate set.
// Candidates are ordered by (logit descending, id ascending), a strict total order, so sorting is
// deterministic too.
//
// Thread-safety: SamplingParams and SamplerState are plain values. A Sampler belongs to one
// sequence and is used by one thread at a time (no call is safe concurrently with another call on
// the same Sampler); distinct Samplers are independent.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "llmthreads/status.h"

namespace llmt {

struct SamplingParams {
  // Defaults are llama.cpp's common defaults, except seed (llama.cpp draws a random one).
  float temperature = 0.8f;        // 0 = greedy (argmax); must be finite and >= 0
  int32_t top_k = 40;              // 0 = off; must be >= 0
  float top_p = 0.95f;             // 1 = off; must be in (0, 1]
  float min_p = 0.05f;             // 0 = off; must be in [0, 1]
  float repeat_penalty = 1.0f;     // 1 = off; must be finite and > 0
  int32_t repeat_last_n = 64;      // penalty window in accepted tokens; 0 = penalties off;
                                   // must be in [0, kMaxRepeatLastN]
  float frequency_penalty = 0.0f;  // 0 = off; subtracted once per occurrence in the window; finite
  float presence_penalty = 0.0f;   // 0 = off; subtracted once if present in the window; finite
  uint64_t seed = kDefaultSeed;    // RNG seed; any value is valid
  float typical_p = 1.0f;          // locally typical sampling (Meister et al. 2022); 1 = off;
                                   // must be in (0, 1]
  // Added to the logits of these token ids before anything else (-inf bans the token). Ids
  // must be >= 0 (ids >= n_vocab are ignored by the Sampler; callers that know the vocabulary
  // reject them); biases must be finite or -inf. Later entries for the same id add up.
  std::vector<std::pair<int32_t, float>> logit_bias;

  static constexpr uint64_t kDefaultSeed = 0x5eed'0000'0000'0001ull;
  static constexpr int32_t kMaxRepeatLastN = 1 << 20;

  // OK, or invalid_argument naming the first bad field ("sampling: top_p must be in (0, 1], got
  // 0").
  Status validate() const;
};

// Everything a Sampler needs to continue bit-identically after a restore.
struct SamplerState {
  std::array<uint64_t, 4> rng{};  // xoshiro256** state
  std::vector<int32_t> history;   // the last accepted tokens, oldest first (at most repeat_last_n)
};

// Index of the largest value; the lowest index on ties. NaN is never chosen unless every value is
// NaN. Returns -1 for an empty span.
int32_t argmax(std::span<const float> values);

class Sampler {
 public:
  // `params` should have passed validate(); invalid fields are treated as "off" (an out-of-range
  // temperature as greedy), never undefined behaviour. n_vocab < 1 is treated as 1. Allocates all
  // buffers here; sample() and accept() do not allocate.
  Sampler(const SamplingParams& params, int32_t n_vocab);
  // Like the constructor, but reports invalid params / n_vocab as invalid_argument.
  static Result<Sampler> create(const SamplingParams& params, int32_t n_vocab);

  const SamplingParams& params() const { return params_; }
  int32_t n_vocab() const { return n_vocab_; }

  // Picks the next token from `logits` (one value per vocabulary entry) and returns its id in
  // [0, n_vocab). Does not record it: call accept() with the token actually used. If
  // logits.size() != n_vocab, only the first min(size, n_vocab) entries are candidates (and -1 is
  // returned when that is none). NaN logits count as -inf; if every candidate is -inf the result is
  // the lowest id, as with argmax.
  int32_t sample(std::span<const float> logits);
  // Constrained: only tokens whose bit is set in `allowed` (bit i of word i / 64 = token i; a
  // GrammarMatcher's mask) are candidates; the penalties are applied first, then the chain runs
  // on the allowed tokens alone. Returns -1 when no candidate is allowed. An allowed token wins
  // even when every allowed logit is -inf (the lowest allowed id). RNG use as sample().
  int32_t sample(std::span<const float> logits, std::span<const uint64_t> allowed);

  // Appends a token to the penalty history (the engine may feed prompt tokens as well as sampled
  // ones). Only the last repeat_last_n tokens are kept. Ids outside [0, n_vocab) are ignored.
  void accept(int32_t token);

  // Clears the history; the RNG continues where it was.
  void reset_history();

  SamplerState save() const;
  // Restores RNG and history; a history longer than repeat_last_n keeps its newest entries and
  // out-of-range ids in it are dropped. Afterwards sample() continues exactly as the saved sampler
  // would have.
  void restore(const SamplerState& state);

 private:
  struct Candidate {
    float logit;
    int32_t id;
  };

  int32_t sample_impl(std::span<const float> logits, const uint64_t* allowed, size_t n_words);
  uint64_t next_u64();
  double next_unit();  // uniform in [0, 1)
  // Adjusts candidates_[0, n) (still in id order) by the history's counts.
  void apply_penalties(size_t n);
  // Locally typical sampling over candidates_[0, *m): keeps, in their current order, the
  // smallest set of most typical tokens (|-log p - entropy| ascending) reaching typical_p.
  void apply_typical(size_t* m);
  // Puts the best k of candidates_[0, n) first, in (logit desc, id asc) order.
  void sort_prefix(size_t k, size_t n);
  // Best of candidates_[0, n): highest logit, earliest position on ties.
  int32_t greedy(size_t n) const;

  SamplingParams params_;
  int32_t n_vocab_ = 1;
  bool greedy_ = false;
  bool penalties_on_ = false;
  std::array<uint64_t, 4> rng_{};
  // Ring buffer of the last repeat_last_n accepted tokens.
  std::vector<int32_t> history_;
  size_t history_head_ = 0;  // index of the oldest entry
  size_t n_history_ = 0;
  // Scratch, sized once.
  std::vector<Candidate> candidates_;
  std::vector<float> probs_;
  std::vector<int32_t> window_;
  std::vector<std::pair<double, int32_t>> typical_;  // (score, position) scratch
};

}  // namespace llmt
