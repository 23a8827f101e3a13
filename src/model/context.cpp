// Context: KV cache, scratch buffers and the forward pass of the llama-family transformer.
//
// One forward pass over a chunk of n tokens at positions pos0..pos0+n-1 (activations row-major,
// one row per token; xb is each thread's private normalized copy):
//   x   [n, n_embd]      = token_embd rows
//   per layer:
//     xb  [n, n_embd]    = rms_norm(x) * attn_norm
//     q   [n, q_dim]     = xb · Wq^T (+ bq), k/v [n, kv_dim] = xb · Wk^T / Wv^T (+ bk / bv)
//     rope(q), rope(k); k, v -> cache[layer][kv_head][pos][head_dim]
//     att [n, q_dim]     = causal softmax(q k^T / sqrt(head_dim)) v, per head
//     x  += att · Wo^T
//     xb  = rms_norm(x) * ffn_norm
//     x  += (silu(xb · Wgate^T) * (xb · Wup^T)) · Wdown^T
//   logits [rows, n_vocab] = (rms_norm(x) * output_norm) · Wout^T for the last row (or all rows)
// Every step is one ThreadPool::run(). Each thread normalizes and quantizes a matmul's whole input
// privately and computes its share of the output rows, so a layer takes 6 runs when decoding
// (norm+QKV, rope+cache, attention, Wo, norm+gate/up, SwiGLU+down) and 7 in prefill.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "llmthreads/model.h"
#include "threading/thread-pool.h"

namespace llmt {

namespace {

// [begin, end) of thread ith's share of n items split in nth contiguous ranges.
inline void split_range(int64_t n, int ith, int nth, int64_t* begin, int64_t* end) {
  const int64_t per = (n + nth - 1) / nth;
  *begin = std::min<int64_t>(n, per * ith);
  *end = std::min<int64_t>(n, *begin + per);
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBytes = std::unique_ptr<uint8_t, FreeDeleter>;

AlignedBytes aligned_bytes(size_t n) {
  const size_t rounded = ((std::max<size_t>(n, 1) + 63) / 64) * 64;
  return AlignedBytes(static_cast<uint8_t*>(std::aligned_alloc(64, rounded)));
}

}  // namespace

struct Context::Impl {
  std::shared_ptr<const Model> model;
  const ModelHparams* hp = nullptr;
  int32_t n_ctx = 0;
  int32_t n_batch = 0;
  bool all_logits = false;
  kernels::Isa isa = kernels::Isa::kScalar;
  const ops::OpsTable* ot = nullptr;
  std::unique_ptr<ThreadPool> pool;

  // KV cache, [n_layer][n_head_kv][n_ctx][head_dim] each. Left uninitialized (pages are mapped
  // on first write): a position is always written before it is read.
  std::unique_ptr<float[]> k_cache, v_cache;
  // Shared activations, sized for n_batch tokens.
  std::vector<float> x;        // [n, n_embd] residual stream
  std::vector<float> q, k, v;  // [n, q_dim], [n, kv_dim], [n, kv_dim]
  std::vector<float> att;      // [n, q_dim] attention output (before Wo)
  std::vector<float> attn_out; // [n, n_embd] att · Wo^T, not yet added to x
  std::vector<float> ffn_out;  // [n, n_embd] FFN output, not yet added to x
  std::vector<float> gate, up; // [n, n_ff]
  std::vector<float> rope_cs;    // [n_batch][n_rot] (cos, sin) pairs
  std::vector<double> inv_freq;  // [n_rot/2]
  std::vector<float> logits;     // [n_logits][n_vocab]
  int32_t n_logits = 0;
  int32_t n_past = 0;

  // Per-thread private scratch. Every thread prepares (normalizes, quantizes) the whole input of
  // a matmul itself and then computes its share of the outputs, so a matmul needs no barrier
  // between the two phases; the redundant preparation is cheap next to the matmul.
  static constexpr int kWorkSlots = 3;
  struct ThreadScratch {
    std::vector<float> act;     // [n_batch, max(n_embd, n_ff)] normalized / gated input
    std::vector<float> scores;  // [group, n_ctx] attention scores
    AlignedBytes work[kWorkSlots];
  };
  std::vector<ThreadScratch> ts;

