// Context: KV cache, scratch buffers and the forward pass of the llama-family transformer.
//
// One forward pass over a chunk of n batch entries, token i of sequence seq_i at position pos_i
// (activations row-major, one row per token; xb is each thread's private normalized copy):
//   x   [n, n_embd]      = token_embd rows
//   per layer:
//     xb  [n, n_embd]    = rms_norm(x) * attn_norm
//     q   [n, q_dim]     = xb · Wq^T (+ bq), k/v [n, kv_dim] = xb · Wk^T / Wv^T (+ bk / bv)
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
//
// KV storage: one pool of n_blocks blocks, block-major. Block b is one contiguous region of
// block_bytes: K [n_layer][n_head_kv][block_size][head_dim], then V of the same shape, elements
// of kv_type. Paged mode: the caller's block tables say where each sequence's positions are. The
// fixed-slot mode (n_seq_max sequences) is the same pool with block_size = n_ctx and one block
// per sequence (sequence s owns block s, table {s}), so there is one forward path.
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

// An anonymous private mapping (page-aligned, zero-filled, pages backed on first touch, so a
// large KV pool costs memory only as it is used).
class AnonMapping {
 public:
  AnonMapping() = default;
  ~AnonMapping() { release(); }
  AnonMapping(const AnonMapping&) = delete;
  AnonMapping& operator=(const AnonMapping&) = delete;

  // False when the mapping cannot be made (n > 0).
  bool map(size_t n) {
    release();
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) return false;
    data_ = static_cast<uint8_t*>(p);
    size_ = n;
    return true;
  }
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void release() {
    if (data_) munmap(data_, size_);
    data_ = nullptr;
    size_ = 0;
  }
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

struct Context::Impl {
  std::shared_ptr<const Model> model;
  const ModelHparams* hp = nullptr;
  int32_t n_ctx = 0;      // most positions of one sequence
  int32_t n_seq_max = 1;  // fixed-slot sequences (0 in paged mode)
  bool paged = false;
  KvType kv_type = KvType::kF32;
  int32_t n_batch = 0;
  bool all_logits = false;
  kernels::Isa isa = kernels::Isa::kScalar;
  const ops::OpsTable* ot = nullptr;
  std::unique_ptr<ThreadPool> pool;

  // KV pool: n_blocks blocks of block_bytes, block b = K [n_layer][n_head_kv][block_size]
  // [head_dim] then V (same shape, at v_offset), of float (kF32) or IEEE half (kF16). Pages are
  // mapped on first write; a position is always written before it is read.
  AnonMapping kv_pool;
  size_t kv_elem_bytes = sizeof(float);
  int32_t block_size = 0;   // positions per block (n_ctx in fixed-slot mode)
  int32_t n_blocks = 0;     // blocks in the pool (n_seq_max in fixed-slot mode)
  size_t row_bytes = 0;     // one head's K (or V) row: head_dim elements
  size_t v_offset = 0;      // byte offset of V inside a block
  size_t block_bytes = 0;   // 2 * v_offset
  std::vector<int32_t> slot_blocks;                // [n_seq_max] s (fixed-slot block ids)
  std::vector<std::span<const int32_t>> slot_tables;  // [n_seq_max] {slot_blocks[s]}
  std::vector<int32_t> seq_len;   // [n_seq_max] cached tokens per sequence
  std::vector<int32_t> next_pos;  // [n_seq_max] decode() / [n_tables] decode_paged() scratch
  std::vector<BatchEntry> chunk;  // [n_batch] eval()'s entries of one chunk
  std::vector<int32_t> att_order; // [n_batch] rows of a chunk, longest attention first
  std::vector<int32_t> out_rows;  // [n_batch] rows of a chunk that want logits
  // Next attention work item of the current run (threads claim items one at a time).
  alignas(64) std::atomic<int64_t> att_next{0};
  // Shared activations, sized for n_batch tokens.
  std::vector<float> x;        // [n, n_embd] residual stream
  std::vector<float> q, k, v;  // [n, q_dim], [n, kv_dim], [n, kv_dim]
  std::vector<float> att;      // [n, q_dim] attention output (before Wo)
  std::vector<float> attn_out; // [n, n_embd] att · Wo^T, not yet added to x
  std::vector<float> ffn_out;  // [n, n_embd] FFN output, not yet added to x
  std::vector<float> gate, up; // [n, n_ff]
  std::vector<float> rope_cs;    // [n_batch][n_rot] (cos, sin) pairs
  std::vector<double> inv_freq;  // [n_rot/2]
  std::vector<float> logits;     // [n_logits][n_vocab] (capacity: at least one row)
  int32_t n_logits = 0;

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

