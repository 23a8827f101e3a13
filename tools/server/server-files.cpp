// The Files API: POST /v1/files (multipart/form-data: purpose, file), GET /v1/files,
// GET /v1/files/{id}, GET /v1/files/{id}/content, DELETE /v1/files/{id}; the files are
// file-store.h's.
#include <algorithm>

#include "multipart.h"
#include "server-impl.h"

namespace llmt::server {

namespace {

// OpenAI's purposes; only "batch" files can be a batch's input. Batch results are
// "batch_output" (made by the server, not uploadable).
constexpr const char* kPurposes[] = {"assistants", "batch",     "fine-tune",
                                     "vision",     "user_data", "evals"};

constexpr size_t kMaxFilenameBytes = 255;

void send_not_found(httplib::Response& res, const std::string& id) {
  send_json(
      res, 404,
      error_body("no such file: " + id, "invalid_request_error", "file_not_found", "file_id"));
}

}  // namespace

// Storage failures: 507 when the disk is full (kOutOfMemory from durable-file.h), else 500.
void send_storage_error(httplib::Response& res, const Status& s) {
  if (s.code() == StatusCode::kOutOfMemory) {
    send_json(res, 507, error_body(s.message(), "server_error", "insufficient_storage"));
  } else if (s.code() == StatusCode::kNotFound) {
    send_json(res, 404, error_body(s.message(), "invalid_request_error", "file_not_found"));
  } else {
    send_json(res, 500, error_body(s.message(), "server_error", "storage_error"));
  }
}

void Server::Impl::handle_file_upload(const httplib::Request& req, httplib::Response& res) {
  Result<std::vector<MultipartPart>> parts =
      parse_multipart(req.get_header_value("Content-Type"), req.body);
  if (!parts.is_ok()) {
    send_json(res, 400,
              error_body(parts.status().message(), "invalid_request_error", "invalid_multipart",
                         parts.status().field()));
    return;
  }
  const MultipartPart* purpose = nullptr;
  const MultipartPart* file = nullptr;
  for (const MultipartPart& p : *parts) {
    if (p.name == "purpose") {
      purpose = &p;
    } else if (p.name == "file") {
      file = &p;
    } else {
      send_json(res, 400,
                error_body("unknown form field '" + p.name + "' (purpose, file)",
                           "invalid_request_error", "unknown_field", p.name));
      return;
    }
  }
  if (!purpose || !file) {
    const char* missing = !file ? "file" : "purpose";
    send_json(res, 400,
              error_body(std::string("the form field '") + missing + "' is required",
                         "invalid_request_error", "missing_field", missing));
    return;
  }
  if (std::none_of(std::begin(kPurposes), std::end(kPurposes),
                   [&](const char* p) { return purpose->data == p; })) {
    send_json(res, 400,
              error_body("'purpose' must be one of assistants, batch, fine-tune, vision, "
                         "user_data, evals",
                         "invalid_request_error", "invalid_value", "purpose"));
    return;
  }
  if (!file->filename || file->filename->empty() || file->filename->size() > kMaxFilenameBytes ||
      file->filename->find('\0') != std::string::npos) {
    send_json(res, 400,
              error_body("the 'file' part needs a filename of 1 to 255 bytes",
                         "invalid_request_error", "invalid_value", "file"));
    return;
  }
  Result<FileInfo> f = files->create(*file->filename, purpose->data, file->data);
  if (!f.is_ok()) {
    send_storage_error(res, f.status());
    return;
  }
  send_json(res, 200, f->to_json());
}

void Server::Impl::handle_file_list(const httplib::Request& req, httplib::Response& res) {
  std::vector<FileInfo> all = files->list();
  const std::string purpose = req.get_param_value("purpose");
  const std::string order = req.has_param("order") ? req.get_param_value("order") : "desc";
  if (order != "asc" && order != "desc") {
    send_json(res, 400,
              error_body("'order' must be asc or desc", "invalid_request_error", "invalid_value",
                         "order"));
    return;
  }
  size_t limit = 10000;
  if (req.has_param("limit")) {
    const std::string l = req.get_param_value("limit");
    if (l.empty() || l.size() > 5 || !std::all_of(l.begin(), l.end(), ::isdigit) ||
        std::stoul(l) < 1 || std::stoul(l) > 10000) {
      send_json(res, 400,
                error_body("'limit' must be an integer in [1, 10000]", "invalid_request_error",
                           "invalid_value", "limit"));
      return;
    }
    limit = std::stoul(l);
  }
  if (order == "desc") std::reverse(all.begin(), all.end());
  size_t start = 0;
  if (req.has_param("after")) {
    const std::string after = req.get_param_value("after");
    auto it =
        std::find_if(all.begin(), all.end(), [&](const FileInfo& f) { return f.id == after; });
    if (it == all.end()) {
      send_not_found(res, after);
      return;
    }
    start = static_cast<size_t>(it - all.begin()) + 1;
  }
  json data = json::array();
  bool has_more = false;
  for (size_t i = start; i < all.size(); ++i) {
    if (!purpose.empty() && all[i].purpose != purpose) continue;
    if (data.size() == limit) {
      has_more = true;
      break;
    }
    data.push_back(all[i].to_json());
  }
  json out = {{"object", "list"}, {"data", data}, {"has_more", has_more}};
  out["first_id"] = data.empty() ? json(nullptr) : data.front()["id"];
  out["last_id"] = data.empty() ? json(nullptr) : data.back()["id"];
  send_json(res, 200, out);
}

void Server::Impl::install_file_routes(HttpFront& http) {
  http.Post("/v1/files", [this](const httplib::Request& req, httplib::Response& res) {
    handle_file_upload(req, res);
  });
  http.Get("/v1/files", [this](const httplib::Request& req, httplib::Response& res) {
    handle_file_list(req, res);
  });
  http.Get(R"(/v1/files/([^/]+)/content)",
           [this](const httplib::Request& req, httplib::Response& res) {
             const std::string id = req.matches[1];
             Result<std::string> bytes = files->read(id);
             if (!bytes.is_ok()) {
               if (bytes.status().code() == StatusCode::kNotFound) return send_not_found(res, id);
               return send_storage_error(res, bytes.status());
             }
             res.status = 200;
             res.set_content(std::move(*bytes), "application/octet-stream");
           });
  http.Get(R"(/v1/files/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (std::optional<FileInfo> f = files->get(id)) return send_json(res, 200, f->to_json());
    send_not_found(res, id);
  });
  http.Delete(R"(/v1/files/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    Status s = files->remove(id);
    if (s.code() == StatusCode::kNotFound) return send_not_found(res, id);
    if (!s.is_ok()) return send_storage_error(res, s);
    send_json(res, 200, {{"id", id}, {"object", "file"}, {"deleted", true}});
  });
}

}  // namespace llmt::server