  size_t kv_offset(int32_t il, int32_t g, int32_t pos) const {
    return ((static_cast<size_t>(il) * hp->n_head_kv + g) * n_ctx + pos) * hp->head_dim;
  }

  // Y[m, N] = X[m, K] · W^T: thread ith quantizes all of X into its own work slot, then computes
  // its share of Y. Must be called by every thread of a pool run.
  void matmul_local(const WeightMatrix& w, const float* xin, int64_t m, float* y, int ith,
                    int nth, int slot) {
    kernels::MatmulArgs a;
    a.wtype = w.type;
    a.w = w.data;
    a.n = w.n_rows;
    a.k = w.row_len;
    a.x = xin;
    a.m = m;
    a.y = y;
    a.work = ts[ith].work[slot].get();
    a.isa = isa;
    kernels::matmul_prepare(a, 0, 1);
    kernels::matmul_compute(a, ith, nth);
  }

  // Runs fn(ith, nth) on every pool thread, or as fn(0, 1) on the calling thread when `single`.
  template <typename Fn>
  void par(bool single, const Fn& fn) {
    if (single) {
      fn(0, 1);
    } else {
      pool->run(fn);
    }
  }

  // Multiply-adds of one token through all weight matrices (the output matrix included).
  double macs_per_token = 0.0;

