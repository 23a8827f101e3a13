// Read-only memory mapping of a whole file.
// Thread-safety: immutable after open(); the bytes may be read from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "llmthreads/status.h"

namespace llmt {

class MappedFile {
 public:
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Maps `path` read-only. Errors (missing file, directory, permission, mmap failure) name the
  // path.
  static Result<std::unique_ptr<MappedFile>> open(const std::string& path);

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  void* map_ = nullptr;
};

}  // namespace llmt
