// Names of task types and merge kinds (include/llmthreads/tasks.h): one table each.
#include "core/name-table.h"
#include "llmthreads/tasks.h"

#include <algorithm>
#include <cmath>

namespace llmt {

namespace {

// "qa" is an alias of extract (name_of gives "extract").
constexpr NameTable<TaskType> kTaskNames[] = {
    {TaskType::kGenerate, "generate"},   {TaskType::kClassify, "classify"},
    {TaskType::kExtract, "extract"},     {TaskType::kExtract, "qa"},
    {TaskType::kSummarize, "summarize"}, {TaskType::kEmbed, "embed"}};
constexpr NameTable<MergeKind> kMergeNames[] = {{MergeKind::kDefault, "default"},
                                                {MergeKind::kConcat, "concat"},
                                                {MergeKind::kVote, "vote"},
                                                {MergeKind::kMean, "mean"},
                                                {MergeKind::kWeightedMean, "weighted-mean"},
                                                {MergeKind::kReduce, "reduce"}};

}  // namespace

const char* task_type_name(TaskType t) {
  return name_of(kTaskNames, t);
}
Result<TaskType> parse_task_type(const std::string& name) {
  return parse_of(kTaskNames, name, "task");
}
const char* merge_kind_name(MergeKind m) {
  return name_of(kMergeNames, m);
}
Result<MergeKind> parse_merge_kind(const std::string& name) {
  return parse_of(kMergeNames, name, "merge");
}

void normalize_embedding(std::vector<float>* v, int32_t mode) {
  if (mode < 0) return;
  double sum = 0.0;
  if (mode == 0) {
    for (float x : *v) sum = std::max(sum, std::abs(static_cast<double>(x)));
    sum /= 32760.0;
  } else if (mode == 1) {
    for (float x : *v) sum += std::abs(static_cast<double>(x));
  } else if (mode == 2) {
    for (float x : *v) sum += static_cast<double>(x) * x;
    sum = std::sqrt(sum);
  } else {
    for (float x : *v) sum += std::pow(std::abs(static_cast<double>(x)), mode);
    sum = std::pow(sum, 1.0 / mode);
  }
  const double scale = sum > 0.0 ? 1.0 / sum : 0.0;
  for (float& x : *v) x = static_cast<float>(x * scale);
}

}  // namespace llmt
