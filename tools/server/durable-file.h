// Small POSIX helpers for the server's durable state (file-store.h, batch-store.h): whole-file
// atomic replacement and random ids.
//
// Thread-safety: pure functions over their arguments (concurrent calls on distinct paths are
// safe; callers serialize writes of one path).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "llmthreads/status.h"

namespace llmt::server {

// Writes `content` to `path` atomically and durably: a temporary file in the same folder,
// written, fsync'ed, renamed over `path`, then the folder fsync'ed. On failure nothing is left
// behind (the temporary file is removed) and `path` keeps its old content, if any. Errors:
// kOutOfMemory when the disk is full, over quota or over the file size limit (ENOSPC, EDQUOT,
// EFBIG: the server answers 507), kIo otherwise (message names the path and the OS error).
Status write_file_atomic(const std::string& path, std::string_view content);

// fsync of a folder (after a rename or unlink in it). kIo on failure.
Status sync_dir(const std::string& dir);

// The Status for a failed write of `what` with errno `err` (as write_file_atomic maps it).
Status write_error(const std::string& what, int err);

// n random lowercase hex digits (std::random_device).
std::string random_hex(size_t n);

// The whole content of `path`. kNotFound when it does not exist, kIo otherwise.
Result<std::string> read_whole_file(const std::string& path);

}  // namespace llmt::server
