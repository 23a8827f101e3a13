// gen-shape-model: writes a random-weight GGUF in the real shape of a known model (Qwen3-0.6B,
// Gemma-3-1B, a scaled-down Phi-3-mini, GPT-2 124M), or its llama "twin": a llama-architecture
// file with the same matmul weight bytes (same width, layers, heads, head_dim, vocabulary rows,
// tied-ness and weight type; the FFN width adjusted where the architecture has no gate), so that
// `llmthreads bench` on the pair compares the architectures' forward passes at equal memory
// traffic and equal multiply-adds per token.
//
//   gen-shape-model --preset NAME [--llama-twin] [--type q8_0|f16] [--seed N]
//                   [--tokenizer FILE.gguf] -o OUT.gguf
//   gen-shape-model --list
//
// Contract of the output: the metadata keys and tensor names src/model/arch/<arch>.cpp reads;
// matrices ~N(0, 0.02) in the chosen type (token_embd and output too); norm weights 1 (F32),
// biases 0 (F32), gpt2's position_embd ~N(0, 0.02) F32. Every `tokenizer.*` key is copied from
// the tokenizer file (default: the preset's, under LLMT_DATA), so the tokenizer has that file's
// vocabulary; token_embd has the preset's real n_vocab rows (>= the tokenizer's). The same
// (preset, twin, type, seed) gives the same bytes. Weights are generated and written one
// tensor at a time (memory stays small).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/kernels.h"
#include "llmthreads/gguf.h"
#include "llmthreads/tensor-type.h"

#ifndef LLMT_DATA_DEFAULT
#define LLMT_DATA_DEFAULT "../shared"
#endif

