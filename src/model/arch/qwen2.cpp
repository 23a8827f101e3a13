// qwen2 (Qwen2 / Qwen2.5, DeepSeek-R1 distills): the llama layout with q/k/v biases and NeoX
// RoPE (the rope type is the registry's). Runs the llama family's forward pass.
#include "model/model-impl.h"

namespace llmt {

Status bind_qwen2(Binder& b, ModelHparams& hp, ModelWeights& w) {
  // The biases are bound (when present) by the llama binder; qwen2 files always carry them.
  return bind_llama(b, hp, w);
}

}  // namespace llmt
