// Batched matmul Y[M, N] = X[M, K] · W[N, K]^T over the per-format kernels.
// Phase 1 quantizes X's rows into the activation format and builds the small tables the AVX2
// GEMM tiles read (Q8KGroup headers for Q8_K activations, per-token scale tables for Q8_0; F32
// activations of F32/F16/BF16 weights are X itself, no work buffer).
// Phase 2 splits W's rows over threads into contiguous ranges. Formats with a GEMM tile (AVX2:
// k-quants, Q8_0, Q4_0, Q5_0, IQ4_NL, F32, F16, BF16) walk, inside a block of kTokenBlock tokens,
// tiles of kTileRows weight rows x kGemmTokens tokens (a weight row decoded once per 8 tokens,
// accumulators in registers); token tails below kMinTileTokens (decode's M = 1) go through the
// format's gemv when it has one (avx2_gemv: Q4_K, Q6_K), else vec_dot_rows (the same calls as
// the walk below, so float decode is unchanged by the float tiles). Other formats walk
// tiles of kTileRows rows x kMaxDotRows tokens with vec_dot_rows. Each (weight row, token) value
// comes from the same arithmetic whatever M, the tiling or the thread split.
//
// Work buffer layout (a function of wtype, M and K only): M activation rows of
// act_row_bytes(K) bytes, then, 64-byte aligned: for Q8_K activations ceil(M/8) groups of K/256
// Q8KGroup headers (group g covers tokens 8g..8g+7); for Q8_0 activations M per-token scale
// tables of q80_table_bytes(K) bytes.
#include <algorithm>
#include <cstring>

#include "kernels/quant-blocks.h"

namespace llmt::kernels {

namespace {

constexpr int64_t kTileRows = 16;
constexpr int64_t kTokenBlock = kWideTokens;  // multiple of kMaxDotRows and of kGemmTokens
// Smallest token count a GEMM tile is used for (smaller tails use the gemv or vec_dot_rows, same
// results).
constexpr int kMinTileTokens = 4;

// Bytes of one X row in the activation format, or 0 for invalid shapes.
size_t act_row_bytes(const TypeKernels& tk, int64_t k) {
  const auto rb = tensor_row_bytes(tk.vec_dot_type, k);
  return rb ? *rb : 0;
}

// Byte offset of the group headers in the work buffer (after the activation rows).
size_t header_offset(size_t row_bytes, int64_t m) {
  return (static_cast<size_t>(m) * row_bytes + 63) / 64 * 64;
}

int64_t num_groups(int64_t m) {
  return (m + kGemmTokens - 1) / kGemmTokens;
}

// Fills group g's headers from its quantized rows (tokens past m get zero lanes).
void build_group_headers(const uint8_t* rows, size_t row_bytes, int64_t m, int64_t k, int64_t g,
                         Q8KGroup* hdr) {
  const int64_t nsb = k / kQKK;
  for (int64_t i = 0; i < nsb; ++i) std::memset(&hdr[i], 0, sizeof(Q8KGroup));
  for (int t = 0; t < kGemmTokens; ++t) {
    const int64_t tok = g * kGemmTokens + t;
    if (tok >= m) break;
    const auto* xb = reinterpret_cast<const BlockQ8K*>(rows + static_cast<size_t>(tok) * row_bytes);
    for (int64_t i = 0; i < nsb; ++i) {
      hdr[i].d[t] = xb[i].d;
      for (int s = 0; s < 8; ++s) {
        hdr[i].bs[s / 2][2 * t + s % 2] =
            static_cast<int16_t>(xb[i].bsums[2 * s] + xb[i].bsums[2 * s + 1]);
      }
    }
  }
}

// The avx512 tier's wide tiles of the quantized formats are bitwise equal to the AVX2 ones, so
// the avxvnni kernel source, compiled with EVEX vpdpbusd (vnni256-avx512.cpp, also bitwise equal
// to avx2), serves that tier's small token counts: its 8-token tile and gemv; its float formats
// have their own 8-token tile (matching its own float vec_dot). avxvnni has its own tiles (the
// same source with the VEX encoding).
GemmTileFn gemm_tile(TensorType t, Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::kAvxVnni) return avxvnni_gemm_tile(t);
  if (isa == Isa::kAvx512 || isa == Isa::kAmx) {
    if (const GemmTileFn f = avx512_gemm_tile_float(t)) return f;
    return avx512_vnni256_tile(t);
  }
  if (isa == Isa::kAvx2) return avx2_gemm_tile(t);
#elif defined(__aarch64__)
  // The i8mm tile equals the neon tier's vec_dot_rows bitwise (its tails go through those).
  if (isa == Isa::kI8mm) return i8mm_gemm_tile(t);
#else
  (void)t, (void)isa;
#endif
  return nullptr;
}

GemmTileFn gemv(TensorType t, Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::kAvxVnni) return avxvnni_gemv(t);
  if (isa == Isa::kAvx512 || isa == Isa::kAmx) return avx512_vnni256_gemv(t);
  if (isa == Isa::kAvx2) return avx2_gemv(t);
#else
  (void)t, (void)isa;
#endif
  return nullptr;
}

