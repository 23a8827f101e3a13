// The event loop, connection limits, deadlines and handler pool of the HTTP front (see
// http-front.h for the contract).
#include "http-front.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <regex>
#include <set>
#include <thread>
#include <unordered_map>
#include <vector>

#include "http-parse.h"

namespace llmt::server {

bool connection_closed(const httplib::Request& req) {
  // Every request a handler receives was made by the front as an HttpRequest.
  const auto& r = static_cast<const HttpRequest&>(req);
  return r.closed && r.closed->load(std::memory_order_acquire);
}

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 64 * 1024;
constexpr auto kSweepEvery = std::chrono::milliseconds(100);
constexpr auto kSweepSoon = std::chrono::milliseconds(2);
constexpr size_t kMaxExpiredPerSweep = 128;
// How long stop() lets responses in progress finish before closing everything.
constexpr auto kStopWait = std::chrono::seconds(30);
constexpr auto kLingerFor = std::chrono::seconds(2);

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// One client connection. The loop thread owns the socket and the request-side fields; the
// handler thread of its current request writes the response into `out` under mu.
struct Conn {
  int fd = -1;
  std::string peer;  // address only: the per-client limit's key
  int peer_port = -1;
  Clock::time_point accepted_at{};

  // ---- loop thread only ----
  bool busy = false;             // a complete request is with a handler or its response is sent
  bool have_head = false;        // the current request's head is parsed
  bool got_bytes = false;        // a byte of the current request has arrived
  bool first_request = true;     // no request was answered on this connection yet
  bool reading = true;           // EPOLLIN is armed
  bool want_out = false;         // EPOLLOUT is armed
  Clock::time_point deadline{};  // of the request (or idle wait) while !busy
  std::string in;                // received, not yet parsed
  size_t scanned = 0;            // bytes of `in` already searched for the end of the head
  http::HeadInfo info;
  http::ChunkedDecoder chunks{0};
  std::unique_ptr<HttpRequest> req;
  uint64_t wait_seq = 0;  // its key in the waiting sets (0: not waiting)
  // A rejected request's body may still be arriving: after the response the connection is shut
  // for writing and its input drained until the client closes or kLingerFor has passed, so that
  // the client reads the response rather than a reset.
  bool linger_after = false;
  bool lingering = false;

  // ---- shared with the handler thread ----
  std::mutex mu;
  std::condition_variable cv;  // out drained, or closed
  std::string out;             // response bytes not yet sent (from out_off)
  size_t out_off = 0;
  bool done = false;         // the response is complete in `out`
  bool close_after = false;  // close once `out` is sent
  bool notified = false;     // queued on the loop's ready list
  Clock::time_point last_progress{};
  std::shared_ptr<std::atomic<bool>> closed = std::make_shared<std::atomic<bool>>(false);
};

struct Route {
  std::string method;
  std::regex re;
  HttpFront::Handler handler;
};

struct ClientSlot {
  int32_t n_open = 0;
  std::set<std::pair<uint64_t, int>> waiting;  // (wait_seq, fd), oldest first
};

void set_nonblocking(int fd) {
  const int fl = fcntl(fd, F_GETFL, 0);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

// Case-insensitive equality of header names.
bool same_name(const std::string& a, const char* b) {
  return strcasecmp(a.c_str(), b) == 0;
}

}  // namespace

struct HttpFront::Impl {
  HttpFrontOptions opt;
  std::vector<Route> routes;
  PreRouting pre_routing;
  ErrorHandler error_handler;
  ExceptionHandler exception_handler;
  Logger logger;

  int listen_fd = -1;
  int epoll_fd = -1;
  int wake_fd = -1;
  std::thread loop_thread;
  std::vector<std::thread> workers;
  std::atomic<bool> stopping{false};
  std::mutex stop_mu;
  bool stopped = false;

