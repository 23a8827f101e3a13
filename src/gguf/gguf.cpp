#include "llmthreads/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "core/mapped-file.h"

namespace llmt {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kMaxDims = 4;         // GGML_MAX_DIMS
constexpr int kMaxNesting = 8;           // arrays of arrays of ...

// Bounds-checked little-endian reader over the file bytes. Every read checks the remaining size
// first; on failure it records an error naming the file, what was being read and the offset.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size, const std::string& path)
      : base_(base), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  Status fail(const std::string& what) const {
    return corrupt(path_ + ": " + what + " (at byte " + std::to_string(pos_) + ")");
  }

  template <typename T>
  Status read(T& out, const char* what) {
    if (remaining() < sizeof(T)) return truncated(what);
    std::memcpy(&out, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::ok();
  }

  Status read_string(std::string_view& out, const char* what) {
    uint64_t len = 0;
    LLMT_RETURN_IF_ERROR(read(len, what));
    if (len > remaining()) {
      return fail(std::string(what) + ": string length " + std::to_string(len) +
                  " runs past the end of the file");
    }
    out = std::string_view(reinterpret_cast<const char*>(base_ + pos_), len);
    pos_ += len;
    return Status::ok();
  }

 private:
  Status truncated(const char* what) const {
    return corrupt(path_ + ": truncated file: " + what + " runs past the end (at byte " +
                   std::to_string(pos_) + " of " + std::to_string(size_) + ")");
  }

  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

bool valid_type(uint32_t t) {
  return t <= static_cast<uint32_t>(GgufType::FLOAT64);
}

// Smallest encoded size of one value of type t (used to bound array counts before allocating).
uint64_t min_encoded_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::BOOL:
      return 1;
    case GgufType::UINT16:
    case GgufType::INT16:
      return 2;
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::FLOAT32:
      return 4;
    case GgufType::UINT64:
    case GgufType::INT64:
    case GgufType::FLOAT64:
    case GgufType::STRING:
      return 8;
    case GgufType::ARRAY:
      return 12;
  }
  return 1;
}

Status read_value(Cursor& c, GgufType type, GgufValue& v, const GgufOpenOptions& opt, int depth,
                  const std::string& key) {
  v.type = type;
  const std::string what = "value of key '" + key + "'";
  switch (type) {
    case GgufType::UINT8: {
      uint8_t x{};
      LLMT_RETURN_IF_ERROR(c.read(x, what.c_str()));
      v.num.u = x;
      break;
    }
    case GgufType::INT8: {
      int8_t x{};
      LLMT_RETURN_IF_ERROR(c.read(x, what.c_str()));
      v.num.i = x;
      break;
    }
    case GgufType::UINT16: {
      uint16_t x{};
      LLMT_RETURN_IF_ERROR(c.read(x, what.c_str()));
      v.num.u = x;
      break;
    }
    case GgufType::INT16: {
      int16_t x{};
      LLMT_RETURN_IF_ERROR(c.read(x, what.c_str()));
      v.num.i = x;
      break;
    }
    case GgufType::UINT32: {
      uint32_t x{};
      LLMT_RETURN_IF_ERROR(c.read(x, what.c_str()));
      v.num.u = x;
      break;
    }
    case GgufType::INT32: {
      int32_t x{};
      LLMT_RETURN_IF_ERROR(c.read(x, what.c_str()));
      v.num.i = x;
      break;
    }
    case GgufType::UINT64: {
      uint64_t x{};
      LLMT_RETURN_IF_ERROR(c.read(x, what.c_str()));
      v.num.u = x;
      break;
    }
    case GgufType::INT64: {
      int64_t x{};
      LLMT_RETURN_IF_ERROR(c.read(x, what.c_str()));
      v.num.i = x;
      break;
    }
    case GgufType::FLOAT32: {
      float x{};
      LLMT_RETURN_IF_ERROR(c.read(x, what.c_str()));
      v.num.f = x;
      break;
    }
    case GgufType::FLOAT64: {
      double x{};
      LLMT_RETURN_IF_ERROR(c.read(x, what.c_str()));
      v.num.f = x;
      break;
    }
    case GgufType::BOOL: {
      uint8_t x{};
      LLMT_RETURN_IF_ERROR(c.read(x, what.c_str()));
      if (x > 1)
        return c.fail("key '" + key + "': bool value " + std::to_string(x) + " is not 0 or 1");
      v.num.u = x;
      break;
    }
    case GgufType::STRING:
      LLMT_RETURN_IF_ERROR(c.read_string(v.str, what.c_str()));
      break;
    case GgufType::ARRAY: {
      if (depth >= kMaxNesting) return c.fail("key '" + key + "': arrays nested too deeply");
      uint32_t et = 0;
      LLMT_RETURN_IF_ERROR(c.read(et, what.c_str()));
      if (!valid_type(et)) {
        return c.fail("key '" + key + "': bad array element type " + std::to_string(et));
      }
      v.elem_type = static_cast<GgufType>(et);
      uint64_t n = 0;
      LLMT_RETURN_IF_ERROR(c.read(n, what.c_str()));
      if (n > opt.max_array_elems) {
        return c.fail("key '" + key + "': array of " + std::to_string(n) +
                      " elements exceeds the limit of " + std::to_string(opt.max_array_elems));
      }
      if (n > c.remaining() / min_encoded_size(v.elem_type)) {
        return c.fail("key '" + key + "': array of " + std::to_string(n) +
                      " elements runs past the end of the file");
      }
      v.array.resize(n);
      for (uint64_t i = 0; i < n; ++i) {
        LLMT_RETURN_IF_ERROR(read_value(c, v.elem_type, v.array[i], opt, depth + 1, key));
      }
      break;
    }
  }
  return Status::ok();
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::UINT8:
      return "u8";
    case GgufType::INT8:
      return "i8";
    case GgufType::UINT16:
      return "u16";
    case GgufType::INT16:
      return "i16";
    case GgufType::UINT32:
      return "u32";
    case GgufType::INT32:
      return "i32";
    case GgufType::FLOAT32:
      return "f32";
    case GgufType::BOOL:
      return "bool";
    case GgufType::STRING:
      return "string";
    case GgufType::ARRAY:
      return "array";
    case GgufType::UINT64:
      return "u64";
    case GgufType::INT64:
      return "i64";
    case GgufType::FLOAT64:
      return "f64";
  }
  return "?";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::UINT16:
    case GgufType::INT16:
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::UINT64:
    case GgufType::INT64:
      return true;
    default:
      return false;
  }
}

