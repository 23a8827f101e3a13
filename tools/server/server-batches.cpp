// The Batches API: POST /v1/batches, GET /v1/batches, GET /v1/batches/{id},
// POST /v1/batches/{id}/cancel; the data dir (files and batches) and the batch driver.
//
// A batch's requests run through the live endpoints' own handlers (handle_completion,
// handle_embeddings) with a made-up request whose "connection" closes when the batch is
// cancelled, so translation, validation, admission control and the engine are exactly the live
// ones. Batches run one at a time, oldest first (a batch waiting its turn is "validating"), each
// with batch_concurrency requests in flight; their threads run kBatchPriorityDrop below the
// priority their body asks (0 by default), so live traffic goes first (the scheduler's aging
// keeps batch threads from starving). A request refused for capacity (429) or while the model
// loads (503) is retried every 200 ms, never recorded as failed.
//
// Durability: every answer is appended to <batch dir>/results.jsonl by an OutputWriter
// (common/job-io.h: in input order, write + fdatasync per line, a sidecar naming the input and
// the server's model and endpoint). Only answers in that log count; output and error files are
// made from it when the batch ends. A server killed at any point and restarted on the same data
// dir resumes every batch that had not ended: the writer cuts a torn last line and reports how
// many requests are done, those are skipped, and the rest run, so no request is lost or answered
// twice. Requests answered but not yet in the log when the server died are run again.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/job-io.h"
#include "durable-file.h"
#include "server-impl.h"

namespace llmt::server {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kBatchPriorityDrop = 10;
constexpr int64_t kMaxPriority = 1 << 20;  // openai.h's priority range

// What the results log of a batch belongs to, besides its input: a different model or endpoint
// must not resume it.
std::string batch_fingerprint(const std::string& endpoint, const std::string& model) {
  return "llmthreads-batch/1 " + endpoint + " " + model;
}

// The response.status_code of a results-log line (0 when unreadable).
int status_code_of(std::string_view line) {
  const json j = json::parse(line, nullptr, false);
  if (!j.is_object() || !j.contains("response") || !j["response"].is_object()) return 0;
  const json& c = j["response"].value("status_code", json());
  return c.is_number_integer() ? c.get<int>() : 0;
}

template <typename F>
void for_each_line(std::string_view s, F f) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t eol = s.find('\n', pos);
    if (eol == std::string_view::npos) eol = s.size();
    if (eol > pos) f(s.substr(pos, eol - pos));
    pos = eol + 1;
  }
}

// Counts the answered (200) and failed lines of a results log; a torn last line (a crash
// mid-write, which the OutputWriter cuts when it reopens the log) does not count.
void count_results(const std::string& log, int64_t* ok, int64_t* bad) {
  *ok = *bad = 0;
  Result<std::string> text = read_whole_file(log);
  if (!text.is_ok()) return;
  const size_t end = text->rfind('\n');
  if (end == std::string::npos) return;
  for_each_line(std::string_view(*text).substr(0, end + 1), [&](std::string_view l) {
    const int code = status_code_of(l);
    if (code != 0) ++(code == 200 ? *ok : *bad);
  });
}

json one_error(const char* code, const std::string& message) {
  return {{"object", "list"},
          {"data",
           json::array(
               {{{"code", code}, {"message", message}, {"param", nullptr}, {"line", nullptr}}})}};
}

}  // namespace

Status Server::Impl::save_batch_locked(BatchEntry& e) {
  return write_file_atomic(e.dir + "/batch.json", dump_json(e.rec.to_state_json()));
}

