// Context: validation of eval() / decode() / decode_paged() / embed() requests, chunking into
// forward passes of at most n_batch entries, the KV pool and scratch allocation. The forward
// passes themselves are the architectures' (src/model/arch/*.cpp, from the steps of
// context-state.h); the KV layout is described there.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include <sys/mman.h>

#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "llmthreads/model.h"
#include "model/context-state.h"
#include "model/model-impl.h"
#include "threading/thread-pool.h"

namespace llmt {

struct Context::Impl : ContextState {
  // One forward pass over n <= n_batch validated entries through the architecture's hook;
  // tables[seq_id] is the block table of each entry's sequence (covering positions 0..pos with
  // valid block ids). Writes the logits of the rows with want_logits, in order, to logits_out
  // ([rows, n_vocab]; unused when no row wants logits).
  void forward(const BatchEntry* e, int32_t n, const std::span<const int32_t>* tables,
               float* logits_out) {
    model->arch_spec().forward(*this, e, n, tables, logits_out);
  }
  // Runs validated entries in chunks of n_batch; sets the logits (n_logits). Errors (logits
  // allocation) leave everything unchanged.
  Status run_batch(std::span<const BatchEntry> batch, const std::span<const int32_t>* tables,
                   const char* what);
  // Makes room for n_rows logit rows; false on allocation failure.
  bool reserve_logits(int64_t n_rows);
};

bool Context::Impl::reserve_logits(int64_t n_rows) {
  const size_t need = static_cast<size_t>(n_rows) * hp->n_vocab;
  if (logits.size() >= need) return true;
  try {
    logits.resize(need);
  } catch (const std::bad_alloc&) {
    return false;
  }
  return true;
}

void ContextState::rope_table(const BatchEntry* e, int32_t n, const std::vector<double>& inv,
                              float freq_scale, float mscale, float* dst) const {
  const int32_t n_rot = hp->n_rot;
  for (int32_t i = 0; i < n; ++i) {
    const double p = static_cast<double>(e[i].pos) * freq_scale;
    float* cs = dst + static_cast<size_t>(i) * n_rot;
    for (int32_t j = 0; j < n_rot / 2; ++j) {
      const float theta = static_cast<float>(p * inv[j]);
      cs[2 * j] = std::cos(theta);
      cs[2 * j + 1] = std::sin(theta);
      if (mscale != 1.0f) {
        cs[2 * j] *= mscale;
        cs[2 * j + 1] *= mscale;
      }
    }
  }
}

void ContextState::embed_rows(const BatchEntry* e, int32_t n, bool single) {
  const int64_t n_embd = hp->n_embd;
  const Model& m = *model;
  par(single || n <= 8, [&](int ith, int nth) {
    int64_t b, end;
    split_range(n, ith, nth, &b, &end);
    for (int64_t i = b; i < end; ++i) m.embed_token(e[i].token, x.data() + i * n_embd);
  });
}

int32_t ContextState::collect_out_rows(const BatchEntry* e, int32_t n) {
  int32_t n_out = 0;
  for (int32_t i = 0; i < n; ++i) {
    if (e[i].want_logits) out_rows[n_out++] = i;
  }
  return n_out;
}

Context::Context(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Context::~Context() = default;

namespace {

// Checks the options of Context::create() against each other and the model.
Status check_context_options(const Model& model, const ContextOptions& options) {
  if (options.n_ctx < 0) {
    return invalid_argument("n_ctx must be >= 0 (0 = default), got " +
                            std::to_string(options.n_ctx));
  }
  if (options.n_threads < 0 || options.n_threads > 1024) {
    return invalid_argument("n_threads must be in [0, 1024] (0 = physical cores), got " +
                            std::to_string(options.n_threads));
  }
  if (options.n_kv_blocks < 0) {
    return invalid_argument("n_kv_blocks must be >= 0 (0 = fixed-slot mode), got " +
                            std::to_string(options.n_kv_blocks));
  }
  const bool paged = options.n_kv_blocks > 0;
  if (paged && (options.kv_block_size < 1 || options.kv_block_size > 4096)) {
    return invalid_argument("kv_block_size must be in [1, 4096], got " +
                            std::to_string(options.kv_block_size));
  }
  if (!paged && (options.n_seq_max < 1 || options.n_seq_max > 4096)) {
    return invalid_argument("n_seq_max must be in [1, 4096], got " +
                            std::to_string(options.n_seq_max));
  }
  if (options.kv_type != KvType::kF32 && options.kv_type != KvType::kF16) {
    return invalid_argument("kv_type must be KvType::kF32 or KvType::kF16");
  }
  if (options.n_batch < 1) {
    return invalid_argument("n_batch must be >= 1, got " + std::to_string(options.n_batch));
  }
  if (options.kv_type == KvType::kF16 && model.hparams().head_dim > 1024 &&
      model.arch_spec().forward == forward_decoder) {
    return invalid_argument("an F16 KV cache supports head_dim <= 1024 for '" +
                            model.hparams().arch + "' (head_dim " +
                            std::to_string(model.hparams().head_dim) + ")");
  }
  return Status::ok();
}

// Lays out and maps the KV pool (and the window-slot pool) of c, whose hp, w, paged, n_seq_max,
// kv_elem_bytes and n_ctx are set.
Status map_kv_pool(ContextState& c, const ContextOptions& options) {
  const ModelHparams& h = *c.hp;
  const ModelWeights& mw = *c.w;
  const bool paged = c.paged;
  c.block_size = paged ? options.kv_block_size : c.n_ctx;
  c.n_blocks = paged ? options.n_kv_blocks : c.n_seq_max;
  // Refuse absurd requests before allocating (K and V). Sizes are computed in double first, so
  // they cannot overflow.
  const double block_bytes_d = 2.0 * h.n_layer * h.kv_dim() * static_cast<double>(c.block_size) *
                               static_cast<double>(c.kv_elem_bytes);
  constexpr double kMaxKvBytes = static_cast<double>(size_t{64} << 30);
  if (block_bytes_d * c.n_blocks > kMaxKvBytes) {
    return Status(StatusCode::kOutOfMemory,
                  paged ? "KV cache of " + std::to_string(c.n_blocks) + " blocks x " +
                              std::to_string(c.block_size) + " tokens would need more than 64 GiB"
                        : "KV cache for n_ctx " + std::to_string(c.n_ctx) + " x n_seq_max " +
                              std::to_string(c.n_seq_max) + " would need more than 64 GiB");
  }
  c.row_bytes = static_cast<size_t>(h.head_dim) * c.kv_elem_bytes;
  // Layers by pool: sliding-window ones apart when window slots are asked for.
  int32_t n_swa_layers = 0;
  for (int32_t il = 0; il < h.n_layer; ++il) n_swa_layers += mw.layers[il].swa ? 1 : 0;
  if (options.n_kv_window_slots != 0) {
    if (!paged || options.n_kv_window_slots < 0 || options.n_kv_window_slots > (1 << 30)) {
      return invalid_argument("n_kv_window_slots " + std::to_string(options.n_kv_window_slots) +
                              ": only paged mode keeps window slots, at most 2^30");
    }
    if (n_swa_layers == 0 || h.n_swa <= 0) {
      return invalid_argument("n_kv_window_slots: '" + h.arch +
                              "' has no sliding-window layers to keep apart");
    }
    c.n_window_slots = options.n_kv_window_slots;
  }
  c.layer_index.assign(static_cast<size_t>(h.n_layer), 0);
  int32_t n_main = 0, n_win = 0;
  for (int32_t il = 0; il < h.n_layer; ++il) {
    c.layer_index[il] = c.n_window_slots > 0 && mw.layers[il].swa ? n_win++ : n_main++;
  }
  const size_t head_rows = static_cast<size_t>(h.n_head_kv) * c.block_size * c.row_bytes;
  c.v_offset = static_cast<size_t>(n_main) * head_rows;
  c.block_bytes = 2 * c.v_offset;
  c.win_v_offset = static_cast<size_t>(n_win) * head_rows;
  c.win_block_bytes = 2 * c.win_v_offset;
  const size_t pool_bytes = c.block_bytes * c.n_blocks;
  const size_t win_bytes = c.win_block_bytes * static_cast<size_t>(c.n_window_slots);
  if (static_cast<double>(pool_bytes) + static_cast<double>(win_bytes) > kMaxKvBytes) {
    return Status(StatusCode::kOutOfMemory, "KV cache would need more than 64 GiB");
  }
  if (!c.kv_pool.map(std::max<size_t>(pool_bytes, 1)) ||
      (win_bytes > 0 && !c.win_pool.map(win_bytes))) {
    return Status(StatusCode::kOutOfMemory,
                  "cannot map the KV cache (" + std::to_string(pool_bytes + win_bytes) + " bytes)");
  }
  return Status::ok();
}

// Allocates the slot tables and the batch scratch buffers of c (n_batch rows) and its RoPE
// frequencies.
Status allocate_buffers(ContextState& c) {
  const ModelHparams& h = *c.hp;
  const ModelWeights& mw = *c.w;
  const size_t nb = static_cast<size_t>(c.n_batch);
  try {
    c.slot_blocks.resize(c.n_seq_max);
    c.slot_tables.resize(c.n_seq_max);
    for (int32_t s = 0; s < c.n_seq_max; ++s) {
      c.slot_blocks[s] = s;
      c.slot_tables[s] = std::span<const int32_t>(&c.slot_blocks[s], 1);
    }
    c.seq_len.assign(c.n_seq_max, 0);
    c.next_pos.assign(c.n_seq_max, 0);
    c.chunk.resize(nb);
    c.att_order.resize(nb);
    c.out_rows.resize(nb);
    c.x.resize(nb * h.n_embd);
    c.q.resize(nb * h.q_dim());
    c.k.resize(nb * h.kv_dim());
    c.v.resize(nb * h.kv_dim());
    c.att.resize(nb * h.q_dim());
    c.attn_out.resize(nb * h.n_embd);
    c.ffn_out.resize(nb * h.n_embd);
    c.gate.resize(nb * h.n_ff);
    c.up.resize(nb * h.n_ff);
    c.rope_cs.resize(nb * std::max(h.n_rot, 2));
    c.inv_freq.resize(h.n_rot / 2);
    for (int32_t j = 0; j < h.n_rot / 2; ++j) {
      c.inv_freq[j] = std::pow(static_cast<double>(h.rope_freq_base), -2.0 * j / h.n_rot);
      // Llama 3 scaling: the frequencies divided by rope_freqs.weight (llama.cpp's freq_factors).
      // phi3: the long factors when a sequence may exceed the original context length.
      const float* factors =
          mw.rope_factors_long && c.n_ctx > mw.n_ctx_orig ? mw.rope_factors_long : mw.rope_factors;
      if (factors) c.inv_freq[j] /= static_cast<double>(factors[j]);
    }
    if (mw.rope_base_swa > 0.0f) {
      c.rope_cs_swa.resize(nb * std::max(h.n_rot, 2));
      c.inv_freq_swa.resize(h.n_rot / 2);
      for (int32_t j = 0; j < h.n_rot / 2; ++j) {
        c.inv_freq_swa[j] = std::pow(static_cast<double>(mw.rope_base_swa), -2.0 * j / h.n_rot);
      }
    }
    size_t fused = 0;
    for (const LayerWeights& L : mw.layers) {
      if (L.wqkv.data) fused = std::max<size_t>(fused, L.wqkv.n_rows);
      if (L.ffn_up.data && !L.ffn_gate.data) fused = std::max<size_t>(fused, L.ffn_up.n_rows);
    }
    c.fused.resize(nb * fused);
    c.logits.resize(h.n_vocab);
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory,
                  "cannot allocate the context buffers for n_ctx " + std::to_string(c.n_ctx));
  }
  return Status::ok();
}

// Sizes the matmul work area and macs_per_token from the model's matrices, starts the thread
// pool and allocates each thread's scratch.
Status start_threads(ContextState& c, const Model& model, const ContextOptions& options) {
  const ModelHparams& h = *c.hp;
  const size_t nb = static_cast<size_t>(c.n_batch);
  // One work size fits every matmul of the model at n_batch rows.
  size_t work = 0;
  auto consider = [&](const WeightMatrix& w) {
    work = std::max(work, kernels::matmul_work_bytes(w.type, c.n_batch, w.row_len));
  };
  c.macs_per_token = 0.0;
  for (const WeightMatrix* w : model.matrices()) {
    consider(*w);
    c.macs_per_token += static_cast<double>(w->n_rows) * w->row_len;
  }
  c.pool = std::make_unique<ThreadPool>(options.n_threads);
  try {
    c.ts.resize(c.pool->n_threads());
    for (auto& t : c.ts) {
      t.act.resize(nb * std::max<size_t>(h.n_embd, h.n_ff));
      t.row.resize(h.n_embd);
      t.scores.resize(static_cast<size_t>(h.n_head / h.n_head_kv) * c.n_ctx);
      for (auto& slot : t.work) {
        slot = aligned_bytes(work);
        if (!slot) throw std::bad_alloc();
      }
    }
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory, "cannot allocate per-thread scratch buffers");
  }
  return Status::ok();
}

}  // namespace

