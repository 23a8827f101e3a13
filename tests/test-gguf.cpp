// GGUF reader: every metadata type, nested arrays, alignment, v2/v3, real files, and one test per
// corruption check (each must give a clear Status, never a crash or a huge allocation).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "llmthreads/gguf.h"
#include "test-util.h"

namespace llmt {
namespace {

// Minimal GGUF writer for handcrafted files.
class Writer {
 public:
  std::vector<uint8_t> bytes;
  template <typename T>
  Writer& raw(T v) {
    size_t n = bytes.size();
    bytes.resize(n + sizeof(T));
    std::memcpy(bytes.data() + n, &v, sizeof(T));
    return *this;
  }
  Writer& str(std::string_view s) {
    raw<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  Writer& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    raw<uint32_t>(0x46554747);
    raw<uint32_t>(version);
    raw<uint64_t>(n_tensors);
    return raw<uint64_t>(n_kv);
  }
  Writer& kv_u32(std::string_view key, uint32_t v) {
    str(key);
    raw<uint32_t>(static_cast<uint32_t>(GgufType::UINT32));
    return raw<uint32_t>(v);
  }
  Writer& kv_str(std::string_view key, std::string_view v) {
    str(key);
    raw<uint32_t>(static_cast<uint32_t>(GgufType::STRING));
    return str(v);
  }
  // A tensor info with `dims`, type, offset.
  Writer& tensor(std::string_view name, std::vector<uint64_t> dims, TensorType type, uint64_t off) {
    str(name);
    raw<uint32_t>(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) raw<uint64_t>(d);
    raw<uint32_t>(static_cast<uint32_t>(type));
    return raw<uint64_t>(off);
  }
  Writer& pad(size_t alignment) {
    while (bytes.size() % alignment) bytes.push_back(0);
    return *this;
  }
  Writer& zeros(size_t n) {
    bytes.insert(bytes.end(), n, 0);
    return *this;
  }
};

Result<std::unique_ptr<GgufFile>> parse(const Writer& w) {
  return GgufFile::from_memory(w.bytes, "test.gguf");
}

// Asserts that parsing fails with a message containing `needle` (and the file name).
void expect_error(const Writer& w, const std::string& needle) {
  auto r = parse(w);
  ASSERT_FALSE(r.is_ok()) << "expected an error containing '" << needle << "'";
  const std::string msg = r.status().message();
  EXPECT_NE(msg.find("test.gguf"), std::string::npos) << msg;
  EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg;
}

Writer valid_file(uint32_t version = 3) {
  Writer w;
  w.header(2, 2, version).kv_str("general.architecture", "llama").kv_u32("llama.block_count", 1);
  w.tensor("a", {4, 2}, TensorType::F32, 0);
  w.tensor("b", {32}, TensorType::Q8_0, 32);
  w.pad(32);
  for (int i = 0; i < 8; ++i) w.raw<float>(static_cast<float>(i));
  w.zeros(34);
  return w;
}

TEST(Gguf, ParsesValidFileV3AndV2) {
  for (uint32_t version : {2u, 3u}) {
    Writer w = valid_file(version);
    auto r = parse(w);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    const GgufFile& f = **r;
    EXPECT_EQ(f.version(), version);
    EXPECT_EQ(f.alignment(), 32u);
    EXPECT_EQ(f.data_offset() % 32, 0u);
    ASSERT_EQ(f.tensors().size(), 2u);
    const GgufTensor* a = f.find_tensor("a");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->shape, (std::vector<int64_t>{4, 2}));
    EXPECT_EQ(a->n_elements, 8u);
    EXPECT_EQ(a->n_bytes, 32u);
    float v[8];
    std::memcpy(v, a->data, sizeof(v));
    EXPECT_EQ(v[7], 7.0f);
    const GgufTensor* b = f.find_tensor("b");
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->type, TensorType::Q8_0);
    EXPECT_EQ(b->n_bytes, 34u);
    EXPECT_EQ(b->data, a->data + 32);
    EXPECT_EQ(f.find_tensor("c"), nullptr);
    auto arch = f.get_string("general.architecture");
    ASSERT_TRUE(arch.is_ok());
    EXPECT_EQ(**arch, "llama");
    auto n = f.get_int("llama.block_count");
    ASSERT_TRUE(n.is_ok());
    EXPECT_EQ(**n, 1);
    // Wrong type is an error naming the key; absent is nullopt.
    auto wrong = f.get_string("llama.block_count");
    ASSERT_FALSE(wrong.is_ok());
    EXPECT_NE(wrong.status().message().find("llama.block_count"), std::string::npos);
    auto absent = f.get_int("nope");
    ASSERT_TRUE(absent.is_ok());
    EXPECT_FALSE(absent->has_value());
  }
}