bool GgufValue::is_float() const {
  return type == GgufType::FLOAT32 || type == GgufType::FLOAT64;
}

static bool is_signed(GgufType t) {
  return t == GgufType::INT8 || t == GgufType::INT16 || t == GgufType::INT32 ||
         t == GgufType::INT64;
}

std::optional<int64_t> GgufValue::as_int() const {
  if (type == GgufType::BOOL) return static_cast<int64_t>(num.u);
  if (is_integer()) {
    if (is_signed(type)) return num.i;
    if (num.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(num.u);
  }
  return std::nullopt;
}

std::optional<double> GgufValue::as_float() const {
  if (is_float()) return num.f;
  if (is_integer())
    return is_signed(type) ? static_cast<double>(num.i) : static_cast<double>(num.u);
  return std::nullopt;
}

std::string GgufValue::to_string(size_t max_elems) const {
  switch (type) {
    case GgufType::STRING: {
      std::string s = "\"";
      size_t n = std::min<size_t>(str.size(), 200);
      for (size_t i = 0; i < n; ++i) {
        char ch = str[i];
        if (ch == '\n')
          s += "\\n";
        else if (ch == '"')
          s += "\\\"";
        else
          s += ch;
      }
      if (n < str.size()) s += "...";
      return s + "\"";
    }
    case GgufType::ARRAY: {
      std::string s = "[";
      for (size_t i = 0; i < array.size() && i < max_elems; ++i) {
        if (i) s += ", ";
        s += array[i].to_string(max_elems);
      }
      if (array.size() > max_elems) s += ", ... (" + std::to_string(array.size()) + " total)";
      return s + "]";
    }
    case GgufType::BOOL:
      return num.u ? "true" : "false";
    case GgufType::FLOAT32:
    case GgufType::FLOAT64: {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%g", num.f);
      return buf;
    }
    default:
      return is_signed(type) ? std::to_string(num.i) : std::to_string(num.u);
  }
}

GgufFile::~GgufFile() = default;

Result<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path,
                                                 const GgufOpenOptions& options) {
  LLMT_ASSIGN_OR_RETURN(auto map, MappedFile::open(path));
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->base_ = map->data();
  f->size_ = map->size();
  f->map_ = std::move(map);
  LLMT_RETURN_IF_ERROR(f->parse(options));
  return f;
}

