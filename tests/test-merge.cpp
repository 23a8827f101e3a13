// Merge operators: order restoration and its validation (missing, duplicate, out-of-range piece
// indices), concatenation in shuffled completion orders, majority vote with its tie-breaks, mean
// and weighted mean of class probabilities with exact numbers, and reduce grouping.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "tasks/merge.h"
#include "tasks/split.h"

namespace llmt::tasks {
namespace {

template <typename T>
std::vector<T> shuffled(std::vector<T> v, uint32_t seed) {
  std::mt19937 rng(seed);
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

void expect_invalid(const Status& s, const std::string& part) {
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find(part), std::string::npos) << s.message();
}

TEST(RestoreOrder, Permutation) {
  const std::vector<int32_t> indices = {2, 0, 3, 1};
  auto r = restore_order(indices, 4);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(*r, (std::vector<size_t>{1, 3, 0, 2}));
}

TEST(RestoreOrder, Errors) {
  expect_invalid(restore_order(std::vector<int32_t>{0, 1, 3}, 3).status(),
                 "piece index 3 is out of range [0, 3)");
  expect_invalid(restore_order(std::vector<int32_t>{0, -1, 2}, 3).status(),
                 "piece index -1 is out of range");
  expect_invalid(restore_order(std::vector<int32_t>{1, 0, 1}, 3).status(),
                 "piece index 1 has more than one result");
  expect_invalid(restore_order(std::vector<int32_t>{2, 0}, 3).status(),
                 "piece index 1 has no result");
  expect_invalid(restore_order(std::vector<int32_t>{}, 2).status(), "piece index 0 has no result");
  expect_invalid(restore_order(std::vector<int32_t>{}, 0).status(), "0 pieces");
}

TEST(MergeConcatenate, ShuffledEqualsInOrder) {
  std::vector<TextResult> in_order;
  for (int32_t i = 0; i < 20; ++i) in_order.push_back({i, "piece " + std::to_string(i)});
  auto expected = merge_concatenate(in_order, 20);
  ASSERT_TRUE(expected.is_ok());
  EXPECT_EQ(expected->substr(0, 16), "piece 0\npiece 1\n");
  EXPECT_EQ(std::count(expected->begin(), expected->end(), '\n'), 19);
  for (uint32_t seed = 0; seed < 20; ++seed) {
    auto r = merge_concatenate(shuffled(in_order, seed), 20);
    ASSERT_TRUE(r.is_ok());
    EXPECT_EQ(*r, *expected);
  }
}

TEST(MergeConcatenate, SeparatorAndEdgeCases) {
  std::vector<TextResult> r = {{1, "b"}, {2, ""}, {0, "a"}};
  EXPECT_EQ(*merge_concatenate(r, 3, " | "), "a | b | ");
  EXPECT_EQ(*merge_concatenate(r, 3, ""), "ab");
  EXPECT_EQ(*merge_concatenate(std::vector<TextResult>{{0, "only"}}, 1), "only");
  expect_invalid(merge_concatenate(r, 4).status(), "piece index 3 has no result");
  r.push_back({0, "again"});
  expect_invalid(merge_concatenate(r, 3).status(), "piece index 0 has more than one result");
  expect_invalid(merge_concatenate(std::vector<TextResult>{{5, "x"}}, 1).status(),
                 "piece index 5 is out of range [0, 1)");
}

TEST(MergeMajorityVote, PlainMajority) {
  const std::vector<ClassResult> r = {{0, 1, {}}, {1, 2, {}}, {2, 1, {}}, {3, 0, {}}, {4, 1, {}}};
  auto c = merge_majority_vote(r, 5, 3);
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->label, 1);
  EXPECT_EQ(c->votes, (std::vector<int32_t>{1, 3, 1}));
  EXPECT_EQ(c->probs, (std::vector<double>{0.2, 0.6, 0.2}));
  for (uint32_t seed = 0; seed < 10; ++seed) {
    auto s = merge_majority_vote(shuffled(r, seed), 5, 3);
    ASSERT_TRUE(s.is_ok());
    EXPECT_EQ(s->label, 1);
    EXPECT_EQ(s->votes, c->votes);
  }
}

TEST(MergeMajorityVote, TieBrokenBySummedProbabilityThenLabelOrder) {
  // Labels 0 and 2 tie with 2 votes each; label 2 has more summed probability.
  const std::vector<ClassResult> r = {{0, 0, {0.5, 0.25, 0.25}},
                                      {1, 2, {0.25, 0.25, 0.5}},
                                      {2, 0, {0.5, 0.5, 0.0}},
                                      {3, 2, {0.0, 0.25, 0.75}}};
  auto c = merge_majority_vote(r, 4, 3);
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->votes, (std::vector<int32_t>{2, 0, 2}));
  EXPECT_EQ(c->label, 2);  // mass: label 0 = 1.25, label 2 = 1.5
  // Labels from argmax of probs (label = -1), with unnormalized rows.
  const std::vector<ClassResult> argmax = {{1, -1, {1, 3}}, {0, -1, {2, 1}}};
  auto a = merge_majority_vote(argmax, 2, 2);
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ(a->votes, (std::vector<int32_t>{1, 1}));
  // Normalized masses: label 0 = 2/3 + 1/4, label 1 = 1/3 + 3/4 -> label 1.
  EXPECT_EQ(a->label, 1);
  // Full tie without probabilities: the first label in the given order.
  const std::vector<ClassResult> tie = {{0, 2, {}}, {1, 1, {}}};
  auto t = merge_majority_vote(tie, 2, 3);
  ASSERT_TRUE(t.is_ok());
  EXPECT_EQ(t->label, 1);
  // Equal masses too: first label.
  const std::vector<ClassResult> even = {{0, 0, {0.5, 0.5}}, {1, 1, {0.5, 0.5}}};
  EXPECT_EQ(merge_majority_vote(even, 2, 2)->label, 0);
}