  // Loop thread only.
  std::unordered_map<int, std::shared_ptr<Conn>> conns;
  std::unordered_map<std::string, ClientSlot> clients;
  std::set<std::pair<uint64_t, int>> waiting;  // every waiting connection, oldest first
  uint64_t next_seq = 1;
  bool accepting = true;  // the listening socket is in the epoll set

  // Loop <- handler threads: connections whose output changed.
  std::mutex ready_mu;
  std::vector<std::shared_ptr<Conn>> ready;

  // Handler threads' queue of complete requests.
  std::mutex q_mu;
  std::condition_variable q_cv;
  std::deque<std::shared_ptr<Conn>> queue;
  bool q_stop = false;

  struct Counters {
    std::atomic<int64_t> n_open{0}, n_accepted{0}, n_evicted{0}, n_refused{0}, n_timed_out{0},
        n_requests{0};
  } counters;

  // ---- handler side ----
  void wake() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(wake_fd, &one, sizeof(one));
  }
  // Hands c to the loop (its output changed). Requires c->mu.
  void notify_locked(const std::shared_ptr<Conn>& c) {
    if (c->notified) return;
    c->notified = true;
    {
      std::lock_guard<std::mutex> lk(ready_mu);
      ready.push_back(c);
    }
    wake();
  }
  // Appends bytes of the response; waits while max_out_bytes are unsent. False when the
  // connection is closed or the client read nothing for write_timeout_s.
  bool append_out(const std::shared_ptr<Conn>& c, std::string_view bytes) {
    std::unique_lock<std::mutex> lk(c->mu);
    const auto stalled = seconds(opt.write_timeout_s);
    while (!c->closed->load() && c->out.size() - c->out_off > opt.max_out_bytes) {
      if (c->cv.wait_for(lk, stalled) == std::cv_status::timeout &&
          Clock::now() - c->last_progress >= stalled) {
        c->close_after = true;
        return false;
      }
    }
    if (c->closed->load()) return false;
    if (c->out.size() == c->out_off) c->last_progress = Clock::now();
    c->out.append(bytes.data(), bytes.size());
    notify_locked(c);
    return true;
  }
  void finish_out(const std::shared_ptr<Conn>& c, bool close) {
    std::lock_guard<std::mutex> lk(c->mu);
    c->done = true;
    if (close) c->close_after = true;
    c->last_progress = Clock::now();
    notify_locked(c);
  }

  static std::string head_bytes(const httplib::Response& res, bool keep_alive,
                                const char* framing) {
    std::string h =
        "HTTP/1.1 " + std::to_string(res.status) + " " + http::reason_phrase(res.status) + "\r\n";
    for (const auto& [k, v] : res.headers) {
      if (same_name(k, "Content-Length") || same_name(k, "Transfer-Encoding") ||
          same_name(k, "Connection")) {
        continue;
      }
      h += k + ": " + v + "\r\n";
    }
    if (framing) h += framing;
    h += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
    return h;
  }

  bool wants_close(const httplib::Response& res) const {
    for (const auto& [k, v] : res.headers) {
      if (same_name(k, "Connection") && strcasecmp(v.c_str(), "close") == 0) return true;
    }
    return stopping.load();
  }