GemmTileFn wide_tile(TensorType t, Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::kAvx512 || isa == Isa::kAmx) return avx512_wide_tile(t);
#else
  (void)t, (void)isa;
#endif
  return nullptr;
}

bool valid(const MatmulArgs& a, const TypeKernels* tk) {
  if (!tk || !tk->vec_dot || a.n < 0 || a.m < 0 || a.k <= 0) return false;
  if (!tensor_row_bytes(a.wtype, a.k) || act_row_bytes(*tk, a.k) == 0) return false;
  return true;
}

}  // namespace

size_t matmul_work_bytes(TensorType wtype, int64_t m, int64_t k) {
  const TypeKernels* tk = type_kernels(wtype, Isa::kScalar);
  if (!tk || tk->vec_dot_type == TensorType::F32 || m <= 0 || k <= 0) return 0;
  const size_t row_bytes = act_row_bytes(*tk, k);
  if (row_bytes == 0) return 0;
  if (tk->vec_dot_type == TensorType::Q8_0) {
    return header_offset(row_bytes, m) + static_cast<size_t>(m * q80_table_bytes(k));
  }
  if (tk->vec_dot_type != TensorType::Q8_K) return static_cast<size_t>(m) * row_bytes;
  return header_offset(row_bytes, m) +
         static_cast<size_t>(num_groups(m) * (k / kQKK)) * sizeof(Q8KGroup);
}

void matmul_prepare(const MatmulArgs& a, int ith, int nth) {
  const TypeKernels* tk = type_kernels(a.wtype, a.isa);
  if (!valid(a, tk) || tk->vec_dot_type == TensorType::F32) return;  // F32 reads X directly
  const size_t row_bytes = act_row_bytes(*tk, a.k);
  auto* work = static_cast<uint8_t*>(a.work);
  // Split by token groups so each thread builds the headers of the groups it quantized.
  const int64_t ng = num_groups(a.m);
  const int64_t g0 = ng * ith / nth;
  const int64_t g1 = ng * (ith + 1) / nth;
  const int64_t r1 = std::min(a.m, g1 * kGemmTokens);
  for (int64_t r = g0 * kGemmTokens; r < r1; ++r) {
    tk->quantize_row_vec(a.x + r * a.k, work + static_cast<size_t>(r) * row_bytes, a.k);
  }
  if (tk->vec_dot_type == TensorType::Q8_0) {
    const int64_t nb = a.k / kQK;
    const int64_t tb = q80_table_bytes(a.k);
    for (int64_t r = g0 * kGemmTokens; r < r1; ++r) {
      const auto* xb =
          reinterpret_cast<const BlockQ8_0*>(work + static_cast<size_t>(r) * row_bytes);
      auto* table = reinterpret_cast<float*>(work + header_offset(row_bytes, a.m) +
                                             static_cast<size_t>(r * tb));
      const int64_t nbp = tb / 8;
      for (int64_t i = 0; i < nbp; ++i) table[i] = i < nb ? fp16_to_fp32(xb[i].d) : 0.0f;
      auto* sums = reinterpret_cast<int32_t*>(table + nbp);
      for (int64_t i = 0; i < nbp; ++i) {
        int32_t sum = 0;
        if (i < nb) {
          for (int j = 0; j < kQK; ++j) sum += xb[i].qs[j];
        }
        sums[i] = sum;
      }
    }
    return;
  }
  if (tk->vec_dot_type != TensorType::Q8_K) return;
  auto* hdr = reinterpret_cast<Q8KGroup*>(work + header_offset(row_bytes, a.m));
  const int64_t nsb = a.k / kQKK;
  for (int64_t g = g0; g < g1; ++g)
    build_group_headers(work, row_bytes, a.m, a.k, g, hdr + g * nsb);
}

MatmulKernels matmul_kernels(TensorType t, Isa isa) {
  MatmulKernels k;
  k.tk = type_kernels(t, isa);
  k.tile = gemm_tile(t, isa);
  if (k.tile) {
    k.gemv = gemv(t, isa);
    k.wide = wide_tile(t, isa);
  }
  return k;
}

void matmul_compute(const MatmulArgs& a, int ith, int nth) {
  matmul_compute_with(a, matmul_kernels(a.wtype, a.isa), ith, nth);
}

