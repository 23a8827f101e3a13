// POST /v1/tasks, GET / DELETE /v1/tasks/{id}: a Job per task, its results kept in a TaskEntry.
#include "server-impl.h"
#include "task-api.h"

#include <algorithm>

namespace llmt::server {

namespace {

// The n of "task_<n>" (n >= 1), or 0 for anything else.
uint64_t parse_task_number(const std::string& id) {
  constexpr std::string_view kPrefix = "task_";
  if (id.size() <= kPrefix.size() || id.size() > kPrefix.size() + 19 ||
      id.compare(0, kPrefix.size(), kPrefix) != 0) {
    return 0;
  }
  uint64_t n = 0;
  for (size_t i = kPrefix.size(); i < id.size(); ++i) {
    if (id[i] < '0' || id[i] > '9') return 0;
    n = n * 10 + static_cast<uint64_t>(id[i] - '0');
  }
  return n;
}

}  // namespace

void Server::Impl::handle_task_create(const httplib::Request& req, httplib::Response& res) {
  Engine* eng = ready_engine(res, nullptr);
  if (!eng) return;
  json body;
  if (!parse_body(req, res, &body)) return;
  TaskRequest treq;
  if (Status s = parse_task_request(body, &treq); !s.is_ok()) {
    send_error(res, s);
    return;
  }
  auto entry = std::make_shared<TaskEntry>();
  entry->spec = treq.spec;
  entry->doc_ids = std::move(treq.ids);
  entry->results.assign(treq.texts.size(), json());
  entry->source = std::make_unique<TextSource>(std::move(treq.texts));
  TaskEntry* e = entry.get();  // the job is destroyed before the entry
  Result<std::unique_ptr<Job>> job = Job::create(*eng, std::move(treq.spec), [e](DocumentResult r) {
    const size_t i = static_cast<size_t>(r.index);
    if (i >= e->doc_ids.size()) return;
    const bool ok = r.ok();
    e->deliver(i, document_result_json(r, e->doc_ids[i], e->spec), ok);
  });
  if (!job.is_ok()) {
    send_error(res, job.status());
    return;
  }
  entry->job = std::move(*job);

  // Keep at most kMaxTasks: evict finished tasks oldest-first; refuse when all are running.
  std::vector<std::shared_ptr<TaskEntry>> evicted;
  Status refused = Status::ok();
  bool closed = false;
  {
    std::lock_guard<std::mutex> lk(tasks_mu);
    for (auto it = tasks.begin(); it != tasks.end() && tasks.size() >= kMaxTasks;) {
      if (it->second->finished()) {
        evicted.push_back(std::move(it->second));
        it = tasks.erase(it);
      } else {
        ++it;
      }
    }
    if (tasks_closed) {
      closed = true;
    } else if (tasks.size() >= kMaxTasks) {
      refused = over_capacity("too many tasks running (limit " + std::to_string(kMaxTasks) +
                              "); retry later");
    } else {
      const uint64_t n = next_task++;
      entry->id = "task_" + std::to_string(n);
      tasks[n] = entry;
    }
  }
  for (auto& ev : evicted) release_job(*ev);
  evicted.clear();
  if (closed || !refused.is_ok()) {
    release_job(*entry);
    if (closed) {
      send_json(res, 503,
                error_body("the server is shutting down", "server_error", "shutting_down"));
    } else {
      // Room comes when a task ends; estimated by the engine's backlog of prompt tokens not yet
      // computed, at its recent throughput.
      int retry_after_s = 1;
      {
        std::lock_guard<std::mutex> lk(mu);
        const EngineStats es = eng->stats();
        const int64_t backlog = es.prompt_tokens - es.prefill_tokens - es.prefix_hit_tokens;
        retry_after_s = retry_after_seconds(static_cast<double>(std::max<int64_t>(backlog, 1)),
                                            tokens_per_s_locked());
      }
      send_error(res, refused, retry_after_s);
    }
    return;
  }
  {
    // The job pulls the documents from the entry's source while its window allows (its feeder
    // thread), so a task of any size keeps the engine's queue and the job's memory bounded.
    // Documents it never adds (the task was cancelled) are delivered as cancelled: those past
    // the job's n_added, which includes the one a cancel may leave between the source's next()
    // and add() (the source gives documents in index order and the job adds them in that order).
    // on_done runs on the job's feeder thread, which the job's destructor joins, so the job is
    // alive there. Under job_mu: an eviction (possible once a DELETE marked the task cancelled)
    // cannot destroy the job meanwhile.
    auto deliver_unfed = [e](const Status& why, size_t first) {
      for (size_t i = first; i < e->doc_ids.size(); ++i) {
        DocumentResult r;
        r.index = i;
        r.type = e->spec.type;
        r.error_code = "cancelled";
        r.error = why.message();
        e->deliver(i, document_result_json(r, e->doc_ids[i], e->spec), false);
      }
    };
    std::lock_guard<std::mutex> lk(entry->job_mu);
    Job* job = entry->job.get();
    Status s = job ? job->feed_async(*entry->source, {},
                                     [deliver_unfed, job](Status st) {
                                       if (!st.is_ok()) deliver_unfed(st, job->stats().n_added);
                                     })
                   : cancelled("the task was cancelled");
    if (!s.is_ok()) deliver_unfed(s, job ? job->stats().n_added : 0);
  }
  send_json(res, 202,
            {{"id", entry->id},
             {"object", "task"},
             {"status", "running"},
             {"n_documents", entry->results.size()}});
}

std::shared_ptr<TaskEntry> Server::Impl::find_task(const httplib::Request& req,
                                                   httplib::Response& res) {
  const std::string id = req.matches.size() > 1 ? req.matches[1].str() : std::string();
  const uint64_t n = parse_task_number(id);
  {
    std::lock_guard<std::mutex> lk(tasks_mu);
    auto it = tasks.find(n);
    if (n != 0 && it != tasks.end()) return it->second;
  }
  send_json(res, 404,
            error_body("no task with id '" + id.substr(0, 64) +
                           "' (finished tasks are kept only for the last " +
                           std::to_string(kMaxTasks) + " tasks)",
                       "invalid_request_error", "task_not_found", "id"));
  return nullptr;
}

}  // namespace llmt::server
