// The one rendering of a DocumentResult as JSON, shared by `llmthreads run` (the "result" of an
// output line) and the server's /v1/tasks (each entry of "results"), and next the Batches API.
//
// Scored tasks (classify, extract with choices): "label" (classify) or "answer" (extract) = the
// winning option, "probs" {option: probability to 6 significant digits}, "votes" {option: count}
// with the vote merge. Generation tasks: "text" and "finish_reason" ("stop" | "length"). Embed:
// "embedding" [n_embd floats] (normalized per TaskSpec::embd_normalize). Then
// "n_pieces" when the document was split into more than one piece, "n_reduce_rounds" when a
// reduce ran, and "pieces" (TaskSpec::piece_details): [{"index", "begin", "end", "label" and
// "probs" [...] or "text" and "finish_reason"}].
//
// Thread-safety: pure functions; call from any thread.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llmthreads/tasks.h"

namespace llmt::tasks {

// The option names a result's label indexes: the spec's labels (classify) or choices.
const std::vector<std::string>& result_options(const TaskSpec& spec);

// A probability as rendered: 6 significant digits.
double round_prob(double p);

// The result object of a succeeded document (see the top of the file); `options` is
// result_options() of its task.
nlohmann::json document_result_json(const DocumentResult& r,
                                    const std::vector<std::string>& options);

}  // namespace llmt::tasks
