#include "http-parse.h"

#include <algorithm>
#include <cctype>

namespace llmt::server::http {

namespace {

constexpr size_t kMaxHeaders = 128;
constexpr size_t kMaxChunkLine = 4096;

bool is_tchar(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (std::isalnum(u)) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// Whether a comma-separated header value has `token` among its elements (case-insensitive).
bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    if (iequals(trim_ows(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A header field value may hold visible characters, spaces, tabs and obs-text, not controls.
bool valid_field_value(std::string_view v) {
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
  }
  return true;
}

bool parse_query(std::string_view q, httplib::Params* params) {
  while (!q.empty()) {
    const size_t amp = q.find('&');
    const std::string_view pair = q.substr(0, amp);
    if (!pair.empty()) {
      const size_t eq = pair.find('=');
      std::string key, value;
      if (!url_decode(pair.substr(0, eq), true, &key)) return false;
      if (eq != std::string_view::npos && !url_decode(pair.substr(eq + 1), true, &value)) {
        return false;
      }
      params->emplace(std::move(key), std::move(value));
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return true;
}

}  // namespace

bool url_decode(std::string_view s, bool plus_is_space, std::string* out) {
  out->clear();
  out->reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return false;
      const int hi = hex_value(s[i + 1]);
      const int lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return false;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    if (c == '\0') return false;
    out->push_back(c);
  }
  return true;
}

int parse_head(std::string_view head, HttpRequest* req, HeadInfo* info) {
  *info = HeadInfo{};
  // The request line.
  size_t eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  head = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return 400;
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) return 400;
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      !std::isdigit(static_cast<unsigned char>(version[5])) ||
      !std::isdigit(static_cast<unsigned char>(version[7]))) {
    return 400;
  }
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return 505;
  if (target.empty() || target.front() != '/') return 400;
  for (char c : target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return 400;
  }
  req->method = std::string(method);
  req->version = std::string(version);
  req->target = std::string(target);
  const size_t qmark = target.find('?');
  if (!url_decode(target.substr(0, qmark), false, &req->path)) return 400;
  if (qmark != std::string_view::npos && !parse_query(target.substr(qmark + 1), &req->params)) {
    return 400;
  }

  // Header lines.
  bool have_length = false;
  bool have_te = false;
  std::string connection_values;
  size_t n_headers = 0;
  while (!head.empty()) {
    eol = head.find("\r\n");
    const std::string_view h = head.substr(0, eol);
    head = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
    if (++n_headers > kMaxHeaders) return 431;
    const size_t colon = h.find(':');
    if (colon == std::string_view::npos) return 400;
    const std::string_view name = h.substr(0, colon);
    if (!is_token(name)) return 400;  // also refuses obs-fold and a space before the colon
    const std::string_view value = trim_ows(h.substr(colon + 1));
    if (!valid_field_value(value)) return 400;
    if (iequals(name, "Content-Length")) {
      if (value.empty() || value.size() > 18 ||
          !std::all_of(value.begin(), value.end(),
                       [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
        return 400;
      }
      const uint64_t n = std::stoull(std::string(value));
      if (have_length && n != info->content_length) return 400;
      have_length = true;
      info->content_length = n;
    } else if (iequals(name, "Transfer-Encoding")) {
      // Only "chunked" alone is supported (no compression codings).
      if (have_te || !iequals(value, "chunked")) return 400;
      have_te = true;
      info->chunked = true;
    } else if (iequals(name, "Connection")) {
      connection_values += std::string(value) + ",";
    } else if (iequals(name, "Expect")) {
      if (!iequals(value, "100-continue")) return 417;
      info->expect_continue = true;
    }
    req->headers.emplace(std::string(name), std::string(value));
  }
  // Both framings at once is how requests are smuggled past proxies: refused (RFC 9112 6.3).
  if (have_length && have_te) return 400;
  if (version == "HTTP/1.1") {
    info->keep_alive = !has_token(connection_values, "close");
  } else {
    info->keep_alive = has_token(connection_values, "keep-alive");
  }
  return 0;
}

ChunkedDecoder::State ChunkedDecoder::feed(std::string_view in, size_t* used, std::string* body) {
  size_t pos = 0;
  for (;;) {
    if (part_ == Part::kData) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size() - pos));
      body->append(in.data() + pos, take);
      pos += take;
      remaining_ -= take;
      if (remaining_ > 0) break;
      part_ = Part::kDataEnd;
      continue;
    }
    const size_t eol = in.find("\r\n", pos);
    if (eol == std::string_view::npos) {
      if (in.size() - pos > kMaxChunkLine) {
        *used = pos;
        return State::kBad;
      }
      break;
    }
    const std::string_view line = in.substr(pos, eol - pos);
    pos = eol + 2;
    if (line.size() > kMaxChunkLine) {
      *used = pos;
      return State::kBad;
    }
    if (part_ == Part::kDataEnd) {
      if (!line.empty()) {
        *used = pos;
        return State::kBad;
      }
      part_ = Part::kSize;
    } else if (part_ == Part::kSize) {
      // chunk-size [ chunk-ext ]: hex digits, then optionally ';' and extensions (ignored).
      const std::string_view size = trim_ows(line.substr(0, line.find(';')));
      if (size.empty() || size.size() > 15) {
        *used = pos;
        return State::kBad;
      }
      uint64_t n = 0;
      for (char c : size) {
        const int v = hex_value(c);
        if (v < 0) {
          *used = pos;
          return State::kBad;
        }
        n = n * 16 + static_cast<uint64_t>(v);
      }
      if (n > max_body_ - std::min(max_body_, body->size())) {
        *used = pos;
        return State::kTooLarge;
      }
      remaining_ = n;
      part_ = n == 0 ? Part::kTrailer : Part::kData;
    } else {  // kTrailer: field lines (dropped) until the empty line
      if (line.empty()) {
        *used = pos;
        return State::kDone;
      }
      if (line.find(':') == std::string_view::npos) {
        *used = pos;
        return State::kBad;
      }
    }
  }
  *used = pos;
  return State::kMore;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    case 507:
      return "Insufficient Storage";
    default:
      return "Unknown";
  }
}

}  // namespace llmt::server::http
