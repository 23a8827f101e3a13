// The HTTP/1.1 front of `llmthreads serve`: event-driven connection handling of our own (epoll),
// so that clients that connect and then send slowly, or nothing at all, cost a little memory
// each and never a thread.
//
// Design:
//   * One event-loop thread owns every socket: it accepts, reads, parses the request (request
//     line, headers, a Content-Length or chunked body) and writes responses, all non-blocking.
//   * Only a complete request reaches a handler: it is queued for a fixed pool of handler
//     threads (n_handler_threads), which run the route's handler with httplib's plain data types
//     (httplib::Request / Response / DataSink; httplib's own Server is not used). A streaming
//     response (Response::set_chunked_content_provider) is produced on the handler thread into
//     the connection's output buffer, which the loop drains as the client reads: a slow reader
//     holds no thread beyond the time its handler needs to produce the response (a provider
//     that has max_out_bytes unsent waits for the client, up to write_timeout_s).
//   * Deadlines are per request, not per read: the whole request (head and body) must arrive
//     within request_timeout_s of its first byte (of the accept for the first request); a
//     keep-alive connection may wait idle_timeout_s for its next request; a response that makes
//     no progress for write_timeout_s is abandoned. A request that misses its deadline gets 408
//     and the connection is closed.
//   * Connection limits: at most max_connections open, and max_connections_per_client per peer
//     address. At a limit a new connection takes the place of the connection (of that address,
//     for the per-client limit) that has waited longest without a complete request (idle, or
//     still sending one): that one is closed. Only when every counted connection has a request
//     in progress is the new one refused (503, closed). So byte-trickling or idle connections
//     can fill neither limit against a real request.
//   * Bad requests get their status without running a handler: 400 (malformed request line,
//     header or chunk framing, both Content-Length and Transfer-Encoding, an unsupported
//     Transfer-Encoding), 413 (body over max_body_bytes), 431 (head over max_head_bytes),
//     404/405 (no route for the path / for the method), 408 (deadline), 505 (not HTTP/1.x), 417 (an
//     Expect other than 100-continue), 503 (max_pending complete requests already wait for a
//     handler thread). The error handler may give them a body; the connection is closed after each
//     of them.
//   * A client that closes its side of the connection (a FIN or a reset) is gone: its request, if
//     one is being handled, sees connection_closed() and its response is dropped. (So a client
//     must not half-close before it has read the response.)
//   * Keep-alive per HTTP/1.1 (HTTP/1.0 with "Connection: keep-alive"); pipelined requests are
//     answered in order; "Expect: 100-continue" is answered before the body is read. A handler
//     that sets "Connection: close" closes the connection after its response.
//
// Thread-safety: routes and handlers are set before start(); start() once; stop() and stats()
// from any thread; handlers run concurrently on the handler threads.
#pragma once

#include <httplib.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "llmthreads/status.h"

namespace llmt::server {

struct HttpFrontOptions {
  size_t max_body_bytes = size_t{8} << 20;   // a larger body: 413
  size_t max_head_bytes = size_t{32} << 10;  // request line + headers; larger: 431
  double request_timeout_s = 10.0;  // first byte (or accept) -> whole request read; else 408
  double idle_timeout_s = 30.0;     // a keep-alive connection waiting for its next request
  double write_timeout_s = 30.0;    // a response that makes no progress this long is abandoned
  int32_t max_connections = 16384;  // open connections at most (see the top of this file)
  int32_t max_connections_per_client = 0;  // per peer address; 0 = max_connections
  int32_t n_handler_threads = 16;          // threads running request handlers
  int32_t max_pending = 4096;  // complete requests waiting for a handler thread; beyond: 503
  size_t max_out_bytes = size_t{4} << 20;  // unsent bytes a streaming response may buffer
  int backlog = 4096;                      // listen() backlog
};

struct HttpFrontStats {
  int64_t n_open = 0;       // connections open now
  int64_t n_accepted = 0;   // connections accepted in all
  int64_t n_evicted = 0;    // closed at a connection limit to make room for a new one
  int64_t n_refused = 0;    // refused at a limit (every counted connection was busy)
  int64_t n_timed_out = 0;  // closed at a deadline (request, idle or write)
  int64_t n_requests = 0;   // complete requests handed to handlers
};

// What a handler receives: httplib's Request, plus a view of the connection. Every request the
// front passes to a handler is one of these (see connection_closed()).
struct HttpRequest : httplib::Request {
  // True once the client has closed or reset the connection (or the front closed it). Set by
  // the loop thread, read by the handler: atomic.
  std::shared_ptr<const std::atomic<bool>> closed;
};

// Whether the client of `req` (a request the front passed to a handler) has gone away.
bool connection_closed(const httplib::Request& req);

class HttpFront {
 public:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  // Runs before routing; returns true when it answered the request (no route handler runs).
  using PreRouting = std::function<bool(const httplib::Request&, httplib::Response&)>;
  // Gives a body to a status the front answers itself (400, 404, 405, 408, 413, 417, 431,
  // 503, 505)
  // and to a handler's response that has a status but no body.
  using ErrorHandler = std::function<void(const httplib::Request&, httplib::Response&)>;
  // A handler threw: fill the response (a 500 by default).
  using ExceptionHandler = std::function<void(const httplib::Request&, httplib::Response&)>;
  // After each answered request (its status final), on the thread that answered it.
  using Logger = std::function<void(const httplib::Request&, const httplib::Response&)>;

  explicit HttpFront(HttpFrontOptions options);
  ~HttpFront();  // stop()
  HttpFront(const HttpFront&) = delete;
  HttpFront& operator=(const HttpFront&) = delete;

  // Routes: `pattern` is a std::regex matched against the whole (percent-decoded) path; its
  // captures are in Request::matches. The first route registered that matches wins.
  void Get(const std::string& pattern, Handler handler);
  void Post(const std::string& pattern, Handler handler);
  void Delete(const std::string& pattern, Handler handler);
  void set_pre_routing_handler(PreRouting h);
  void set_error_handler(ErrorHandler h);
  void set_exception_handler(ExceptionHandler h);
  void set_logger(Logger h);

  // Binds host:port (port 0: any free port) and listens. Returns the bound port; kIo when the
  // address cannot be bound.
  Result<int> bind(const std::string& host, int port);
  // Starts the loop and handler threads (after bind()).
  Status start();
  // Stops accepting, closes connections that wait for or are still sending a request, lets the
  // responses in progress finish (each within write_timeout_s of its last progress), then
  // closes everything and joins the threads. Idempotent.
  void stop();
  HttpFrontStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmt::server