Result<std::unique_ptr<Context>> Context::create(std::shared_ptr<const Model> model,
                                                 const ContextOptions& options) {
  if (!model) return invalid_argument("Context::create: model is null");
  LLMT_RETURN_IF_ERROR(check_context_options(*model, options));
  const bool paged = options.n_kv_blocks > 0;
  auto impl = std::make_unique<Impl>();
  Impl& c = *impl;
  const ModelHparams& h = model->hparams();
  c.hp = &h;
  const ModelWeights& mw = model->weights();
  c.w = &mw;
  c.paged = paged;
  c.n_seq_max = paged ? 0 : options.n_seq_max;
  c.kv_type = options.kv_type;
  c.kv_elem_bytes = c.kv_type == KvType::kF16 ? sizeof(uint16_t) : sizeof(float);
  if (options.n_ctx > 0) {
    c.n_ctx = options.n_ctx;
  } else {
    c.n_ctx = std::min<int32_t>(h.n_ctx_train, 4096);
    if (c.n_seq_max > 1) c.n_ctx = std::min(c.n_ctx, std::max(256, 16384 / c.n_seq_max));
  }
  // A fixed-slot context never runs more than n_ctx tokens at once; a paged one can (many
  // sequences in one pass).
  c.n_batch = paged ? options.n_batch : std::min(options.n_batch, c.n_ctx);
  c.all_logits = options.all_logits;
  c.isa = static_cast<kernels::Isa>(model->isa());
  c.ot = &ops::ops_table(c.isa);

  LLMT_RETURN_IF_ERROR(map_kv_pool(c, options));
  LLMT_RETURN_IF_ERROR(allocate_buffers(c));
  LLMT_RETURN_IF_ERROR(start_threads(c, *model, options));
  c.model = std::move(model);
  return std::unique_ptr<Context>(new Context(std::move(impl)));
}

