// Internal to src/model: the mutable state of a Context (KV pool, scratch, thread pool) and the
// shared steps the architectures' forward passes are built from (src/model/arch/*.cpp).
//
// KV storage: one pool of n_blocks blocks, block-major. Block b is one contiguous region of
// block_bytes: K [n_layer][n_head_kv][block_size][head_dim], then V of the same shape, elements
// of kv_type. Paged mode: the caller's block tables say where each sequence's positions are. The
// fixed-slot mode (n_seq_max sequences) is the same pool with block_size = n_ctx and one block
// per sequence (sequence s owns block s, table {s}), so there is one forward path.
//
// Thread-safety: one thread at a time drives a ContextState (its pool runs the steps).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

#include <sys/mman.h>

#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "llmthreads/model.h"
#include "model/model-impl.h"
#include "threading/thread-pool.h"

namespace llmt {

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

inline AlignedBytes aligned_bytes(size_t n) {
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

struct ContextState {
  using BatchEntry = Context::BatchEntry;
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
  int32_t block_size = 0;  // positions per block (n_ctx in fixed-slot mode)
  int32_t n_blocks = 0;    // blocks in the pool (n_seq_max in fixed-slot mode)
  size_t row_bytes = 0;    // one head's K (or V) row: head_dim elements
  size_t v_offset = 0;     // byte offset of V inside a block
  size_t block_bytes = 0;  // 2 * v_offset
  // Sliding-window layers apart (paged mode, n_window_slots > 0): their K/V live in win_pool,
  // n_window_slots slots of win_block_bytes (K [n_layer_swa][n_head_kv][block_size][head_dim],
  // then V at win_v_offset), found through the window tables of the decode_paged() call in
  // progress (win_tables: per sequence, block index -> slot); kv_pool then holds only the other
  // layers. layer_index[il] is layer il's index inside its pool (il when nothing is apart).
  AnonMapping win_pool;
  int32_t n_window_slots = 0;
  size_t win_v_offset = 0;
  size_t win_block_bytes = 0;
  std::vector<int32_t> layer_index;                      // [n_layer]
  const std::span<const int32_t>* win_tables = nullptr;  // [n_tables], during decode_paged()
  std::vector<int32_t> win_first;    // [n_tables] decode_paged() scratch: first position
  std::vector<int32_t> slot_blocks;  // [n_seq_max] s (fixed-slot block ids)
  std::vector<std::span<const int32_t>> slot_tables;  // [n_seq_max] {slot_blocks[s]}
  std::vector<int32_t> seq_len;                       // [n_seq_max] cached tokens per sequence
  std::vector<int32_t> next_pos;   // [n_seq_max] decode() / [n_tables] decode_paged() scratch
  std::vector<BatchEntry> chunk;   // [n_batch] eval()'s entries of one chunk
  std::vector<int32_t> att_order;  // [n_batch] rows of a chunk, longest attention first
  std::vector<int32_t> out_rows;   // [n_batch] rows of a chunk that want logits
  // Next attention work item of the current run (threads claim items one at a time).
  alignas(64) std::atomic<int64_t> att_next{0};
  // Shared activations, sized for n_batch tokens.
  std::vector<float> x;          // [n, n_embd] residual stream
  std::vector<float> q, k, v;    // [n, q_dim], [n, kv_dim], [n, kv_dim]
  std::vector<float> att;        // [n, q_dim] attention output (before Wo)
  std::vector<float> attn_out;   // [n, n_embd] att · Wo^T, not yet added to x
  std::vector<float> ffn_out;    // [n, n_embd] FFN output, not yet added to x
  std::vector<float> gate, up;   // [n, n_ff]
  std::vector<float> rope_cs;    // [n_batch][n_rot] (cos, sin) pairs
  std::vector<double> inv_freq;  // [n_rot/2]
  std::vector<float> logits;     // [n_logits][n_vocab] (capacity: at least one row)
  int32_t n_logits = 0;
  // Final hidden states (after the output norm) of the entries with want_embd:
  // [n_embd_rows][n_embd]. embd_out is where the current forward pass writes its chunk's rows.
  std::vector<float> embd;
  int32_t n_embd_rows = 0;
  float* embd_out = nullptr;

  // Per-thread private scratch. Every thread prepares (normalizes, quantizes) the whole input of
  // a matmul itself and then computes its share of the outputs, so a matmul needs no barrier
  // between the two phases; the redundant preparation is cheap next to the matmul.
  static constexpr int kWorkSlots = 3;
  struct ThreadScratch {
    std::vector<float> act;     // [n_batch, max(n_embd, n_ff)] normalized / gated input
    std::vector<float> scores;  // [group, n_ctx] attention scores
    std::vector<float> row;     // [n_embd] one row of scratch (the generic decoder's deltas)
    AlignedBytes work[kWorkSlots];
  };
  std::vector<ThreadScratch> ts;

  // Where layer il's K/V are: its pool (base), the bytes of one block there (stride), where V
  // starts inside a block, and the tables that map a sequence's block index to a block there.
  struct LayerKv {
    uint8_t* base;
    size_t stride;
    size_t v_offset;
    const std::span<const int32_t>* tables;
  };
  bool windowed(int32_t il) const { return n_window_slots > 0 && w->layers[il].swa; }
  LayerKv layer_kv(int32_t il, const std::span<const int32_t>* tables) const {
    if (windowed(il)) return {win_pool.data(), win_block_bytes, win_v_offset, win_tables};
    return {kv_pool.data(), block_bytes, v_offset, tables};
  }
  // Byte offset, inside any block of layer il's pool, of the K row of (layer il, KV head g,
  // row 0); the V row is layer_kv(il).v_offset further.
  size_t kv_head_offset(int32_t il, int32_t g) const {
    return (static_cast<size_t>(layer_index[il]) * hp->n_head_kv + g) * block_size * row_bytes;
  }
  // Byte offset in layer il's pool of the K row of (layer, KV head, position pos) of a sequence
  // with block table `table` in that pool (checked by the caller to cover pos with valid ids).
  size_t kv_offset(int32_t il, int32_t g, std::span<const int32_t> table, int32_t pos) const {
    const size_t stride = windowed(il) ? win_block_bytes : block_bytes;
    return static_cast<size_t>(table[pos / block_size]) * stride + kv_head_offset(il, g) +
           static_cast<size_t>(pos % block_size) * row_bytes;
  }

  // Y[m, N] = X[m, K] · W^T: thread ith quantizes all of X into its own work slot, then computes
  // its share of Y. Must be called by every thread of a pool run. With `prev` (a weight this
  // thread just multiplied the same X by, through slot prev_slot) the quantized X of that slot is
  // reused when both weights take the same activation format (e.g. Q, K and V; gate and up).
  void matmul_local(const WeightMatrix& w, const float* xin, int64_t m, float* y, int ith, int nth,
                    int slot, const WeightMatrix* prev = nullptr, int prev_slot = 0) {
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

  const ModelWeights* w = nullptr;  // model->weights()
  // Extra activations of the non-llama architectures (empty when unused).
  std::vector<float> fused;        // [n, max(q_dim + 2 kv_dim, 2 n_ff)] fused QKV / gate|up output
  std::vector<float> rope_cs_swa;  // [n_batch][n_rot] (cos, sin) of sliding-window layers
  std::vector<double> inv_freq_swa;  // [n_rot/2]

  // Fills dst [n][n_rot] with (cos, sin) of each entry's position: theta_j = pos * freq_scale *
  // inv[j], cos / sin multiplied by mscale when it is not 1.
  void rope_table(const BatchEntry* e, int32_t n, const std::vector<double>& inv, float freq_scale,
                  float mscale, float* dst) const;
  // Token embeddings of the n entries into x[n, n_embd] (rows split over threads when many).
  void embed_rows(const BatchEntry* e, int32_t n, bool single);
  // Rows that want logits, in order, into out_rows; returns their count.
  int32_t collect_out_rows(const BatchEntry* e, int32_t n);
};

}  // namespace llmt