Status Server::Impl::open_storage() {
  if (opt.data_dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/llmthreads-data-XXXXXX";
    if (!::mkdtemp(templ.data())) {
      return io_error("cannot create a temporary data dir: " + std::string(std::strerror(errno)));
    }
    owned_tmp_dir = templ;
    data_dir = templ;
  } else {
    data_dir = opt.data_dir;
  }
  std::error_code ec;
  fs::create_directories(data_dir + "/batches", ec);
  if (ec) return io_error("cannot create the data dir " + data_dir + ": " + ec.message());
  const std::string lock = data_dir + "/.lock";
  data_dir_lock_fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (data_dir_lock_fd < 0) return io_error("cannot open " + lock + ": " + std::strerror(errno));
  if (::flock(data_dir_lock_fd, LOCK_EX | LOCK_NB) != 0) {
    return io_error("the data dir " + data_dir + " is in use by another server");
  }
  Result<std::unique_ptr<FileStore>> fstore = FileStore::open(data_dir + "/files");
  if (!fstore.is_ok()) return fstore.status();
  files = std::move(*fstore);
  std::vector<std::shared_ptr<BatchEntry>> pending;
  for (const fs::directory_entry& d : fs::directory_iterator(data_dir + "/batches", ec)) {
    std::error_code type_ec;
    if (!d.is_directory(type_ec)) continue;
    const std::string state = d.path().string() + "/batch.json";
    if (!fs::exists(state)) {
      std::error_code rm;
      fs::remove_all(d.path(), rm);  // a create that did not finish: never answered
      continue;
    }
    Result<std::string> text = read_whole_file(state);
    if (!text.is_ok()) return text.status();
    const json j = json::parse(*text, nullptr, false);
    Result<BatchRecord> rec = BatchRecord::from_state_json(j);
    if (!rec.is_ok()) return corrupt(state + ": " + rec.status().message());
    auto e = std::make_shared<BatchEntry>();
    e->dir = d.path().string();
    e->rec = std::move(*rec);
    next_batch_seq = std::max(next_batch_seq, e->rec.seq + 1);
    if (!batch_status_terminal(e->rec.status)) {
      // Progress is in the results log, not in batch.json.
      int64_t ok = 0, bad = 0;
      count_results(e->dir + "/results.jsonl", &ok, &bad);
      if (ok + bad > 0) {
        e->rec.counts.completed = ok;
        e->rec.counts.failed = bad;
      }
      pending.push_back(e);
    } else {
      // Ended, but killed before its working files were removed.
      std::error_code rm;
      fs::remove(e->dir + "/results.jsonl", rm);
      fs::remove(tasks::job_sidecar_path(e->dir + "/results.jsonl"), rm);
      fs::remove(e->dir + "/input.jsonl", rm);
    }
    batches[e->rec.id] = std::move(e);
  }
  if (ec) return io_error("cannot list " + data_dir + "/batches: " + ec.message());
  std::sort(pending.begin(), pending.end(),
            [](const auto& a, const auto& b) { return a->rec.seq < b->rec.seq; });
  batch_queue.assign(pending.begin(), pending.end());
  return Status::ok();
}

void Server::Impl::close_storage() {
  if (data_dir_lock_fd >= 0) ::close(data_dir_lock_fd);
  data_dir_lock_fd = -1;
  if (!owned_tmp_dir.empty()) {
    std::error_code ec;
    fs::remove_all(owned_tmp_dir, ec);
    owned_tmp_dir.clear();
  }
}

void Server::Impl::start_batches() {
  std::lock_guard<std::mutex> lk(batches_mu);
  // Not after stop() began: nothing would join the thread.
  if (!files || batch_driver.joinable() || batches_stopping) return;
  batch_driver = std::thread([this] { batch_driver_loop(); });
}

void Server::Impl::begin_stop_batches() {
  std::lock_guard<std::mutex> lk(batches_mu);
  batches_stopping = true;
  batches_cv.notify_all();
}

void Server::Impl::join_batches() {
  if (batch_driver.joinable()) batch_driver.join();
}

void Server::Impl::batch_driver_loop() {
  while (true) {
    std::shared_ptr<BatchEntry> e;
    {
      std::unique_lock<std::mutex> lk(batches_mu);
      batches_cv.wait(lk, [&] { return batches_stopping || !batch_queue.empty(); });
      if (batches_stopping) return;
      e = batch_queue.front();
      batch_queue.pop_front();
    }
    run_batch(*e);
  }
}