namespace {

Status encoder_only(const char* what, const ModelHparams& h) {
  return invalid_argument(std::string(what) + ": '" + h.arch +
                          "' is an encoder (bidirectional) model; use Context::embed()");
}

Status not_in_paged_mode(const char* what) {
  return invalid_argument(std::string(what) +
                          ": not available in paged mode (use decode_paged with block tables)");
}

}  // namespace

Status Context::Impl::run_batch(std::span<const BatchEntry> batch,
                                const std::span<const int32_t>* tables, const char* what) {
  int64_t n_want = 0, n_want_embd = 0;
  for (const BatchEntry& e : batch) {
    n_want += e.want_logits ? 1 : 0;
    n_want_embd += e.want_embd ? 1 : 0;
  }
  if (!reserve_logits(n_want)) {
    return Status(StatusCode::kOutOfMemory, std::string(what) + ": cannot allocate logits for " +
                                                std::to_string(n_want) + " entries");
  }
  try {
    const size_t need = static_cast<size_t>(n_want_embd) * hp->n_embd;
    if (embd.size() < need) embd.resize(need);
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory, std::string(what) +
                                                ": cannot allocate hidden states for " +
                                                std::to_string(n_want_embd) + " entries");
  }
  n_logits = 0;
  n_embd_rows = 0;
  const int64_t n_total = static_cast<int64_t>(batch.size());
  int64_t n_out = 0, n_out_embd = 0;
  for (int64_t done = 0; done < n_total;) {
    const int32_t n = static_cast<int32_t>(std::min<int64_t>(n_batch, n_total - done));
    const BatchEntry* e = batch.data() + done;
    embd_out = embd.data() + static_cast<size_t>(n_out_embd) * hp->n_embd;
    forward(e, n, tables, logits.data() + static_cast<size_t>(n_out) * hp->n_vocab);
    for (int32_t i = 0; i < n; ++i) {
      n_out += e[i].want_logits ? 1 : 0;
      n_out_embd += e[i].want_embd ? 1 : 0;
    }
    done += n;
  }
  embd_out = nullptr;
  n_logits = static_cast<int32_t>(n_out);
  n_embd_rows = static_cast<int32_t>(n_out_embd);
  return Status::ok();
}

