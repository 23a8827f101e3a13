// The event-driven HTTP front (tools/server/http-front.h): request parsing, keep-alive and
// pipelining, chunked bodies, the front's own statuses, per-request deadlines, connection limits
// that idle or trickling clients cannot fill, slow readers that hold no handler thread, and a
// client's close seen by its handler. Most tests use raw sockets against a front with small test
// routes; the last ones run the real server (stories260K) behind hundreds of slow connections.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "http-front.h"
#include "http-parse.h"
#include "server-fixture.h"

namespace llmt {
namespace {

using Clock = std::chrono::steady_clock;
using server::HttpFront;
using server::HttpFrontOptions;
using server::HttpRequest;

// ---------------------------------------------------------------- parsing

TEST(HttpParse, HeadFieldsPathQueryAndFraming) {
  HttpRequest req;
  server::http::HeadInfo info;
  ASSERT_EQ(server::http::parse_head("POST /v1/a%20b?x=1&y=a+b%21&z HTTP/1.1\r\n"
                                     "Host: h\r\ncontent-length:  12 \r\nConnection: close",
                                     &req, &info),
            0);
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.path, "/v1/a b");
  EXPECT_EQ(req.target, "/v1/a%20b?x=1&y=a+b%21&z");
  EXPECT_EQ(req.get_param_value("x"), "1");
  EXPECT_EQ(req.get_param_value("y"), "a b!");
  EXPECT_TRUE(req.has_param("z"));
  EXPECT_EQ(req.get_header_value("Content-Length"), "12");
  EXPECT_EQ(info.content_length, 12u);
  EXPECT_FALSE(info.chunked);
  EXPECT_FALSE(info.keep_alive);

