// Names of task types and merge kinds (include/llmthreads/tasks.h): one table each.
#include "core/name-table.h"
#include "llmthreads/tasks.h"

namespace llmt {

namespace {

// "qa" is an alias of extract (name_of gives "extract").
constexpr NameTable<TaskType> kTaskNames[] = {{TaskType::kGenerate, "generate"},
                                              {TaskType::kClassify, "classify"},
                                              {TaskType::kExtract, "extract"},
                                              {TaskType::kExtract, "qa"},
                                              {TaskType::kSummarize, "summarize"}};
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

}  // namespace llmt