Status Context::eval(std::span<const int32_t> tokens) {
  Impl& c = *impl_;
  const ModelHparams& h = *c.hp;
  if (!h.causal) return encoder_only("eval", h);
  if (c.paged) return not_in_paged_mode("eval");
  if (tokens.empty()) return invalid_argument("eval: no tokens");
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= h.n_vocab) {
      return invalid_argument("eval: token id " + std::to_string(tokens[i]) + " at index " +
                              std::to_string(i) + " is outside the vocabulary [0, " +
                              std::to_string(h.n_vocab) + ")");
    }
  }
  const int32_t n_past = c.seq_len[0];
  if (tokens.size() > static_cast<size_t>(c.n_ctx - n_past)) {
    return invalid_argument("eval: context full: " + std::to_string(n_past) + " cached + " +
                            std::to_string(tokens.size()) + " new tokens exceed n_ctx " +
                            std::to_string(c.n_ctx));
  }
  const int32_t n_total = static_cast<int32_t>(tokens.size());
  if (!c.reserve_logits(c.all_logits ? n_total : 1)) {
    return Status(StatusCode::kOutOfMemory,
                  "eval: cannot allocate logits for " + std::to_string(n_total) + " positions");
  }
  c.n_logits = 0;
  int32_t n_out = 0;
  for (int32_t done = 0; done < n_total;) {
    const int32_t n = std::min(c.n_batch, n_total - done);
    for (int32_t i = 0; i < n; ++i) {
      const int32_t t = done + i;
      c.chunk[i] = BatchEntry{tokens[t], 0, n_past + t, c.all_logits || t == n_total - 1};
    }
    c.forward(c.chunk.data(), n, c.slot_tables.data(),
              c.logits.data() + static_cast<size_t>(n_out) * h.n_vocab);
    n_out += c.all_logits ? n : (done + n == n_total ? 1 : 0);
    c.seq_len[0] += n;
    done += n;
  }
  c.n_logits = n_out;
  return Status::ok();
}

