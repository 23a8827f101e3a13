// Helpers of the Files / Batches API tests (test-server-files.cpp, test-server-batches.cpp): a
// temporary data dir, multipart bodies, uploads, and polling a batch to an end with a deadline.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "server-fixture.h"

namespace llmt::test {

// A fresh folder under the system's temporary folder, removed with the object.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           ("llmt-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

inline constexpr const char* kBoundary = "llmt-test-boundary-7Qz";

// A multipart/form-data body of `purpose` and a file part named `filename`.
inline std::string multipart_body(const std::string& purpose, const std::string& filename,
                                  const std::string& content) {
  std::string b = "--" + std::string(kBoundary) + "\r\n";
  b += "Content-Disposition: form-data; name=\"purpose\"\r\n\r\n" + purpose + "\r\n";
  b += "--" + std::string(kBoundary) + "\r\n";
  b += "Content-Disposition: form-data; name=\"file\"; filename=\"" + filename + "\"\r\n";
  b += "Content-Type: application/jsonl\r\n\r\n" + content + "\r\n";
  b += "--" + std::string(kBoundary) + "--\r\n";
  return b;
}
inline std::string multipart_type() {
  return std::string("multipart/form-data; boundary=") + kBoundary;
}

// POST /v1/files; the response JSON, its status in *status.
inline nlohmann::json upload(httplib::Client& c, const std::string& content, int* status,
                             const std::string& purpose = "batch",
                             const std::string& filename = "input.jsonl") {
  return response_json(
      c.Post("/v1/files", multipart_body(purpose, filename, content), multipart_type().c_str()),
      status);
}

// One input line of a batch.
inline std::string batch_line(const std::string& custom_id, const std::string& url,
                              const nlohmann::json& body) {
  return nlohmann::json{{"custom_id", custom_id}, {"method", "POST"}, {"url", url}, {"body", body}}
             .dump() +
         "\n";
}

inline bool batch_terminal(const nlohmann::json& b) {
  const std::string s = b.value("status", "");
  return s == "completed" || s == "failed" || s == "cancelled" || s == "expired";
}

// Polls GET /v1/batches/{id} until `done` holds for it or `timeout_s` pass (a test failure then);
// returns the last batch object.
template <typename Pred>
nlohmann::json poll_batch(httplib::Client& c, const std::string& id, Pred done,
                          double timeout_s = 120) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  nlohmann::json b;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = c.Get(("/v1/batches/" + id).c_str());
    if (r && r->status == 200) {
      b = nlohmann::json::parse(r->body, nullptr, false);
      if (done(b)) return b;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "batch " << id << " did not get there in " << timeout_s << " s: " << b;
  return b;
}
inline nlohmann::json wait_batch_end(httplib::Client& c, const std::string& id,
                                     double timeout_s = 120) {
  return poll_batch(c, id, batch_terminal, timeout_s);
}

// The JSON objects of a JSONL text, in order.
inline std::vector<nlohmann::json> jsonl(const std::string& text) {
  std::vector<nlohmann::json> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    if (eol > pos)
      out.push_back(nlohmann::json::parse(text.substr(pos, eol - pos), nullptr, false));
    pos = eol + 1;
  }
  return out;
}

// GET /v1/files/{id}/content ("" and a test failure when it is not 200).
inline std::string file_content(httplib::Client& c, const std::string& id) {
  auto r = c.Get(("/v1/files/" + id + "/content").c_str());
  if (!r || r->status != 200) {
    ADD_FAILURE() << "no content for " << id << ": " << (r ? r->body : "no response");
    return "";
  }
  return r->body;
}

}  // namespace llmt::test