void Server::Impl::run_batch(BatchEntry& e) {
  std::string endpoint;
  BatchStatus status;
  {
    std::lock_guard<std::mutex> lk(e.mu);
    endpoint = e.rec.endpoint;
    status = e.rec.status;
  }
  // Cancelled before it ran, or killed while finalizing: the log has all there is.
  if (status == BatchStatus::kCancelling || status == BatchStatus::kFinalizing) {
    finalize_batch(e);
    return;
  }
  Result<std::string> content = read_whole_file(e.dir + "/input.jsonl");
  std::vector<BatchLine> lines;
  json errors;
  const bool valid = content.is_ok() && validate_batch_input(*content, endpoint, &lines, &errors);
  if (!content.is_ok()) errors = one_error("input_unreadable", content.status().message());
  {
    std::unique_lock<std::mutex> lk(e.mu);
    if (e.rec.status == BatchStatus::kCancelling) {
      lk.unlock();
      finalize_batch(e);
      return;
    }
    if (!valid) {
      e.rec.status = BatchStatus::kFailed;
      e.rec.errors = errors;
      e.rec.failed_at = unix_now();
      (void)save_batch_locked(e);
      std::error_code ec;
      fs::remove(e.dir + "/input.jsonl", ec);
      return;
    }
    if (e.rec.status == BatchStatus::kValidating) {
      e.rec.status = BatchStatus::kInProgress;
      e.rec.in_progress_at = unix_now();
      e.rec.counts.total = static_cast<int64_t>(lines.size());
      (void)save_batch_locked(e);
    }
  }
  if (!run_batch_requests(e, lines)) return;  // failed (log unwritable); already recorded
  bool cancelled = e.cancel->load();
  bool done = false;
  {
    std::lock_guard<std::mutex> lk(e.mu);
    done = e.rec.counts.completed + e.rec.counts.failed >= e.rec.counts.total;
  }
  {
    std::lock_guard<std::mutex> lk(batches_mu);
    // Stopping: what is not in the log runs at the next start (unless it is all there).
    if (batches_stopping && !cancelled && !done) return;
  }
  finalize_batch(e);
}

bool Server::Impl::run_batch_requests(BatchEntry& e, const std::vector<BatchLine>& lines) {
  std::string id, endpoint;
  {
    std::lock_guard<std::mutex> lk(e.mu);
    id = e.rec.id;
    endpoint = e.rec.endpoint;
  }
  auto fail = [&](const std::string& msg) {
    std::lock_guard<std::mutex> lk(e.mu);
    e.rec.status = BatchStatus::kFailed;
    e.rec.failed_at = unix_now();
    e.rec.errors = one_error("storage_error", msg);
    (void)save_batch_locked(e);
    return false;
  };
  const std::string log = e.dir + "/results.jsonl";
  Result<tasks::JobIdentity> ident =
      tasks::make_job_identity(e.dir + "/input.jsonl", batch_fingerprint(endpoint, opt.model_name));
  if (!ident.is_ok()) return fail(ident.status().message());
  tasks::OutputWriterOptions wo;
  wo.sync_every_records = 1;  // every answer durable as soon as the ones before it are
  Result<std::unique_ptr<tasks::OutputWriter>> w = tasks::OutputWriter::open(log, *ident, wo);
  if (!w.is_ok()) return fail("cannot open the results log: " + w.status().message());
  tasks::OutputWriter& writer = **w;
  const uint64_t n = lines.size();
  // Resumed: count what the log already holds.
  {
    int64_t ok = 0, bad = 0;
    count_results(log, &ok, &bad);
    std::lock_guard<std::mutex> lk(e.mu);
    e.rec.counts.completed = ok;
    e.rec.counts.failed = bad;
  }
  std::atomic<uint64_t> next{writer.n_done_at_open()};
  std::vector<int> codes(n, 0);                // guarded by e.mu
  uint64_t counted = writer.n_done_at_open();  // guarded by e.mu: requests in request_counts
  std::atomic<bool> write_failed{false};
  std::mutex err_mu;
  std::string write_error_msg;
  const int32_t n_workers = opt.batch_concurrency > 0
                                ? opt.batch_concurrency
                                : std::clamp<int32_t>(opt.max_queue / 4, 1, 8);
  std::vector<std::thread> workers;
  for (int32_t k = 0; k < n_workers; ++k) {
    workers.emplace_back([&] {
      while (!write_failed.load() && !e.cancel->load()) {
        {
          std::lock_guard<std::mutex> lk(batches_mu);
          if (batches_stopping) break;
        }
        const uint64_t i = next.fetch_add(1);
        if (i >= n) break;
        int status = 0;
        json body;
        if (!run_batch_request(e, lines[i], &status, &body)) break;
        {
          std::lock_guard<std::mutex> lk(e.mu);
          codes[i] = status;  // before the writer has it: another worker may count it
        }
        Status s =
            writer.submit_result(i, batch_output_line(id, i, lines[i].custom_id, status, body));
        if (!s.is_ok()) {
          std::lock_guard<std::mutex> lk(err_mu);
          write_error_msg = s.message();
          write_failed = true;
          break;
        }
        // request_counts follow the log: the answers the writer has taken in input order
        // (written and synced by the submit that moved them), not those it still holds back.
        const uint64_t in_log = writer.next_index();
        std::lock_guard<std::mutex> lk(e.mu);
        for (; counted < in_log && counted < n; ++counted) {
          ++(codes[counted] == 200 ? e.rec.counts.completed : e.rec.counts.failed);
        }
      }
    });
  }
  for (std::thread& t : workers) t.join();
  Status flushed = writer.flush_durable();
  if (write_failed.load()) return fail("cannot write the results log: " + write_error_msg);
  if (!flushed.is_ok()) return fail("cannot write the results log: " + flushed.message());
  if (writer.next_index() >= n) (void)writer.mark_complete(n);
  // The log is the truth (e.g. after flush_durable()).
  {
    int64_t ok = 0, bad = 0;
    count_results(log, &ok, &bad);
    std::lock_guard<std::mutex> lk(e.mu);
    e.rec.counts.completed = ok;
    e.rec.counts.failed = bad;
  }
  return true;
}