  void forward(const int32_t* tokens, int32_t n, float* logits_out, bool all_rows);
};

void Context::Impl::forward(const int32_t* tokens, int32_t n, float* logits_out, bool all_rows) {
  const ModelHparams& h = *hp;
  const Model& m = *model;
  const int64_t n_embd = h.n_embd;
  const int64_t q_dim = h.q_dim();
  const int64_t kv_dim = h.kv_dim();
  const int64_t n_ff = h.n_ff;
  const int32_t hd = h.head_dim;
  const int32_t pos0 = n_past;
  const int32_t n_rot = h.n_rot;
  const bool neox = h.rope_type == RopeType::kNeox;
  const int32_t group = h.n_head / h.n_head_kv;
  const float att_scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // Above this many rows the elementwise SwiGLU is split over threads in its own run instead of
  // being recomputed by every thread.
  constexpr int32_t kFuseRows = 8;
  // A forward pass smaller than this many multiply-adds runs on the calling thread alone: waking
  // and synchronizing the pool (~30-80 runs per pass) costs more than it saves, and much more
  // when other processes compete for the cores.
  constexpr double kMinParallelMacs = 8e6;
  const bool single = pool->n_threads() == 1 || macs_per_token * n < kMinParallelMacs;

  // Rotation angles for this chunk's positions (cheap; on the calling thread).
  for (int32_t i = 0; i < n; ++i) {
    const double p = static_cast<double>(pos0 + i) * h.rope_freq_scale;
    float* cs = rope_cs.data() + static_cast<size_t>(i) * n_rot;
    for (int32_t j = 0; j < n_rot / 2; ++j) {
      const float theta = static_cast<float>(p * inv_freq[j]);
      cs[2 * j] = std::cos(theta);
      cs[2 * j + 1] = std::sin(theta);
    }
  }
  if (n <= kFuseRows) {
    for (int32_t i = 0; i < n; ++i) m.embed_token(tokens[i], x.data() + i * n_embd);
  } else {
    par(single, [&](int ith, int nth) {
      int64_t b, e;
      split_range(n, ith, nth, &b, &e);
      for (int64_t i = b; i < e; ++i) m.embed_token(tokens[i], x.data() + i * n_embd);
    });
  }

  // The residual stream is x + pending (pending = the previous FFN output, or nothing before the
  // first layer). Threads read x and pending to normalize privately, and fold pending into x
  // only in a later run where no thread reads x.
  const float* pending = nullptr;
  for (int32_t il = 0; il < h.n_layer; ++il) {
    const LayerWeights& L = m.layer(il);

    // Q, K, V of rms_norm(x + pending) * attn_norm.
    par(single, [&](int ith, int nth) {
      float* xn = ts[ith].act.data();
      for (int64_t i = 0; i < n; ++i) {
        const float* xr = x.data() + i * n_embd;
        float* dst = xn + i * n_embd;
        if (pending) {
          const float* pr = pending + i * n_embd;
          for (int64_t j = 0; j < n_embd; ++j) dst[j] = xr[j] + pr[j];
          ops::rms_norm(dst, L.attn_norm, dst, n_embd, h.rms_eps);
        } else {
          ops::rms_norm(xr, L.attn_norm, dst, n_embd, h.rms_eps);
        }
      }
      matmul_local(L.wq, xn, n, q.data(), ith, nth, 0);
      matmul_local(L.wk, xn, n, k.data(), ith, nth, 1);
      matmul_local(L.wv, xn, n, v.data(), ith, nth, 2);
    });

    // Own rows: fold pending into x; biases, RoPE, K/V into the cache.
    par(single, [&](int ith, int nth) {
      int64_t b, e;
      split_range(n, ith, nth, &b, &e);
      for (int64_t i = b; i < e; ++i) {
        if (pending) ops::add(x.data() + i * n_embd, pending + i * n_embd, n_embd);
        float* qr = q.data() + i * q_dim;
        float* kr = k.data() + i * kv_dim;
        float* vr = v.data() + i * kv_dim;
        if (L.bq) ops::add(qr, L.bq, q_dim);
        if (L.bk) ops::add(kr, L.bk, kv_dim);
        if (L.bv) ops::add(vr, L.bv, kv_dim);
        const float* cs = rope_cs.data() + i * n_rot;
        ops::rope(qr, h.n_head, hd, n_rot, cs, neox);
        ops::rope(kr, h.n_head_kv, hd, n_rot, cs, neox);
        const int32_t pos = pos0 + static_cast<int32_t>(i);
        for (int32_t g = 0; g < h.n_head_kv; ++g) {
          std::memcpy(k_cache.get() + kv_offset(il, g, pos), kr + g * hd, hd * sizeof(float));
          std::memcpy(v_cache.get() + kv_offset(il, g, pos), vr + g * hd, hd * sizeof(float));
        }
      }
    });

    // Causal attention. Work items are (token, KV head) with the KV head's query heads together
    // (they share the K/V reads), or (token, query head) when that gives too few items to keep
    // every thread busy; items are dealt round-robin so long and short rows mix. Per-head
    // results do not depend on the grouping.
    par(single, [&](int ith, int nth) {
      float* sc = ts[ith].scores.data();
      const int32_t per_item = static_cast<int64_t>(n) * h.n_head_kv >= 2 * nth ? group : 1;
      const int32_t items_per_token = h.n_head / per_item;
      const int64_t n_items = static_cast<int64_t>(n) * items_per_token;
      for (int64_t item = ith; item < n_items; item += nth) {
        const int32_t i = static_cast<int32_t>(item / items_per_token);
        const int32_t h0 = static_cast<int32_t>(item % items_per_token) * per_item;
        const int32_t g = h0 / group;
        const int32_t n_kv = pos0 + i + 1;
        const int64_t off = i * q_dim + static_cast<int64_t>(h0) * hd;
        ot->attend(q.data() + off, per_item, k_cache.get() + kv_offset(il, g, 0),
                   v_cache.get() + kv_offset(il, g, 0), n_kv, hd, att_scale, sc,
                   att.data() + off);
      }
    });

    par(single, [&](int ith, int nth) {
      matmul_local(L.wo, att.data(), n, attn_out.data(), ith, nth, 0);
    });

    // Gate and up of rms_norm(x + attn_out) * ffn_norm.
    par(single, [&](int ith, int nth) {
      float* xn = ts[ith].act.data();
      for (int64_t i = 0; i < n; ++i) {
        const float* xr = x.data() + i * n_embd;
        const float* ar = attn_out.data() + i * n_embd;
        float* dst = xn + i * n_embd;
        for (int64_t j = 0; j < n_embd; ++j) dst[j] = xr[j] + ar[j];
        ops::rms_norm(dst, L.ffn_norm, dst, n_embd, h.rms_eps);
      }
      matmul_local(L.ffn_gate, xn, n, gate.data(), ith, nth, 0);
      matmul_local(L.ffn_up, xn, n, up.data(), ith, nth, 1);
    });

    // Own rows: x += attn_out. Then ffn_out = (silu(gate) * up) · Wdown^T.
    if (n <= kFuseRows) {
      par(single, [&](int ith, int nth) {
        int64_t b, e;
        split_range(n, ith, nth, &b, &e);
        for (int64_t i = b; i < e; ++i) {
          ops::add(x.data() + i * n_embd, attn_out.data() + i * n_embd, n_embd);
        }
        float* g = ts[ith].act.data();
        std::memcpy(g, gate.data(), static_cast<size_t>(n) * n_ff * sizeof(float));
        ops::silu_mul(g, up.data(), static_cast<int64_t>(n) * n_ff);
        matmul_local(L.ffn_down, g, n, ffn_out.data(), ith, nth, 0);
      });
    } else {
      par(single, [&](int ith, int nth) {
        int64_t b, e;
        split_range(n, ith, nth, &b, &e);
        for (int64_t i = b; i < e; ++i) {
          ops::add(x.data() + i * n_embd, attn_out.data() + i * n_embd, n_embd);
          ops::silu_mul(gate.data() + i * n_ff, up.data() + i * n_ff, n_ff);
        }
      });
      par(single, [&](int ith, int nth) {
        matmul_local(L.ffn_down, gate.data(), n, ffn_out.data(), ith, nth, 0);
      });
    }
    pending = ffn_out.data();
  }

  if (!logits_out) return;  // a chunk before the last: only the KV cache was wanted
  // Logits of rms_norm(x + ffn_out) * output_norm for the wanted rows.
  const int64_t row0 = all_rows ? 0 : n - 1;
  const int64_t n_rows = n - row0;
  par(single, [&](int ith, int nth) {
    float* xn = ts[ith].act.data();
    for (int64_t r = 0; r < n_rows; ++r) {
      const float* xr = x.data() + (row0 + r) * n_embd;
      const float* pr = pending + (row0 + r) * n_embd;
      float* dst = xn + r * n_embd;
      for (int64_t j = 0; j < n_embd; ++j) dst[j] = xr[j] + pr[j];
      ops::rms_norm(dst, m.output_norm(), dst, n_embd, h.rms_eps);
    }
    matmul_local(m.output(), xn, n_rows, logits_out, ith, nth, 0);
  });
}

Context::Context(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Context::~Context() = default;

Result<std::unique_ptr<Context>> Context::create(std::shared_ptr<const Model> model,
                                                 const ContextOptions& options) {
  if (!model) return invalid_argument("Context::create: model is null");
  if (options.n_ctx < 0) {
    return invalid_argument("n_ctx must be >= 0 (0 = default), got " +
                            std::to_string(options.n_ctx));
  }
  if (options.n_threads < 0 || options.n_threads > 1024) {
    return invalid_argument("n_threads must be in [0, 1024] (0 = physical cores), got " +
                            std::to_string(options.n_threads));
  }
  if (options.n_batch < 1) {
    return invalid_argument("n_batch must be >= 1, got " + std::to_string(options.n_batch));
  }
  auto impl = std::make_unique<Impl>();
  Impl& c = *impl;
  const ModelHparams& h = model->hparams();
  c.hp = &h;
  c.n_ctx = options.n_ctx > 0 ? options.n_ctx : std::min<int32_t>(h.n_ctx_train, 4096);
  c.n_batch = std::min(options.n_batch, c.n_ctx);
  c.all_logits = options.all_logits;
  c.isa = static_cast<kernels::Isa>(model->isa());
  c.ot = &ops::ops_table(c.isa);

  const size_t kv_elems = static_cast<size_t>(h.n_layer) * h.kv_dim() * c.n_ctx;
  const size_t nb = static_cast<size_t>(c.n_batch);
  // Refuse absurd requests before allocating (K and V, f32).
  constexpr size_t kMaxKvBytes = size_t{64} << 30;
  if (kv_elems > kMaxKvBytes / (2 * sizeof(float))) {
    return Status(StatusCode::kOutOfMemory,
                  "KV cache for n_ctx " + std::to_string(c.n_ctx) + " would need more than 64 GiB");
  }
  try {
    c.k_cache.reset(new float[kv_elems]);
    c.v_cache.reset(new float[kv_elems]);
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
    }
    c.logits.resize(h.n_vocab);
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory, "cannot allocate the context buffers for n_ctx " +
                                                std::to_string(c.n_ctx));
  }

