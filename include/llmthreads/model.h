// Transformer models loaded from GGUF (llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3, gpt2
// and the bert encoder) and the per-sequence inference state that runs them.
//
// A Model is immutable after load(): it owns the GgufFile (the mmap), the Tokenizer, the
// hyperparameters and pointers to every weight tensor inside the mapping (quantized weights are
// never copied). One Model is shared, through std::shared_ptr<const Model>, by any number of
// Contexts. A Context holds what its sequences mutate: the KV cache, scratch buffers, the logits
// and a ThreadPool. One forward pass (decode() / decode_paged()) may carry tokens of many
// sequences. The KV cache is a pool of blocks; either the Context owns the mapping of sequences
// to blocks (fixed-slot mode: n_seq_max sequences of n_ctx positions each) or the caller passes
// block tables per call (paged mode, ContextOptions::n_kv_blocks > 0).
//
// Thread-safety:
//   - Model: every method is const and may be called from any number of threads concurrently.
//   - Context: one thread at a time per Context (eval()/decode()/decode_paged() drive the
//     Context's own worker threads); const methods may run concurrently with each other, not with
//     non-const ones (kv_block() included: its bytes must not be touched while a decode runs).
//     Different Contexts over the same Model may run concurrently on different threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"
#include "llmthreads/tensor-type.h"

namespace llmt {

class GgufFile;
class Tokenizer;
struct ModelWeights;  // internal (src/model/model-impl.h)
struct ArchSpec;      // internal

// How rotary position embedding pairs dimensions of a head.
enum class RopeType {
  kNormal,  // llama: adjacent pairs (x[2i], x[2i+1])
  kNeox,    // qwen2 / NeoX: halves (x[i], x[i + n_rot/2])
  kNone,    // no rotary embedding (learned positions: gpt2, bert)
};

// How an encoder's per-token states become one vector (values of GGUF <arch>.pooling_type).
enum class Pooling {
  kNone = 0,  // no pooling: every token's state
  kMean = 1,  // mean over the tokens
  kCls = 2,   // the first token's state
  kLast = 3,  // the last token's state (decoder embedding models, e.g. Qwen3-Embedding)
  kRank = 4,  // the first token's state through the classification / reranking head (cls.*):
              // n_cls_out scores (bert files with cls.output.weight)
};

struct ModelHparams {
  std::string arch;         // general.architecture ("llama", "qwen3", "gemma2", "bert", ...)
  int32_t n_vocab = 0;      // rows of token_embd
  int32_t n_ctx_train = 0;  // <arch>.context_length
  int32_t n_embd = 0;       // <arch>.embedding_length
  int32_t n_layer = 0;      // <arch>.block_count
  int32_t n_ff = 0;         // <arch>.feed_forward_length
  int32_t n_head = 0;       // <arch>.attention.head_count
  int32_t n_head_kv = 0;    // <arch>.attention.head_count_kv (default n_head)
  int32_t head_dim = 0;     // <arch>.attention.key_length (default n_embd / n_head)
  int32_t n_rot = 0;        // <arch>.rope.dimension_count (default head_dim); even, <= head_dim
  float rms_eps = 1e-5f;    // <arch>.attention.layer_norm_rms_epsilon
  float rope_freq_base = 10000.0f;  // <arch>.rope.freq_base
  float rope_freq_scale = 1.0f;     // 1 / <arch>.rope.scaling.factor for linear scaling
  RopeType rope_type = RopeType::kNormal;
  int32_t n_swa = 0;   // <arch>.attention.sliding_window on sliding-window layers; 0: none
  bool causal = true;  // false: a bidirectional encoder (bert; use Context::embed())
  Pooling pooling = Pooling::kNone;  // <arch>.pooling_type (absent: kNone; bert: kMean)
  // Classification / reranking head (bert cls.output.weight): its number of outputs, 0 when the
  // file has none. cls_labels: <arch>.classifier.output_labels (n_cls_out names), or empty.
  int32_t n_cls_out = 0;
  std::vector<std::string> cls_labels;

