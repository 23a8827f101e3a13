// The JSON side of the server's Batches API (/v1/batches): the batch object and its persisted
// state, validation of a create body and of an input file, and the output lines. No I/O and no
// engine here (server-batches.cpp runs batches), so all of it is unit-testable.
//
// Create body (a JSON object; any other field is a 400 naming it):
//   input_file_id      string, a file of purpose "batch" (checked by the caller)   required
//   endpoint           "/v1/completions" | "/v1/chat/completions" | "/v1/embeddings" required
//   completion_window  "24h"                                                        required
//   metadata           null, or an object of at most 16 string values (keys <= 64 characters,
//                      values <= 512), as OpenAI's
//
// Input file (validate_batch_input): JSONL, blank lines ignored; every other line must be a JSON
// object with exactly the keys custom_id (a non-empty string of at most 512 bytes, unique in the
// file), method ("POST"), url (equal to the batch's endpoint) and body (an object; it is checked
// when its request runs, as the live endpoint checks it: a bad body fails that request only). A
// file with any bad line, no request at all or more than kMaxBatchRequests requests fails the
// whole batch before anything runs: status "failed" with errors {"object": "list", "data":
// [{"code", "message", "param", "line"}]} (the first kMaxBatchErrors problems; line is 1-based).
// Codes: invalid_json_line, unknown_field, missing_field, invalid_field, invalid_method,
// mismatched_url, duplicate_custom_id, empty_file, too_many_requests.
//
// Output lines (the results log and the output / error files): {"id": "batch_req_<batch>_<i>",
// "custom_id", "response": {"status_code", "request_id": "req_<batch>_<i>", "body"}, "error":
// null} where i is the request's 0-based index in the input file; status_code 200 lines go to
// the output file, the others (the endpoint's 4xx / 5xx and its OpenAI error body) to the error
// file.
//
// Thread-safety: every function is pure; call from any thread.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"

namespace llmt::server {

inline constexpr size_t kMaxBatchRequests = 50000;  // OpenAI's limit per batch
inline constexpr size_t kMaxBatchErrors = 20;       // validation errors reported at most

enum class BatchStatus {
  kValidating,
  kFailed,
  kInProgress,
  kFinalizing,
  kCompleted,
  kExpired,
  kCancelling,
  kCancelled
};
const char* batch_status_name(BatchStatus s);
std::optional<BatchStatus> batch_status_from_name(std::string_view name);
// failed, completed, expired, cancelled: nothing more happens to the batch.
bool batch_status_terminal(BatchStatus s);

struct BatchCounts {
  int64_t total = 0;
  int64_t completed = 0;
  int64_t failed = 0;
};

struct BatchRecord {
  std::string id;  // "batch_" + hex
  std::string endpoint;
  std::string input_file_id;
  std::string completion_window = "24h";
  nlohmann::json metadata;  // null or an object of strings
  BatchStatus status = BatchStatus::kValidating;
  nlohmann::json errors;                      // null or {"object": "list", "data": [...]}
  std::string output_file_id, error_file_id;  // "" = null
  // Unix seconds; 0 = null.
  int64_t created_at = 0, in_progress_at = 0, finalizing_at = 0, completed_at = 0, failed_at = 0,
          cancelling_at = 0, cancelled_at = 0;
  BatchCounts counts;
  uint64_t seq = 0;  // creation order

  // OpenAI's batch object (expires_at = created_at + 24 h; expired_at null).
  nlohmann::json to_json() const;
  // to_json() plus "seq": what batch.json holds.
  nlohmann::json to_state_json() const;
  // Back from to_state_json(). kCorrupt when fields are missing or of the wrong type.
  static Result<BatchRecord> from_state_json(const nlohmann::json& j);
};

// Validates a POST /v1/batches body into *rec (endpoint, input_file_id, completion_window,
// metadata). kInvalidArgument naming the field.
Status parse_batch_create(const nlohmann::json& body, BatchRecord* rec);

// One request of an input file.
struct BatchLine {
  std::string custom_id;
  nlohmann::json body;
  uint64_t line = 0;  // 1-based line number
};

// Validates an input file's `content` for `endpoint` (see the top of this file): fills *lines
// and returns true, or fills *errors (the batch object's "errors") and returns false.
bool validate_batch_input(std::string_view content, const std::string& endpoint,
                          std::vector<BatchLine>* lines, nlohmann::json* errors);

// The output line (no LF) of request `index` of batch `batch_id`.
std::string batch_output_line(const std::string& batch_id, uint64_t index,
                              const std::string& custom_id, int status_code,
                              const nlohmann::json& body);

}  // namespace llmt::server
