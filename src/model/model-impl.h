// Internal to src/model: the weights of a loaded model, the tensor binder, and the
// per-architecture hooks (src/model/arch/<name>.cpp) that bind a GGUF's tensors and run its
// forward pass. Not part of the public API.
//
// Thread-safety: everything here is immutable after Model::load() except Binder (one loader).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "llmthreads/gguf.h"
#include "llmthreads/model.h"

namespace llmt {

struct ContextState;

// Weights of one transformer block. Vectors are F32 [n] views into the mapping; every pointer
// is nullptr and every matrix has data == nullptr when the architecture or file has none.
struct LayerWeights {
  const float* attn_norm = nullptr;    // [n_embd] pre-attention norm (bert: post, attn_output_norm)
  const float* attn_norm_b = nullptr;  // [n_embd] LayerNorm bias
  WeightMatrix wq;                     // [q_dim, n_embd]
  WeightMatrix wk;                     // [kv_dim, n_embd]
  WeightMatrix wv;                     // [kv_dim, n_embd]
  WeightMatrix wqkv;                   // [q_dim + 2 kv_dim, n_embd] fused (phi3, gpt2)
  const float* bq = nullptr;           // [q_dim]
  const float* bk = nullptr;           // [kv_dim]
  const float* bv = nullptr;           // [kv_dim]
  const float* bqkv = nullptr;         // [q_dim + 2 kv_dim]
  const float* q_norm = nullptr;       // [head_dim] per-head RMSNorm of Q (qwen3, gemma3)
  const float* k_norm = nullptr;       // [head_dim] per-head RMSNorm of K
  WeightMatrix wo;                     // [n_embd, q_dim]
  const float* bo = nullptr;           // [n_embd]
  const float* post_attn_norm = nullptr;  // [n_embd] norm of the attention output (gemma)
  const float* ffn_norm = nullptr;        // [n_embd] pre-FFN norm (bert: post, layer_output_norm)
  const float* ffn_norm_b = nullptr;      // [n_embd]
  WeightMatrix ffn_gate;                  // [n_ff, n_embd]
  WeightMatrix ffn_up;                   // [n_ff, n_embd], or [2 n_ff, n_embd] gate|up fused (phi3)
  const float* ffn_up_b = nullptr;       // [n_ff]
  WeightMatrix ffn_down;                 // [n_embd, n_ff]
  const float* ffn_down_b = nullptr;     // [n_embd]
  const float* post_ffn_norm = nullptr;  // [n_embd] norm of the FFN output (gemma)
  bool swa = false;                      // sliding-window attention layer
};

enum class NormKind { kRms, kLayer };
enum class FfnKind {
  kSiluGlu,  // down(silu(gate x) * up x)
  kGeluGlu,  // down(gelu(gate x) * up x)
  kGelu,     // down(gelu(up x + b) ) + b
};

// Everything a forward pass needs beyond ModelHparams.
struct ModelWeights {
  WeightMatrix token_embd;  // [n_vocab, n_embd]
  WeightMatrix output;      // [n_vocab, n_embd] (token_embd when tied; none for bert)
  bool tied_output = false;
  const float* output_norm = nullptr;    // [n_embd]
  const float* output_norm_b = nullptr;  // [n_embd]
  WeightMatrix pos_embd;                 // [n_ctx_train, n_embd] learned positions (gpt2, bert)
  WeightMatrix token_types;              // [n_types, n_embd] (bert)
  const float* embd_norm = nullptr;      // [n_embd] LayerNorm of the embeddings (bert)
  const float* embd_norm_b = nullptr;
  // Classification head (bert, pooling kRank): scores = cls_out · tanh(cls · h + cls_b) + cls_out_b
  // with h the first token's state; without cls (data == nullptr) scores = cls_out · h + cls_out_b.
  WeightMatrix cls;                          // [n_embd, n_embd] or absent
  const float* cls_b = nullptr;              // [n_embd] or nullptr
  WeightMatrix cls_out;                      // [n_cls_out, n_embd] or absent
  const float* cls_out_b = nullptr;          // [n_cls_out] or nullptr
  const float* rope_factors = nullptr;       // [n_rot/2] divisors of the RoPE frequencies
  const float* rope_factors_long = nullptr;  // phi3: used instead when n_ctx > n_ctx_orig
  int32_t n_ctx_orig = 0;                    // phi3: rope.scaling.original_context_length
  std::vector<LayerWeights> layers;
  // Every matrix multiplied per token (the output included), in layer order.
  std::vector<const WeightMatrix*> matrices;

  NormKind norm = NormKind::kRms;
  float norm_eps = 1e-5f;
  FfnKind ffn = FfnKind::kSiluGlu;
  float embd_scale = 0.0f;        // x = embedding * embd_scale when > 0 (gemma: sqrt(n_embd))
  float q_scale = 0.0f;           // attention scale (default 1 / sqrt(head_dim))
  float attn_softcap = 0.0f;      // gemma2
  float final_softcap = 0.0f;     // gemma2
  float rope_attn_factor = 1.0f;  // cos/sin multiplier (phi3 long-rope attention factor)
  float rope_base_swa = 0.0f;     // RoPE base / scale of sliding-window layers (0: the global)
  float rope_scale_swa = 1.0f;

