// Scalar reference kernels for the k-quant formats (256-element super-blocks): Q2_K, Q3_K, Q4_K,
// Q5_K, Q6_K weights against Q8_K activations, and the Q8_K activation quantizer.
// Element order within a super-block follows ggml: for Q2_K/Q3_K/Q6_K each 128-element half is
// four 32-element runs taken from successive bit fields of the same 32 code bytes.
#include <cmath>
#include <cstring>

#include "kernels/quant-blocks.h"

namespace llmt::kernels::scalar {

// ---- Q8_K ----

void dequant_q8_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ8K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i, dst += kQKK) {
    for (int j = 0; j < kQKK; ++j) dst[j] = b[i].d * b[i].qs[j];
  }
}

void quantize_q8_k(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, src += kQKK) {
    // Signed value of largest magnitude (first one on ties) maps to -127.
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQKK; ++j) {
      const float ax = std::fabs(src[j]);
      if (ax > amax) {
        amax = ax;
        max = src[j];
      }
    }
    if (amax == 0.0f) {
      std::memset(&b[i], 0, sizeof(BlockQ8K));
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQKK; ++j) {
      const int v = static_cast<int>(std::nearbyint(iscale * src[j]));
      b[i].qs[j] = static_cast<int8_t>(v > 127 ? 127 : (v < -127 ? -127 : v));
    }
    for (int g = 0; g < kQKK / 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += b[i].qs[g * 16 + l];
      b[i].bsums[g] = static_cast<int16_t>(sum);
    }
    b[i].d = 1.0f / iscale;
  }
}

// ---- Q2_K ----

void dequant_q2_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ2K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = fp16_to_fp32(b[i].d);
    const float dmin = fp16_to_fp32(b[i].dmin);
    int g = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* q = b[i].qs + 32 * h;
      for (int shift = 0; shift < 8; shift += 2) {
        for (int half = 0; half < 2; ++half, ++g) {
          const float dl = d * static_cast<float>(b[i].scales[g] & 0x0F);
          const float ml = dmin * static_cast<float>(b[i].scales[g] >> 4);
          for (int l = 0; l < 16; ++l)
            *dst++ = dl * static_cast<float>((q[16 * half + l] >> shift) & 3) - ml;
        }
      }
    }
  }
}

void dot_q2_k(int64_t n, float* out, const void* w, const void* x) {
  const auto* a = static_cast<const BlockQ2K*>(w);
  const auto* b = static_cast<const BlockQ8K*>(x);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQKK; ++i) {
    int32_t sumi = 0, summ = 0;
    const int8_t* q8 = b[i].qs;
    int g = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* q = a[i].qs + 32 * h;
      for (int shift = 0; shift < 8; shift += 2) {
        for (int half = 0; half < 2; ++half, ++g) {
          int32_t s = 0;
          for (int l = 0; l < 16; ++l) s += ((q[16 * half + l] >> shift) & 3) * *q8++;
          sumi += (a[i].scales[g] & 0x0F) * s;
          summ += (a[i].scales[g] >> 4) * b[i].bsums[g];
        }
      }
    }
    sum += b[i].d * fp16_to_fp32(a[i].d) * static_cast<float>(sumi) -
           b[i].d * fp16_to_fp32(a[i].dmin) * static_cast<float>(summ);
  }
  *out = sum;
}

// ---- Q3_K ----

void dequant_q3_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ3K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = fp16_to_fp32(b[i].d);
    int8_t sc[16];
    k3_scales(b[i].scales, sc);
    int g = 0;
    int bit = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* q = b[i].qs + 32 * h;
      for (int shift = 0; shift < 8; shift += 2, ++bit) {
        for (int half = 0; half < 2; ++half, ++g) {
          const float dl = d * static_cast<float>(sc[g]);
          for (int l = 0; l < 16; ++l) {
            const int idx = 16 * half + l;
            const int v = ((q[idx] >> shift) & 3) - (((b[i].hmask[idx] >> bit) & 1) ? 0 : 4);
            *dst++ = dl * static_cast<float>(v);
          }
        }
      }
    }
  }
}

void dot_q3_k(int64_t n, float* out, const void* w, const void* x) {
  const auto* a = static_cast<const BlockQ3K*>(w);
  const auto* b = static_cast<const BlockQ8K*>(x);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQKK; ++i) {
    int8_t sc[16];
    k3_scales(a[i].scales, sc);
    const int8_t* q8 = b[i].qs;
    int32_t sumi = 0;
    int g = 0;
    int bit = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* q = a[i].qs + 32 * h;
      for (int shift = 0; shift < 8; shift += 2, ++bit) {
        for (int half = 0; half < 2; ++half, ++g) {
          int32_t s = 0;
          for (int l = 0; l < 16; ++l) {
            const int idx = 16 * half + l;
            const int v = ((q[idx] >> shift) & 3) - (((a[i].hmask[idx] >> bit) & 1) ? 0 : 4);
            s += v * *q8++;
          }
          sumi += sc[g] * s;
        }
      }
    }
    sum += b[i].d * fp16_to_fp32(a[i].d) * static_cast<float>(sumi);
  }
  *out = sum;
}

// ---- Q4_K ----