  int32_t q_dim() const { return n_head * head_dim; }      // width of Q / attention output
  int32_t kv_dim() const { return n_head_kv * head_dim; }  // width of K and V
};

// A weight matrix W[n_rows, row_len] (GGUF shape {row_len, n_rows}) in the mapping.
struct WeightMatrix {
  std::string_view name;
  TensorType type = TensorType::F32;
  const void* data = nullptr;  // n_rows rows of tensor_row_bytes(type, row_len) bytes
  int64_t row_len = 0;         // K: input features (GGUF ne[0])
  int64_t n_rows = 0;          // N: output features (GGUF ne[1])
  size_t row_bytes = 0;
};

struct ModelOptions {
  // Use the portable scalar kernels even where AVX2 is available (tests, debugging).
  // Default false: the best ISA of this CPU (see also the LLMT_ISA=scalar environment variable).
  bool force_scalar = false;
};

class Model {
 public:
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Opens and validates a GGUF model. Errors name the file and the problem: unsupported
  // architecture, missing or malformed hyperparameter key, missing tensor, tensor with a wrong
  // shape or an unsupported type, missing/invalid tokenizer metadata.
  static Result<std::shared_ptr<const Model>> load(const std::string& path,
                                                   const ModelOptions& options = {});

  const ModelHparams& hparams() const { return hparams_; }
  const GgufFile& gguf() const { return *gguf_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::string& path() const { return path_; }

  const WeightMatrix& token_embd() const;  // [n_vocab, n_embd]
  // [n_vocab, n_embd]; token_embd itself when the file ties the output to the embedding; no
  // data (nullptr) for an encoder without an output head (bert).
  const WeightMatrix& output() const;
  bool tied_output() const;
  // Whether layer il (0 <= il < n_layer) attends within the sliding window (hparams().n_swa)
  // only; false for an index out of range.
  bool layer_is_swa(int32_t il) const;
  // Every weight matrix a token is multiplied by (all layers, then the output), e.g. to count
  // the bytes read per token or the formats in use.
  std::span<const WeightMatrix* const> matrices() const;

  // Writes the embedding of token `id` (0 <= id < n_vocab, checked by the caller) to
  // dst[0..n_embd).
  void embed_token(int32_t id, float* dst) const;

  // Internal (src/model): the bound weights and the architecture's hooks.
  const ModelWeights& weights() const { return *weights_; }
  const ArchSpec& arch_spec() const { return *arch_; }

  // Kernel ISA chosen at load (an int holding kernels::Isa, kept opaque here).
  int isa() const { return isa_; }
  // Bytes of weights referenced in the mapping (all bound tensors).
  uint64_t weight_bytes() const { return weight_bytes_; }
  // "tokenizer.chat_template" or "" when the file has none.
  std::string_view chat_template() const { return chat_template_; }

 private:
  Model() = default;
  Status bind(const ModelOptions& options);

  std::string path_;
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelHparams hparams_;
  std::unique_ptr<ModelWeights> weights_;
  const ArchSpec* arch_ = nullptr;
  int isa_ = 0;
  uint64_t weight_bytes_ = 0;
  std::string_view chat_template_;
};

// Element type of the K/V cache.
enum class KvType {
  kF32,  // exact copies of the f32 K/V rows
  kF16,  // IEEE half: converted (round to nearest even) when stored; half the memory and bandwidth
};
const char* kv_type_name(KvType t);  // "f32", "f16"
// Parses those names; kInvalidArgument listing them otherwise. Pure; any thread.
Result<KvType> parse_kv_type(const std::string& name);

struct ContextOptions {
  // KV cache cells per sequence (tokens one sequence can hold). 0 (default):
  //   paged mode:     min(model context_length, 4096) (the most positions one sequence may have);
  //   n_seq_max == 1: min(model context_length, 4096);
  //   n_seq_max  > 1: min(model context_length, 4096, max(256, 16384 / n_seq_max)), i.e. a total
  //                   of about 16K cells (e.g. 64 sequences x 256, 16 x 1024, 4 x 4096).
  int32_t n_ctx = 0;
  // Fixed-slot mode (n_kv_blocks == 0): sequences the context holds (ids 0..n_seq_max-1); each
  // gets its own n_ctx cells, allocated up front (one KV block of n_ctx positions per sequence).
  // Default 1. At most 4096. Ignored in paged mode.
  int32_t n_seq_max = 1;
  // Paged KV cache. n_kv_blocks > 0 selects paged mode: the cache is a pool of n_kv_blocks blocks
  // of kv_block_size tokens each, and sequences are described per call by block tables
  // (decode_paged()). n_seq_max and the sequence-0 API (eval, decode, seq_len, seq_clear,
  // truncate, n_past) are not used in paged mode (they return kInvalidArgument / 0).
  int32_t n_kv_blocks = 0;
  int32_t kv_block_size = 16;  // tokens per block, in [1, 4096] (checked in paged mode only)
  // Paged mode, a model with sliding-window layers (hparams().n_swa > 0): > 0 keeps those layers'
  // K/V apart, in a second pool of n_kv_window_slots slots of kv_block_size positions; the
  // blocks then hold only the other layers, and decode_paged() takes a second table per
  // sequence that maps its block index to a slot (only the slots the window of each entry
  // reaches need to be valid). 0 (default): every layer in the blocks. Refused for a model
  // without sliding-window layers.
  int32_t n_kv_window_slots = 0;
  // Element type of the K/V cache. Default F32.
  KvType kv_type = KvType::kF32;
  // Compute threads. 0 (default): the number of physical cores.
  int32_t n_threads = 0;
  // Most tokens one forward pass processes at once; eval(), decode() and decode_paged() split
  // longer inputs into chunks of this size (scratch buffers are sized for it; in fixed-slot mode
  // it is capped at n_ctx). Default 512.
  int32_t n_batch = 512;
  // Keep the logits of every position of the last eval() (needed to score a prompt); default
  // false: only the last position's logits are computed. (decode() ignores it: each entry says.)
  bool all_logits = false;
};

// Batch invariance: the logits and KV entries of one token depend only on its sequence's tokens
// (and the model, the ISA and kv_type) — bitwise. Not on the other sequences of a batch, on the
// order of entries, on how a sequence's prompt is split into eval()/decode()/decode_paged() calls
// or n_batch chunks, on n_threads, on paged vs fixed-slot mode, the block size or where the
// blocks are, or on which tokens want logits. Every per-token step (RMSNorm, RoPE,
// SwiGLU, attention over the token's own cached positions in a fixed order) is computed
// independently per token, and the matmul kernels fix each (weight row, token) reduction order.
class Context {
 public:
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Allocates the KV pool (one anonymous mapping, pages backed on first write): n_kv_blocks
  // blocks of kv_block_size positions in paged mode, n_seq_max blocks of n_ctx positions in
  // fixed-slot mode. Block-major: block b is one contiguous region of kv_block_bytes(),
  // K [n_layer][n_head_kv][block_size][head_dim] then V (same shape), elements of kv_type. Also
  // scratch buffers for n_batch tokens (shared, plus a private set per thread) and the thread
  // pool. Nothing is allocated per call except the logits buffer when a call wants more logit
  // rows than any before (and decode_paged()'s per-table validation scratch when a call passes
  // more tables than any before). Errors: bad options (negative sizes, n_threads > 1024,
  // n_seq_max outside [1, 4096] in fixed-slot mode, kv_block_size outside [1, 4096] in paged
  // mode), a KV pool over 64 GiB or allocation failure (kOutOfMemory).
  static Result<std::unique_ptr<Context>> create(std::shared_ptr<const Model> model,
                                                 const ContextOptions& options = {});