Result<std::unique_ptr<GgufFile>> GgufFile::from_memory(std::span<const uint8_t> bytes,
                                                        std::string name,
                                                        const GgufOpenOptions& options) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = std::move(name);
  f->base_ = bytes.data();
  f->size_ = bytes.size();
  LLMT_RETURN_IF_ERROR(f->parse(options));
  return f;
}

namespace {

// Reads and checks the magic and the version (2 or 3) at the start of a GGUF file.
Status read_magic_and_version(Cursor& c, const std::string& path, uint64_t size,
                              uint32_t& version) {
  uint32_t magic = 0;
  if (size < 4)
    return corrupt(path + ": not a GGUF file (only " + std::to_string(size) + " bytes)");
  LLMT_RETURN_IF_ERROR(c.read(magic, "magic"));
  if (magic != kMagic) {
    return corrupt(path + ": not a GGUF file (bad magic; expected \"GGUF\")");
  }
  LLMT_RETURN_IF_ERROR(c.read(version, "version"));
  if (version == 1) {
    return unsupported(path + ": GGUF version 1 is obsolete; convert the model again");
  }
  if (version != 2 && version != 3) {
    // A big-endian file stores 3 as 0x03000000.
    if (version == 0x02000000u || version == 0x03000000u) {
      return unsupported(path + ": big-endian GGUF files are not supported");
    }
    return unsupported(path + ": unknown GGUF version " + std::to_string(version) +
                       " (supported: 2, 3)");
  }
  return Status::ok();
}

// Reads the n_kv metadata key/value pairs into kvs.
Status read_kvs(Cursor& c, uint64_t n_kv, const GgufOpenOptions& opt, std::vector<GgufKV>& kvs) {
  kvs.resize(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    GgufKV& kv = kvs[i];
    LLMT_RETURN_IF_ERROR(c.read_string(kv.key, "metadata key"));
    uint32_t type = 0;
    LLMT_RETURN_IF_ERROR(c.read(type, "metadata type"));
    if (!valid_type(type)) {
      return c.fail("key '" + std::string(kv.key) + "': bad value type " + std::to_string(type));
    }
    LLMT_RETURN_IF_ERROR(
        read_value(c, static_cast<GgufType>(type), kv.value, opt, 0, std::string(kv.key)));
  }
  return Status::ok();
}

// Checks the general.alignment value a (a u32 power of two) and stores it in alignment.
Status read_alignment(const GgufValue& a, const std::string& path, uint64_t& alignment) {
  if (a.type != GgufType::UINT32) {
    return corrupt(path + ": general.alignment has type " + gguf_type_name(a.type) +
                   ", expected u32");
  }
  uint64_t al = a.num.u;
  if (al == 0 || (al & (al - 1)) != 0) {
    return corrupt(path + ": general.alignment " + std::to_string(al) + " is not a power of two");
  }
  alignment = al;
  return Status::ok();
}

// Reads one tensor's info (name, shape, type, offset) into t and checks it against its type's
// block size and the data alignment.
Status read_tensor_info(Cursor& c, uint64_t alignment, GgufTensor& t) {
  LLMT_RETURN_IF_ERROR(c.read_string(t.name, "tensor name"));
  const std::string tname = "tensor '" + std::string(t.name) + "'";
  uint32_t n_dims = 0;
  LLMT_RETURN_IF_ERROR(c.read(n_dims, "tensor dimension count"));
  if (n_dims == 0 || n_dims > kMaxDims) {
    return c.fail(tname + ": " + std::to_string(n_dims) + " dimensions (allowed 1.." +
                  std::to_string(kMaxDims) + ")");
  }
  t.shape.resize(n_dims);
  uint64_t n_el = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    uint64_t ne = 0;
    LLMT_RETURN_IF_ERROR(c.read(ne, "tensor dimension"));
    if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return c.fail(tname + ": dimension " + std::to_string(d) + " is negative");
    }
    if (!checked_mul(n_el, ne, n_el) ||
        n_el > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return c.fail(tname + ": element count overflows");
    }
    t.shape[d] = static_cast<int64_t>(ne);
  }
  uint32_t type = 0;
  LLMT_RETURN_IF_ERROR(c.read(type, "tensor type"));
  auto info = tensor_type_info(type);
  if (!info) return c.fail(tname + ": unknown tensor type id " + std::to_string(type));
  t.type = static_cast<TensorType>(type);
  LLMT_RETURN_IF_ERROR(c.read(t.offset, "tensor offset"));
  if (t.shape[0] % info->block_size != 0) {
    return c.fail(tname + ": row length " + std::to_string(t.shape[0]) +
                  " is not a multiple of the " + info->name + " block size " +
                  std::to_string(info->block_size));
  }
  t.n_elements = n_el;
  if (!checked_mul(n_el / info->block_size, info->block_bytes, t.n_bytes)) {
    return c.fail(tname + ": byte size overflows");
  }
  if (t.offset % alignment != 0) {
    return c.fail(tname + ": data offset " + std::to_string(t.offset) +
                  " is not a multiple of the alignment " + std::to_string(alignment));
  }
  return Status::ok();
}

