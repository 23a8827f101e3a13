// Job I/O, output: output-line formatting, the job identity and its sidecar, and the resumable
// OutputWriter (job-io.h).
#include "common/job-io.h"

#include <algorithm>

#include "common/job-io-util.h"

namespace llmt::tasks {

using json = nlohmann::json;
using namespace io_detail;

// ---------------------------------------------------------------------------------------------
// Output lines.

namespace {

std::string error_object(const std::string& code, const std::string& message,
                         uint64_t line_number) {
  std::string s = "{\"code\":" + dump(json(code)) + ",\"message\":" + dump(json(message));
  if (line_number > 0) s += ",\"line\":" + std::to_string(line_number);
  return s + "}";
}

// {"id": ..., <extra>, "result": <result>, "error": <error>}; a record without an id gets
// "id": null, "line": <1-based input line> (and an input field "line" is then not copied).
std::string simple_line(const InputRecord& r, const std::string& result, const std::string& error) {
  std::string s = "{\"id\":" + dump(r.id);
  const bool by_line = r.id.is_null() && r.line_number > 0;
  if (by_line) s += ",\"line\":" + std::to_string(r.line_number);
  if (r.extra.is_object()) {
    for (auto& [key, value] : r.extra.items()) {
      if (key == "id" || key == "result" || key == "error" || key == "text") continue;
      if (by_line && key == "line") continue;
      s += "," + dump(json(key)) + ":" + dump(value);
    }
  }
  return s + ",\"result\":" + result + ",\"error\":" + error + "}";
}

std::string openai_line(const InputRecord& r, const std::string& response,
                        const std::string& error) {
  return "{\"id\":\"batch_req_" + std::to_string(r.index) +
         "\",\"custom_id\":" + dump(r.custom_id) + ",\"response\":" + response +
         ",\"error\":" + error + "}";
}

}  // namespace

std::string format_input_error_line(const InputRecord& r) {
  std::string error =
      error_object(r.error_code.empty() ? "invalid_input" : r.error_code, r.error, r.line_number);
  if (r.format == InputFormat::kOpenAiBatch) return openai_line(r, "null", error);
  return simple_line(r, "null", error);
}

std::string format_output_line(const InputRecord& r, const RecordOutcome& outcome) {
  if (!r.ok()) return format_input_error_line(r);
  if (outcome.error) {
    // A simple record without an id is known by its line: the message says it too.
    const bool by_line = r.format == InputFormat::kSimple && r.id.is_null() && r.line_number > 0;
    std::string error =
        error_object(outcome.error->code,
                     (by_line ? "line " + std::to_string(r.line_number) + ": " : std::string()) +
                         outcome.error->message,
                     by_line ? r.line_number : 0);
    if (r.format == InputFormat::kOpenAiBatch) return openai_line(r, "null", error);
    return simple_line(r, "null", error);
  }
  if (r.format == InputFormat::kOpenAiBatch) {
    std::string response = "{\"status_code\":" + std::to_string(outcome.status_code) +
                           ",\"request_id\":\"req_" + std::to_string(r.index) +
                           "\",\"body\":" + dump(outcome.result) + "}";
    return openai_line(r, response, "null");
  }
  return simple_line(r, dump(outcome.result), "null");
}

// ---------------------------------------------------------------------------------------------
// Job identity and sidecar.

namespace {

// A fingerprint value as a user would type it: numbers with 6 significant digits, strings bare
// when they are one word (else JSON-quoted), anything long cut.
std::string option_value_text(const json& v) {
  std::string s;
  if (v.is_number_float()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v.get<double>());
    s = buf;
  } else if (v.is_string()) {
    const std::string& t = v.get_ref<const std::string&>();
    const bool word = !t.empty() && t.find_first_of(" \t\n\"'\\") == std::string::npos;
    s = word ? t : dump(v);
  } else {
    s = dump(v);
  }
  constexpr size_t kMax = 48;
  if (s.size() > kMax) s = s.substr(0, kMax - 3) + "...";
  return s;
}

}  // namespace