  // Sequence 0 API. Appends `tokens` to sequence 0 at positions n_past().. and computes logits
  // (of the last token, or of all of them with ContextOptions::all_logits). Equivalent to
  // decode() with entries {tokens[i], 0, n_past() + i, last or all_logits} (bitwise the same
  // logits). Errors leave the state unchanged: empty input, a token id outside [0, n_vocab), or
  // n_past() + tokens.size() > n_ctx() ("context full"), paged mode, an encoder model (eval,
  // decode and decode_paged refuse those: use embed()).
  Status eval(std::span<const int32_t> tokens);

  // Encoder models (hparams().causal == false, e.g. bert): runs `tokens` (one sequence, all of
  // it, bidirectionally; at most min(n_batch, n_ctx, context_length) tokens) and returns its
  // pooled state [n_embd] (pooling kMean / kCls / kLast), every token's state [n_tokens,
  // n_embd] (kNone), or the classification head's hparams().n_cls_out raw scores over the first
  // token's state (kRank: cls_out · tanh(cls · h + cls_b) + cls_out_b, the tanh layer only when
  // the file has cls.weight). `pooling` nullopt: the model's own pooling_type (kMean when it has
  // none). Uses no KV cache and changes no sequence state. Errors: a causal (decoder) model,
  // empty input, a token outside [0, n_vocab), too many tokens, kRank without a head.
  Result<std::vector<float>> embed(std::span<const int32_t> tokens,
                                   std::optional<Pooling> pooling = std::nullopt);
  // Encoder models: embed() of several sequences in one pass (their rows share the matmuls;
  // each attends only to itself), so (*out)[s] is bitwise what embed(seqs[s], pooling) gives.
  // Pooling kMean, kCls or kRank (kNone is refused here); nullopt as for embed(). At most n_batch
  // tokens in all; each sequence as for embed(). Errors as embed(), naming the sequence;
  // nothing is run then.
  Status embed_batch(std::span<const std::span<const int32_t>> seqs,
                     std::vector<std::vector<float>>* out,
                     std::optional<Pooling> pooling = std::nullopt);

