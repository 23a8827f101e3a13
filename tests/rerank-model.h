// Test helper: a bert GGUF with a classification / reranking head written into it (no file in
// ../shared carries one): the source file's metadata and tensors copied, pooling_type replaced,
// the head's F32 tensors and labels added. Used by test-rerank and test-server-rerank.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gguf-writer.h"
#include "llmthreads/gguf.h"

namespace llmt::test {

// The GGUF bytes of a parsed value after its type tag (arrays element by element).
inline void append_value(std::vector<uint8_t>& b, const GgufValue& v) {
  auto raw = [&](const void* p, size_t n) {
    b.insert(b.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  };
  switch (v.type) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::BOOL:
      raw(&v.num.u, 1);  // little-endian: the low bytes of the union
      break;
    case GgufType::UINT16:
    case GgufType::INT16:
      raw(&v.num.u, 2);
      break;
    case GgufType::UINT32:
    case GgufType::INT32:
      raw(&v.num.u, 4);
      break;
    case GgufType::UINT64:
    case GgufType::INT64:
      raw(&v.num.u, 8);
      break;
    case GgufType::FLOAT32: {
      const float f = static_cast<float>(v.num.f);
      raw(&f, 4);
      break;
    }
    case GgufType::FLOAT64:
      raw(&v.num.f, 8);
      break;
    case GgufType::STRING: {
      const uint64_t n = v.str.size();
      raw(&n, 8);
      raw(v.str.data(), v.str.size());
      break;
    }
    case GgufType::ARRAY: {
      const uint32_t t = static_cast<uint32_t>(v.elem_type);
      const uint64_t n = v.array.size();
      raw(&t, 4);
      raw(&n, 8);
      for (const GgufValue& e : v.array) append_value(b, e);
      break;
    }
  }
}

// The head to add: F32 tensors, each present when not empty.
struct Head {
  std::vector<float> cls;    // [n_embd, n_embd] row-major (row = output feature)
  std::vector<float> cls_b;  // [n_embd]
  std::vector<float> out;    // [n_out, n_embd]
  std::vector<float> out_b;  // [n_out]
  int64_t n_out = 0;
  std::vector<std::string> labels;
  int64_t pooling = 4;  // bert.pooling_type written
};

inline std::vector<float> random_floats(size_t n, float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

inline Head random_head(int64_t n_embd, int64_t n_out, bool with_dense) {
  Head h;
  h.n_out = n_out;
  // Scaled so that the dense layer's outputs are O(1): tanh neither saturates nor stays linear.
  const float s = 1.0f / std::sqrt(static_cast<float>(n_embd));
  if (with_dense) {
    h.cls = random_floats(static_cast<size_t>(n_embd * n_embd), s, 11);
    h.cls_b = random_floats(static_cast<size_t>(n_embd), 0.1f, 12);
  }
  h.out = random_floats(static_cast<size_t>(n_out * n_embd), s, 13);
  h.out_b = random_floats(static_cast<size_t>(n_out), 0.1f, 14);
  return h;
}

// Writes the bert file at `src` with its pooling_type replaced and the head's tensors (and
// labels) added; returns the path written.
inline std::string write_with_head(const std::string& src, const Head& head,
                                   const std::string& dst) {
  auto g = GgufFile::open(src);
  EXPECT_TRUE(g.is_ok()) << g.status().to_string();
  if (!g.is_ok()) return dst;
  const GgufFile& f = **g;
  const uint64_t align = f.alignment();
  GgufWriter w;
  for (const GgufKV& kv : f.kvs()) {
    if (kv.key == "bert.pooling_type") continue;
    std::vector<uint8_t> value;
    append_value(value, kv.value);
    w.kv_raw(std::string(kv.key), static_cast<uint32_t>(kv.value.type), value);
  }
  w.kv_u32("bert.pooling_type", static_cast<uint32_t>(head.pooling));
  if (!head.labels.empty()) w.kv_strings("bert.classifier.output_labels", head.labels);
  struct Blob {
    const void* data;
    uint64_t bytes;
    uint64_t offset;
  };
  std::vector<Blob> blobs;
  uint64_t off = 0;
  auto place = [&](const std::string& name, const std::vector<uint64_t>& dims, uint32_t type,
                   const void* data, uint64_t bytes) {
    w.tensor(name, dims, type, off);
    blobs.push_back({data, bytes, off});
    off += (bytes + align - 1) / align * align;
  };
  for (const GgufTensor& t : f.tensors()) {
    std::vector<uint64_t> dims(t.shape.begin(), t.shape.end());
    place(std::string(t.name), dims, static_cast<uint32_t>(t.type), t.data, t.n_bytes);
  }
  const uint64_t n_embd =
      f.tensors().empty() ? 0 : static_cast<uint64_t>(f.find_tensor("token_embd.weight")->shape[0]);
  auto f32 = [&](const std::string& name, const std::vector<uint64_t>& dims,
                 const std::vector<float>& v) {
    if (!v.empty()) place(name, dims, 0, v.data(), v.size() * sizeof(float));
  };
  f32("cls.weight", {n_embd, n_embd}, head.cls);
  f32("cls.bias", {n_embd}, head.cls_b);
  f32("cls.output.weight", {n_embd, static_cast<uint64_t>(head.n_out)}, head.out);
  f32("cls.output.bias", {static_cast<uint64_t>(head.n_out)}, head.out_b);
  // The data section starts at a multiple of `align` (the writer pads the header to 32).
  std::vector<uint8_t> bytes = w.bytes(0);
  while (bytes.size() % align) bytes.push_back(0);
  const size_t data_start = bytes.size();
  bytes.resize(data_start + off, 0);
  for (const Blob& b : blobs) std::memcpy(bytes.data() + data_start + b.offset, b.data, b.bytes);
  std::ofstream(dst, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  return dst;
}

inline std::string temp_path(const std::string& tag) {
  return (std::filesystem::temp_directory_path() /
          ("llmt-rerank-" + tag + "-" + std::to_string(getpid()) + ".gguf"))
      .string();
}

// The head over state h, in double.
inline std::vector<double> head_reference(const Head& head, const std::vector<float>& h) {
  const size_t ne = h.size();
  std::vector<double> x(h.begin(), h.end());
  if (!head.cls.empty()) {
    std::vector<double> d(ne);
    for (size_t i = 0; i < ne; ++i) {
      double acc = head.cls_b.empty() ? 0.0 : head.cls_b[i];
      for (size_t j = 0; j < ne; ++j) acc += static_cast<double>(head.cls[i * ne + j]) * x[j];
      d[i] = std::tanh(acc);
    }
    x = d;
  }
  std::vector<double> s(static_cast<size_t>(head.n_out));
  for (size_t i = 0; i < s.size(); ++i) {
    double acc = head.out_b.empty() ? 0.0 : head.out_b[i];
    for (size_t j = 0; j < ne; ++j) acc += static_cast<double>(head.out[i * ne + j]) * x[j];
    s[i] = acc;
  }
  return s;
}

}  // namespace llmt::test
