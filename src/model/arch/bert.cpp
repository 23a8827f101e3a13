// bert: a bidirectional encoder. x = LayerNorm(token_embd + token_types[0] + position_embd);
// per layer, post-norm: x = LayerNorm(x + attn(x)), x = LayerNorm(x + down(gelu(up x + b)) + b),
// attention with q/k/v/output biases over every token of the token's own sequence (no mask, no
// RoPE). One pass may carry several sequences back to back (Context::embed_batch): the matmuls
// and norms run over all their rows at once, positions restart at 0 for each sequence and each
// token attends only to the tokens of its own sequence, so a sequence's states are bitwise the
// same alone or batched. The hidden states [n, n_embd] are left in ContextState::x for
// Context::embed() / embed_batch() to pool. No KV cache is used: K and V of the whole sequence
// are the activations of the pass itself.
#include <cmath>
#include <cstring>

#include "model/context-state.h"
#include "model/model-impl.h"

namespace llmt {

Status bind_bert(Binder& b, ModelHparams& hp, ModelWeights& w) {
  const GgufFile& g = b.gguf();
  const int64_t n_embd = hp.n_embd;
  LLMT_ASSIGN_OR_RETURN(double eps, optional_float(g, "bert.attention.layer_norm_epsilon", 1e-12));
  if (!(eps > 0.0 && eps < 1.0)) return corrupt(g.path() + ": layer_norm_epsilon out of range");
  w.norm = NormKind::kLayer;
  w.norm_eps = static_cast<float>(eps);
  LLMT_ASSIGN_OR_RETURN(auto causal, g.get_bool("bert.attention.causal"));
  if (causal && *causal) {
    return unsupported(g.path() + ": bert.attention.causal = true is not supported");
  }
  hp.causal = false;
  LLMT_ASSIGN_OR_RETURN(int64_t pooling, optional_int(g, "bert.pooling_type", 1));
  // Rank pooling (4) is llama.cpp's reranker / sequence classifier: the first token's state
  // through the classification head (bind_cls_head). Files that carry cls.* tensors with another
  // pooling are embedding models to llama.cpp too (it uses the head only for rank pooling): their
  // head is bound and checked but only Pooling::kRank, asked for explicitly, runs it.
  if (pooling < 0 || pooling > 4 || pooling == 3) {
    return unsupported(g.path() + ": bert.pooling_type " + std::to_string(pooling) +
                       " is not supported (0 none, 1 mean, 2 cls, 4 rank)");
  }
  hp.pooling = static_cast<Pooling>(pooling);
  LLMT_ASSIGN_OR_RETURN(w.token_embd, b.matrix("token_embd.weight", n_embd, hp.n_vocab));
  const GgufTensor* tt = g.find_tensor("token_types.weight");
  const int64_t n_types = tt && tt->shape.size() == 2 ? tt->shape[1] : 2;
  LLMT_ASSIGN_OR_RETURN(w.token_types, b.matrix("token_types.weight", n_embd, n_types));
  LLMT_ASSIGN_OR_RETURN(w.pos_embd, b.matrix("position_embd.weight", n_embd, hp.n_ctx_train));
  LLMT_ASSIGN_OR_RETURN(w.embd_norm, b.vector("token_embd_norm.weight", n_embd));
  LLMT_ASSIGN_OR_RETURN(w.embd_norm_b, b.vector("token_embd_norm.bias", n_embd));
  w.layers.resize(hp.n_layer);
  for (int32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = w.layers[il];
    LLMT_ASSIGN_OR_RETURN(l.wq, b.matrix(blk(il, "attn_q.weight"), n_embd, hp.q_dim()));
    LLMT_ASSIGN_OR_RETURN(l.bq, b.vector(blk(il, "attn_q.bias"), hp.q_dim()));
    LLMT_ASSIGN_OR_RETURN(l.wk, b.matrix(blk(il, "attn_k.weight"), n_embd, hp.kv_dim()));
    LLMT_ASSIGN_OR_RETURN(l.bk, b.vector(blk(il, "attn_k.bias"), hp.kv_dim()));
    LLMT_ASSIGN_OR_RETURN(l.wv, b.matrix(blk(il, "attn_v.weight"), n_embd, hp.kv_dim()));
    LLMT_ASSIGN_OR_RETURN(l.bv, b.vector(blk(il, "attn_v.bias"), hp.kv_dim()));
    LLMT_ASSIGN_OR_RETURN(l.wo, b.matrix(blk(il, "attn_output.weight"), hp.q_dim(), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.bo, b.vector(blk(il, "attn_output.bias"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.attn_norm, b.vector(blk(il, "attn_output_norm.weight"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.attn_norm_b, b.vector(blk(il, "attn_output_norm.bias"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_up, b.matrix(blk(il, "ffn_up.weight"), n_embd, hp.n_ff));
    LLMT_ASSIGN_OR_RETURN(l.ffn_up_b, b.vector(blk(il, "ffn_up.bias"), hp.n_ff));
    LLMT_ASSIGN_OR_RETURN(l.ffn_down, b.matrix(blk(il, "ffn_down.weight"), hp.n_ff, n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_down_b, b.vector(blk(il, "ffn_down.bias"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_norm, b.vector(blk(il, "layer_output_norm.weight"), n_embd));
    LLMT_ASSIGN_OR_RETURN(l.ffn_norm_b, b.vector(blk(il, "layer_output_norm.bias"), n_embd));
  }
  w.ffn = FfnKind::kGelu;
  LLMT_RETURN_IF_ERROR(bind_cls_head(b, hp, w));
  collect_matrices(w);
  return Status::ok();
}

Status bind_cls_head(Binder& b, ModelHparams& hp, ModelWeights& w) {
  const GgufFile& g = b.gguf();
  const int64_t n_embd = hp.n_embd;
  const GgufTensor* out = g.find_tensor("cls.output.weight");
  if (!out) {
    for (const char* name : {"cls.weight", "cls.bias", "cls.output.bias"}) {
      if (g.find_tensor(name)) {
        return corrupt(g.path() + ": tensor '" + name +
                       "' without cls.output.weight (an incomplete classification head)");
      }
    }
    if (hp.pooling == Pooling::kRank) {
      return corrupt(g.path() + ": " + hp.arch +
                     ".pooling_type is 4 (rank) but the file has no classification head "
                     "(cls.output.weight)");
    }
    return Status::ok();
  }
  // GGUF shape {n_embd, n_cls_out}; a single output may be stored as {n_embd}.
  const int64_t n_cls = out->shape.size() >= 2 ? out->shape[1] : 1;
  if (n_cls < 1 || n_cls > (int64_t{1} << 20)) {
    return corrupt(g.path() + ": tensor 'cls.output.weight' has " + std::to_string(n_cls) +
                   " outputs");
  }
  LLMT_ASSIGN_OR_RETURN(w.cls, b.matrix("cls.weight", n_embd, n_embd, /*optional=*/true));
  LLMT_ASSIGN_OR_RETURN(w.cls_b, b.vector("cls.bias", n_embd, /*optional=*/true));
  if (w.cls_b && !w.cls.data) {
    return corrupt(g.path() + ": tensor 'cls.bias' without cls.weight");
  }
  LLMT_ASSIGN_OR_RETURN(w.cls_out, b.matrix("cls.output.weight", n_embd, n_cls));
  LLMT_ASSIGN_OR_RETURN(w.cls_out_b, b.vector("cls.output.bias", n_cls, /*optional=*/true));
  hp.n_cls_out = static_cast<int32_t>(n_cls);
  const std::string key = hp.arch + ".classifier.output_labels";
  LLMT_ASSIGN_OR_RETURN(auto labels, g.get_string_array(key));
  if (labels) {
    if (static_cast<int64_t>(labels->size()) != n_cls) {
      return corrupt(g.path() + ": " + key + " has " + std::to_string(labels->size()) +
                     " labels but cls.output.weight has " + std::to_string(n_cls) + " outputs");
    }
    for (std::string_view l : *labels) hp.cls_labels.emplace_back(l);
  }
  return Status::ok();
}

void encode_bert(ContextState& c, const int32_t* tokens, const int32_t* seq_lens, int32_t n_seqs) {
  const ModelHparams& h = *c.hp;
  // Row i belongs to the sequence starting at row seq_start[i], of seq_len[i] rows; its position
  // is i - seq_start[i]. (att_order and out_rows are [n_batch] scratch that encoders leave free.)
  int32_t n = 0;
  for (int32_t s = 0; s < n_seqs; ++s) {
    for (int32_t j = 0; j < seq_lens[s]; ++j) {
      c.att_order[n + j] = n;
      c.out_rows[n + j] = seq_lens[s];
    }
    n += seq_lens[s];
  }
  const int32_t* seq_start = c.att_order.data();
  const int32_t* seq_len = c.out_rows.data();
  const ModelWeights& w = *c.w;
  const int64_t n_embd = h.n_embd;
  const int64_t q_dim = h.q_dim();
  const int64_t kv_dim = h.kv_dim();
  const int64_t n_ff = h.n_ff;
  const int32_t hd = h.head_dim;
  const int32_t group = h.n_head / h.n_head_kv;
  const bool single = c.pool->n_threads() == 1 || c.macs_per_token * n < 8e6;
  const auto pos_dq = kernels::type_kernels(w.pos_embd.type, c.isa)->dequantize_row;
  const auto tt_dq = kernels::type_kernels(w.token_types.type, c.isa)->dequantize_row;

  // Embeddings: token + token type 0 + position, then LayerNorm.
  c.par(single, [&](int ith, int nth) {
    std::vector<float>& tmp = c.ts[ith].act;
    int64_t b, end;
    split_range(n, ith, nth, &b, &end);
    for (int64_t i = b; i < end; ++i) {
      float* xr = c.x.data() + i * n_embd;
      c.model->embed_token(tokens[i], xr);
      tt_dq(w.token_types.data, tmp.data(), n_embd);
      ops::add(xr, tmp.data(), n_embd);
      pos_dq(
          static_cast<const uint8_t*>(w.pos_embd.data) + (i - seq_start[i]) * w.pos_embd.row_bytes,
          tmp.data(), n_embd);
      ops::add(xr, tmp.data(), n_embd);
      c.ot->layer_norm(xr, w.embd_norm, w.embd_norm_b, xr, n_embd, w.norm_eps);
    }
  });
  const int32_t zero = 0;
  for (int32_t il = 0; il < h.n_layer; ++il) {
    const LayerWeights& L = w.layers[il];
    c.par(single, [&](int ith, int nth) {
      c.matmul_local(L.wq, c.x.data(), n, c.q.data(), ith, nth, 0);
      c.matmul_local(L.wk, c.x.data(), n, c.k.data(), ith, nth, 1, &L.wq, 0);
      c.matmul_local(L.wv, c.x.data(), n, c.v.data(), ith, nth, 2, &L.wq, 0);
    });
    c.par(single, [&](int ith, int nth) {
      int64_t b, end;
      split_range(n, ith, nth, &b, &end);
      for (int64_t i = b; i < end; ++i) {
        ops::add(c.q.data() + i * q_dim, L.bq, q_dim);
        ops::add(c.k.data() + i * kv_dim, L.bk, kv_dim);
        ops::add(c.v.data() + i * kv_dim, L.bv, kv_dim);
      }
    });
    // Every token attends to every token of its sequence: K/V straight from the activations (row
    // pitch kv_dim), the sequence's rows as one block.
    c.par(single, [&](int ith, int nth) {
      int64_t b, end;
      split_range(static_cast<int64_t>(n) * h.n_head_kv, ith, nth, &b, &end);
      for (int64_t item = b; item < end; ++item) {
        const int64_t i = item / h.n_head_kv;
        const int32_t g = static_cast<int32_t>(item % h.n_head_kv);
        ops::AttendSpan a;
        const int64_t start = seq_start[i];
        a.k_base = c.k.data() + start * kv_dim + g * hd;
        a.v_base = c.v.data() + start * kv_dim + g * hd;
        a.block_table = &zero;
        a.block_size = seq_len[i];
        a.row_stride = kv_dim * sizeof(float);
        a.hd = hd;
        a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
        a.dot = c.ot->dot;
        a.axpy = c.ot->axpy;
        const int64_t off = i * q_dim + static_cast<int64_t>(g) * group * hd;
        ops::attend_span(a, c.q.data() + off, group, 0, seq_len[i], c.ts[ith].scores.data(),
                         c.att.data() + off);
      }
    });
    c.par(single, [&](int ith, int nth) {
      c.matmul_local(L.wo, c.att.data(), n, c.attn_out.data(), ith, nth, 0);
    });
    c.par(single, [&](int ith, int nth) {
      int64_t b, end;
      split_range(n, ith, nth, &b, &end);
      for (int64_t i = b; i < end; ++i) {
        float* xr = c.x.data() + i * n_embd;
        float* ar = c.attn_out.data() + i * n_embd;
        ops::add(ar, L.bo, n_embd);
        ops::add(xr, ar, n_embd);
        c.ot->layer_norm(xr, L.attn_norm, L.attn_norm_b, xr, n_embd, w.norm_eps);
      }
    });
    c.par(single, [&](int ith, int nth) {
      c.matmul_local(L.ffn_up, c.x.data(), n, c.up.data(), ith, nth, 0);
    });
    c.par(single, [&](int ith, int nth) {
      int64_t b, end;
      split_range(n, ith, nth, &b, &end);
      for (int64_t i = b; i < end; ++i) {
        float* ur = c.up.data() + i * n_ff;
        ops::add(ur, L.ffn_up_b, n_ff);
        c.ot->gelu(ur, n_ff);
      }
    });
    c.par(single, [&](int ith, int nth) {
      c.matmul_local(L.ffn_down, c.up.data(), n, c.ffn_out.data(), ith, nth, 0);
    });
    c.par(single, [&](int ith, int nth) {
      int64_t b, end;
      split_range(n, ith, nth, &b, &end);
      for (int64_t i = b; i < end; ++i) {
        float* xr = c.x.data() + i * n_embd;
        float* fr = c.ffn_out.data() + i * n_embd;
        ops::add(fr, L.ffn_down_b, n_embd);
        ops::add(xr, fr, n_embd);
        c.ot->layer_norm(xr, L.ffn_norm, L.ffn_norm_b, xr, n_embd, w.norm_eps);
      }
    });
  }
}

}  // namespace llmt