TEST(MergeMean, ExactNumbers) {
  const std::vector<ClassResult> r = {{2, -1, {0.5, 0.5, 0.0}},
                                      {0, -1, {1.0, 0.0, 0.0}},
                                      {1, -1, {0.0, 0.25, 0.75}},
                                      {3, -1, {0.5, 0.25, 0.25}}};
  auto c = merge_mean(r, 4, 3);
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_DOUBLE_EQ(c->probs[0], 0.5);
  EXPECT_DOUBLE_EQ(c->probs[1], 0.25);
  EXPECT_DOUBLE_EQ(c->probs[2], 0.25);
  EXPECT_EQ(c->label, 0);
  EXPECT_EQ(c->votes, (std::vector<int32_t>{3, 0, 1}));  // argmax {0.5, 0.5, 0} is label 0
  for (uint32_t seed = 0; seed < 10; ++seed) {
    auto s = merge_mean(shuffled(r, seed), 4, 3);
    ASSERT_TRUE(s.is_ok());
    EXPECT_EQ(s->probs, c->probs);  // same order of additions: bitwise equal
    EXPECT_EQ(s->label, 0);
  }
}

TEST(MergeMean, RowsAreNormalizedAndResultSumsToOne) {
  // Unnormalized rows {2, 6} -> {0.25, 0.75} and {3, 1} -> {0.75, 0.25}... mean {0.5, 0.5}; the
  // tie goes to the first label.
  const std::vector<ClassResult> r = {{0, -1, {2, 6}}, {1, -1, {3, 1}}};
  auto c = merge_mean(r, 2, 2);
  ASSERT_TRUE(c.is_ok());
  EXPECT_DOUBLE_EQ(c->probs[0], 0.5);
  EXPECT_DOUBLE_EQ(c->probs[1], 0.5);
  EXPECT_EQ(c->label, 0);
  const std::vector<ClassResult> thirds = {
      {0, -1, {1, 1, 1}}, {1, -1, {0.1, 0.7, 0.2}}, {2, -1, {0.3, 0.3, 0.4}}};
  auto t = merge_mean(thirds, 3, 3);
  ASSERT_TRUE(t.is_ok());
  EXPECT_NEAR(std::accumulate(t->probs.begin(), t->probs.end(), 0.0), 1.0, 1e-15);
  EXPECT_EQ(t->label, 1);
}