namespace {

using llmt::GgufFile;
using llmt::GgufType;
using llmt::GgufValue;
using llmt::TensorType;

// A model shape. q_dim = n_head * head_dim, kv_dim = n_head_kv * head_dim.
struct Preset {
  const char* name;
  const char* arch;  // general.architecture
  int32_t n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx;
  bool tied;              // no output.weight (the output is token_embd)
  float rms_eps;          // attention.layer_norm_rms_epsilon (gpt2: layer_norm_epsilon)
  float rope_base;        // rope.freq_base (0: not written)
  int32_t n_swa;          // attention.sliding_window (0: not written)
  const char* tokenizer;  // default tokenizer source, relative to LLMT_DATA
  const char* note;
};

// Real shapes (from the models' config.json), except phi3-mini-8l: Phi-3-mini's width, heads,
// FFN and vocabulary with 8 of its 32 layers (3.8B parameters take too long to bench here).
constexpr Preset kPresets[] = {
    {"qwen3-0.6b", "qwen3", 28, 1024, 16, 8, 128, 3072, 151936, 40960, true, 1e-6f, 1e6f, 0,
     "models/vocab/ggml-vocab-qwen2.gguf", "Qwen3-0.6B: q/k RMSNorm, head_dim 128 != 1024/16"},
    {"gemma3-1b", "gemma3", 26, 1152, 4, 1, 256, 6912, 262144, 32768, true, 1e-6f, 1e6f, 512,
     "models/arch/synth-gemma3-f16.gguf",
     "Gemma-3-1B: GELU GLU, pre/post norms, q/k norm, 5:1 sliding window 512, head_dim 256"},
    {"phi3-mini-8l", "phi3", 8, 3072, 32, 32, 96, 8192, 32064, 4096, false, 1e-5f, 1e4f, 0,
     "models/vocab/ggml-vocab-phi-3.gguf",
     "Phi-3-mini with 8 of 32 layers: fused QKV, fused gate|up, untied output"},
    {"gpt2-124m", "gpt2", 12, 768, 12, 12, 64, 3072, 50257, 1024, true, 1e-5f, 0.0f, 0,
     "models/vocab/ggml-vocab-gpt-2.gguf",
     "GPT-2 124M: LayerNorm + bias, learned positions, fused QKV + bias, GELU MLP + biases"},
};

const Preset* find_preset(std::string_view name) {
  for (const Preset& p : kPresets) {
    if (name == p.name) return &p;
  }
  return nullptr;
}

// ---- Deterministic normal numbers: splitmix64 seeded per tensor, Box-Muller.
class Normal {
 public:
  explicit Normal(uint64_t seed) : s_(seed) {}
  // Fills x[0..n) with N(0, sigma).
  void fill(float* x, int64_t n, float sigma) {
    int64_t i = 0;
    for (; i + 1 < n; i += 2) {
      const double u1 = (static_cast<double>(next() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
      const double u2 = static_cast<double>(next() >> 11) * 0x1.0p-53;
      const double r = std::sqrt(-2.0 * std::log(u1)) * sigma;
      const double t = 6.283185307179586 * u2;
      x[i] = static_cast<float>(r * std::cos(t));
      x[i + 1] = static_cast<float>(r * std::sin(t));
    }
    if (i < n) {
      float pair[2];
      fill(pair, 2, sigma);
      x[i] = pair[0];
    }
  }

 private:
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t s_;
};

uint64_t hash_name(std::string_view s, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;  // FNV-1a
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h;
}

// What a tensor holds.
enum class Fill { kNormal, kOnes, kZeros };

struct TensorSpec {
  std::string name;
  int64_t row_len;  // ne[0]
  int64_t n_rows;   // ne[1] (1 for vectors)
  bool vector;      // one dimension
  TensorType type;
  Fill fill;
  uint64_t offset = 0;  // in the data section
  uint64_t bytes = 0;
};

// ---- GGUF metadata serialization (little-endian hosts).
class Meta {
 public:
  std::string buf;
  uint64_t n_kv = 0;

  template <typename T>
  void raw(T v) {
    buf.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void str(std::string_view s) {
    raw<uint64_t>(s.size());
    buf.append(s);
  }
  void key(std::string_view k, GgufType t) {
    str(k);
    raw<uint32_t>(static_cast<uint32_t>(t));
    ++n_kv;
  }
  void kv_str(std::string_view k, std::string_view v) {
    key(k, GgufType::STRING);
    str(v);
  }
  void kv_u32(std::string_view k, uint32_t v) {
    key(k, GgufType::UINT32);
    raw<uint32_t>(v);
  }
  void kv_f32(std::string_view k, float v) {
    key(k, GgufType::FLOAT32);
    raw<float>(v);
  }
  // A value read from another file, re-encoded in its own type.
  void kv_copy(std::string_view k, const GgufValue& v) {
    key(k, v.type);
    value(v);
  }

 private:
  void scalar(GgufType t, const GgufValue& v) {
    switch (t) {
      case GgufType::UINT8:
        raw<uint8_t>(static_cast<uint8_t>(v.num.u));
        break;
      case GgufType::INT8:
        raw<int8_t>(static_cast<int8_t>(v.num.i));
        break;
      case GgufType::UINT16:
        raw<uint16_t>(static_cast<uint16_t>(v.num.u));
        break;
      case GgufType::INT16:
        raw<int16_t>(static_cast<int16_t>(v.num.i));
        break;
      case GgufType::UINT32:
        raw<uint32_t>(static_cast<uint32_t>(v.num.u));
        break;
      case GgufType::INT32:
        raw<int32_t>(static_cast<int32_t>(v.num.i));
        break;
      case GgufType::FLOAT32:
        raw<float>(static_cast<float>(v.num.f));
        break;
      case GgufType::BOOL:
        raw<uint8_t>(v.num.u ? 1 : 0);
        break;
      case GgufType::STRING:
        str(v.str);
        break;
      case GgufType::UINT64:
        raw<uint64_t>(v.num.u);
        break;
      case GgufType::INT64:
        raw<int64_t>(v.num.i);
        break;
      case GgufType::FLOAT64:
        raw<double>(v.num.f);
        break;
      case GgufType::ARRAY:
        value(v);
        break;
    }
  }
  void value(const GgufValue& v) {
    if (v.type != GgufType::ARRAY) {
      scalar(v.type, v);
      return;
    }
    raw<uint32_t>(static_cast<uint32_t>(v.elem_type));
    raw<uint64_t>(v.array.size());
    for (const GgufValue& e : v.array) {
      if (v.elem_type == GgufType::ARRAY) {
        value(e);
      } else {
        scalar(v.elem_type, e);
      }
    }
  }
};

// The tensors of `arch` in shape p, matrices in `wtype`. twin_ff: the llama twin's FFN width.
std::vector<TensorSpec> tensor_list(const Preset& p, std::string_view arch, int32_t n_ff,
                                    TensorType wtype) {
  std::vector<TensorSpec> t;
  auto mat = [&](std::string name, int64_t row_len, int64_t n_rows) {
    t.push_back({std::move(name), row_len, n_rows, false, wtype, Fill::kNormal});
  };
  auto vec = [&](std::string name, int64_t n, Fill f) {
    t.push_back({std::move(name), n, 1, true, TensorType::F32, f});
  };
  const int64_t e = p.n_embd;
  const int64_t q = int64_t{p.n_head} * p.head_dim;
  const int64_t kv = int64_t{p.n_head_kv} * p.head_dim;
  const bool gpt2 = arch == "gpt2";
  mat("token_embd.weight", e, p.n_vocab);
  if (gpt2) {
    t.push_back({"position_embd.weight", e, p.n_ctx, false, TensorType::F32, Fill::kNormal});
  }
  vec("output_norm.weight", e, Fill::kOnes);
  if (gpt2) vec("output_norm.bias", e, Fill::kZeros);
  if (!p.tied) mat("output.weight", e, p.n_vocab);
  for (int32_t il = 0; il < p.n_layer; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    vec(b + "attn_norm.weight", e, Fill::kOnes);
    if (gpt2) vec(b + "attn_norm.bias", e, Fill::kZeros);
    if (arch == "phi3" || gpt2) {
      mat(b + "attn_qkv.weight", e, q + 2 * kv);
      if (gpt2) vec(b + "attn_qkv.bias", q + 2 * kv, Fill::kZeros);
    } else {
      mat(b + "attn_q.weight", e, q);
      mat(b + "attn_k.weight", e, kv);
      mat(b + "attn_v.weight", e, kv);
    }
    if (arch == "qwen3" || arch == "gemma3") {
      vec(b + "attn_q_norm.weight", p.head_dim, Fill::kOnes);
      vec(b + "attn_k_norm.weight", p.head_dim, Fill::kOnes);
    }
    mat(b + "attn_output.weight", q, e);
    if (gpt2) vec(b + "attn_output.bias", e, Fill::kZeros);
    if (arch == "gemma3") vec(b + "post_attention_norm.weight", e, Fill::kOnes);
    vec(b + "ffn_norm.weight", e, Fill::kOnes);
    if (gpt2) vec(b + "ffn_norm.bias", e, Fill::kZeros);
    if (arch == "phi3") {
      mat(b + "ffn_up.weight", e, 2 * int64_t{n_ff});
    } else if (gpt2) {
      mat(b + "ffn_up.weight", e, n_ff);
      vec(b + "ffn_up.bias", n_ff, Fill::kZeros);
    } else {
      mat(b + "ffn_gate.weight", e, n_ff);
      mat(b + "ffn_up.weight", e, n_ff);
    }
    mat(b + "ffn_down.weight", n_ff, e);
    if (gpt2) vec(b + "ffn_down.bias", e, Fill::kZeros);
    if (arch == "gemma3") vec(b + "post_ffw_norm.weight", e, Fill::kOnes);
  }
  return t;
}

struct Options {
  const Preset* preset = nullptr;
  bool twin = false;
  TensorType type = TensorType::Q8_0;
  uint64_t seed = 1;
  std::string tokenizer;
  std::string out;
};

int usage(const char* msg) {
  if (msg) std::fprintf(stderr, "gen-shape-model: %s\n", msg);
  std::fprintf(stderr,
               "usage: gen-shape-model --preset NAME [--llama-twin] [--type q8_0|f16] [--seed N]\n"
               "                       [--tokenizer FILE.gguf] -o OUT.gguf\n"
               "       gen-shape-model --list\n");
  return 2;
}

int run(const Options& o) {
  const Preset& p = *o.preset;
  const std::string arch = o.twin ? "llama" : p.arch;
  // The twin has the same matrices but for gpt2, whose MLP has no gate: 2 matrices of n_ff
  // against llama's 3, so the twin's FFN is 2/3 as wide (same bytes; 3072 -> 2048).
  int32_t n_ff = p.n_ff;
  if (o.twin && std::string_view(p.arch) == "gpt2") n_ff = p.n_ff * 2 / 3;
  const std::string tok_path =
      o.tokenizer.empty() ? std::string(LLMT_DATA_DEFAULT) + "/" + p.tokenizer : o.tokenizer;
  auto tok = GgufFile::open(tok_path);
  if (!tok.is_ok()) {
    std::fprintf(stderr, "gen-shape-model: %s\n", tok.status().message().c_str());
    return 1;
  }
  const GgufFile& tg = **tok;

  Meta m;
  m.kv_str("general.architecture", arch);
  m.kv_str("general.name", std::string(p.name) + (o.twin ? "-llama-twin" : "") + "-random");
  const std::string a = arch + ".";
  m.kv_u32(a + "block_count", p.n_layer);
  m.kv_u32(a + "context_length", p.n_ctx);
  m.kv_u32(a + "embedding_length", p.n_embd);
  m.kv_u32(a + "feed_forward_length", n_ff);
  m.kv_u32(a + "attention.head_count", p.n_head);
  m.kv_u32(a + "attention.head_count_kv", p.n_head_kv);
  m.kv_u32(a + "attention.key_length", p.head_dim);
  m.kv_u32(a + "attention.value_length", p.head_dim);
  if (arch == "gpt2") {
    m.kv_f32(a + "attention.layer_norm_epsilon", p.rms_eps);
  } else {
    m.kv_f32(a + "attention.layer_norm_rms_epsilon", p.rms_eps);
    m.kv_u32(a + "rope.dimension_count", p.head_dim);
    if (p.rope_base > 0.0f) m.kv_f32(a + "rope.freq_base", p.rope_base);
  }
  if (p.n_swa > 0 && !o.twin) m.kv_u32(a + "attention.sliding_window", p.n_swa);
  if (arch == "phi3") m.kv_u32(a + "rope.scaling.original_context_length", p.n_ctx);
  int64_t n_tok = 0;
  for (const auto& kv : tg.kvs()) {
    if (kv.key.starts_with("tokenizer.")) m.kv_copy(kv.key, kv.value);
    if (kv.key == "tokenizer.ggml.tokens") n_tok = static_cast<int64_t>(kv.value.array.size());
  }
  if (n_tok < 1 || n_tok > p.n_vocab) {
    std::fprintf(stderr, "gen-shape-model: %s has %lld tokens; need 1..%d\n", tok_path.c_str(),
                 static_cast<long long>(n_tok), p.n_vocab);
    return 1;
  }

  std::vector<TensorSpec> ts = tensor_list(p, arch, n_ff, o.type);
  constexpr uint64_t kAlign = 32;
  uint64_t off = 0, matmul_bytes = 0;
  for (TensorSpec& t : ts) {
    const auto rb = llmt::tensor_row_bytes(t.type, t.row_len);
    if (!rb) {
      std::fprintf(stderr, "gen-shape-model: %s: rows of %lld do not fit %s\n", t.name.c_str(),
                   static_cast<long long>(t.row_len), llmt::tensor_type_name(t.type));
      return 1;
    }
    t.bytes = *rb * static_cast<uint64_t>(t.n_rows);
    t.offset = off;
    off = (off + t.bytes + kAlign - 1) / kAlign * kAlign;
    if (!t.vector && t.name != "position_embd.weight") matmul_bytes += t.bytes;
  }
  for (const TensorSpec& t : ts) {
    m.str(t.name);
    m.raw<uint32_t>(t.vector ? 1 : 2);
    m.raw<uint64_t>(static_cast<uint64_t>(t.row_len));
    if (!t.vector) m.raw<uint64_t>(static_cast<uint64_t>(t.n_rows));
    m.raw<uint32_t>(static_cast<uint32_t>(t.type));
    m.raw<uint64_t>(t.offset);
  }

  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(o.out.c_str(), "wb"), std::fclose);
  if (!f) {
    std::fprintf(stderr, "gen-shape-model: cannot write %s\n", o.out.c_str());
    return 1;
  }
  std::string head;
  auto put = [&head](auto v) { head.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(uint32_t{0x46554747});  // "GGUF"
  put(uint32_t{3});
  put(static_cast<uint64_t>(ts.size()));
  put(m.n_kv);
  head += m.buf;
  head.resize((head.size() + kAlign - 1) / kAlign * kAlign, '\0');
  bool ok = std::fwrite(head.data(), 1, head.size(), f.get()) == head.size();

  const auto* tk = llmt::kernels::type_kernels(o.type, llmt::kernels::Isa::kScalar);
  std::vector<float> row;
  std::vector<uint8_t> chunk;
  uint64_t pos = 0;
  for (const TensorSpec& t : ts) {
    const std::vector<uint8_t> zeros(t.offset - pos, 0);
    ok = ok && std::fwrite(zeros.data(), 1, zeros.size(), f.get()) == zeros.size();
    Normal rng(hash_name(t.name, o.seed));
    row.resize(static_cast<size_t>(t.row_len));
    const size_t row_bytes = t.bytes / static_cast<uint64_t>(t.n_rows);
    // Rows in chunks of about 4 MiB.
    const int64_t rows_per_chunk = std::max<int64_t>(1, (int64_t{4} << 20) / row_bytes);
    for (int64_t r0 = 0; r0 < t.n_rows && ok; r0 += rows_per_chunk) {
      const int64_t nr = std::min(rows_per_chunk, t.n_rows - r0);
      chunk.resize(static_cast<size_t>(nr) * row_bytes);
      for (int64_t r = 0; r < nr; ++r) {
        switch (t.fill) {
          case Fill::kNormal:
            rng.fill(row.data(), t.row_len, 0.02f);
            break;
          case Fill::kOnes:
            std::fill(row.begin(), row.end(), 1.0f);
            break;
          case Fill::kZeros:
            std::fill(row.begin(), row.end(), 0.0f);
            break;
        }
        uint8_t* dst = chunk.data() + r * row_bytes;
        if (t.type == TensorType::F32) {
          std::memcpy(dst, row.data(), row_bytes);
        } else if (t.type == TensorType::F16) {
          auto* h = reinterpret_cast<uint16_t*>(dst);
          for (int64_t j = 0; j < t.row_len; ++j) h[j] = llmt::kernels::fp32_to_fp16(row[j]);
        } else {
          tk->quantize_row_vec(row.data(), dst, t.row_len);
        }
      }
      ok = std::fwrite(chunk.data(), 1, chunk.size(), f.get()) == chunk.size();
    }
    pos = t.offset + t.bytes;
  }
  if (!ok) {
    std::fprintf(stderr, "gen-shape-model: write error on %s\n", o.out.c_str());
    return 1;
  }
  std::printf(
      "{\"file\": \"%s\", \"preset\": \"%s\", \"arch\": \"%s\", \"type\": \"%s\", "
      "\"n_layer\": %d, \"n_embd\": %d, \"n_head\": %d, \"n_head_kv\": %d, \"head_dim\": %d, "
      "\"n_ff\": %d, \"n_vocab\": %d, \"tokenizer_tokens\": %lld, \"tied\": %s, "
      "\"matmul_bytes\": %llu, \"file_bytes\": %llu}\n",
      o.out.c_str(), p.name, arch.c_str(), llmt::tensor_type_name(o.type), p.n_layer, p.n_embd,
      p.n_head, p.n_head_kv, p.head_dim, n_ff, p.n_vocab, static_cast<long long>(n_tok),
      p.tied ? "true" : "false", static_cast<unsigned long long>(matmul_bytes),
      static_cast<unsigned long long>(head.size() + pos));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (arg == "--list") {
      for (const Preset& p : kPresets) std::printf("%-14s %s\n", p.name, p.note);
      return 0;
    } else if (arg == "--preset") {
      const char* v = next();
      if (!v || !(o.preset = find_preset(v))) return usage("unknown --preset (see --list)");
    } else if (arg == "--llama-twin") {
      o.twin = true;
    } else if (arg == "--type") {
      const char* v = next();
      if (v && std::string_view(v) == "q8_0") {
        o.type = TensorType::Q8_0;
      } else if (v && std::string_view(v) == "f16") {
        o.type = TensorType::F16;
      } else {
        return usage("--type must be q8_0 or f16");
      }
    } else if (arg == "--seed") {
      const char* v = next();
      if (!v) return usage("--seed needs a value");
      o.seed = std::strtoull(v, nullptr, 10);
    } else if (arg == "--tokenizer") {
      const char* v = next();
      if (!v) return usage("--tokenizer needs a file");
      o.tokenizer = v;
    } else if (arg == "-o" || arg == "--output") {
      const char* v = next();
      if (!v) return usage("-o needs a file");
      o.out = v;
    } else {
      return usage(("unknown argument " + std::string(arg)).c_str());
    }
  }
  if (!o.preset || o.out.empty()) return usage("--preset and -o are required");
  return run(o);
}
