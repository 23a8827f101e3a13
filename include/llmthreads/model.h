// Transformer models loaded from GGUF (the llama family: llama, mistral, qwen2) and the
// per-sequence inference state that runs them.
//
// A Model is immutable after load(): it owns the GgufFile (the mmap), the Tokenizer, the
// hyperparameters and pointers to every weight tensor inside the mapping (quantized weights are
// never copied). One Model is shared, through std::shared_ptr<const Model>, by any number of
// Contexts. A Context holds what its sequences mutate: the KV cache of n_seq_max sequences,
// scratch buffers, the logits and a ThreadPool. One forward pass (decode()) may carry tokens of
// many sequences.
//
// Thread-safety:
//   - Model: every method is const and may be called from any number of threads concurrently.
//   - Context: one thread at a time per Context (eval()/decode() drive the Context's own worker
//     threads); const methods may run concurrently with each other, not with non-const ones.
//     Different Contexts over the same Model may run concurrently on different threads.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"
#include "llmthreads/tensor-type.h"

namespace llmt {

class GgufFile;
class Tokenizer;

// How rotary position embedding pairs dimensions of a head.
enum class RopeType {
  kNormal,  // llama: adjacent pairs (x[2i], x[2i+1])
  kNeox,    // qwen2 / NeoX: halves (x[i], x[i + n_rot/2])
};

struct ModelHparams {
  std::string arch;          // general.architecture ("llama", "mistral", "qwen2")
  int32_t n_vocab = 0;       // rows of token_embd
  int32_t n_ctx_train = 0;   // <arch>.context_length
  int32_t n_embd = 0;        // <arch>.embedding_length
  int32_t n_layer = 0;       // <arch>.block_count
  int32_t n_ff = 0;          // <arch>.feed_forward_length
  int32_t n_head = 0;        // <arch>.attention.head_count
  int32_t n_head_kv = 0;     // <arch>.attention.head_count_kv (default n_head)
  int32_t head_dim = 0;      // <arch>.attention.key_length (default n_embd / n_head)
  int32_t n_rot = 0;         // <arch>.rope.dimension_count (default head_dim); even, <= head_dim
  float rms_eps = 1e-5f;     // <arch>.attention.layer_norm_rms_epsilon
  float rope_freq_base = 10000.0f;  // <arch>.rope.freq_base
  float rope_freq_scale = 1.0f;     // 1 / <arch>.rope.scaling.factor for linear scaling
  RopeType rope_type = RopeType::kNormal;

  int32_t q_dim() const { return n_head * head_dim; }      // width of Q / attention output
  int32_t kv_dim() const { return n_head_kv * head_dim; }  // width of K and V
};

// A weight matrix W[n_rows, row_len] (GGUF shape {row_len, n_rows}) in the mapping.
struct WeightMatrix {
  std::string_view name;
  TensorType type = TensorType::F32;
  const void* data = nullptr;  // n_rows rows of tensor_row_bytes(type, row_len) bytes
  int64_t row_len = 0;         // K: input features (GGUF ne[0])
  int64_t n_rows = 0;          // N: output features (GGUF ne[1])
  size_t row_bytes = 0;
};

// Weights of one transformer block. Vectors are F32 [n] views into the mapping; biases are
// nullptr when the file has none.
struct LayerWeights {
  const float* attn_norm = nullptr;  // [n_embd]
  WeightMatrix wq;                   // [q_dim, n_embd]
  WeightMatrix wk;                   // [kv_dim, n_embd]
  WeightMatrix wv;                   // [kv_dim, n_embd]
  WeightMatrix wo;                   // [n_embd, q_dim]
  const float* bq = nullptr;         // [q_dim]  (qwen2)
  const float* bk = nullptr;         // [kv_dim] (qwen2)
  const float* bv = nullptr;         // [kv_dim] (qwen2)
  const float* ffn_norm = nullptr;   // [n_embd]
  WeightMatrix ffn_gate;             // [n_ff, n_embd]
  WeightMatrix ffn_up;               // [n_ff, n_embd]
  WeightMatrix ffn_down;             // [n_embd, n_ff]
};

struct ModelOptions {
  // Use the portable scalar kernels even where AVX2 is available (tests, debugging).
  // Default false: the best ISA of this CPU (see also the LLMT_ISA=scalar environment variable).
  bool force_scalar = false;
};

class Model {
 public:
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Opens and validates a GGUF model. Errors name the file and the problem: unsupported
  // architecture, missing or malformed hyperparameter key, missing tensor, tensor with a wrong
  // shape or an unsupported type, missing/invalid tokenizer metadata.
  static Result<std::shared_ptr<const Model>> load(const std::string& path,
                                                    const ModelOptions& options = {});