  // One work size fits every matmul of the model at n_batch rows.
  size_t work = 0;
  auto consider = [&](const WeightMatrix& w) {
    work = std::max(work, kernels::matmul_work_bytes(w.type, c.n_batch, w.row_len));
  };
  consider(model->output());
  for (int32_t il = 0; il < h.n_layer; ++il) {
    const LayerWeights& L = model->layer(il);
    for (const WeightMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down}) {
      consider(*w);
    }
  }
  c.macs_per_token = static_cast<double>(model->output().n_rows) * model->output().row_len;
  for (int32_t il = 0; il < h.n_layer; ++il) {
    const LayerWeights& L = model->layer(il);
    for (const WeightMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down}) {
      c.macs_per_token += static_cast<double>(w->n_rows) * w->row_len;
    }
  }
  c.pool = std::make_unique<ThreadPool>(options.n_threads);
  try {
    c.ts.resize(c.pool->n_threads());
    for (auto& t : c.ts) {
      t.act.resize(nb * std::max<size_t>(h.n_embd, h.n_ff));
      t.scores.resize(static_cast<size_t>(h.n_head / h.n_head_kv) * c.n_ctx);
      for (auto& slot : t.work) {
        slot = aligned_bytes(work);
        if (!slot) throw std::bad_alloc();
      }
    }
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory, "cannot allocate per-thread scratch buffers");
  }
  c.model = std::move(model);
  return std::unique_ptr<Context>(new Context(std::move(impl)));
}

