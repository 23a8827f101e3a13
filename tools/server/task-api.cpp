#include "task-api.h"

#include <limits>

#include "common/openai.h"
#include "common/task-render.h"

namespace llmt::server {

using namespace openai;

namespace {

using nlohmann::json;

Status bad(const std::string& field, const std::string& what) {
  return invalid_argument("'" + field + "' " + what, field);
}

Status get_string_array(const json& body, const char* field, std::vector<std::string>* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return Status::ok();
  if (!it->is_array()) return bad(field, "must be an array of strings");
  if (it->size() > kMaxTaskDocuments) return bad(field, "has too many entries");
  out->clear();
  for (const json& v : *it) {
    if (!v.is_string()) return bad(field, "must be an array of strings");
    out->push_back(v.get<std::string>());
  }
  return Status::ok();
}

// An integer field in [lo, hi]; absent or null leaves *out.
Status get_int(const json& body, const char* field, int64_t lo, int64_t hi, int32_t* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return Status::ok();
  if (!it->is_number_integer()) return bad(field, "must be an integer");
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return bad(field, "is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return bad(field, "is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  *out = static_cast<int32_t>(v);
  return Status::ok();
}

Status get_string(const json& body, const char* field, std::string* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return Status::ok();
  if (!it->is_string()) return bad(field, "must be a string");
  *out = it->get<std::string>();
  return Status::ok();
}

}  // namespace

Status parse_task_request(const json& body, TaskRequest* out) {
  if (!body.is_object()) return invalid_argument("the request body must be a JSON object");
  TaskRequest r;
  TaskSpec& spec = r.spec;

  auto task = body.find("task");
  if (task == body.end() || !task->is_string()) {
    return bad("task",
               "is required: \"classify\", \"generate\", \"extract\", \"summarize\" or \"embed\"");
  }
  Result<TaskType> type = parse_task_type(task->get<std::string>());
  if (!type.is_ok()) {
    return bad(
        "task",
        "must be \"classify\", \"generate\", \"extract\", \"summarize\" or \"embed\" (got \"" +
            task->get<std::string>() + "\")");
  }
  spec.type = *type;

  if (Status s = get_string(body, "prompt", &spec.prompt_template); !s.is_ok()) return s;
  if (spec.prompt_template.find("{text}") == std::string::npos) {
    return bad("prompt", "must contain {text} (where each document's text goes)");
  }
  if (Status s = get_string_array(body, "labels", &spec.labels); !s.is_ok()) return s;
  if (Status s = get_string_array(body, "choices", &spec.choices); !s.is_ok()) return s;
  if (spec.type == TaskType::kClassify && spec.labels.size() < 2) {
    return bad("labels", "must have at least 2 labels for task \"classify\"");
  }
  if (Status s = get_string(body, "split", &spec.split); !s.is_ok()) return s;
  std::string merge;
  if (Status s = get_string(body, "merge", &merge); !s.is_ok()) return s;
  if (!merge.empty()) {
    Result<MergeKind> m = parse_merge_kind(merge);
    if (!m.is_ok()) {
      return bad("merge", "must be one of default, concat, vote, mean, weighted-mean, reduce");
    }
    spec.merge = *m;
  }
  if (Status s = get_int(body, "max_tokens", 1, 1 << 20, &spec.max_tokens); !s.is_ok()) return s;
  if (Status s = get_int(body, "priority", std::numeric_limits<int32_t>::min(),
                         std::numeric_limits<int32_t>::max(), &spec.priority);
      !s.is_ok()) {
    return s;
  }
  if (Status s = get_int(body, "embd_normalize", -1, 1000, &spec.embd_normalize); !s.is_ok()) {
    return s;
  }
  std::string tenant;
  if (Status s = get_string(body, "tenant", &tenant); !s.is_ok()) return s;
  spec.tenant = tenant_id(tenant);

  auto docs = body.find("documents");
  auto inputs = body.find("inputs");
  const bool has_docs = docs != body.end() && !docs->is_null();
  const bool has_inputs = inputs != body.end() && !inputs->is_null();
  if (has_docs == has_inputs) {
    return invalid_argument("exactly one of 'documents' or 'inputs' is required");
  }
  const json& list = has_docs ? *docs : *inputs;
  const char* field = has_docs ? "documents" : "inputs";
  if (!list.is_array()) return bad(field, "must be an array");
  if (list.empty()) return bad(field, "must not be empty");
  if (list.size() > kMaxTaskDocuments) {
    return bad(field, "has " + std::to_string(list.size()) + " entries; at most " +
                          std::to_string(kMaxTaskDocuments) + " per task");
  }
  for (size_t i = 0; i < list.size(); ++i) {
    const json& d = list[i];
    const std::string where = std::string(field) + "[" + std::to_string(i) + "]";
    if (has_inputs) {
      if (!d.is_string()) return bad(where, "must be a string");
      r.ids.emplace_back(i);
      r.texts.push_back(d.get<std::string>());
      continue;
    }
    if (!d.is_object()) return bad(where, "must be an object {\"id\", \"text\"}");
    auto text = d.find("text");
    if (text == d.end() || !text->is_string()) return bad(where + ".text", "must be a string");
    auto id = d.find("id");
    if (id == d.end() || id->is_null()) {
      r.ids.emplace_back(i);
    } else if (id->is_string() || id->is_number_integer()) {
      r.ids.push_back(*id);
    } else {
      return bad(where + ".id", "must be a string or an integer");
    }
    r.texts.push_back(text->get<std::string>());
  }
  *out = std::move(r);
  return Status::ok();
}

json document_result_json(const DocumentResult& r, const json& id, const TaskSpec& spec) {
  json j = {{"id", id}, {"status", r.ok() ? "completed" : "failed"}};
  if (!r.ok()) {
    j["error"] = {{"code", r.error_code}, {"message", r.error}};
    return j;
  }
  j["error"] = nullptr;
  j.update(tasks::document_result_json(r, tasks::result_options(spec)));
  j["usage"] = usage_json(r.usage);
  return j;
}

}  // namespace llmt::server