bool Server::Impl::run_batch_request(BatchEntry& e, const BatchLine& line, int* status,
                                     json* body) {
  std::string endpoint;
  {
    std::lock_guard<std::mutex> lk(e.mu);
    endpoint = e.rec.endpoint;
  }
  const bool embeddings = endpoint == "/v1/embeddings";
  json b = line.body;
  if (!embeddings) {
    if (b.contains("stream") && b["stream"] == true) {
      *status = 400;
      *body = error_body("\"stream\" is not supported in a batch", "invalid_request_error",
                         "unsupported", "stream");
      return true;
    }
    // Below the live requests: the body's priority (default 0) minus kBatchPriorityDrop. A
    // priority out of range is left for the endpoint to refuse.
    if (!b.contains("priority") || b["priority"].is_null()) {
      b["priority"] = -kBatchPriorityDrop;
    } else if (b["priority"].is_number_integer() && !b["priority"].is_number_unsigned()) {
      const int64_t p = b["priority"].get<int64_t>();
      if (p >= -kMaxPriority && p <= kMaxPriority) {
        b["priority"] = std::max(p - kBatchPriorityDrop, -kMaxPriority);
      }
    } else if (b["priority"].is_number_unsigned() &&
               b["priority"].get<uint64_t>() <= kMaxPriority) {
      b["priority"] = static_cast<int64_t>(b["priority"].get<uint64_t>()) - kBatchPriorityDrop;
    }
  }
  HttpRequest req;
  req.method = "POST";
  req.path = endpoint;
  req.body = dump_json(b);
  req.closed = e.cancel;
  while (true) {
    httplib::Response res;
    if (embeddings) {
      handle_embeddings(req, res, static_cast<int32_t>(-kBatchPriorityDrop));
    } else {
      handle_completion(
          req, res,
          endpoint == "/v1/chat/completions" ? Endpoint::kChatCompletions : Endpoint::kCompletions);
    }
    if (res.status != 429 && res.status != 503) {
      *status = res.status;
      *body = json::parse(res.body, nullptr, false);
      if (body->is_discarded()) {
        *body = error_body("the endpoint answered " + std::to_string(res.status), "server_error",
                           "internal_error");
      }
      return true;
    }
    // Busy (429), loading or stopping (503): wait, unless the server stops or the batch is
    // cancelled (then the request is not answered).
    std::unique_lock<std::mutex> lk(batches_mu);
    batches_cv.wait_for(lk, std::chrono::milliseconds(200),
                        [&] { return batches_stopping || e.cancel->load(); });
    if (batches_stopping || e.cancel->load()) return false;
  }
}

