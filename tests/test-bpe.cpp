// Byte-level BPE encoder and pre-tokenizer: golden llama.cpp vocab tests (gpt-2, deepseek-llm,
// deepseek-coder), byte-level decoding, invalid UTF-8, pre-tokenizer splits, thread safety.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "llmthreads/gguf.h"
#include "test-util.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pre-tokenizer.h"

namespace llmt::tok {
namespace {

struct LoadedVocab {
  std::unique_ptr<GgufFile> gguf;
  std::unique_ptr<BpeEncoder> encoder;
  std::vector<std::string_view> tokens;
};

// Loads tokenizer.ggml.{tokens,merges,pre} from a vocab GGUF and builds the encoder.
::testing::AssertionResult load_vocab(const std::string& path, LoadedVocab& v) {
  auto file = GgufFile::open(path);
  if (!file) return ::testing::AssertionFailure() << file.status().to_string();
  v.gguf = std::move(file).value();
  auto tokens = v.gguf->get_string_array("tokenizer.ggml.tokens");
  if (!tokens || !tokens->has_value()) return ::testing::AssertionFailure() << "no tokens";
  auto merges = v.gguf->get_string_array("tokenizer.ggml.merges");
  if (!merges || !merges->has_value()) return ::testing::AssertionFailure() << "no merges";
  auto pre = v.gguf->get_string("tokenizer.ggml.pre");
  if (!pre) return ::testing::AssertionFailure() << pre.status().to_string();
  std::string_view pre_name = pre->has_value() ? **pre : std::string_view("default");
  v.tokens = **tokens;
  auto enc = BpeEncoder::create(v.tokens, **merges, pre_name);
  if (!enc) return ::testing::AssertionFailure() << enc.status().to_string();
  v.encoder = std::move(enc).value();
  return ::testing::AssertionSuccess();
}

// Splits a .inp/.out file into cases: separated by "\n__ggml_vocab_test__\n", ending with one.
std::vector<std::string> split_cases(const std::string& s) {
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t next = s.find(sep, pos);
    if (next == std::string::npos) {
      out.push_back(s.substr(pos));
      break;
    }
    out.push_back(s.substr(pos, next - pos));
    pos = next + sep.size();
  }
  return out;
}

std::vector<int32_t> parse_ids(const std::string& line) {
  std::vector<int32_t> ids;
  std::istringstream in(line);
  long long v;
  while (in >> v) ids.push_back(static_cast<int32_t>(v));
  return ids;
}

std::string ids_to_string(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ' ';
    s += std::to_string(ids[i]);
  }
  return s;
}

std::string escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\r')
      out += "\\r";
    else
      out += static_cast<char>(c);
  }
  return out;
}

void check_golden(const std::string& name) {
  const std::string rel = "models/vocab/ggml-vocab-" + name + ".gguf";
  LLMT_REQUIRE_DATA(rel);
  LoadedVocab v;
  ASSERT_TRUE(load_vocab(test::data_path(rel), v));
  const std::string inp = test::read_file(test::data_path(rel + ".inp"));
  const std::string outp = test::read_file(test::data_path(rel + ".out"));
  // The .out file has one line per case (cases end with "\n", the separator line is absent).
  std::vector<std::string> cases = split_cases(inp);
  std::vector<std::string> expected_lines;
  {
    std::istringstream in(outp);
    std::string line;
    while (std::getline(in, line)) expected_lines.push_back(line);
  }
  // The inputs file ends with a separator, so split_cases gives exactly one entry per case.
  ASSERT_EQ(cases.size(), expected_lines.size()) << name;
  int n_pass = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    std::vector<int32_t> got;
    v.encoder->encode(cases[i], got);
    const std::vector<int32_t> want = parse_ids(expected_lines[i]);
    if (got == want) {
      ++n_pass;
    } else {
      ADD_FAILURE() << name << " case " << i << " '" << escape(cases[i]) << "'\n  want "
                    << ids_to_string(want) << "\n  got  " << ids_to_string(got);
    }
  }
  std::printf("[ bpe golden ] %s: %d/%zu cases pass\n", name.c_str(), n_pass, cases.size());
  EXPECT_EQ(n_pass, static_cast<int>(cases.size()));
}

