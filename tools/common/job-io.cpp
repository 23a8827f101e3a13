// Job I/O: streaming JSONL input, output line formatting, resumable output, progress text.
#include "common/job-io.h"

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
#include <utility>
#include <vector>

namespace llmt::tasks {

using json = nlohmann::json;

namespace {

constexpr size_t kReadBufferBytes = size_t{256} << 10;
constexpr size_t kMaxJsonDepth = 256;
constexpr uint64_t kIdentityHashBytes = uint64_t{1} << 20;
constexpr int kSidecarVersion = 1;

std::string errno_text(int err) { return std::strerror(err); }

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Writes all of `data`, retrying short writes and EINTR.
bool write_all(int fd, const char* data, size_t n, int* err) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      *err = errno;
      return false;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads up to n bytes at `offset`; returns bytes read or -1 (errno set).
ssize_t pread_full(int fd, char* data, size_t n, uint64_t offset) {
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
size_t find_invalid_utf8(std::string_view s) {
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
size_t json_depth(std::string_view s) {
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

bool is_blank(std::string_view s) {
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\r') return false;
  }
  return true;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t fnv1a64(const char* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(p[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string parent_dir(const std::string& path) {
  std::filesystem::path p = std::filesystem::path(path).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

Status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return io_error(dir + ": cannot open directory to sync it: " + errno_text(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) return io_error(dir + ": fsync: " + errno_text(err));
  return Status::ok();
}

}  // namespace

const char* input_format_name(InputFormat format) {
  switch (format) {
    case InputFormat::kAuto: return "auto";
    case InputFormat::kSimple: return "simple";
    case InputFormat::kOpenAiBatch: return "openai-batch";
  }
  return "?";
}

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
    if (r < 0) return io_error("read failed at offset " + std::to_string(file_off_) + ": " + errno_text(errno));
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

namespace {

// Next non-blank line with BOM (at offset 0) and trailing CR removed; counts lines.
Result<bool> next_record_line(InputReader::LineSource& src, uint64_t* line_number, std::string* line,
                              uint64_t* offset, bool* too_long) {
  for (;;) {
    bool has_lf = false;
    LLMT_ASSIGN_OR_RETURN(bool got, src.next(line, offset, too_long, &has_lf));
    if (!got) return false;
    ++*line_number;
    if (*too_long) return true;
    if (*offset == 0 && line->size() >= 3 && line->compare(0, 3, "\xEF\xBB\xBF") == 0) line->erase(0, 3);
    if (!line->empty() && line->back() == '\r') line->pop_back();
    if (!is_blank(*line)) return true;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Input parsing.

void parse_input_line(std::string_view line, InputFormat file_format, size_t max_line_bytes,
                      bool too_long, InputRecord* r) {
  r->error_code.clear();
  r->error.clear();
  r->id = nullptr;
  r->text.clear();
  r->extra = json::object();
  r->custom_id = nullptr;
  r->endpoint = OpenAiEndpoint::kNone;
  r->body = nullptr;
  if (file_format != InputFormat::kAuto) r->format = file_format;
  auto fail = [r](const char* code, std::string message) {
    r->error_code = code;
    r->error = std::move(message);
  };

  if (too_long || line.size() > max_line_bytes) {
    return fail("line_too_long", "line is longer than the limit of " + std::to_string(max_line_bytes) + " bytes");
  }
  if (size_t bad = find_invalid_utf8(line); bad != std::string_view::npos) {
    return fail("invalid_utf8", "invalid UTF-8 at byte " + std::to_string(bad) + " of the line");
  }
  if (json_depth(line) > kMaxJsonDepth) {
    return fail("too_deep", "JSON nesting deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  }
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    std::string what = e.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
    if (size_t close = what.find("] "); what.rfind("[json.exception", 0) == 0 && close != std::string::npos) {
      what.erase(0, close + 2);
    }
    return fail("invalid_json", "invalid JSON: " + what);
  }
  if (!j.is_object()) return fail("not_an_object", std::string("line is a JSON ") + j.type_name() + ", not an object");

  const bool openai_shape = j.contains("custom_id");
  const InputFormat shape = openai_shape ? InputFormat::kOpenAiBatch : InputFormat::kSimple;
  if (file_format == InputFormat::kAuto) r->format = shape;

  if (r->format == InputFormat::kSimple) {
    for (auto& [key, value] : j.items()) {
      if (key != "id" && key != "text") r->extra[key] = value;
    }
    auto id_it = j.find("id");
    bool id_ok = id_it == j.end() || id_it->is_null() || id_it->is_string() || id_it->is_number();
    if (id_ok && id_it != j.end()) r->id = *id_it;
    if (openai_shape) {
      return fail("format_mismatch",
                  "line has \"custom_id\" (OpenAI batch format) but the file is in simple format");
    }
    if (!id_ok) return fail("invalid_field", std::string("\"id\" must be a string or a number, not ") + id_it->type_name());
    auto text_it = j.find("text");
    if (text_it == j.end()) return fail("missing_field", "missing \"text\"");
    if (!text_it->is_string()) return fail("invalid_field", std::string("\"text\" must be a string, not ") + text_it->type_name());
    const std::string& text = text_it->get_ref<const std::string&>();
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) return fail("empty_text", "\"text\" is empty");
    r->text = text;
    return;
  }

  // OpenAI batch format.
  auto cid = j.find("custom_id");
  if (cid != j.end() && cid->is_string()) r->custom_id = *cid;
  if (!openai_shape) {
    if (j.contains("text")) {
      return fail("format_mismatch",
                  "line has \"text\" and no \"custom_id\" (simple format) but the file is in OpenAI batch format");
    }
    return fail("missing_field", "missing \"custom_id\"");
  }
  if (!cid->is_string() || cid->get_ref<const std::string&>().empty()) {
    return fail("invalid_field", "\"custom_id\" must be a non-empty string");
  }
  auto method = j.find("method");
  if (method == j.end()) return fail("missing_field", "missing \"method\"");
  if (!method->is_string() || *method != "POST") return fail("invalid_field", "\"method\" must be \"POST\"");
  auto url = j.find("url");
  if (url == j.end()) return fail("missing_field", "missing \"url\"");
  if (url->is_string() && *url == "/v1/chat/completions") {
    r->endpoint = OpenAiEndpoint::kChatCompletions;
  } else if (url->is_string() && *url == "/v1/completions") {
    r->endpoint = OpenAiEndpoint::kCompletions;
  } else {
    return fail("invalid_field", "unsupported \"url\" " + dump(*url) +
                                     " (supported: \"/v1/chat/completions\", \"/v1/completions\")");
  }
  auto body = j.find("body");
  if (body == j.end()) return fail("missing_field", "missing \"body\"");
  if (!body->is_object()) return fail("invalid_field", std::string("\"body\" must be an object, not ") + body->type_name());
  if (r->endpoint == OpenAiEndpoint::kChatCompletions) {
    auto msgs = body->find("messages");
    if (msgs == body->end()) return fail("missing_field", "missing \"body.messages\"");
    if (!msgs->is_array() || msgs->empty()) return fail("invalid_field", "\"body.messages\" must be a non-empty array");
    for (size_t i = 0; i < msgs->size(); ++i) {
      if (!(*msgs)[i].is_object()) {
        return fail("invalid_field", "\"body.messages[" + std::to_string(i) + "]\" must be an object");
      }
    }
  } else {
    auto prompt = body->find("prompt");
    if (prompt == body->end()) return fail("missing_field", "missing \"body.prompt\"");
    bool ok = prompt->is_string();
    if (prompt->is_array() && !prompt->empty()) {
      ok = std::all_of(prompt->begin(), prompt->end(), [](const json& p) { return p.is_string(); });
    }
    if (!ok) return fail("invalid_field", "\"body.prompt\" must be a string or a non-empty array of strings");
  }
  r->body = std::move(*body);
}

// ---------------------------------------------------------------------------------------------
// InputReader.

InputReader::~InputReader() = default;

Result<std::unique_ptr<InputReader>> InputReader::open(const std::string& path, InputReaderOptions options) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return not_found(path + ": no such file");
    return io_error(path + ": cannot open: " + errno_text(err));
  }
  std::unique_ptr<InputReader> reader(new InputReader());
  reader->src_ = std::make_unique<LineSource>(fd, /*own_fd=*/true, options.max_line_bytes);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return io_error(path + ": stat: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) return invalid_argument(path + ": not a regular file");
  reader->file_size_ = static_cast<uint64_t>(st.st_size);
  reader->options_ = options;

  if (options.format != InputFormat::kAuto) {
    reader->format_ = options.format;
    return reader;
  }
  // Detection: the shape of the first valid line.
  LineSource probe(fd, /*own_fd=*/false, options.max_line_bytes);
  std::string line;
  uint64_t line_number = 0, offset = 0;
  bool too_long = false;
  InputRecord rec;
  for (;;) {
    auto got = next_record_line(probe, &line_number, &line, &offset, &too_long);
    if (!got.is_ok()) return Status(got.status().code(), path + ": " + got.status().message());
    if (!*got) break;
    parse_input_line(line, InputFormat::kAuto, options.max_line_bytes, too_long, &rec);
    if (rec.ok()) {
      reader->format_ = rec.format;
      reader->format_line_ = line_number;
      break;
    }
  }
  return reader;
}

Result<bool> InputReader::next_line(std::string* line, uint64_t* line_number, uint64_t* offset, bool* too_long) {
  auto got = next_record_line(*src_, &line_number_, line, offset, too_long);
  *line_number = line_number_;
  return got;
}

Result<bool> InputReader::next(InputRecord* record) {
  std::string line;
  uint64_t line_number = 0, offset = 0;
  bool too_long = false;
  LLMT_ASSIGN_OR_RETURN(bool got, next_line(&line, &line_number, &offset, &too_long));
  if (!got) return false;
  parse_input_line(line, format_, options_.max_line_bytes, too_long, record);
  record->format = format_;
  record->index = n_records_++;
  record->line_number = line_number;
  record->byte_offset = offset;
  return true;
}

Result<uint64_t> InputReader::skip(uint64_t n) {
  std::string line;
  uint64_t line_number = 0, offset = 0, skipped = 0;
  bool too_long = false;
  while (skipped < n) {
    LLMT_ASSIGN_OR_RETURN(bool got, next_line(&line, &line_number, &offset, &too_long));
    if (!got) break;
    ++skipped;
    ++n_records_;
  }
  return skipped;
}

uint64_t InputReader::bytes_consumed() const { return src_->offset_next(); }

Result<uint64_t> count_input_records(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return not_found(path + ": no such file");
    return io_error(path + ": cannot open: " + errno_text(err));
  }
  InputReader::LineSource src(fd, /*own_fd=*/true, InputReaderOptions{}.max_line_bytes);
  std::string line;
  uint64_t line_number = 0, offset = 0, n = 0;
  bool too_long = false;
  for (;;) {
    auto got = next_record_line(src, &line_number, &line, &offset, &too_long);
    if (!got.is_ok()) return Status(got.status().code(), path + ": " + got.status().message());
    if (!*got) return n;
    ++n;
  }
}

// ---------------------------------------------------------------------------------------------
// Output lines.

namespace {

std::string error_object(const std::string& code, const std::string& message, uint64_t line_number) {
  std::string s = "{\"code\":" + dump(json(code)) + ",\"message\":" + dump(json(message));
  if (line_number > 0) s += ",\"line\":" + std::to_string(line_number);
  return s + "}";
}

// {"id": ..., <extra>, "result": <result>, "error": <error>}
std::string simple_line(const InputRecord& r, const std::string& result, const std::string& error) {
  std::string s = "{\"id\":" + dump(r.id);
  if (r.extra.is_object()) {
    for (auto& [key, value] : r.extra.items()) {
      if (key == "id" || key == "result" || key == "error" || key == "text") continue;
      s += "," + dump(json(key)) + ":" + dump(value);
    }
  }
  return s + ",\"result\":" + result + ",\"error\":" + error + "}";
}

std::string openai_line(const InputRecord& r, const std::string& response, const std::string& error) {
  return "{\"id\":\"batch_req_" + std::to_string(r.index) + "\",\"custom_id\":" + dump(r.custom_id) +
         ",\"response\":" + response + ",\"error\":" + error + "}";
}

}  // namespace

std::string format_input_error_line(const InputRecord& r) {
  std::string error = error_object(r.error_code.empty() ? "invalid_input" : r.error_code, r.error, r.line_number);
  if (r.format == InputFormat::kOpenAiBatch) return openai_line(r, "null", error);
  return simple_line(r, "null", error);
}

std::string format_output_line(const InputRecord& r, const RecordOutcome& outcome) {
  if (!r.ok()) return format_input_error_line(r);
  if (outcome.error) {
    std::string error = error_object(outcome.error->code, outcome.error->message, 0);
    if (r.format == InputFormat::kOpenAiBatch) return openai_line(r, "null", error);
    return simple_line(r, "null", error);
  }
  if (r.format == InputFormat::kOpenAiBatch) {
    std::string response = "{\"status_code\":" + std::to_string(outcome.status_code) + ",\"request_id\":\"req_" +
                           std::to_string(r.index) + "\",\"body\":" + dump(outcome.result) + "}";
    return openai_line(r, response, "null");
  }
  return simple_line(r, dump(outcome.result), "null");
}

// ---------------------------------------------------------------------------------------------
// Job identity and sidecar.

std::string job_sidecar_path(const std::string& output_path) { return output_path + ".llmt-job"; }

Result<JobIdentity> make_job_identity(const std::string& input_path, std::string params_fingerprint) {
  int fd = ::open(input_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return not_found(input_path + ": no such file");
    return io_error(input_path + ": cannot open: " + errno_text(err));
  }
  JobIdentity id;
  id.input_path = input_path;
  id.params_fingerprint = std::move(params_fingerprint);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return io_error(input_path + ": stat: " + errno_text(err));
  }
  id.input_size = static_cast<uint64_t>(st.st_size);
  uint64_t n = std::min(id.input_size, kIdentityHashBytes);
  std::vector<char> head(n), tail(n);
  ssize_t n_head = pread_full(fd, head.data(), n, 0);
  ssize_t n_tail = n_head < 0 ? -1 : pread_full(fd, tail.data(), n, id.input_size - n);
  int err = errno;
  ::close(fd);
  if (n_head < 0 || n_tail < 0) return io_error(input_path + ": read: " + errno_text(err));
  id.input_head_hash = hex64(fnv1a64(head.data(), static_cast<size_t>(n_head)));
  id.input_tail_hash = hex64(fnv1a64(tail.data(), static_cast<size_t>(n_tail)));
  return id;
}

// ---------------------------------------------------------------------------------------------
// OutputWriter.

namespace {

// A complete output line is kept when it is a JSON object.
bool is_json_object_line(const std::string& line) {
  size_t i = line.find_first_not_of(" \t\r");
  if (i == std::string::npos || line[i] != '{') return false;
  return json::accept(line);
}

std::string refuse_hint(const std::string& output_path) {
  return "; use --overwrite to start over, or another output path (output: " + output_path + ")";
}

}  // namespace

Result<std::unique_ptr<OutputWriter>> OutputWriter::open(const std::string& output_path, const JobIdentity& identity,
                                                         OutputWriterOptions options) {
  std::unique_ptr<OutputWriter> w(new OutputWriter());
  w->path_ = output_path;
  w->sidecar_path_ = job_sidecar_path(output_path);
  w->identity_ = identity;
  w->options_ = std::move(options);

  struct stat in_st {}, out_st {};
  bool out_exists = ::stat(output_path.c_str(), &out_st) == 0;
  if (out_exists && !identity.input_path.empty() && ::stat(identity.input_path.c_str(), &in_st) == 0 &&
      in_st.st_dev == out_st.st_dev && in_st.st_ino == out_st.st_ino) {
    return invalid_argument(output_path + ": the output path is the input file");
  }
  if (out_exists && !S_ISREG(out_st.st_mode)) return invalid_argument(output_path + ": output is not a regular file");

  w->fd_ = ::open(output_path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (w->fd_ < 0) return io_error(output_path + ": cannot open for writing: " + errno_text(errno));
  if (::flock(w->fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return invalid_argument(output_path + ": another process is writing this output");
    return io_error(output_path + ": flock: " + errno_text(errno));
  }
  if (!out_exists) LLMT_RETURN_IF_ERROR(fsync_dir(parent_dir(output_path)));
  struct stat st {};
  if (::fstat(w->fd_, &st) != 0) return io_error(output_path + ": stat: " + errno_text(errno));
  const uint64_t size = static_cast<uint64_t>(st.st_size);

  std::lock_guard<std::mutex> lock(w->mu_);
  auto truncate_to = [&](uint64_t keep) -> Status {
    if (::ftruncate(w->fd_, static_cast<off_t>(keep)) != 0 || ::fsync(w->fd_) != 0) {
      return io_error(output_path + ": cannot truncate: " + errno_text(errno));
    }
    return Status::ok();
  };

  if (w->options_.overwrite) {
    // Output first, then the sidecar: a crash in between leaves an empty output under the old
    // sidecar, which either resumes correctly (same job) or is refused (different job).
    LLMT_RETURN_IF_ERROR(truncate_to(0));
    LLMT_RETURN_IF_ERROR(w->write_sidecar_locked(false, 0));
    return w;
  }

  if (size == 0) {
    // Nothing done yet (new file, or a crash right after an overwrite truncated it): fresh,
    // whatever an old sidecar says.
    LLMT_RETURN_IF_ERROR(w->write_sidecar_locked(false, 0));
    return w;
  }
  std::string side_text;
  {
    int sfd = ::open(w->sidecar_path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (sfd < 0 && errno != ENOENT) return io_error(w->sidecar_path_ + ": cannot open: " + errno_text(errno));
    if (sfd >= 0) {
      char buf[4096];
      for (;;) {
        ssize_t r = ::read(sfd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        side_text.append(buf, static_cast<size_t>(r));
        if (side_text.size() > (size_t{1} << 20)) break;
      }
      ::close(sfd);
    } else {
      return invalid_argument(output_path + ": output file exists and was not written by an llmthreads job (no " +
                              w->sidecar_path_ + ")" + refuse_hint(output_path));
    }
  }

  json side = json::parse(side_text, nullptr, /*allow_exceptions=*/false);
  auto bad_sidecar = [&](const std::string& why) {
    return corrupt(w->sidecar_path_ + ": " + why + refuse_hint(output_path));
  };
  if (!side.is_object() || side.value("format", "") != "llmthreads-job") return bad_sidecar("not a job sidecar");
  if (side.value("version", 0) != kSidecarVersion) return bad_sidecar("unsupported sidecar version");
  std::string diff;
  auto differs = [&](const char* what, const json& stored, const json& now) {
    if (stored != now) diff += std::string(diff.empty() ? "" : ", ") + what + " (was " + dump(stored) + ", now " + dump(now) + ")";
  };
  differs("input size", side.value("input_size", json()), json(identity.input_size));
  differs("input content (first MiB)", side.value("input_head_hash", json()), json(identity.input_head_hash));
  differs("input content (last MiB)", side.value("input_tail_hash", json()), json(identity.input_tail_hash));
  differs("task parameters", side.value("params_fingerprint", json()), json(identity.params_fingerprint));
  if (!diff.empty()) {
    return invalid_argument(output_path + ": cannot resume: this output belongs to another job (input " +
                            side.value("input_path", std::string("?")) + "); differs: " + diff +
                            refuse_hint(output_path));
  }

  // Scan: keep complete JSON-object lines up to the first damaged one.
  uint64_t keep = 0, n_lines = 0;
  {
    InputReader::LineSource src(w->fd_, /*own_fd=*/false, w->options_.max_scan_line_bytes);
    std::string line;
    uint64_t offset = 0;
    bool too_long = false, has_lf = false;
    for (;;) {
      auto got = src.next(&line, &offset, &too_long, &has_lf);
      if (!got.is_ok()) return Status(got.status().code(), output_path + ": " + got.status().message());
      if (!*got || !has_lf || too_long || !is_json_object_line(line)) break;
      ++n_lines;
      keep = src.offset_next();
    }
  }
  if (keep < size) {
    LLMT_RETURN_IF_ERROR(truncate_to(keep));
    w->bytes_truncated_ = size - keep;
  }
  w->n_done_at_open_ = n_lines;
  w->next_index_ = w->n_written_ = w->n_durable_ = n_lines;
  bool complete = side.value("complete", false);
  uint64_t n_records = side.value("n_records", uint64_t{0});
  w->complete_at_open_ = complete && n_records == n_lines;
  LLMT_RETURN_IF_ERROR(w->write_sidecar_locked(w->complete_at_open_, w->complete_at_open_ ? n_records : 0));
  return w;
}

OutputWriter::~OutputWriter() {
  if (fd_ < 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    (void)write_pending_locked();
  }
  ::close(fd_);
}

double OutputWriter::now() const { return options_.clock ? options_.clock() : steady_seconds(); }

uint64_t OutputWriter::next_index() const {
  std::lock_guard<std::mutex> lock(mu_);
  return next_index_;
}
uint64_t OutputWriter::n_written() const {
  std::lock_guard<std::mutex> lock(mu_);
  return n_written_;
}
uint64_t OutputWriter::n_durable() const {
  std::lock_guard<std::mutex> lock(mu_);
  return n_durable_;
}
size_t OutputWriter::n_buffered() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reorder_.size();
}
size_t OutputWriter::bytes_buffered() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reorder_bytes_;
}

Status OutputWriter::write_sidecar_locked(bool complete, uint64_t n_records) {
  json side = {
      {"format", "llmthreads-job"},
      {"version", kSidecarVersion},
      {"input_path", identity_.input_path},
      {"input_size", identity_.input_size},
      {"input_head_hash", identity_.input_head_hash},
      {"input_tail_hash", identity_.input_tail_hash},
      {"params_fingerprint", identity_.params_fingerprint},
      {"n_done", n_durable_},
      {"complete", complete},
      {"n_records", n_records},
  };
  std::string text = dump(side) + "\n";
  std::string tmp = sidecar_path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error(tmp + ": cannot create: " + errno_text(errno));
  int err = 0;
  bool ok = write_all(fd, text.data(), text.size(), &err);
  if (ok && ::fsync(fd) != 0) {
    ok = false;
    err = errno;
  }
  ::close(fd);
  if (!ok) {
    ::unlink(tmp.c_str());
    return io_error(tmp + ": write: " + errno_text(err));
  }
  if (::rename(tmp.c_str(), sidecar_path_.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    return io_error(sidecar_path_ + ": rename: " + errno_text(err));
  }
  return fsync_dir(parent_dir(sidecar_path_));
}

Status OutputWriter::write_pending_locked() {
  if (!failed_.is_ok()) return failed_;
  if (!pending_.empty()) {
    int err = 0;
    if (!write_all(fd_, pending_.data(), pending_.size(), &err)) {
      failed_ = io_error(path_ + ": write failed: " + errno_text(err));
      return failed_;
    }
    n_written_ += n_pending_;
    pending_.clear();
    n_pending_ = 0;
  }
  if (n_durable_ < n_written_) {
    if (::fdatasync(fd_) != 0) {
      failed_ = io_error(path_ + ": fdatasync failed: " + errno_text(errno));
      return failed_;
    }
    n_durable_ = n_written_;
    Status st = write_sidecar_locked(false, 0);
    if (!st.is_ok()) {
      failed_ = st;
      return st;
    }
  }
  return Status::ok();
}

Status OutputWriter::submit_result(uint64_t record_index, std::string line) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!failed_.is_ok()) return failed_;
  if (line.find('\n') != std::string::npos) {
    return invalid_argument("output line of record " + std::to_string(record_index) + " contains a line feed");
  }
  if (record_index < next_index_ || reorder_.count(record_index) != 0) {
    return invalid_argument("output line of record " + std::to_string(record_index) + " was already submitted");
  }
  auto append = [this](const std::string& l) {
    if (n_pending_ == 0) pending_since_ = now();
    pending_ += l;
    pending_ += '\n';
    ++n_pending_;
    ++next_index_;
  };
  if (record_index != next_index_) {
    reorder_bytes_ += line.size();
    reorder_.emplace(record_index, std::move(line));
  } else {
    append(line);
    for (auto it = reorder_.begin(); it != reorder_.end() && it->first == next_index_; it = reorder_.erase(it)) {
      reorder_bytes_ -= it->second.size();
      append(it->second);
    }
  }
  if (n_pending_ > 0 && (n_pending_ >= options_.sync_every_records ||
                         now() - pending_since_ >= options_.sync_every_seconds)) {
    return write_pending_locked();
  }
  return Status::ok();
}

Status OutputWriter::tick() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!failed_.is_ok()) return failed_;
  if (n_pending_ > 0 && now() - pending_since_ >= options_.sync_every_seconds) return write_pending_locked();
  return Status::ok();
}

Status OutputWriter::flush_durable() {
  std::lock_guard<std::mutex> lock(mu_);
  return write_pending_locked();
}

Status OutputWriter::mark_complete(uint64_t n_records) {
  std::lock_guard<std::mutex> lock(mu_);
  LLMT_RETURN_IF_ERROR(write_pending_locked());
  if (n_durable_ != n_records) {
    return internal_error(path_ + ": job marked complete with " + std::to_string(n_durable_) + " of " +
                          std::to_string(n_records) + " lines written");
  }
  return write_sidecar_locked(true, n_records);
}

// ---------------------------------------------------------------------------------------------
// Progress.

std::string format_compact_number(double v) {
  if (!std::isfinite(v) || v < 0) v = 0;
  char buf[32];
  if (v < 99.95) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
  }
  if (v < 999.5) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  static const char kSuffix[] = {'k', 'M', 'G', 'T', 'P'};
  for (int i = 0; i < 5; ++i) {
    v /= 1000.0;
    if (v < 9.95) {
      std::snprintf(buf, sizeof buf, "%.1f%c", v, kSuffix[i]);
      return buf;
    }
    if (v < 999.5 || i == 4) {
      std::snprintf(buf, sizeof buf, "%.0f%c", v, kSuffix[i]);
      return buf;
    }
  }
  return buf;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 27000.0 * 3600) return "--:--";
  auto t = static_cast<uint64_t>(std::ceil(seconds));
  uint64_t h = t / 3600, m = (t % 3600) / 60, s = t % 60;
  char buf[32];
  if (h > 0) {
    std::snprintf(buf, sizeof buf, "%llu:%02llu:%02llu", static_cast<unsigned long long>(h),
                  static_cast<unsigned long long>(m), static_cast<unsigned long long>(s));
  } else {
    std::snprintf(buf, sizeof buf, "%llu:%02llu", static_cast<unsigned long long>(m),
                  static_cast<unsigned long long>(s));
  }
  return buf;
}

namespace {

struct Rates {
  double docs_per_s = 0;
  double tok_per_s = 0;
  double eta_s = -1;  // unknown
};

Rates rates_of(const ProgressSnapshot& s) {
  Rates r;
  uint64_t run_done = s.n_done > s.n_done_at_start ? s.n_done - s.n_done_at_start : 0;
  if (s.elapsed_s > 0) {
    r.docs_per_s = static_cast<double>(run_done) / s.elapsed_s;
    r.tok_per_s = static_cast<double>(s.n_tokens) / s.elapsed_s;
  }
  if (s.n_total > 0 && s.n_done >= s.n_total) {
    r.eta_s = 0;
  } else if (s.n_total > 0 && r.docs_per_s > 0) {
    r.eta_s = static_cast<double>(s.n_total - s.n_done) / r.docs_per_s;
  }
  return r;
}

std::string bar_cells(uint64_t done, uint64_t total, size_t width) {
  uint64_t filled = done >= total ? width : static_cast<uint64_t>(static_cast<double>(done) / total * width);
  filled = std::min<uint64_t>(filled, width);
  std::string s(filled, '=');
  if (filled < width) {
    s += '>';
    s.append(width - filled - 1, ' ');
  }
  return s;
}

}  // namespace

std::string format_progress_bar(const ProgressSnapshot& s) {
  constexpr size_t kMaxCols = 79, kBarWidth = 20, kMinBar = 5;
  Rates r = rates_of(s);
  std::string docs = s.n_total > 0 ? std::to_string(s.n_done) + "/" + std::to_string(s.n_total) + " docs"
                                   : std::to_string(s.n_done) + " docs";
  std::string rate = "  " + format_compact_number(r.docs_per_s) + " docs/s";
  std::string tok = "  " + format_compact_number(r.tok_per_s) + " tok/s";
  std::string tail = s.n_total > 0 ? "  ETA " + format_duration(r.eta_s) : "  " + format_duration(s.elapsed_s);
  if (s.n_total == 0) {
    std::string line = docs + rate + tok + tail;
    if (line.size() > kMaxCols) line = docs + rate + tail;
    return line.substr(0, kMaxCols);
  }
  std::string text = " " + docs + rate + tok + tail;
  if (text.size() + kBarWidth + 2 > kMaxCols) text = " " + docs + rate + tail;
  size_t width = kBarWidth;
  if (text.size() + width + 2 > kMaxCols) {
    width = kMaxCols > text.size() + 2 + kMinBar ? kMaxCols - text.size() - 2 : 0;
  }
  if (width < kMinBar) return text.substr(1, kMaxCols);
  return "[" + bar_cells(s.n_done, s.n_total, width) + "]" + text;
}

std::string format_progress_line(const ProgressSnapshot& s) {
  Rates r = rates_of(s);
  std::string line = "progress: " + std::to_string(s.n_done);
  if (s.n_total > 0) {
    char pct[32];
    double p = std::min(100.0, 100.0 * static_cast<double>(s.n_done) / static_cast<double>(s.n_total));
    std::snprintf(pct, sizeof pct, " (%.1f%%)", p);
    line += "/" + std::to_string(s.n_total) + " docs" + pct;
  } else {
    line += " docs";
  }
  line += "  " + format_compact_number(r.docs_per_s) + " docs/s  " + format_compact_number(r.tok_per_s) +
          " tok/s  elapsed " + format_duration(s.elapsed_s);
  if (s.n_total > 0) line += "  ETA " + format_duration(r.eta_s);
  return line;
}

ProgressMeter::ProgressMeter(ProgressMeterOptions options) : options_(std::move(options)) {
  start_ = now();
  last_print_ = start_;
}

double ProgressMeter::now() const { return options_.clock ? options_.clock() : steady_seconds(); }

ProgressSnapshot ProgressMeter::snapshot(uint64_t n_done, uint64_t n_tokens) const {
  ProgressSnapshot s;
  s.n_done = n_done;
  s.n_total = options_.n_total;
  s.n_done_at_start = options_.n_done_at_start;
  s.n_tokens = n_tokens;
  s.elapsed_s = std::max(0.0, now() - start_);
  return s;
}

std::string ProgressMeter::render(const ProgressSnapshot& s) const {
  std::string out;
  if (options_.tty) {
    out = "\r";
    out += format_progress_bar(s);
    out += "\x1b[K";
  } else {
    out = format_progress_line(s);
    out += '\n';
  }
  return out;
}

std::string ProgressMeter::update(uint64_t n_done, uint64_t n_tokens) {
  double t = now();
  double interval = options_.tty ? options_.tty_interval_s : options_.plain_interval_s;
  bool due = options_.tty ? (!printed_ || t - last_print_ >= interval) : (t - last_print_ >= interval);
  if (!due) return "";
  printed_ = true;
  last_print_ = t;
  return render(snapshot(n_done, n_tokens));
}

std::string ProgressMeter::finish(uint64_t n_done, uint64_t n_tokens) {
  printed_ = true;
  last_print_ = now();
  std::string s = render(snapshot(n_done, n_tokens));
  if (options_.tty) s += "\n";
  return s;
}

}  // namespace llmt::tasks