  // Sends res on c (the handler thread, or the loop for the front's own statuses). The logger
  // runs before the last byte is queued, so whatever it records is visible to the client once
  // the response is complete.
  void respond(const std::shared_ptr<Conn>& c, const HttpRequest& req, httplib::Response& res,
               bool keep_alive) {
    if (res.status <= 0) res.status = 200;
    if (res.status >= 400 && res.body.empty() && !res.content_provider_ && error_handler) {
      error_handler(req, res);
    }
    keep_alive = keep_alive && !wants_close(res);
    if (!res.content_provider_) {
      std::string bytes = head_bytes(
          res, keep_alive, ("Content-Length: " + std::to_string(res.body.size()) + "\r\n").c_str());
      bytes += res.body;
      if (logger) logger(req, res);
      append_out(c, bytes);
      finish_out(c, !keep_alive);
      return;
    }
    // A content provider: chunked for HTTP/1.1 when it has no length; for HTTP/1.0 without a
    // length, the end of the body is the end of the connection.
    const bool chunked = res.is_chunked_content_provider_ && req.version == "HTTP/1.1";
    const bool has_length = !res.is_chunked_content_provider_;
    if (!chunked && !has_length) keep_alive = false;
    std::string framing;
    if (chunked) framing = "Transfer-Encoding: chunked\r\n";
    if (has_length) framing = "Content-Length: " + std::to_string(res.content_length_) + "\r\n";
    bool ok = append_out(c, head_bytes(res, keep_alive, framing.c_str()));
    bool finished = false;
    size_t offset = 0;
    httplib::DataSink sink;
    sink.write = [&](const char* d, size_t n) {
      if (!ok || n == 0) return ok;
      if (has_length && offset + n > res.content_length_) return ok = false;
      if (chunked) {
        char size[24];
        std::snprintf(size, sizeof(size), "%zx\r\n", n);
        std::string frame = size;
        frame.append(d, n);
        frame += "\r\n";
        ok = append_out(c, frame);
      } else {
        ok = append_out(c, std::string_view(d, n));
      }
      if (ok) offset += n;
      return ok;
    };
    sink.is_writable = [&] { return ok && !c->closed->load(); };
    sink.done = [&] { finished = true; };
    while (ok && !finished && !(has_length && offset == res.content_length_)) {
      if (!res.content_provider_(offset, has_length ? res.content_length_ - offset : 0, sink)) {
        ok = false;
      }
    }
    if (ok) res.content_provider_success_ = true;
    if (logger) logger(req, res);
    // A response cut short cannot say so in HTTP/1.1 but by closing without the last chunk.
    if (ok && chunked) ok = append_out(c, "0\r\n\r\n");
    finish_out(c, !ok || !keep_alive);
  }

  void handle(const std::shared_ptr<Conn>& c) {
    HttpRequest& req = *c->req;
    httplib::Response res;
    try {
      if (!(pre_routing && pre_routing(req, res))) {
        bool path_known = false;
        const Route* route = nullptr;
        for (const Route& r : routes) {
          httplib::Match m;
          if (!std::regex_match(req.path, m, r.re)) continue;
          path_known = true;
          if (r.method != req.method) continue;
          route = &r;
          req.matches = std::move(m);
          break;
        }
        if (route) {
          route->handler(req, res);
        } else {
          res.status = path_known ? 405 : 404;
        }
      }
    } catch (...) {
      res = httplib::Response();
      res.status = 500;
      if (exception_handler) exception_handler(req, res);
    }
    respond(c, req, res, c->info.keep_alive);
  }

  void worker_main() {
    for (;;) {
      std::shared_ptr<Conn> c;
      {
        std::unique_lock<std::mutex> lk(q_mu);
        q_cv.wait(lk, [&] { return q_stop || !queue.empty(); });
        if (queue.empty()) return;
        c = std::move(queue.front());
        queue.pop_front();
      }
      if (c->closed->load()) {
        finish_out(c, true);
        continue;
      }
      handle(c);
    }
  }

  // ---- loop side ----
  void epoll_set(int op, int fd, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd, op, fd, &ev);
  }
  void update_events(Conn& c) {
    uint32_t ev = EPOLLRDHUP;
    if (c.reading) ev |= EPOLLIN;
    if (c.want_out) ev |= EPOLLOUT;
    epoll_set(EPOLL_CTL_MOD, c.fd, ev);
  }

  void enter_waiting(Conn& c) {
    c.wait_seq = next_seq++;
    waiting.emplace(c.wait_seq, c.fd);
    clients[c.peer].waiting.emplace(c.wait_seq, c.fd);
  }
  void leave_waiting(Conn& c) {
    if (c.wait_seq == 0) return;
    waiting.erase({c.wait_seq, c.fd});
    auto it = clients.find(c.peer);
    if (it != clients.end()) it->second.waiting.erase({c.wait_seq, c.fd});
    c.wait_seq = 0;
  }

  void close_conn(const std::shared_ptr<Conn>& c) {
    if (c->fd < 0) return;
    leave_waiting(*c);
    auto it = clients.find(c->peer);
    if (it != clients.end() && --it->second.n_open <= 0) clients.erase(it);
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, nullptr);
    conns.erase(c->fd);
    ::close(c->fd);
    c->fd = -1;
    counters.n_open.fetch_sub(1);
    {
      std::lock_guard<std::mutex> lk(c->mu);
      c->closed->store(true, std::memory_order_release);
    }
    c->cv.notify_all();
  }

  // Closes the oldest waiting connection of `set` to make room; false when there is none.
  bool evict_oldest(const std::set<std::pair<uint64_t, int>>& set) {
    if (set.empty()) return false;
    auto it = conns.find(set.begin()->second);
    if (it == conns.end()) return false;
    std::shared_ptr<Conn> victim = it->second;
    counters.n_evicted.fetch_add(1);
    close_conn(victim);
    return true;
  }

  // Starts waiting for the next request on c (after accept, or after a response).
  void start_request(Conn& c, Clock::time_point now) {
    c.busy = false;
    c.have_head = false;
    c.scanned = 0;
    c.info = http::HeadInfo{};
    c.req = std::make_unique<HttpRequest>();
    c.req->remote_addr = c.peer;
    c.req->remote_port = c.peer_port;
    c.req->closed = c.closed;
    c.got_bytes = !c.in.empty();
    c.deadline =
        now + seconds(c.got_bytes || c.first_request ? opt.request_timeout_s : opt.idle_timeout_s);
    enter_waiting(c);
  }

  void accept_all() {
    for (;;) {
      sockaddr_storage sa{};
      socklen_t len = sizeof(sa);
      const int fd =
          accept4(listen_fd, reinterpret_cast<sockaddr*>(&sa), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE) {
          // Out of descriptors: make room, or stop accepting until the next sweep.
          if (evict_oldest(waiting)) continue;
          epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
          accepting = false;
        }
        return;
      }
      counters.n_accepted.fetch_add(1);
      char host[INET6_ADDRSTRLEN] = {0};
      int port = -1;
      if (sa.ss_family == AF_INET) {
        const auto* a = reinterpret_cast<const sockaddr_in*>(&sa);
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
      } else if (sa.ss_family == AF_INET6) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(&sa);
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
      }
      const std::string peer = host;
      const int32_t per_client =
          opt.max_connections_per_client > 0 ? opt.max_connections_per_client : opt.max_connections;
      bool room = true;
      auto cl = clients.find(peer);
      if (cl != clients.end() && cl->second.n_open >= per_client) {
        room = evict_oldest(cl->second.waiting);
      }
      if (room && static_cast<int64_t>(conns.size()) >= opt.max_connections) {
        room = evict_oldest(waiting);
      }
      if (!room) {
        static constexpr char kBusy[] =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
            "Connection: close\r\n\r\n";
        counters.n_refused.fetch_add(1);
        [[maybe_unused]] ssize_t w = ::send(fd, kBusy, sizeof(kBusy) - 1, MSG_NOSIGNAL);
        ::close(fd);
        continue;
      }
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      auto c = std::make_shared<Conn>();
      c->fd = fd;
      c->peer = peer;
      c->peer_port = port;
      c->accepted_at = Clock::now();
      conns[fd] = c;
      ++clients[peer].n_open;
      counters.n_open.fetch_add(1);
      epoll_set(EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLRDHUP);
      start_request(*c, c->accepted_at);
    }
  }

  // Answers the current request of c with a status of the front's own and closes afterwards.
  void reject(const std::shared_ptr<Conn>& c, int status) {
    leave_waiting(*c);
    c->busy = true;
    c->in.clear();
    c->reading = false;
    c->linger_after = true;
    update_events(*c);
    httplib::Response res;
    res.status = status;
    if (status == 503) res.set_header("Retry-After", "1");
    if (status == 408) counters.n_timed_out.fetch_add(1);
    respond(c, *c->req, res, false);
  }

  // Parses what c has received; hands a complete request to the handler threads.
  void parse(const std::shared_ptr<Conn>& c) {
    Conn& k = *c;
    if (k.busy) return;
    if (!k.have_head) {
      const size_t from = k.scanned >= 3 ? k.scanned - 3 : 0;
      const size_t end = k.in.find("\r\n\r\n", from);
      if (end == std::string::npos) {
        k.scanned = k.in.size();
        if (k.in.size() > opt.max_head_bytes) reject(c, 431);
        return;
      }
      if (end + 4 > opt.max_head_bytes) return reject(c, 431);
      const int st = http::parse_head(std::string_view(k.in).substr(0, end), k.req.get(), &k.info);
      if (st != 0) return reject(c, st);
      k.in.erase(0, end + 4);
      k.have_head = true;
      if (!k.info.chunked && k.info.content_length > opt.max_body_bytes) return reject(c, 413);
      k.chunks = http::ChunkedDecoder(opt.max_body_bytes);
      if (k.info.expect_continue && (k.info.chunked || k.info.content_length > 0)) {
        std::lock_guard<std::mutex> lk(k.mu);
        k.out += "HTTP/1.1 100 Continue\r\n\r\n";
        k.last_progress = Clock::now();
        if (!k.notified) {
          k.notified = true;
          std::lock_guard<std::mutex> rl(ready_mu);
          ready.push_back(c);
        }
      }
    }
    if (k.info.chunked) {
      size_t used = 0;
      const http::ChunkedDecoder::State st = k.chunks.feed(k.in, &used, &k.req->body);
      k.in.erase(0, used);
      if (st == http::ChunkedDecoder::State::kBad) return reject(c, 400);
      if (st == http::ChunkedDecoder::State::kTooLarge) return reject(c, 413);
      if (st == http::ChunkedDecoder::State::kMore) return;
    } else {
      const auto need = static_cast<size_t>(k.info.content_length);
      if (k.in.size() < need) return;
      k.req->body = k.in.substr(0, need);
      k.in.erase(0, need);
    }
    // Complete: to a handler thread.
    leave_waiting(k);
    k.busy = true;
    {
      std::lock_guard<std::mutex> lk(k.mu);
      k.done = false;
      k.close_after = false;
    }
    counters.n_requests.fetch_add(1);
    bool queued = false;
    {
      std::lock_guard<std::mutex> lk(q_mu);
      if (static_cast<int64_t>(queue.size()) < opt.max_pending) {
        queue.push_back(c);
        queued = true;
      }
    }
    if (queued) {
      q_cv.notify_one();
    } else {
      reject(c, 503);
    }
  }

  void on_readable(const std::shared_ptr<Conn>& c, char* buf) {
    if (c->lingering) {
      for (;;) {
        const ssize_t n = ::recv(c->fd, buf, kReadChunk, 0);
        if (n > 0 || (n < 0 && errno == EINTR)) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        close_conn(c);
        return;
      }
    }
    for (;;) {
      if (!c->reading) return;
      // While a request is being handled, pipelined bytes wait in `in`, up to a head's size.
      if (c->busy && c->in.size() >= opt.max_head_bytes) {
        c->reading = false;
        update_events(*c);
        return;
      }
      const ssize_t n = ::recv(c->fd, buf, kReadChunk, 0);
      if (n > 0) {
        if (!c->got_bytes && !c->busy) {
          // The first request's deadline counts from the accept, a later one's from its first
          // byte.
          c->got_bytes = true;
          if (!c->first_request) c->deadline = Clock::now() + seconds(opt.request_timeout_s);
        }
        c->in.append(buf, static_cast<size_t>(n));
        parse(c);
        if (c->fd < 0) return;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      // The client closed (or reset) its side: whatever it still wanted is abandoned.
      close_conn(c);
      return;
    }
  }

  // Sends what c's response has ready; when it is complete, closes c or starts its next request.
  void flush(const std::shared_ptr<Conn>& c) {
    if (c->fd < 0) return;
    bool complete = false, close_after = false;
    {
      std::lock_guard<std::mutex> lk(c->mu);
      c->notified = false;
      while (c->out_off < c->out.size()) {
        const ssize_t n =
            ::send(c->fd, c->out.data() + c->out_off, c->out.size() - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
          c->out_off += static_cast<size_t>(n);
          c->last_progress = Clock::now();
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        close_after = true;  // EPIPE, ECONNRESET: the client is gone
        complete = true;
        break;
      }
      if (c->out_off == c->out.size()) {
        c->out.clear();
        c->out_off = 0;
      } else if (c->out_off > (size_t{1} << 20)) {
        c->out.erase(0, c->out_off);
        c->out_off = 0;
      }
      if (!complete && c->out.empty() && c->done) {
        complete = true;
        close_after = c->close_after;
      }
      const bool want_out = !c->out.empty() && !complete;
      if (want_out != c->want_out) {
        c->want_out = want_out;
        update_events(*c);
      }
    }
    c->cv.notify_all();
    if (!complete) return;
    if (close_after && c->linger_after && c->fd >= 0 && !stopping.load()) {
      ::shutdown(c->fd, SHUT_WR);
      c->lingering = true;
      c->busy = false;
      c->deadline = Clock::now() + kLingerFor;
      c->reading = true;
      update_events(*c);
      enter_waiting(*c);  // evictable
      return;
    }
    if (close_after || stopping.load()) {
      close_conn(c);
      return;
    }
    c->first_request = false;
    if (!c->reading) {
      c->reading = true;
      update_events(*c);
    }
    start_request(*c, Clock::now());
    parse(c);  // a pipelined request may be complete already
  }

  // Closes (or answers 408) at most kMaxExpiredPerSweep connections past their deadline, the
  // rest at the next pass, so that a crowd of connections expiring at once does not stall the
  // loop for everyone else. Returns whether some were left for the next pass.
  bool sweep(Clock::time_point now) {
    std::vector<std::shared_ptr<Conn>> expired;
    bool more = false;
    for (auto& [fd, c] : conns) {
      if (expired.size() == kMaxExpiredPerSweep) {
        more = true;
        break;
      }
      if (!c->busy) {
        if (now >= c->deadline) expired.push_back(c);
        continue;
      }
      std::lock_guard<std::mutex> lk(c->mu);
      if (c->out_off < c->out.size() && now - c->last_progress >= seconds(opt.write_timeout_s)) {
        expired.push_back(c);
      }
    }
    for (const auto& c : expired) {
      if (c->fd < 0) continue;
      if (c->lingering) {
        close_conn(c);
      } else if (!c->busy && c->got_bytes) {
        reject(c, 408);  // a request started and did not arrive in time
      } else {
        counters.n_timed_out.fetch_add(1);
        close_conn(c);
      }
    }
    if (!accepting && !stopping.load()) {
      epoll_set(EPOLL_CTL_ADD, listen_fd, EPOLLIN);
      accepting = true;
    }
    return more;
  }

  void loop_main() {
    std::vector<epoll_event> events(1024);
    std::vector<char> buf(kReadChunk);
    Clock::time_point next_sweep = Clock::now() + kSweepEvery;
    Clock::time_point stop_deadline{};
    bool stop_seen = false;
    for (;;) {
      if (stopping.load() && !stop_seen) {
        stop_seen = true;
        stop_deadline = Clock::now() + kStopWait;
        if (accepting) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
        accepting = false;
        std::vector<std::shared_ptr<Conn>> idle;
        for (auto& [fd, c] : conns) {
          if (!c->busy) idle.push_back(c);
        }
        for (const auto& c : idle) close_conn(c);
      }
      if (stop_seen && (conns.empty() || Clock::now() >= stop_deadline)) break;
      const auto until_sweep =
          std::chrono::duration_cast<std::chrono::milliseconds>(next_sweep - Clock::now());
      const int n = epoll_wait(
          epoll_fd, events.data(), static_cast<int>(events.size()),
          static_cast<int>(std::clamp<int64_t>(until_sweep.count(), 0, kSweepEvery.count())));
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        const uint32_t ev = events[i].events;
        if (fd == listen_fd) {
          if (!stopping.load()) accept_all();
          continue;
        }
        if (fd == wake_fd) {
          uint64_t v;
          [[maybe_unused]] ssize_t r = ::read(wake_fd, &v, sizeof(v));
          continue;
        }
        auto it = conns.find(fd);
        if (it == conns.end()) continue;
        std::shared_ptr<Conn> c = it->second;
        if (ev & EPOLLOUT) flush(c);
        if (c->fd < 0) continue;
        if ((ev & (EPOLLHUP | EPOLLERR)) || ((ev & EPOLLRDHUP) && !c->reading)) {
          close_conn(c);  // gone (a half-close counts: see the top of http-front.h)
        } else if (ev & (EPOLLIN | EPOLLRDHUP)) {
          on_readable(c, buf.data());  // reads to EAGAIN, or to the end: then closes
        }
      }
      std::vector<std::shared_ptr<Conn>> todo;
      {
        std::lock_guard<std::mutex> lk(ready_mu);
        todo.swap(ready);
      }
      for (const auto& c : todo) flush(c);
      const Clock::time_point now = Clock::now();
      if (now >= next_sweep) {
        next_sweep = sweep(now) ? now + kSweepSoon : now + kSweepEvery;
      }
    }
    std::vector<std::shared_ptr<Conn>> rest;
    for (auto& [fd, c] : conns) rest.push_back(c);
    for (const auto& c : rest) close_conn(c);
  }
};

