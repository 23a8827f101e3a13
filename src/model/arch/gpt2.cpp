// gpt2: learned position embeddings (position_embd) added to the token embeddings, LayerNorm
// with bias before attention / MLP / output, fused QKV with bias, attention output bias, a GELU
// MLP with biases, output tied to the embedding unless output.weight is present, no RoPE. Runs
// the generic decoder.
#include "model/model-impl.h"

namespace llmt {

Status bind_gpt2(Binder& b, ModelHparams& hp, ModelWeights& w) {
  const GgufFile& g = b.gguf();
  const int64_t n_embd = hp.n_embd;
  LLMT_ASSIGN_OR_RETURN(double eps, optional_float(g, "gpt2.attention.layer_norm_epsilon", 1e-5));
  if (!(eps > 0.0 && eps < 1.0)) return corrupt(g.path() + ": layer_norm_epsilon out of range");
  w.norm = NormKind::kLayer;
  w.norm_eps = static_cast<float>(eps);
  LLMT_RETURN_IF_ERROR(bind_embd_output(b, hp, w, /*norm_bias=*/true));
  LLMT_ASSIGN_OR_RETURN(w.pos_embd, b.matrix("position_embd.weight", n_embd, hp.n_ctx_train));
  w.layers.resize(hp.n_layer);
  const int64_t qkv = hp.q_dim() + 2 * static_cast<int64_t>(hp.kv_dim());
  for (int32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = w.layers[il];
    LLMT_ASSIGN_OR_RETURN(l.attn_norm, b.vector(blk(il, "attn_norm.weight"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.attn_norm_b, b.vector(blk(il, "attn_norm.bias"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.wqkv, b.matrix(blk(il, "attn_qkv.weight"), n_embd, qkv));
    LLMT_ASSIGN_OR_RETURN(l.bqkv, b.vector(blk(il, "attn_qkv.bias"), qkv));
    LLMT_ASSIGN_OR_RETURN(l.wo, b.matrix(blk(il, "attn_output.weight"), hp.q_dim(), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.bo, b.vector(blk(il, "attn_output.bias"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_norm, b.vector(blk(il, "ffn_norm.weight"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_norm_b, b.vector(blk(il, "ffn_norm.bias"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_up, b.matrix(blk(il, "ffn_up.weight"), n_embd, hp.n_ff));
    LLMT_ASSIGN_OR_RETURN(l.ffn_up_b, b.vector(blk(il, "ffn_up.bias"), hp.n_ff));
    LLMT_ASSIGN_OR_RETURN(l.ffn_down, b.matrix(blk(il, "ffn_down.weight"), hp.n_ff, n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_down_b, b.vector(blk(il, "ffn_down.bias"), n_embd));
  }
  w.ffn = FfnKind::kGelu;
  collect_matrices(w);
  return Status::ok();
}

}  // namespace llmt
