// Model loading: architecture and common hyperparameters from GGUF metadata, then the
// architecture's own binder (src/model/arch/<name>.cpp) validates and binds every weight tensor in
// place in the mapping. Also the architecture registry and the shared binding helpers.
#include <cmath>
#include <cstdlib>
#include <string>

#include "kernels/kernels.h"
#include "llmthreads/gguf.h"
#include "llmthreads/model.h"
#include "llmthreads/tokenizer.h"
#include "model/model-impl.h"

namespace llmt {

namespace {

// The architectures this engine runs. To add one: a bind (and, unless it fits an existing
// forward pass, a forward) in src/model/arch/<name>.cpp, declared in model-impl.h, and a row here.
constexpr ArchSpec kArchs[] = {
    {"llama", RopeType::kNormal, bind_llama, forward_llama, nullptr},
    {"mistral", RopeType::kNormal, bind_llama, forward_llama, nullptr},
    {"qwen2", RopeType::kNeox, bind_qwen2, forward_llama, nullptr},
    {"qwen3", RopeType::kNeox, bind_qwen3, forward_llama, nullptr},
    {"phi3", RopeType::kNeox, bind_phi3, forward_decoder, nullptr},
    {"gemma2", RopeType::kNeox, bind_gemma2, forward_decoder, nullptr},
    {"gemma3", RopeType::kNeox, bind_gemma3, forward_decoder, nullptr},
    {"gpt2", RopeType::kNone, bind_gpt2, forward_decoder, nullptr},
    {"bert", RopeType::kNone, bind_bert, nullptr, encode_bert},
};

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

Result<int64_t> required_int(const GgufFile& g, const std::string& key) {
  LLMT_ASSIGN_OR_RETURN(auto v, g.get_int(key));
  if (!v) return not_found(g.path() + ": missing hyperparameter key '" + key + "'");
  return *v;
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
  const ArchSpec* info = find_arch(hp.arch);
  if (!info) {
    return unsupported(g.path() + ": unsupported model architecture '" + hp.arch +
                       "' (supported: " + supported_archs() + ")");
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
  LLMT_ASSIGN_OR_RETURN(int64_t head_dim,
                        optional_int(g, p + "attention.key_length", def_head_dim));
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
  LLMT_ASSIGN_OR_RETURN(double eps,
                        optional_float(g, p + "attention.layer_norm_rms_epsilon", 1e-5));
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
  // llama3: the scaling is the rope_freqs.weight tensor (required by the llama binder then).
  if (scaling_type && *scaling_type != "none" && *scaling_type != "linear" &&
      *scaling_type != "llama3") {
    return unsupported(g.path() + ": rope.scaling.type '" + std::string(*scaling_type) +
                       "' is not supported (none, linear, llama3)");
  }
  const bool scaled = scaling_type ? *scaling_type == "linear" : factor != 0.0;
  if (scaling_type && *scaling_type == "llama3" && !g.find_tensor("rope_freqs.weight")) {
    return corrupt(g.path() + ": rope.scaling.type llama3 without the rope_freqs.weight tensor");
  }
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
  hp.n_rot = hp.rope_type == RopeType::kNone ? 0 : static_cast<int32_t>(n_rot);
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
  arch_ = find_arch(hp.arch);

  // The vocabulary size comes from the embedding matrix.
  const GgufTensor* te = g.find_tensor("token_embd.weight");
  if (!te) {
    return not_found(g.path() + ": missing tensor 'token_embd.weight' (architecture " + hp.arch +
                     "; a vocabulary-only file?)");
  }
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

  weights_ = std::make_unique<ModelWeights>();
  Binder b(g, isa);
  LLMT_RETURN_IF_ERROR(arch_->bind(b, hp, *weights_));
  if (hp.causal) {
    // Decoder embedding models declare how their states are pooled (llama.cpp's pooling_type;
    // embedding threads honour it). Encoders read their own in bind.
    LLMT_ASSIGN_OR_RETURN(int64_t pooling, optional_int(g, hp.arch + ".pooling_type", 0));
    if (pooling < 0 || pooling > 4) {
      return unsupported(g.path() + ": " + hp.arch + ".pooling_type " + std::to_string(pooling) +
                         " is unknown (0 none, 1 mean, 2 cls, 3 last, 4 rank)");
    }
    hp.pooling = static_cast<Pooling>(pooling);
  }
  weights_->embed_dequant = kernels::type_kernels(weights_->token_embd.type, isa)->dequantize_row;
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
  const WeightMatrix& te = weights_->token_embd;
  const auto* row = static_cast<const uint8_t*>(te.data) + static_cast<size_t>(id) * te.row_bytes;
  weights_->embed_dequant(row, dst, te.row_len);
}

const WeightMatrix& Model::token_embd() const {
  return weights_->token_embd;
}
const WeightMatrix& Model::output() const {
  return weights_->output;
}
bool Model::layer_is_swa(int32_t il) const {
  return il >= 0 && il < hparams_.n_layer && weights_->layers[static_cast<size_t>(il)].swa;
}
bool Model::tied_output() const {
  return weights_->tied_output;
}
std::span<const WeightMatrix* const> Model::matrices() const {
  return weights_->matrices;
}

// ---- Registry and shared binding helpers.

const ArchSpec* find_arch(std::string_view name) {
  for (const auto& a : kArchs) {
    if (name == a.name) return &a;
  }
  return nullptr;
}

std::string supported_archs() {
  std::string s;
  for (const auto& a : kArchs) {
    if (!s.empty()) s += ", ";
    s += a.name;
  }
  return s;
}

std::string blk(int32_t il, const char* name) {
  return "blk." + std::to_string(il) + "." + name;
}

Result<int64_t> optional_int(const GgufFile& g, const std::string& key, int64_t def) {
  LLMT_ASSIGN_OR_RETURN(auto v, g.get_int(key));
  return v ? *v : def;
}

Result<double> optional_float(const GgufFile& g, const std::string& key, double def) {
  LLMT_ASSIGN_OR_RETURN(auto v, g.get_float(key));
  return v ? *v : def;
}

Status bind_embd_output(Binder& b, const ModelHparams& hp, ModelWeights& w, bool norm_bias) {
  LLMT_ASSIGN_OR_RETURN(w.token_embd, b.matrix("token_embd.weight", hp.n_embd, hp.n_vocab));
  LLMT_ASSIGN_OR_RETURN(w.output_norm, b.vector("output_norm.weight", hp.n_embd));
  if (norm_bias) {
    LLMT_ASSIGN_OR_RETURN(w.output_norm_b, b.vector("output_norm.bias", hp.n_embd));
  }
  if (b.gguf().find_tensor("output.weight")) {
    LLMT_ASSIGN_OR_RETURN(w.output, b.matrix("output.weight", hp.n_embd, hp.n_vocab));
    w.tied_output = false;
  } else {
    w.output = w.token_embd;
    w.tied_output = true;
  }
  return Status::ok();
}

void collect_matrices(ModelWeights& w) {
  w.matrices.clear();
  for (const LayerWeights& l : w.layers) {
    for (const WeightMatrix* m :
         {&l.wq, &l.wk, &l.wv, &l.wqkv, &l.wo, &l.ffn_gate, &l.ffn_up, &l.ffn_down}) {
      if (m->data) w.matrices.push_back(m);
    }
  }
  if (w.output.data) w.matrices.push_back(&w.output);
}

Result<WeightMatrix> Binder::matrix(const std::string& name, int64_t row_len, int64_t n_rows,
                                    bool optional) {
  const GgufTensor* t = gguf_.find_tensor(name);
  if (!t) {
    if (optional) return WeightMatrix{};
    return not_found(gguf_.path() + ": missing tensor '" + name + "'");
  }
  LLMT_RETURN_IF_ERROR(check_shape(*t, {row_len, n_rows}));
  if (!kernels::type_kernels(t->type, isa_)) {
    return unsupported(gguf_.path() + ": tensor '" + name + "' has type " +
                       tensor_type_name(t->type) + ", which this engine cannot compute with");
  }
  auto rb = tensor_row_bytes(t->type, row_len);
  if (!rb) {
    return unsupported(gguf_.path() + ": tensor '" + name + "' rows of " + std::to_string(row_len) +
                       " elements do not fit type " + tensor_type_name(t->type) + "'s block size");
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

Result<const float*> Binder::vector(const std::string& name, int64_t n, bool optional) {
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

Status Binder::check_shape(const GgufTensor& t, std::vector<int64_t> want) const {
  // Trailing dimensions of 1 are allowed.
  std::vector<int64_t> have = t.shape;
  while (have.size() > want.size() && have.back() == 1) have.pop_back();
  if (have != want) {
    return corrupt(gguf_.path() + ": tensor '" + std::string(t.name) + "' has shape " +
                   shape_str(t.shape) + ", expected " + shape_str(want));
  }
  return Status::ok();
}

}  // namespace llmt