Status Context::eval(std::span<const int32_t> tokens) {
  Impl& c = *impl_;
  const ModelHparams& h = *c.hp;
  if (tokens.empty()) return invalid_argument("eval: no tokens");
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= h.n_vocab) {
      return invalid_argument("eval: token id " + std::to_string(tokens[i]) + " at index " +
                              std::to_string(i) + " is outside the vocabulary [0, " +
                              std::to_string(h.n_vocab) + ")");
    }
  }
  if (tokens.size() > static_cast<size_t>(c.n_ctx - c.n_past)) {
    return invalid_argument("eval: context full: " + std::to_string(c.n_past) + " cached + " +
                            std::to_string(tokens.size()) + " new tokens exceed n_ctx " +
                            std::to_string(c.n_ctx));
  }
  const int32_t n_total = static_cast<int32_t>(tokens.size());
  if (c.all_logits) {
    try {
      c.logits.resize(static_cast<size_t>(n_total) * h.n_vocab);
    } catch (const std::bad_alloc&) {
      return Status(StatusCode::kOutOfMemory, "eval: cannot allocate logits for " +
                                                  std::to_string(n_total) + " positions");
    }
  }
  c.n_logits = 0;
  for (int32_t done = 0; done < n_total;) {
    const int32_t n = std::min(c.n_batch, n_total - done);
    const bool last = done + n == n_total;
    float* out = nullptr;
    if (c.all_logits) {
      out = c.logits.data() + static_cast<size_t>(done) * h.n_vocab;
    } else if (last) {
      out = c.logits.data();
    }
    c.forward(tokens.data() + done, n, out, c.all_logits);
    c.n_past += n;
    done += n;
  }
  c.n_logits = c.all_logits ? n_total : 1;
  return Status::ok();
}

std::span<const float> Context::logits(int32_t i) const {
  const Impl& c = *impl_;
  const size_t nv = static_cast<size_t>(c.hp->n_vocab);
  if (c.n_logits == 0) return {};
  if (i == -1) i = c.n_logits - 1;
  if (i < 0 || i >= c.n_logits) return {};
  return {c.logits.data() + static_cast<size_t>(i) * nv, nv};
}

int32_t Context::n_logits() const { return impl_->n_logits; }
int32_t Context::n_past() const { return impl_->n_past; }
int32_t Context::n_ctx() const { return impl_->n_ctx; }
int32_t Context::n_threads() const { return impl_->pool->n_threads(); }
const Model& Context::model() const { return *impl_->model; }

void Context::reset() {
  impl_->n_past = 0;
  impl_->n_logits = 0;
}

Status Context::truncate(int32_t n) {
  if (n < 0 || n > impl_->n_past) {
    return invalid_argument("truncate: " + std::to_string(n) + " is outside [0, n_past = " +
                            std::to_string(impl_->n_past) + "]");
  }
  impl_->n_past = n;
  impl_->n_logits = 0;
  return Status::ok();
}

}  // namespace llmt
