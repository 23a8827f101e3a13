// Matmul micro-benchmarks for `llmthreads bench --kernels`: Y[M,N] = X[M,K]·W[N,K]^T through the
// engine's own kernels (matmul_prepare / matmul_compute split over a ThreadPool, as the model
// runs them).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>

#include "bench.h"

namespace llmt::bench {

namespace {

using Clock = std::chrono::steady_clock;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

// 64-byte aligned buffer of at least `bytes` bytes (rounded up to 64); empty on failure.
Buffer alloc_aligned(size_t bytes) {
  const size_t n = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  return Buffer(static_cast<uint8_t*>(std::aligned_alloc(64, n)));
}

struct FormatInfo {
  TensorType type;
  std::vector<int> fp16_fields;  // byte offsets of fp16 scales inside one block
};

// Formats with matmul kernels, with where their fp16 scales sit (set to small positive values so
// every block decodes to finite numbers; all other bytes are random codes).
const std::vector<FormatInfo>& formats() {
  static const std::vector<FormatInfo> table = {
      {TensorType::F32, {}},        {TensorType::F16, {}},      {TensorType::BF16, {}},
      {TensorType::Q8_0, {0}},      {TensorType::Q4_0, {0}},    {TensorType::Q4_1, {0, 2}},
      {TensorType::Q5_0, {0}},      {TensorType::Q5_1, {0, 2}}, {TensorType::IQ4_NL, {0}},
      {TensorType::Q2_K, {80, 82}}, {TensorType::Q3_K, {108}},  {TensorType::Q4_K, {0, 2}},
      {TensorType::Q5_K, {0, 2}},   {TensorType::Q6_K, {208}},
  };
  return table;
}

const FormatInfo* find_format(TensorType t) {
  for (const auto& f : formats()) {
    if (f.type == t) return &f;
  }
  return nullptr;
}

// Fills w (n_rows rows of row_len elements of f.type) with random valid weights.
void fill_weights(const FormatInfo& f, uint8_t* w, size_t bytes, uint32_t seed) {
  std::mt19937 rng(seed);
  if (f.type == TensorType::F32 || f.type == TensorType::F16 || f.type == TensorType::BF16) {
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    if (f.type == TensorType::F32) {
      for (size_t i = 0; i + 4 <= bytes; i += 4) {
        const float v = uni(rng);
        std::memcpy(w + i, &v, 4);
      }
    } else {
      for (size_t i = 0; i + 2 <= bytes; i += 2) {
        const float v = uni(rng);
        const uint16_t h =
            f.type == TensorType::F16 ? kernels::fp32_to_fp16(v) : kernels::fp32_to_bf16(v);
        std::memcpy(w + i, &h, 2);
      }
    }
    return;
  }
  for (size_t i = 0; i + 4 <= bytes; i += 4) {
    const uint32_t r = rng();
    std::memcpy(w + i, &r, 4);
  }
  const size_t block_bytes = tensor_type_info(f.type)->block_bytes;
  std::uniform_real_distribution<float> scale(0.001f, 0.02f);
  for (size_t b = 0; b + block_bytes <= bytes; b += block_bytes) {
    for (int off : f.fp16_fields) {
      const uint16_t h = kernels::fp32_to_fp16(scale(rng));
      std::memcpy(w + b + off, &h, 2);
    }
  }
}

}  // namespace

const std::vector<TensorType>& kernel_bench_types() {
  static const std::vector<TensorType> types = [] {
    std::vector<TensorType> v;
    for (const auto& f : formats()) v.push_back(f.type);
    return v;
  }();
  return types;
}

bool parse_kernel_type(const std::string& name, TensorType* out) {
  for (TensorType t : kernel_bench_types()) {
    if (name == tensor_type_name(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

int64_t rows_for_bytes(TensorType type, int64_t row_len, size_t target_bytes) {
  const size_t rb = *tensor_row_bytes(type, row_len);
  const int64_t rows = static_cast<int64_t>((target_bytes + rb - 1) / rb);
  return std::max<int64_t>(64, (rows + 63) / 64 * 64);
}

bool run_kernel_case(ThreadPool& pool, kernels::Isa isa, const KernelCase& c, int32_t repetitions,
                     KernelResult* out, std::string* error) {
  const FormatInfo* f = find_format(c.type);
  const auto row_bytes = tensor_row_bytes(c.type, c.row_len);
  if (!f || !kernels::type_kernels(c.type, isa) || !row_bytes) {
    *error = std::string("no matmul kernel for ") + tensor_type_name(c.type) +
             " with K=" + std::to_string(c.row_len);
    return false;
  }
  const size_t w_bytes = *row_bytes * static_cast<size_t>(c.n_rows);
  const size_t x_count = static_cast<size_t>(c.n_tokens * c.row_len);
  const size_t y_count = static_cast<size_t>(c.n_tokens * c.n_rows);
  Buffer w = alloc_aligned(w_bytes);
  Buffer x = alloc_aligned(x_count * sizeof(float));
  Buffer y = alloc_aligned(y_count * sizeof(float));
  Buffer work = alloc_aligned(kernels::matmul_work_bytes(c.type, c.n_tokens, c.row_len));
  if (!w || !x || !y || !work) {
    *error = "cannot allocate the buffers of the " + std::string(tensor_type_name(c.type)) +
             " kernel benchmark";
    return false;
  }
  fill_weights(*f, w.get(), w_bytes, 1234u + static_cast<uint32_t>(c.type));
  {
    std::mt19937 rng(99);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    float* xf = reinterpret_cast<float*>(x.get());
    for (size_t i = 0; i < x_count; ++i) xf[i] = nd(rng);
  }
  const kernels::MatmulArgs args{c.type,
                                 w.get(),
                                 c.n_rows,
                                 c.row_len,
                                 reinterpret_cast<const float*>(x.get()),
                                 c.n_tokens,
                                 reinterpret_cast<float*>(y.get()),
                                 work.get(),
                                 isa};
  const std::function<void(int, int)> prepare = [&](int ith, int nth) {
    kernels::matmul_prepare(args, ith, nth);
  };
  const std::function<void(int, int)> compute = [&](int ith, int nth) {
    kernels::matmul_compute(args, ith, nth);
  };
  auto call = [&] {
    pool.run(prepare);
    pool.run(compute);
  };
  call();  // warm-up (also faults in y and work)
  std::vector<double> secs;
  for (int32_t r = 0; r < repetitions; ++r) {
    int64_t calls = 0;
    const auto t0 = Clock::now();
    double elapsed = 0.0;
    do {
      call();
      ++calls;
      elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (elapsed < 0.05);
    secs.push_back(elapsed / static_cast<double>(calls));
  }
  out->c = c;
  out->weight_bytes = w_bytes;
  const double ops = 2.0 * static_cast<double>(c.n_rows) * static_cast<double>(c.row_len) *
                     static_cast<double>(c.n_tokens);
  std::vector<double> gbs, gops;
  for (double s : secs) {
    gbs.push_back(static_cast<double>(w_bytes) / s / 1e9);
    gops.push_back(ops / s / 1e9);
  }
  out->seconds = summarize(secs);
  out->gbs = summarize(std::move(gbs));
  out->gops = summarize(std::move(gops));
  return true;
}

}  // namespace llmt::bench
