// Batch invariance of Context::decode(): a sequence's logits are bitwise the same whether it runs
// alone or inside steps that carry other sequences (prefill of some mixed with decode of others,
// entries interleaved in any order), whether its prompt goes in one chunk or several, and with 1
// or 2 threads; for the F32 and F16 KV caches. Also decode() of sequence 0 against eval(), and
// errors that must leave the state unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "llmthreads/model.h"
#include "test-util.h"
#include "tier-util.h"

namespace {

using Entry = llmt::Context::BatchEntry;
using Logits = std::vector<float>;

struct Case {
  const char* model;  // path under the data folder
  llmt::KvType kv;
  std::vector<int> n_others;  // batch sizes (other sequences) to try
  int32_t prompt_len;         // sequence A's prompt
  int32_t n_decode;           // greedy steps of sequence A
};

// Case x CPU tier: the model is loaded with LLMT_ISA capped at the tier, so the invariance is
// checked within each tier the machine has (others are skipped by name).
using TierCase = std::tuple<Case, llmt::kernels::Isa>;

std::string case_name(const ::testing::TestParamInfo<TierCase>& info) {
  const Case& c = std::get<0>(info.param);
  std::string m = std::filesystem::path(c.model).stem().string();
  for (char& ch : m) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return m + (c.kv == llmt::KvType::kF16 ? "_f16_" : "_f32_") +
         llmt::kernels::isa_name(std::get<1>(info.param));
}

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

bool bitwise_equal(std::span<const float> a, const Logits& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), b.size() * sizeof(float)) == 0;
}

class BatchInvariance : public ::testing::TestWithParam<TierCase> {
 protected:
  static const Case& GetParam() { return std::get<0>(TestWithParam<TierCase>::GetParam()); }
  static llmt::kernels::Isa tier() { return std::get<1>(TestWithParam<TierCase>::GetParam()); }

  void SetUp() override {
    LLMT_REQUIRE_DATA(GetParam().model);
    LLMT_REQUIRE_TIER(tier());
    const llmt::test::ScopedTier scoped_tier(tier());
    auto m = llmt::Model::load(llmt::test::data_path(GetParam().model));
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    ASSERT_EQ((*m)->isa(), static_cast<int>(tier())) << "model bound another tier";
    model_ = *m;
    n_vocab_ = model_->hparams().n_vocab;
    std::mt19937 rng(1234);
    prompt_a_.resize(GetParam().prompt_len);
    for (auto& t : prompt_a_) t = static_cast<int32_t>(rng() % n_vocab_);
  }

  std::unique_ptr<llmt::Context> make(int32_t n_seq, int32_t n_threads, int32_t n_batch = 512) {
    llmt::ContextOptions o;
    o.n_ctx = 96;
    o.n_seq_max = n_seq;
    o.n_threads = n_threads;
    o.n_batch = n_batch;
    o.kv_type = GetParam().kv;
    auto c = llmt::Context::create(model_, o);
    EXPECT_TRUE(c.is_ok()) << c.status().to_string();
    return c.is_ok() ? std::move(*c) : nullptr;
  }

  // Sequence A alone in slot `seq` of `ctx`: the prompt in chunks of `chunk` tokens, then greedy
  // steps. Returns the logits after the prompt and after each step.
  std::vector<Logits> run_alone(llmt::Context& ctx, int32_t seq, int32_t chunk) {
    std::vector<Logits> out;
    const int32_t n_prompt = static_cast<int32_t>(prompt_a_.size());
    for (int32_t done = 0; done < n_prompt;) {
      const int32_t n = std::min(chunk, n_prompt - done);
      std::vector<Entry> b;
      for (int32_t i = 0; i < n; ++i) {
        b.push_back({prompt_a_[done + i], seq, done + i, done + i == n_prompt - 1});
      }
      EXPECT_TRUE(ctx.decode(b).is_ok());
      done += n;
    }
    out.emplace_back(ctx.batch_logits(0).begin(), ctx.batch_logits(0).end());
    for (int32_t s = 0; s < GetParam().n_decode; ++s) {
      const Entry e{argmax(out.back()), seq, n_prompt + s, true};
      EXPECT_TRUE(ctx.decode({&e, 1}).is_ok());
      out.emplace_back(ctx.batch_logits(0).begin(), ctx.batch_logits(0).end());
    }
    return out;
  }

