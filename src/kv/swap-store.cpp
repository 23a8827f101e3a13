// Swap store: RAM entries in malloc'ed buffers (one per part), disk entries one file each. See
// swap-store.h.
//
// Stored form of an entry: its parts one after the other, each either raw or lz4-compressed on its
// own (compressed only when that makes it strictly smaller, so stored size < raw size marks a
// compressed part). A disk file is
//   header (56 bytes):  magic "LLMTSWP1", u32 version, u32 reserved (0), u64 key, u64 n_parts,
//                       u64 raw bytes, u64 stored bytes, u64 checksum of the stored bytes
//   part table:         n_parts x (u64 raw size, u64 stored size)
//   payload:            the stored bytes of every part, in order
// in host byte order (files are private to the process and never outlive it). The store keeps
// the same metadata in memory, so take() rebuilds the expected header and table and compares them
// byte for byte with the file, after checking the file size, before reading the payload.
#include "kv/swap-store.h"

#include <fcntl.h>
#include <lz4.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

namespace llmt::kv {
namespace {

constexpr char kMagic[8] = {'L', 'L', 'M', 'T', 'S', 'W', 'P', '1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 56;
constexpr size_t kMaxIoChunk = size_t{1} << 30;          // bytes per read(2)/write(2) call
constexpr size_t kMeasurePartBytes = size_t{256} << 10;  // measure(): part size, like a KV block

// ---- checksum ---------------------------------------------------------------------------------
// A simple 64-bit checksum: four independent lanes, each updated per 8-byte word by
// x -> rotl((x ^ w) * K, 29), which is a bijection in x and in w, then a bijective mix of the
// lanes. A change confined to one word therefore always changes the result; other changes escape
// detection with probability about 2^-64.

constexpr uint64_t kMulA = 0x9E3779B97F4A7C15ull;  // 2^64 / golden ratio, odd
constexpr uint64_t kMulB = 0xC2B2AE3D27D4EB4Full;  // odd

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline uint64_t lane_round(uint64_t x, uint64_t w) {
  return std::rotl((x ^ w) * kMulA, 29);
}

inline uint64_t mix64(uint64_t h) {
  h ^= h >> 32;
  h *= kMulB;
  h ^= h >> 29;
  h *= kMulA;
  h ^= h >> 32;
  return h;
}

uint64_t checksum64(const uint8_t* p, size_t n, uint64_t seed) {
  uint64_t a = seed ^ kMulA, b = seed + kMulB, c = ~seed, d = seed * kMulB + n;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a = lane_round(a, load64(p + i));
    b = lane_round(b, load64(p + i + 8));
    c = lane_round(c, load64(p + i + 16));
    d = lane_round(d, load64(p + i + 24));
  }
  for (; i + 8 <= n; i += 8) a = lane_round(a, load64(p + i));
  if (i < n) {
    uint64_t w = 0;
    std::memcpy(&w, p + i, n - i);
    b = lane_round(b, w);
  }
  uint64_t h = mix64(n ^ a);
  h = mix64(h ^ b);
  h = mix64(h ^ c);
  return mix64(h ^ d);
}

// ---- buffers and metadata ---------------------------------------------------------------------

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Bytes = std::unique_ptr<uint8_t, FreeDeleter>;

// malloc without zero-filling (the bytes are overwritten at once); never null on success.
Bytes allocate(size_t n) {
  return Bytes(static_cast<uint8_t*>(std::malloc(std::max<size_t>(n, 1))));
}

struct PartSize {
  uint64_t raw = 0;
  uint64_t stored = 0;  // == raw: stored raw; < raw: lz4
};

struct Meta {
  std::vector<PartSize> sizes;
  uint64_t raw_bytes = 0;
  uint64_t stored_bytes = 0;
  uint64_t checksum = 0;  // of the stored bytes; disk entries only
};

// Spare buffers, by size, kept from taken RAM entries so that later puts reuse memory that is
// already mapped instead of page-faulting fresh memory (which runs at a fraction of memcpy speed).
class BufferPool {
 public:
  // A buffer of n bytes (n > 0): a spare one if any, else a new one; null if malloc fails.
  Bytes get(size_t n) {
    auto it = spare_.find(n);
    if (it != spare_.end() && !it->second.empty()) {
      Bytes b = std::move(it->second.back());
      it->second.pop_back();
      bytes_ -= n;
      return b;
    }
    return allocate(n);
  }
  // Keeps `b` (n bytes) while the pool stays within `budget` bytes; frees it otherwise.
  void give(Bytes b, size_t n, uint64_t budget) {
    if (!b || n == 0 || n > budget || bytes_ > budget - n) return;
    spare_[n].push_back(std::move(b));
    bytes_ += n;
  }
  // Frees spare buffers until at most `budget` bytes are kept.
  void shrink_to(uint64_t budget) {
    for (auto it = spare_.begin(); it != spare_.end() && bytes_ > budget;) {
      while (!it->second.empty() && bytes_ > budget) {
        it->second.pop_back();
        bytes_ -= it->first;
      }
      it = it->second.empty() ? spare_.erase(it) : std::next(it);
    }
  }
  uint64_t bytes() const { return bytes_; }
  void clear() {
    spare_.clear();
    bytes_ = 0;
  }

