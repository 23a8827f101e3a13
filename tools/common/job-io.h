// I/O layer of the batch job CLI (`llmthreads run`): streaming JSONL input, one JSON output line
// per input record in input order, crash-safe resumable output, and progress formatting.
// Model-free building blocks; the engine and the task logic live elsewhere.
//
// Input (InputReader). A JSONL file whose lines are either
//   simple:        {"id": "r1" | 17, "text": "...", <any other fields>}
//   OpenAI batch:  {"custom_id": "...", "method": "POST",
//                   "url": "/v1/chat/completions" | "/v1/completions", "body": {...}}
// A line is OpenAI-shaped when it is a JSON object with a "custom_id" key, simple-shaped
// otherwise. The file's format is the shape of its first valid line (found when the reader opens,
// by reading ahead as far as that line); a file without any valid line counts as simple. A valid
// line of the other shape later in the file is an error record ("format_mismatch").
//
// Records. Blank lines (only spaces, tabs, CR) are ignored: they produce no record and no output
// line. Every other line is one record, numbered 0..n-1 in file order, and gets exactly one output
// line, so output line k answers input record k. A malformed line does not stop the job: it is a
// record whose `error_code`/`error` say what is wrong (codes below), and its output line is an
// error line. A UTF-8 byte order mark at the start of the file is skipped; a CR before the LF is
// dropped; a last line without LF is a line. Duplicate ids are not detected (that would need
// memory proportional to the file).
//
// Input error codes: "line_too_long" (over max_line_bytes; the line is skipped without being
// held in memory), "invalid_utf8", "too_deep" (JSON nesting over 256 levels), "invalid_json",
// "not_an_object", "invalid_field" (wrong type or value: id not a string/number, text not a
// string, bad method/url/body/custom_id), "missing_field" (text, custom_id, method, url, body),
// "empty_text", "format_mismatch".
//
// Output lines (format_output_line / format_input_error_line), one JSON object per line, keys in
// this order:
//   simple:   {"id": <id or null>, <extra input fields>, "result": <caller's value>, "error": null}
//             {"id": ..., <extra>, "result": null, "error": {"code": "...", "message": "..."}}
//   OpenAI (as the OpenAI Batch API output file):
//             {"id": "batch_req_<record index>", "custom_id": "...",
//              "response": {"status_code": 200, "request_id": "req_<record index>", "body": {...}},
//              "error": null}
//             {"id": ..., "custom_id": <or null>, "response": null,
//              "error": {"code": "...", "message": "..."}}
// Error lines for malformed input also carry "line": <1-based line number> in the error object.
// A simple record without an "id" is known by its line: its output line has "line": <1-based
// input line number> right after "id": null (an input field named "line" is then not copied),
// and its error object (if any) has "line" too, with "line N: " before the message.
// Extra input fields (simple format) are copied at the top level, sorted by key, except those
// named "id", "result" or "error" (reserved by the output schema) — "text" is never copied.
//
// Resumable output (OutputWriter). The output file is the checkpoint: on open, the existing
// output is scanned, a trailing partial line (a crash mid-write) is cut off with ftruncate, every
// complete line must parse as a JSON object (the file is cut before the first one that does not,
// as everything after it is suspect), and the count of kept lines is n_done(); the job then skips
// the first n_done() input records (InputReader::skip). Since lines are written in input order,
// this gives exactly one output line per input record across any number of crashes: none lost,
// none duplicated. A sidecar "<output>.llmt-job" (JSON, replaced atomically: temp file, fsync,
// rename, fsync of the directory) records the input's identity (size and hashes of its first and
// last MiB), the caller's parameter fingerprint, n_done and completion; opening refuses to resume
// with a different input or different parameters, or over a non-empty output file that has no
// sidecar. An empty or missing output starts fresh (whatever an old sidecar says); so does
// `overwrite`.
//
// Thread-safety: InputReader, ProgressMeter: one thread at a time. OutputWriter: every member
// function may be called from any thread (one internal mutex; a durable batch's write+fdatasync
// runs in the thread whose call triggered it). Pure functions: any thread.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "llmthreads/status.h"

