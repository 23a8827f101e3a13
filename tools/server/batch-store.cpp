#include "batch-store.h"

#include <set>

namespace llmt::server {

using json = nlohmann::json;

namespace {

constexpr int64_t kWindowS = 24 * 3600;

struct StatusName {
  BatchStatus status;
  const char* name;
};
constexpr StatusName kStatusNames[] = {
    {BatchStatus::kValidating, "validating"},  {BatchStatus::kFailed, "failed"},
    {BatchStatus::kInProgress, "in_progress"}, {BatchStatus::kFinalizing, "finalizing"},
    {BatchStatus::kCompleted, "completed"},    {BatchStatus::kExpired, "expired"},
    {BatchStatus::kCancelling, "cancelling"},  {BatchStatus::kCancelled, "cancelled"}};

json time_or_null(int64_t t) {
  return t > 0 ? json(t) : json(nullptr);
}
json id_or_null(const std::string& id) {
  return id.empty() ? json(nullptr) : json(id);
}

Status field_error(const char* key, const std::string& what) {
  return invalid_argument(std::string("\"") + key + "\"" + what, key);
}

// The suffix of a batch id ("batch_abc" -> "abc") for the ids of its requests.
std::string batch_suffix(const std::string& batch_id) {
  return batch_id.rfind("batch_", 0) == 0 ? batch_id.substr(6) : batch_id;
}

void add_error(json* errors, const char* code, const std::string& message, const char* param,
               uint64_t line) {
  json& data = (*errors)["data"];
  if (data.size() >= kMaxBatchErrors) return;
  data.push_back({{"code", code},
                  {"message", message},
                  {"param", param ? json(param) : json(nullptr)},
                  {"line", line > 0 ? json(line) : json(nullptr)}});
}

}  // namespace

const char* batch_status_name(BatchStatus s) {
  for (const StatusName& n : kStatusNames) {
    if (n.status == s) return n.name;
  }
  return "failed";
}

std::optional<BatchStatus> batch_status_from_name(std::string_view name) {
  for (const StatusName& n : kStatusNames) {
    if (name == n.name) return n.status;
  }
  return std::nullopt;
}

bool batch_status_terminal(BatchStatus s) {
  return s == BatchStatus::kFailed || s == BatchStatus::kCompleted || s == BatchStatus::kExpired ||
         s == BatchStatus::kCancelled;
}

json BatchRecord::to_json() const {
  return {{"id", id},
          {"object", "batch"},
          {"endpoint", endpoint},
          {"errors", errors},
          {"input_file_id", input_file_id},
          {"completion_window", completion_window},
          {"status", batch_status_name(status)},
          {"output_file_id", id_or_null(output_file_id)},
          {"error_file_id", id_or_null(error_file_id)},
          {"created_at", created_at},
          {"in_progress_at", time_or_null(in_progress_at)},
          {"expires_at", created_at + kWindowS},
          {"finalizing_at", time_or_null(finalizing_at)},
          {"completed_at", time_or_null(completed_at)},
          {"failed_at", time_or_null(failed_at)},
          {"expired_at", nullptr},
          {"cancelling_at", time_or_null(cancelling_at)},
          {"cancelled_at", time_or_null(cancelled_at)},
          {"request_counts",
           {{"total", counts.total}, {"completed", counts.completed}, {"failed", counts.failed}}},
          {"metadata", metadata}};
}

json BatchRecord::to_state_json() const {
  json j = to_json();
  j["seq"] = seq;
  return j;
}

Result<BatchRecord> BatchRecord::from_state_json(const json& j) {
  BatchRecord r;
  try {
    r.id = j.at("id").get<std::string>();
    r.endpoint = j.at("endpoint").get<std::string>();
    r.input_file_id = j.at("input_file_id").get<std::string>();
    r.completion_window = j.at("completion_window").get<std::string>();
    r.metadata = j.value("metadata", json());
    const std::optional<BatchStatus> s = batch_status_from_name(j.at("status").get<std::string>());
    if (!s) return corrupt("batch state: unknown status");
    r.status = *s;
    r.errors = j.value("errors", json());
    auto str = [&](const char* k) {
      return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
    };
    auto num = [&](const char* k) {
      return j.contains(k) && j[k].is_number_integer() ? j[k].get<int64_t>() : int64_t{0};
    };
    r.output_file_id = str("output_file_id");
    r.error_file_id = str("error_file_id");
    r.created_at = num("created_at");
    r.in_progress_at = num("in_progress_at");
    r.finalizing_at = num("finalizing_at");
    r.completed_at = num("completed_at");
    r.failed_at = num("failed_at");
    r.cancelling_at = num("cancelling_at");
    r.cancelled_at = num("cancelled_at");
    const json& c = j.at("request_counts");
    r.counts.total = c.at("total").get<int64_t>();
    r.counts.completed = c.at("completed").get<int64_t>();
    r.counts.failed = c.at("failed").get<int64_t>();
    r.seq = j.at("seq").get<uint64_t>();
  } catch (const json::exception& e) {
    return corrupt(std::string("batch state: ") + e.what());
  }
  return r;
}

Status parse_batch_create(const json& body, BatchRecord* rec) {
  if (!body.is_object()) return invalid_argument("the request body must be a JSON object");
  for (const auto& [k, v] : body.items()) {
    if (k != "input_file_id" && k != "endpoint" && k != "completion_window" && k != "metadata") {
      return invalid_argument("\"" + k + "\" is not a field of a batch (input_file_id, endpoint, " +
                                  "completion_window, metadata)",
                              k);
    }
  }
  auto required_string = [&](const char* key, std::string* out) -> Status {
    if (!body.contains(key) || body[key].is_null()) return field_error(key, " is required");
    if (!body[key].is_string()) return field_error(key, " must be a string");
    *out = body[key].get<std::string>();
    return Status::ok();
  };
  LLMT_RETURN_IF_ERROR(required_string("input_file_id", &rec->input_file_id));
  LLMT_RETURN_IF_ERROR(required_string("endpoint", &rec->endpoint));
  if (rec->endpoint != "/v1/completions" && rec->endpoint != "/v1/chat/completions" &&
      rec->endpoint != "/v1/embeddings") {
    return field_error("endpoint",
                       " must be /v1/completions, /v1/chat/completions or /v1/embeddings");
  }
  LLMT_RETURN_IF_ERROR(required_string("completion_window", &rec->completion_window));
  if (rec->completion_window != "24h") return field_error("completion_window", " must be \"24h\"");
  rec->metadata = nullptr;
  if (body.contains("metadata") && !body["metadata"].is_null()) {
    const json& m = body["metadata"];
    if (!m.is_object() || m.size() > 16) {
      return field_error("metadata", " must be an object of at most 16 string values");
    }
    for (const auto& [k, v] : m.items()) {
      if (k.size() > 64 || !v.is_string() || v.get<std::string>().size() > 512) {
        return field_error("metadata",
                           ": keys are at most 64 characters, values strings of at most 512");
      }
    }
    rec->metadata = m;
  }
  return Status::ok();
}

bool validate_batch_input(std::string_view content, const std::string& endpoint,
                          std::vector<BatchLine>* lines, json* errors) {
  *errors = {{"object", "list"}, {"data", json::array()}};
  lines->clear();
  std::set<std::string> seen;
  size_t n_bad = 0, n_requests = 0;
  uint64_t line_no = 0;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t eol = content.find('\n', pos);
    if (eol == std::string_view::npos) eol = content.size();
    std::string_view text = content.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (text.find_first_not_of(" \t") == std::string_view::npos) continue;
    ++n_requests;
    auto fail = [&](const char* code, const std::string& msg, const char* param) {
      add_error(errors, code, msg, param, line_no);
      ++n_bad;
    };
    const json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      fail("invalid_json_line", "line " + std::to_string(line_no) + " is not a JSON object",
           nullptr);
      continue;
    }
    bool ok = true;
    for (const auto& [k, v] : j.items()) {
      if (k != "custom_id" && k != "method" && k != "url" && k != "body") {
        fail("unknown_field", "line " + std::to_string(line_no) + ": unknown field \"" + k + "\"",
             nullptr);
        ok = false;
        break;
      }
    }
    if (!ok) continue;
    for (const char* k : {"custom_id", "method", "url", "body"}) {
      if (!j.contains(k)) {
        fail("missing_field", "line " + std::to_string(line_no) + ": \"" + k + "\" is required", k);
        ok = false;
        break;
      }
    }
    if (!ok) continue;
    if (!j["custom_id"].is_string() || j["custom_id"].get<std::string>().empty() ||
        j["custom_id"].get<std::string>().size() > 512) {
      fail("invalid_field",
           "line " + std::to_string(line_no) +
               ": \"custom_id\" must be a non-empty string of at most 512 bytes",
           "custom_id");
      continue;
    }
    if (j["method"] != "POST") {
      fail("invalid_method", "line " + std::to_string(line_no) + ": \"method\" must be \"POST\"",
           "method");
      continue;
    }
    if (!j["url"].is_string() || j["url"].get<std::string>() != endpoint) {
      fail("mismatched_url",
           "line " + std::to_string(line_no) + ": \"url\" must be the batch's endpoint " + endpoint,
           "url");
      continue;
    }
    if (!j["body"].is_object()) {
      fail("invalid_field", "line " + std::to_string(line_no) + ": \"body\" must be an object",
           "body");
      continue;
    }
    const std::string id = j["custom_id"].get<std::string>();
    if (!seen.insert(id).second) {
      fail("duplicate_custom_id",
           "line " + std::to_string(line_no) + ": custom_id '" + id + "' is used twice",
           "custom_id");
      continue;
    }
    if (n_bad == 0 && n_requests <= kMaxBatchRequests) {
      lines->push_back(BatchLine{id, j["body"], line_no});
    }
  }
  if (n_requests == 0) {
    add_error(errors, "empty_file", "the input file holds no request", nullptr, 0);
    return false;
  }
  if (n_requests > kMaxBatchRequests) {
    add_error(errors, "too_many_requests",
              "the input file holds " + std::to_string(n_requests) + " requests; at most " +
                  std::to_string(kMaxBatchRequests),
              nullptr, 0);
    return false;
  }
  if (n_bad > 0) {
    lines->clear();
    return false;
  }
  return true;
}

std::string batch_output_line(const std::string& batch_id, uint64_t index,
                              const std::string& custom_id, int status_code, const json& body) {
  const std::string suffix = batch_suffix(batch_id) + "_" + std::to_string(index);
  const json line = {
      {"id", "batch_req_" + suffix},
      {"custom_id", custom_id},
      {"response", {{"status_code", status_code}, {"request_id", "req_" + suffix}, {"body", body}}},
      {"error", nullptr}};
  return line.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace llmt::server