  const ModelHparams& hparams() const { return hparams_; }
  const GgufFile& gguf() const { return *gguf_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::string& path() const { return path_; }

  const WeightMatrix& token_embd() const { return token_embd_; }  // [n_vocab, n_embd]
  const float* output_norm() const { return output_norm_; }       // [n_embd]
  // [n_vocab, n_embd]; token_embd itself when the file ties the output to the embedding.
  const WeightMatrix& output() const { return output_; }
  bool tied_output() const { return tied_output_; }
  const LayerWeights& layer(int32_t il) const { return layers_[il]; }

  // Writes the embedding of token `id` (0 <= id < n_vocab, checked by the caller) to
  // dst[0..n_embd).
  void embed_token(int32_t id, float* dst) const;

  // Kernel ISA chosen at load (an int holding kernels::Isa, kept opaque here).
  int isa() const { return isa_; }
  // Bytes of weights referenced in the mapping (all bound tensors).
  uint64_t weight_bytes() const { return weight_bytes_; }
  // "tokenizer.chat_template" or "" when the file has none.
  std::string_view chat_template() const { return chat_template_; }

 private:
  Model() = default;
  Status bind(const ModelOptions& options);

  std::string path_;
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelHparams hparams_;
  WeightMatrix token_embd_;
  WeightMatrix output_;
  const float* output_norm_ = nullptr;
  bool tied_output_ = false;
  std::vector<LayerWeights> layers_;
  int isa_ = 0;
  uint64_t weight_bytes_ = 0;
  std::string_view chat_template_;
  void (*embed_dequant_)(const void* src, float* dst, int64_t n) = nullptr;
};

// Element type of the K/V cache.
enum class KvType {
  kF32,  // exact copies of the f32 K/V rows
  kF16,  // IEEE half: converted (round to nearest even) when stored; half the memory and bandwidth
};

struct ContextOptions {
  // KV cache cells per sequence (tokens one sequence can hold). 0 (default):
  //   n_seq_max == 1: min(model context_length, 4096);
  //   n_seq_max  > 1: min(model context_length, 4096, max(256, 16384 / n_seq_max)), i.e. a total
  //                   of about 16K cells (e.g. 64 sequences x 256, 16 x 1024, 4 x 4096).
  int32_t n_ctx = 0;
  // Sequences the context holds (ids 0..n_seq_max-1); each gets its own n_ctx cells, allocated
  // up front (n_seq_max * n_ctx cells per layer; the paged KV cache of a later layer replaces this
  // fixed split). Default 1. At most 4096.
  int32_t n_seq_max = 1;
  // Element type of the K/V cache. Default F32.
  KvType kv_type = KvType::kF32;
  // Compute threads. 0 (default): the number of physical cores.
  int32_t n_threads = 0;
  // Most tokens one forward pass processes at once; eval() and decode() split longer inputs into
  // chunks of this size (scratch buffers are sized for it). Default 512.
  int32_t n_batch = 512;
  // Keep the logits of every position of the last eval() (needed to score a prompt); default
  // false: only the last position's logits are computed. (decode() ignores it: each entry says.)
  bool all_logits = false;
};

// Batch invariance: the logits and KV entries of one token depend only on its sequence's tokens
// (and the model, the ISA and kv_type) — bitwise. Not on the other sequences of a batch, on the
// order of entries, on how a sequence's prompt is split into eval()/decode() calls or n_batch
// chunks, on n_threads, or on which tokens want logits. Every per-token step (RMSNorm, RoPE,
// SwiGLU, attention over the token's own cached positions in a fixed order) is computed
// independently per token, and the matmul kernels fix each (weight row, token) reduction order.
class Context {
 public:
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Allocates the KV cache (K and V, n_layer * n_seq_max * n_ctx * kv_dim elements each of
  // kv_type, stored [n_layer][n_seq_max][n_head_kv][n_ctx][head_dim]), scratch buffers for
  // n_batch tokens (shared, plus a private set per thread) and the thread pool. Nothing is
  // allocated per call except the logits buffer when a call wants more logit rows than any
  // before. Errors: bad options (negative sizes, n_threads > 1024, n_seq_max outside
  // [1, 4096]), allocation failure (kOutOfMemory).
  static Result<std::unique_ptr<Context>> create(std::shared_ptr<const Model> model,
                                                 const ContextOptions& options = {});

  // Sequence 0 API. Appends `tokens` to sequence 0 at positions n_past().. and computes logits
  // (of the last token, or of all of them with ContextOptions::all_logits). Equivalent to
  // decode() with entries {tokens[i], 0, n_past() + i, last or all_logits} (bitwise the same
  // logits). Errors leave the state unchanged: empty input, a token id outside [0, n_vocab), or
  // n_past() + tokens.size() > n_ctx() ("context full").
  Status eval(std::span<const int32_t> tokens);

  // Logits [n_vocab] of the i-th row kept by the last eval() or decode() (i = -1: the last one).
  // After eval(): row i is position n_past_before + i with all_logits, else the single last
  // position (n_logits() is 1 and i must be -1 or 0). After decode(): row j is batch_logits(j).
  // Out-of-range i, or nothing evaluated since reset()/truncate()/seq_clear(), give an empty span.
  // The span is valid until the next non-const call.
  std::span<const float> logits(int32_t i = -1) const;
  int32_t n_logits() const;  // rows available through logits(i) / batch_logits(j)

  // One batch entry: `token` appended to sequence `seq_id` at position `pos`.
  struct BatchEntry {
    int32_t token = 0;
    int32_t seq_id = 0;
    int32_t pos = 0;
    bool want_logits = false;
  };
  // Runs one forward pass over all entries (any mix of sequences, in any order). Each sequence's
  // entries must continue it: positions seq_len(seq), seq_len(seq) + 1, ... in the order they
  // appear. Each token attends causally to its own sequence's cache only. Errors leave the state
  // unchanged: empty batch, token id outside [0, n_vocab), seq_id outside [0, n_seq_max), wrong
  // pos, sequence full (pos >= n_ctx). Batches larger than n_batch are split into chunks (results
  // are the same). Afterwards seq_len(s) counts the new entries, and batch_logits(j) holds the
  // logits of the j-th entry with want_logits.
  Status decode(std::span<const BatchEntry> batch);
  // Logits [n_vocab] of the j-th entry (0-based, in batch order) that had want_logits in the last
  // decode(); an empty span when j is out of range. Valid until the next non-const call.
  std::span<const float> batch_logits(int32_t j) const;

  // Tokens cached for sequence seq_id (0 for an id outside [0, n_seq_max)).
  int32_t seq_len(int32_t seq_id) const;
  // Forgets every cached token of seq_id (no-op for an id out of range); logits are cleared.
  void seq_clear(int32_t seq_id);
  int32_t n_seq_max() const;
  KvType kv_type() const;

  int32_t n_past() const;  // seq_len(0)
  int32_t n_ctx() const;   // KV cells per sequence
  int32_t n_threads() const;
  const Model& model() const;

  // Forgets every cached token of every sequence.
  void reset();
  // Keeps the first n tokens of sequence 0 (0 <= n <= n_past()); logits are cleared.
  Status truncate(int32_t n);

 private:
  struct Impl;
  explicit Context(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmt
