// Model loading: architecture and hyperparameters from GGUF metadata, then binding and validating
// every weight tensor of the llama family (llama, mistral, qwen2) in place in the mapping.
#include <cmath>
#include <cstdlib>
#include <string>

#include "kernels/kernels.h"
#include "llmthreads/gguf.h"
#include "llmthreads/model.h"
#include "llmthreads/tokenizer.h"

namespace llmt {

namespace {

struct ArchInfo {
  const char* name;
  RopeType rope_type;
};

// Architectures whose tensors follow the llama layout.
constexpr ArchInfo kArchs[] = {
    {"llama", RopeType::kNormal},
    {"mistral", RopeType::kNormal},
    {"qwen2", RopeType::kNeox},
};

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

class Binder {
 public:
  Binder(const GgufFile& gguf, kernels::Isa isa) : gguf_(gguf), isa_(isa) {}

  // A weight matrix with GGUF shape {row_len, n_rows} in a type the kernels support.
  Result<WeightMatrix> matrix(const std::string& name, int64_t row_len, int64_t n_rows) {
    const GgufTensor* t = gguf_.find_tensor(name);
    if (!t) return not_found(gguf_.path() + ": missing tensor '" + name + "'");
    LLMT_RETURN_IF_ERROR(check_shape(*t, {row_len, n_rows}));
    if (!kernels::type_kernels(t->type, isa_)) {
      return unsupported(gguf_.path() + ": tensor '" + name + "' has type " +
                         tensor_type_name(t->type) + ", which this engine cannot compute with");
    }
    auto rb = tensor_row_bytes(t->type, row_len);
    if (!rb) {
      return unsupported(gguf_.path() + ": tensor '" + name + "' rows of " +
                         std::to_string(row_len) + " elements do not fit type " +
                         tensor_type_name(t->type) + "'s block size");
    }
    // The activation format must also tile the row.
    const auto* tk = kernels::type_kernels(t->type, isa_);
    if (!tensor_row_bytes(tk->vec_dot_type, row_len)) {
      return unsupported(gguf_.path() + ": tensor '" + name + "' row length " +
                         std::to_string(row_len) + " does not fit the activation format " +
                         tensor_type_name(tk->vec_dot_type));
    }
    bytes_ += t->n_bytes;
    WeightMatrix w;
    w.name = t->name;
    w.type = t->type;
    w.data = t->data;
    w.row_len = row_len;
    w.n_rows = n_rows;
    w.row_bytes = *rb;
    return w;
  }

  // An F32 vector of n elements; nullptr (not an error) when optional and absent.
  Result<const float*> vector(const std::string& name, int64_t n, bool optional = false) {
    const GgufTensor* t = gguf_.find_tensor(name);
    if (!t) {
      if (optional) return static_cast<const float*>(nullptr);
      return not_found(gguf_.path() + ": missing tensor '" + name + "'");
    }
    LLMT_RETURN_IF_ERROR(check_shape(*t, {n}));
    if (t->type != TensorType::F32) {
      return unsupported(gguf_.path() + ": tensor '" + name + "' has type " +
                         tensor_type_name(t->type) + "; norms and biases must be f32");
    }
    if (reinterpret_cast<uintptr_t>(t->data) % alignof(float) != 0) {
      return corrupt(gguf_.path() + ": tensor '" + name + "' data is not 4-byte aligned");
    }
    bytes_ += t->n_bytes;
    return reinterpret_cast<const float*>(t->data);
  }

  uint64_t bytes() const { return bytes_; }

 private:
  Status check_shape(const GgufTensor& t, std::vector<int64_t> want) const {
    // Trailing dimensions of 1 are allowed.
    std::vector<int64_t> have = t.shape;
    while (have.size() > want.size() && have.back() == 1) have.pop_back();
    if (have != want) {
      return corrupt(gguf_.path() + ": tensor '" + std::string(t.name) + "' has shape " +
                     shape_str(t.shape) + ", expected " + shape_str(want));
    }
    return Status::ok();
  }