 private:
  std::unordered_map<size_t, std::vector<Bytes>> spare_;
  uint64_t bytes_ = 0;
};

// An entry's stored bytes: one owned buffer per part, or (uncompressed, going to disk) the
// caller's parts. Per-part buffers are block-sized, so malloc serves them from memory it keeps
// after earlier takes instead of mapping (and page-faulting) fresh memory for a big entry.
struct Encoded {
  Meta meta;
  std::vector<Bytes> buffers;                      // empty when segments point into the parts
  std::vector<std::span<const uint8_t>> segments;  // stored bytes of each part
};

// Splits a contiguous run of stored bytes (as in a file) into its parts' segments.
std::vector<std::span<const uint8_t>> segments_of(const uint8_t* buffer, const Meta& meta) {
  std::vector<std::span<const uint8_t>> segs;
  segs.reserve(meta.sizes.size());
  uint64_t off = 0;
  for (const PartSize& s : meta.sizes) {
    segs.emplace_back(buffer + off, s.stored);
    off += s.stored;
  }
  return segs;
}

uint64_t checksum_of(const std::vector<std::span<const uint8_t>>& segs) {
  uint64_t h = kMulB;
  for (size_t i = 0; i < segs.size(); ++i)
    h = mix64(h ^ checksum64(segs[i].data(), segs[i].size(), i));
  return h;
}

// Stored form of `parts`. With `copy` false and no compression the segments point into `parts`.
// Buffers come from `pool`; compression scratch goes back to it within `pool_budget` bytes.
Result<Encoded> encode(std::span<const std::span<const uint8_t>> parts, bool compress, bool copy,
                       BufferPool& pool, uint64_t pool_budget) {
  Encoded enc;
  enc.meta.sizes.reserve(parts.size());
  enc.segments.reserve(parts.size());
  for (const auto& p : parts) enc.meta.raw_bytes += p.size();
  if (!compress && !copy) {
    for (const auto& p : parts) {
      enc.meta.sizes.push_back({p.size(), p.size()});
      enc.segments.push_back(p);
    }
    enc.meta.stored_bytes = enc.meta.raw_bytes;
    return enc;
  }
  enc.buffers.reserve(parts.size());
  for (const auto& p : parts) {
    Bytes buf;
    uint64_t stored = p.size();
    if (!p.empty()) {
      buf = pool.get(p.size());
      if (!buf) {
        return Status(StatusCode::kOutOfMemory,
                      "swap: cannot allocate " + std::to_string(p.size()) + " bytes");
      }
      if (compress && p.size() >= 2 && p.size() <= static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) {
        // Output capacity raw - 1: lz4 gives up (returns 0) unless the part shrinks.
        int n = LZ4_compress_default(reinterpret_cast<const char*>(p.data()),
                                     reinterpret_cast<char*>(buf.get()), static_cast<int>(p.size()),
                                     static_cast<int>(p.size() - 1));
        if (n > 0) {
          Bytes small = allocate(static_cast<size_t>(n));
          if (!small)
            return Status(StatusCode::kOutOfMemory,
                          "swap: cannot allocate " + std::to_string(n) + " bytes");
          std::memcpy(small.get(), buf.get(), static_cast<size_t>(n));
          pool.give(std::move(buf), p.size(), pool_budget);
          buf = std::move(small);
          stored = static_cast<uint64_t>(n);
        }
      }
      if (stored == p.size()) std::memcpy(buf.get(), p.data(), p.size());
    }
    enc.meta.sizes.push_back({p.size(), stored});
    enc.meta.stored_bytes += stored;
    enc.segments.emplace_back(buf.get(), stored);
    enc.buffers.push_back(std::move(buf));
  }
  return enc;
}

// Hands the raw-sized buffers among `buffers` (parts stored raw) back to `pool`; frees the rest.
void recycle(std::vector<Bytes>& buffers, const Meta& meta, BufferPool& pool,
             uint64_t pool_budget) {
  for (size_t i = 0; i < buffers.size(); ++i) {
    if (meta.sizes[i].stored == meta.sizes[i].raw)
      pool.give(std::move(buffers[i]), meta.sizes[i].raw, pool_budget);
  }
  buffers.clear();
}

// Restores stored segments (one per part, as `meta` says) into `parts`; false if lz4 data is bad.
bool decode(const Meta& meta, const std::vector<std::span<const uint8_t>>& segs,
            std::span<const std::span<uint8_t>> parts) {
  for (size_t i = 0; i < parts.size(); ++i) {
    const PartSize& s = meta.sizes[i];
    if (s.stored == s.raw) {
      if (s.raw > 0) std::memcpy(parts[i].data(), segs[i].data(), s.raw);
    } else {
      int n = LZ4_decompress_safe(reinterpret_cast<const char*>(segs[i].data()),
                                  reinterpret_cast<char*>(parts[i].data()),
                                  static_cast<int>(s.stored), static_cast<int>(s.raw));
      if (n < 0 || static_cast<uint64_t>(n) != s.raw) return false;
    }
  }
  return true;
}

std::vector<uint8_t> encode_header(uint64_t key, const Meta& meta) {
  std::vector<uint8_t> h(kHeaderBytes + meta.sizes.size() * 16);
  uint8_t* p = h.data();
  auto put64 = [&p](uint64_t v) {
    std::memcpy(p, &v, 8);
    p += 8;
  };
  std::memcpy(p, kMagic, 8);
  p += 8;
  const uint32_t version = kVersion, reserved = 0;
  std::memcpy(p, &version, 4);
  std::memcpy(p + 4, &reserved, 4);
  p += 8;
  put64(key);
  put64(meta.sizes.size());
  put64(meta.raw_bytes);
  put64(meta.stored_bytes);
  put64(meta.checksum);
  for (const PartSize& s : meta.sizes) {
    put64(s.raw);
    put64(s.stored);
  }
  return h;
}

std::string os_error(int err) {
  return std::system_category().message(err);
}

std::string key_name(uint64_t key) {
  return "swap entry " + std::to_string(key);
}

// Reads exactly n bytes (EINTR and short reads retried). 0 on success, an errno, or -1 at an
// early end of file.
int read_fully(int fd, uint8_t* p, size_t n) {
  size_t off = 0;
  while (off < n) {
    ssize_t r = ::read(fd, p + off, std::min(n - off, kMaxIoChunk));
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (r == 0) return -1;
    off += static_cast<size_t>(r);
  }
  return 0;
}

// Closes a descriptor on scope exit unless released.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

struct SwapStore::Impl {
  struct Entry {
    SwapWhere where = SwapWhere::kRam;
    Meta meta;
    std::vector<Bytes> data;                         // RAM: the stored bytes, per part
    std::vector<std::span<const uint8_t>> segments;  // RAM: views of `data`
    std::string path;                                // disk: the file
  };

