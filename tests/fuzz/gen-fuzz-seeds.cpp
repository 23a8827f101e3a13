// Writes the generated part of the fuzz seed corpus: `gen-fuzz-seeds DIR` creates DIR/gguf/ with
// small GGUF files (a header alone, an SPM vocabulary, a BPE vocabulary, each with a tensor or
// two), so binary seeds need not be tracked in the repository. Exit 0 when every file was written.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gguf-writer.h"

namespace {

using llmt::test::GgufWriter;

bool write(const std::filesystem::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) std::fprintf(stderr, "gen-fuzz-seeds: cannot write %s\n", p.c_str());
  return static_cast<bool>(out);
}

std::vector<uint8_t> spm_vocab() {
  GgufWriter w;
  w.kv_string("general.architecture", "llama");
  w.kv_string("tokenizer.ggml.model", "llama");
  w.kv_strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>",
                                         "\xE2\x96\x81"
                                         "a",
                                         "\xE2\x96\x81"
                                         "b",
                                         "a", "b", "<0x41>"});
  w.kv_floats("tokenizer.ggml.scores", {0, 0, 0, -1, -2, -3, -4, -5});
  w.kv_i32s("tokenizer.ggml.token_type", {2, 3, 3, 1, 1, 1, 1, 6});
  w.kv_u32("tokenizer.ggml.bos_token_id", 1);
  w.tensor("w", {4, 2}, /*F32*/ 0, 0);
  return w.bytes(32);
}

std::vector<uint8_t> bpe_vocab() {
  GgufWriter w;
  w.kv_string("general.architecture", "gpt2");
  w.kv_string("tokenizer.ggml.model", "gpt2");
  w.kv_string("tokenizer.ggml.pre", "gpt-2");
  w.kv_strings("tokenizer.ggml.tokens", {"a", "b", "ab", "\xC4\xA0",
                                         "\xC4\xA0"
                                         "ab"});
  w.kv_strings("tokenizer.ggml.merges", {"a b", "\xC4\xA0 ab"});
  w.kv_i32s("tokenizer.ggml.token_type", {1, 1, 1, 1, 1});
  w.tensor("w", {8}, /*F16*/ 1, 0);
  w.tensor("x", {2, 2}, /*F32*/ 0, 32);
  return w.bytes(48);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: gen-fuzz-seeds DIR\n");
    return 2;
  }
  const std::filesystem::path dir = std::filesystem::path(argv[1]) / "gguf";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    std::fprintf(stderr, "gen-fuzz-seeds: cannot create %s: %s\n", dir.c_str(),
                 ec.message().c_str());
    return 1;
  }
  std::vector<uint8_t> header = GgufWriter().bytes();
  header.resize(24);  // the 24-byte header alone, without the alignment padding
  bool ok = write(dir / "header-only.gguf", header);
  ok = write(dir / "spm-vocab.gguf", spm_vocab()) && ok;
  ok = write(dir / "bpe-vocab.gguf", bpe_vocab()) && ok;
  return ok ? 0 : 1;
}