TEST(MergeWeightedMean, ExactNumbers) {
  const std::vector<ClassResult> r = {{1, -1, {0.0, 1.0}}, {0, -1, {1.0, 0.0}}};
  const std::vector<double> w = {3.0, 1.0};  // piece 0 weighs 3
  auto c = merge_weighted_mean(r, 2, 2, w);
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_DOUBLE_EQ(c->probs[0], 0.75);
  EXPECT_DOUBLE_EQ(c->probs[1], 0.25);
  EXPECT_EQ(c->label, 0);
  // A zero weight leaves a piece out of the mean (it still counts as a vote).
  const std::vector<double> w0 = {0.0, 2.0};
  auto z = merge_weighted_mean(r, 2, 2, w0);
  ASSERT_TRUE(z.is_ok());
  EXPECT_EQ(z->probs, (std::vector<double>{0.0, 1.0}));
  EXPECT_EQ(z->label, 1);
  EXPECT_EQ(z->votes, (std::vector<int32_t>{1, 1}));
}

TEST(MergeWeightedMean, WeightsFromPieces) {
  const std::string doc = "Short. A much longer sentence here.";
  const std::vector<Piece> pieces = split_sentences(doc);
  ASSERT_EQ(pieces.size(), 2u);
  const std::vector<double> w = byte_weights(pieces);
  EXPECT_EQ(w, (std::vector<double>{6.0, 28.0}));
  const std::vector<ClassResult> r = {{0, -1, {1.0, 0.0}}, {1, -1, {0.0, 1.0}}};
  auto c = merge_weighted_mean(r, 2, 2, w);
  ASSERT_TRUE(c.is_ok());
  EXPECT_DOUBLE_EQ(c->probs[0], 6.0 / 34.0);
  EXPECT_DOUBLE_EQ(c->probs[1], 28.0 / 34.0);
  EXPECT_EQ(c->label, 1);
  expect_invalid(token_weights(pieces).status(), "piece 0 has no token count");
  std::vector<Piece> counted = pieces;
  counted[0].n_tokens = 2;
  counted[1].n_tokens = 7;
  EXPECT_EQ(*token_weights(counted), (std::vector<double>{2.0, 7.0}));
}

