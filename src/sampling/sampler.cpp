// Sampler: penalties -> top-k -> top-p -> min-p -> temperature -> draw (see sampling.h).
#include "llmthreads/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

namespace llmt {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::string fmt_float(float v) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(v));
  return buf;
}

Status bad_field(const char* field, const char* rule, const std::string& got) {
  return invalid_argument(std::string("sampling: ") + field + " must be " + rule + ", got " + got);
}

// Strict total order: higher logit first, then lower id. Logits are never NaN here.
bool better(float la, int32_t ia, float lb, int32_t ib) {
  return la > lb || (la == lb && ia < ib);
}

uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

// splitmix64 (Steele, Lea, Flood 2014): used only to expand a seed into xoshiro state.
uint64_t splitmix64_next(uint64_t& s) {
  s += 0x9e3779b97f4a7c15ull;
  uint64_t z = s;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::array<uint64_t, 4> seed_state(uint64_t seed) {
  std::array<uint64_t, 4> st{};
  uint64_t s = seed;
  for (auto& w : st) w = splitmix64_next(s);
  // splitmix64 outputs are a bijection of distinct inputs, so four zero words cannot happen; keep
  // the guard anyway since xoshiro must not start from all zeros.
  if ((st[0] | st[1] | st[2] | st[3]) == 0) st[0] = 1;
  return st;
}

}  // namespace

Status SamplingParams::validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0f)
    return bad_field("temperature", "finite and >= 0 (0 = greedy)", fmt_float(temperature));
  if (top_k < 0) return bad_field("top_k", ">= 0 (0 = off)", std::to_string(top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f))
    return bad_field("top_p", "in (0, 1] (1 = off)", fmt_float(top_p));
  if (!(min_p >= 0.0f && min_p <= 1.0f))
    return bad_field("min_p", "in [0, 1] (0 = off)", fmt_float(min_p));
  if (!std::isfinite(repeat_penalty) || !(repeat_penalty > 0.0f))
    return bad_field("repeat_penalty", "finite and > 0 (1 = off)", fmt_float(repeat_penalty));
  if (repeat_last_n < 0 || repeat_last_n > kMaxRepeatLastN)
    return bad_field("repeat_last_n", ("in [0, " + std::to_string(kMaxRepeatLastN) + "]").c_str(),
                     std::to_string(repeat_last_n));
  if (!std::isfinite(frequency_penalty))
    return bad_field("frequency_penalty", "finite (0 = off)", fmt_float(frequency_penalty));
  if (!std::isfinite(presence_penalty))
    return bad_field("presence_penalty", "finite (0 = off)", fmt_float(presence_penalty));
  if (!(typical_p > 0.0f && typical_p <= 1.0f))
    return bad_field("typical_p", "in (0, 1] (1 = off)", fmt_float(typical_p));
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0) return bad_field("logit_bias", "keyed by token ids >= 0", std::to_string(id));
    if (std::isnan(bias) || bias == std::numeric_limits<float>::infinity())
      return bad_field("logit_bias", "finite or -inf", fmt_float(bias));
  }
  return Status::ok();
}

int32_t argmax(std::span<const float> values) {
  int32_t best = -1;
  for (size_t i = 0; i < values.size(); ++i) {
    const float v = values[i];
    if (std::isnan(v)) continue;
    if (best < 0 || v > values[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  if (best < 0 && !values.empty()) best = 0;  // all NaN
  return best;
}

Sampler::Sampler(const SamplingParams& params, int32_t n_vocab)
    : params_(params), n_vocab_(std::max<int32_t>(n_vocab, 1)) {
  // Sanitize: anything invalid means "off" so no path below can misbehave.
  if (!std::isfinite(params_.temperature) || params_.temperature < 0.0f) params_.temperature = 0.0f;
  if (params_.top_k < 0) params_.top_k = 0;
  if (!(params_.top_p > 0.0f && params_.top_p <= 1.0f)) params_.top_p = 1.0f;
  if (!(params_.min_p >= 0.0f && params_.min_p <= 1.0f)) params_.min_p = 0.0f;
  if (!std::isfinite(params_.repeat_penalty) || !(params_.repeat_penalty > 0.0f))
    params_.repeat_penalty = 1.0f;
  params_.repeat_last_n = std::clamp(params_.repeat_last_n, 0, SamplingParams::kMaxRepeatLastN);
  if (!std::isfinite(params_.frequency_penalty)) params_.frequency_penalty = 0.0f;
  if (!std::isfinite(params_.presence_penalty)) params_.presence_penalty = 0.0f;
  if (!(params_.typical_p > 0.0f && params_.typical_p <= 1.0f)) params_.typical_p = 1.0f;
  {
    // Keep the usable entries; ids past the vocabulary are ignored.
    std::vector<std::pair<int32_t, float>> kept;
    for (const auto& [id, bias] : params_.logit_bias)
      if (id >= 0 && id < n_vocab_ && !std::isnan(bias) &&
          bias != std::numeric_limits<float>::infinity())
        kept.emplace_back(id, bias);
    params_.logit_bias = std::move(kept);
  }

  greedy_ = params_.temperature == 0.0f;
  penalties_on_ = params_.repeat_last_n > 0 &&
                  (params_.repeat_penalty != 1.0f || params_.frequency_penalty != 0.0f ||
                   params_.presence_penalty != 0.0f);
  rng_ = seed_state(params_.seed);
  history_.assign(static_cast<size_t>(params_.repeat_last_n), 0);
  window_.assign(static_cast<size_t>(params_.repeat_last_n), 0);
  candidates_.resize(static_cast<size_t>(n_vocab_));
  if (!greedy_) probs_.resize(static_cast<size_t>(n_vocab_));
  if (!greedy_ && params_.typical_p < 1.0f) typical_.resize(static_cast<size_t>(n_vocab_));
}

Result<Sampler> Sampler::create(const SamplingParams& params, int32_t n_vocab) {
  LLMT_RETURN_IF_ERROR(params.validate());
  if (n_vocab < 1)
    return invalid_argument("sampling: n_vocab must be >= 1, got " + std::to_string(n_vocab));
  return Sampler(params, n_vocab);
}

uint64_t Sampler::next_u64() {
  // xoshiro256** 1.0 (Blackman, Vigna 2018).
  const uint64_t result = rotl(rng_[1] * 5, 7) * 9;
  const uint64_t t = rng_[1] << 17;
  rng_[2] ^= rng_[0];
  rng_[3] ^= rng_[1];
  rng_[1] ^= rng_[2];
  rng_[0] ^= rng_[3];
  rng_[2] ^= t;
  rng_[3] = rotl(rng_[3], 45);
  return result;
}

double Sampler::next_unit() {
  return static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
}

void Sampler::accept(int32_t token) {
  if (token < 0 || token >= n_vocab_ || history_.empty()) return;
  const size_t cap = history_.size();
  if (n_history_ < cap) {
    history_[(history_head_ + n_history_) % cap] = token;
    ++n_history_;
  } else {
    history_[history_head_] = token;
    history_head_ = (history_head_ + 1) % cap;
  }
}

void Sampler::reset_history() {
  history_head_ = 0;
  n_history_ = 0;
}

SamplerState Sampler::save() const {
  SamplerState st;
  st.rng = rng_;
  st.history.reserve(n_history_);
  for (size_t i = 0; i < n_history_; ++i)
    st.history.push_back(history_[(history_head_ + i) % history_.size()]);
  return st;
}

void Sampler::restore(const SamplerState& state) {
  rng_ = state.rng;
  if ((rng_[0] | rng_[1] | rng_[2] | rng_[3]) == 0) rng_ = seed_state(params_.seed);
  reset_history();
  const size_t cap = history_.size();
  const size_t n = state.history.size();
  for (size_t i = n > cap ? n - cap : 0; i < n; ++i) accept(state.history[i]);
}

void Sampler::apply_penalties(size_t n) {
  // Counts per token in the window: copy, sort, walk runs. O(w log w) with w = repeat_last_n and
  // no per-vocabulary table.
  const size_t cap = history_.size();
  for (size_t i = 0; i < n_history_; ++i) window_[i] = history_[(history_head_ + i) % cap];
  std::sort(window_.begin(), window_.begin() + static_cast<std::ptrdiff_t>(n_history_));
  for (size_t i = 0; i < n_history_;) {
    const int32_t tok = window_[i];
    size_t j = i;
    while (j < n_history_ && window_[j] == tok) ++j;
    const auto count = static_cast<float>(j - i);
    i = j;
    if (static_cast<size_t>(tok) >= n) continue;
    float& logit = candidates_[static_cast<size_t>(tok)].logit;
    // llama.cpp's rule: shrink toward "less likely" whatever the sign.
    if (logit <= 0.0f) {
      logit *= params_.repeat_penalty;
    } else {
      logit /= params_.repeat_penalty;
    }
    logit -= count * params_.frequency_penalty + params_.presence_penalty;
    if (std::isnan(logit)) logit = kNegInf;  // -inf + inf style corner cases
  }
}

int32_t Sampler::greedy(size_t n) const {
  size_t best = 0;
  for (size_t i = 1; i < n; ++i)
    if (candidates_[i].logit > candidates_[best].logit) best = i;
  return candidates_[best].id;
}

void Sampler::apply_typical(size_t* m) {
  const size_t n = *m;
  if (n <= 1) return;
  float max_logit = kNegInf;
  for (size_t i = 0; i < n; ++i) max_logit = std::max(max_logit, candidates_[i].logit);
  if (max_logit == kNegInf) return;
  // Probabilities (as llama.cpp: of the untempered logits) and their entropy.
  double norm = 0.0;
  for (size_t i = 0; i < n; ++i) {
    probs_[i] = std::exp(candidates_[i].logit - max_logit);
    norm += probs_[i];
  }
  double entropy = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double p = probs_[i] / norm;
    if (p > 0.0) entropy -= p * std::log(p);
  }
  for (size_t i = 0; i < n; ++i) {
    const double p = probs_[i] / norm;
    const double score =
        p > 0.0 ? std::fabs(-std::log(p) - entropy) : std::numeric_limits<double>::infinity();
    typical_[i] = {score, static_cast<int32_t>(i)};
  }
  // Most typical first; ties by (logit desc, id asc) so the order is total.
  std::sort(typical_.begin(), typical_.begin() + static_cast<std::ptrdiff_t>(n),
            [&](const auto& a, const auto& b) {
              if (a.first != b.first) return a.first < b.first;
              const Candidate& ca = candidates_[static_cast<size_t>(a.second)];
              const Candidate& cb = candidates_[static_cast<size_t>(b.second)];
              return better(ca.logit, ca.id, cb.logit, cb.id);
            });
  double cum = 0.0;
  size_t keep = 0;
  while (keep < n) {
    cum += probs_[static_cast<size_t>(typical_[keep].second)] / norm;
    ++keep;
    if (cum >= params_.typical_p) break;
  }
  // Mark the kept positions (probs_ is free again), then compact in the current order.
  for (size_t i = 0; i < n; ++i) probs_[i] = 0.0f;
  for (size_t k = 0; k < keep; ++k) probs_[static_cast<size_t>(typical_[k].second)] = 1.0f;
  size_t out = 0;
  for (size_t i = 0; i < n; ++i)
    if (probs_[i] != 0.0f) candidates_[out++] = candidates_[i];
  *m = out;
}

void Sampler::sort_prefix(size_t k, size_t n) {
  auto cmp = [](const Candidate& a, const Candidate& b) {
    return better(a.logit, a.id, b.logit, b.id);
  };
  const auto first = candidates_.begin();
  std::partial_sort(first, first + static_cast<std::ptrdiff_t>(k),
                    first + static_cast<std::ptrdiff_t>(n), cmp);
}

int32_t Sampler::sample(std::span<const float> logits) {
  return sample_impl(logits, nullptr, 0);
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const uint64_t> allowed) {
  return sample_impl(logits, allowed.data(), allowed.size());
}

int32_t Sampler::sample_impl(std::span<const float> logits, const uint64_t* allowed,
                             size_t n_words) {
  size_t n = std::min(logits.size(), static_cast<size_t>(n_vocab_));
  if (n == 0) return -1;
  constexpr float kMax = std::numeric_limits<float>::max();
  for (size_t i = 0; i < n; ++i) {
    float v = logits[i];
    if (std::isnan(v)) v = kNegInf;
    if (v > kMax) v = kMax;  // +inf: keeps max-subtraction below finite
    candidates_[i] = {v, static_cast<int32_t>(i)};
  }
  for (const auto& [id, bias] : params_.logit_bias) {
    if (static_cast<size_t>(id) >= n) continue;
    float& v = candidates_[static_cast<size_t>(id)].logit;
    v += bias;
    if (std::isnan(v)) v = kNegInf;
  }
  if (penalties_on_) apply_penalties(n);
  if (allowed) {
    // Keep the allowed candidates, in id order (the order the unconstrained path sees).
    size_t kept = 0;
    for (size_t i = 0; i < n; ++i) {
      const size_t w = i / 64;
      if (w < n_words && ((allowed[w] >> (i % 64)) & 1)) candidates_[kept++] = candidates_[i];
    }
    n = kept;
    if (n == 0) return -1;
  }
  if (greedy_) return greedy(n);

  // One RNG output per non-greedy sample, drawn up front so the stream does not depend on the
  // candidate set.
  const double u = next_unit();

  size_t m = n;
  bool sorted = false;
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < m) {
    m = static_cast<size_t>(params_.top_k);
    sort_prefix(m, n);
    sorted = true;
  }

  if (params_.typical_p < 1.0f) apply_typical(&m);

  float max_logit = kNegInf;
  if (sorted) {
    max_logit = candidates_[0].logit;
  } else {
    for (size_t i = 0; i < m; ++i) max_logit = std::max(max_logit, candidates_[i].logit);
  }
  if (max_logit == kNegInf) return greedy(m);  // nothing has any probability

  // Top-p and min-p each keep a prefix of the candidates in sorted order: top-p's cut depends on
  // the probabilities over all m candidates, min-p's on the max logit only. The kept set is the
  // shorter prefix, so min-p may be applied first (it is O(m) and usually leaves few tokens to
  // sort) without changing the result of "top-p, then min-p".
  const bool use_top_p = params_.top_p < 1.0f;
  double top_p_norm = 0.0;  // softmax normalizer over all m candidates, for top-p
  if (use_top_p)
    for (size_t i = 0; i < m; ++i) top_p_norm += std::exp(candidates_[i].logit - max_logit);

  if (params_.min_p > 0.0f) {
    // p_i >= min_p * p_max  <=>  logit_i >= max_logit + log(min_p). The max always survives.
    const float threshold = max_logit + std::log(params_.min_p);
    if (sorted) {
      size_t keep = 1;
      while (keep < m && candidates_[keep].logit >= threshold) ++keep;
      m = keep;
    } else {
      size_t keep = 0;
      for (size_t i = 0; i < m; ++i)
        if (candidates_[i].logit >= threshold) candidates_[keep++] = candidates_[i];
      m = keep;
    }
  }

  if (use_top_p) {
    // Smallest sorted prefix whose probability reaches top_p (at least one token). Unsorted
    // candidates are sorted in growing prefixes: the first k of a partial sort are the same
    // elements in the same order whatever k (strict total order), so the walk just continues.
    size_t k = sorted ? m : std::min<size_t>(m, 64);
    size_t i = 0;
    double cum = 0.0;
    bool cut = false;
    while (!cut) {
      if (!sorted) sort_prefix(k, m);
      for (; i < k; ++i) {
        cum += std::exp(candidates_[i].logit - max_logit) / top_p_norm;
        if (cum >= params_.top_p) {
          cut = true;
          break;
        }
      }
      if (cut) {
        m = i + 1;
      } else if (k == m) {
        break;
      } else {
        k = std::min(m, k * 4);
      }
    }
  }

  // Temperature, softmax (unnormalized) and the draw.
  // Divide (not multiply by 1/T): a tiny T must give exp(0) = 1 for the max, not exp(0 * inf).
  const float temp = params_.temperature;
  double sum = 0.0;
  for (size_t i = 0; i < m; ++i) {
    probs_[i] = std::exp((candidates_[i].logit - max_logit) / temp);
    sum += probs_[i];
  }
  const double target = u * sum;
  double acc = 0.0;
  size_t last_positive = 0;
  for (size_t i = 0; i < m; ++i) {
    if (probs_[i] <= 0.0f) continue;
    acc += probs_[i];
    last_positive = i;
    if (target < acc) return candidates_[i].id;
  }
  return candidates_[last_positive].id;  // rounding at the very top of the range
}

}  // namespace llmt
