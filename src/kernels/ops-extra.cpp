// Scalar ops of the non-llama architectures (see the end of ops.h): LayerNorm with bias, GELU,
// GELU GLU, soft-capping and attention over a span of positions.
#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "kernels/ops.h"

namespace llmt::ops {

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / static_cast<double>(n);
  double var = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = x[i] - mean;
    var += d * d;
  }
  var /= static_cast<double>(n);
  const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
  const float m = static_cast<float>(mean);
  for (int64_t i = 0; i < n; ++i) {
    float v = (x[i] - m) * inv;
    if (w) v *= w[i];
    if (b) v += b[i];
    y[i] = v;
  }
}

namespace {

// 0.5 v (1 + tanh(a)) computed as v / (1 + e^(-2a)), a = sqrt(2/pi) v (1 + 0.044715 v^2): the
// same function, without the cancellation in 1 + tanh(a) for negative v, and through std::exp
// rather than std::tanh because glibc's tanhf rounds differently on x86-64 and AArch64 (for
// about 3 in 10^4 arguments, measured with glibc 2.36) while its expf gives the same bits on
// both; the avx2 and neon gelu run this for their row tails and must agree bitwise. Large |v|
// give v or -0 (e^x overflowing to inf), never NaN.
inline float gelu_tanh(float v) {
  constexpr float kMinus2Sqrt2OverPi = -1.5957691216057308f;
  constexpr float kCoef = 0.044715f;
  return v / (1.0f + std::exp(kMinus2Sqrt2OverPi * v * (1.0f + kCoef * v * v)));
}

}  // namespace

void gelu(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = gelu_tanh(x[i]);
}

void gelu_mul(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] = gelu_tanh(g[i]) * u[i];
}

void softcap(float* x, int64_t n, float cap) {
  const float inv = 1.0f / cap;
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] * inv);
}

void scale(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

namespace {

// One K/V row as floats: a pointer to the row itself (f32) or to `tmp` after conversion (f16).
inline const float* kv_row(const AttendSpan& a, const void* base, int32_t j, float* tmp) {
  const uint8_t* p = static_cast<const uint8_t*>(base) +
                     static_cast<size_t>(a.block_table[j / a.block_size]) * a.block_stride +
                     static_cast<size_t>(j % a.block_size) * a.row_stride;
  if (!a.f16) return reinterpret_cast<const float*>(p);
  const auto* h = reinterpret_cast<const uint16_t*>(p);
  for (int32_t d = 0; d < a.hd; ++d) tmp[d] = kernels::fp16_to_fp32(h[d]);
  return tmp;
}

}  // namespace

void attend_span(const AttendSpan& a, const float* q, int32_t n_q, int32_t p0, int32_t p1,
                 float* scores, float* out) {
  const int32_t hd = a.hd;
  const int32_t n_kv = p1 - p0;
  // Conversion scratch for one F16 row (real head dims are <= 512).
  constexpr int32_t kMaxHd = 1024;
  float tmp[kMaxHd];
  if (a.f16 && hd > kMaxHd) {
    std::memset(out, 0, static_cast<size_t>(n_q) * hd * sizeof(float));
    return;  // unreachable: Context::create refuses such a head_dim with an F16 cache
  }
  for (int32_t h = 0; h < n_q; ++h) {
    const float* qh = q + static_cast<int64_t>(h) * hd;
    float* oh = out + static_cast<int64_t>(h) * hd;
    float max = -INFINITY;
    for (int32_t j = 0; j < n_kv; ++j) {
      float s = a.dot(qh, kv_row(a, a.k_base, p0 + j, tmp), hd) * a.scale;
      if (a.softcap > 0.0f) s = a.softcap * std::tanh(s / a.softcap);
      scores[j] = s;
      max = s > max ? s : max;
    }
    double sum = 0.0;
    for (int32_t j = 0; j < n_kv; ++j) {
      const float e = std::exp(scores[j] - max);
      scores[j] = e;
      sum += e;
    }
    const float inv = static_cast<float>(1.0 / sum);
    std::memset(oh, 0, static_cast<size_t>(hd) * sizeof(float));
    for (int32_t j = 0; j < n_kv; ++j) {
      a.axpy(scores[j] * inv, kv_row(a, a.v_base, p0 + j, tmp), oh, hd);
    }
  }
}

}  // namespace llmt::ops