HttpFront::HttpFront(HttpFrontOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(options);
}

HttpFront::~HttpFront() {
  stop();
  if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
  if (impl_->epoll_fd >= 0) ::close(impl_->epoll_fd);
  if (impl_->wake_fd >= 0) ::close(impl_->wake_fd);
}

void HttpFront::Get(const std::string& pattern, Handler handler) {
  impl_->routes.push_back({"GET", std::regex(pattern), std::move(handler)});
}
void HttpFront::Post(const std::string& pattern, Handler handler) {
  impl_->routes.push_back({"POST", std::regex(pattern), std::move(handler)});
}
void HttpFront::Delete(const std::string& pattern, Handler handler) {
  impl_->routes.push_back({"DELETE", std::regex(pattern), std::move(handler)});
}
void HttpFront::set_pre_routing_handler(PreRouting h) {
  impl_->pre_routing = std::move(h);
}
void HttpFront::set_error_handler(ErrorHandler h) {
  impl_->error_handler = std::move(h);
}
void HttpFront::set_exception_handler(ExceptionHandler h) {
  impl_->exception_handler = std::move(h);
}
void HttpFront::set_logger(Logger h) {
  impl_->logger = std::move(h);
}

Result<int> HttpFront::bind(const std::string& host, int port) {
  Impl& s = *impl_;
  if (s.listen_fd >= 0) return invalid_argument("the HTTP front is already bound");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port_s = std::to_string(port);
  if (getaddrinfo(host.c_str(), port_s.c_str(), &hints, &res) != 0 || !res) {
    return io_error("cannot resolve listen address " + host);
  }
  std::string why;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    // SO_REUSEADDR allows a quick restart; no SO_REUSEPORT, so a second server cannot bind a
    // port in use.
    const int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, s.opt.backlog) == 0) {
      s.listen_fd = fd;
      break;
    }
    why = std::strerror(errno);
    ::close(fd);
  }
  freeaddrinfo(res);
  if (s.listen_fd < 0) {
    return io_error("cannot bind " + host + ":" + port_s + (why.empty() ? "" : ": " + why));
  }
  set_nonblocking(s.listen_fd);
  sockaddr_storage sa{};
  socklen_t len = sizeof(sa);
  getsockname(s.listen_fd, reinterpret_cast<sockaddr*>(&sa), &len);
  if (sa.ss_family == AF_INET)
    return static_cast<int>(ntohs(reinterpret_cast<sockaddr_in*>(&sa)->sin_port));
  if (sa.ss_family == AF_INET6)
    return static_cast<int>(ntohs(reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port));
  return port;
}

