// libFuzzer target: every tokenizer of the vocabularies in $LLMT_DATA/models/vocab (SPM, BPE with
// each pre-tokenizer, WordPiece where supported) on arbitrary text. Input: byte 0 picks the
// vocabulary, byte 1 the options, the rest is the text. Checks the contracts that hold for every
// input: ids in range, the stream decoder's output is valid UTF-8, and decoding arbitrary ids
// (in range or not) is safe.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "llmthreads/gguf.h"
#include "llmthreads/tokenizer.h"

namespace {

struct Vocab {
  std::string name;
  std::unique_ptr<llmt::GgufFile> gguf;  // the tokenizer may view its strings
  std::unique_ptr<llmt::Tokenizer> tok;
};

std::vector<Vocab> load_vocabs() {
  const char* env = std::getenv("LLMT_DATA");
  std::filesystem::path dir =
      std::filesystem::path(env != nullptr ? env : LLMT_DATA) / "models/vocab";
  std::vector<Vocab> out;
  std::error_code ec;
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".gguf") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    auto g = llmt::GgufFile::open(f.string());
    if (!g.is_ok()) continue;
    auto t = llmt::Tokenizer::from_gguf(**g);
    if (!t.is_ok()) {
      std::fprintf(stderr, "fuzz-tokenizer: skipping %s: %s\n", f.filename().c_str(),
                   t.status().message().c_str());
      continue;
    }
    out.push_back({f.filename().string(), std::move(g).value(), std::move(t).value()});
  }
  if (out.empty()) {
    std::fprintf(stderr, "fuzz-tokenizer: no vocabulary found in %s\n", dir.c_str());
    std::abort();
  }
  return out;
}

// Loaded once per process: libFuzzer calls the target many times, and loading is the slow part.
// Immutable after construction (a function-local static const, not mutable global state).
const std::vector<Vocab>& vocabs() {
  static const std::vector<Vocab> v = load_vocabs();
  return v;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const auto& vs = vocabs();
  const Vocab& v = vs[data[0] % vs.size()];
  llmt::TokenizeOptions opt;
  opt.add_special = (data[1] & 1) != 0;
  opt.parse_special = (data[1] & 2) != 0;
  std::string text(reinterpret_cast<const char*>(data + 2), size - 2);
  std::vector<int32_t> ids = v.tok->encode(text, opt);
  for (int32_t id : ids) {
    if (id < 0 || id >= v.tok->n_vocab()) {
      std::fprintf(stderr, "%s: id %d out of range\n", v.name.c_str(), id);
      std::abort();
    }
  }
  std::string decoded = v.tok->decode(ids, (data[1] & 4) != 0);
  llmt::StreamDecoder sd(*v.tok, (data[1] & 4) != 0);
  std::string streamed;
  for (int32_t id : ids) streamed += sd.push(id);
  streamed += sd.flush();
  if (!valid_utf8(streamed)) {
    std::fprintf(stderr, "%s: stream decoder emitted invalid UTF-8\n", v.name.c_str());
    std::abort();
  }
  // Decoding arbitrary ids (not from encode) must not misbehave either.
  std::vector<int32_t> raw;
  for (size_t i = 2; i + 1 < size && raw.size() < 64; i += 2) {
    raw.push_back(static_cast<int32_t>((data[i] | (data[i + 1] << 8)) % (v.tok->n_vocab() + 8)) -
                  4);
  }
  (void)v.tok->decode(raw, true);
  for (int32_t id : raw) (void)v.tok->token_to_piece(id, true);
  return 0;
}