TEST(Gguf, EveryMetadataTypeAndNestedArrays) {
  Writer w;
  w.header(0, 14);
  auto key = [&](const char* k, GgufType t) {
    w.str(k);
    w.raw<uint32_t>(static_cast<uint32_t>(t));
  };
  key("u8", GgufType::UINT8);
  w.raw<uint8_t>(200);
  key("i8", GgufType::INT8);
  w.raw<int8_t>(-100);
  key("u16", GgufType::UINT16);
  w.raw<uint16_t>(60000);
  key("i16", GgufType::INT16);
  w.raw<int16_t>(-30000);
  key("u32", GgufType::UINT32);
  w.raw<uint32_t>(4000000000u);
  key("i32", GgufType::INT32);
  w.raw<int32_t>(-2000000000);
  key("f32", GgufType::FLOAT32);
  w.raw<float>(1.5f);
  key("bool", GgufType::BOOL);
  w.raw<uint8_t>(1);
  key("str", GgufType::STRING);
  w.str("héllo");
  key("u64", GgufType::UINT64);
  w.raw<uint64_t>(1ull << 63);
  key("i64", GgufType::INT64);
  w.raw<int64_t>(-(1ll << 62));
  key("f64", GgufType::FLOAT64);
  w.raw<double>(-2.25);
  key("arr", GgufType::ARRAY);
  w.raw<uint32_t>(static_cast<uint32_t>(GgufType::STRING)).raw<uint64_t>(2).str("a").str("bc");
  key("nested", GgufType::ARRAY);
  w.raw<uint32_t>(static_cast<uint32_t>(GgufType::ARRAY)).raw<uint64_t>(2);
  w.raw<uint32_t>(static_cast<uint32_t>(GgufType::INT32))
      .raw<uint64_t>(2)
      .raw<int32_t>(1)
      .raw<int32_t>(2);
  w.raw<uint32_t>(static_cast<uint32_t>(GgufType::FLOAT32)).raw<uint64_t>(1).raw<float>(0.5f);

  auto r = parse(w);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const GgufFile& f = **r;
  EXPECT_EQ(f.find("u8")->as_int(), 200);
  EXPECT_EQ(f.find("i8")->as_int(), -100);
  EXPECT_EQ(f.find("u16")->as_int(), 60000);
  EXPECT_EQ(f.find("i16")->as_int(), -30000);
  EXPECT_EQ(f.find("u32")->as_int(), 4000000000ll);
  EXPECT_EQ(f.find("i32")->as_int(), -2000000000);
  EXPECT_EQ(f.find("f32")->as_float(), 1.5);
  EXPECT_EQ(**f.get_bool("bool"), true);
  EXPECT_EQ(**f.get_string("str"), "héllo");
  EXPECT_EQ(f.find("u64")->num.u, 1ull << 63);
  EXPECT_FALSE(f.find("u64")->as_int().has_value());  // does not fit int64
  EXPECT_FALSE(f.get_int("u64").is_ok());
  EXPECT_EQ(f.find("i64")->as_int(), -(1ll << 62));
  EXPECT_EQ(**f.get_float("f64"), -2.25);
  auto arr = f.get_string_array("arr");
  ASSERT_TRUE(arr.is_ok());
  EXPECT_EQ(**arr, (std::vector<std::string_view>{"a", "bc"}));
  const GgufValue* nested = f.find("nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->array.size(), 2u);
  EXPECT_EQ(nested->array[0].array[1].as_int(), 2);
  EXPECT_EQ(nested->array[1].array[0].as_float(), 0.5);
  EXPECT_EQ(nested->to_string(), "[[1, 2], [0.5]]");
}

TEST(Gguf, CustomAlignment) {
  Writer w;
  w.header(1, 1).kv_u32("general.alignment", 64);
  w.tensor("t", {16}, TensorType::F32, 0);
  w.pad(64).zeros(64);
  auto r = parse(w);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ((*r)->alignment(), 64u);
  EXPECT_EQ((*r)->data_offset() % 64, 0u);
}

TEST(GgufCorrupt, BadMagic) {
  Writer w = valid_file();
  w.bytes[0] = 'X';
  expect_error(w, "bad magic");
  Writer tiny;
  tiny.raw<uint8_t>('G');
  expect_error(tiny, "not a GGUF file");
}

TEST(GgufCorrupt, BadVersion) {
  Writer w;
  w.header(0, 0, 7);
  expect_error(w, "version 7");
  Writer v1;
  v1.header(0, 0, 1);
  expect_error(v1, "version 1");
  Writer be;
  be.header(0, 0, 0x03000000u);
  expect_error(be, "big-endian");
}

TEST(GgufCorrupt, TruncatedAtEveryByte) {
  Writer w = valid_file();
  for (size_t n = 0; n < w.bytes.size(); ++n) {
    auto r = GgufFile::from_memory(std::span<const uint8_t>(w.bytes.data(), n), "test.gguf");
    EXPECT_FALSE(r.is_ok()) << "a file cut to " << n << " bytes parsed";
    if (!r.is_ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kCorrupt) << r.status().to_string();
    }
  }
}