  SwapStoreOptions options;
  std::string subdir;  // private directory; empty: no disk
  std::unordered_map<uint64_t, Entry> entries;
  SwapStats stats;
  BufferPool pool;  // spare RAM buffers: pool.bytes() + stats.bytes_ram <= ram_limit_bytes
  uint64_t file_bytes_written = 0;  // for fail_writes_after_bytes
  uint64_t next_file_id = 0;

  // Room for spare buffers: what the RAM limit leaves beside the entries held.
  uint64_t pool_budget() const {
    return stats.bytes_ram < options.ram_limit_bytes ? options.ram_limit_bytes - stats.bytes_ram
                                                     : 0;
  }

  bool fits_ram(uint64_t stored) const {
    return stored <= options.ram_limit_bytes && stats.bytes_ram <= options.ram_limit_bytes - stored;
  }

  Status over_limit(uint64_t key, uint64_t stored, const char* why) const {
    return Status(StatusCode::kOutOfMemory, key_name(key) + ": " + std::to_string(stored) +
                                                " bytes do not fit under the swap RAM limit of " +
                                                std::to_string(options.ram_limit_bytes) +
                                                " bytes (" + std::to_string(stats.bytes_ram) +
                                                " held) and " + why);
  }

  Result<SwapWhere> choose(uint64_t key, SwapWhere where, uint64_t stored) const {
    switch (where) {
      case SwapWhere::kRam:
        if (fits_ram(stored)) return SwapWhere::kRam;
        return over_limit(key, stored, "the put asked for RAM only");
      case SwapWhere::kDisk:
        return SwapWhere::kDisk;  // the directory was checked before
      case SwapWhere::kAuto:
        if (fits_ram(stored)) return SwapWhere::kRam;
        if (!subdir.empty()) return SwapWhere::kDisk;
        return over_limit(key, stored, "no swap directory is set");
    }
    return internal_error("swap: bad SwapWhere");
  }

