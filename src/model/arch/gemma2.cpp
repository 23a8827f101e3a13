// gemma2: embeddings x sqrt(n_embd); RMSNorm before and after attention and the FFN
// (post_attention_norm, post_ffw_norm); GELU-tanh GLU; Q scaled by 1 / sqrt(head_dim);
// attention scores and final logits soft-capped (attn_logit_softcapping,
// final_logit_softcapping); even layers attend within attention.sliding_window positions, odd
// ones globally; NeoX RoPE; output tied to the embedding. Runs the generic decoder.
#include <cmath>

#include "model/model-impl.h"

namespace llmt {

// The gemma layout shared by gemma2 and gemma3 (gemma3 adds q/k norms).
Status bind_gemma_layers(Binder& b, ModelHparams& hp, ModelWeights& w, bool qk_norm) {
  const int64_t n_embd = hp.n_embd;
  LLMT_RETURN_IF_ERROR(bind_embd_output(b, hp, w, /*norm_bias=*/false));
  w.layers.resize(hp.n_layer);
  for (int32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = w.layers[il];
    LLMT_ASSIGN_OR_RETURN(l.attn_norm, b.vector(blk(il, "attn_norm.weight"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.wq, b.matrix(blk(il, "attn_q.weight"), n_embd, hp.q_dim()));
    LLMT_ASSIGN_OR_RETURN(l.wk, b.matrix(blk(il, "attn_k.weight"), n_embd, hp.kv_dim()));
    LLMT_ASSIGN_OR_RETURN(l.wv, b.matrix(blk(il, "attn_v.weight"), n_embd, hp.kv_dim()));
    if (qk_norm) {
      LLMT_ASSIGN_OR_RETURN(l.q_norm, b.vector(blk(il, "attn_q_norm.weight"), hp.head_dim));
      LLMT_ASSIGN_OR_RETURN(l.k_norm, b.vector(blk(il, "attn_k_norm.weight"), hp.head_dim));
    }
    LLMT_ASSIGN_OR_RETURN(l.wo, b.matrix(blk(il, "attn_output.weight"), hp.q_dim(), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.post_attn_norm,
                          b.vector(blk(il, "post_attention_norm.weight"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_norm, b.vector(blk(il, "ffn_norm.weight"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_gate, b.matrix(blk(il, "ffn_gate.weight"), n_embd, hp.n_ff));
    LLMT_ASSIGN_OR_RETURN(l.ffn_up, b.matrix(blk(il, "ffn_up.weight"), n_embd, hp.n_ff));
    LLMT_ASSIGN_OR_RETURN(l.ffn_down, b.matrix(blk(il, "ffn_down.weight"), hp.n_ff, n_embd));
    LLMT_ASSIGN_OR_RETURN(l.post_ffn_norm, b.vector(blk(il, "post_ffw_norm.weight"), n_embd));
  }
  w.ffn = FfnKind::kGeluGlu;
  w.embd_scale = std::sqrt(static_cast<float>(hp.n_embd));
  w.q_scale = 1.0f / std::sqrt(static_cast<float>(hp.head_dim));
  collect_matrices(w);
  return Status::ok();
}

// attention.sliding_window (required when `required`), checked to be >= 1.
Status read_sliding_window(const GgufFile& g, ModelHparams& hp) {
  const std::string key = hp.arch + ".attention.sliding_window";
  LLMT_ASSIGN_OR_RETURN(int64_t n_swa, optional_int(g, key, 0));
  if (n_swa < 1 || n_swa > (1ll << 30)) {
    return corrupt(g.path() + ": " + key + " " + std::to_string(n_swa) + " is missing or invalid");
  }
  hp.n_swa = static_cast<int32_t>(n_swa);
  return Status::ok();
}

Status bind_gemma2(Binder& b, ModelHparams& hp, ModelWeights& w) {
  const GgufFile& g = b.gguf();
  LLMT_RETURN_IF_ERROR(bind_gemma_layers(b, hp, w, /*qk_norm=*/false));
  LLMT_RETURN_IF_ERROR(read_sliding_window(g, hp));
  for (int32_t il = 0; il < hp.n_layer; ++il) w.layers[il].swa = il % 2 == 0;
  LLMT_ASSIGN_OR_RETURN(double attn_cap, optional_float(g, "gemma2.attn_logit_softcapping", 0.0));
  LLMT_ASSIGN_OR_RETURN(double final_cap, optional_float(g, "gemma2.final_logit_softcapping", 0.0));
  if (!(attn_cap >= 0.0) || !(final_cap >= 0.0)) {
    return corrupt(g.path() + ": gemma2 soft-capping values must be >= 0");
  }
  w.attn_softcap = static_cast<float>(attn_cap);
  w.final_softcap = static_cast<float>(final_cap);
  return Status::ok();
}

}  // namespace llmt