void Server::Impl::finalize_batch(BatchEntry& e) {
  std::string id;
  bool cancelled = false;
  {
    std::lock_guard<std::mutex> lk(e.mu);
    id = e.rec.id;
    cancelled = e.rec.status == BatchStatus::kCancelling;
    if (!cancelled && e.rec.status != BatchStatus::kFinalizing) {
      e.rec.status = BatchStatus::kFinalizing;
      e.rec.finalizing_at = unix_now();
      (void)save_batch_locked(e);
    }
  }
  const std::string log = e.dir + "/results.jsonl";
  Result<std::string> content = read_whole_file(log);
  std::string out, err;
  int64_t n_ok = 0, n_bad = 0;
  if (content.is_ok()) {
    for_each_line(*content, [&](std::string_view l) {
      const int code = status_code_of(l);
      if (code == 0) return;  // a torn last line (killed mid-write, never reopened)
      const bool ok = code == 200;
      std::string& dst = ok ? out : err;
      dst.append(l);
      dst += '\n';
      ++(ok ? n_ok : n_bad);
    });
  }
  const std::string suffix = id.rfind("batch_", 0) == 0 ? id.substr(6) : id;
  std::string out_id, err_id;
  Status stored = Status::ok();
  if (!out.empty()) {
    Result<FileInfo> f =
        files->create(id + "_output.jsonl", "batch_output", out, "file-" + suffix + "-output");
    if (f.is_ok())
      out_id = f->id;
    else
      stored = f.status();
  }
  if (!err.empty() && stored.is_ok()) {
    Result<FileInfo> f =
        files->create(id + "_error.jsonl", "batch_output", err, "file-" + suffix + "-error");
    if (f.is_ok())
      err_id = f->id;
    else
      stored = f.status();
  }
  {
    std::lock_guard<std::mutex> lk(e.mu);
    if (!stored.is_ok()) {
      e.rec.status = BatchStatus::kFailed;
      e.rec.failed_at = unix_now();
      e.rec.errors = one_error("storage_error", stored.message());
      (void)save_batch_locked(e);
      return;
    }
    e.rec.output_file_id = out_id;
    e.rec.error_file_id = err_id;
    e.rec.counts.completed = n_ok;
    e.rec.counts.failed = n_bad;
    if (cancelled) {
      e.rec.status = BatchStatus::kCancelled;
      e.rec.cancelled_at = unix_now();
    } else {
      e.rec.status = BatchStatus::kCompleted;
      e.rec.completed_at = unix_now();
    }
    if (Status s = save_batch_locked(e); !s.is_ok()) return;  // redone at the next start
  }
  std::error_code ec;
  fs::remove(log, ec);
  fs::remove(tasks::job_sidecar_path(log), ec);
  fs::remove(e.dir + "/input.jsonl", ec);
}

std::shared_ptr<BatchEntry> Server::Impl::find_batch(const httplib::Request& req,
                                                     httplib::Response& res) {
  const std::string id = req.matches[1];
  {
    std::lock_guard<std::mutex> lk(batches_mu);
    auto it = batches.find(id);
    if (it != batches.end()) return it->second;
  }
  send_json(
      res, 404,
      error_body("no such batch: " + id, "invalid_request_error", "batch_not_found", "batch_id"));
  return nullptr;
}

void Server::Impl::handle_batch_create(const httplib::Request& req, httplib::Response& res) {
  json body;
  if (!parse_body(req, res, &body)) return;
  BatchRecord rec;
  if (Status s = parse_batch_create(body, &rec); !s.is_ok()) return send_error(res, s);
  const std::optional<FileInfo> input = files->get(rec.input_file_id);
  if (!input || input->purpose != "batch") {
    send_json(res, 400,
              error_body(!input ? "no such file: " + rec.input_file_id
                                : "the input file's purpose must be \"batch\"",
                         "invalid_request_error", "invalid_input_file", "input_file_id"));
    return;
  }
  auto e = std::make_shared<BatchEntry>();
  rec.id = "batch_" + random_hex(24);
  rec.created_at = unix_now();
  rec.status = BatchStatus::kValidating;
  e->dir = data_dir + "/batches/" + rec.id;
  std::error_code ec;
  fs::create_directory(e->dir, ec);
  if (ec) return send_storage_error(res, io_error("cannot create " + e->dir + ": " + ec.message()));
  // The batch keeps its own link to the input, so deleting the file does not affect it.
  const std::string link = e->dir + "/input.jsonl";
  Status linked = Status::ok();
  if (::link(files->data_path(input->id).c_str(), link.c_str()) != 0) {
    Result<std::string> bytes = files->read(input->id);
    linked = bytes.is_ok() ? write_file_atomic(link, *bytes) : bytes.status();
  }
  {
    std::lock_guard<std::mutex> lk(batches_mu);
    rec.seq = next_batch_seq++;
    if (batches_stopping) linked = cancelled("the server is shutting down");
  }
  if (linked.is_ok()) {
    std::lock_guard<std::mutex> lk(e->mu);
    e->rec = rec;
    linked = save_batch_locked(*e);
  }
  if (!linked.is_ok()) {
    fs::remove_all(e->dir, ec);
    if (linked.code() == StatusCode::kCancelled) {
      send_json(res, 503,
                error_body("the server is shutting down", "server_error", "shutting_down"));
      return;
    }
    return send_storage_error(res, linked);
  }
  {
    std::lock_guard<std::mutex> lk(batches_mu);
    batches[rec.id] = e;
    batch_queue.push_back(e);
    batches_cv.notify_all();
  }
  send_json(res, 200, e->to_json());
}

