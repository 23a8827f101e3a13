// gemma3: gemma2's embedding scale, pre/post norms and GELU-tanh GLU, without soft-capping, plus
// per-head q/k RMSNorm; five sliding-window layers to one global one (layer il is global when
// (il + 1) % 6 == 0), the window layers with their own RoPE (base 10000, no scaling) and the
// global ones with rope.freq_base and rope.scaling. Runs the generic decoder.
#include "model/model-impl.h"

namespace llmt {

Status bind_gemma_layers(Binder& b, ModelHparams& hp, ModelWeights& w, bool qk_norm);
Status read_sliding_window(const GgufFile& g, ModelHparams& hp);

Status bind_gemma3(Binder& b, ModelHparams& hp, ModelWeights& w) {
  LLMT_RETURN_IF_ERROR(bind_gemma_layers(b, hp, w, /*qk_norm=*/true));
  LLMT_RETURN_IF_ERROR(read_sliding_window(b.gguf(), hp));
  constexpr int32_t kPattern = 6;
  for (int32_t il = 0; il < hp.n_layer; ++il) w.layers[il].swa = (il + 1) % kPattern != 0;
  w.rope_base_swa = 10000.0f;
  w.rope_scale_swa = 1.0f;
  return Status::ok();
}

}  // namespace llmt
