// Names of task types and merge kinds (include/llmthreads/tasks.h).
#include "llmthreads/tasks.h"

#include <algorithm>
#include <cmath>

namespace llmt {

const char* task_type_name(TaskType t) {
  switch (t) {
    case TaskType::kGenerate:
      return "generate";
    case TaskType::kClassify:
      return "classify";
    case TaskType::kExtract:
      return "extract";
    case TaskType::kSummarize:
      return "summarize";
    case TaskType::kEmbed:
      return "embed";
  }
  return "?";
}

Result<TaskType> parse_task_type(const std::string& name) {
  if (name == "generate") return TaskType::kGenerate;
  if (name == "classify") return TaskType::kClassify;
  if (name == "extract" || name == "qa") return TaskType::kExtract;
  if (name == "summarize") return TaskType::kSummarize;
  if (name == "embed") return TaskType::kEmbed;
  return invalid_argument("unknown task '" + name +
                          "' (expected generate, classify, extract, qa, summarize or embed)");
}

const char* merge_kind_name(MergeKind m) {
  switch (m) {
    case MergeKind::kDefault:
      return "default";
    case MergeKind::kConcat:
      return "concat";
    case MergeKind::kVote:
      return "vote";
    case MergeKind::kMean:
      return "mean";
    case MergeKind::kWeightedMean:
      return "weighted-mean";
    case MergeKind::kReduce:
      return "reduce";
  }
  return "?";
}

Result<MergeKind> parse_merge_kind(const std::string& name) {
  for (MergeKind m : {MergeKind::kDefault, MergeKind::kConcat, MergeKind::kVote, MergeKind::kMean,
                      MergeKind::kWeightedMean, MergeKind::kReduce}) {
    if (name == merge_kind_name(m)) return m;
  }
  return invalid_argument("unknown merge '" + name +
                          "' (expected default, concat, vote, mean, weighted-mean or reduce)");
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