  std::string new_path(const char* stem) {
    return subdir + "/" + stem + "-" + std::to_string(next_file_id++) + ".swp";
  }

  // Writes all of `s`, retrying EINTR and short writes. 0 or an errno.
  int write_fully(int fd, std::span<const uint8_t> s) {
    size_t off = 0;
    while (off < s.size()) {
      if (file_bytes_written >= options.fail_writes_after_bytes) return ENOSPC;  // test-only
      uint64_t want = std::min<uint64_t>(
          {s.size() - off, kMaxIoChunk, options.fail_writes_after_bytes - file_bytes_written});
      ssize_t r = ::write(fd, s.data() + off, static_cast<size_t>(want));
      if (r < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (r == 0) return EIO;
      off += static_cast<size_t>(r);
      file_bytes_written += static_cast<uint64_t>(r);
    }
    return 0;
  }

  // Writes a whole entry file; on failure unlinks it and returns kIo naming the path.
  Status write_file(const std::string& path, uint64_t key, const Meta& meta,
                    const std::vector<std::span<const uint8_t>>& segments) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return io_error("swap: cannot create " + path + ": " + os_error(errno));
    std::vector<uint8_t> header = encode_header(key, meta);
    int err = write_fully(fd, header);
    for (size_t i = 0; i < segments.size() && err == 0; ++i) err = write_fully(fd, segments[i]);
    if (::close(fd) != 0 && err == 0) err = errno;
    if (err != 0) {
      ::unlink(path.c_str());
      return io_error("swap: cannot write " + path + ": " + os_error(err));
    }
    return Status::ok();
  }