TEST(BpeGolden, Gpt2) {
  check_golden("gpt-2");
}
TEST(BpeGolden, DeepseekLlm) {
  check_golden("deepseek-llm");
}
TEST(BpeGolden, DeepseekCoder) {
  check_golden("deepseek-coder");
}

TEST(BpeDecode, ByteLevelText) {
  EXPECT_EQ(BpeEncoder::decode_token_text("\xC4\xA0the"), " the");  // Ġthe
  EXPECT_EQ(BpeEncoder::decode_token_text("\xC4\x8A"), "\n");       // Ċ
  EXPECT_EQ(BpeEncoder::decode_token_text("\xC4\x89"), "\t");       // ĉ
  EXPECT_EQ(BpeEncoder::decode_token_text("hello"), "hello");
  EXPECT_EQ(BpeEncoder::decode_token_text(""), "");
  // "Ã©" is the byte-level form of the UTF-8 bytes of "é".
  EXPECT_EQ(BpeEncoder::decode_token_text("\xC3\x83\xC2\xA9"), "\xC3\xA9");
  // Characters outside the alphabet: returned unchanged.
  EXPECT_EQ(BpeEncoder::decode_token_text("a b"), "a b");                          // raw space
  EXPECT_EQ(BpeEncoder::decode_token_text("\xE2\x96\x81the"), "\xE2\x96\x81the");  // ▁the
  EXPECT_EQ(BpeEncoder::decode_token_text("<|endoftext|>"), "<|endoftext|>");
  EXPECT_EQ(BpeEncoder::decode_token_text("\xFF\xFE"), "\xFF\xFE");  // invalid UTF-8
}

TEST(BpeDecode, RoundTripAllBytes) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  const std::string enc = BpeEncoder::encode_bytes(all);
  EXPECT_EQ(BpeEncoder::decode_token_text(enc), all);
  EXPECT_EQ(BpeEncoder::encode_bytes(" "), "\xC4\xA0");
}

TEST(BpeCreate, UnknownPreIsUnsupported) {
  std::vector<std::string_view> tokens = {"a", "b"};
  std::vector<std::string_view> merges = {};
  auto r = BpeEncoder::create(tokens, merges, "no-such-pre");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.status().message().find("no-such-pre"), std::string::npos);
}

TEST(BpeCreate, AllKnownPreTypesCompile) {
  for (const char* pre :
       {"default",    "gpt-2",        "llama-bpe",      "llama3",    "llama-v3",    "qwen2",
        "smollm",     "deepseek-llm", "deepseek-coder", "starcoder", "falcon",      "gpt-4o",
        "tekken",     "poro-chat",    "viking",         "dbrx",      "chatglm-bpe", "seed-coder",
        "bailingmoe", "mpt",          "olmo",           "command-r", "deepseek-v3"}) {
    auto p = PreTokenizer::create(pre);
    EXPECT_TRUE(p) << pre << ": " << p.status().to_string();
  }
}

// A tiny synthetic vocabulary: all 256 byte characters plus a few merges.
std::unique_ptr<BpeEncoder> tiny_encoder(std::string_view pre, std::vector<std::string>& storage) {
  storage.clear();
  for (int b = 0; b < 256; ++b)
    storage.push_back(BpeEncoder::encode_bytes(std::string(1, char(b))));
  storage.push_back("ab");
  storage.push_back("abc");
  storage.push_back(
      "\xC4\xA0"
      "a");  // "Ġa"
  std::vector<std::string_view> tokens(storage.begin(), storage.end());
  std::vector<std::string_view> merges = {"a b", "ab c", "\xC4\xA0 a"};
  auto r = BpeEncoder::create(tokens, merges, pre);
  EXPECT_TRUE(r) << r.status().to_string();
  return r ? std::move(r).value() : nullptr;
}