namespace llmt::tasks {

enum class InputFormat {
  kAuto,         // only as InputReaderOptions::format: detect from the first valid line
  kSimple,       // {"id", "text", ...}
  kOpenAiBatch,  // {"custom_id", "method", "url", "body"}
};

enum class OpenAiEndpoint { kNone, kChatCompletions, kCompletions };

const char* input_format_name(InputFormat format);  // "auto", "simple", "openai-batch"

// One non-blank input line.
struct InputRecord {
  uint64_t index = 0;                         // 0-based among non-blank lines
  uint64_t line_number = 0;                   // 1-based, counting blank lines too
  uint64_t byte_offset = 0;                   // of the line's first byte in the file
  InputFormat format = InputFormat::kSimple;  // the file's format (not the line's shape)

  // Malformed line: error_code is one of the input error codes (see the top of this file) and
  // error a message naming the field; the fields below hold whatever could be read (id /
  // custom_id when present and well-typed, for the error line).
  std::string error_code;
  std::string error;
  bool ok() const { return error_code.empty(); }

  // Simple format.
  nlohmann::json id;     // string or number; null when absent
  std::string text;      // non-empty when ok()
  nlohmann::json extra;  // object: every other field of the line, opaque; empty object if none

  // OpenAI batch format.
  nlohmann::json custom_id;  // string when ok(); null when absent or not a string
  OpenAiEndpoint endpoint = OpenAiEndpoint::kNone;
  // The request body, an object. When ok(): for chat completions "messages" is a non-empty array
  // of objects; for completions "prompt" is a string or a non-empty array of strings. The rest
  // (model, max_tokens, temperature, ...) is left to the task logic to interpret.
  nlohmann::json body;
};

struct InputReaderOptions {
  size_t max_line_bytes = size_t{16} << 20;  // longer lines are "line_too_long" records
  InputFormat format = InputFormat::kAuto;   // force a format instead of detecting it
};

// Streams records from a JSONL file with a fixed-size read buffer (memory: the buffer plus the
// longest line up to max_line_bytes). The path must be a regular file (it is read twice in the
// worst case: detection reads ahead to the first valid line).
class InputReader {
 public:
  static Result<std::unique_ptr<InputReader>> open(const std::string& path,
                                                   InputReaderOptions options = {});
  ~InputReader();
  InputReader(const InputReader&) = delete;
  InputReader& operator=(const InputReader&) = delete;

  // The file's format (never kAuto).
  InputFormat format() const { return format_; }
  // Line number of the first valid line, which fixed the format (0: none / forced).
  uint64_t format_line() const { return format_line_; }

  // Reads the next record into *record (overwritten). Returns false at the end of the file; a
  // non-ok Status only for an OS-level read failure (then the reader is unusable).
  Result<bool> next(InputRecord* record);
  // Skips up to n records without parsing them (resume: skip the n_done already written).
  // Returns how many were skipped (less than n only at the end of the file).
  Result<uint64_t> skip(uint64_t n);
  // next() without the parsing: the record's line as read, numbered like next() does, for
  // parse_raw_record() elsewhere (e.g. on another MPI rank). next() is next_raw() followed by
  // parse_raw_record() with this reader's format() and max_line_bytes.
  struct RawRecord {
    uint64_t index = 0, line_number = 0, byte_offset = 0;
    bool too_long = false;  // over max_line_bytes: `line` is empty
    std::string line;       // without the LF (and CR)
  };
  Result<bool> next_raw(RawRecord* raw);
  size_t max_line_bytes() const { return options_.max_line_bytes; }

  uint64_t n_records_read() const { return n_records_; }  // records returned or skipped so far
  uint64_t bytes_consumed() const;                        // file offset reached
  uint64_t file_size() const { return file_size_; }

  class LineSource;  // implementation detail

 private:
  InputReader() = default;
  // Next non-blank line; false at end.
  Result<bool> next_line(std::string* line, uint64_t* line_number, uint64_t* offset,
                         bool* too_long);

