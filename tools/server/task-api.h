// The JSON side of the server's /v1/tasks endpoints: a task request body -> a validated TaskSpec
// and its documents, and a DocumentResult -> its JSON. No I/O and no HTTP here (server-tasks.cpp
// runs the Job and keeps the tasks), so all of it is unit-testable.
//
// Request body (a JSON object; unknown fields are ignored):
//   task        "classify" | "generate" | "extract" | "summarize" | "embed" ("qa" = extract)
//               required
//   prompt      template containing "{text}"                          default "{text}"
//   labels      array of >= 2 distinct non-empty strings (classify)
//   choices     array of >= 2 distinct non-empty strings (extract: scored like labels)
//   documents   array of {"id": string | integer (optional; default its position), "text": string}
//   inputs      array of strings (ids are their positions); exactly one of documents / inputs,
//               1 to kMaxTaskDocuments entries
//   split       "none" | "sentence" | "paragraph" | "window:N[:M]" | "hierarchical[:MAX]"
//   merge       "default" | "concat" | "vote" | "mean" | "weighted-mean" | "reduce"
//   max_tokens  positive integer (generation threads; lowered to fit the context)
//   priority    integer (every thread of the task; higher runs first)
//   tenant      string (fair share across tenants)
//   embd_normalize  integer >= -1 (embed: llmt::normalize_embedding's mode; default 2, unit length)
// Nothing in a request names a file path.
//
// Thread-safety: every function here is pure (no shared state); call from any thread.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llmthreads/status.h"
#include "llmthreads/tasks.h"

namespace llmt::server {

// The most documents one task may have.
inline constexpr size_t kMaxTaskDocuments = 10000;

struct TaskRequest {
  TaskSpec spec;
  std::vector<nlohmann::json> ids;  // per document, in input order: the client's id
  std::vector<std::string> texts;   // per document, in input order
};

// Parses and validates `body`. Errors: kInvalidArgument naming the field at fault (the split and
// merge strings and the label rules are checked again by Job::create against the model).
Status parse_task_request(const nlohmann::json& body, TaskRequest* out);

// One document's result: {"id", "status": "completed" | "failed", "error": null |
// {"code", "message"}} plus, when it succeeded, the fields of common/task-render.h (the same as
// a `llmthreads run` output line's "result": scored tasks "label" (classify) or "answer"
// (extract) and "probs" {option: probability, 6 significant digits}; generation tasks "text" and
// "finish_reason" ("stop" | "length"); embed "embedding"; n_pieces, n_reduce_rounds, votes when
// they apply) and "usage".
nlohmann::json document_result_json(const DocumentResult& r, const nlohmann::json& id,
                                    const TaskSpec& spec);

}  // namespace llmt::server