// Points each tensor at its bytes in the data section (data, data_size bytes), checking that
// they lie inside it and do not overlap.
Status place_tensors(std::vector<GgufTensor>& tensors, const uint8_t* data, uint64_t data_size,
                     const std::string& path) {
  std::vector<size_t> by_offset(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) by_offset[i] = i;
  std::sort(by_offset.begin(), by_offset.end(),
            [&](size_t a, size_t b) { return tensors[a].offset < tensors[b].offset; });
  uint64_t prev_end = 0;
  const GgufTensor* prev = nullptr;
  for (size_t idx : by_offset) {
    GgufTensor& t = tensors[idx];
    if (t.offset > data_size || t.n_bytes > data_size - t.offset) {
      return corrupt(path + ": truncated file: tensor '" + std::string(t.name) + "' data (offset " +
                     std::to_string(t.offset) + ", " + std::to_string(t.n_bytes) +
                     " bytes) runs past the end of the file (data section is " +
                     std::to_string(data_size) + " bytes)");
    }
    if (prev != nullptr && t.offset < prev_end) {
      return corrupt(path + ": tensors '" + std::string(prev->name) + "' and '" +
                     std::string(t.name) + "' overlap");
    }
    t.data = data + t.offset;
    prev_end = t.offset + t.n_bytes;
    prev = &t;
  }
  return Status::ok();
}

}  // namespace

Status GgufFile::parse(const GgufOpenOptions& opt) {
  Cursor c(base_, size_, path_);
  LLMT_RETURN_IF_ERROR(read_magic_and_version(c, path_, size_, version_));
  uint64_t n_tensors = 0, n_kv = 0;
  LLMT_RETURN_IF_ERROR(c.read(n_tensors, "tensor count"));
  LLMT_RETURN_IF_ERROR(c.read(n_kv, "metadata count"));
  if (n_tensors > opt.max_tensors) {
    return c.fail("tensor count " + std::to_string(n_tensors) + " exceeds the limit");
  }
  if (n_kv > opt.max_kvs)
    return c.fail("metadata count " + std::to_string(n_kv) + " exceeds the limit");
  // Each KV needs at least 8 (key len) + 4 (type) + 1 bytes; each tensor 8 + 4 + 4 + 8.
  if (n_kv > c.remaining() / 13 || n_tensors > c.remaining() / 24) {
    return c.fail("metadata/tensor counts (" + std::to_string(n_kv) + ", " +
                  std::to_string(n_tensors) + ") run past the end of the file");
  }

  LLMT_RETURN_IF_ERROR(read_kvs(c, n_kv, opt, kvs_));
  kv_index_.resize(n_kv);
  for (size_t i = 0; i < n_kv; ++i) kv_index_[i] = i;
  std::sort(kv_index_.begin(), kv_index_.end(),
            [&](size_t a, size_t b) { return kvs_[a].key < kvs_[b].key; });
  for (size_t i = 1; i < n_kv; ++i) {
    if (kvs_[kv_index_[i]].key == kvs_[kv_index_[i - 1]].key) {
      return corrupt(path_ + ": duplicate metadata key '" + std::string(kvs_[kv_index_[i]].key) +
                     "'");
    }
  }

  if (const GgufValue* a = find("general.alignment")) {
    LLMT_RETURN_IF_ERROR(read_alignment(*a, path_, alignment_));
  }

  tensors_.resize(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    LLMT_RETURN_IF_ERROR(read_tensor_info(c, alignment_, tensors_[i]));
  }
  tensor_index_.resize(n_tensors);
  for (size_t i = 0; i < n_tensors; ++i) tensor_index_[i] = i;
  std::sort(tensor_index_.begin(), tensor_index_.end(),
            [&](size_t a, size_t b) { return tensors_[a].name < tensors_[b].name; });
  for (size_t i = 1; i < n_tensors; ++i) {
    if (tensors_[tensor_index_[i]].name == tensors_[tensor_index_[i - 1]].name) {
      return corrupt(path_ + ": duplicate tensor name '" +
                     std::string(tensors_[tensor_index_[i]].name) + "'");
    }
  }

  // The data section starts at the next multiple of the alignment after the header.
  uint64_t pos = c.pos();
  uint64_t data_off = (pos + alignment_ - 1) / alignment_ * alignment_;
  if (n_tensors > 0 && data_off > size_) {
    return corrupt(path_ + ": truncated file: data section starts past the end of the file");
  }
  data_offset_ = std::min(data_off, size_);
  const uint64_t data_size = size_ - data_offset_;

  // Tensor data must lie inside the file and must not overlap.
  return place_tensors(tensors_, base_ + data_offset_, data_size, path_);
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = std::lower_bound(kv_index_.begin(), kv_index_.end(), key,
                             [&](size_t i, std::string_view k) { return kvs_[i].key < k; });
  if (it == kv_index_.end() || kvs_[*it].key != key) return nullptr;
  return &kvs_[*it].value;
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  auto it = std::lower_bound(tensor_index_.begin(), tensor_index_.end(), name,
                             [&](size_t i, std::string_view k) { return tensors_[i].name < k; });
  if (it == tensor_index_.end() || tensors_[*it].name != name) return nullptr;
  return &tensors_[*it];
}

