// Job I/O, input: the buffered line source, input-line parsing (simple and OpenAI Batch lines),
// InputReader and count_input_records (job-io.h).
#include "common/job-io.h"

#include "common/job-io-util.h"

namespace llmt::tasks {

using json = nlohmann::json;
using namespace io_detail;

const char* input_format_name(InputFormat format) {
  switch (format) {
    case InputFormat::kAuto:
      return "auto";
    case InputFormat::kSimple:
      return "simple";
    case InputFormat::kOpenAiBatch:
      return "openai-batch";
  }
  return "?";
}

namespace {

// Next non-blank line with BOM (at offset 0) and trailing CR removed; counts lines.
Result<bool> next_record_line(InputReader::LineSource& src, uint64_t* line_number,
                              std::string* line, uint64_t* offset, bool* too_long) {
  for (;;) {
    bool has_lf = false;
    LLMT_ASSIGN_OR_RETURN(bool got, src.next(line, offset, too_long, &has_lf));
    if (!got) return false;
    ++*line_number;
    if (*too_long) return true;
    if (*offset == 0 && line->size() >= 3 && line->compare(0, 3, "\xEF\xBB\xBF") == 0)
      line->erase(0, 3);
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
    return fail("line_too_long",
                "line is longer than the limit of " + std::to_string(max_line_bytes) + " bytes");
  }
  if (size_t bad = find_invalid_utf8(line); bad != std::string_view::npos) {
    return fail("invalid_utf8", "invalid UTF-8 at byte " + std::to_string(bad) + " of the line");
  }
  if (json_depth(line) > kMaxJsonDepth) {
    return fail("too_deep",
                "JSON nesting deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  }
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    std::string what = e.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
    if (size_t close = what.find("] ");
        what.rfind("[json.exception", 0) == 0 && close != std::string::npos) {
      what.erase(0, close + 2);
    }
    return fail("invalid_json", "invalid JSON: " + what);
  }
  if (!j.is_object())
    return fail("not_an_object",
                std::string("line is a JSON ") + j.type_name() + ", not an object");

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
    if (!id_ok)
      return fail("invalid_field",
                  std::string("\"id\" must be a string or a number, not ") + id_it->type_name());
    auto text_it = j.find("text");
    if (text_it == j.end()) return fail("missing_field", "missing \"text\"");
    if (!text_it->is_string())
      return fail("invalid_field",
                  std::string("\"text\" must be a string, not ") + text_it->type_name());
    const std::string& text = text_it->get_ref<const std::string&>();
    if (text.find_first_not_of(" \t\r\n") == std::string::npos)
      return fail("empty_text", "\"text\" is empty");
    r->text = text;
    return;
  }

  // OpenAI batch format.
  auto cid = j.find("custom_id");
  if (cid != j.end() && cid->is_string()) r->custom_id = *cid;
  if (!openai_shape) {
    if (j.contains("text")) {
      return fail("format_mismatch",
                  "line has \"text\" and no \"custom_id\" (simple format) but the file is in "
                  "OpenAI batch format");
    }
    return fail("missing_field", "missing \"custom_id\"");
  }
  if (!cid->is_string() || cid->get_ref<const std::string&>().empty()) {
    return fail("invalid_field", "\"custom_id\" must be a non-empty string");
  }
  auto method = j.find("method");
  if (method == j.end()) return fail("missing_field", "missing \"method\"");
  if (!method->is_string() || *method != "POST")
    return fail("invalid_field", "\"method\" must be \"POST\"");
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
  if (!body->is_object())
    return fail("invalid_field",
                std::string("\"body\" must be an object, not ") + body->type_name());
  if (r->endpoint == OpenAiEndpoint::kChatCompletions) {
    auto msgs = body->find("messages");
    if (msgs == body->end()) return fail("missing_field", "missing \"body.messages\"");
    if (!msgs->is_array() || msgs->empty())
      return fail("invalid_field", "\"body.messages\" must be a non-empty array");
    for (size_t i = 0; i < msgs->size(); ++i) {
      if (!(*msgs)[i].is_object()) {
        return fail("invalid_field",
                    "\"body.messages[" + std::to_string(i) + "]\" must be an object");
      }
    }
  } else {
    auto prompt = body->find("prompt");
    if (prompt == body->end()) return fail("missing_field", "missing \"body.prompt\"");
    bool ok = prompt->is_string();
    if (prompt->is_array() && !prompt->empty()) {
      ok = std::all_of(prompt->begin(), prompt->end(), [](const json& p) { return p.is_string(); });
    }
    if (!ok)
      return fail("invalid_field",
                  "\"body.prompt\" must be a string or a non-empty array of strings");
  }
  r->body = std::move(*body);
}

// ---------------------------------------------------------------------------------------------
// InputReader.

InputReader::~InputReader() = default;

Result<std::unique_ptr<InputReader>> InputReader::open(const std::string& path,
                                                       InputReaderOptions options) {
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

Result<bool> InputReader::next_line(std::string* line, uint64_t* line_number, uint64_t* offset,
                                    bool* too_long) {
  auto got = next_record_line(*src_, &line_number_, line, offset, too_long);
  *line_number = line_number_;
  return got;
}

Result<bool> InputReader::next_raw(RawRecord* raw) {
  LLMT_ASSIGN_OR_RETURN(
      bool got, next_line(&raw->line, &raw->line_number, &raw->byte_offset, &raw->too_long));
  if (!got) return false;
  if (raw->too_long) raw->line.clear();
  raw->index = n_records_++;
  return true;
}

void parse_raw_record(const InputReader::RawRecord& raw, InputFormat file_format,
                      size_t max_line_bytes, InputRecord* record) {
  parse_input_line(raw.line, file_format, max_line_bytes, raw.too_long, record);
  record->format = file_format;
  record->index = raw.index;
  record->line_number = raw.line_number;
  record->byte_offset = raw.byte_offset;
}

Result<bool> InputReader::next(InputRecord* record) {
  RawRecord raw;
  LLMT_ASSIGN_OR_RETURN(bool got, next_raw(&raw));
  if (!got) return false;
  parse_raw_record(raw, format_, options_.max_line_bytes, record);
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

uint64_t InputReader::bytes_consumed() const {
  return src_->offset_next();
}

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

}  // namespace llmt::tasks