  // Reads and checks an entry file into `parts` (sizes already checked against meta).
  Status read_file(const std::string& path, uint64_t key, const Meta& meta,
                   std::span<const std::span<uint8_t>> parts) {
    FdGuard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (fd.fd < 0) return io_error("swap: cannot open " + path + ": " + os_error(errno));
    struct stat st {};
    if (::fstat(fd.fd, &st) != 0)
      return io_error("swap: cannot stat " + path + ": " + os_error(errno));
    const std::vector<uint8_t> expected = encode_header(key, meta);
    const uint64_t expected_size = expected.size() + meta.stored_bytes;
    if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) != expected_size) {
      return corrupt("swap: " + path + " is " + std::to_string(st.st_size) + " bytes, expected " +
                     std::to_string(expected_size) + " (truncated or damaged)");
    }
    auto read_or_status = [&](uint8_t* p, size_t n) -> Status {
      int r = read_fully(fd.fd, p, n);
      if (r == 0) return Status::ok();
      if (r < 0) return corrupt("swap: " + path + " ended early (truncated while reading)");
      return io_error("swap: cannot read " + path + ": " + os_error(r));
    };
    std::vector<uint8_t> header(expected.size());
    LLMT_RETURN_IF_ERROR(read_or_status(header.data(), header.size()));
    if (std::memcmp(header.data(), kMagic, sizeof(kMagic)) != 0)
      return corrupt("swap: " + path + ": bad magic");
    if (header != expected) {
      return corrupt("swap: " + path + ": header does not match " + key_name(key) +
                     " (key, sizes or checksum field damaged)");
    }
    uint64_t sum = 0;
    if (meta.stored_bytes == meta.raw_bytes) {
      // All parts raw: read straight into the caller's spans.
      std::vector<std::span<const uint8_t>> segs;
      segs.reserve(parts.size());
      for (const auto& p : parts) {
        LLMT_RETURN_IF_ERROR(read_or_status(p.data(), p.size()));
        segs.emplace_back(p.data(), p.size());
      }
      sum = checksum_of(segs);
      if (sum != meta.checksum)
        return corrupt("swap: " + path + ": checksum mismatch (data damaged)");
      return Status::ok();
    }
    Bytes buf = allocate(meta.stored_bytes);
    if (!buf) {
      return Status(
          StatusCode::kOutOfMemory,
          "swap: cannot allocate " + std::to_string(meta.stored_bytes) + " bytes to read " + path);
    }
    LLMT_RETURN_IF_ERROR(read_or_status(buf.get(), meta.stored_bytes));
    const std::vector<std::span<const uint8_t>> segs = segments_of(buf.get(), meta);
    sum = checksum_of(segs);
    if (sum != meta.checksum)
      return corrupt("swap: " + path + ": checksum mismatch (data damaged)");
    if (!decode(meta, segs, parts)) return corrupt("swap: " + path + ": undecodable lz4 data");
    return Status::ok();
  }

  void forget(const Entry& e) {
    if (e.where == SwapWhere::kRam) {
      stats.n_entries_ram -= 1;
      stats.bytes_ram -= e.meta.stored_bytes;
    } else {
      stats.n_entries_disk -= 1;
      stats.bytes_disk -= e.meta.stored_bytes;
      ::unlink(e.path.c_str());
    }
  }
};

SwapStore::SwapStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SwapStore::~SwapStore() {
  if (impl_ && !impl_->subdir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(impl_->subdir, ec);  // best effort; nothing to report to
  }
}

Result<std::unique_ptr<SwapStore>> SwapStore::create(const SwapStoreOptions& options) {
  if (options.compression != SwapCompression::kNone &&
      options.compression != SwapCompression::kLz4) {
    return invalid_argument("swap: unknown compression " +
                            std::to_string(static_cast<int>(options.compression)));
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (!options.dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.dir, ec);
    if (ec) return io_error("swap: cannot create directory " + options.dir + ": " + ec.message());
    std::string templ = options.dir + "/llmt-swap-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) {
      return io_error("swap: cannot create a private directory in " + options.dir + ": " +
                      os_error(errno));
    }
    impl->subdir = buf.data();
  }
  return std::unique_ptr<SwapStore>(new SwapStore(std::move(impl)));
}