TEST(GgufCorrupt, BadValueType) {
  Writer w;
  w.header(0, 1).str("k").raw<uint32_t>(13).raw<uint32_t>(0);
  expect_error(w, "bad value type 13");
}

TEST(GgufCorrupt, BadArrayElementType) {
  Writer w;
  w.header(0, 1).str("k").raw<uint32_t>(static_cast<uint32_t>(GgufType::ARRAY));
  w.raw<uint32_t>(99).raw<uint64_t>(1);
  expect_error(w, "bad array element type 99");
}

TEST(GgufCorrupt, BadBool) {
  Writer w;
  w.header(0, 1).str("k").raw<uint32_t>(static_cast<uint32_t>(GgufType::BOOL)).raw<uint8_t>(7);
  expect_error(w, "bool value 7");
}

TEST(GgufCorrupt, HugeArrayCountDoesNotAllocate) {
  Writer w;
  w.header(0, 1).str("tokenizer.ggml.tokens").raw<uint32_t>(static_cast<uint32_t>(GgufType::ARRAY));
  w.raw<uint32_t>(static_cast<uint32_t>(GgufType::STRING)).raw<uint64_t>(1ull << 40);
  expect_error(w, "exceeds the limit");
  Writer w2;
  w2.header(0, 1).str("k").raw<uint32_t>(static_cast<uint32_t>(GgufType::ARRAY));
  w2.raw<uint32_t>(static_cast<uint32_t>(GgufType::UINT64)).raw<uint64_t>(1000);
  expect_error(w2, "runs past the end");
}

TEST(GgufCorrupt, HugeStringLength) {
  Writer w;
  w.header(0, 1).raw<uint64_t>(~0ull).zeros(64);
  expect_error(w, "string length");
}

TEST(GgufCorrupt, HugeCounts) {
  Writer w;
  w.header(~0ull, 0);
  expect_error(w, "exceeds the limit");
  Writer w2;
  w2.header(1000, 1000);
  expect_error(w2, "run past the end");
}

TEST(GgufCorrupt, NestedTooDeep) {
  Writer w;
  w.header(0, 1).str("k").raw<uint32_t>(static_cast<uint32_t>(GgufType::ARRAY));
  for (int i = 0; i < 20; ++i) {
    w.raw<uint32_t>(static_cast<uint32_t>(GgufType::ARRAY)).raw<uint64_t>(1);
  }
  w.raw<uint32_t>(static_cast<uint32_t>(GgufType::UINT8)).raw<uint64_t>(0);
  expect_error(w, "nested too deeply");
}

TEST(GgufCorrupt, DuplicateKey) {
  Writer w;
  w.header(0, 2).kv_u32("a.b", 1).kv_u32("a.b", 2);
  expect_error(w, "duplicate metadata key 'a.b'");
}

TEST(GgufCorrupt, DuplicateTensor) {
  Writer w;
  w.header(2, 0).tensor("t", {8}, TensorType::F32, 0).tensor("t", {8}, TensorType::F32, 32);
  w.pad(32).zeros(64);
  expect_error(w, "duplicate tensor name 't'");
}

TEST(GgufCorrupt, UnknownTensorType) {
  Writer w;
  w.header(1, 0).tensor("t", {8}, static_cast<TensorType>(4), 0).pad(32).zeros(32);
  expect_error(w, "unknown tensor type id 4");
}

TEST(GgufCorrupt, BadDimensions) {
  Writer w;
  w.header(1, 0).tensor("t", {1, 1, 1, 1, 1}, TensorType::F32, 0).pad(32).zeros(32);
  expect_error(w, "5 dimensions");
  Writer w0;
  w0.header(1, 0).tensor("t", {}, TensorType::F32, 0).pad(32).zeros(32);
  expect_error(w0, "0 dimensions");
  Writer neg;
  neg.header(1, 0).tensor("t", {~0ull}, TensorType::F32, 0).pad(32).zeros(32);
  expect_error(neg, "negative");
}

