// llama and mistral: binding of the llama layout and the llama family's fused forward pass, also
// run by qwen2 (q/k/v biases) and qwen3 (per-head q/k RMSNorm), which bind their own layers.
// Llama 3 RoPE scaling: rope_freqs.weight divides the rotation frequencies; a missing
// output.weight ties the output to token_embd.
//
// One forward pass over a chunk of n batch entries, token i of sequence seq_i at position pos_i
// (activations row-major, one row per token; xb is each thread's private normalized copy):
//   x   [n, n_embd]      = token_embd rows
//   per layer:
//     xb  [n, n_embd]    = rms_norm(x) * attn_norm
//     q   [n, q_dim]     = xb · Wq^T (+ bq), k/v [n, kv_dim] = xb · Wk^T / Wv^T (+ bk / bv)
//     (qwen3: q, k per head = rms_norm(.) * q_norm / k_norm)
//     rope(q), rope(k); k, v -> the cache rows of (layer, kv_head, seq_i, pos_i): block
//                          table_i[pos_i / block_size], row pos_i % block_size
//     att [n, q_dim]     = softmax(q k^T / sqrt(head_dim)) v per head, over seq_i's cached
//                          positions 0..pos_i, read through table_i

//     x  += att · Wo^T
//     xb  = rms_norm(x) * ffn_norm
//     x  += (silu(xb · Wgate^T) * (xb · Wup^T)) · Wdown^T
//   logits [rows, n_vocab] = (rms_norm(x) * output_norm) · Wout^T for the rows with want_logits
// Batch invariance: nothing above mixes tokens (no reduction runs across rows; attention reads
// only the token's own sequence, in position order, whatever the work split), so each token's
// results are bitwise independent of the rest of the batch, of chunking and of the thread count.
// Every step is one ThreadPool::run(). Each thread normalizes and quantizes a matmul's whole input
// privately and computes its share of the output rows, so a layer takes 6 runs when decoding
// (norm+QKV, rope+cache, attention, Wo, norm+gate/up, SwiGLU+down) and 7 in prefill.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "model/context-state.h"
#include "model/model-impl.h"

