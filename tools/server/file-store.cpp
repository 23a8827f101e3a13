#include "file-store.h"

#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>

#include "durable-file.h"

namespace llmt::server {

namespace fs = std::filesystem;
using json = nlohmann::json;

json FileInfo::to_json() const {
  return {{"id", id},
          {"object", "file"},
          {"bytes", bytes},
          {"created_at", created_at},
          {"filename", filename},
          {"purpose", purpose}};
}

std::string FileStore::meta_path(const std::string& id) const {
  return dir_ + "/" + id + ".json";
}

std::string FileStore::data_path(const std::string& id) const {
  return dir_ + "/" + id + ".data";
}

Result<std::unique_ptr<FileStore>> FileStore::open(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return io_error("cannot create " + dir + ": " + ec.message());
  std::unique_ptr<FileStore> store(new FileStore(dir));
  std::vector<fs::path> data_files;
  std::error_code rm;  // removals are best effort
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp-") != std::string::npos) {
      fs::remove(e.path(), rm);  // a write a crash interrupted
      continue;
    }
    if (e.path().extension() == ".data") {
      data_files.push_back(e.path());
      continue;
    }
    if (e.path().extension() != ".json") continue;
    Result<std::string> text = read_whole_file(e.path().string());
    if (!text.is_ok()) return text.status();
    const json j = json::parse(*text, nullptr, false);
    FileInfo f;
    if (j.is_object() && j.value("id", "") == e.path().stem().string()) {
      f.id = j.value("id", "");
      f.bytes = j.value("bytes", int64_t{-1});
      f.created_at = j.value("created_at", int64_t{0});
      f.filename = j.value("filename", "");
      f.purpose = j.value("purpose", "");
      f.seq = j.value("seq", uint64_t{0});
    }
    std::error_code size_ec;
    const auto size = fs::file_size(store->data_path(f.id), size_ec);
    if (f.id.empty() || size_ec || static_cast<int64_t>(size) != f.bytes) {
      fs::remove(e.path(), rm);  // unreadable, or its bytes are missing or damaged
      continue;
    }
    store->next_seq_ = std::max(store->next_seq_, f.seq + 1);
    store->files_[f.id] = std::move(f);
  }
  if (ec) return io_error("cannot list " + dir + ": " + ec.message());
  for (const fs::path& p : data_files) {
    if (!store->files_.count(p.stem().string())) fs::remove(p, rm);  // never committed
  }
  return store;
}

Result<FileInfo> FileStore::create(std::string_view filename, std::string_view purpose,
                                   std::string_view content, const std::string& id) {
  FileInfo f;
  f.id = id.empty() ? "file-" + random_hex(24) : id;
  f.bytes = static_cast<int64_t>(content.size());
  f.created_at = static_cast<int64_t>(std::time(nullptr));
  f.filename = std::string(filename);
  f.purpose = std::string(purpose);
  {
    std::lock_guard<std::mutex> lk(mu_);
    f.seq = next_seq_++;
  }
  if (Status s = write_file_atomic(data_path(f.id), content); !s.is_ok()) return s;
  json meta = f.to_json();
  meta.erase("object");
  meta["seq"] = f.seq;
  if (Status s = write_file_atomic(meta_path(f.id),
                                   meta.dump(-1, ' ', false, json::error_handler_t::replace));
      !s.is_ok()) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!files_.count(f.id)) ::unlink(data_path(f.id).c_str());  // not committed: no bytes left
    return s;
  }
  std::lock_guard<std::mutex> lk(mu_);
  files_[f.id] = f;
  return f;
}

std::optional<FileInfo> FileStore::get(const std::string& id) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = files_.find(id);
  if (it == files_.end()) return std::nullopt;
  return it->second;
}

std::vector<FileInfo> FileStore::list() const {
  std::vector<FileInfo> out;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto& [id, f] : files_) out.push_back(f);
  }
  std::sort(out.begin(), out.end(),
            [](const FileInfo& a, const FileInfo& b) { return a.seq < b.seq; });
  return out;
}

Result<std::string> FileStore::read(const std::string& id) const {
  if (!get(id)) return not_found("no such file: " + id);
  return read_whole_file(data_path(id));
}

Status FileStore::remove(const std::string& id) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!files_.erase(id)) return not_found("no such file: " + id);
  }
  ::unlink(meta_path(id).c_str());
  ::unlink(data_path(id).c_str());
  return sync_dir(dir_);
}

}  // namespace llmt::server
