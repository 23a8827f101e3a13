// GGUF reader (versions 2 and 3), over a read-only mmap of the file.
//
// Every size, count and offset read from the file is checked before use (overflow, out of file,
// bad type ids, bad magic/version, duplicate keys or tensors, truncation, misalignment): open()
// returns a Status naming the file and the problem instead of crashing or allocating huge buffers.
// Strings and tensor data are views into the mapping and live as long as the GgufFile.
//
// Thread-safety: a GgufFile is immutable after open(); all const methods may be called from any
// number of threads concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"
#include "llmthreads/tensor-type.h"

namespace llmt {

class MappedFile;

// Metadata value types, numbered as in the GGUF specification.
enum class GgufType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
const char* gguf_type_name(GgufType t);

// One metadata value. Scalars are held widened; strings are views into the file; arrays hold
// their elements (which may themselves be arrays).
struct GgufValue {
  GgufType type = GgufType::UINT8;
  GgufType elem_type = GgufType::UINT8;  // for ARRAY: the element type
  union {
    uint64_t u;  // UINT8/16/32/64, BOOL
    int64_t i;   // INT8/16/32/64
    double f;    // FLOAT32/64
  } num = {0};
  std::string_view str;          // STRING
  std::vector<GgufValue> array;  // ARRAY

  bool is_integer() const;
  bool is_float() const;
  // Numeric value as int64/double when representable (any integer or float type; BOOL as 0/1).
  std::optional<int64_t> as_int() const;
  std::optional<double> as_float() const;
  // Human-readable rendering; arrays longer than max_elems are elided.
  std::string to_string(size_t max_elems = 8) const;
};

struct GgufKV {
  std::string_view key;
  GgufValue value;
};

struct GgufTensor {
  std::string_view name;
  std::vector<int64_t> shape;  // ne[0] (fastest, row length) first, as in GGUF
  TensorType type = TensorType::F32;
  uint64_t offset = 0;  // relative to the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // points into the mapping
};

struct GgufOpenOptions {
  // Refuse metadata arrays longer than this (guards against huge allocations from corrupt
  // counts; real vocabularies are ~10^5..10^6 entries).
  uint64_t max_array_elems = 1ull << 26;
  // Refuse more tensors / keys than these.
  uint64_t max_tensors = 1ull << 20;
  uint64_t max_kvs = 1ull << 20;
};

class GgufFile {
 public:
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  static Result<std::unique_ptr<GgufFile>> open(const std::string& path,
                                                const GgufOpenOptions& options = {});
  // Parse from a caller-owned buffer (used by tests and fuzzing); `bytes` must outlive the file.
  static Result<std::unique_ptr<GgufFile>> from_memory(std::span<const uint8_t> bytes,
                                                       std::string name = "<memory>",
                                                       const GgufOpenOptions& options = {});

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // absolute offset of the data section
  uint64_t file_size() const { return size_; }

  const std::vector<GgufKV>& kvs() const { return kvs_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufValue* find(std::string_view key) const;           // nullptr when absent
  const GgufTensor* find_tensor(std::string_view name) const;  // nullptr when absent

  // Typed getters: nullopt when absent; a Status when present with a type that does not fit.
  Result<std::optional<std::string_view>> get_string(std::string_view key) const;
  Result<std::optional<int64_t>> get_int(std::string_view key) const;
  Result<std::optional<double>> get_float(std::string_view key) const;
  Result<std::optional<bool>> get_bool(std::string_view key) const;
  // Arrays: nullopt when absent; Status when not an array of a fitting element type.
  Result<std::optional<std::vector<std::string_view>>> get_string_array(std::string_view key) const;
  Result<std::optional<std::vector<float>>> get_float_array(std::string_view key) const;
  Result<std::optional<std::vector<int64_t>>> get_int_array(std::string_view key) const;

 private:
  GgufFile() = default;
  Status parse(const GgufOpenOptions& options);

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  std::unique_ptr<MappedFile> map_;  // set when open() mapped the file
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<GgufKV> kvs_;
  std::vector<GgufTensor> tensors_;
  std::vector<size_t> kv_index_;      // indices into kvs_, sorted by key
  std::vector<size_t> tensor_index_;  // indices into tensors_, sorted by name
};

}  // namespace llmt
