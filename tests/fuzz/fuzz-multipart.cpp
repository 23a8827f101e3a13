// libFuzzer target: the server's upload and batch-input parsers (tools/server/multipart.h,
// batch-store.h) on arbitrary bytes: the first line is the Content-Type header, the rest the body;
// the whole input is also validated as a batch input file. The contract checked: either an error
// Status, or parts whose names are non-empty and unique and whose data lies inside the body; a
// valid batch input has unique, non-empty custom_ids with object bodies, and an invalid one an
// OpenAI errors list of at most kMaxBatchErrors entries. Never a crash, a hang or UB.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "server/batch-store.h"
#include "server/multipart.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t eol = in.find('\n');
  const std::string_view type = in.substr(0, eol == std::string_view::npos ? in.size() : eol);
  const std::string_view body = eol == std::string_view::npos ? "" : in.substr(eol + 1);
  llmt::Result<std::vector<llmt::server::MultipartPart>> parts =
      llmt::server::parse_multipart(type, body);
  if (parts.is_ok()) {
    std::set<std::string> names;
    for (const auto& p : *parts) {
      if (p.name.empty() || !names.insert(p.name).second) std::abort();
      if (p.data.size() > body.size()) std::abort();
      if (!p.data.empty() && body.find(p.data) == std::string_view::npos) std::abort();
    }
  } else if (parts.status().code() != llmt::StatusCode::kInvalidArgument) {
    std::abort();
  }
  std::vector<llmt::server::BatchLine> lines;
  nlohmann::json errors;
  if (llmt::server::validate_batch_input(in, "/v1/completions", &lines, &errors)) {
    std::set<std::string> ids;
    for (const auto& l : lines) {
      if (l.custom_id.empty() || !ids.insert(l.custom_id).second || !l.body.is_object()) {
        std::abort();
      }
    }
    if (lines.empty()) std::abort();
  } else if (!lines.empty() || errors["data"].empty() ||
             errors["data"].size() > llmt::server::kMaxBatchErrors) {
    std::abort();
  }
  return 0;
}
