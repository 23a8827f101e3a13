// Request parsing of the HTTP front (http-front.h): pure functions over bytes, so that they can
// be tested (and fuzzed) without sockets. Thread-safety: none needed (no shared state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "http-front.h"

namespace llmt::server::http {

// What the head of a request says about its body and connection.
struct HeadInfo {
  bool chunked = false;          // Transfer-Encoding: chunked
  uint64_t content_length = 0;   // when !chunked
  bool keep_alive = true;        // per version and Connection
  bool expect_continue = false;  // Expect: 100-continue
};

// Parses a request head (request line and header lines, each ending in CRLF, without the empty
// line that ends the head) into req (method, target, path, params, version, headers) and
// *info. Returns 0, or the HTTP status to answer: 400 (malformed), 417 (an Expect other than
// 100-continue), 431 (too many headers), 505 (an HTTP version other than 1.0 / 1.1).
int parse_head(std::string_view head, HttpRequest* req, HeadInfo* info);

// Percent-decodes s (and '+' as a space when plus_is_space). False when an escape is malformed
// or the result would hold a NUL byte.
bool url_decode(std::string_view s, bool plus_is_space, std::string* out);

// Incremental decoder of a chunked request body (RFC 9112 section 7.1): feed() takes bytes
// as they arrive and appends the data to *body.
class ChunkedDecoder {
 public:
  enum class State { kMore, kDone, kBad, kTooLarge };
  explicit ChunkedDecoder(size_t max_body) : max_body_(max_body) {}
  // Consumes a prefix of in (*used bytes) and returns kMore (needs more input), kDone (the body
  // and its trailers are complete; bytes after them belong to the next request), kBad
  // (malformed framing) or kTooLarge (the data would exceed max_body).
  State feed(std::string_view in, size_t* used, std::string* body);

 private:
  enum class Part { kSize, kData, kDataEnd, kTrailer };
  size_t max_body_;
  Part part_ = Part::kSize;
  uint64_t remaining_ = 0;  // data bytes left in this chunk
};

// The reason phrase of a status code ("Unknown" for codes we do not send).
const char* reason_phrase(int status);

}  // namespace llmt::server::http