namespace {
Status type_mismatch(const std::string& path, std::string_view key, const GgufValue& v,
                     const char* expected) {
  std::string got = gguf_type_name(v.type);
  if (v.type == GgufType::ARRAY) got += std::string(" of ") + gguf_type_name(v.elem_type);
  return corrupt(path + ": key '" + std::string(key) + "' has type " + got + ", expected " +
                 expected);
}
}  // namespace

Result<std::optional<std::string_view>> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::optional<std::string_view>();
  if (v->type != GgufType::STRING) return type_mismatch(path_, key, *v, "string");
  return std::optional<std::string_view>(v->str);
}

Result<std::optional<int64_t>> GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::optional<int64_t>();
  auto x = v->is_integer() ? v->as_int() : std::nullopt;
  if (!x) return type_mismatch(path_, key, *v, "an integer fitting in int64");
  return std::optional<int64_t>(*x);
}

Result<std::optional<double>> GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::optional<double>();
  auto x = v->type == GgufType::BOOL ? std::nullopt : v->as_float();
  if (!x) return type_mismatch(path_, key, *v, "a number");
  return std::optional<double>(*x);
}

Result<std::optional<bool>> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::optional<bool>();
  if (v->type != GgufType::BOOL) return type_mismatch(path_, key, *v, "bool");
  return std::optional<bool>(v->num.u != 0);
}

Result<std::optional<std::vector<std::string_view>>> GgufFile::get_string_array(
    std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::optional<std::vector<std::string_view>>();
  if (v->type != GgufType::ARRAY || v->elem_type != GgufType::STRING) {
    return type_mismatch(path_, key, *v, "array of string");
  }
  std::vector<std::string_view> out;
  out.reserve(v->array.size());
  for (const auto& e : v->array) out.push_back(e.str);
  return std::optional<std::vector<std::string_view>>(std::move(out));
}

Result<std::optional<std::vector<float>>> GgufFile::get_float_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::optional<std::vector<float>>();
  if (v->type != GgufType::ARRAY) return type_mismatch(path_, key, *v, "array of numbers");
  std::vector<float> out;
  out.reserve(v->array.size());
  for (const auto& e : v->array) {
    auto x = e.type == GgufType::BOOL ? std::nullopt : e.as_float();
    if (!x) return type_mismatch(path_, key, *v, "array of numbers");
    out.push_back(static_cast<float>(*x));
  }
  return std::optional<std::vector<float>>(std::move(out));
}

Result<std::optional<std::vector<int64_t>>> GgufFile::get_int_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::optional<std::vector<int64_t>>();
  if (v->type != GgufType::ARRAY) return type_mismatch(path_, key, *v, "array of integers");
  std::vector<int64_t> out;
  out.reserve(v->array.size());
  for (const auto& e : v->array) {
    auto x = e.is_integer() ? e.as_int() : std::nullopt;
    if (!x) return type_mismatch(path_, key, *v, "array of integers");
    out.push_back(*x);
  }
  return std::optional<std::vector<int64_t>>(std::move(out));
}

}  // namespace llmt