TEST(GgufCorrupt, ElementCountOverflow) {
  Writer w;
  w.header(1, 0).tensor("t", {1ull << 32, 1ull << 32}, TensorType::F32, 0).pad(32).zeros(32);
  expect_error(w, "overflows");
}

TEST(GgufCorrupt, RowNotMultipleOfBlock) {
  Writer w;
  w.header(1, 0).tensor("t", {33}, TensorType::Q4_0, 0).pad(32).zeros(64);
  expect_error(w, "not a multiple of the q4_0 block size 32");
}

TEST(GgufCorrupt, TensorDataOutOfFile) {
  Writer w;
  w.header(1, 0).tensor("t", {64}, TensorType::F32, 0).pad(32).zeros(100);  // needs 256
  expect_error(w, "tensor 't' data");
  Writer far;
  far.header(1, 0).tensor("t", {8}, TensorType::F32, 1ull << 60).pad(32).zeros(32);
  expect_error(far, "runs past the end");
}

TEST(GgufCorrupt, MisalignedOffset) {
  Writer w;
  w.header(1, 0).tensor("t", {8}, TensorType::F32, 4).pad(32).zeros(64);
  expect_error(w, "not a multiple of the alignment 32");
}

TEST(GgufCorrupt, OverlappingTensors) {
  Writer w;
  w.header(2, 0).tensor("a", {16}, TensorType::F32, 0).tensor("b", {8}, TensorType::F32, 32);
  w.pad(32).zeros(128);
  expect_error(w, "overlap");
}

TEST(GgufCorrupt, BadAlignment) {
  Writer w;
  w.header(0, 1).kv_u32("general.alignment", 48);
  expect_error(w, "not a power of two");
  Writer z;
  z.header(0, 1).kv_u32("general.alignment", 0);
  expect_error(z, "not a power of two");
  Writer t;
  t.header(0, 1).kv_str("general.alignment", "32");
  expect_error(t, "general.alignment has type string");
}

TEST(GgufCorrupt, RandomMutationsNeverCrash) {
  // Flip bytes of a real model's header region; every outcome must be ok or a Status.
  LLMT_REQUIRE_DATA("models/stories260K.gguf");
  std::string bytes = test::read_file(test::data_path("models/stories260K.gguf"));
  uint64_t state = 12345;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  const size_t header = 16 * 1024;  // metadata + tensor table of this file live in the first KBs
  int n_errors = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    std::vector<uint8_t> copy(bytes.begin(), bytes.end());
    for (int k = 0; k < 4; ++k) copy[next() % header] = static_cast<uint8_t>(next());
    auto r = GgufFile::from_memory(copy, "mutated.gguf");
    if (!r.is_ok()) ++n_errors;
  }
  EXPECT_GT(n_errors, 0);
}

TEST(GgufFiles, OpenMissingFileNamesIt) {
  auto r = GgufFile::open("/nonexistent/dir/model.gguf");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/dir/model.gguf"), std::string::npos);
  auto d = GgufFile::open("/");
  ASSERT_FALSE(d.is_ok());
}

TEST(GgufFiles, EveryModelInSharedParses) {
  LLMT_REQUIRE_DATA("models/stories260K.gguf");
  int n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(test::data_path("models"))) {
    if (e.path().extension() != ".gguf") continue;
    auto r = GgufFile::open(e.path().string());
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ((*r)->version(), 3u);
    for (const auto& t : (*r)->tensors()) {
      EXPECT_NE(t.data, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 32, 0u) << t.name;
    }
    ++n;
  }
  EXPECT_GE(n, 20);
}

TEST(GgufFiles, Stories260KMetadata) {
  LLMT_REQUIRE_DATA("models/stories260K.gguf");
  auto r = GgufFile::open(test::data_path("models/stories260K.gguf"));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const GgufFile& f = **r;
  EXPECT_EQ(**f.get_string("general.architecture"), "llama");
  EXPECT_EQ(**f.get_int("llama.block_count"), 5);
  EXPECT_EQ(**f.get_int("llama.embedding_length"), 64);
  EXPECT_EQ(**f.get_int("tokenizer.ggml.padding_token_id"), 4294967295ll);
  EXPECT_EQ((*f.get_string_array("tokenizer.ggml.tokens"))->size(), 512u);
  EXPECT_EQ(f.tensors().size(), 48u);
  const GgufTensor* emb = f.find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->shape, (std::vector<int64_t>{64, 512}));
  EXPECT_EQ(emb->type, TensorType::F32);
}

}  // namespace
}  // namespace llmt