  std::unique_ptr<LineSource> src_;
  InputReaderOptions options_;
  InputFormat format_ = InputFormat::kSimple;
  uint64_t format_line_ = 0;
  uint64_t file_size_ = 0;
  uint64_t n_records_ = 0;
  uint64_t line_number_ = 0;
};

// The record of a raw line (InputReader::next_raw) of a file in `file_format` (not kAuto):
// exactly what InputReader::next() returns for it.
void parse_raw_record(const InputReader::RawRecord& raw, InputFormat file_format,
                      size_t max_line_bytes, InputRecord* record);

// Counts the records (non-blank lines) of a file in one streaming pass without parsing them
// (for progress totals).
Result<uint64_t> count_input_records(const std::string& path);

// Parses one line (no trailing LF) of a file in `file_format` (kAuto: accept either shape) into
// *record: fills the error fields or the data fields; index/line_number/byte_offset untouched.
// `too_long` marks a line that was not held (its text is not looked at).
void parse_input_line(std::string_view line, InputFormat file_format, size_t max_line_bytes,
                      bool too_long, InputRecord* record);

// ---------------------------------------------------------------------------------------------
// Output lines.

struct RecordError {
  std::string code;     // short machine-readable code, e.g. "context_overflow", "internal"
  std::string message;  // human-readable
};

// What the task produced for one valid record.
struct RecordOutcome {
  // Simple: the "result" value. OpenAI: the response body (e.g. a chat.completion object).
  nlohmann::json result;
  int status_code = 200;             // OpenAI only
  std::optional<RecordError> error;  // set: the record failed (result ignored)
};

// The output line (no trailing LF) for a record; for a malformed record (!record.ok()) this is
// format_input_error_line(record) whatever the outcome. Strings with invalid UTF-8 in the
// outcome are written with U+FFFD replacements rather than failing.
std::string format_output_line(const InputRecord& record, const RecordOutcome& outcome);
// The error line for a malformed record (code/message from the record, plus its line number).
std::string format_input_error_line(const InputRecord& record);

// ---------------------------------------------------------------------------------------------
// Resumable output.

// What a job's output belongs to; kept in the sidecar and compared on resume.
struct JobIdentity {
  std::string input_path;  // for messages only: a moved input with the same content still matches
  uint64_t input_size = 0;
  std::string input_head_hash;  // hex FNV-1a 64 of the first MiB
  std::string input_tail_hash;  // hex FNV-1a 64 of the last MiB
  // The caller's fingerprint of everything that changes the output (task, prompt, model,
  // sampling parameters, ...). Compared as a string; when it differs and both are JSON objects,
  // the refusal names the keys that changed (describe_param_changes) instead of dumping them.
  std::string params_fingerprint;
  // For those messages: the option that sets a fingerprint key ("temp" -> "--temp"); keys not
  // listed are shown as "--" + the key with '_' -> '-'. Not stored in the sidecar.
  std::map<std::string, std::string> param_options;
};

// "--temp 0.7; this run has 0.9" for one changed key of two JSON-object fingerprints;
// "--temp 0.7, --max-tokens 64; this run has --temp 0.9, --max-tokens 32" for several (keys in
// order, a key absent on one side shown as "(unset)", long values cut with "..."). Numbers are
// printed with 6 significant digits (a float 0.7 stays "0.7"). Empty when either text is not a
// JSON object or nothing differs.
std::string describe_param_changes(std::string_view old_fingerprint,
                                   std::string_view new_fingerprint,
                                   const std::map<std::string, std::string>& param_options);

// Reads the input file's size and hashes (two reads of at most 1 MiB).
Result<JobIdentity> make_job_identity(const std::string& input_path,
                                      std::string params_fingerprint);

// The sidecar's path for an output path: output + ".llmt-job".
std::string job_sidecar_path(const std::string& output_path);

struct OutputWriterOptions {
  bool overwrite = false;            // discard an existing output and sidecar and start fresh
  uint64_t sync_every_records = 64;  // a durable batch once this many lines are pending...
  double sync_every_seconds = 2.0;   // ...or when the oldest pending line is this old (checked on
                                     // submit_result() and tick())
  // Seconds from an arbitrary origin; default: steady clock. Injected by tests.
  std::function<double()> clock;
  // Largest output line accepted by the resume scan; a longer line counts as damaged.
  size_t max_scan_line_bytes = size_t{1} << 30;
};

// Appends output lines in record order and makes them durable in batches (write(2) then
// fdatasync, then the sidecar). Holds an exclusive flock on the output file while open, so two
// jobs cannot write one output.
//
// In-order buffer: submit_result() takes lines in any order; lines are buffered until every
// earlier record's line has arrived, then move to the write buffer. Memory: the reorder buffer
// holds at most (highest submitted index - next_index()) lines, so it is bounded by the caller's
// window of records in flight (admit record i only when i < next_index() + W, and at most W lines
// are held); the write buffer holds at most sync_every_records lines between ticks.
class OutputWriter {
 public:
  // Opens or resumes `output_path` for the job `identity` (see the top of this file). Errors:
  // kInvalidArgument when resuming is refused (different input or parameters, foreign output
  // file, output path that is the input file, another job holding the file), with a message
  // suggesting --overwrite or another output path; kCorrupt for an unreadable sidecar; kIo.
  static Result<std::unique_ptr<OutputWriter>> open(const std::string& output_path,
                                                    const JobIdentity& identity,
                                                    OutputWriterOptions options = {});
  // Writes and syncs the contiguous buffered lines (errors are dropped: call flush_durable()
  // first to see them). Lines still waiting for an earlier record are lost (they are redone on
  // resume).
  ~OutputWriter();
  OutputWriter(const OutputWriter&) = delete;
  OutputWriter& operator=(const OutputWriter&) = delete;