Status Context::decode(std::span<const BatchEntry> batch) {
  Impl& c = *impl_;
  const ModelHparams& h = *c.hp;
  if (!h.causal) return encoder_only("decode", h);
  if (c.paged) return not_in_paged_mode("decode");
  if (batch.empty()) return invalid_argument("decode: empty batch");
  std::copy(c.seq_len.begin(), c.seq_len.end(), c.next_pos.begin());
  for (size_t i = 0; i < batch.size(); ++i) {
    const BatchEntry& e = batch[i];
    if (e.token < 0 || e.token >= h.n_vocab) {
      return invalid_argument("decode: token id " + std::to_string(e.token) + " at entry " +
                              std::to_string(i) + " is outside the vocabulary [0, " +
                              std::to_string(h.n_vocab) + ")");
    }
    if (e.seq_id < 0 || e.seq_id >= c.n_seq_max) {
      return invalid_argument("decode: seq_id " + std::to_string(e.seq_id) + " at entry " +
                              std::to_string(i) +
                              " is outside [0, n_seq_max = " + std::to_string(c.n_seq_max) + ")");
    }
    int32_t& next = c.next_pos[e.seq_id];
    if (e.pos != next) {
      return invalid_argument("decode: entry " + std::to_string(i) + " of sequence " +
                              std::to_string(e.seq_id) + " has pos " + std::to_string(e.pos) +
                              ", expected " + std::to_string(next));
    }
    if (next >= c.n_ctx) {
      return invalid_argument("decode: sequence " + std::to_string(e.seq_id) + " is full (n_ctx " +
                              std::to_string(c.n_ctx) + ") at entry " + std::to_string(i));
    }
    ++next;
  }
  LLMT_RETURN_IF_ERROR(c.run_batch(batch, c.slot_tables.data(), "decode"));
  std::copy(c.next_pos.begin(), c.next_pos.end(), c.seq_len.begin());
  return Status::ok();
}

Status Context::decode_paged(std::span<const BatchEntry> batch,
                             std::span<const std::span<const int32_t>> block_tables,
                             std::span<const std::span<const int32_t>> window_tables) {
  Impl& c = *impl_;
  const ModelHparams& h = *c.hp;
  if (!h.causal) return encoder_only("decode_paged", h);
  if (!c.paged) {
    return invalid_argument("decode_paged: the context is not in paged mode (n_kv_blocks = 0)");
  }
  if (batch.empty()) return invalid_argument("decode_paged: empty batch");
  const size_t n_tables = block_tables.size();
  try {
    c.next_pos.assign(n_tables, -1);  // next position of each sequence; -1: not seen yet
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory, "decode_paged: cannot allocate validation scratch");
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    const BatchEntry& e = batch[i];
    auto at = [i] { return " at entry " + std::to_string(i); };
    if (e.token < 0 || e.token >= h.n_vocab) {
      return invalid_argument("decode_paged: token id " + std::to_string(e.token) + at() +
                              " is outside the vocabulary [0, " + std::to_string(h.n_vocab) + ")");
    }
    if (e.seq_id < 0 || static_cast<size_t>(e.seq_id) >= n_tables) {
      return invalid_argument("decode_paged: seq_id " + std::to_string(e.seq_id) + at() +
                              " has no block table (" + std::to_string(n_tables) + " tables)");
    }
    if (e.pos < 0 || e.pos >= c.n_ctx) {
      return invalid_argument("decode_paged: pos " + std::to_string(e.pos) + at() +
                              " is outside [0, n_ctx = " + std::to_string(c.n_ctx) + ")");
    }
    int32_t& next = c.next_pos[e.seq_id];
    if (next >= 0 && e.pos != next) {
      return invalid_argument("decode_paged: entry " + std::to_string(i) + " of sequence " +
                              std::to_string(e.seq_id) + " has pos " + std::to_string(e.pos) +
                              ", expected " + std::to_string(next) +
                              " (positions of a sequence must be consecutive)");
    }
    const size_t n_table_blocks = block_tables[e.seq_id].size();
    if (static_cast<size_t>(e.pos / c.block_size) >= n_table_blocks) {
      return invalid_argument("decode_paged: pos " + std::to_string(e.pos) + at() +
                              " needs block " + std::to_string(e.pos / c.block_size) +
                              " of sequence " + std::to_string(e.seq_id) + ", whose table has " +
                              std::to_string(n_table_blocks) + " blocks");
    }
    next = e.pos + 1;
  }
  // Every block an entry writes or attends through: table[0 .. last pos / block_size].
  for (size_t s = 0; s < n_tables; ++s) {
    if (c.next_pos[s] < 0) continue;
    const std::span<const int32_t> table = block_tables[s];
    const int32_t n_used = (c.next_pos[s] - 1) / c.block_size + 1;
    for (int32_t j = 0; j < n_used; ++j) {
      if (table[j] < 0 || table[j] >= c.n_blocks) {
        return invalid_argument(
            "decode_paged: block id " + std::to_string(table[j]) + " at index " +
            std::to_string(j) + " of the table of sequence " + std::to_string(s) +
            " is outside [0, n_kv_blocks = " + std::to_string(c.n_blocks) + ")");
      }
    }
  }
  if (c.n_window_slots == 0) {
    if (!window_tables.empty()) {
      return invalid_argument("decode_paged: window tables without window slots");
    }
    return c.run_batch(batch, block_tables.data(), "decode_paged");
  }
  if (window_tables.size() != n_tables) {
    return invalid_argument("decode_paged: " + std::to_string(window_tables.size()) +
                            " window tables for " + std::to_string(n_tables) + " block tables");
  }
  // The window slots every entry's sliding-window attention reads or writes: those of the
  // positions [pos + 1 - n_swa, pos]; the first entry of a sequence reaches back the furthest.
  // (next_pos[s] is one past the last position of sequence s in the batch, from the checks
  // above; the first is found here.)
  try {
    c.win_first.assign(n_tables, -1);
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory, "decode_paged: cannot allocate validation scratch");
  }
  for (const BatchEntry& e : batch) {
    if (c.win_first[e.seq_id] < 0) c.win_first[e.seq_id] = e.pos;
  }
  for (size_t s = 0; s < n_tables; ++s) {
    if (c.win_first[s] < 0) continue;
    const int32_t j0 = std::max(0, c.win_first[s] + 1 - h.n_swa) / c.block_size;
    const int32_t j1 = (c.next_pos[s] - 1) / c.block_size;
    const std::span<const int32_t> wt = window_tables[s];
    for (int32_t j = j0; j <= j1; ++j) {
      if (static_cast<size_t>(j) >= wt.size() || wt[j] < 0 || wt[j] >= c.n_window_slots) {
        return invalid_argument("decode_paged: the window table of sequence " + std::to_string(s) +
                                " has no valid slot at block index " + std::to_string(j) +
                                " (slots [0, " + std::to_string(c.n_window_slots) + "))");
      }
    }
  }
  c.win_tables = window_tables.data();
  Status st = c.run_batch(batch, block_tables.data(), "decode_paged");
  c.win_tables = nullptr;
  return st;
}

