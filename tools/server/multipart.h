// A small, strict multipart/form-data parser (RFC 7578 over RFC 2046) for POST /v1/files: our
// own, over the whole body the HTTP front has already read (and capped at max_body_bytes).
//
// Accepted: Content-Type "multipart/form-data; boundary=B" (type case-insensitive; B 1..70
// characters of RFC 2046's bchars, optionally quoted, not ending in a space); a body that starts
// with "--B" (no preamble), parts separated by CRLF "--B", each part a head of CRLF-terminated
// "Name: value" lines, an empty line, then its bytes (binary-safe: the part ends only at CRLF
// "--B"); the close delimiter "--B--" optionally followed by one CRLF and nothing else. Each part
// needs exactly one `Content-Disposition: form-data; name="..."` (optional filename="...";
// quoted values may escape '"' and '\' with a backslash; other parameters are ignored); a
// Content-Type header is kept; a Content-Transfer-Encoding other than 7bit / 8bit / binary is
// refused; other headers are ignored. Everything else (missing or bad boundary, preamble,
// bare-LF line ends, a head over max_part_head_bytes or with more than max_part_headers lines,
// more than max_parts parts, an empty or duplicate name, an unterminated body, bytes after the
// close delimiter) is an error.
//
// Thread-safety: pure functions; call from any thread.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/status.h"

namespace llmt::server {

struct MultipartPart {
  std::string name;                     // the form field's name (non-empty, unique in the body)
  std::optional<std::string> filename;  // set when the part had filename="..."
  std::string content_type;             // "" when the part had none
  std::string data;                     // the part's bytes
};

struct MultipartLimits {
  size_t max_parts = 16;
  size_t max_part_head_bytes = 8 << 10;
  size_t max_part_headers = 16;
};

// The boundary of a multipart/form-data Content-Type header value. kInvalidArgument when the
// type is not multipart/form-data or the boundary is missing or invalid.
Result<std::string> multipart_boundary(std::string_view content_type);

// Parses `body` of a request whose Content-Type header is `content_type`. Errors:
// kInvalidArgument with a message saying what is malformed (see the top of this file).
Result<std::vector<MultipartPart>> parse_multipart(std::string_view content_type,
                                                   std::string_view body,
                                                   const MultipartLimits& limits = {});

}  // namespace llmt::server