std::string describe_param_changes(std::string_view old_fingerprint,
                                   std::string_view new_fingerprint,
                                   const std::map<std::string, std::string>& param_options) {
  const json was = json::parse(old_fingerprint, nullptr, /*allow_exceptions=*/false);
  const json now = json::parse(new_fingerprint, nullptr, /*allow_exceptions=*/false);
  if (!was.is_object() || !now.is_object()) return "";
  std::vector<std::string> keys;
  for (auto& [k, v] : was.items()) {
    if (!now.contains(k) || now[k] != v) keys.push_back(k);
  }
  for (auto& [k, v] : now.items()) {
    if (!was.contains(k)) keys.push_back(k);
  }
  std::sort(keys.begin(), keys.end());
  if (keys.empty()) return "";
  auto option = [&](const std::string& k) {
    auto it = param_options.find(k);
    if (it != param_options.end()) return it->second;
    std::string o = "--" + k;
    std::replace(o.begin(), o.end(), '_', '-');
    return o;
  };
  auto value = [](const json& obj, const std::string& k) {
    return obj.contains(k) ? option_value_text(obj[k]) : std::string("(unset)");
  };
  if (keys.size() == 1) {
    return option(keys[0]) + " " + value(was, keys[0]) + "; this run has " + value(now, keys[0]);
  }
  std::string before, after;
  for (const auto& k : keys) {
    before += (before.empty() ? "" : ", ") + option(k) + " " + value(was, k);
    after += (after.empty() ? "" : ", ") + option(k) + " " + value(now, k);
  }
  return before + "; this run has " + after;
}

std::string job_sidecar_path(const std::string& output_path) {
  return output_path + ".llmt-job";
}