  // Complete lines found in the output at open (after cutting damaged ones): the job skips this
  // many input records.
  uint64_t n_done_at_open() const { return n_done_at_open_; }
  // True when the sidecar says a previous run finished this job (mark_complete()) and the
  // output still holds its n_records lines.
  bool complete_at_open() const { return complete_at_open_; }
  // Bytes cut off the end of the output at open (partial or damaged lines).
  uint64_t bytes_truncated_at_open() const { return bytes_truncated_; }

  // The record index whose line is needed next (n_done_at_open + lines moved in order).
  uint64_t next_index() const;
  uint64_t n_written() const;  // lines handed to write(2) (not necessarily durable)
  uint64_t n_durable() const;  // lines written and fdatasync'ed
  size_t n_buffered() const;   // lines waiting for an earlier record
  size_t bytes_buffered() const;

  // Takes the output line (no LF; must not contain one) of record `record_index`. Errors:
  // kInvalidArgument for an index below next_index() or already buffered (duplicate); kIo when a
  // write or sync fails (the writer then refuses further lines; resume repairs the file).
  Status submit_result(uint64_t record_index, std::string line);
  // Starts a durable batch if the oldest pending line is older than sync_every_seconds. Call it
  // now and then when results may stall (e.g. from the progress loop).
  Status tick();
  // Writes every contiguous line, fdatasyncs, updates the sidecar. For shutdown (not
  // async-signal-safe: call it from a normal thread after the signal handler set a flag).
  Status flush_durable();
  // flush_durable(), then records in the sidecar that the job of n_records records is done. Fails
  // (kInternal) when fewer than n_records lines are durable.
  Status mark_complete(uint64_t n_records);

 private:
  OutputWriter() = default;
  double now() const;
  Status write_pending_locked();  // write(2) + fdatasync + sidecar
  // After a short write of n_out bytes of pending_ at file offset `start` (errno `err`): cuts the
  // file after the last complete line written, counts those lines as written and (when
  // fdatasync succeeds) durable, and returns the kIo error naming the path and the OS error.
  Status keep_written_lines_locked(off_t start, size_t n_out, int err);
  Status write_sidecar_locked(bool complete, uint64_t n_records);

  mutable std::mutex mu_;
  std::string path_;
  std::string sidecar_path_;
  JobIdentity identity_;
  OutputWriterOptions options_;
  int fd_ = -1;
  Status failed_;  // sticky I/O error

  uint64_t n_done_at_open_ = 0;
  bool complete_at_open_ = false;
  uint64_t bytes_truncated_ = 0;

