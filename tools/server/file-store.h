// The files of the server's Files API (/v1/files): stored under <data dir>/files as
// "<id>.data" (the bytes) and "<id>.json" (the metadata: {"id", "bytes", "created_at",
// "filename", "purpose", "seq"}), each written with write_file_atomic() (durable-file.h), the
// data first: the metadata file is the commit point, so a crash leaves either the whole file or
// nothing listed. open() removes what a crash can leave (temporary files, data without metadata,
// metadata whose data is missing or of another size).
//
// Ids are "file-" + 24 random hex digits (or the caller's, for batch outputs: replaced when it
// exists). Listing order is creation order (seq, persisted, so it survives restarts).
//
// Thread-safety: every member may be called from any thread (one internal mutex; the file I/O
// of create() and remove() runs outside it, so a slow disk does not block readers).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"

namespace llmt::server {

struct FileInfo {
  std::string id;
  int64_t bytes = 0;
  int64_t created_at = 0;  // Unix seconds
  std::string filename;
  std::string purpose;
  uint64_t seq = 0;  // creation order
  // OpenAI's file object: {"id", "object": "file", "bytes", "created_at", "filename", "purpose"}.
  nlohmann::json to_json() const;
};

class FileStore {
 public:
  // Opens (creating) `dir` and loads what it holds. kIo when it cannot be created or read.
  static Result<std::unique_ptr<FileStore>> open(const std::string& dir);

  // Stores `content` durably as a new file (or as `id` when given, replacing it). Errors:
  // kOutOfMemory when the disk is full (507), kIo (500); nothing is left half-written.
  Result<FileInfo> create(std::string_view filename, std::string_view purpose,
                          std::string_view content, const std::string& id = {});
  std::optional<FileInfo> get(const std::string& id) const;
  std::vector<FileInfo> list() const;  // creation order
  // The bytes of file `id`. kNotFound for an unknown id.
  Result<std::string> read(const std::string& id) const;
  // Where the bytes of `id` are (for a hard link; the path of a known id).
  std::string data_path(const std::string& id) const;
  // Deletes file `id` (its metadata first, then its bytes). kNotFound for an unknown id.
  Status remove(const std::string& id);

 private:
  explicit FileStore(std::string dir) : dir_(std::move(dir)) {}
  std::string meta_path(const std::string& id) const;

  const std::string dir_;
  mutable std::mutex mu_;
  std::map<std::string, FileInfo> files_;  // guarded by mu_
  uint64_t next_seq_ = 1;                  // guarded by mu_
};

}  // namespace llmt::server
