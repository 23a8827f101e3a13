// Statistics, memory read bandwidth and peak compute rates for `llmthreads bench`.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "bench.h"

namespace llmt::bench {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The AVX2 loops serve the avx2 tier and the x86 tiers above it.
bool use_avx2() {
#if defined(__x86_64__) || defined(_M_X64)
  const kernels::Isa isa = kernels::detect_isa();
  return isa == kernels::Isa::kAvx2 || isa == kernels::Isa::kAvxVnni ||
         isa == kernels::Isa::kAvx512 || isa == kernels::Isa::kAmx;
#else
  return false;
#endif
}

float sum_floats(const float* p, size_t n) {
#if defined(__x86_64__) || defined(_M_X64)
  if (use_avx2()) return sum_floats_avx2(p, n);
#endif
  float a[8] = {};
  for (size_t i = 0; i < n; i += 8) {
    for (int j = 0; j < 8; ++j) a[j] += p[i + j];
  }
  float s = 0.0f;
  for (float v : a) s += v;
  return s;
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

}  // namespace

Stats summarize(std::vector<double> values) {
  Stats s;
  s.n = static_cast<int32_t>(values.size());
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  s.min = values.front();
  s.max = values.back();
  s.median = n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
  double sum = 0.0;
  for (double v : values) sum += v;
  s.mean = sum / static_cast<double>(n);
  return s;
}

BandwidthResult measure_read_bandwidth(ThreadPool& pool, size_t bytes, int32_t passes,
                                       std::string* error) {
  BandwidthResult r;
  const int nth = pool.n_threads();
  // Each thread reads a slice that is a whole number of 64-float (256-byte) chunks.
  const size_t chunk = 64 * sizeof(float) * static_cast<size_t>(nth);
  bytes = std::max(chunk, bytes / chunk * chunk);
  std::unique_ptr<float, FreeDeleter> buf(static_cast<float*>(std::aligned_alloc(64, bytes)));
  if (!buf) {
    *error = "cannot allocate " + std::to_string(bytes >> 20) + " MiB for the bandwidth test";
    return r;
  }
  r.bytes = bytes;
  const size_t n = bytes / sizeof(float);
  const size_t per_thread = n / static_cast<size_t>(nth);
  float* data = buf.get();
  // Touch every page from the thread that will read it (first-touch placement).
  pool.run([&](int ith, int) {
    float* p = data + per_thread * static_cast<size_t>(ith);
    for (size_t i = 0; i < per_thread; ++i) p[i] = 1.0f;
  });
  std::vector<float> sinks(static_cast<size_t>(nth) * 16, 0.0f);  // one cache line per thread
  auto pass = [&] {
    pool.run([&](int ith, int) {
      sinks[static_cast<size_t>(ith) * 16] +=
          sum_floats(data + per_thread * static_cast<size_t>(ith), per_thread);
    });
  };
  pass();  // warm-up
  std::vector<double> gbs;
  for (int32_t i = 0; i < passes; ++i) {
    const auto t0 = Clock::now();
    pass();
    gbs.push_back(static_cast<double>(bytes) / seconds_since(t0) / 1e9);
  }
  r.gbs = summarize(std::move(gbs));
  return r;
}

ComputePeak measure_compute_peak(ThreadPool& pool, int32_t passes, kernels::Isa tier) {
  ComputePeak peak;
  using kernels::Isa;
#if defined(__x86_64__) || defined(_M_X64)
  const bool x86 =
      tier == Isa::kAvx2 || tier == Isa::kAvxVnni || tier == Isa::kAvx512 || tier == Isa::kAmx;
  if (!x86) return peak;
#elif defined(__aarch64__)
  if (tier != Isa::kNeon && tier != Isa::kI8mm) return peak;
#else
  (void)pool, (void)passes;
  return peak;
#endif
  peak.tier = kernels::isa_name(tier);
  const int nth = pool.n_threads();
  std::vector<double> ops(static_cast<size_t>(nth));
  std::vector<int32_t> isink(static_cast<size_t>(nth) * 16);
  std::vector<float> fsink(static_cast<size_t>(nth) * 16);
  // About 10-20 ms per pass on a ~3 GHz core.
  constexpr int64_t kIter = 1 << 22;
  auto best = [&](auto&& loop) {
    double top = 0.0;
    for (int32_t p = 0; p <= passes; ++p) {  // pass 0 is the warm-up
      const auto t0 = Clock::now();
      pool.run([&](int ith, int) { ops[ith] = loop(static_cast<size_t>(ith) * 16); });
      const double sec = seconds_since(t0);
      double total = 0.0;
      for (double o : ops) total += o;
      if (p > 0) top = std::max(top, total / sec / 1e9);
    }
    return top;
  };
  auto int8 = [&](double (*f)(int64_t, int32_t*), int64_t n_iter) {
    return best([&, f, n_iter](size_t slot) { return f(n_iter, &isink[slot]); });
  };
  auto f32 = [&](double (*f)(int64_t, float*)) {
    return best([&, f](size_t slot) { return f(kIter, &fsink[slot]); });
  };
#if defined(__x86_64__) || defined(_M_X64)
  if (tier == Isa::kAvx512 || tier == Isa::kAmx) {
    peak.int8_gops = int8(int8_dot_loop_avx512, kIter);
    peak.int8_scaled_gops = int8(int8_scaled_dot_loop_avx512, kIter / 4);
    peak.f32_gops = f32(fma_loop_avx512);
  } else if (tier == Isa::kAvxVnni) {
    peak.int8_gops = int8(int8_dot_loop_avxvnni, kIter);
    peak.int8_scaled_gops = int8(int8_scaled_dot_loop_avxvnni, kIter);
    peak.f32_gops = f32(fma_loop_avx2);
  } else {
    peak.int8_gops = int8(int8_dot_loop_avx2, kIter);
    peak.int8_scaled_gops = int8(int8_scaled_dot_loop_avx2, kIter);
    peak.f32_gops = f32(fma_loop_avx2);
  }
#elif defined(__aarch64__)
  peak.int8_gops =
      tier == Isa::kI8mm ? int8(int8_dot_loop_i8mm, kIter) : int8(int8_dot_loop_neon, kIter);
  peak.int8_scaled_gops = int8(int8_scaled_dot_loop_neon, kIter);
  peak.f32_gops = f32(fma_loop_neon);
#endif
  return peak;
}

}  // namespace llmt::bench