Status HttpFront::start() {
  Impl& s = *impl_;
  if (s.listen_fd < 0) return invalid_argument("bind() first");
  if (s.loop_thread.joinable()) return invalid_argument("the HTTP front is already started");
  if (s.opt.n_handler_threads < 1) return invalid_argument("n_handler_threads must be >= 1");
  if (s.opt.max_connections < 1) return invalid_argument("max_connections must be >= 1");
  if (s.opt.max_connections_per_client < 0) {
    return invalid_argument("max_connections_per_client must be >= 0");
  }
  if (s.opt.max_pending < 1) return invalid_argument("max_pending must be >= 1");
  if (!(s.opt.request_timeout_s > 0) || !(s.opt.idle_timeout_s > 0) ||
      !(s.opt.write_timeout_s > 0)) {
    return invalid_argument("timeouts must be > 0");
  }
  // Descriptors beyond the process's limit cannot be accepted: stay below it (with room for
  // model files, logs and the engine's own).
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    const auto cap = static_cast<int64_t>(rl.rlim_cur) - 64;
    s.opt.max_connections =
        static_cast<int32_t>(std::max<int64_t>(1, std::min<int64_t>(s.opt.max_connections, cap)));
  }
  s.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  s.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s.epoll_fd < 0 || s.wake_fd < 0)
    return io_error("epoll/eventfd: " + std::string(std::strerror(errno)));
  s.epoll_set(EPOLL_CTL_ADD, s.listen_fd, EPOLLIN);
  s.epoll_set(EPOLL_CTL_ADD, s.wake_fd, EPOLLIN);
  for (int32_t i = 0; i < s.opt.n_handler_threads; ++i) {
    s.workers.emplace_back([&s] { s.worker_main(); });
  }
  s.loop_thread = std::thread([&s] { s.loop_main(); });
  return Status::ok();
}

void HttpFront::stop() {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lk(s.stop_mu);
    if (s.stopped) return;
    s.stopped = true;
  }
  s.stopping.store(true);
  if (s.loop_thread.joinable()) {
    s.wake();
    s.loop_thread.join();
  }
  {
    std::lock_guard<std::mutex> lk(s.q_mu);
    s.q_stop = true;
  }
  s.q_cv.notify_all();
  for (std::thread& t : s.workers) t.join();
  s.workers.clear();
}

HttpFrontStats HttpFront::stats() const {
  const Impl::Counters& c = impl_->counters;
  HttpFrontStats st;
  st.n_open = c.n_open.load();
  st.n_accepted = c.n_accepted.load();
  st.n_evicted = c.n_evicted.load();
  st.n_refused = c.n_refused.load();
  st.n_timed_out = c.n_timed_out.load();
  st.n_requests = c.n_requests.load();
  return st;
}

}  // namespace llmt::server
