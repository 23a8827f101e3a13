// phi3 (Phi-3 / Phi-3.5 / Phi-4-mini): fused QKV (attn_qkv [q_dim + 2 kv_dim]), fused gate|up
// (ffn_up [2 n_ff], gate first) with SwiGLU, NeoX RoPE with the long-rope factors: the short ones
// (rope_factors_short) for contexts up to rope.scaling.original_context_length, the long ones
// beyond (chosen by the Context), cos/sin scaled by rope.scaling.attn_factor. Runs the generic
// decoder.
#include "model/model-impl.h"

namespace llmt {

Status bind_phi3(Binder& b, ModelHparams& hp, ModelWeights& w) {
  const GgufFile& g = b.gguf();
  const int64_t n_embd = hp.n_embd;
  LLMT_RETURN_IF_ERROR(bind_embd_output(b, hp, w, /*norm_bias=*/false));
  LLMT_ASSIGN_OR_RETURN(w.rope_factors, b.vector("rope_factors_short.weight", hp.n_rot / 2, true));
  LLMT_ASSIGN_OR_RETURN(w.rope_factors_long,
                        b.vector("rope_factors_long.weight", hp.n_rot / 2, true));
  LLMT_ASSIGN_OR_RETURN(int64_t n_orig,
                        optional_int(g, "phi3.rope.scaling.original_context_length", 0));
  w.n_ctx_orig = static_cast<int32_t>(n_orig);
  LLMT_ASSIGN_OR_RETURN(double attn_factor,
                        optional_float(g, "phi3.rope.scaling.attn_factor", 1.0));
  if (!(attn_factor > 0.0) || !(attn_factor < 100.0)) {
    return corrupt(g.path() + ": phi3.rope.scaling.attn_factor is out of range");
  }
  w.rope_attn_factor = static_cast<float>(attn_factor);
  w.layers.resize(hp.n_layer);
  const int64_t qkv = hp.q_dim() + 2 * static_cast<int64_t>(hp.kv_dim());
  for (int32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = w.layers[il];
    LLMT_ASSIGN_OR_RETURN(l.attn_norm, b.vector(blk(il, "attn_norm.weight"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.wqkv, b.matrix(blk(il, "attn_qkv.weight"), n_embd, qkv));
    LLMT_ASSIGN_OR_RETURN(l.wo, b.matrix(blk(il, "attn_output.weight"), hp.q_dim(), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_norm, b.vector(blk(il, "ffn_norm.weight"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_up,
                          b.matrix(blk(il, "ffn_up.weight"), n_embd, 2 * int64_t{hp.n_ff}));
    LLMT_ASSIGN_OR_RETURN(l.ffn_down, b.matrix(blk(il, "ffn_down.weight"), hp.n_ff, n_embd));
  }
  w.ffn = FfnKind::kSiluGlu;
  collect_matrices(w);
  return Status::ok();
}

}  // namespace llmt