namespace {

// Checks one encoder input (embed / embed_batch): not empty, at most n_max tokens, ids in the
// vocabulary. `what` prefixes the message ("embed", "embed_batch: sequence 3").
Status check_encoder_input(const std::string& what, std::span<const int32_t> tokens, int64_t n_max,
                           int32_t n_vocab) {
  if (tokens.empty()) return invalid_argument(what + ": no tokens");
  // One pass holds every token (scratch for n_batch rows, attention scores for n_ctx) and the
  // learned positions stop at context_length.
  if (static_cast<int64_t>(tokens.size()) > n_max) {
    return invalid_argument(what + ": " + std::to_string(tokens.size()) +
                            " tokens exceed the most one pass takes (" + std::to_string(n_max) +
                            ": min(n_batch, n_ctx, context_length))");
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= n_vocab) {
      return invalid_argument(what + ": token id " + std::to_string(tokens[i]) + " at index " +
                              std::to_string(i) + " is outside the vocabulary [0, " +
                              std::to_string(n_vocab) + ")");
    }
  }
  return Status::ok();
}

// Pools rows [row0, row0 + n) of x [*, ne] into out: kCls the first row, kLast the last, kMean
// the mean (in double, token order).
void pool_rows(const std::vector<float>& x, size_t row0, int32_t n, size_t ne, Pooling pool,
               std::vector<float>* out) {
  const float* base = x.data() + row0 * ne;
  if (pool == Pooling::kCls || pool == Pooling::kLast) {
    const float* row = pool == Pooling::kCls ? base : base + static_cast<size_t>(n - 1) * ne;
    out->assign(row, row + ne);
    return;
  }
  std::vector<double> acc(ne, 0.0);
  for (int32_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < ne; ++j) acc[j] += base[i * ne + j];
  }
  out->resize(ne);
  for (size_t j = 0; j < ne; ++j) (*out)[j] = static_cast<float>(acc[j] / n);
}

