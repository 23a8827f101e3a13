// Helpers shared by the job-io sections (job-io-input.cpp, job-io-output.cpp,
// job-io-progress.cpp): POSIX I/O that retries, UTF-8 and JSON checks, hashing. Internal to
// tools/common.
//
// Thread-safety: pure functions over their arguments.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/job-io.h"

namespace llmt::tasks::io_detail {

using json = nlohmann::json;

inline constexpr size_t kReadBufferBytes = size_t{256} << 10;
inline constexpr size_t kMaxJsonDepth = 256;
inline constexpr uint64_t kIdentityHashBytes = uint64_t{1} << 20;
inline constexpr int kSidecarVersion = 1;

inline std::string errno_text(int err) {
  return std::strerror(err);
}

inline double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Writes all of `data`, retrying short writes and EINTR.
inline bool write_all(int fd, const char* data, size_t n, int* err, size_t* n_written = nullptr) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::write(fd, data + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      *err = errno;
      if (n_written != nullptr) *n_written = done;
      return false;
    }
    done += static_cast<size_t>(w);
  }
  if (n_written != nullptr) *n_written = done;
  return true;
}

// Reads up to n bytes at `offset`; returns bytes read or -1 (errno set).
inline ssize_t pread_full(int fd, char* data, size_t n, uint64_t offset) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, data + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(got);
}

// Offset of the first byte that is not part of well-formed UTF-8 (no overlongs, surrogates or
// code points over U+10FFFF), or npos.
inline size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

// Deepest nesting of arrays/objects outside strings (a bound the recursive dump can take).
inline size_t json_depth(std::string_view s) {
  size_t depth = 0, max_depth = 0;
  bool in_string = false, escape = false;
  for (char c : s) {
    if (in_string) {
      if (escape) {
        escape = false;
      } else if (c == '\\') {
        escape = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return max_depth;
}

inline bool is_blank(std::string_view s) {
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\r') return false;
  }
  return true;
}

inline std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

inline std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

inline uint64_t fnv1a64(const char* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(p[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

inline std::string parent_dir(const std::string& path) {
  std::filesystem::path p = std::filesystem::path(path).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

inline Status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return io_error(dir + ": cannot open directory to sync it: " + errno_text(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) return io_error(dir + ": fsync: " + errno_text(err));
  return Status::ok();
}

}  // namespace llmt::tasks::io_detail

namespace llmt::tasks {

using namespace io_detail;

// ---------------------------------------------------------------------------------------------
// Line source: buffered pread from a file descriptor, one LF-terminated line at a time.

class InputReader::LineSource {
 public:
  LineSource(int fd, bool own_fd, size_t max_line) : fd_(fd), own_fd_(own_fd), max_line_(max_line) {
    buf_.resize(kReadBufferBytes);
  }
  ~LineSource() {
    if (own_fd_ && fd_ >= 0) ::close(fd_);
  }
  LineSource(const LineSource&) = delete;
  LineSource& operator=(const LineSource&) = delete;

  // Next line without its LF into *line; false at the end of the file. A line longer than
  // max_line is not held: *too_long is set and *line is empty. *has_lf: the line ended with LF.
  Result<bool> next(std::string* line, uint64_t* offset, bool* too_long, bool* has_lf) {
    line->clear();
    *too_long = false;
    *has_lf = false;
    if (pos_ == end_) {
      LLMT_RETURN_IF_ERROR(fill());
      if (pos_ == end_) return false;
    }
    *offset = offset_next();
    size_t len = 0;
    for (;;) {
      if (pos_ == end_) {
        LLMT_RETURN_IF_ERROR(fill());
        if (pos_ == end_) return true;  // last line without LF
      }
      const char* p = buf_.data() + pos_;
      size_t n = end_ - pos_;
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', n));
      size_t take = nl ? static_cast<size_t>(nl - p) : n;
      if (!*too_long) {
        if (len + take > max_line_) {
          *too_long = true;
          line->clear();
          line->shrink_to_fit();
        } else {
          line->append(p, take);
        }
      }
      len += take;
      pos_ += take;
      if (nl) {
        ++pos_;
        *has_lf = true;
        return true;
      }
    }
  }

  // File offset of the next unread byte.
  uint64_t offset_next() const { return file_off_ - (end_ - pos_); }
  int fd() const { return fd_; }

 private:
  Status fill() {
    ssize_t r;
    do {
      r = ::pread(fd_, buf_.data(), buf_.size(), static_cast<off_t>(file_off_));
    } while (r < 0 && errno == EINTR);
    if (r < 0)
      return io_error("read failed at offset " + std::to_string(file_off_) + ": " +
                      errno_text(errno));
    pos_ = 0;
    end_ = static_cast<size_t>(r);
    file_off_ += static_cast<uint64_t>(r);
    return Status::ok();
  }

  int fd_;
  bool own_fd_;
  size_t max_line_;
  std::vector<char> buf_;
  size_t pos_ = 0, end_ = 0;
  uint64_t file_off_ = 0;  // file offset just past buf_[end_)
};

}  // namespace llmt::tasks