void Server::Impl::handle_batch_list(const httplib::Request& req, httplib::Response& res) {
  size_t limit = 20;
  if (req.has_param("limit")) {
    const std::string l = req.get_param_value("limit");
    if (l.empty() || l.size() > 3 || !std::all_of(l.begin(), l.end(), ::isdigit) ||
        std::stoul(l) < 1 || std::stoul(l) > 100) {
      send_json(res, 400,
                error_body("'limit' must be an integer in [1, 100]", "invalid_request_error",
                           "invalid_value", "limit"));
      return;
    }
    limit = std::stoul(l);
  }
  std::vector<std::pair<uint64_t, json>> all;
  {
    std::lock_guard<std::mutex> lk(batches_mu);
    for (const auto& [id, e] : batches) {
      std::lock_guard<std::mutex> elk(e->mu);
      all.emplace_back(e->rec.seq, e->rec.to_json());
    }
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  size_t start = 0;
  if (req.has_param("after")) {
    const std::string after = req.get_param_value("after");
    auto it = std::find_if(all.begin(), all.end(),
                           [&](const auto& p) { return p.second["id"] == after; });
    if (it == all.end()) {
      send_json(res, 404,
                error_body("no such batch: " + after, "invalid_request_error", "batch_not_found",
                           "after"));
      return;
    }
    start = static_cast<size_t>(it - all.begin()) + 1;
  }
  json data = json::array();
  for (size_t i = start; i < all.size() && data.size() < limit; ++i) data.push_back(all[i].second);
  json out = {{"object", "list"}, {"data", data}, {"has_more", start + data.size() < all.size()}};
  out["first_id"] = data.empty() ? json(nullptr) : data.front()["id"];
  out["last_id"] = data.empty() ? json(nullptr) : data.back()["id"];
  send_json(res, 200, out);
}

void Server::Impl::handle_batch_cancel(const httplib::Request& req, httplib::Response& res) {
  std::shared_ptr<BatchEntry> e = find_batch(req, res);
  if (!e) return;
  {
    std::lock_guard<std::mutex> lk(e->mu);
    const BatchStatus s = e->rec.status;
    if (s == BatchStatus::kValidating || s == BatchStatus::kInProgress) {
      e->rec.status = BatchStatus::kCancelling;
      e->rec.cancelling_at = unix_now();
      (void)save_batch_locked(*e);
      e->cancel->store(true);
    } else if (s != BatchStatus::kCancelling && s != BatchStatus::kCancelled) {
      send_json(res, 409,
                error_body(std::string("cannot cancel a batch that is ") + batch_status_name(s),
                           "invalid_request_error", "batch_not_cancellable"));
      return;
    }
  }
  bool queued = false;
  {
    std::lock_guard<std::mutex> lk(batches_mu);
    auto it = std::find(batch_queue.begin(), batch_queue.end(), e);
    if (it != batch_queue.end()) {
      batch_queue.erase(it);  // never started here: finished now, off the driver's queue
      queued = true;
    }
    batches_cv.notify_all();
  }
  if (queued) finalize_batch(*e);
  send_json(res, 200, e->to_json());
}

void Server::Impl::install_batch_routes(HttpFront& http) {
  http.Post("/v1/batches", [this](const httplib::Request& req, httplib::Response& res) {
    handle_batch_create(req, res);
  });
  http.Get("/v1/batches", [this](const httplib::Request& req, httplib::Response& res) {
    handle_batch_list(req, res);
  });
  http.Get(R"(/v1/batches/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (std::shared_ptr<BatchEntry> e = find_batch(req, res)) send_json(res, 200, e->to_json());
  });
  http.Post(R"(/v1/batches/([^/]+)/cancel)",
            [this](const httplib::Request& req, httplib::Response& res) {
              handle_batch_cancel(req, res);
            });
}

}  // namespace llmt::server