// Pooling kRank: the classification head over the first-token states of n_seqs sequences
// (rows first_rows[s] of c.x, [*, n_embd]); (*out)[s] gets hp.n_cls_out scores. One matmul per
// head matrix over all sequences at once, on the calling thread: by the matmul contract each
// sequence's scores are bitwise what it gets alone.
void run_cls_head(ContextState& c, std::span<const size_t> first_rows,
                  std::vector<std::vector<float>>* out) {
  const ModelWeights& w = *c.w;
  const int64_t ne = c.hp->n_embd;
  const int64_t n_cls = c.hp->n_cls_out;
  const int64_t m = static_cast<int64_t>(first_rows.size());
  std::vector<float> h(static_cast<size_t>(m * ne));  // [m, n_embd]
  for (int64_t s = 0; s < m; ++s) {
    std::copy_n(c.x.data() + first_rows[s] * ne, ne, h.data() + s * ne);
  }
  if (w.cls.data) {
    std::vector<float> d(h.size());  // [m, n_embd] = tanh(h · cls^T + cls_b)
    c.matmul_local(w.cls, h.data(), m, d.data(), 0, 1, 0);
    for (int64_t s = 0; s < m; ++s) {
      float* r = d.data() + s * ne;
      if (w.cls_b) ops::add(r, w.cls_b, ne);
      for (int64_t j = 0; j < ne; ++j) r[j] = std::tanh(r[j]);
    }
    h.swap(d);
  }
  std::vector<float> y(static_cast<size_t>(m * n_cls));  // [m, n_cls_out]
  c.matmul_local(w.cls_out, h.data(), m, y.data(), 0, 1, 0);
  out->resize(static_cast<size_t>(m));
  for (int64_t s = 0; s < m; ++s) {
    float* r = y.data() + s * n_cls;
    if (w.cls_out_b) ops::add(r, w.cls_out_b, n_cls);
    (*out)[s].assign(r, r + n_cls);
  }
}

}  // namespace

Result<std::vector<float>> Context::embed(std::span<const int32_t> tokens,
                                          std::optional<Pooling> pooling) {
  Impl& c = *impl_;
  const ModelHparams& h = *c.hp;
  if (h.causal || !c.model->arch_spec().encode) {
    return invalid_argument("embed: '" + h.arch +
                            "' is a causal (decoder) model; embed() needs an encoder (bert)");
  }
  const int64_t n_max = std::min<int64_t>({c.n_batch, c.n_ctx, h.n_ctx_train});
  LLMT_RETURN_IF_ERROR(check_encoder_input("embed", tokens, n_max, h.n_vocab));
  const int32_t n = static_cast<int32_t>(tokens.size());
  const Pooling pool = pooling.value_or(h.pooling == Pooling::kNone ? Pooling::kMean : h.pooling);
  if (pool == Pooling::kRank && h.n_cls_out == 0) {
    return invalid_argument("embed: rank pooling needs a classification head (cls.output.weight)",
                            "pooling");
  }
  c.model->arch_spec().encode(c, tokens.data(), &n, 1);
  const size_t ne = static_cast<size_t>(h.n_embd);
  std::vector<float> out;
  try {
    if (pool == Pooling::kRank) {
      std::vector<std::vector<float>> scores;
      const size_t first = 0;
      run_cls_head(c, {&first, 1}, &scores);
      out = std::move(scores[0]);
    } else if (pool == Pooling::kNone) {
      out.assign(c.x.begin(), c.x.begin() + n * ne);
    } else {
      pool_rows(c.x, 0, n, ne, pool, &out);
    }
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory, "embed: cannot allocate the result");
  }
  return out;
}

Status Context::embed_batch(std::span<const std::span<const int32_t>> seqs,
                            std::vector<std::vector<float>>* out, std::optional<Pooling> pooling) {
  Impl& c = *impl_;
  const ModelHparams& h = *c.hp;
  if (h.causal || !c.model->arch_spec().encode) {
    return invalid_argument("embed_batch: '" + h.arch +
                            "' is a causal (decoder) model; embed_batch() needs an encoder (bert)");
  }
  if (seqs.empty()) return invalid_argument("embed_batch: no sequences");
  const Pooling pool = pooling.value_or(h.pooling == Pooling::kNone ? Pooling::kMean : h.pooling);
  if (pool == Pooling::kNone) {
    return invalid_argument("embed_batch: pooling none is not supported (use embed())", "pooling");
  }
  if (pool == Pooling::kRank && h.n_cls_out == 0) {
    return invalid_argument(
        "embed_batch: rank pooling needs a classification head (cls.output.weight)", "pooling");
  }
  const int64_t n_max = std::min<int64_t>({c.n_batch, c.n_ctx, h.n_ctx_train});
  int64_t n_total = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    LLMT_RETURN_IF_ERROR(check_encoder_input("embed_batch: sequence " + std::to_string(s), seqs[s],
                                             n_max, h.n_vocab));
    n_total += static_cast<int64_t>(seqs[s].size());
  }
  if (n_total > c.n_batch) {
    return invalid_argument("embed_batch: " + std::to_string(n_total) +
                            " tokens in all exceed n_batch " + std::to_string(c.n_batch));
  }
  std::vector<int32_t> tokens, lens;
  try {
    tokens.reserve(static_cast<size_t>(n_total));
    for (const auto& sq : seqs) {
      tokens.insert(tokens.end(), sq.begin(), sq.end());
      lens.push_back(static_cast<int32_t>(sq.size()));
    }
    out->assign(seqs.size(), {});
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory, "embed_batch: cannot allocate the inputs");
  }
  c.model->arch_spec().encode(c, tokens.data(), lens.data(), static_cast<int32_t>(lens.size()));
  const size_t ne = static_cast<size_t>(h.n_embd);
  size_t row = 0;
  try {
    if (pool == Pooling::kRank) {
      std::vector<size_t> first_rows;
      for (int32_t len : lens) {
        first_rows.push_back(row);
        row += static_cast<size_t>(len);
      }
      run_cls_head(c, first_rows, out);
      return Status::ok();
    }
    for (size_t s = 0; s < seqs.size(); ++s) {
      pool_rows(c.x, row, lens[s], ne, pool, &(*out)[s]);
      row += static_cast<size_t>(lens[s]);
    }
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory, "embed_batch: cannot allocate the results");
  }
  return Status::ok();
}

