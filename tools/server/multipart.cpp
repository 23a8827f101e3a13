#include "multipart.h"

#include <algorithm>
#include <cctype>

namespace llmt::server {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

Status bad(const std::string& what) {
  return invalid_argument("malformed multipart/form-data body: " + what, "file");
}

bool is_bchar(char c) {
  const unsigned char u = static_cast<unsigned char>(c);
  return std::isalnum(u) || std::string_view("'()+_,-./:=? ").find(c) != std::string_view::npos;
}

// One header parameter list "; a=b; c="d"" (after the header's first token) into pairs; false
// when it is malformed (an unterminated quote, a parameter without '=', a duplicate name).
bool parse_params(std::string_view s, std::vector<std::pair<std::string, std::string>>* out) {
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    if (i == s.size()) break;
    if (s[i] != ';') return false;
    ++i;
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    const size_t eq = s.find('=', i);
    if (eq == std::string_view::npos) return false;
    const std::string name = lower(trim(s.substr(i, eq - i)));
    if (name.empty()) return false;
    i = eq + 1;
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    std::string value;
    if (i < s.size() && s[i] == '"') {
      ++i;
      bool closed = false;
      while (i < s.size()) {
        const char c = s[i++];
        if (c == '\\' && i < s.size()) {
          value += s[i++];
        } else if (c == '"') {
          closed = true;
          break;
        } else {
          value += c;
        }
      }
      if (!closed) return false;
    } else {
      const size_t end = std::min(s.find(';', i), s.size());
      value = std::string(trim(s.substr(i, end - i)));
      i = end;
    }
    for (const auto& [n, v] : *out) {
      if (n == name) return false;
    }
    out->emplace_back(name, std::move(value));
  }
  return true;
}

// The head of one part (the bytes between its delimiter line and the empty line) into *part.
Status parse_part_head(std::string_view head, const MultipartLimits& limits, MultipartPart* part) {
  bool have_disposition = false;
  size_t n_headers = 0;
  size_t pos = 0;
  while (pos < head.size()) {
    size_t eol = head.find("\r\n", pos);
    if (eol == std::string_view::npos) eol = head.size();
    const std::string_view line = head.substr(pos, eol - pos);
    pos = eol + 2;
    if (++n_headers > limits.max_part_headers) return bad("too many headers in a part");
    if (line.find('\n') != std::string_view::npos || line.find('\r') != std::string_view::npos) {
      return bad("a bare CR or LF in a part's headers");
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return bad("a part header without ':'");
    const std::string name = lower(line.substr(0, colon));
    if (name.find_first_of(" \t") != std::string::npos) return bad("a space in a header name");
    const std::string_view value = trim(line.substr(colon + 1));
    if (name == "content-disposition") {
      if (have_disposition) return bad("two Content-Disposition headers in a part");
      have_disposition = true;
      const size_t semi = std::min(value.find(';'), value.size());
      if (lower(trim(value.substr(0, semi))) != "form-data") {
        return bad("a part's Content-Disposition is not form-data");
      }
      std::vector<std::pair<std::string, std::string>> params;
      if (!parse_params(value.substr(semi), &params)) {
        return bad("a malformed Content-Disposition header");
      }
      bool have_name = false;
      for (auto& [k, v] : params) {
        if (k == "name") {
          part->name = std::move(v);
          have_name = true;
        } else if (k == "filename") {
          part->filename = std::move(v);
        }
      }
      if (!have_name || part->name.empty()) return bad("a part without a name");
    } else if (name == "content-type") {
      part->content_type = std::string(value);
    } else if (name == "content-transfer-encoding") {
      const std::string enc = lower(value);
      if (enc != "7bit" && enc != "8bit" && enc != "binary") {
        return bad("Content-Transfer-Encoding '" + std::string(value) + "' is not supported");
      }
    }
  }
  if (!have_disposition) return bad("a part without Content-Disposition");
  return Status::ok();
}

}  // namespace

Result<std::string> multipart_boundary(std::string_view content_type) {
  const size_t semi = std::min(content_type.find(';'), content_type.size());
  if (lower(trim(content_type.substr(0, semi))) != "multipart/form-data") {
    return invalid_argument("the body must be multipart/form-data (got Content-Type '" +
                                std::string(content_type) + "')",
                            "file");
  }
  std::vector<std::pair<std::string, std::string>> params;
  if (!parse_params(content_type.substr(semi), &params)) {
    return bad("a malformed Content-Type header");
  }
  for (const auto& [k, v] : params) {
    if (k != "boundary") continue;
    if (v.empty() || v.size() > 70 || v.back() == ' ' ||
        !std::all_of(v.begin(), v.end(), is_bchar)) {
      return bad("an invalid boundary");
    }
    return v;
  }
  return bad("no boundary in the Content-Type header");
}

Result<std::vector<MultipartPart>> parse_multipart(std::string_view content_type,
                                                   std::string_view body,
                                                   const MultipartLimits& limits) {
  LLMT_ASSIGN_OR_RETURN(const std::string boundary, multipart_boundary(content_type));
  const std::string delim = "--" + boundary;
  const std::string sep = "\r\n" + delim;  // what ends a part's bytes
  if (body.substr(0, delim.size()) != delim) return bad("the body does not start with --boundary");
  size_t pos = delim.size();
  std::vector<MultipartPart> parts;
  while (true) {
    // Just after a delimiter: "--" closes, CRLF starts a part.
    if (body.substr(pos, 2) == "--") {
      pos += 2;
      if (pos == body.size() || body.substr(pos) == "\r\n") break;
      return bad("bytes after the closing boundary");
    }
    if (body.substr(pos, 2) != "\r\n") return bad("a boundary not followed by CRLF");
    pos += 2;
    if (parts.size() >= limits.max_parts) {
      return bad("more than " + std::to_string(limits.max_parts) + " parts");
    }
    // The head ends at the first empty line (a part may have no headers at all: then CRLF at
    // once, which parse_part_head refuses for the missing Content-Disposition).
    size_t head_end = 0;
    std::string_view head;
    if (body.substr(pos, 2) == "\r\n") {
      head_end = pos + 2;
    } else {
      const size_t e = body.find("\r\n\r\n", pos);
      if (e == std::string_view::npos || e - pos > limits.max_part_head_bytes) {
        return bad(e == std::string_view::npos ? "a part's headers do not end"
                                               : "a part's headers are too large");
      }
      head = body.substr(pos, e - pos);
      head_end = e + 4;
    }
    MultipartPart part;
    LLMT_RETURN_IF_ERROR(parse_part_head(head, limits, &part));
    for (const MultipartPart& p : parts) {
      if (p.name == part.name) return bad("the field '" + part.name + "' is given twice");
    }
    const size_t end = body.find(sep, head_end);
    if (end == std::string_view::npos) return bad("a part is not terminated by --boundary");
    part.data = std::string(body.substr(head_end, end - head_end));
    parts.push_back(std::move(part));
    pos = end + sep.size();
  }
  return parts;
}

}  // namespace llmt::server
