// Swap store for preempted LLM threads' KV-cache blocks.
//
// When the engine preempts a running thread it saves the bytes of the thread's KV blocks (each a
// contiguous span of a few hundred KB, in the model's Context) under a key, and later restores
// them bit-exactly into blocks that may be different ones. An entry is the concatenation of the
// spans given to put(); take() scatters it back into spans of the same sizes.
//
// Where entries live: RAM up to SwapStoreOptions::ram_limit_bytes (counted as stored, i.e. after
// compression), then (kAuto) one file per entry in a private directory. Files carry a header
// (magic, key, part sizes, checksum) that take() checks against what the store recorded at put()
// before any byte is trusted; a damaged file is reported as kCorrupt, never restored. Swap is
// ephemeral: files are not fsync'ed and the private directory is removed with the store.
//
// Memory: RAM entries are held one buffer per part. Buffers of taken or erased entries are kept
// for reuse by later puts of the same part sizes (KV blocks all have one size), so that swapping
// runs at memcpy speed instead of page-faulting fresh memory; the RAM limit bounds entries and
// spares together, and trim() frees the spares.
//
// Compression (optional, lz4): each part is compressed on its own and stored raw when that does
// not make it smaller, so take() decompresses straight into the caller's spans.
//
// Errors never lose the caller's data: a failed put() stores nothing and leaves no file behind,
// and the caller still owns its bytes; the engine turns a failed put() or take() into recompute.
//
// Thread-safety: none, by design: one thread at a time (the engine loop) uses a SwapStore; there
// are no internal locks. Distinct stores are independent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>

#include "llmthreads/status.h"

namespace llmt::kv {

enum class SwapWhere {
  kAuto,  // RAM while the entry fits under the RAM limit, else disk
  kRam,   // RAM only: over the limit is kOutOfMemory
  kDisk,  // disk only: without a directory is kInvalidArgument
};

enum class SwapCompression { kNone, kLz4 };

struct SwapStoreOptions {
  // Bytes held in RAM, as stored (after compression). An entry goes to RAM only if the RAM bytes
  // held plus its stored size stay <= this.
  size_t ram_limit_bytes = size_t{1} << 30;
  // Where disk entries go: the store makes a private subdirectory in it (created if missing).
  // Empty: no disk; a put that would need disk fails with kOutOfMemory naming the RAM limit.
  std::string dir;
  SwapCompression compression = SwapCompression::kNone;
  // TEST-ONLY fault injection: the store's file writes (cumulative over its life, measure()
  // included) fail with ENOSPC once this many bytes have been written, after a short write up to
  // the limit, as on a full disk. Leave at the default in production.
  uint64_t fail_writes_after_bytes = std::numeric_limits<uint64_t>::max();
};

struct SwapStats {
  // Current, as stored (after compression; disk bytes count payload only, not file headers).
  uint64_t n_entries_ram = 0;
  uint64_t n_entries_disk = 0;
  uint64_t bytes_ram = 0;
  uint64_t bytes_disk = 0;
  // Spare RAM the store keeps from taken entries for later puts (bytes_ram + this stay
  // <= ram_limit_bytes); trim() frees it.
  uint64_t bytes_ram_spare = 0;
  // Cumulative over successful puts / takes.
  uint64_t bytes_in_total = 0;      // bytes given to put() (before compression)
  uint64_t bytes_stored_total = 0;  // bytes stored for them (after compression)
  uint64_t n_puts = 0;
  uint64_t n_gets = 0;  // successful take()s
};

class SwapStore {
 public:
  // Checks the options and, when options.dir is not empty, creates options.dir if missing and a
  // private subdirectory in it (mkdtemp, mode 0700); the destructor removes the subdirectory and
  // every file in it. Errors: kIo naming the directory and the OS error.
  static Result<std::unique_ptr<SwapStore>> create(const SwapStoreOptions& options);

  ~SwapStore();
  SwapStore(const SwapStore&) = delete;
  SwapStore& operator=(const SwapStore&) = delete;

  // Saves the concatenation of `parts` (any sizes, 0-byte parts included) under `key` and returns
  // where it went. Errors:
  //   kInvalidArgument: `key` already present (nothing is replaced); kDisk without a directory;
  //   kOutOfMemory:     the entry does not fit under the RAM limit and may not (kRam) or cannot
  //                     (no directory) go to disk; or an allocation failed;
  //   kIo:              a file could not be created or written (disk full, EIO): the message
  //                     names the path and the OS error.
  // On any error nothing is stored, no partial file is left, and the caller's bytes are untouched.
  Result<SwapWhere> put(uint64_t key, std::span<const std::span<const uint8_t>> parts,
                        SwapWhere where = SwapWhere::kAuto);

  // Restores the entry `key` into `parts` and removes it. Errors:
  //   kNotFound:        unknown key;
  //   kInvalidArgument: `parts` differ in number or size from those given to put(); the entry
  //                     stays and `parts` are untouched;
  //   kCorrupt:         a disk entry was damaged (wrong file size, header that does not match the
  //                     entry, checksum mismatch, undecodable lz4 data);
  //   kIo:              the entry's file could not be opened or read;
  //   kInternal:        a RAM entry failed to decode (a bug).
  // After kCorrupt, kIo or kInternal the entry is removed (its bytes are lost: the caller
  // recomputes) and the contents of `parts` are unspecified; the store stays usable.
  Status take(uint64_t key, std::span<const std::span<uint8_t>> parts);

  // Removes the entry `key` (and its file); a no-op for an unknown key.
  void erase(uint64_t key);
  bool contains(uint64_t key) const;
  SwapStats stats() const;
  // Frees the spare RAM buffers kept for reuse (SwapStats::bytes_ram_spare).
  void trim();

  // The private subdirectory holding disk entries (one file per entry, a name ending in ".swp");
  // empty when the store has no directory. For tests and diagnostics.
  const std::string& disk_dir() const;

  // Throughput of a put+take round trip of a `bytes`-byte entry (split in 256 KiB parts, like KV
  // blocks) in RAM and on disk, with the store's compression, on synthetic F16-like data (random
  // small values): bytes / seconds of the best of a few round trips, with warm buffers (the
  // steady state of a store that swaps repeatedly). Disk goes through the page
  // cache, as swap files do. disk_bytes_per_s is 0 without a directory. Touches no entry, limit
  // or statistic (disk bytes written count toward fail_writes_after_bytes). Errors:
  // kInvalidArgument for bytes == 0; the put/take errors above.
  struct Throughput {
    double ram_bytes_per_s = 0;
    double disk_bytes_per_s = 0;
    double stored_fraction =
        1;  // stored bytes / input bytes on the probe data (< 1: lz4 shrank it)
  };
  Result<Throughput> measure(size_t bytes);

 private:
  struct Impl;
  explicit SwapStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmt::kv
