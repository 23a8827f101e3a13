// Batched matmul Y[M, N] = X[M, K] · W[N, K]^T over the per-format kernels.
// Phase 1 quantizes X's rows into the activation format (rows split over threads); phase 2
// splits W's rows over threads into contiguous ranges and, inside a range and a block of
// kTokenBlock tokens, walks tiles of kTileRows weight rows x kMaxDotRows tokens so each decoded weight row serves several tokens
// while the tile's weights stay in L1. Each (weight row, token) value comes from the same
// kernel with the same reduction order whatever M, the tiling or the thread split.
#include <algorithm>

#include "kernels/quant-blocks.h"

namespace llmt::kernels {

namespace {

constexpr int64_t kTileRows = 16;
constexpr int64_t kTokenBlock = 64;  // multiple of kMaxDotRows

// Bytes of one X row in the activation format, or 0 for invalid shapes.
size_t act_row_bytes(const TypeKernels& tk, int64_t k) {
  const auto rb = tensor_row_bytes(tk.vec_dot_type, k);
  return rb ? *rb : 0;
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
  return static_cast<size_t>(m) * act_row_bytes(*tk, k);
}

void matmul_prepare(const MatmulArgs& a, int ith, int nth) {
  const TypeKernels* tk = type_kernels(a.wtype, a.isa);
  if (!valid(a, tk) || tk->vec_dot_type == TensorType::F32) return;  // F32 reads X directly
  const size_t row_bytes = act_row_bytes(*tk, a.k);
  const int64_t r0 = a.m * ith / nth;
  const int64_t r1 = a.m * (ith + 1) / nth;
  auto* work = static_cast<uint8_t*>(a.work);
  for (int64_t r = r0; r < r1; ++r) {
    tk->quantize_row_vec(a.x + r * a.k, work + static_cast<size_t>(r) * row_bytes, a.k);
  }
}

void matmul_compute(const MatmulArgs& a, int ith, int nth) {
  const TypeKernels* tk = type_kernels(a.wtype, a.isa);
  if (!valid(a, tk)) return;
  const bool f32_act = tk->vec_dot_type == TensorType::F32;
  const size_t x_stride = f32_act ? static_cast<size_t>(a.k) * sizeof(float) : act_row_bytes(*tk, a.k);
  const auto* xq = f32_act ? reinterpret_cast<const uint8_t*>(a.x) : static_cast<const uint8_t*>(a.work);
  const size_t w_stride = *tensor_row_bytes(a.wtype, a.k);
  const auto* w = static_cast<const uint8_t*>(a.w);

  const int64_t n0 = a.n * ith / nth;
  const int64_t n1 = a.n * (ith + 1) / nth;
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
            for (int t = 0; t < nx; ++t) tk->vec_dot(a.k, yt + t * a.n + row, wr, xt + t * x_stride);
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