  void (*embed_dequant)(const void* src, float* dst, int64_t n) = nullptr;
};

// Binds tensors of the mapping after validating their shapes and types.
class Binder {
 public:
  Binder(const GgufFile& gguf, kernels::Isa isa) : gguf_(gguf), isa_(isa) {}
  // A weight matrix with GGUF shape {row_len, n_rows} in a type the kernels support; with
  // optional, an absent tensor gives a matrix with data == nullptr.
  Result<WeightMatrix> matrix(const std::string& name, int64_t row_len, int64_t n_rows,
                              bool optional = false);
  // An F32 vector of n elements; nullptr (not an error) when optional and absent.
  Result<const float*> vector(const std::string& name, int64_t n, bool optional = false);
  uint64_t bytes() const { return bytes_; }
  const GgufFile& gguf() const { return gguf_; }

 private:
  Status check_shape(const GgufTensor& t, std::vector<int64_t> want) const;
  const GgufFile& gguf_;
  kernels::Isa isa_;
  uint64_t bytes_ = 0;
};

// One architecture: how to bind its tensors and run its forward pass.
struct ArchSpec {
  const char* name;
  RopeType rope_type;
  // Reads the architecture's own hyperparameters (the common ones are in hp already) and binds
  // every tensor into w (layers, matrices list included).
  Status (*bind)(Binder& b, ModelHparams& hp, ModelWeights& w);
  // One forward pass over n validated entries (see ContextState); nullptr for encoder-only
  // architectures, whose pass is `encode`.
  void (*forward)(ContextState& c, const Context::BatchEntry* e, int32_t n,
                  const std::span<const int32_t>* tables, float* logits_out);
  // Encoder (bert): hidden states [n, n_embd] into c.x of n_seqs sequences back to back in
  // tokens (sequence s has seq_lens[s] tokens, n their sum <= n_batch; each attends only to
  // itself, positions from 0).
  void (*encode)(ContextState& c, const int32_t* tokens, const int32_t* seq_lens, int32_t n_seqs);
};

// The architecture named `name`, or nullptr.
const ArchSpec* find_arch(std::string_view name);
// "llama, mistral, ..." for error messages.
std::string supported_archs();

// Shared binding helpers used by the arch files.
std::string blk(int32_t il, const char* name);  // "blk.<il>.<name>"
// token_embd, output_norm and output (tied when absent).
Status bind_embd_output(Binder& b, const ModelHparams& hp, ModelWeights& w, bool norm_bias);
// Collects every bound matrix into w.matrices.
void collect_matrices(ModelWeights& w);
Result<double> optional_float(const GgufFile& g, const std::string& key, double def);
Result<int64_t> optional_int(const GgufFile& g, const std::string& key, int64_t def);

// Architecture bind / forward entry points (src/model/arch/*.cpp, src/model/decoder.cpp).
Status bind_llama(Binder& b, ModelHparams& hp, ModelWeights& w);
Status bind_qwen2(Binder& b, ModelHparams& hp, ModelWeights& w);
Status bind_qwen3(Binder& b, ModelHparams& hp, ModelWeights& w);
Status bind_phi3(Binder& b, ModelHparams& hp, ModelWeights& w);
Status bind_gemma2(Binder& b, ModelHparams& hp, ModelWeights& w);
Status bind_gemma3(Binder& b, ModelHparams& hp, ModelWeights& w);
Status bind_gpt2(Binder& b, ModelHparams& hp, ModelWeights& w);
Status bind_bert(Binder& b, ModelHparams& hp, ModelWeights& w);
// The optional classification head of an encoder (cls.weight, cls.bias, cls.output.weight,
// cls.output.bias; <arch>.classifier.output_labels): sets hp.n_cls_out / cls_labels. An error
// for a partial head, a label count that differs from the outputs, or rank pooling without one.
Status bind_cls_head(Binder& b, ModelHparams& hp, ModelWeights& w);
// One token's rows after the Q/K/V projections, in place: adds the biases the layer has (bq, bk,
// bv) and applies its per-head q/k RMSNorms (Qwen3, Gemma 3). q [n_head, head_dim], k and v
// [n_head_kv, head_dim]. Shared by forward_llama and forward_decoder (decoder.cpp).
void qkv_bias_and_norm(const LayerWeights& L, const ModelHparams& h, float* q, float* k, float* v);
// The llama family's fused forward pass (llama, mistral, qwen2, qwen3).
void forward_llama(ContextState& c, const Context::BatchEntry* e, int32_t n,
                   const std::span<const int32_t>* tables, float* logits_out);
// The generic pre-norm decoder (phi3, gemma2, gemma3, gpt2): one step per op.
void forward_decoder(ContextState& c, const Context::BatchEntry* e, int32_t n,
                     const std::span<const int32_t>* tables, float* logits_out);
void encode_bert(ContextState& c, const int32_t* tokens, const int32_t* seq_lens, int32_t n_seqs);

}  // namespace llmt
