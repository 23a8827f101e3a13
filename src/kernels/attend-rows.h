// The K/V layout walkers and the attention driver shared by the SIMD attention files
// (ops-avx2.cpp, ops-avx512.cpp); no intrinsics here. Each file supplies its own score, softmax
// and value passes (a Passes policy, see attend_impl) and includes this header once.
//
// Everything is in an unnamed namespace on purpose: the including files are built with different
// ISA flags, and an inline function or template instance shared between them could be resolved at
// link time to the copy compiled with the higher tier's instructions. Each file keeps its own.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace llmt::ops {
namespace {

// Runs of consecutive K/V rows: rows [j, j + n) of the positions lie at k[0..n), v[0..n).
template <typename T>
struct RowRun {
  const T* k;
  const T* v;
  int32_t n;
};

// The contiguous cache: position j at k + j * hd.
template <typename T>
struct ContiguousRows {
  const T* k;
  const T* v;
  int32_t hd;
  // The run starting at position j, ending at j1 at the latest.
  RowRun<T> run(int32_t j, int32_t j1) const {
    const int64_t off = static_cast<int64_t>(j) * hd;
    return {k + off, v + off, j1 - j};
  }
};

// The paged cache: row j is position p = first + j, in block block_table[p / block_size], row
// p % block_size (first > 0: a sliding window starting at position first).
template <typename T>
struct PagedRows {
  const uint8_t* k_base;
  const uint8_t* v_base;
  const int32_t* block_table;
  size_t block_stride;
  int32_t block_size;
  int32_t hd;
  int32_t first = 0;
  RowRun<T> run(int32_t j, int32_t j1) const {
    const int32_t p = first + j;
    const int32_t r = p % block_size;
    const size_t off = static_cast<size_t>(block_table[p / block_size]) * block_stride +
                       static_cast<size_t>(r) * hd * sizeof(T);
    return {reinterpret_cast<const T*>(k_base + off), reinterpret_cast<const T*>(v_base + off),
            std::min(j1 - j, block_size - r)};
  }
};

// PagedRows over the raw arguments of the attend_paged* / attend_window* entry points.
template <typename T>
PagedRows<T> paged_rows(const void* k_base, const void* v_base, const int32_t* block_table,
                        size_t block_stride, int32_t block_size, int32_t hd, int32_t first) {
  return {static_cast<const uint8_t*>(k_base),
          static_cast<const uint8_t*>(v_base),
          block_table,
          block_stride,
          block_size,
          hd,
          first};
}

// Calls fn(std::integral_constant<int, NH>{}, h0) for the heads [0, n_q) in groups of NH <= 3
// heads starting at h0 (groups of 3, then one group of 1 or 2).
template <typename Fn>
inline void for_head_groups(int32_t n_q, Fn&& fn) {
  int32_t h0 = 0;
  for (; h0 + 3 <= n_q; h0 += 3) fn(std::integral_constant<int, 3>{}, h0);
  if (n_q - h0 == 2) fn(std::integral_constant<int, 2>{}, h0);
  if (n_q - h0 == 1) fn(std::integral_constant<int, 1>{}, h0);
}

// The attention body over any layout (Rows: ContiguousRows or PagedRows) with one tier's passes:
//   Passes::template scores<NH>(q, k, v, n_rows, hd, scale, sc, sc_stride): scores of NH heads
//     (queries q + h * hd) for n_rows consecutive key rows into sc[h * sc_stride + r] (v: the
//     value rows of the same positions, for prefetching);
//   Passes::normalize(n_q, n_kv, hd, scores, out): softmax of each head's scores row, zeroed out;
//   Passes::template values<NH>(p, p_stride, v, n_rows, hd, o): o[h] += sum_r p[h][r] v[r].
// The query heads go in groups of up to 3 that share every K/V row load (and F16 conversion);
// positions are walked run by run (a run is as long as the layout keeps rows contiguous). The
// passes must make a score depend on its q and k row alone and an output element one chain in
// position order, so that neither the head grouping nor the runs change any result.
template <typename T, typename Passes, typename Rows>
void attend_impl(const float* q, int32_t n_q, const Rows& rows, int32_t n_kv, int32_t hd,
                 float scale, float* scores, float* out) {
  for_head_groups(n_q, [&](auto nh, int32_t h0) {
    constexpr int NH = decltype(nh)::value;
    const float* qh = q + static_cast<int64_t>(h0) * hd;
    float* sc = scores + static_cast<int64_t>(h0) * n_kv;
    for (int32_t j = 0; j < n_kv;) {
      const RowRun<T> run = rows.run(j, n_kv);
      Passes::template scores<NH>(qh, run.k, run.v, run.n, hd, scale, sc + j, n_kv);
      j += run.n;
    }
  });
  Passes::normalize(n_q, n_kv, hd, scores, out);
  for_head_groups(n_q, [&](auto nh, int32_t h0) {
    constexpr int NH = decltype(nh)::value;
    const float* p = scores + static_cast<int64_t>(h0) * n_kv;
    float* o = out + static_cast<int64_t>(h0) * hd;
    for (int32_t j = 0; j < n_kv;) {
      const RowRun<T> run = rows.run(j, n_kv);
      Passes::template values<NH>(p + j, n_kv, run.v, run.n, hd, o);
      j += run.n;
    }
  });
}

}  // namespace
}  // namespace llmt::ops