namespace llmt {

// Binds the llama layout; qwen2 adds biases (optional here, as llama files may carry them).
Status bind_llama(Binder& b, ModelHparams& hp, ModelWeights& w) {
  const int64_t n_embd = hp.n_embd;
  LLMT_RETURN_IF_ERROR(bind_embd_output(b, hp, w, /*norm_bias=*/false));
  // Llama 3.1+: rope_freqs.weight [n_rot/2] divides each rotation frequency.
  LLMT_ASSIGN_OR_RETURN(w.rope_factors, b.vector("rope_freqs.weight", hp.n_rot / 2, true));
  w.layers.resize(hp.n_layer);
  for (int32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = w.layers[il];
    LLMT_ASSIGN_OR_RETURN(l.attn_norm, b.vector(blk(il, "attn_norm.weight"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.wq, b.matrix(blk(il, "attn_q.weight"), n_embd, hp.q_dim()));
    LLMT_ASSIGN_OR_RETURN(l.wk, b.matrix(blk(il, "attn_k.weight"), n_embd, hp.kv_dim()));
    LLMT_ASSIGN_OR_RETURN(l.wv, b.matrix(blk(il, "attn_v.weight"), n_embd, hp.kv_dim()));
    LLMT_ASSIGN_OR_RETURN(l.wo, b.matrix(blk(il, "attn_output.weight"), hp.q_dim(), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.bq, b.vector(blk(il, "attn_q.bias"), hp.q_dim(), true));
    LLMT_ASSIGN_OR_RETURN(l.bk, b.vector(blk(il, "attn_k.bias"), hp.kv_dim(), true));
    LLMT_ASSIGN_OR_RETURN(l.bv, b.vector(blk(il, "attn_v.bias"), hp.kv_dim(), true));
    LLMT_ASSIGN_OR_RETURN(l.ffn_norm, b.vector(blk(il, "ffn_norm.weight"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_gate, b.matrix(blk(il, "ffn_gate.weight"), n_embd, hp.n_ff));
    LLMT_ASSIGN_OR_RETURN(l.ffn_up, b.matrix(blk(il, "ffn_up.weight"), n_embd, hp.n_ff));
    LLMT_ASSIGN_OR_RETURN(l.ffn_down, b.matrix(blk(il, "ffn_down.weight"), hp.n_ff, n_embd));
  }
  // Mixture-of-experts files carry expert tensors instead of ffn_gate etc.; those fail above.
  collect_matrices(w);
  return Status::ok();
}

namespace {

// Above this many rows the elementwise SwiGLU is split over threads in its own run instead of
// being recomputed by every thread.
constexpr int32_t kFuseRows = 8;

// One forward pass of forward_llama(): the batch and how it runs.
struct LlamaPass {
  ContextState& c;
  const Context::BatchEntry* e;
  int32_t n;
  const std::span<const int32_t>* tables;
  bool single;  // run on the calling thread (a batch too small to share)
};

// Fills the RoPE table, the attention order and the logits rows of the batch and embeds its
// tokens into x; returns the number of rows that want logits.
int32_t llama_prepare(const LlamaPass& p) {
  ContextState& c = p.c;
  const Context::BatchEntry* e = p.e;
  const int32_t n = p.n;
  const ModelHparams& h = *c.hp;
  const Model& m = *c.model;
  const int64_t n_embd = h.n_embd;
  auto& att_order = c.att_order;
  auto& out_rows = c.out_rows;
  auto& x = c.x;
  // Rotation angles for each row's position (cheap; on the calling thread).
  c.rope_table(e, n, c.inv_freq, h.rope_freq_scale, 1.0f, c.rope_cs.data());
  // Attention work goes longest first so the short items fill in at the end.
  for (int32_t i = 0; i < n; ++i) att_order[i] = i;
  std::stable_sort(att_order.begin(), att_order.begin() + n,
                   [e](int32_t a, int32_t b) { return e[a].pos > e[b].pos; });
  int32_t n_out = 0;
  for (int32_t i = 0; i < n; ++i) {
    if (e[i].want_logits) out_rows[n_out++] = i;
  }
  if (n <= kFuseRows) {
    for (int32_t i = 0; i < n; ++i) m.embed_token(e[i].token, x.data() + i * n_embd);
  } else {
    c.par(p.single, [&](int ith, int nth) {
      int64_t b, end;
      split_range(n, ith, nth, &b, &end);
      for (int64_t i = b; i < end; ++i) m.embed_token(e[i].token, x.data() + i * n_embd);
    });
  }
  return n_out;
}

// Q, K, V of rms_norm(x + pending) * attn_norm of layer L.
void llama_qkv(const LlamaPass& p, const LayerWeights& L, const float* pending) {
  ContextState& c = p.c;
  const int32_t n = p.n;
  const ModelHparams& h = *c.hp;
  const int64_t n_embd = h.n_embd;
  auto& x = c.x;
  auto& ts = c.ts;
  auto& q = c.q;
  auto& k = c.k;
  auto& v = c.v;
  c.par(p.single, [&](int ith, int nth) {
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
    c.matmul_local(L.wq, xn, n, q.data(), ith, nth, 0);
    c.matmul_local(L.wk, xn, n, k.data(), ith, nth, 1, &L.wq, 0);
    c.matmul_local(L.wv, xn, n, v.data(), ith, nth, 2, &L.wq, 0);
  });
}

// Own rows of layer il: fold pending into x; biases, RoPE, K/V into the cache.
void llama_rope_cache(const LlamaPass& p, int32_t il, const LayerWeights& L, const float* pending) {
  ContextState& c = p.c;
  const Context::BatchEntry* e = p.e;
  const int32_t n = p.n;
  const std::span<const int32_t>* tables = p.tables;
  const ModelHparams& h = *c.hp;
  const int64_t n_embd = h.n_embd;
  const int64_t q_dim = h.q_dim();
  const int64_t kv_dim = h.kv_dim();
  const int32_t hd = h.head_dim;
  const bool f16_kv = c.kv_type == KvType::kF16;
  const int32_t n_rot = h.n_rot;
  const bool neox = h.rope_type == RopeType::kNeox;
  const size_t v_offset = c.v_offset;
  const ops::OpsTable* ot = c.ot;
  auto& rope_cs = c.rope_cs;
  auto& x = c.x;
  auto& q = c.q;
  auto& k = c.k;
  auto& v = c.v;
  auto& kv_pool = c.kv_pool;
  c.par(p.single, [&](int ith, int nth) {
    int64_t b, end;
    split_range(n, ith, nth, &b, &end);
    for (int64_t i = b; i < end; ++i) {
      if (pending) ops::add(x.data() + i * n_embd, pending + i * n_embd, n_embd);
      float* qr = q.data() + i * q_dim;
      float* kr = k.data() + i * kv_dim;
      float* vr = v.data() + i * kv_dim;
      qkv_bias_and_norm(L, h, qr, kr, vr);
      const float* cs = rope_cs.data() + i * n_rot;
      ops::rope(qr, h.n_head, hd, n_rot, cs, neox);
      ops::rope(kr, h.n_head_kv, hd, n_rot, cs, neox);
      for (int32_t g = 0; g < h.n_head_kv; ++g) {
        uint8_t* kc = kv_pool.data() + c.kv_offset(il, g, tables[e[i].seq_id], e[i].pos);
        uint8_t* vc = kc + v_offset;
        if (f16_kv) {
          ot->to_f16(kr + g * hd, reinterpret_cast<uint16_t*>(kc), hd);
          ot->to_f16(vr + g * hd, reinterpret_cast<uint16_t*>(vc), hd);
        } else {
          std::memcpy(kc, kr + g * hd, hd * sizeof(float));
          std::memcpy(vc, vr + g * hd, hd * sizeof(float));
        }
      }
    }
  });
}

// Attention of layer il into att. Work items are (row, KV head) with the KV head's query heads
// together (they share the K/V reads), or (row, query head) when that gives too few items to keep
// every thread busy. Rows go longest first (att_order) and threads claim items one at a time from
// att_next, so uneven sequence lengths balance. Per-head results do not depend on the grouping or
// on which thread computes them.
void llama_attention(const LlamaPass& p, int32_t il) {
  ContextState& c = p.c;
  const Context::BatchEntry* e = p.e;
  const int32_t n = p.n;
  const bool single = p.single;
  const std::span<const int32_t>* tables = p.tables;
  const ModelHparams& h = *c.hp;
  ThreadPool* pool = c.pool.get();
  const int64_t q_dim = h.q_dim();
  const int32_t hd = h.head_dim;
  const bool f16_kv = c.kv_type == KvType::kF16;
  const int32_t group = h.n_head / h.n_head_kv;
  const float att_scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t v_offset = c.v_offset;
  const size_t block_bytes = c.block_bytes;
  const int32_t block_size = c.block_size;
  const ops::OpsTable* ot = c.ot;
  auto& att_order = c.att_order;
  auto& ts = c.ts;
  auto& q = c.q;
  auto& kv_pool = c.kv_pool;
  auto& att = c.att;
  auto& att_next = c.att_next;
  const int32_t per_item =
      static_cast<int64_t>(n) * h.n_head_kv >= 2 * (single ? 1 : pool->n_threads()) ? group : 1;
  const int32_t items_per_row = h.n_head / per_item;
  const int64_t n_items = static_cast<int64_t>(n) * items_per_row;
  att_next.store(0, std::memory_order_relaxed);
  c.par(single, [&](int ith, int /*nth*/) {
    float* sc = ts[ith].scores.data();
    for (;;) {
      const int64_t item = att_next.fetch_add(1, std::memory_order_relaxed);
      if (item >= n_items) break;
      const int32_t i = att_order[item / items_per_row];
      const int32_t h0 = static_cast<int32_t>(item % items_per_row) * per_item;
      const int32_t g = h0 / group;
      const int32_t n_kv = e[i].pos + 1;
      const int64_t off = i * q_dim + static_cast<int64_t>(h0) * hd;
      const uint8_t* kc = kv_pool.data() + c.kv_head_offset(il, g);
      const uint8_t* vc = kc + v_offset;
      const int32_t* table = tables[e[i].seq_id].data();
      (f16_kv ? ot->attend_paged_f16 : ot->attend_paged)(q.data() + off, per_item, kc, vc, table,
                                                         block_bytes, block_size, n_kv, hd,
                                                         att_scale, sc, att.data() + off);
    }
  });
}

// attn_out = att · Wo^T, x += attn_out, then ffn_out = (silu(gate) * up) · Wdown^T of
// rms_norm(x + attn_out) * ffn_norm, for layer L.
void llama_ffn(const LlamaPass& p, const LayerWeights& L) {
  ContextState& c = p.c;
  const int32_t n = p.n;
  const bool single = p.single;
  const ModelHparams& h = *c.hp;
  const int64_t n_embd = h.n_embd;
  const int64_t n_ff = h.n_ff;
  const ops::OpsTable* ot = c.ot;
  auto& x = c.x;
  auto& ts = c.ts;
  auto& att = c.att;
  auto& attn_out = c.attn_out;
  auto& gate = c.gate;
  auto& up = c.up;
  auto& ffn_out = c.ffn_out;
  c.par(single, [&](int ith, int nth) {
    c.matmul_local(L.wo, att.data(), n, attn_out.data(), ith, nth, 0);
  });

  // Gate and up of rms_norm(x + attn_out) * ffn_norm.
  c.par(single, [&](int ith, int nth) {
    float* xn = ts[ith].act.data();
    for (int64_t i = 0; i < n; ++i) {
      const float* xr = x.data() + i * n_embd;
      const float* ar = attn_out.data() + i * n_embd;
      float* dst = xn + i * n_embd;
      for (int64_t j = 0; j < n_embd; ++j) dst[j] = xr[j] + ar[j];
      ops::rms_norm(dst, L.ffn_norm, dst, n_embd, h.rms_eps);
    }
    c.matmul_local(L.ffn_gate, xn, n, gate.data(), ith, nth, 0);
    c.matmul_local(L.ffn_up, xn, n, up.data(), ith, nth, 1, &L.ffn_gate, 0);
  });

  // Own rows: x += attn_out. Then ffn_out = (silu(gate) * up) · Wdown^T.
  if (n <= kFuseRows) {
    c.par(single, [&](int ith, int nth) {
      int64_t b, end;
      split_range(n, ith, nth, &b, &end);
      for (int64_t i = b; i < end; ++i) {
        ops::add(x.data() + i * n_embd, attn_out.data() + i * n_embd, n_embd);
      }
      float* g = ts[ith].act.data();
      std::memcpy(g, gate.data(), static_cast<size_t>(n) * n_ff * sizeof(float));
      // Row by row: the AVX2 silu_mul treats a row's tail (n_ff % 8) apart, so calling it per
      // row keeps every value independent of n.
      for (int64_t i = 0; i < n; ++i) ot->silu_mul(g + i * n_ff, up.data() + i * n_ff, n_ff);
      c.matmul_local(L.ffn_down, g, n, ffn_out.data(), ith, nth, 0);
    });
  } else {
    c.par(single, [&](int ith, int nth) {
      int64_t b, end;
      split_range(n, ith, nth, &b, &end);
      for (int64_t i = b; i < end; ++i) {
        ops::add(x.data() + i * n_embd, attn_out.data() + i * n_embd, n_embd);
        ot->silu_mul(gate.data() + i * n_ff, up.data() + i * n_ff, n_ff);
      }
    });
    c.par(single, [&](int ith, int nth) {
      c.matmul_local(L.ffn_down, gate.data(), n, ffn_out.data(), ith, nth, 0);
    });
  }
}

// The final hidden states rms_norm(x + pending) * output_norm of the rows with want_embd into
// c.embd_out, and the logits of the n_out rows of out_rows into logits_out.
void llama_output(const LlamaPass& p, const float* pending, int32_t n_out, float* logits_out) {
  ContextState& c = p.c;
  const Context::BatchEntry* e = p.e;
  const int32_t n = p.n;
  const ModelHparams& h = *c.hp;
  const int64_t n_embd = h.n_embd;
  auto& out_rows = c.out_rows;
  auto& x = c.x;
  auto& ts = c.ts;
  // Final hidden states rms_norm(x + ffn_out) * output_norm of the rows with want_embd.
  if (c.embd_out) {
    float* dst = c.embd_out;
    for (int32_t i = 0; i < n; ++i) {
      if (!e[i].want_embd) continue;
      const float* xr = x.data() + i * n_embd;
      const float* pr = pending + i * n_embd;
      for (int64_t j = 0; j < n_embd; ++j) dst[j] = xr[j] + pr[j];
      ops::rms_norm(dst, c.w->output_norm, dst, n_embd, h.rms_eps);
      dst += n_embd;
    }
  }
  if (n_out == 0) return;  // only the KV cache was wanted
  // Logits of rms_norm(x + ffn_out) * output_norm for the wanted rows.
  const int64_t n_rows = n_out;
  c.par(p.single, [&](int ith, int nth) {
    float* xn = ts[ith].act.data();
    for (int64_t r = 0; r < n_rows; ++r) {
      const float* xr = x.data() + out_rows[r] * n_embd;
      const float* pr = pending + out_rows[r] * n_embd;
      float* dst = xn + r * n_embd;
      for (int64_t j = 0; j < n_embd; ++j) dst[j] = xr[j] + pr[j];
      ops::rms_norm(dst, c.w->output_norm, dst, n_embd, h.rms_eps);
    }
    c.matmul_local(c.w->output, xn, n_rows, logits_out, ith, nth, 0);
  });
}

}  // namespace

void forward_llama(ContextState& c, const Context::BatchEntry* e, int32_t n,
                   const std::span<const int32_t>* tables, float* logits_out) {
  // A forward pass smaller than this many multiply-adds runs on the calling thread alone: waking
  // and synchronizing the pool (~30-80 runs per pass) costs more than it saves, and much more
  // when other processes compete for the cores.
  constexpr double kMinParallelMacs = 8e6;
  const bool single = c.pool->n_threads() == 1 || c.macs_per_token * n < kMinParallelMacs;
  const LlamaPass p{c, e, n, tables, single};
  const int32_t n_out = llama_prepare(p);

  // The residual stream is x + pending (pending = the previous FFN output, or nothing before the
  // first layer). Threads read x and pending to normalize privately, and fold pending into x
  // only in a later run where no thread reads x.
  const float* pending = nullptr;
  for (int32_t il = 0; il < c.hp->n_layer; ++il) {
    const LayerWeights& L = c.w->layers[il];
    llama_qkv(p, L, pending);
    llama_rope_cache(p, il, L, pending);
    llama_attention(p, il);
    llama_ffn(p, L);
    pending = c.ffn_out.data();
  }
  llama_output(p, pending, n_out, logits_out);
}

}  // namespace llmt
