// Names of task types and merge kinds (include/llmthreads/tasks.h).
#include "llmthreads/tasks.h"

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
  }
  return "?";
}

Result<TaskType> parse_task_type(const std::string& name) {
  if (name == "generate") return TaskType::kGenerate;
  if (name == "classify") return TaskType::kClassify;
  if (name == "extract" || name == "qa") return TaskType::kExtract;
  if (name == "summarize") return TaskType::kSummarize;
  return invalid_argument("unknown task '" + name +
                          "' (expected generate, classify, extract, qa or summarize)");
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

}  // namespace llmt