  // Logits [n_vocab] of the i-th row kept by the last eval() or decode() (i = -1: the last one).
  // After eval(): row i is position n_past_before + i with all_logits, else the single last
  // position (n_logits() is 1 and i must be -1 or 0). After decode(): row j is batch_logits(j).
  // Out-of-range i, or nothing evaluated since reset()/truncate()/seq_clear(), give an empty span.
  // The span is valid until the next non-const call.
  std::span<const float> logits(int32_t i = -1) const;
  int32_t n_logits() const;  // rows available through logits(i) / batch_logits(j)

  // One batch entry: `token` appended to sequence `seq_id` at position `pos`.
  struct BatchEntry {
    int32_t token = 0;
    int32_t seq_id = 0;
    int32_t pos = 0;
    bool want_logits = false;
    // Keep the entry's final hidden state (after the model's output norm, what llama.cpp pools
    // for decoder embeddings): batch_embd(j) for the j-th entry with want_embd.
    bool want_embd = false;
  };
  // Runs one forward pass over all entries (any mix of sequences, in any order). Each sequence's
  // entries must continue it: positions seq_len(seq), seq_len(seq) + 1, ... in the order they
  // appear. Each token attends causally to its own sequence's cache only. Errors leave the state
  // unchanged: empty batch, token id outside [0, n_vocab), seq_id outside [0, n_seq_max), wrong
  // pos, sequence full (pos >= n_ctx). Batches larger than n_batch are split into chunks (results
  // are the same). Afterwards seq_len(s) counts the new entries, and batch_logits(j) holds the
  // logits of the j-th entry with want_logits. Paged mode: kInvalidArgument (use decode_paged()).
  Status decode(std::span<const BatchEntry> batch);
  // Logits [n_vocab] of the j-th entry (0-based, in batch order) that had want_logits in the last
  // decode() / decode_paged(); an empty span when j is out of range. Valid until the next
  // non-const call.
  std::span<const float> batch_logits(int32_t j) const;
  // Final hidden state [n_embd] of the j-th entry (in batch order) that had want_embd in the
  // last decode() / decode_paged(); empty when j is out of range. Valid until the next non-const
  // call. Batch invariant like the logits.
  std::span<const float> batch_embd(int32_t j) const;