TEST(BpeEncode, MergesByRank) {
  std::vector<std::string> storage;
  auto enc = tiny_encoder("gpt-2", storage);
  ASSERT_TRUE(enc);
  std::vector<int32_t> ids;
  enc->encode("abc abx", ids);
  // Byte b's character is token b. "abc": a b -> ab (rank 0) -> abc (rank 1). " abx": "a b"
  // (rank 0) beats "Ġ a" (rank 2), and nothing merges with "ab" afterwards.
  const int32_t id_ab = 256, id_abc = 257;
  std::vector<int32_t> want = {id_abc, ' ', id_ab, 'x'};
  EXPECT_EQ(ids, want);
}

TEST(BpeEncode, InvalidUtf8DoesNotCrash) {
  std::vector<std::string> storage;
  auto enc = tiny_encoder("gpt-2", storage);
  ASSERT_TRUE(enc);
  for (std::string_view bad :
       {std::string_view("\xFF"), std::string_view("a\x80z"), std::string_view("\xC3"),
        std::string_view("\xE2\x82"), std::string_view("\xF0\x9F\x98"),
        std::string_view("\xED\xA0\x80"), std::string_view("\xC0\x80", 2),
        std::string_view("\xF8\x88\x80\x80\x80"), std::string_view("x\xF4\x90\x80\x80y")}) {
    std::vector<int32_t> ids;
    enc->encode(bad, ids);
    EXPECT_FALSE(ids.empty());
  }
  // A bad byte becomes U+FFFD (EF BF BD), i.e. byte tokens 0xEF 0xBF 0xBD here.
  std::vector<int32_t> ids;
  enc->encode("\xFF", ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{0xEF, 0xBF, 0xBD}));
  // Overlong NUL is re-encoded as 0x00 (as llama.cpp's lenient decoder does).
  ids.clear();
  enc->encode(std::string_view("\xC0\x80", 2), ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{0}));
}

TEST(BpeEncode, SanitizeUtf8) {
  std::string out;
  EXPECT_FALSE(sanitize_utf8("plain \xC3\xA9 \xF0\x9F\x98\x81", out));
  EXPECT_TRUE(
      sanitize_utf8("a\xFF"
                    "b",
                    out));
  EXPECT_EQ(out,
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_TRUE(sanitize_utf8("\xE2\x82", out));  // truncated: two bad bytes
  EXPECT_EQ(out, "\xEF\xBF\xBD\xEF\xBF\xBD");
}

std::vector<std::string> pieces(const PreTokenizer& p, std::string_view text) {
  std::vector<TextSpan> spans;
  p.split(text, spans);
  std::vector<std::string> out;
  for (auto s : spans) out.emplace_back(text.substr(s.begin, s.end - s.begin));
  return out;
}

TEST(PreTokenizer, Llama3Splits) {
  auto p = PreTokenizer::create("llama-bpe");
  ASSERT_TRUE(p);
  EXPECT_TRUE((*p)->ignore_merges());
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces(**p, "Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces(**p, "I'VE 12345"), (V{"I", "'VE", " ", "123", "45"}));
  EXPECT_EQ(pieces(**p, "a  \n\n b"), (V{"a", "  \n\n", " b"}));
  EXPECT_EQ(pieces(**p, "x   "), (V{"x", "   "}));
  EXPECT_EQ(pieces(**p, "x   y"), (V{"x", "  ", " y"}));
  EXPECT_EQ(pieces(**p, "(!!)\n\nz"), (V{"(!!)\n\n", "z"}));
}

TEST(PreTokenizer, Qwen2SingleDigits) {
  auto p = PreTokenizer::create("qwen2");
  ASSERT_TRUE(p);
  EXPECT_FALSE((*p)->ignore_merges());
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces(**p, "ab123"), (V{"ab", "1", "2", "3"}));
}

TEST(PreTokenizer, WhitespaceSetMatchesLlamaCpp) {
  auto p = PreTokenizer::create("gpt-2");
  ASSERT_TRUE(p);
  using V = std::vector<std::string>;
  // U+0085 (NEL) and U+3000 are whitespace; U+001C is not.
  EXPECT_EQ(pieces(**p, "a\xC2\x85\xC2\x85"), (V{"a", "\xC2\x85\xC2\x85"}));
  EXPECT_EQ(pieces(**p, "a\xE3\x80\x80"), (V{"a", "\xE3\x80\x80"}));
  EXPECT_EQ(pieces(**p, "a\x1C\x1C"), (V{"a", "\x1C\x1C"}));
}

TEST(PreTokenizer, DeepseekLlmTrailingSpaceAndCjk) {
  auto p = PreTokenizer::create("deepseek-llm");
  ASSERT_TRUE(p);
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces(**p, "Hi  "), (V{"Hi", "  "}));
  // U+3000 is not taken by the CJK or punctuation ranges, only by \s.
  EXPECT_EQ(pieces(**p, "\xE4\xB8\x80\xE3\x80\x80\xE4\xB8\x80"),
            (V{"\xE4\xB8\x80", "\xE3\x80\x80", "\xE4\xB8\x80"}));
}

TEST(PreTokenizer, DeepseekV3TildeQuirk) {
  auto p = PreTokenizer::create("deepseek-v3");
  ASSERT_TRUE(p);
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces(**p, "Hello, world!!"), (V{"Hello", ",", " world", "!!"}));
  EXPECT_EQ(pieces(**p, "12345"), (V{"123", "45"}));
  EXPECT_EQ(pieces(**p, "a~b"), (V{"a", "~b"}));
  // llama.cpp's collapsed \p{S} has no '~', so " ~~" is not one punctuation run.
  EXPECT_EQ(pieces(**p, "x ~~"), (V{"x", " ", "~~"}));
  EXPECT_EQ(pieces(**p, "x !?"), (V{"x", " !?"}));
}

TEST(PreTokenizer, LongInputs) {
  auto p = PreTokenizer::create("deepseek-llm");
  ASSERT_TRUE(p);
  std::string cjk;
  for (int i = 0; i < 200000; ++i) cjk += "\xE4\xB8\x80";
  EXPECT_EQ(pieces(**p, cjk).size(), 1u);
  auto t = PreTokenizer::create("tekken");
  ASSERT_TRUE(t);
  std::string letters(500000, 'A');
  letters += "bcd";
  EXPECT_EQ(pieces(**t, letters).size(), 1u);
  std::string spaces(300000, ' ');
  spaces += "x";
  auto g = PreTokenizer::create("gpt-2");
  ASSERT_TRUE(g);
  EXPECT_EQ(pieces(**g, spaces).size(), 2u);
  // A long run through a repeated group (JIT stack growth, then the fallbacks).
  auto d = PreTokenizer::create("deepseek-v3");
  ASSERT_TRUE(d);
  EXPECT_EQ(pieces(**d, std::string(" ") + std::string(1000000, '!')).size(), 1u);
}

// Random text (ASCII, multi-byte characters, whitespace of all kinds, invalid bytes) through every
// pre type: pieces tile the text exactly, and with a vocabulary of just the 256 byte tokens plus
// a few merges, decoding the ids gives back the (repaired) text.
TEST(BpeEncode, RandomTextRoundTripsForEveryPreType) {
  const char* kAtoms[] = {"a",
                          "Z",
                          "7",
                          " ",
                          "  ",
                          "\n",
                          "\r\n",
                          "\t",
                          "'s",
                          "'LL",
                          "!",
                          "~",
                          "\xC3\xA9",
                          "\xE4\xB8\x80",
                          "\xE3\x80\x80",
                          "\xC2\x85",
                          "\xC2\xA0",
                          "\xF0\x9F\x98\x81",
                          "\xD9\xA3",
                          "\xCC\x81",
                          "\xFF",
                          "\x80",
                          "\xE2\x82",
                          "ab",
                          "abc",
                          "\x00",
                          "\xEF\xBC\x81",
                          "\xE2\x80\x99",
                          "http://x.y/z"};
  uint32_t rng = 12345;
  auto next = [&rng] {
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
  };
  for (const char* pre : {"default", "gpt-2", "llama-bpe", "qwen2", "smollm", "deepseek-llm",
                          "deepseek-coder", "falcon", "gpt-4o", "tekken", "poro-chat", "viking",
                          "seed-coder", "bailingmoe", "deepseek-v3"}) {
    std::vector<std::string> storage;
    auto enc = tiny_encoder(pre, storage);
    ASSERT_TRUE(enc) << pre;
    for (int iter = 0; iter < 300; ++iter) {
      std::string text;
      const int n_atoms = static_cast<int>(next() % 24);
      for (int k = 0; k < n_atoms; ++k) {
        const char* atom = kAtoms[next() % (sizeof(kAtoms) / sizeof(kAtoms[0]))];
        text += (atom[0] == '\0' ? std::string(1, '\0') : std::string(atom));
      }
      std::string repaired = text;
      std::string fixed;
      if (sanitize_utf8(text, fixed)) repaired = fixed;

      std::vector<TextSpan> spans;
      enc->pre_tokenizer().split(repaired, spans);
      size_t at = 0;
      for (const TextSpan& sp : spans) {
        ASSERT_EQ(sp.begin, at) << pre;
        ASSERT_LT(sp.begin, sp.end) << pre;
        at = sp.end;
      }
      ASSERT_EQ(at, repaired.size()) << pre;

      std::vector<int32_t> ids;
      enc->encode(text, ids);
      std::string decoded;
      for (int32_t id : ids)
        decoded += BpeEncoder::decode_token_text(storage[static_cast<size_t>(id)]);
      ASSERT_EQ(decoded, repaired) << pre;
    }
  }
}

TEST(BpeEncode, ConcurrentEncodeMatchesSerial) {
  const std::string rel = "models/vocab/ggml-vocab-deepseek-coder.gguf";
  LLMT_REQUIRE_DATA(rel);
  LoadedVocab v;
  ASSERT_TRUE(load_vocab(test::data_path(rel), v));
  const std::vector<std::string> cases =
      split_cases(test::read_file(test::data_path(rel + ".inp")));
  std::vector<std::vector<int32_t>> serial(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) v.encoder->encode(cases[i], serial[i]);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep) {
        for (size_t i = 0; i < cases.size(); ++i) {
          std::vector<int32_t> ids;
          v.encoder->encode(cases[i], ids);
          if (ids != serial[i]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

TEST(BpeEncode, LongDocumentThroughput) {
  const std::string rel = "models/vocab/ggml-vocab-gpt-2.gguf";
  LLMT_REQUIRE_DATA(rel);
  LoadedVocab v;
  ASSERT_TRUE(load_vocab(test::data_path(rel), v));
  const std::string inp = test::read_file(test::data_path(rel + ".inp"));
  std::string doc;
  while (doc.size() < 4u << 20) doc += inp;
  doc += std::string(100000, 'z');  // one very long word
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> ids;
  v.encoder->encode(doc, ids);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ bpe perf ] %.1f MB -> %zu tokens in %.3f s (%.1f MB/s)\n", doc.size() / 1e6,
              ids.size(), s, doc.size() / 1e6 / s);
  EXPECT_GT(ids.size(), doc.size() / 10);
  EXPECT_LT(s, 30.0);
}

}  // namespace
}  // namespace llmt::tok
