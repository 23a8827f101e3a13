// The generic pre-norm decoder forward pass, assembled from shared ops and configured by the
// architecture's ModelWeights (phi3, gemma2, gemma3, gpt2). One forward pass over n entries:
//   x [n, n_embd] = token_embd rows (x embd_scale) (+ position_embd[pos])
//   per layer:
//     xb = norm(x) * attn_norm (+ bias)            RMSNorm or LayerNorm (NormKind)
//     q, k, v = xb · Wq/Wk/Wv^T, or split from xb · Wqkv^T (+ biases)
//     q, k per head: rms_norm * q_norm / k_norm (gemma3); rope(q), rope(k) with the layer's
//       table (sliding-window layers may have their own base); k, v -> the cache
//     att = softmax(cap(q k^T * q_scale)) v over positions [p0, pos], p0 = pos + 1 - n_swa on
//       sliding-window layers (else 0)
//     a = att · Wo^T (+ bo), rms_norm(a) * post_attn_norm (gemma); x += a
//     xb = norm(x) * ffn_norm (+ bias)
//     f = down(act(xb)) (+ bias): silu / gelu GLU of gate and up (phi3: gate|up fused), or
//       gelu(up + b); rms_norm(f) * post_ffn_norm (gemma); x += f
//   logits = cap(norm(x) * output_norm (+ bias) · Wout^T)
// Every step is computed per token row (batch invariance holds as in the llama pass): matmuls fix
// each (row, token) reduction, attention reads only the token's own sequence in position order.
// Pool runs: a layer takes 6 when decoding (norm + QKV, RoPE + cache, attention, Wo, norm +
// gate/up, activation + down) and 7 in prefill (the activation split over threads in its own
// run), as the llama pass: the attention and FFN outputs (a, f above) are added to x lazily, in
// the next run that splits rows over threads, and the runs before that resolve x + a (+ f)
// privately per row (Pending), with the same float operations as adding them at once.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "model/context-state.h"
#include "model/model-impl.h"