  // Sequence A in slot a_seq among n_others other sequences (slots != a_seq) of random prompts
  // and lengths. Every step carries: A's next prompt chunk (3 tokens) or decode token; for each
  // other sequence a prefill chunk of 1..9 tokens, a decode token, or nothing (not started yet /
  // finished). Entries of different sequences are interleaved at random; some other entries
  // want logits too. Returns A's logits like run_alone().
  std::vector<Logits> run_batched(llmt::Context& ctx, int32_t a_seq, int n_others, uint32_t seed) {
    std::mt19937 rng(seed);
    struct Other {
      int32_t seq;
      int32_t start;                // first step
      std::vector<int32_t> tokens;  // prompt then decode tokens (random)
      int32_t n_prompt;
      int32_t fed = 0;
    };
    std::vector<Other> others;
    const int32_t n_ctx = ctx.n_ctx();
    for (int k = 0, seq = 0; k < n_others; ++k, ++seq) {
      if (seq == a_seq) ++seq;
      Other o;
      o.seq = seq;
      o.start = static_cast<int32_t>(rng() % 6);
      o.n_prompt = 1 + static_cast<int32_t>(rng() % 40);
      const int32_t total = std::min<int32_t>(n_ctx, o.n_prompt + 1 + rng() % 30);
      for (int32_t i = 0; i < total; ++i)
        o.tokens.push_back(static_cast<int32_t>(rng() % n_vocab_));
      others.push_back(std::move(o));
    }
    const int32_t n_prompt = static_cast<int32_t>(prompt_a_.size());
    std::vector<Logits> out;
    int32_t a_fed = 0;
    int32_t a_next = -1;  // A's next decode token
    while (static_cast<int32_t>(out.size()) < GetParam().n_decode + 1) {
      const int32_t step = static_cast<int32_t>(out.size()) + a_fed;  // any increasing counter
      // Segments per sequence, then a random interleaving that keeps each one's order.
      std::vector<std::vector<Entry>> segs;
      std::vector<Entry> a_seg;
      bool a_wants = false;
      if (a_fed < n_prompt) {
        const int32_t n = std::min(3, n_prompt - a_fed);
        for (int32_t i = 0; i < n; ++i) {
          const bool last = a_fed + i == n_prompt - 1;
          a_seg.push_back({prompt_a_[a_fed + i], a_seq, a_fed + i, last});
          a_wants = a_wants || last;
        }
        a_fed += n;
      } else {
        a_seg.push_back({a_next, a_seq, a_fed, true});
        ++a_fed;
        a_wants = true;
      }
      segs.push_back(a_seg);
      for (auto& o : others) {
        if (step < o.start || o.fed >= static_cast<int32_t>(o.tokens.size())) continue;
        const int32_t left = static_cast<int32_t>(o.tokens.size()) - o.fed;
        int32_t n = o.fed < o.n_prompt
                        ? std::min(o.n_prompt - o.fed, 1 + static_cast<int32_t>(rng() % 9))
                        : 1;
        n = std::min(n, left);
        std::vector<Entry> seg;
        for (int32_t i = 0; i < n; ++i) {
          seg.push_back({o.tokens[o.fed + i], o.seq, o.fed + i, rng() % 4 == 0});
        }
        o.fed += n;
        segs.push_back(seg);
      }
      std::vector<Entry> batch;
      std::vector<size_t> next(segs.size(), 0);
      size_t remaining = 0;
      for (const auto& sg : segs) remaining += sg.size();
      while (remaining > 0) {
        size_t s = rng() % segs.size();
        while (next[s] == segs[s].size()) s = (s + 1) % segs.size();
        batch.push_back(segs[s][next[s]++]);
        --remaining;
      }
      const auto st = ctx.decode(batch);
      EXPECT_TRUE(st.is_ok()) << st.to_string();
      if (!st.is_ok()) return out;
      if (a_wants) {
        // A's wanted entry is the j-th wanted entry of the batch.
        int32_t j = 0;
        for (const Entry& e : batch) {
          if (e.seq_id == a_seq && e.want_logits) break;
          j += e.want_logits ? 1 : 0;
        }
        const auto l = ctx.batch_logits(j);
        out.emplace_back(l.begin(), l.end());
        a_next = argmax(l);
      }
    }
    return out;
  }

  void expect_same(const std::vector<Logits>& ref, const std::vector<Logits>& got,
                   const std::string& what) {
    ASSERT_EQ(ref.size(), got.size()) << what;
    for (size_t s = 0; s < ref.size(); ++s) {
      ASSERT_TRUE(bitwise_equal(got[s], ref[s])) << what << ": logits differ at step " << s;
    }
  }

  std::shared_ptr<const llmt::Model> model_;
  int32_t n_vocab_ = 0;
  std::vector<int32_t> prompt_a_;
};

TEST_P(BatchInvariance, AloneChunkedThreadsAndEval) {
  auto ref_ctx = make(1, 1);
  ASSERT_TRUE(ref_ctx);
  const auto ref = run_alone(*ref_ctx, 0, 1 << 20);
  ASSERT_EQ(ref.size(), static_cast<size_t>(GetParam().n_decode + 1));

  // Token by token, and in chunks of 5, on 2 threads, in another slot of a bigger context.
  for (int32_t chunk : {1, 5}) {
    auto c = make(4, 2);
    ASSERT_TRUE(c);
    expect_same(ref, run_alone(*c, 2, chunk), "alone, chunk " + std::to_string(chunk));
  }
  // n_batch 4 splits the prompt inside decode().
  {
    auto c = make(1, 2, 4);
    ASSERT_TRUE(c);
    expect_same(ref, run_alone(*c, 0, 1 << 20), "n_batch 4");
  }
  // eval() is decode() of sequence 0.
  {
    auto c = make(1, 2);
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->eval(prompt_a_).is_ok());
    ASSERT_TRUE(bitwise_equal(c->logits(), ref[0])) << "eval prompt";
    for (int32_t s = 0; s < GetParam().n_decode; ++s) {
      const int32_t t = argmax(c->logits());
      ASSERT_TRUE(c->eval({&t, 1}).is_ok());
      ASSERT_TRUE(bitwise_equal(c->logits(), ref[s + 1])) << "eval step " << s;
    }
  }
}