void dequant_q4_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ4K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = fp16_to_fp32(b[i].d);
    const float dmin = fp16_to_fp32(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int j = 0; j < 4; ++j, q += 32) {
      uint8_t sc, m;
      k4_scale_min(2 * j, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      k4_scale_min(2 * j + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *dst++ = d1 * static_cast<float>(q[l] & 0x0F) - m1;
      for (int l = 0; l < 32; ++l) *dst++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

void dot_q4_k(int64_t n, float* out, const void* w, const void* x) {
  const auto* a = static_cast<const BlockQ4K*>(w);
  const auto* b = static_cast<const BlockQ8K*>(x);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* q = a[i].qs;
    const int8_t* q8 = b[i].qs;
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < 4; ++j, q += 32) {
      uint8_t sc1, m1, sc2, m2;
      k4_scale_min(2 * j, a[i].scales, &sc1, &m1);
      k4_scale_min(2 * j + 1, a[i].scales, &sc2, &m2);
      int32_t s1 = 0, s2 = 0;
      for (int l = 0; l < 32; ++l) s1 += (q[l] & 0x0F) * q8[l];
      for (int l = 0; l < 32; ++l) s2 += (q[l] >> 4) * q8[32 + l];
      q8 += 64;
      sumi += sc1 * s1 + sc2 * s2;
      summ += m1 * (b[i].bsums[4 * j] + b[i].bsums[4 * j + 1]) +
              m2 * (b[i].bsums[4 * j + 2] + b[i].bsums[4 * j + 3]);
    }
    sum += b[i].d * fp16_to_fp32(a[i].d) * static_cast<float>(sumi) -
           b[i].d * fp16_to_fp32(a[i].dmin) * static_cast<float>(summ);
  }
  *out = sum;
}

// ---- Q5_K ----

void dequant_q5_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ5K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = fp16_to_fp32(b[i].d);
    const float dmin = fp16_to_fp32(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int j = 0; j < 4; ++j, q += 32) {
      uint8_t sc, m;
      k4_scale_min(2 * j, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      k4_scale_min(2 * j + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) {
        const int v = (q[l] & 0x0F) | (((b[i].qh[l] >> (2 * j)) & 1) << 4);
        *dst++ = d1 * static_cast<float>(v) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        const int v = (q[l] >> 4) | (((b[i].qh[l] >> (2 * j + 1)) & 1) << 4);
        *dst++ = d2 * static_cast<float>(v) - m2;
      }
    }
  }
}

void dot_q5_k(int64_t n, float* out, const void* w, const void* x) {
  const auto* a = static_cast<const BlockQ5K*>(w);
  const auto* b = static_cast<const BlockQ8K*>(x);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* q = a[i].qs;
    const int8_t* q8 = b[i].qs;
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < 4; ++j, q += 32) {
      uint8_t sc1, m1, sc2, m2;
      k4_scale_min(2 * j, a[i].scales, &sc1, &m1);
      k4_scale_min(2 * j + 1, a[i].scales, &sc2, &m2);
      int32_t s1 = 0, s2 = 0;
      for (int l = 0; l < 32; ++l) {
        s1 += ((q[l] & 0x0F) | (((a[i].qh[l] >> (2 * j)) & 1) << 4)) * q8[l];
        s2 += ((q[l] >> 4) | (((a[i].qh[l] >> (2 * j + 1)) & 1) << 4)) * q8[32 + l];
      }
      q8 += 64;
      sumi += sc1 * s1 + sc2 * s2;
      summ += m1 * (b[i].bsums[4 * j] + b[i].bsums[4 * j + 1]) +
              m2 * (b[i].bsums[4 * j + 2] + b[i].bsums[4 * j + 3]);
    }
    sum += b[i].d * fp16_to_fp32(a[i].d) * static_cast<float>(sumi) -
           b[i].d * fp16_to_fp32(a[i].dmin) * static_cast<float>(summ);
  }
  *out = sum;
}

// ---- Q6_K ----

namespace {
// Code (0..63) of element r (0..127) of half h's 32-element run; runs 0..3 take ql low nibbles
// of bytes 0..31, ql low of 32..63, ql high of 0..31, ql high of 32..63, with qh bit pairs 0..3.
inline int q6_code(const uint8_t* ql, const uint8_t* qh, int run, int l) {
  const int lo = run & 1 ? ql[32 + l] : ql[l];
  const int nib = run < 2 ? (lo & 0x0F) : (lo >> 4);
  return nib | (((qh[l] >> (2 * run)) & 3) << 4);
}
}  // namespace

void dequant_q6_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ6K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = fp16_to_fp32(b[i].d);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      const int8_t* sc = b[i].scales + 8 * h;
      for (int run = 0; run < 4; ++run) {
        for (int l = 0; l < 32; ++l) {
          *dst++ = d * static_cast<float>(sc[2 * run + l / 16]) *
                   static_cast<float>(q6_code(ql, qh, run, l) - 32);
        }
      }
    }
  }
}

void dot_q6_k(int64_t n, float* out, const void* w, const void* x) {
  const auto* a = static_cast<const BlockQ6K*>(w);
  const auto* b = static_cast<const BlockQ8K*>(x);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const int8_t* q8 = b[i].qs;
    int32_t sumi = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = a[i].ql + 64 * h;
      const uint8_t* qh = a[i].qh + 32 * h;
      const int8_t* sc = a[i].scales + 8 * h;
      for (int run = 0; run < 4; ++run) {
        for (int half = 0; half < 2; ++half) {
          int32_t s = 0;
          for (int l = 16 * half; l < 16 * half + 16; ++l)
            s += (q6_code(ql, qh, run, l) - 32) * q8[l];
          sumi += sc[2 * run + half] * s;
        }
        q8 += 32;
      }
    }
    sum += b[i].d * fp16_to_fp32(a[i].d) * static_cast<float>(sumi);
  }
  *out = sum;
}

}  // namespace llmt::kernels::scalar