  // Byte offset, inside any block, of the K row of (layer il, KV head g, row 0); the V row is
  // v_offset further.
  size_t kv_head_offset(int32_t il, int32_t g) const {
    return (static_cast<size_t>(il) * hp->n_head_kv + g) * block_size * row_bytes;
  }
  // Byte offset in the pool of the K row of (layer, KV head, position pos) of a sequence with
  // block table `table` (checked by the caller to cover pos with valid block ids).
  size_t kv_offset(int32_t il, int32_t g, std::span<const int32_t> table, int32_t pos) const {
    return static_cast<size_t>(table[pos / block_size]) * block_bytes + kv_head_offset(il, g) +
           static_cast<size_t>(pos % block_size) * row_bytes;
  }

  // Y[m, N] = X[m, K] · W^T: thread ith quantizes all of X into its own work slot, then computes
  // its share of Y. Must be called by every thread of a pool run. With `prev` (a weight this
  // thread just multiplied the same X by, through slot prev_slot) the quantized X of that slot is
  // reused when both weights take the same activation format (e.g. Q, K and V; gate and up).
  void matmul_local(const WeightMatrix& w, const float* xin, int64_t m, float* y, int ith,
                    int nth, int slot, const WeightMatrix* prev = nullptr, int prev_slot = 0) {
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
    const kernels::TypeKernels* tk_prev = prev ? kernels::type_kernels(prev->type, isa) : nullptr;
    const kernels::TypeKernels* tk = kernels::type_kernels(w.type, isa);
    if (tk_prev && tk && prev->row_len == w.row_len && tk_prev->vec_dot_type == tk->vec_dot_type) {
      a.work = ts[ith].work[prev_slot].get();
    } else {
      kernels::matmul_prepare(a, 0, 1);
    }
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

  // One forward pass over n <= n_batch validated entries; tables[seq_id] is the block table of
  // each entry's sequence (covering positions 0..pos with valid block ids). Writes the logits of
  // the rows with want_logits, in order, to logits_out ([rows, n_vocab]; unused when no row
  // wants logits).
  void forward(const BatchEntry* e, int32_t n, const std::span<const int32_t>* tables,
               float* logits_out);
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

void Context::Impl::forward(const BatchEntry* e, int32_t n,
                            const std::span<const int32_t>* tables, float* logits_out) {
  const ModelHparams& h = *hp;
  const Model& m = *model;
  const int64_t n_embd = h.n_embd;
  const int64_t q_dim = h.q_dim();
  const int64_t kv_dim = h.kv_dim();
  const int64_t n_ff = h.n_ff;
  const int32_t hd = h.head_dim;
  const bool f16_kv = kv_type == KvType::kF16;
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

  // Rotation angles for each row's position (cheap; on the calling thread).
  for (int32_t i = 0; i < n; ++i) {
    const double p = static_cast<double>(e[i].pos) * h.rope_freq_scale;
    float* cs = rope_cs.data() + static_cast<size_t>(i) * n_rot;
    for (int32_t j = 0; j < n_rot / 2; ++j) {
      const float theta = static_cast<float>(p * inv_freq[j]);
      cs[2 * j] = std::cos(theta);
      cs[2 * j + 1] = std::sin(theta);
    }
  }
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
    par(single, [&](int ith, int nth) {
      int64_t b, end;
      split_range(n, ith, nth, &b, &end);
      for (int64_t i = b; i < end; ++i) m.embed_token(e[i].token, x.data() + i * n_embd);
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
      matmul_local(L.wk, xn, n, k.data(), ith, nth, 1, &L.wq, 0);
      matmul_local(L.wv, xn, n, v.data(), ith, nth, 2, &L.wq, 0);
    });

    // Own rows: fold pending into x; biases, RoPE, K/V into the cache.
    par(single, [&](int ith, int nth) {
      int64_t b, end;
      split_range(n, ith, nth, &b, &end);
      for (int64_t i = b; i < end; ++i) {
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
        for (int32_t g = 0; g < h.n_head_kv; ++g) {
          uint8_t* kc = kv_pool.data() + kv_offset(il, g, tables[e[i].seq_id], e[i].pos);
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

    // Attention. Work items are (row, KV head) with the KV head's query heads together (they
    // share the K/V reads), or (row, query head) when that gives too few items to keep every
    // thread busy. Rows go longest first (att_order) and threads claim items one at a time from
    // att_next, so uneven sequence lengths balance. Per-head results do not depend on the
    // grouping or on which thread computes them.
    {
      const int32_t per_item = static_cast<int64_t>(n) * h.n_head_kv >= 2 * (single ? 1 : pool->n_threads())
                                   ? group : 1;
      const int32_t items_per_row = h.n_head / per_item;
      const int64_t n_items = static_cast<int64_t>(n) * items_per_row;
      att_next.store(0, std::memory_order_relaxed);
      par(single, [&](int ith, int /*nth*/) {
        float* sc = ts[ith].scores.data();
        for (;;) {
          const int64_t item = att_next.fetch_add(1, std::memory_order_relaxed);
          if (item >= n_items) break;
          const int32_t i = att_order[item / items_per_row];
          const int32_t h0 = static_cast<int32_t>(item % items_per_row) * per_item;
          const int32_t g = h0 / group;
          const int32_t n_kv = e[i].pos + 1;
          const int64_t off = i * q_dim + static_cast<int64_t>(h0) * hd;
          const uint8_t* kc = kv_pool.data() + kv_head_offset(il, g);
          const uint8_t* vc = kc + v_offset;
          const int32_t* table = tables[e[i].seq_id].data();
          (f16_kv ? ot->attend_paged_f16 : ot->attend_paged)(
              q.data() + off, per_item, kc, vc, table, block_bytes, block_size, n_kv, hd,
              att_scale, sc, att.data() + off);
        }
      });
    }

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
      matmul_local(L.ffn_up, xn, n, up.data(), ith, nth, 1, &L.ffn_gate, 0);
    });

    // Own rows: x += attn_out. Then ffn_out = (silu(gate) * up) · Wdown^T.
    if (n <= kFuseRows) {
      par(single, [&](int ith, int nth) {
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
        matmul_local(L.ffn_down, g, n, ffn_out.data(), ith, nth, 0);
      });
    } else {
      par(single, [&](int ith, int nth) {
        int64_t b, end;
        split_range(n, ith, nth, &b, &end);
        for (int64_t i = b; i < end; ++i) {
          ops::add(x.data() + i * n_embd, attn_out.data() + i * n_embd, n_embd);
          ot->silu_mul(gate.data() + i * n_ff, up.data() + i * n_ff, n_ff);
        }
      });
      par(single, [&](int ith, int nth) {
        matmul_local(L.ffn_down, gate.data(), n, ffn_out.data(), ith, nth, 0);
      });
    }
    pending = ffn_out.data();
  }

  if (n_out == 0) return;  // only the KV cache was wanted
  // Logits of rms_norm(x + ffn_out) * output_norm for the wanted rows.
  const int64_t n_rows = n_out;
  par(single, [&](int ith, int nth) {
    float* xn = ts[ith].act.data();
    for (int64_t r = 0; r < n_rows; ++r) {
      const float* xr = x.data() + out_rows[r] * n_embd;
      const float* pr = pending + out_rows[r] * n_embd;
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
  auto impl = std::make_unique<Impl>();
  Impl& c = *impl;
  const ModelHparams& h = model->hparams();
  c.hp = &h;
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

  c.block_size = paged ? options.kv_block_size : c.n_ctx;
  c.n_blocks = paged ? options.n_kv_blocks : c.n_seq_max;
  const size_t nb = static_cast<size_t>(c.n_batch);
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
  c.v_offset = static_cast<size_t>(h.n_layer) * h.n_head_kv * c.block_size * c.row_bytes;
  c.block_bytes = 2 * c.v_offset;
  if (!c.kv_pool.map(std::max<size_t>(c.block_bytes * c.n_blocks, 1))) {
    return Status(StatusCode::kOutOfMemory,
                  "cannot map the KV cache (" + std::to_string(c.block_bytes * c.n_blocks) +
                      " bytes)");
  }
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

namespace {

Status not_in_paged_mode(const char* what) {
  return invalid_argument(std::string(what) +
                          ": not available in paged mode (use decode_paged with block tables)");
}

}  // namespace

Status Context::Impl::run_batch(std::span<const BatchEntry> batch,
                                const std::span<const int32_t>* tables, const char* what) {
  int64_t n_want = 0;
  for (const BatchEntry& e : batch) n_want += e.want_logits ? 1 : 0;
  if (!reserve_logits(n_want)) {
    return Status(StatusCode::kOutOfMemory, std::string(what) + ": cannot allocate logits for " +
                                                std::to_string(n_want) + " entries");
  }
  n_logits = 0;
  const int64_t n_total = static_cast<int64_t>(batch.size());
  int64_t n_out = 0;
  for (int64_t done = 0; done < n_total;) {
    const int32_t n = static_cast<int32_t>(std::min<int64_t>(n_batch, n_total - done));
    const BatchEntry* e = batch.data() + done;
    forward(e, n, tables, logits.data() + static_cast<size_t>(n_out) * hp->n_vocab);
    for (int32_t i = 0; i < n; ++i) n_out += e[i].want_logits ? 1 : 0;
    done += n;
  }
  n_logits = static_cast<int32_t>(n_out);
  return Status::ok();
}

Status Context::eval(std::span<const int32_t> tokens) {
  Impl& c = *impl_;
  const ModelHparams& h = *c.hp;
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
                              std::to_string(i) + " is outside [0, n_seq_max = " +
                              std::to_string(c.n_seq_max) + ")");
    }
    int32_t& next = c.next_pos[e.seq_id];
    if (e.pos != next) {
      return invalid_argument("decode: entry " + std::to_string(i) + " of sequence " +
                              std::to_string(e.seq_id) + " has pos " + std::to_string(e.pos) +
                              ", expected " + std::to_string(next));
    }
    if (next >= c.n_ctx) {
      return invalid_argument("decode: sequence " + std::to_string(e.seq_id) +
                              " is full (n_ctx " + std::to_string(c.n_ctx) + ") at entry " +
                              std::to_string(i));
    }
    ++next;
  }
  LLMT_RETURN_IF_ERROR(c.run_batch(batch, c.slot_tables.data(), "decode"));
  std::copy(c.next_pos.begin(), c.next_pos.end(), c.seq_len.begin());
  return Status::ok();
}

Status Context::decode_paged(std::span<const BatchEntry> batch,
                             std::span<const std::span<const int32_t>> block_tables) {
  Impl& c = *impl_;
  const ModelHparams& h = *c.hp;
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
                              " is outside the vocabulary [0, " + std::to_string(h.n_vocab) +
                              ")");
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
                              " needs block " +
                              std::to_string(e.pos / c.block_size) + " of sequence " +
                              std::to_string(e.seq_id) + ", whose table has " +
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
        return invalid_argument("decode_paged: block id " + std::to_string(table[j]) +
                                " at index " + std::to_string(j) + " of the table of sequence " +
                                std::to_string(s) + " is outside [0, n_kv_blocks = " +
                                std::to_string(c.n_blocks) + ")");
      }
    }
  }
  return c.run_batch(batch, block_tables.data(), "decode_paged");
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

int32_t Context::n_logits() const { return impl_->n_logits; }
int32_t Context::n_past() const { return impl_->paged ? 0 : impl_->seq_len[0]; }
int32_t Context::n_ctx() const { return impl_->n_ctx; }
int32_t Context::n_threads() const { return impl_->pool->n_threads(); }
int32_t Context::n_seq_max() const { return impl_->n_seq_max; }
KvType Context::kv_type() const { return impl_->kv_type; }
const Model& Context::model() const { return *impl_->model; }

bool Context::paged() const { return impl_->paged; }
int32_t Context::kv_block_size() const { return impl_->block_size; }
int32_t Context::n_kv_blocks() const { return impl_->n_blocks; }
size_t Context::kv_block_bytes() const { return impl_->block_bytes; }
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
}

void Context::reset() {
  std::fill(impl_->seq_len.begin(), impl_->seq_len.end(), 0);
  impl_->n_logits = 0;
}

Status Context::truncate(int32_t n) {
  if (impl_->paged) return not_in_paged_mode("truncate");
  if (n < 0 || n > impl_->seq_len[0]) {
    return invalid_argument("truncate: " + std::to_string(n) + " is outside [0, n_past = " +
                            std::to_string(impl_->seq_len[0]) + "]");
  }
  impl_->seq_len[0] = n;
  impl_->n_logits = 0;
  return Status::ok();
}

}  // namespace llmt