Result<SwapWhere> SwapStore::put(uint64_t key, std::span<const std::span<const uint8_t>> parts,
                                 SwapWhere where) {
  Impl& s = *impl_;
  if (where != SwapWhere::kAuto && where != SwapWhere::kRam && where != SwapWhere::kDisk) {
    return invalid_argument(key_name(key) + ": unknown SwapWhere " +
                            std::to_string(static_cast<int>(where)));
  }
  if (s.entries.count(key) != 0) return invalid_argument(key_name(key) + " is already present");
  if (where == SwapWhere::kDisk && s.subdir.empty()) {
    return invalid_argument(key_name(key) + ": put to disk, but the swap store has no directory");
  }
  const bool compress = s.options.compression == SwapCompression::kLz4;
  uint64_t raw_bytes = 0;
  for (const auto& p : parts) raw_bytes += p.size();

  SwapWhere target = SwapWhere::kRam;
  if (!compress) {
    LLMT_ASSIGN_OR_RETURN(target, s.choose(key, where, raw_bytes));
  }
  LLMT_ASSIGN_OR_RETURN(
      Encoded enc, encode(parts, compress, /*copy=*/compress || target == SwapWhere::kRam, s.pool,
                          s.pool_budget()));
  if (compress) {
    LLMT_ASSIGN_OR_RETURN(target, s.choose(key, where, enc.meta.stored_bytes));
  }

  Impl::Entry e;
  e.where = target;
  if (target == SwapWhere::kDisk) {
    enc.meta.checksum = checksum_of(enc.segments);
    e.path = s.new_path("entry");
    LLMT_RETURN_IF_ERROR(s.write_file(e.path, key, enc.meta, enc.segments));
    recycle(enc.buffers, enc.meta, s.pool, s.pool_budget());
    s.stats.n_entries_disk += 1;
    s.stats.bytes_disk += enc.meta.stored_bytes;
  } else {
    e.data = std::move(enc.buffers);
    e.segments = std::move(enc.segments);
    s.stats.n_entries_ram += 1;
    s.stats.bytes_ram += enc.meta.stored_bytes;
  }
  s.pool.shrink_to(s.pool_budget());
  s.stats.bytes_in_total += enc.meta.raw_bytes;
  s.stats.bytes_stored_total += enc.meta.stored_bytes;
  s.stats.n_puts += 1;
  e.meta = std::move(enc.meta);
  s.entries.emplace(key, std::move(e));
  return target;
}

Status SwapStore::take(uint64_t key, std::span<const std::span<uint8_t>> parts) {
  Impl& s = *impl_;
  auto it = s.entries.find(key);
  if (it == s.entries.end()) return not_found(key_name(key) + " is not in the swap store");
  const Meta& meta = it->second.meta;
  if (parts.size() != meta.sizes.size()) {
    return invalid_argument(key_name(key) + ": take with " + std::to_string(parts.size()) +
                            " parts, put had " + std::to_string(meta.sizes.size()));
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].size() != meta.sizes[i].raw) {
      return invalid_argument(key_name(key) + ": part " + std::to_string(i) + " is " +
                              std::to_string(parts[i].size()) + " bytes, put had " +
                              std::to_string(meta.sizes[i].raw));
    }
  }
  Impl::Entry e = std::move(it->second);
  s.entries.erase(it);
  Status st;
  if (e.where == SwapWhere::kRam) {
    if (!decode(e.meta, e.segments, parts))
      st = internal_error(key_name(key) + ": RAM copy failed to decode");
  } else {
    st = s.read_file(e.path, key, e.meta, parts);
  }
  s.forget(e);
  recycle(e.data, e.meta, s.pool, s.pool_budget());
  if (st.is_ok()) s.stats.n_gets += 1;
  return st;
}

void SwapStore::erase(uint64_t key) {
  Impl& s = *impl_;
  auto it = s.entries.find(key);
  if (it == s.entries.end()) return;
  s.forget(it->second);
  recycle(it->second.data, it->second.meta, s.pool, s.pool_budget());
  s.entries.erase(it);
}

bool SwapStore::contains(uint64_t key) const {
  return impl_->entries.count(key) != 0;
}

SwapStats SwapStore::stats() const {
  SwapStats st = impl_->stats;
  st.bytes_ram_spare = impl_->pool.bytes();
  return st;
}

void SwapStore::trim() {
  impl_->pool.clear();
}

const std::string& SwapStore::disk_dir() const {
  return impl_->subdir;
}

Result<SwapStore::Throughput> SwapStore::measure(size_t bytes) {
  Impl& s = *impl_;
  if (bytes == 0) return invalid_argument("swap: measure needs a buffer of at least 1 byte");
  Bytes src = allocate(bytes), dst = allocate(bytes);
  if (!src || !dst) {
    return Status(StatusCode::kOutOfMemory,
                  "swap: cannot allocate 2 x " + std::to_string(bytes) + " bytes to measure");
  }
  // F16-like data: random sign and 10-bit mantissa, exponent in [2^-5, 2^0], as in a KV cache.
  uint64_t x = 0x243F6A8885A308D3ull;
  for (size_t i = 0; i < bytes; i += 2) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const uint16_t h = static_cast<uint16_t>(((x >> 20) & 0x8000u) |
                                             ((10u + (x >> 40) % 6u) << 10) | (x & 0x3FFu));
    std::memcpy(src.get() + i, &h, std::min<size_t>(2, bytes - i));
  }
  std::vector<std::span<const uint8_t>> in;
  std::vector<std::span<uint8_t>> out;
  for (size_t off = 0; off < bytes; off += kMeasurePartBytes) {
    const size_t n = std::min(kMeasurePartBytes, bytes - off);
    in.emplace_back(src.get() + off, n);
    out.emplace_back(dst.get() + off, n);
  }
  const bool compress = s.options.compression == SwapCompression::kLz4;
  using Clock = std::chrono::steady_clock;

  // Best of at least 3 round trips, more while under ~0.1 s in all.
  auto best_of = [&](auto&& round_trip) -> Result<double> {
    double best = 0, total = 0;
    for (int i = 0; i < 20 && (i < 3 || total < 0.1); ++i) {
      std::memset(dst.get(), 0, bytes);  // also faults the pages in before the clock starts
      const auto t0 = Clock::now();
      LLMT_RETURN_IF_ERROR(round_trip());
      const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
      if (std::memcmp(src.get(), dst.get(), bytes) != 0)
        return internal_error("swap: measure round trip differs");
      total += dt;
      if (i == 0 || dt < best) best = dt;
    }
    return static_cast<double>(bytes) / std::max(best, 1e-9);
  };

  // A pool of its own, so that the numbers are those of a warm store whatever the RAM limit.
  BufferPool pool;
  const uint64_t budget = std::numeric_limits<uint64_t>::max();
  uint64_t stored_bytes = bytes;
  auto ram_round_trip = [&]() -> Status {
    LLMT_ASSIGN_OR_RETURN(Encoded enc, encode(in, compress, /*copy=*/true, pool, budget));
    stored_bytes = enc.meta.stored_bytes;
    if (!decode(enc.meta, enc.segments, out))
      return internal_error("swap: measure: RAM copy failed to decode");
    recycle(enc.buffers, enc.meta, pool, budget);
    return Status::ok();
  };
  auto disk_round_trip = [&]() -> Status {
    LLMT_ASSIGN_OR_RETURN(Encoded enc, encode(in, compress, /*copy=*/compress, pool, budget));
    enc.meta.checksum = checksum_of(enc.segments);
    const std::string path = s.new_path("measure");
    LLMT_RETURN_IF_ERROR(s.write_file(path, 0, enc.meta, enc.segments));
    Status st = s.read_file(path, 0, enc.meta, out);
    ::unlink(path.c_str());
    recycle(enc.buffers, enc.meta, pool, budget);
    return st;
  };
  Throughput tp;
  LLMT_ASSIGN_OR_RETURN(tp.ram_bytes_per_s, best_of(ram_round_trip));
  tp.stored_fraction = static_cast<double>(stored_bytes) / static_cast<double>(bytes);
  if (!s.subdir.empty()) {
    LLMT_ASSIGN_OR_RETURN(tp.disk_bytes_per_s, best_of(disk_round_trip));
  }
  return tp;
}

}  // namespace llmt::kv