  uint64_t next_index_ = 0;                  // next record to move in order
  uint64_t n_written_ = 0;                   // absolute count of lines handed to write(2)
  uint64_t n_durable_ = 0;                   // absolute count of lines synced
  std::map<uint64_t, std::string> reorder_;  // index -> line, all >= next_index_
  size_t reorder_bytes_ = 0;
  std::string pending_;  // contiguous lines (with LF) not yet written
  uint64_t n_pending_ = 0;
  double pending_since_ = 0;  // clock when the oldest pending line arrived
};

// ---------------------------------------------------------------------------------------------
// Progress.

struct ProgressSnapshot {
  uint64_t n_done = 0;           // records done, including those done before a resume
  uint64_t n_total = 0;          // 0: unknown
  uint64_t n_done_at_start = 0;  // records already done when this run started (not in rates)
  uint64_t n_tokens = 0;         // tokens processed by this run (prompt + generated)
  double elapsed_s = 0;          // since this run started
  uint64_t n_ranks = 0;          // MPI runs: ranks in the job (0: not shown)...
  uint64_t n_ranks_alive = 0;    // ...and those still working ("2/3 ranks")
};

// "12.3" below 100, "950" below 1000, then "1.5k", "12k", "2.3M", "1.2G" (rates and counts).
std::string format_compact_number(double v);
// "0:45", "12:03", "1:02:03" (seconds rounded up); "--:--" when negative, not finite or over
// 27,000 hours.
std::string format_duration(double seconds);
// TTY bar text (no CR) for a terminal of `columns` columns, at most columns - 1 characters (so
// it never wraps; 80 columns:)
//   "[=========>          ] 450/1000 docs  12.3 docs/s  1.5k tok/s  ETA 0:45"
// Unknown total: "450 docs  12.3 docs/s  1.5k tok/s  0:36". Rates are over this run only; ETA
// is "--:--" until a record is done in this run. Narrower terminals drop tok/s, then shorten and
// drop the bar, then the rate, then cut the text; wider ones get a bar of up to 40 cells.
std::string format_progress_bar(const ProgressSnapshot& s, size_t columns = 80);
// The width of the terminal on `fd` (ioctl TIOCGWINSZ), else $COLUMNS, else 80.
size_t terminal_columns(int fd);
// Plain line for logs:
//   "progress: 450/1000 docs (45.0%)  12.3 docs/s  1.5k tok/s  elapsed 0:36  ETA 0:45"
// With n_ranks > 0 (MPI), "  2/3 ranks" follows the tok/s (the bar drops it, then tok/s, when
// the line would pass 79 columns).
std::string format_progress_line(const ProgressSnapshot& s);

struct ProgressMeterOptions {
  bool tty = false;                // bar redrawn in place, else plain lines
  double tty_interval_s = 0.2;     // least time between redraws
  double plain_interval_s = 10.0;  // time between plain lines
  uint64_t n_total = 0;            // 0: unknown
  uint64_t n_done_at_start = 0;
  std::function<double()> clock;  // seconds; default: steady clock
  // The terminal's width, asked at every redraw (so a resize is followed); default:
  // terminal_columns(STDERR_FILENO).
  std::function<size_t()> columns;
};

// Decides when to print. The start time is taken at construction.
class ProgressMeter {
 public:
  explicit ProgressMeter(ProgressMeterOptions options);
  // The text to write to the terminal now, or "" when it is not time yet. TTY: "\r" + bar (as
  // wide as options.columns() allows) + "\x1b[K" (clear to end of line) — printed at the first
  // update and then at most every tty_interval_s; plain: line + "\n" once plain_interval_s has
  // passed since the last line (or the start).
  std::string update(uint64_t n_done, uint64_t n_tokens);
  // The final text, always: TTY: the bar as in update() followed by "\n"; plain: the line + "\n".
  std::string finish(uint64_t n_done, uint64_t n_tokens);
  ProgressSnapshot snapshot(uint64_t n_done, uint64_t n_tokens) const;
  // MPI runs: the ranks shown from now on (n_total 0: none, the default).
  void set_ranks(uint64_t n_alive, uint64_t n_total) {
    n_ranks_alive_ = n_alive;
    n_ranks_ = n_total;
  }

 private:
  double now() const;
  std::string render(const ProgressSnapshot& s) const;

  ProgressMeterOptions options_;
  double start_ = 0;
  double last_print_ = 0;
  bool printed_ = false;
  uint64_t n_ranks_ = 0, n_ranks_alive_ = 0;
};

}  // namespace llmt::tasks