  const GgufFile& gguf_;
  kernels::Isa isa_;
  uint64_t bytes_ = 0;
};

Result<int64_t> required_int(const GgufFile& g, const std::string& key) {
  LLMT_ASSIGN_OR_RETURN(auto v, g.get_int(key));
  if (!v) return not_found(g.path() + ": missing hyperparameter key '" + key + "'");
  return *v;
}

Result<int64_t> optional_int(const GgufFile& g, const std::string& key, int64_t def) {
  LLMT_ASSIGN_OR_RETURN(auto v, g.get_int(key));
  return v ? *v : def;
}

Result<double> optional_float(const GgufFile& g, const std::string& key, double def) {
  LLMT_ASSIGN_OR_RETURN(auto v, g.get_float(key));
  return v ? *v : def;
}

Status check_range(const GgufFile& g, const std::string& key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return corrupt(g.path() + ": hyperparameter '" + key + "' = " + std::to_string(v) +
                   " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return Status::ok();
}

Result<ModelHparams> read_hparams(const GgufFile& g) {
  ModelHparams hp;
  LLMT_ASSIGN_OR_RETURN(auto arch, g.get_string("general.architecture"));
  if (!arch) return not_found(g.path() + ": missing key 'general.architecture'");
  hp.arch = std::string(*arch);
  const ArchInfo* info = nullptr;
  for (const auto& a : kArchs) {
    if (hp.arch == a.name) info = &a;
  }
  if (!info) {
    return unsupported(g.path() + ": unsupported model architecture '" + hp.arch +
                       "' (supported: llama, mistral, qwen2)");
  }
  hp.rope_type = info->rope_type;
  const std::string p = hp.arch + ".";
  constexpr int64_t kMaxDim = 1 << 20;

  LLMT_ASSIGN_OR_RETURN(int64_t n_layer, required_int(g, p + "block_count"));
  LLMT_RETURN_IF_ERROR(check_range(g, p + "block_count", n_layer, 1, 4096));
  LLMT_ASSIGN_OR_RETURN(int64_t n_embd, required_int(g, p + "embedding_length"));
  LLMT_RETURN_IF_ERROR(check_range(g, p + "embedding_length", n_embd, 1, kMaxDim));
  LLMT_ASSIGN_OR_RETURN(int64_t n_ff, required_int(g, p + "feed_forward_length"));
  LLMT_RETURN_IF_ERROR(check_range(g, p + "feed_forward_length", n_ff, 1, kMaxDim));
  LLMT_ASSIGN_OR_RETURN(int64_t n_head, required_int(g, p + "attention.head_count"));
  LLMT_RETURN_IF_ERROR(check_range(g, p + "attention.head_count", n_head, 1, 65536));
  LLMT_ASSIGN_OR_RETURN(int64_t n_head_kv, optional_int(g, p + "attention.head_count_kv", n_head));
  LLMT_RETURN_IF_ERROR(check_range(g, p + "attention.head_count_kv", n_head_kv, 1, n_head));
  if (n_head % n_head_kv != 0) {
    return corrupt(g.path() + ": attention.head_count " + std::to_string(n_head) +
                   " is not a multiple of attention.head_count_kv " + std::to_string(n_head_kv));
  }
  int64_t def_head_dim = n_embd / n_head;
  if (!g.find(p + "attention.key_length") && n_embd % n_head != 0) {
    return corrupt(g.path() + ": embedding_length " + std::to_string(n_embd) +
                   " is not a multiple of attention.head_count " + std::to_string(n_head));
  }
  LLMT_ASSIGN_OR_RETURN(int64_t head_dim, optional_int(g, p + "attention.key_length", def_head_dim));
  LLMT_RETURN_IF_ERROR(check_range(g, p + "attention.key_length", head_dim, 1, 65536));
  LLMT_ASSIGN_OR_RETURN(int64_t v_dim, optional_int(g, p + "attention.value_length", head_dim));
  if (v_dim != head_dim) {
    return unsupported(g.path() + ": attention.value_length " + std::to_string(v_dim) +
                       " differs from key_length " + std::to_string(head_dim));
  }
  LLMT_ASSIGN_OR_RETURN(int64_t n_rot, optional_int(g, p + "rope.dimension_count", head_dim));
  LLMT_RETURN_IF_ERROR(check_range(g, p + "rope.dimension_count", n_rot, 0, head_dim));
  if (n_rot % 2 != 0) {
    return corrupt(g.path() + ": rope.dimension_count " + std::to_string(n_rot) + " is odd");
  }
  LLMT_ASSIGN_OR_RETURN(int64_t n_ctx_train, optional_int(g, p + "context_length", 2048));
  LLMT_RETURN_IF_ERROR(check_range(g, p + "context_length", n_ctx_train, 1, 1ll << 24));
  LLMT_ASSIGN_OR_RETURN(double eps, optional_float(g, p + "attention.layer_norm_rms_epsilon", 1e-5));
  if (!(eps > 0.0 && eps < 1.0)) {
    return corrupt(g.path() + ": attention.layer_norm_rms_epsilon " + std::to_string(eps) +
                   " is out of range (0, 1)");
  }
  LLMT_ASSIGN_OR_RETURN(double base, optional_float(g, p + "rope.freq_base", 10000.0));
  if (!(base > 1.0) || !std::isfinite(base)) {
    return corrupt(g.path() + ": rope.freq_base " + std::to_string(base) + " must be > 1");
  }
  double scale = 1.0;
  LLMT_ASSIGN_OR_RETURN(auto scaling_type, g.get_string(p + "rope.scaling.type"));
  LLMT_ASSIGN_OR_RETURN(double factor, optional_float(g, p + "rope.scaling.factor", 0.0));
  if (scaling_type && *scaling_type != "none" && *scaling_type != "linear") {
    return unsupported(g.path() + ": rope.scaling.type '" + std::string(*scaling_type) +
                       "' is not supported (only linear)");
  }
  const bool scaled = scaling_type ? *scaling_type == "linear" : factor != 0.0;
  if (scaled && factor != 0.0 && factor != 1.0) {
    if (!(factor > 0.0) || !std::isfinite(factor)) {
      return corrupt(g.path() + ": rope.scaling.factor " + std::to_string(factor) + " is invalid");
    }
    scale = 1.0 / factor;
  }
  // Legacy key used by some converters.
  LLMT_ASSIGN_OR_RETURN(double legacy, optional_float(g, p + "rope.scale_linear", 0.0));
  if (legacy > 0.0 && legacy != 1.0 && scale == 1.0) scale = 1.0 / legacy;

  hp.n_layer = static_cast<int32_t>(n_layer);
  hp.n_embd = static_cast<int32_t>(n_embd);
  hp.n_ff = static_cast<int32_t>(n_ff);
  hp.n_head = static_cast<int32_t>(n_head);
  hp.n_head_kv = static_cast<int32_t>(n_head_kv);
  hp.head_dim = static_cast<int32_t>(head_dim);
  hp.n_rot = static_cast<int32_t>(n_rot);
  hp.n_ctx_train = static_cast<int32_t>(n_ctx_train);
  hp.rms_eps = static_cast<float>(eps);
  hp.rope_freq_base = static_cast<float>(base);
  hp.rope_freq_scale = static_cast<float>(scale);
  return hp;
}

}  // namespace

Model::~Model() = default;

Result<std::shared_ptr<const Model>> Model::load(const std::string& path,
                                                  const ModelOptions& options) {
  LLMT_ASSIGN_OR_RETURN(auto gguf, GgufFile::open(path));
  std::shared_ptr<Model> m(new Model());
  m->path_ = path;
  m->gguf_ = std::move(gguf);
  LLMT_RETURN_IF_ERROR(m->bind(options));
  return std::shared_ptr<const Model>(std::move(m));
}

Status Model::bind(const ModelOptions& options) {
  const GgufFile& g = *gguf_;
  kernels::Isa isa = kernels::Isa::kScalar;
  if (!options.force_scalar) {
    LLMT_ASSIGN_OR_RETURN(isa, kernels::select_isa());  // the LLMT_ISA cap; a bad value is an error
  }
  isa_ = static_cast<int>(isa);
  LLMT_ASSIGN_OR_RETURN(hparams_, read_hparams(g));
  ModelHparams& hp = hparams_;

  // The vocabulary size comes from the embedding matrix.
  const GgufTensor* te = g.find_tensor("token_embd.weight");
  if (!te) return not_found(g.path() + ": missing tensor 'token_embd.weight'");
  if (te->shape.size() < 2 || te->shape[1] < 1 || te->shape[1] > (1ll << 31) - 1) {
    return corrupt(g.path() + ": tensor 'token_embd.weight' has shape " + shape_str(te->shape) +
                   ", expected [" + std::to_string(hp.n_embd) + ", n_vocab]");
  }
  hp.n_vocab = static_cast<int32_t>(te->shape[1]);
  LLMT_ASSIGN_OR_RETURN(auto n_vocab_key, g.get_int(hp.arch + ".vocab_size"));
  if (n_vocab_key && *n_vocab_key != hp.n_vocab) {
    return corrupt(g.path() + ": " + hp.arch + ".vocab_size " + std::to_string(*n_vocab_key) +
                   " differs from token_embd rows " + std::to_string(hp.n_vocab));
  }

  Binder b(g, isa);
  const int64_t n_embd = hp.n_embd;
  LLMT_ASSIGN_OR_RETURN(token_embd_, b.matrix("token_embd.weight", n_embd, hp.n_vocab));
  embed_dequant_ = kernels::type_kernels(token_embd_.type, isa)->dequantize_row;
  LLMT_ASSIGN_OR_RETURN(output_norm_, b.vector("output_norm.weight", n_embd));
  if (g.find_tensor("output.weight")) {
    LLMT_ASSIGN_OR_RETURN(output_, b.matrix("output.weight", n_embd, hp.n_vocab));
    tied_output_ = false;
  } else {
    output_ = token_embd_;
    tied_output_ = true;
  }

  layers_.resize(hp.n_layer);
  for (int32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = layers_[il];
    const std::string p = "blk." + std::to_string(il) + ".";
    LLMT_ASSIGN_OR_RETURN(l.attn_norm, b.vector(p + "attn_norm.weight", n_embd));
    LLMT_ASSIGN_OR_RETURN(l.wq, b.matrix(p + "attn_q.weight", n_embd, hp.q_dim()));
    LLMT_ASSIGN_OR_RETURN(l.wk, b.matrix(p + "attn_k.weight", n_embd, hp.kv_dim()));
    LLMT_ASSIGN_OR_RETURN(l.wv, b.matrix(p + "attn_v.weight", n_embd, hp.kv_dim()));
    LLMT_ASSIGN_OR_RETURN(l.wo, b.matrix(p + "attn_output.weight", hp.q_dim(), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.bq, b.vector(p + "attn_q.bias", hp.q_dim(), true));
    LLMT_ASSIGN_OR_RETURN(l.bk, b.vector(p + "attn_k.bias", hp.kv_dim(), true));
    LLMT_ASSIGN_OR_RETURN(l.bv, b.vector(p + "attn_v.bias", hp.kv_dim(), true));
    LLMT_ASSIGN_OR_RETURN(l.ffn_norm, b.vector(p + "ffn_norm.weight", n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_gate, b.matrix(p + "ffn_gate.weight", n_embd, hp.n_ff));
    LLMT_ASSIGN_OR_RETURN(l.ffn_up, b.matrix(p + "ffn_up.weight", n_embd, hp.n_ff));
    LLMT_ASSIGN_OR_RETURN(l.ffn_down, b.matrix(p + "ffn_down.weight", hp.n_ff, n_embd));
  }
  // Mixture-of-experts files carry expert tensors instead of ffn_gate etc.; those fail above.
  weight_bytes_ = b.bytes();

  LLMT_ASSIGN_OR_RETURN(tokenizer_, Tokenizer::from_gguf(g));
  if (tokenizer_->n_vocab() > hp.n_vocab) {
    return corrupt(g.path() + ": tokenizer has " + std::to_string(tokenizer_->n_vocab()) +
                   " tokens but token_embd only " + std::to_string(hp.n_vocab) + " rows");
  }
  LLMT_ASSIGN_OR_RETURN(auto tmpl, g.get_string("tokenizer.chat_template"));
  chat_template_ = tmpl ? *tmpl : std::string_view();
  return Status::ok();
}

void Model::embed_token(int32_t id, float* dst) const {
  const auto* row = static_cast<const uint8_t*>(token_embd_.data) +
                    static_cast<size_t>(id) * token_embd_.row_bytes;
  embed_dequant_(row, dst, token_embd_.row_len);
}

}  // namespace llmt