void matmul_compute_with(const MatmulArgs& a, const MatmulKernels& kernels, int ith, int nth) {
  const TypeKernels* tk = kernels.tk;
  if (!valid(a, tk)) return;
  const bool f32_act = tk->vec_dot_type == TensorType::F32;
  const size_t x_stride =
      f32_act ? static_cast<size_t>(a.k) * sizeof(float) : act_row_bytes(*tk, a.k);
  const auto* xq =
      f32_act ? reinterpret_cast<const uint8_t*>(a.x) : static_cast<const uint8_t*>(a.work);
  const size_t w_stride = *tensor_row_bytes(a.wtype, a.k);
  const auto* w = static_cast<const uint8_t*>(a.w);

  const int64_t n0 = a.n * ith / nth;
  const int64_t n1 = a.n * (ith + 1) / nth;
  if (const GemmTileFn tile_fn = kernels.tile) {
    const GemmTileFn gemv_fn = kernels.gemv;
    const GemmTileFn wide_fn = kernels.wide;
    // Float activations (F32/F16/BF16 tiles) are X itself: no tables follow them.
    const uint8_t* aux = f32_act ? nullptr : xq + header_offset(x_stride, a.m);
    const bool q8k = tk->vec_dot_type == TensorType::Q8_K;
    // Bytes of aux per token (Q8_0 tables) or per group of kGemmTokens tokens (Q8_K headers).
    const size_t aux_step = q8k ? static_cast<size_t>(a.k / kQKK) * sizeof(Q8KGroup) : 0;
    const size_t aux_tok = q8k ? 0 : static_cast<size_t>(q80_table_bytes(a.k));
    for (int64_t tb = 0; tb < a.m; tb += kTokenBlock) {
      const int64_t tb_end = std::min(a.m, tb + kTokenBlock);
      for (int64_t tile = n0; tile < n1; tile += kTileRows) {
        const int64_t rows = std::min(n1, tile + kTileRows) - tile;
        const uint8_t* wt = w + static_cast<size_t>(tile) * w_stride;
        if (wide_fn && tb_end - tb >= kMinWideTokens) {
          // tb is a multiple of kTokenBlock, hence of kGemmTokens: aux starts at its group.
          const uint8_t* at = aux ? aux + static_cast<size_t>(tb / kGemmTokens) * aux_step +
                                        static_cast<size_t>(tb) * aux_tok
                                  : nullptr;
          wide_fn(a.k, wt, w_stride, rows, xq + static_cast<size_t>(tb) * x_stride, x_stride, at,
                  a.y + tb * a.n + tile, a.n, static_cast<int>(tb_end - tb));
          continue;
        }
        for (int64_t t0 = tb; t0 < tb_end; t0 += kGemmTokens) {
          const int ntok = static_cast<int>(std::min<int64_t>(kGemmTokens, tb_end - t0));
          const uint8_t* xt = xq + static_cast<size_t>(t0) * x_stride;
          float* yt = a.y + t0 * a.n + tile;
          if (ntok >= kMinTileTokens) {
            const uint8_t* at = aux ? aux + static_cast<size_t>(t0 / kGemmTokens) * aux_step +
                                          static_cast<size_t>(t0) * aux_tok
                                    : nullptr;
            tile_fn(a.k, wt, w_stride, rows, xt, x_stride, at, yt, a.n, ntok);
          } else if (gemv_fn) {
            gemv_fn(a.k, wt, w_stride, rows, xt, x_stride, nullptr, yt, a.n, ntok);
          } else {
            for (int64_t r = 0; r < rows; ++r) {
              tk->vec_dot_rows(a.k, yt + r, a.n, wt + static_cast<size_t>(r) * w_stride, xt,
                               x_stride, ntok);
            }
          }
        }
      }
    }
    return;
  }
  // Token blocks outermost keep one block's activations cache-resident for long prompts; the
  // weight range is re-read once per block, which compute-bound large M easily affords.
  for (int64_t tb = 0; tb < a.m; tb += kTokenBlock) {
    const int64_t tb_end = std::min(a.m, tb + kTokenBlock);
    for (int64_t tile = n0; tile < n1; tile += kTileRows) {
      const int64_t tile_end = std::min(n1, tile + kTileRows);
      for (int64_t t0 = tb; t0 < tb_end; t0 += kMaxDotRows) {
        const int nx = static_cast<int>(std::min<int64_t>(kMaxDotRows, tb_end - t0));
        const uint8_t* xt = xq + static_cast<size_t>(t0) * x_stride;
        float* yt = a.y + t0 * a.n;
        for (int64_t row = tile; row < tile_end; ++row) {
          const uint8_t* wr = w + static_cast<size_t>(row) * w_stride;
          if (tk->vec_dot_rows) {
            tk->vec_dot_rows(a.k, yt + row, a.n, wr, xt, x_stride, nx);
          } else {
            for (int t = 0; t < nx; ++t)
              tk->vec_dot(a.k, yt + t * a.n + row, wr, xt + t * x_stride);
          }
        }
      }
    }
  }
}

void matmul(const MatmulArgs& a) {
  matmul_prepare(a, 0, 1);
  matmul_compute(a, 0, 1);
}

}  // namespace llmt::kernels