TEST_P(BatchInvariance, InsideBatchesOfOtherSequences) {
  auto ref_ctx = make(1, 1);
  ASSERT_TRUE(ref_ctx);
  const auto ref = run_alone(*ref_ctx, 0, 1 << 20);
  for (int n_others : GetParam().n_others) {
    for (int32_t threads : {1, 2}) {
      auto c = make(n_others + 1, threads);
      ASSERT_TRUE(c);
      const int32_t a_seq = n_others / 2;
      expect_same(ref, run_batched(*c, a_seq, n_others, 77 + n_others),
                  std::to_string(n_others) + " others, " + std::to_string(threads) + " threads");
      // The slot is reusable after seq_clear(), with the others' caches still full.
      c->seq_clear(a_seq);
      ASSERT_EQ(c->seq_len(a_seq), 0);
      expect_same(ref, run_alone(*c, a_seq, 7),
                  std::to_string(n_others) + " others, after seq_clear");
    }
  }
}

TEST_P(BatchInvariance, ErrorsLeaveStateUnchanged) {
  auto ref_ctx = make(2, 2);
  ASSERT_TRUE(ref_ctx);
  const auto ref = run_alone(*ref_ctx, 1, 1 << 20);

  auto c = make(2, 2);
  ASSERT_TRUE(c);
  std::vector<Entry> prompt;
  for (int32_t i = 0; i < static_cast<int32_t>(prompt_a_.size()); ++i) {
    prompt.push_back({prompt_a_[i], 1, i, i + 1 == static_cast<int32_t>(prompt_a_.size())});
  }
  // Each bad batch is refused and changes nothing (the valid entries before the bad one
  // included).
  const int32_t t0 = prompt_a_[0];
  const std::vector<std::vector<Entry>> bad = {
      {},                                           // empty
      {{t0, 1, 1, false}},                          // pos gap
      {{t0, 1, 0, false}, {t0, 1, 0, false}},       // repeated pos
      {{t0, 2, 0, false}},                          // seq id out of range
      {{t0, -1, 0, false}},                         // negative seq id
      {{t0, 0, 0, true}, {n_vocab_, 1, 0, false}},  // bad token after a good entry
      {{-1, 0, 0, false}},                          // negative token
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_FALSE(c->decode(bad[i]).is_ok()) << "bad batch " << i;
    EXPECT_EQ(c->seq_len(0), 0);
    EXPECT_EQ(c->seq_len(1), 0);
  }
  ASSERT_TRUE(c->decode(prompt).is_ok());
  ASSERT_TRUE(bitwise_equal(c->batch_logits(0), ref[0]));
  EXPECT_TRUE(c->batch_logits(1).empty());
  // A full sequence is refused; the other one is still usable.
  std::vector<Entry> fill;
  for (int32_t p = 0; p < c->n_ctx(); ++p) fill.push_back({t0, 0, p, false});
  ASSERT_TRUE(c->decode(fill).is_ok());
  EXPECT_EQ(c->seq_len(0), c->n_ctx());
  EXPECT_EQ(c->n_logits(), 0);
  const Entry over{t0, 0, c->n_ctx(), true};
  EXPECT_FALSE(c->decode({&over, 1}).is_ok());
  EXPECT_EQ(c->seq_len(0), c->n_ctx());
  const Entry next{argmax(ref[0]), 1, static_cast<int32_t>(prompt_a_.size()), true};
  ASSERT_TRUE(c->decode({&next, 1}).is_ok());
  ASSERT_TRUE(bitwise_equal(c->batch_logits(0), ref[1]));
  EXPECT_EQ(c->seq_len(1), static_cast<int32_t>(prompt_a_.size()) + 1);
}

INSTANTIATE_TEST_SUITE_P(
    Models, BatchInvariance,
    ::testing::Combine(
        ::testing::Values(
            Case{"models/stories260K.gguf", llmt::KvType::kF32, {1, 3, 7, 15, 31, 63}, 20, 12},
            Case{"models/stories260K.gguf", llmt::KvType::kF16, {1, 3, 7, 15, 31, 63}, 20, 12},
            Case{"models/synth/synth-tiny-q4_k_m.gguf",
                 llmt::KvType::kF32,
                 {1, 3, 7, 15, 31, 63},
                 20,
                 12},
            Case{"models/synth/synth-tiny-q4_k_m.gguf",
                 llmt::KvType::kF16,
                 {1, 3, 7, 15, 31, 63},
                 20,
                 12},
            Case{"models/synth/synth-125m-q4_k_m.gguf", llmt::KvType::kF32, {3}, 12, 4},
            Case{"models/synth/synth-125m-q4_k_m.gguf", llmt::KvType::kF16, {3}, 12, 4}),
        ::testing::ValuesIn(llmt::test::kTestTiers)),
    case_name);

}  // namespace
