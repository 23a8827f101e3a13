// A minimal GGUF (version 3) writer for tests and for generating the fuzz seed corpus: metadata
// key/values of the common types, tensor infos, and a zero-filled data section. The output is
// what the format says and nothing more (32-byte alignment, little-endian host assumed); callers
// pick the contents, valid or deliberately broken.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llmt::test {

class GgufWriter {
 public:
  void kv_string(const std::string& key, const std::string& v) {
    header(key, 8);
    str(v);
    ++n_kv_;
  }
  void kv_u32(const std::string& key, uint32_t v) {
    header(key, 4);
    u32(v);
    ++n_kv_;
  }
  void kv_bool(const std::string& key, bool v) {
    header(key, 7);
    buf_.push_back(v ? 1 : 0);
    ++n_kv_;
  }
  void kv_strings(const std::string& key, const std::vector<std::string>& v) {
    header(key, 9);
    u32(8);
    u64(v.size());
    for (const auto& s : v) str(s);
    ++n_kv_;
  }
  void kv_floats(const std::string& key, const std::vector<float>& v) {
    header(key, 9);
    u32(6);
    u64(v.size());
    for (float f : v) raw(&f, 4);
    ++n_kv_;
  }
  void kv_i32s(const std::string& key, const std::vector<int32_t>& v) {
    header(key, 9);
    u32(5);
    u64(v.size());
    for (int32_t x : v) raw(&x, 4);
    ++n_kv_;
  }
  // A key whose value is already in GGUF form: type tag `type`, `value` the bytes after it.
  void kv_raw(const std::string& key, uint32_t type, const std::vector<uint8_t>& value) {
    header(key, type);
    raw(value.data(), value.size());
    ++n_kv_;
  }
  // A tensor info: `ggml_type` (0 = F32, 1 = F16, ...) at `offset` in the data section.
  void tensor(const std::string& name, const std::vector<uint64_t>& dims, uint32_t ggml_type,
              uint64_t offset) {
    tstr(name);
    tu32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) tu64(d);
    tu32(ggml_type);
    tu64(offset);
    ++n_tensors_;
  }
  // The file: header, key/values, tensor infos, padding to 32, then `data_bytes` zero bytes.
  std::vector<uint8_t> bytes(size_t data_bytes = 0) const {
    std::vector<uint8_t> out;
    auto put = [&](const void* p, size_t n) {
      out.insert(out.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    };
    put("GGUF", 4);
    const uint32_t version = 3;
    put(&version, 4);
    put(&n_tensors_, 8);
    put(&n_kv_, 8);
    out.insert(out.end(), buf_.begin(), buf_.end());
    out.insert(out.end(), tensors_.begin(), tensors_.end());
    while (out.size() % 32) out.push_back(0);
    out.resize(out.size() + data_bytes, 0);
    return out;
  }

 private:
  static void append(std::vector<uint8_t>& b, const void* p, size_t n) {
    b.insert(b.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  }
  void raw(const void* p, size_t n) { append(buf_, p, n); }
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void tu32(uint32_t v) { append(tensors_, &v, 4); }
  void tu64(uint64_t v) { append(tensors_, &v, 8); }
  void tstr(const std::string& s) {
    tu64(s.size());
    append(tensors_, s.data(), s.size());
  }
  void header(const std::string& key, uint32_t type) {
    str(key);
    u32(type);
  }
  std::vector<uint8_t> buf_;
  std::vector<uint8_t> tensors_;
  uint64_t n_kv_ = 0;
  uint64_t n_tensors_ = 0;
};

}  // namespace llmt::test