Result<JobIdentity> make_job_identity(const std::string& input_path,
                                      std::string params_fingerprint) {
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

Result<std::unique_ptr<OutputWriter>> OutputWriter::open(const std::string& output_path,
                                                         const JobIdentity& identity,
                                                         OutputWriterOptions options) {
  std::unique_ptr<OutputWriter> w(new OutputWriter());
  w->path_ = output_path;
  w->sidecar_path_ = job_sidecar_path(output_path);
  w->identity_ = identity;
  w->options_ = std::move(options);

  struct stat in_st {
  }, out_st{};
  bool out_exists = ::stat(output_path.c_str(), &out_st) == 0;
  if (out_exists && !identity.input_path.empty() &&
      ::stat(identity.input_path.c_str(), &in_st) == 0 && in_st.st_dev == out_st.st_dev &&
      in_st.st_ino == out_st.st_ino) {
    return invalid_argument(output_path + ": the output path is the input file");
  }
  if (out_exists && S_ISDIR(out_st.st_mode))
    return invalid_argument(output_path + ": cannot write the output there: " + errno_text(EISDIR) +
                            " (give a file path)");
  if (out_exists && !S_ISREG(out_st.st_mode))
    return invalid_argument(output_path + ": output is not a regular file");

  w->fd_ = ::open(output_path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (w->fd_ < 0) return io_error(output_path + ": cannot open for writing: " + errno_text(errno));
  if (::flock(w->fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      return invalid_argument(output_path + ": another process is writing this output");
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
    if (sfd < 0 && errno != ENOENT)
      return io_error(w->sidecar_path_ + ": cannot open: " + errno_text(errno));
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
      return invalid_argument(output_path +
                              ": output file exists and was not written by an llmthreads job (no " +
                              w->sidecar_path_ + ")" + refuse_hint(output_path));
    }
  }

  json side = json::parse(side_text, nullptr, /*allow_exceptions=*/false);
  auto bad_sidecar = [&](const std::string& why) {
    return corrupt(w->sidecar_path_ + ": " + why + refuse_hint(output_path));
  };
  if (!side.is_object() || side.value("format", "") != "llmthreads-job")
    return bad_sidecar("not a job sidecar");
  if (side.value("version", 0) != kSidecarVersion)
    return bad_sidecar("unsupported sidecar version");
  std::string diff;
  auto differs = [&](const char* what, const json& stored, const json& now) {
    if (stored != now)
      diff += std::string(diff.empty() ? "" : ", ") + what + " (was " + dump(stored) + ", now " +
              dump(now) + ")";
  };
  differs("input size", side.value("input_size", json()), json(identity.input_size));
  differs("input content (first MiB)", side.value("input_head_hash", json()),
          json(identity.input_head_hash));
  differs("input content (last MiB)", side.value("input_tail_hash", json()),
          json(identity.input_tail_hash));
  const json stored_params = side.value("params_fingerprint", json());
  if (diff.empty() && stored_params.is_string() &&
      stored_params.get_ref<const std::string&>() != identity.params_fingerprint) {
    // Only the options changed: name them rather than dumping both fingerprints.
    const std::string changes =
        describe_param_changes(stored_params.get_ref<const std::string&>(),
                               identity.params_fingerprint, identity.param_options);
    if (!changes.empty()) {
      return invalid_argument(output_path + " was written with " + changes +
                              " (use --overwrite to start over, or the same options)");
    }
  }
  differs("task parameters", stored_params, json(identity.params_fingerprint));
  if (!diff.empty()) {
    return invalid_argument(output_path +
                            ": cannot resume: this output belongs to another job (input " +
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
      if (!got.is_ok())
        return Status(got.status().code(), output_path + ": " + got.status().message());
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
  LLMT_RETURN_IF_ERROR(
      w->write_sidecar_locked(w->complete_at_open_, w->complete_at_open_ ? n_records : 0));
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

double OutputWriter::now() const {
  return options_.clock ? options_.clock() : steady_seconds();
}

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
    size_t n_out = 0;
    // The file ends at a line boundary here (open() cut any partial line; a failed write below
    // cuts its own), so this is where the batch starts.
    const off_t start = ::lseek(fd_, 0, SEEK_END);
    if (!write_all(fd_, pending_.data(), pending_.size(), &err, &n_out)) {
      failed_ = keep_written_lines_locked(start, n_out, err);
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

Status OutputWriter::keep_written_lines_locked(off_t start, size_t n_out, int err) {
  // Keep the complete lines of the short write, cut the partial one, make them durable.
  const size_t keep = n_out == 0 ? 0 : pending_.rfind('\n', n_out - 1) + 1;  // npos + 1 == 0
  bool cut = start >= 0 && ::ftruncate(fd_, start + static_cast<off_t>(keep)) == 0;
  if (cut) {
    const uint64_t n_kept =
        static_cast<uint64_t>(std::count(pending_.begin(), pending_.begin() + keep, '\n'));
    n_written_ += n_kept;
    n_pending_ -= n_kept;
    pending_.erase(0, keep);
    if (::fdatasync(fd_) == 0) {
      n_durable_ = n_written_;
      (void)write_sidecar_locked(false, 0);  // best effort: the output itself is the checkpoint
    }
  }
  std::string msg = path_ + ": write failed: " + errno_text(err) + "; its first " +
                    std::to_string(n_durable_) + " lines are complete and synced";
  if (!cut) msg += " (the partial line after them could not be cut: resume will cut it)";
  return io_error(msg);
}

Status OutputWriter::submit_result(uint64_t record_index, std::string line) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!failed_.is_ok()) return failed_;
  if (line.find('\n') != std::string::npos) {
    return invalid_argument("output line of record " + std::to_string(record_index) +
                            " contains a line feed");
  }
  if (record_index < next_index_ || reorder_.count(record_index) != 0) {
    return invalid_argument("output line of record " + std::to_string(record_index) +
                            " was already submitted");
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
    for (auto it = reorder_.begin(); it != reorder_.end() && it->first == next_index_;
         it = reorder_.erase(it)) {
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
  if (n_pending_ > 0 && now() - pending_since_ >= options_.sync_every_seconds)
    return write_pending_locked();
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
    return internal_error(path_ + ": job marked complete with " + std::to_string(n_durable_) +
                          " of " + std::to_string(n_records) + " lines written");
  }
  return write_sidecar_locked(true, n_records);
}

}  // namespace llmt::tasks
