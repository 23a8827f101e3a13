// qwen3: the llama layout without biases plus a per-head RMSNorm of Q and K (attn_q_norm,
// attn_k_norm [head_dim]) before RoPE (NeoX); head_dim (attention.key_length) need not be
// n_embd / n_head. Runs the llama family's forward pass.
#include "model/model-impl.h"

namespace llmt {

Status bind_qwen3(Binder& b, ModelHparams& hp, ModelWeights& w) {
  LLMT_RETURN_IF_ERROR(bind_llama(b, hp, w));
  for (int32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = w.layers[il];
    LLMT_ASSIGN_OR_RETURN(l.q_norm, b.vector(blk(il, "attn_q_norm.weight"), hp.head_dim));
    LLMT_ASSIGN_OR_RETURN(l.k_norm, b.vector(blk(il, "attn_k_norm.weight"), hp.head_dim));
  }
  return Status::ok();
}

}  // namespace llmt