namespace llmt {

namespace {

inline void norm_row(const ContextState& c, const float* x, const float* g, const float* b,
                     float* y, int64_t n) {
  if (c.w->norm == NormKind::kLayer) {
    c.ot->layer_norm(x, g, b, y, n, c.w->norm_eps);
  } else {
    ops::rms_norm(x, g, y, n, c.hp->rms_eps);
  }
}

// A block's output not yet added to the residual stream: row i of the delta is
// post_norm(buf[i] + bias) (bias and post_norm optional).
struct Delta {
  const float* buf = nullptr;  // [n, n_embd]
  const float* bias = nullptr;
  const float* post_norm = nullptr;
};

// The residual stream is x + d[0] + d[1], added in that order: block outputs not yet folded
// into x. Folding a delta into x needs a run in which no thread reads x, so instead of a run of
// its own the fold rides in the next run that splits rows over threads (RoPE / cache, or the
// FFN activation), and the runs in between (which normalize x) resolve the rows privately.
struct Pending {
  Delta d[2];
  int count = 0;
  void push(const Delta& delta) { d[count++] = delta; }
};

// dst = row i of x + the pending deltas: bitwise the row that folding them into x one by one
// gives (dst may be x's own row i: the fold). tmp: n_embd floats of scratch, not dst.
void resolve_row(const ContextState& c, const Pending& p, int64_t i, float* dst, float* tmp) {
  const int64_t n_embd = c.hp->n_embd;
  const float* xr = c.x.data() + i * n_embd;
  if (dst != xr) std::memcpy(dst, xr, n_embd * sizeof(float));
  for (int k = 0; k < p.count; ++k) {
    const Delta& d = p.d[k];
    const float* src = d.buf + i * n_embd;
    if (d.bias || d.post_norm) {
      std::memcpy(tmp, src, n_embd * sizeof(float));
      if (d.bias) ops::add(tmp, d.bias, n_embd);
      if (d.post_norm) ops::rms_norm(tmp, d.post_norm, tmp, n_embd, c.hp->rms_eps);
      src = tmp;
    }
    ops::add(dst, src, n_embd);
  }
}

// xn rows [0, n) = norm(x + pending) * g (+ b), on the calling thread (every thread of a run
// normalizes the whole input of its matmul privately).
void norm_rows(const ContextState& c, const Pending& p, int32_t n, const float* g, const float* b,
               float* xn, float* tmp) {
  const int64_t n_embd = c.hp->n_embd;
  for (int64_t i = 0; i < n; ++i) {
    float* dst = xn + i * n_embd;
    if (p.count == 0) {
      norm_row(c, c.x.data() + i * n_embd, g, b, dst, n_embd);
    } else {
      resolve_row(c, p, i, dst, tmp);
      norm_row(c, dst, g, b, dst, n_embd);
    }
  }
}

// Folds the pending deltas into x's rows [b, end) (the caller's share of a row-split run).
void fold_rows(ContextState& c, const Pending& p, int64_t b, int64_t end, float* tmp) {
  if (p.count == 0) return;
  float* x = c.x.data();
  for (int64_t i = b; i < end; ++i) resolve_row(c, p, i, x + i * c.hp->n_embd, tmp);
}

// The state one layer's halves share: the batch and its derived sizes.
struct LayerPass {
  ContextState& c;
  const Context::BatchEntry* e;
  int32_t n;
  const std::span<const int32_t>* tables;
  bool single;  // run on the calling thread (a batch too small to share)
};

// Attention of layer il over norm(x + pending): K/V of the batch into the cache, pending folded
// into x, and on return pending = {post_attn_norm(att · Wo^T + bo)}.
void attention_block(const LayerPass& p, int32_t il, Pending& pending) {
  ContextState& c = p.c;
  const ModelHparams& h = *c.hp;
  const ModelWeights& w = *c.w;
  const Context::BatchEntry* e = p.e;
  const int32_t n = p.n;
  const bool single = p.single;
  const LayerWeights& L = w.layers[il];
  const std::span<const int32_t>* tables = p.tables;
  const int64_t q_dim = h.q_dim();
  const int64_t kv_dim = h.kv_dim();
  const int32_t hd = h.head_dim;
  const int32_t n_rot = h.n_rot;
  const bool neox = h.rope_type == RopeType::kNeox;
  const bool f16_kv = c.kv_type == KvType::kF16;
  const int32_t group = h.n_head / h.n_head_kv;
  const float q_scale = w.q_scale > 0.0f ? w.q_scale : 1.0f / std::sqrt(static_cast<float>(hd));
  const bool fused_qkv = L.wqkv.data != nullptr;

  // Q, K, V of norm(x + pending).
  c.par(single, [&](int ith, int nth) {
    float* xn = c.ts[ith].act.data();
    norm_rows(c, pending, n, L.attn_norm, L.attn_norm_b, xn, c.ts[ith].row.data());
    if (fused_qkv) {
      c.matmul_local(L.wqkv, xn, n, c.fused.data(), ith, nth, 0);
    } else {
      c.matmul_local(L.wq, xn, n, c.q.data(), ith, nth, 0);
      c.matmul_local(L.wk, xn, n, c.k.data(), ith, nth, 1, &L.wq, 0);
      c.matmul_local(L.wv, xn, n, c.v.data(), ith, nth, 2, &L.wq, 0);
    }
  });

  // This layer's K/V: the main pool, or the window pool for a sliding-window layer kept apart.
  const ContextState::LayerKv lkv = c.layer_kv(il, tables);
  // Own rows: fold pending into x; split, biases, q/k norms, RoPE, K/V into the cache.
  const float* cs_layer = L.swa && !c.rope_cs_swa.empty() ? c.rope_cs_swa.data() : c.rope_cs.data();
  c.par(single, [&](int ith, int nth) {
    int64_t b, end;
    split_range(n, ith, nth, &b, &end);
    fold_rows(c, pending, b, end, c.ts[ith].row.data());
    for (int64_t i = b; i < end; ++i) {
      float* qr = c.q.data() + i * q_dim;
      float* kr = c.k.data() + i * kv_dim;
      float* vr = c.v.data() + i * kv_dim;
      if (fused_qkv) {
        float* f = c.fused.data() + i * L.wqkv.n_rows;
        if (L.bqkv) ops::add(f, L.bqkv, L.wqkv.n_rows);
        std::memcpy(qr, f, q_dim * sizeof(float));
        std::memcpy(kr, f + q_dim, kv_dim * sizeof(float));
        std::memcpy(vr, f + q_dim + kv_dim, kv_dim * sizeof(float));
      }
      qkv_bias_and_norm(L, h, qr, kr, vr);
      if (n_rot > 0) {
        const float* cs = cs_layer + i * n_rot;
        ops::rope(qr, h.n_head, hd, n_rot, cs, neox);
        ops::rope(kr, h.n_head_kv, hd, n_rot, cs, neox);
      }
      for (int32_t g = 0; g < h.n_head_kv; ++g) {
        uint8_t* kc = lkv.base + c.kv_offset(il, g, lkv.tables[e[i].seq_id], e[i].pos);
        uint8_t* vc = kc + lkv.v_offset;
        if (f16_kv) {
          c.ot->to_f16(kr + g * hd, reinterpret_cast<uint16_t*>(kc), hd);
          c.ot->to_f16(vr + g * hd, reinterpret_cast<uint16_t*>(vc), hd);
        } else {
          std::memcpy(kc, kr + g * hd, hd * sizeof(float));
          std::memcpy(vc, vr + g * hd, hd * sizeof(float));
        }
      }
    }
  });
  pending.count = 0;

  // Attention, (row, KV head) items claimed longest first. Without soft-capping, the ISA's
  // paged kernel (global layers) or its window variant (sliding-window layers: positions
  // [pos + 1 - n_swa, pos]); with soft-capping (gemma2) the span kernel.
  const bool window = L.swa && h.n_swa > 0;
  const bool plain = !window && w.attn_softcap == 0.0f;
  const int64_t n_items = static_cast<int64_t>(n) * h.n_head_kv;
  c.att_next.store(0, std::memory_order_relaxed);
  c.par(single, [&](int ith, int /*nth*/) {
    float* sc = c.ts[ith].scores.data();
    for (;;) {
      const int64_t item = c.att_next.fetch_add(1, std::memory_order_relaxed);
      if (item >= n_items) break;
      const int32_t i = c.att_order[item / h.n_head_kv];
      const int32_t g = static_cast<int32_t>(item % h.n_head_kv);
      const int32_t p1 = e[i].pos + 1;
      const int64_t off = i * q_dim + static_cast<int64_t>(g) * group * hd;
      const uint8_t* kc = lkv.base + c.kv_head_offset(il, g);
      const uint8_t* vc = kc + lkv.v_offset;
      const int32_t* table = lkv.tables[e[i].seq_id].data();
      if (plain) {
        (f16_kv ? c.ot->attend_paged_f16 : c.ot->attend_paged)(c.q.data() + off, group, kc, vc,
                                                               table, lkv.stride, c.block_size, p1,
                                                               hd, q_scale, sc, c.att.data() + off);
      } else if (w.attn_softcap == 0.0f) {
        const int32_t p0 = std::max(0, p1 - h.n_swa);
        (f16_kv ? c.ot->attend_window_f16 : c.ot->attend_window)(
            c.q.data() + off, group, kc, vc, table, lkv.stride, c.block_size, p0, p1, hd, q_scale,
            sc, c.att.data() + off);
      } else {
        ops::AttendSpan a;
        a.k_base = kc;
        a.v_base = vc;
        a.block_table = table;
        a.block_stride = lkv.stride;
        a.block_size = c.block_size;
        a.row_stride = c.row_bytes;
        a.f16 = f16_kv;
        a.hd = hd;
        a.scale = q_scale;
        a.softcap = w.attn_softcap;
        a.dot = c.ot->dot;
        a.axpy = c.ot->axpy;
        const int32_t p0 = window ? std::max(0, p1 - h.n_swa) : 0;
        ops::attend_span(a, c.q.data() + off, group, p0, p1, sc, c.att.data() + off);
      }
    }
  });

  c.par(single, [&](int ith, int nth) {
    c.matmul_local(L.wo, c.att.data(), n, c.attn_out.data(), ith, nth, 0);
  });
  pending.push({c.attn_out.data(), L.bo, L.post_attn_norm});
}

// The FFN of layer il over norm(x + pending): pending folded into x, and on return pending =
// {post_ffn_norm(down(act(.)) + b)}.
void ffn_block(const LayerPass& p, int32_t il, Pending& pending) {
  ContextState& c = p.c;
  const ModelHparams& h = *c.hp;
  const ModelWeights& w = *c.w;
  const int32_t n = p.n;
  const bool single = p.single;
  const LayerWeights& L = w.layers[il];
  const int64_t n_ff = h.n_ff;
  const bool fused_up = L.ffn_up.n_rows == 2 * n_ff;
  c.par(single, [&](int ith, int nth) {
    float* xn = c.ts[ith].act.data();
    norm_rows(c, pending, n, L.ffn_norm, L.ffn_norm_b, xn, c.ts[ith].row.data());
    if (fused_up) {
      c.matmul_local(L.ffn_up, xn, n, c.fused.data(), ith, nth, 0);
    } else if (L.ffn_gate.data) {
      c.matmul_local(L.ffn_gate, xn, n, c.gate.data(), ith, nth, 0);
      c.matmul_local(L.ffn_up, xn, n, c.up.data(), ith, nth, 1, &L.ffn_gate, 0);
    } else {
      c.matmul_local(L.ffn_up, xn, n, c.up.data(), ith, nth, 0);
    }
  });
  // The activation of row i into dst [n_ff] (dst may be the row's own gate / up buffer).
  auto activate = [&](int64_t i, float* dst) {
    const float* gr = c.gate.data() + i * n_ff;
    const float* ur = c.up.data() + i * n_ff;
    if (fused_up) {
      gr = c.fused.data() + i * 2 * n_ff;
      ur = gr + n_ff;
    }
    if (w.ffn == FfnKind::kGelu) {
      if (dst != ur) std::memcpy(dst, ur, n_ff * sizeof(float));
      if (L.ffn_up_b) ops::add(dst, L.ffn_up_b, n_ff);
      c.ot->gelu(dst, n_ff);
      return;
    }
    if (dst != gr) std::memcpy(dst, gr, n_ff * sizeof(float));
    if (w.ffn == FfnKind::kSiluGlu) {
      c.ot->silu_mul(dst, ur, n_ff);
    } else {
      c.ot->gelu_mul(dst, ur, n_ff);
    }
  };
  // Above this many rows the activation is split over threads in its own run instead of being
  // recomputed by every thread (as in the llama pass).
  constexpr int32_t kFuseRows = 8;
  if (n <= kFuseRows) {
    // One run: fold pending into own rows of x; every thread activates all rows privately and
    // computes its share of down.
    c.par(single, [&](int ith, int nth) {
      int64_t b, end;
      split_range(n, ith, nth, &b, &end);
      fold_rows(c, pending, b, end, c.ts[ith].row.data());
      float* act = c.ts[ith].act.data();
      for (int64_t i = 0; i < n; ++i) activate(i, act + i * n_ff);
      c.matmul_local(L.ffn_down, act, n, c.ffn_out.data(), ith, nth, 0);
    });
  } else {
    float* act = w.ffn == FfnKind::kGelu ? c.up.data() : c.gate.data();
    c.par(single, [&](int ith, int nth) {
      int64_t b, end;
      split_range(n, ith, nth, &b, &end);
      fold_rows(c, pending, b, end, c.ts[ith].row.data());
      for (int64_t i = b; i < end; ++i) activate(i, act + i * n_ff);
    });
    c.par(single, [&](int ith, int nth) {
      c.matmul_local(L.ffn_down, act, n, c.ffn_out.data(), ith, nth, 0);
    });
  }
  pending.count = 0;
  pending.push({c.ffn_out.data(), L.ffn_down_b, L.post_ffn_norm});
}

}  // namespace

void qkv_bias_and_norm(const LayerWeights& L, const ModelHparams& h, float* q, float* k, float* v) {
  const int32_t hd = h.head_dim;
  if (L.bq) ops::add(q, L.bq, h.q_dim());
  if (L.bk) ops::add(k, L.bk, h.kv_dim());
  if (L.bv) ops::add(v, L.bv, h.kv_dim());
  if (L.q_norm) {
    for (int32_t hh = 0; hh < h.n_head; ++hh) {
      ops::rms_norm(q + hh * hd, L.q_norm, q + hh * hd, hd, h.rms_eps);
    }
  }
  if (L.k_norm) {
    for (int32_t g = 0; g < h.n_head_kv; ++g) {
      ops::rms_norm(k + g * hd, L.k_norm, k + g * hd, hd, h.rms_eps);
    }
  }
}

void forward_decoder(ContextState& c, const Context::BatchEntry* e, int32_t n,
                     const std::span<const int32_t>* tables, float* logits_out) {
  const ModelHparams& h = *c.hp;
  const ModelWeights& w = *c.w;
  const int64_t n_embd = h.n_embd;
  const int32_t n_rot = h.n_rot;
  constexpr double kMinParallelMacs = 8e6;
  const bool single = c.pool->n_threads() == 1 || c.macs_per_token * n < kMinParallelMacs;

  if (n_rot > 0) {
    c.rope_table(e, n, c.inv_freq, h.rope_freq_scale, w.rope_attn_factor, c.rope_cs.data());
    if (!c.inv_freq_swa.empty()) {
      c.rope_table(e, n, c.inv_freq_swa, w.rope_scale_swa, 1.0f, c.rope_cs_swa.data());
    }
  }
  for (int32_t i = 0; i < n; ++i) c.att_order[i] = i;
  std::stable_sort(c.att_order.begin(), c.att_order.begin() + n,
                   [e](int32_t a, int32_t b) { return e[a].pos > e[b].pos; });
  const int32_t n_out = c.collect_out_rows(e, n);

  // Embeddings.
  const auto pos_dq =
      w.pos_embd.data ? kernels::type_kernels(w.pos_embd.type, c.isa)->dequantize_row : nullptr;
  c.par(single, [&](int ith, int nth) {
    float* tmp = c.ts[ith].act.data();
    int64_t b, end;
    split_range(n, ith, nth, &b, &end);
    for (int64_t i = b; i < end; ++i) {
      float* xr = c.x.data() + i * n_embd;
      c.model->embed_token(e[i].token, xr);
      if (w.embd_scale > 0.0f) ops::scale(xr, n_embd, w.embd_scale);
      if (pos_dq) {
        pos_dq(static_cast<const uint8_t*>(w.pos_embd.data) +
                   static_cast<size_t>(e[i].pos) * w.pos_embd.row_bytes,
               tmp, n_embd);
        ops::add(xr, tmp, n_embd);
      }
    }
  });

  const LayerPass lp{c, e, n, tables, single};
  Pending pending;
  for (int32_t il = 0; il < h.n_layer; ++il) {
    attention_block(lp, il, pending);
    ffn_block(lp, il, pending);
  }

  // Final hidden states norm(x + pending) * output_norm (+ bias) of the rows with want_embd.
  if (c.embd_out) {
    float* dst = c.embd_out;
    for (int32_t i = 0; i < n; ++i) {
      if (!e[i].want_embd) continue;
      resolve_row(c, pending, i, dst, c.ts[0].row.data());
      norm_row(c, dst, w.output_norm, w.output_norm_b, dst, n_embd);
      dst += n_embd;
    }
  }
  if (n_out == 0) return;  // only the KV cache was wanted
  const int64_t n_rows = n_out;
  const int64_t n_vocab = h.n_vocab;
  c.par(single, [&](int ith, int nth) {
    float* xn = c.ts[ith].act.data();
    for (int64_t r = 0; r < n_rows; ++r) {
      float* dst = xn + r * n_embd;
      resolve_row(c, pending, c.out_rows[r], dst, c.ts[ith].row.data());
      norm_row(c, dst, w.output_norm, w.output_norm_b, dst, n_embd);
    }
    c.matmul_local(w.output, xn, n_rows, logits_out, ith, nth, 0);
  });
  if (w.final_softcap > 0.0f) {
    for (int64_t r = 0; r < n_rows; ++r)
      ops::softcap(logits_out + r * n_vocab, n_vocab, w.final_softcap);
  }
}

}  // namespace llmt