std::span<const float> Context::batch_embd(int32_t j) const {
  const Impl& c = *impl_;
  const size_t ne = static_cast<size_t>(c.hp->n_embd);
  if (j < 0 || j >= c.n_embd_rows) return {};
  return {c.embd.data() + static_cast<size_t>(j) * ne, ne};
}

std::span<const float> Context::logits(int32_t i) const {
  if (i == -1) i = impl_->n_logits - 1;
  return batch_logits(i);
}

std::span<const float> Context::batch_logits(int32_t j) const {
  const Impl& c = *impl_;
  const size_t nv = static_cast<size_t>(c.hp->n_vocab);
  if (j < 0 || j >= c.n_logits) return {};
  return {c.logits.data() + static_cast<size_t>(j) * nv, nv};
}

int32_t Context::n_logits() const {
  return impl_->n_logits;
}
int32_t Context::n_past() const {
  return impl_->paged ? 0 : impl_->seq_len[0];
}
int32_t Context::n_ctx() const {
  return impl_->n_ctx;
}
int32_t Context::n_threads() const {
  return impl_->pool->n_threads();
}
int32_t Context::n_seq_max() const {
  return impl_->n_seq_max;
}
KvType Context::kv_type() const {
  return impl_->kv_type;
}
const Model& Context::model() const {
  return *impl_->model;
}

bool Context::paged() const {
  return impl_->paged;
}
int32_t Context::kv_block_size() const {
  return impl_->block_size;
}
int32_t Context::n_kv_blocks() const {
  return impl_->n_blocks;
}
size_t Context::kv_block_bytes() const {
  return impl_->block_bytes;
}
int32_t Context::n_kv_window_slots() const {
  return impl_->n_window_slots;
}
size_t Context::kv_window_slot_bytes() const {
  return impl_->win_block_bytes;
}
std::span<uint8_t> Context::kv_window_slot(int32_t s) {
  const Impl& c = *impl_;
  if (s < 0 || s >= c.n_window_slots) return {};
  return {c.win_pool.data() + static_cast<size_t>(s) * c.win_block_bytes, c.win_block_bytes};
}
std::span<const uint8_t> Context::kv_window_slot(int32_t s) const {
  const Impl& c = *impl_;
  if (s < 0 || s >= c.n_window_slots) return {};
  return {c.win_pool.data() + static_cast<size_t>(s) * c.win_block_bytes, c.win_block_bytes};
}
size_t Context::kv_bytes_per_token() const {
  return 2 * static_cast<size_t>(impl_->hp->n_layer) * impl_->hp->kv_dim() * impl_->kv_elem_bytes;
}

std::span<uint8_t> Context::kv_block(int32_t b) {
  const Impl& c = *impl_;
  if (b < 0 || b >= c.n_blocks) return {};
  return {c.kv_pool.data() + static_cast<size_t>(b) * c.block_bytes, c.block_bytes};
}

std::span<const uint8_t> Context::kv_block(int32_t b) const {
  const Impl& c = *impl_;
  if (b < 0 || b >= c.n_blocks) return {};
  return {c.kv_pool.data() + static_cast<size_t>(b) * c.block_bytes, c.block_bytes};
}

int32_t Context::seq_len(int32_t seq_id) const {
  if (seq_id < 0 || seq_id >= impl_->n_seq_max) return 0;
  return impl_->seq_len[seq_id];
}

void Context::seq_clear(int32_t seq_id) {
  if (seq_id < 0 || seq_id >= impl_->n_seq_max) return;
  impl_->seq_len[seq_id] = 0;
  impl_->n_logits = 0;
  impl_->n_embd_rows = 0;
}

void Context::reset() {
  std::fill(impl_->seq_len.begin(), impl_->seq_len.end(), 0);
  impl_->n_logits = 0;
  impl_->n_embd_rows = 0;
}

Status Context::truncate(int32_t n) {
  if (impl_->paged) return not_in_paged_mode("truncate");
  if (n < 0 || n > impl_->seq_len[0]) {
    return invalid_argument("truncate: " + std::to_string(n) +
                            " is outside [0, n_past = " + std::to_string(impl_->seq_len[0]) + "]");
  }
  impl_->seq_len[0] = n;
  impl_->n_logits = 0;
  impl_->n_embd_rows = 0;
  return Status::ok();
}

}  // namespace llmt