TEST(MergeClasses, Validation) {
  const std::vector<ClassResult> ok = {{0, 0, {0.5, 0.5}}, {1, 1, {0.5, 0.5}}};
  expect_invalid(merge_majority_vote(ok, 2, 0).status(), "label set is empty");
  expect_invalid(merge_majority_vote(ok, 3, 2).status(), "piece index 2 has no result");
  expect_invalid(
      merge_mean(std::vector<ClassResult>{{0, 0, {1, 0}}, {0, 0, {1, 0}}}, 2, 2).status(),
      "piece index 0 has more than one result");
  expect_invalid(merge_mean(std::vector<ClassResult>{{7, 0, {1, 0}}}, 1, 2).status(),
                 "piece index 7 is out of range [0, 1)");
  expect_invalid(merge_majority_vote(std::vector<ClassResult>{{0, 2, {}}}, 1, 2).status(),
                 "piece 0 has label 2, out of range [0, 2)");
  expect_invalid(merge_majority_vote(std::vector<ClassResult>{{0, -1, {}}}, 1, 2).status(),
                 "piece 0 has neither a label nor probabilities");
  expect_invalid(merge_mean(std::vector<ClassResult>{{0, 1, {}}}, 1, 2).status(),
                 "piece 0 has no class probabilities");
  expect_invalid(merge_mean(std::vector<ClassResult>{{0, -1, {1, 0, 0}}}, 1, 2).status(),
                 "piece 0 has 3 probabilities for 2 labels");
  expect_invalid(merge_mean(std::vector<ClassResult>{{0, -1, {-0.5, 1.5}}}, 1, 2).status(),
                 "negative or not finite");
  expect_invalid(merge_mean(std::vector<ClassResult>{{0, -1, {NAN, 1}}}, 1, 2).status(),
                 "negative or not finite");
  expect_invalid(merge_mean(std::vector<ClassResult>{{0, -1, {0, 0}}}, 1, 2).status(),
                 "do not sum to a positive number");
  expect_invalid(merge_weighted_mean(ok, 2, 2, std::vector<double>{1}).status(),
                 "1 weights for 2 pieces");
  expect_invalid(merge_weighted_mean(ok, 2, 2, std::vector<double>{1, -1}).status(),
                 "weight of piece 1 is negative");
  expect_invalid(merge_weighted_mean(ok, 2, 2, std::vector<double>{0, 0}).status(),
                 "weights do not sum to a positive number");
}

// ---- reduce groups ----

int32_t count_words(std::string_view s) {
  int32_t n = 0;
  bool in_word = false;
  for (char c : s) {
    const bool space = c == ' ';
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

std::vector<std::pair<size_t, size_t>> spans(const std::vector<ReduceGroup>& g) {
  std::vector<std::pair<size_t, size_t>> out;
  for (const ReduceGroup& r : g) out.emplace_back(r.begin, r.end);
  return out;
}

TEST(GroupForReduce, GreedyConsecutiveGroups) {
  // Word counts: 3, 2, 4, 1, 6, 2, 2.
  const std::vector<std::string> texts = {"a b c",       "d e", "f g h i", "j",
                                          "k l m n o p", "q r", "s t"};
  auto g = group_for_reduce(texts, 5, count_words);
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  EXPECT_EQ(spans(*g), (std::vector<std::pair<size_t, size_t>>{
                           {0, 2}, {2, 4}, {4, 5}, {5, 7}}));  // 3+2 | 4+1 | 6 (alone) | 2+2
  // One separator token between texts in a group.
  auto s = group_for_reduce(texts, 5, count_words, 1);
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(spans(*s), (std::vector<std::pair<size_t, size_t>>{
                           {0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 7}}));
  // A large budget: one group.
  EXPECT_EQ(spans(*group_for_reduce(texts, 100, count_words)),
            (std::vector<std::pair<size_t, size_t>>{{0, 7}}));
  // Budget 1: every text alone ("j" fits, the others are over budget).
  EXPECT_EQ(group_for_reduce(texts, 1, count_words)->size(), 7u);
  EXPECT_TRUE(group_for_reduce(std::vector<std::string>{}, 5, count_words)->empty());
}

TEST(GroupForReduce, CountsEachTextOnceAndValidates) {
  const std::vector<std::string> texts = {"a", "b", "c"};
  int calls = 0;
  auto counter = [&](std::string_view) {
    ++calls;
    return 1;
  };
  ASSERT_TRUE(group_for_reduce(texts, 2, counter).is_ok());
  EXPECT_EQ(calls, 3);
  expect_invalid(group_for_reduce(texts, 0, counter).status(), "budget must be at least 1");
  expect_invalid(group_for_reduce(texts, 4, counter, -1).status(), "separator token count");
  expect_invalid(
      group_for_reduce(texts, 4, [](std::string_view s) { return s == "b" ? -3 : 1; }).status(),
      "returned -3 for text 1");
  expect_invalid(group_for_reduce(texts, 4, nullptr).status(), "no token counter");
}

}  // namespace
}  // namespace llmt::tasks