  HttpRequest r2;
  ASSERT_EQ(server::http::parse_head("GET / HTTP/1.0\r\nConnection: Keep-Alive", &r2, &info), 0);
  EXPECT_TRUE(info.keep_alive);
  HttpRequest r3;
  ASSERT_EQ(server::http::parse_head("GET / HTTP/1.0", &r3, &info), 0);
  EXPECT_FALSE(info.keep_alive);
  HttpRequest r4;
  ASSERT_EQ(
      server::http::parse_head(
          "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue", &r4, &info),
      0);
  EXPECT_TRUE(info.chunked);
  EXPECT_TRUE(info.expect_continue);
  EXPECT_TRUE(info.keep_alive);
}

TEST(HttpParse, MalformedHeadsGetTheirStatus) {
  struct Case {
    const char* head;
    int status;
  };
  const Case cases[] = {
      {"GET /", 400},
      {"GET  / HTTP/1.1", 400},
      {"GET / HTTP/1.1 x", 400},
      {"G(T / HTTP/1.1", 400},
      {"GET x HTTP/1.1", 400},
      {"GET http://h/ HTTP/1.1", 400},
      {"GET / HTTP/2.0", 505},
      {"GET / HTTQ/1.1", 400},
      {"GET /%zz HTTP/1.1", 400},
      {"GET /%00 HTTP/1.1", 400},
      {"GET /? HTTP/1.1\r\nNoColon", 400},
      {"GET / HTTP/1.1\r\n Folded: x", 400},
      {"GET / HTTP/1.1\r\nBad Name: x", 400},
      {"GET / HTTP/1.1\r\nX: a\x01b", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 1x", 400},
      {"POST / HTTP/1.1\r\nContent-Length: -1", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked", 400},
      {"POST / HTTP/1.1\r\nExpect: something", 417},
  };
  for (const Case& c : cases) {
    HttpRequest req;
    server::http::HeadInfo info;
    EXPECT_EQ(server::http::parse_head(c.head, &req, &info), c.status) << c.head;
  }
  std::string many = "GET / HTTP/1.1";
  for (int i = 0; i < 200; ++i) many += "\r\nX-" + std::to_string(i) + ": v";
  HttpRequest req;
  server::http::HeadInfo info;
  EXPECT_EQ(server::http::parse_head(many, &req, &info), 431);
}

TEST(HttpParse, ChunkedDecoderWholeAndByteByByte) {
  const std::string wire =
      "5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\nNEXT";
  using State = server::http::ChunkedDecoder::State;
  {
    server::http::ChunkedDecoder d(1000);
    std::string body;
    size_t used = 0;
    EXPECT_EQ(d.feed(wire, &used, &body), State::kDone);
    EXPECT_EQ(body, "helloabcdefghijklmnopqrstuvwxyz");
    EXPECT_EQ(wire.substr(used), "NEXT");
  }
  {
    // Byte by byte, as a trickling client sends it: the same body, the same end.
    server::http::ChunkedDecoder d(1000);
    std::string body, pending;
    State st = State::kMore;
    size_t i = 0;
    for (; i < wire.size() && st == State::kMore; ++i) {
      pending += wire[i];
      size_t used = 0;
      st = d.feed(pending, &used, &body);
      pending.erase(0, used);
    }
    EXPECT_EQ(st, State::kDone);
    EXPECT_EQ(body, "helloabcdefghijklmnopqrstuvwxyz");
    EXPECT_EQ(wire.substr(i), "NEXT");
  }
  for (const char* bad : {"zz\r\n", "5\r\nhelloX\r\n", "\r\n", "0\r\nnocolon\r\n\r\n"}) {
    server::http::ChunkedDecoder d(1000);
    std::string body;
    size_t used = 0;
    EXPECT_EQ(d.feed(bad, &used, &body), State::kBad) << bad;
  }
  server::http::ChunkedDecoder small(8);
  std::string body;
  size_t used = 0;
  EXPECT_EQ(small.feed("5\r\nhello\r\n5\r\n", &used, &body), State::kTooLarge);
}

// ---------------------------------------------------------------- a front with test routes

// A raw client connection (blocking, with a receive timeout).
class RawConn {
 public:
  explicit RawConn(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~RawConn() { close(); }
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;
  bool ok() const { return ok_; }
  bool send(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads until `until` appears in what was read (or the peer closes, or timeout_s passes).
  std::string read_until(const std::string& until, double timeout_s = 5.0) {
    const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(timeout_s));
    while (buf_.find(until) == std::string::npos && Clock::now() < end) {
      if (!read_some(end)) break;
    }
    return buf_;
  }
  // Reads until the peer closes; true when it did within timeout_s.
  bool read_to_close(double timeout_s = 5.0) {
    const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(timeout_s));
    while (Clock::now() < end) {
      if (!read_some(end)) return closed_;
    }
    return false;
  }
  const std::string& received() const { return buf_; }
  void clear() { buf_.clear(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd() const { return fd_; }

 private:
  bool read_some(Clock::time_point end) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(1, left.count()))) <= 0) return false;
    char b[65536];
    const ssize_t n = ::recv(fd_, b, sizeof(b), 0);
    if (n <= 0) {
      closed_ = true;
      return false;
    }
    buf_.append(b, static_cast<size_t>(n));
    return true;
  }
  int fd_ = -1;
  bool ok_ = false;
  bool closed_ = false;
  std::string buf_;
};

int count_of(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

struct TestFront {
  std::unique_ptr<HttpFront> front;
  int port = 0;
  std::atomic<int> n_closed_seen{0};
  std::atomic<bool> release_slow{false};

  explicit TestFront(HttpFrontOptions o) : front(std::make_unique<HttpFront>(o)) {
    front->Post("/echo", [](const httplib::Request& req, httplib::Response& res) {
      res.status = 200;
      res.set_content(req.method + " " + req.path + " " + req.body, "text/plain");
    });
    front->Get(R"(/item/([^/]+))", [](const httplib::Request& req, httplib::Response& res) {
      res.status = 200;
      res.set_content("item=" + std::string(req.matches[1]) + " q=" + req.get_param_value("q"),
                      "text/plain");
    });
    // Holds its handler thread until released (or its client goes away).
    front->Get("/slow", [this](const httplib::Request& req, httplib::Response& res) {
      const auto end = Clock::now() + std::chrono::seconds(10);
      while (!release_slow.load() && Clock::now() < end) {
        if (server::connection_closed(req)) {
          n_closed_seen.fetch_add(1);
          res.status = 499;
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      res.status = 200;
      res.set_content("slow done", "text/plain");
    });
    // A streamed body of n chunks of 64 KiB ('a' + chunk index % 26).
    front->Get(R"(/stream/(\d+))", [](const httplib::Request& req, httplib::Response& res) {
      const int n = std::stoi(std::string(req.matches[1]));
      res.status = 200;
      res.set_chunked_content_provider("application/octet-stream",
                                       [n, i = 0](size_t, httplib::DataSink& sink) mutable {
                                         if (i == n) {
                                           sink.done();
                                           return true;
                                         }
                                         const std::string chunk(65536, char('a' + i % 26));
                                         ++i;
                                         return sink.write(chunk.data(), chunk.size());
                                       });
    });
    front->Get("/throw", [](const httplib::Request&, httplib::Response&) {
      throw std::runtime_error("boom");
    });
    front->set_error_handler([](const httplib::Request&, httplib::Response& res) {
      res.set_content("error " + std::to_string(res.status), "text/plain");
    });
    Result<int> p = front->bind("127.0.0.1", 0);
    EXPECT_TRUE(p.is_ok()) << p.status().to_string();
    if (p.is_ok()) port = *p;
    Status s = front->start();
    EXPECT_TRUE(s.is_ok()) << s.to_string();
  }
  ~TestFront() {
    release_slow = true;
    front->stop();
  }
};

HttpFrontOptions small_options() {
  HttpFrontOptions o;
  o.n_handler_threads = 2;
  o.request_timeout_s = 1.0;
  o.idle_timeout_s = 1.0;
  o.max_body_bytes = 1 << 16;
  o.max_head_bytes = 4096;
  return o;
}

TEST(HttpFront, KeepAlivePipeliningRoutesAndQuery) {
  TestFront t(small_options());
  RawConn c(t.port);
  ASSERT_TRUE(c.ok());
  // Three requests in one write: answered in order on the same connection.
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
             "GET /item/a%20b?q=x+y HTTP/1.1\r\nHost: x\r\n\r\n"
             "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
             "chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"));
  const std::string got = c.read_until("POST /echo abcde");
  const size_t a = got.find("POST /echo hello");
  const size_t b = got.find("item=a b q=x y");
  const size_t d = got.find("POST /echo abcde");
  ASSERT_NE(a, std::string::npos) << got;
  ASSERT_NE(b, std::string::npos) << got;
  ASSERT_NE(d, std::string::npos) << got;
  EXPECT_LT(a, b);
  EXPECT_LT(b, d);
  EXPECT_EQ(count_of(got, "HTTP/1.1 200 OK\r\n"), 3) << got;
  EXPECT_EQ(count_of(got, "Connection: keep-alive"), 3) << got;
  EXPECT_EQ(t.front->stats().n_accepted, 1);
}

TEST(HttpFront, ExpectContinueIsAnsweredBeforeTheBody) {
  TestFront t(small_options());
  RawConn c(t.port);
  ASSERT_TRUE(c.send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"));
  EXPECT_NE(c.read_until("100 Continue\r\n\r\n", 2.0).find("HTTP/1.1 100 Continue"),
            std::string::npos);
  ASSERT_TRUE(c.send("xyz"));
  EXPECT_NE(c.read_until("POST /echo xyz").find("POST /echo xyz"), std::string::npos)
      << c.received();
}

TEST(HttpFront, FrontStatusesGetABodyAndClose) {
  TestFront t(small_options());
  struct Case {
    std::string request;
    const char* status_line;
  };
  const std::vector<Case> cases = {
      {"GET /nope HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"},
      {"DELETE /echo HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"},
      {"GET /throw HTTP/1.1\r\n\r\n", "HTTP/1.1 500 Internal Server Error"},
      {"garbage\r\n\r\n", "HTTP/1.1 400 Bad Request"},
      {"GET / HTTP/3.0\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported"},
      {"POST /echo HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", "HTTP/1.1 413 Content Too Large"},
      {"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFF\r\n",
       "HTTP/1.1 413 Content Too Large"},
      {"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
       "HTTP/1.1 400 Bad Request"},
      {"GET / HTTP/1.1\r\nX: " + std::string(8000, 'a') + "\r\n\r\n",
       "HTTP/1.1 431 Request Header Fields Too Large"},
  };
  for (const Case& cs : cases) {
    RawConn c(t.port);
    ASSERT_TRUE(c.send(cs.request));
    const bool closed = c.read_to_close(3.0);
    const std::string& got = c.received();
    EXPECT_EQ(got.rfind(cs.status_line, 0), 0u) << cs.request.substr(0, 60) << " -> " << got;
    // The error handler gave it a body.
    EXPECT_NE(got.find("error " + std::string(cs.status_line).substr(9, 3)), std::string::npos)
        << got;
    // The front's own statuses close the connection; a routed request's 404/405/500 keeps it.
    const int code = std::stoi(std::string(cs.status_line).substr(9, 3));
    const bool own = code != 404 && code != 405 && code != 500;
    if (own) {
      EXPECT_TRUE(closed) << got;
      EXPECT_NE(got.find("Connection: close"), std::string::npos) << got;
    } else {
      EXPECT_NE(got.find("Connection: keep-alive"), std::string::npos) << got;
    }
  }
}

TEST(HttpFront, OversizedBodyGets413EvenWhileTheClientStillSends) {
  TestFront t(small_options());
  // cpp-httplib's client sends the whole body before it reads: the 413 must survive that.
  httplib::Client cl("127.0.0.1", t.port);
  auto r = cl.Post("/echo", std::string(size_t{4} << 20, 'z'), "text/plain");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(r->body, "error 413");
}

TEST(HttpFront, TricklingRequestGets408AtItsDeadlineNotPerRead) {
  HttpFrontOptions o = small_options();
  o.request_timeout_s = 0.8;
  TestFront t(o);
  RawConn c(t.port);
  const std::string req =
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'b');
  const auto t0 = Clock::now();
  // One byte every 50 ms: every read is quick, the whole request would take ~7.5 s.
  bool closed = false;
  for (size_t i = 0; i < req.size() && !closed; ++i) {
    if (!c.send(req.substr(i, 1))) break;
    pollfd p{c.fd(), POLLIN, 50};
    closed = ::poll(&p, 1, 50) > 0;
  }
  c.read_to_close(3.0);
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(c.received().rfind("HTTP/1.1 408 Request Timeout", 0), 0u) << c.received();
  EXPECT_LT(took, 3.0);
  EXPECT_GE(t.front->stats().n_timed_out, 1);
}

TEST(HttpFront, IdleKeepAliveIsClosedAfterItsTimeout) {
  HttpFrontOptions o = small_options();
  o.idle_timeout_s = 0.5;
  TestFront t(o);
  RawConn c(t.port);
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nContent-Length: 1\r\n\r\nq"));
  EXPECT_NE(c.read_until("POST /echo q").find("POST /echo q"), std::string::npos);
  EXPECT_TRUE(c.read_to_close(3.0));  // closed by the server, no further bytes
  EXPECT_EQ(count_of(c.received(), "HTTP/1.1"), 1);
}

// Hundreds of connections that trickle header bytes (slowloris) hold no handler thread: with two
// handler threads, normal requests still answer at once.
TEST(HttpFront, HundredsOfTricklingConnectionsDoNotStarveRequests) {
  HttpFrontOptions o = small_options();
  o.request_timeout_s = 30.0;
  TestFront t(o);
  constexpr int kSlow = 400;
  std::vector<std::unique_ptr<RawConn>> slow;
  for (int i = 0; i < kSlow; ++i) {
    slow.push_back(std::make_unique<RawConn>(t.port));
    ASSERT_TRUE(slow.back()->ok());
    ASSERT_TRUE(slow.back()->send("POST /echo HTTP/1.1\r\nHost: x\r\n"));
  }
  std::atomic<bool> stop{false};
  std::thread trickler([&] {
    while (!stop.load()) {
      for (auto& c : slow) c->send("X");
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  httplib::Client cl("127.0.0.1", t.port);
  cl.set_read_timeout(5, 0);
  for (int i = 0; i < 20; ++i) {
    const auto t0 = Clock::now();
    auto r = cl.Post("/echo", "ping" + std::to_string(i), "text/plain");
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->body, "POST /echo ping" + std::to_string(i));
    // Unloaded this is well under a millisecond; a starved server would take the read timeout.
    EXPECT_LT(ms, 1000.0) << "request " << i;
  }
  stop = true;
  trickler.join();
  EXPECT_GE(t.front->stats().n_open, kSlow);
}

TEST(HttpFront, ConnectionLimitEvictsTheLongestWaitingNeverABusyOne) {
  HttpFrontOptions o = small_options();
  o.max_connections = 8;
  o.request_timeout_s = 30.0;
  TestFront t(o);
  // Two busy connections (handlers held), then six idle ones fill the limit.
  RawConn busy1(t.port), busy2(t.port);
  ASSERT_TRUE(busy1.send("GET /slow HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(busy2.send("GET /slow HTTP/1.1\r\n\r\n"));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::vector<std::unique_ptr<RawConn>> idle;
  for (int i = 0; i < 6; ++i) {
    idle.push_back(std::make_unique<RawConn>(t.port));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(t.front->stats().n_open, 8);
  // A new connection takes the oldest idle one's place.
  t.release_slow = false;
  RawConn fresh(t.port);
  ASSERT_TRUE(fresh.send("POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"));
  // Its request needs a handler thread: both are held by /slow, so release them now.
  t.release_slow = true;
  EXPECT_NE(fresh.read_until("POST /echo ok").find("POST /echo ok"), std::string::npos);
  EXPECT_TRUE(idle[0]->read_to_close(2.0));  // the longest waiting was closed
  EXPECT_NE(busy1.read_until("slow done").find("slow done"), std::string::npos);
  EXPECT_NE(busy2.read_until("slow done").find("slow done"), std::string::npos);
  EXPECT_EQ(t.front->stats().n_evicted, 1);
  EXPECT_EQ(t.front->stats().n_refused, 0);
}

TEST(HttpFront, AtTheLimitWithEveryConnectionBusyANewOneIsRefused) {
  HttpFrontOptions o = small_options();
  o.max_connections = 2;
  TestFront t(o);
  RawConn busy1(t.port), busy2(t.port);
  ASSERT_TRUE(busy1.send("GET /slow HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(busy2.send("GET /slow HTTP/1.1\r\n\r\n"));
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  RawConn third(t.port);
  third.read_to_close(2.0);
  EXPECT_EQ(third.received().rfind("HTTP/1.1 503", 0), 0u) << third.received();
  EXPECT_EQ(t.front->stats().n_refused, 1);
  t.release_slow = true;
  EXPECT_NE(busy1.read_until("slow done").find("slow done"), std::string::npos);
}

TEST(HttpFront, PerClientLimitEvictsThatClientsWaitingConnection) {
  HttpFrontOptions o = small_options();
  o.max_connections_per_client = 3;
  TestFront t(o);
  RawConn a(t.port), b(t.port), c(t.port);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  RawConn d(t.port);
  ASSERT_TRUE(d.send("POST /echo HTTP/1.1\r\nContent-Length: 1\r\n\r\nd"));
  EXPECT_NE(d.read_until("POST /echo d").find("POST /echo d"), std::string::npos);
  EXPECT_TRUE(a.read_to_close(2.0));
  EXPECT_EQ(t.front->stats().n_evicted, 1);
}

// A client that reads nothing of a large streamed response holds no handler thread: the response
// is produced into its buffer, and with one handler thread another request still answers.
TEST(HttpFront, SlowReaderOfAStreamHoldsNoHandlerThread) {
  HttpFrontOptions o = small_options();
  o.n_handler_threads = 1;
  TestFront t(o);
  RawConn reader(t.port);
  const int n_chunks = 32;  // 2 MiB, under max_out_bytes
  ASSERT_TRUE(reader.send("GET /stream/" + std::to_string(n_chunks) + " HTTP/1.1\r\n\r\n"));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  httplib::Client cl("127.0.0.1", t.port);
  cl.set_read_timeout(3, 0);
  auto r = cl.Post("/echo", "other", "text/plain");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->body, "POST /echo other");
  // Now read the whole stream: every chunk, in order, then the last chunk.
  const std::string got = reader.read_until("\r\n0\r\n\r\n", 10.0);
  ASSERT_NE(got.find("Transfer-Encoding: chunked"), std::string::npos);
  std::string body;
  size_t pos = got.find("\r\n\r\n") + 4;
  for (;;) {
    const size_t eol = got.find("\r\n", pos);
    ASSERT_NE(eol, std::string::npos);
    const size_t n = std::stoul(got.substr(pos, eol - pos), nullptr, 16);
    if (n == 0) break;
    body += got.substr(eol + 2, n);
    pos = eol + 2 + n + 2;
  }
  ASSERT_EQ(body.size(), size_t{65536} * n_chunks);
  for (int i = 0; i < n_chunks; ++i) {
    EXPECT_EQ(body[static_cast<size_t>(i) * 65536], char('a' + i % 26)) << i;
  }
}

TEST(HttpFront, HandlerSeesItsClientGoAway) {
  TestFront t(small_options());
  {
    RawConn c(t.port);
    ASSERT_TRUE(c.send("GET /slow HTTP/1.1\r\n\r\n"));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }  // closed
  const auto end = Clock::now() + std::chrono::seconds(3);
  while (t.n_closed_seen.load() == 0 && Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(t.n_closed_seen.load(), 1);
}

TEST(HttpFront, StopLetsAResponseInProgressFinish) {
  auto t = std::make_unique<TestFront>(small_options());
  RawConn c(t->port);
  RawConn idle(t->port);
  ASSERT_TRUE(c.send("GET /slow HTTP/1.1\r\n\r\n"));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    t->release_slow = true;
  });
  t->front->stop();
  releaser.join();
  c.read_to_close(3.0);
  EXPECT_NE(c.received().find("slow done"), std::string::npos) << c.received();
  EXPECT_NE(c.received().find("Connection: close"), std::string::npos);
  EXPECT_TRUE(idle.read_to_close(1.0));
}

// ---------------------------------------------------------------- the real server

// The issue's scenario: hundreds of connections trickling half a request line, and a real
// completion request still answers in time (before: every request waited for a connection
// thread, 10 s with 100 such connections).
TEST(ServerSlowClients, CompletionsAnswerBehindHundredsOfTricklingConnections) {
  test::RunningServer rs;
  ASSERT_TRUE(rs.srv);
  const int port = rs.srv->port();
  std::vector<std::unique_ptr<RawConn>> slow;
  for (int i = 0; i < 300; ++i) {
    slow.push_back(std::make_unique<RawConn>(port));
    ASSERT_TRUE(slow.back()->ok());
    ASSERT_TRUE(slow.back()->send("POST /v1/comple"));
  }
  auto c = rs.client();
  c->set_read_timeout(10, 0);
  int st = 0;
  const auto t0 = Clock::now();
  nlohmann::json r =
      test::post_json(*c, "/v1/completions",
                      {{"prompt", "Once upon a time"}, {"max_tokens", 8}, {"temperature", 0}}, &st);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(st, 200) << r;
  EXPECT_LT(s, 5.0);
  // The tricklers' requests never complete: 408 at the deadline (1 s in the test options).
  for (int i = 0; i < 5; ++i) {
    slow[static_cast<size_t>(i)]->read_to_close(5.0);
    EXPECT_EQ(slow[static_cast<size_t>(i)]->received().rfind("HTTP/1.1 408", 0), 0u);
  }
  // The front's figures are in /metrics.
  auto m = c->Get("/metrics");
  ASSERT_TRUE(m);
  const auto value_of = [&](const std::string& series) {
    const size_t p = m->body.find("\n" + series + " ");
    return p == std::string::npos ? -1.0 : std::stod(m->body.substr(p + series.size() + 2));
  };
  EXPECT_GE(value_of("llmthreads_http_connections_total{event=\"timed_out\"}"), 5.0) << m->body;
  EXPECT_GE(value_of("llmthreads_http_connections_total{event=\"accepted\"}"), 301.0);
  EXPECT_GE(value_of("llmthreads_http_connections_open"), 1.0);
  EXPECT_EQ(value_of("llmthreads_http_connections_total{event=\"refused\"}"), 0.0);
}

}  // namespace
}  // namespace llmt