  // Paged mode only. Runs one forward pass over `batch`; entry.seq_id indexes block_tables.
  // Position p of sequence s lives in block block_tables[s][p / kv_block_size()], row
  // p % kv_block_size(). Each entry writes the K/V of its token at (seq, pos) and attends to
  // positions 0..pos of its sequence through the table; positions < pos must hold K/V written by
  // earlier entries of this call or by earlier calls (possibly through another sequence whose
  // table shares the block: prefix sharing). Entries of one sequence must have consecutive
  // increasing positions in batch order. Errors leave the cache and logits unchanged: not paged
  // mode, empty batch, token outside [0, n_vocab), seq_id outside block_tables, pos < 0 or
  // pos >= n_ctx, non-consecutive positions within a sequence, pos / kv_block_size() >= table
  // size, a block id outside [0, n_kv_blocks). batch_logits(j) afterwards as for decode().
  // Only the table entries a call uses (0..pos / kv_block_size() for each entry's pos) are
  // checked; entries past them may be anything (e.g. not yet allocated).
  // Results are bitwise those of decode() on the same tokens (batch invariance holds as there),
  // whatever the block size and the placement of the blocks. Batches larger than n_batch are
  // split into chunks (results are the same). Two entries of one call must not write the same
  // block row (the caller's block manager guarantees it).
  // With window slots (ContextOptions::n_kv_window_slots > 0), window_tables[s] maps sequence
  // s's block index to the slot holding the sliding-window layers' K/V of those positions: the
  // entries from max(0, pos + 1 - hparams().n_swa) / kv_block_size() to pos / kv_block_size() of
  // each entry must be slots in [0, n_kv_window_slots) (kInvalidArgument otherwise); earlier ones
  // are not read (-1 is fine). Without window slots window_tables must be empty.
  Status decode_paged(std::span<const BatchEntry> batch,
                      std::span<const std::span<const int32_t>> block_tables,
                      std::span<const std::span<const int32_t>> window_tables = {});
  bool paged() const;
  // Positions per KV block (n_ctx in fixed-slot mode, where sequence s owns block s).
  int32_t kv_block_size() const;
  // Blocks in the KV pool (n_seq_max in fixed-slot mode).
  int32_t n_kv_blocks() const;
  // Bytes of one block: K and V of every layer for kv_block_size tokens, contiguous (of every
  // layer but the sliding-window ones when they are kept apart).
  size_t kv_block_bytes() const;
  // Window slots (ContextOptions::n_kv_window_slots; 0 when none) and the bytes of one: K and V
  // of the sliding-window layers for kv_block_size positions. kv_window_slot(s) as kv_block().
  int32_t n_kv_window_slots() const;
  size_t kv_window_slot_bytes() const;
  std::span<uint8_t> kv_window_slot(int32_t s);
  std::span<const uint8_t> kv_window_slot(int32_t s) const;
  // The bytes of block b (contiguous, kv_block_bytes() long), for swapping a block out/in and for
  // copy-on-write. Empty span for b out of range. Not to be used while a decode runs.
  std::span<uint8_t> kv_block(int32_t b);
  std::span<const uint8_t> kv_block(int32_t b) const;
  // Bytes of KV one token takes (all layers, K and V).
  size_t kv_bytes_per_token() const;

  // Tokens cached for sequence seq_id (0 for an id outside [0, n_seq_max), and in paged mode).
  int32_t seq_len(int32_t seq_id) const;
  // Forgets every cached token of seq_id (no-op for an id out of range, and in paged mode);
  // logits are cleared.
  void seq_clear(int32_t seq_id);
  int32_t n_seq_max() const;  // 0 in paged mode
  KvType kv_type() const;

  int32_t n_past() const;  // seq_len(0); 0 in paged mode
  int32_t n_ctx() const;   // KV cells per sequence (paged: most positions of one sequence)
  int32_t n_threads() const;
  const Model& model() const;

  // Forgets every cached token of every sequence (fixed-slot mode) and clears the logits. In
  // paged mode the pool's bytes stay as they are (the block tables are the caller's).
  void reset();
  // Keeps the first n tokens of sequence 0 (0 <= n <= n_past()); logits are cleared. Paged mode:
  // kInvalidArgument.
  Status truncate(int32_t n);

 private:
  struct Impl;
  explicit Context(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmt
