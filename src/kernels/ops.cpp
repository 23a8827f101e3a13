#include "kernels/ops.h"

#include <algorithm>
#include <cmath>

namespace llmt::ops {

void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps) {
  // Four double partial sums (element i goes to part i % 4, each part in index order), then
  // (p0 + p1) + (p2 + p3): a fixed order for a given n (so a row's result depends on the row
  // alone), with four independent add chains instead of one long one. Vectorizing the parts
  // into lanes does not change any addition.
  double part[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int l = 0; l < 4; ++l) part[l] += static_cast<double>(x[i + l]) * x[i + l];
  }
  for (int l = 0; i < n; ++i, ++l) part[l] += static_cast<double>(x[i]) * x[i];
  const double sum = (part[0] + part[1]) + (part[2] + part[3]);
  const float scale = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + eps));
  for (i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

void softmax(float* x, int64_t n) {
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = x[i] > max ? x[i] : max;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(x[i] - max);
    x[i] = e;
    sum += e;
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void silu_mul(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = g[i];
    g[i] = v / (1.0f + std::exp(-v)) * u[i];
  }
}

void add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void rope(float* x, int32_t n_heads, int32_t head_dim, int32_t n_rot, const float* cs, bool neox) {
  const int32_t half = n_rot / 2;
  for (int32_t h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    for (int32_t i = 0; i < half; ++i) {
      const float c = cs[2 * i];
      const float s = cs[2 * i + 1];
      const int32_t i0 = neox ? i : 2 * i;
      const int32_t i1 = neox ? i + half : 2 * i + 1;
      const float a = v[i0];
      const float b = v[i1];
      v[i0] = a * c - b * s;
      v[i1] = a * s + b * c;
    }
  }
}

float dot_scalar(const float* a, const float* b, int64_t n) {
  // Four partial sums so the compiler can keep them in registers; fixed order.
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

void axpy_scalar(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

namespace {

// dot_scalar / axpy_scalar with b (x) read from half precision; the same summation order.
float dot_f16(const float* a, const uint16_t* b, int64_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * kernels::fp16_to_fp32(b[i]);
    s1 += a[i + 1] * kernels::fp16_to_fp32(b[i + 1]);
    s2 += a[i + 2] * kernels::fp16_to_fp32(b[i + 2]);
    s3 += a[i + 3] * kernels::fp16_to_fp32(b[i + 3]);
  }
  for (; i < n; ++i) s0 += a[i] * kernels::fp16_to_fp32(b[i]);
  return (s0 + s1) + (s2 + s3);
}

void axpy_f16(float alpha, const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * kernels::fp16_to_fp32(x[i]);
}

inline float dot_row(const float* a, const float* b, int64_t n) {
  return dot_scalar(a, b, n);
}
inline float dot_row(const float* a, const uint16_t* b, int64_t n) {
  return dot_f16(a, b, n);
}
inline void axpy_row(float alpha, const float* x, float* y, int64_t n) {
  axpy_scalar(alpha, x, y, n);
}
inline void axpy_row(float alpha, const uint16_t* x, float* y, int64_t n) {
  axpy_f16(alpha, x, y, n);
}

// The scalar attention body for every layout: k_row(j) / v_row(j) give the row of position j.
template <typename KRow, typename VRow>
void attend_rows(const float* q, int32_t n_q, const KRow& k_row, const VRow& v_row, int32_t n_kv,
                 int32_t hd, float scale, float* scores, float* out) {
  for (int32_t h = 0; h < n_q; ++h) {
    const float* qh = q + static_cast<int64_t>(h) * hd;
    float* sc = scores + static_cast<int64_t>(h) * n_kv;
    float* oh = out + static_cast<int64_t>(h) * hd;
    for (int32_t j = 0; j < n_kv; ++j) sc[j] = dot_row(qh, k_row(j), hd) * scale;
    softmax(sc, n_kv);
    std::fill(oh, oh + hd, 0.0f);
    for (int32_t j = 0; j < n_kv; ++j) axpy_row(sc[j], v_row(j), oh, hd);
  }
}

template <typename T>
void attend_contiguous(const float* q, int32_t n_q, const T* k, const T* v, int32_t n_kv,
                       int32_t hd, float scale, float* scores, float* out) {
  attend_rows(
      q, n_q, [k, hd](int32_t j) { return k + static_cast<int64_t>(j) * hd; },
      [v, hd](int32_t j) { return v + static_cast<int64_t>(j) * hd; }, n_kv, hd, scale, scores,
      out);
}

template <typename T>
void attend_paged_rows(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                       const int32_t* block_table, size_t block_stride, int32_t block_size,
                       int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  const size_t row_bytes = static_cast<size_t>(hd) * sizeof(T);
  auto locate = [=](const void* base, int32_t j) {
    const size_t off = static_cast<size_t>(block_table[j / block_size]) * block_stride +
                       static_cast<size_t>(j % block_size) * row_bytes;
    return reinterpret_cast<const T*>(static_cast<const uint8_t*>(base) + off);
  };
  attend_rows(
      q, n_q, [&](int32_t j) { return locate(k_base, j); },
      [&](int32_t j) { return locate(v_base, j); }, n_kv, hd, scale, scores, out);
}

// attend_paged_rows over the positions [p0, p1): position p0 + j is the j-th row.
template <typename T>
void attend_window_rows(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                        const int32_t* block_table, size_t block_stride, int32_t block_size,
                        int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                        float* out) {
  const size_t row_bytes = static_cast<size_t>(hd) * sizeof(T);
  auto locate = [=](const void* base, int32_t j) {
    const int32_t p = p0 + j;
    const size_t off = static_cast<size_t>(block_table[p / block_size]) * block_stride +
                       static_cast<size_t>(p % block_size) * row_bytes;
    return reinterpret_cast<const T*>(static_cast<const uint8_t*>(base) + off);
  };
  attend_rows(
      q, n_q, [&](int32_t j) { return locate(k_base, j); },
      [&](int32_t j) { return locate(v_base, j); }, p1 - p0, hd, scale, scores, out);
}

}  // namespace

void attend_scalar(const float* q, int32_t n_q, const float* k, const float* v, int32_t n_kv,
                   int32_t hd, float scale, float* scores, float* out) {
  attend_contiguous(q, n_q, k, v, n_kv, hd, scale, scores, out);
}

void attend_f16_scalar(const float* q, int32_t n_q, const uint16_t* k, const uint16_t* v,
                       int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  attend_contiguous(q, n_q, k, v, n_kv, hd, scale, scores, out);
}

void attend_paged_scalar(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                         const int32_t* block_table, size_t block_stride, int32_t block_size,
                         int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  attend_paged_rows<float>(q, n_q, k_base, v_base, block_table, block_stride, block_size, n_kv, hd,
                           scale, scores, out);
}

void attend_paged_f16_scalar(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                             const int32_t* block_table, size_t block_stride, int32_t block_size,
                             int32_t n_kv, int32_t hd, float scale, float* scores, float* out) {
  attend_paged_rows<uint16_t>(q, n_q, k_base, v_base, block_table, block_stride, block_size, n_kv,
                              hd, scale, scores, out);
}

void attend_window_scalar(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                          const int32_t* block_table, size_t block_stride, int32_t block_size,
                          int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                          float* out) {
  attend_window_rows<float>(q, n_q, k_base, v_base, block_table, block_stride, block_size, p0, p1,
                            hd, scale, scores, out);
}

void attend_window_f16_scalar(const float* q, int32_t n_q, const void* k_base, const void* v_base,
                              const int32_t* block_table, size_t block_stride, int32_t block_size,
                              int32_t p0, int32_t p1, int32_t hd, float scale, float* scores,
                              float* out) {
  attend_window_rows<uint16_t>(q, n_q, k_base, v_base, block_table, block_stride, block_size, p0,
                               p1, hd, scale, scores, out);
}

void to_f16_scalar(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = kernels::fp32_to_fp16(x[i]);
}

const OpsTable& ops_table(kernels::Isa isa) {
  // Designated initializers: an entry left out of a table draws a -Wmissing-field-initializers
  // warning (-Wextra) instead of passing silently as nullptr.
  static const OpsTable kScalar = {.dot = dot_scalar,
                                   .axpy = axpy_scalar,
                                   .attend = attend_scalar,
                                   .attend_f16 = attend_f16_scalar,
                                   .silu_mul = silu_mul,
                                   .to_f16 = to_f16_scalar,
                                   .attend_paged = attend_paged_scalar,
                                   .attend_paged_f16 = attend_paged_f16_scalar,
                                   .attend_window = attend_window_scalar,
                                   .attend_window_f16 = attend_window_f16_scalar,
                                   .gelu = gelu,
                                   .gelu_mul = gelu_mul,
                                   .layer_norm = layer_norm};
#if defined(__x86_64__) || defined(_M_X64)
  static const OpsTable kAvx2 = {.dot = dot_avx2,
                                 .axpy = axpy_avx2,
                                 .attend = attend_avx2,
                                 .attend_f16 = attend_f16_avx2,
                                 .silu_mul = silu_mul_avx2,
                                 .to_f16 = to_f16_avx2,
                                 .attend_paged = attend_paged_avx2,
                                 .attend_paged_f16 = attend_paged_f16_avx2,
                                 .attend_window = attend_window_avx2,
                                 .attend_window_f16 = attend_window_f16_avx2,
                                 .gelu = gelu_avx2,
                                 .gelu_mul = gelu_mul_avx2,
                                 .layer_norm = layer_norm_avx2};
  // The amx tier has no ops of its own: it uses the avx512 ones.
  static const OpsTable kAvx512 = {.dot = dot_avx512,
                                   .axpy = axpy_avx512,
                                   .attend = attend_avx512,
                                   .attend_f16 = attend_f16_avx512,
                                   .silu_mul = silu_mul_avx512,
                                   .to_f16 = to_f16_avx512,
                                   .attend_paged = attend_paged_avx512,
                                   .attend_paged_f16 = attend_paged_f16_avx512,
                                   .attend_window = attend_window_avx512,
                                   .attend_window_f16 = attend_window_f16_avx512,
                                   .gelu = gelu_avx512,
                                   .gelu_mul = gelu_mul_avx512,
                                   .layer_norm = layer_norm_avx512};
  // avxvnni has no float ops of its own: the avx2 ones.
  if (isa == kernels::Isa::kAvx2 || isa == kernels::Isa::kAvxVnni) return kAvx2;
  if (isa == kernels::Isa::kAvx512 || isa == kernels::Isa::kAmx) return kAvx512;
#endif
#if defined(__aarch64__)
  // i8mm has no float ops of its own: the neon ones (bitwise equal to avx2's).
  static const OpsTable kNeon = {.dot = dot_neon,
                                 .axpy = axpy_neon,
                                 .attend = attend_neon,
                                 .attend_f16 = attend_f16_neon,
                                 .silu_mul = silu_mul_neon,
                                 .to_f16 = to_f16_neon,
                                 .attend_paged = attend_paged_neon,
                                 .attend_paged_f16 = attend_paged_f16_neon,
                                 .attend_window = attend_window_neon,
                                 .attend_window_f16 = attend_window_f16_neon,
                                 .gelu = gelu_neon,
                                 .gelu_mul = gelu_mul_neon,
                                 .layer_norm = layer_norm_neon};
  if (isa == kernels::Isa::kNeon || isa == kernels::Isa::kI8mm) return kNeon;
#endif
  return kScalar;
}

}  // namespace llmt::ops
