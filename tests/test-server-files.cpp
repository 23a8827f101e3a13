// The Files API and its pieces: the strict multipart/form-data parser (fields, binary-safe data,
// every malformation refused), the durable file store (atomic writes, leftovers of a crash
// removed, files surviving a restart) and the routes in-process on stories260K (upload, list with
// purpose / order / limit / after, retrieve, content byte for byte, delete; 400 for bad uploads,
// 413 over the body limit, 507 with nothing left behind when the disk is full).
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "batch-fixture.h"
#include "file-store.h"
#include "multipart.h"
#include "server-fixture.h"

namespace llmt {
namespace {

using nlohmann::json;
using server::MultipartPart;
using server::parse_multipart;
namespace fs = std::filesystem;

const std::string kType = "multipart/form-data; boundary=XyZ";

TEST(Multipart, ParsesFieldsAndBinarySafeFiles) {
  // The file's bytes hold CRLF, "--", a NUL and a near-boundary; only CRLF--XyZ ends it.
  const std::string data = std::string("a\r\nb--XyZx\r\n--Xy\0z", 19);
  const std::string body =
      "--XyZ\r\n"
      "Content-Disposition: form-data; name=\"purpose\"\r\n\r\n"
      "batch\r\n"
      "--XyZ\r\n"
      "content-disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".jsonl\"\r\n"
      "Content-Type: application/octet-stream\r\n\r\n" +
      data + "\r\n--XyZ--\r\n";
  Result<std::vector<MultipartPart>> parts = parse_multipart(kType, body);
  ASSERT_TRUE(parts.is_ok()) << parts.status().to_string();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].name, "purpose");
  EXPECT_EQ((*parts)[0].data, "batch");
  EXPECT_FALSE((*parts)[0].filename.has_value());
  EXPECT_EQ((*parts)[1].name, "file");
  ASSERT_TRUE((*parts)[1].filename.has_value());
  EXPECT_EQ(*(*parts)[1].filename, "a \"b\".jsonl");
  EXPECT_EQ((*parts)[1].content_type, "application/octet-stream");
  EXPECT_EQ((*parts)[1].data, data);
  // A quoted boundary, no CRLF after the close delimiter, an empty part.
  Result<std::vector<MultipartPart>> q =
      parse_multipart("Multipart/Form-Data; charset=utf-8; boundary=\"a b\"",
                      "--a b\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n--a b--");
  ASSERT_TRUE(q.is_ok()) << q.status().to_string();
  ASSERT_EQ(q->size(), 1u);
  EXPECT_EQ((*q)[0].name, "x");
  EXPECT_EQ((*q)[0].data, "");
}

TEST(Multipart, RefusesEveryMalformation) {
  const std::string ok_part = "Content-Disposition: form-data; name=\"f\"\r\n\r\nx";
  struct Bad {
    std::string type, body, why;
  };
  std::string many;
  for (int i = 0; i < 17; ++i) {
    many +=
        "--XyZ\r\nContent-Disposition: form-data; name=\"f" + std::to_string(i) + "\"\r\n\r\nx\r\n";
  }
  many += "--XyZ--";
  const std::vector<Bad> bad = {
      {"application/json", "--XyZ\r\n" + ok_part + "\r\n--XyZ--", "not multipart"},
      {"multipart/form-data", "--XyZ\r\n" + ok_part + "\r\n--XyZ--", "no boundary"},
      {"multipart/form-data; boundary=", "--\r\n" + ok_part + "\r\n----", "empty boundary"},
      {"multipart/form-data; boundary=" + std::string(71, 'a'), "x", "boundary too long"},
      {"multipart/form-data; boundary=a<b", "--a<b\r\n" + ok_part + "\r\n--a<b--", "bad bchar"},
      {kType, "preamble\r\n--XyZ\r\n" + ok_part + "\r\n--XyZ--", "preamble"},
      {kType, "--XyZ\r\n" + ok_part, "unterminated part"},
      {kType, "--XyZ\r\n" + ok_part + "\r\n--XyZ", "no close delimiter"},
      {kType, "--XyZ\r\n" + ok_part + "\r\n--XyZ--\r\ntrailing", "bytes after the close"},
      {kType, "--XyZ\r\n\r\nx\r\n--XyZ--", "no Content-Disposition"},
      {kType, "--XyZ\r\nContent-Disposition: attachment; name=\"f\"\r\n\r\nx\r\n--XyZ--",
       "not form-data"},
      {kType, "--XyZ\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\nx\r\n--XyZ--",
       "no name"},
      {kType, "--XyZ\r\nContent-Disposition: form-data; name=\"\"\r\n\r\nx\r\n--XyZ--",
       "empty name"},
      {kType, "--XyZ\r\nContent-Disposition: form-data; name=\"f\r\n\r\nx\r\n--XyZ--",
       "unterminated quote"},
      {kType, "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; name=\"g\"\r\n\r\nx\r\n--XyZ--",
       "duplicate parameter"},
      {kType, "--XyZ\r\n" + ok_part + "\r\n--XyZ\r\n" + ok_part + "\r\n--XyZ--", "duplicate field"},
      {kType, "--XyZ\nContent-Disposition: form-data; name=\"f\"\n\nx\n--XyZ--", "bare LF"},
      {kType,
       "--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\nContent-Transfer-Encoding: "
       "base64\r\n\r\nx\r\n--XyZ--",
       "base64 encoding"},
      {kType,
       "--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\nX-" + std::string(9000, 'a') +
           ": b\r\n\r\nx\r\n--XyZ--",
       "head too large"},
      {kType, "--XyZ\r\nno colon here\r\n\r\nx\r\n--XyZ--", "header without a colon"},
      {kType, many, "too many parts"},
      {kType, "", "empty body"},
  };
  for (const Bad& b : bad) {
    Result<std::vector<MultipartPart>> r = parse_multipart(b.type, b.body);
    EXPECT_FALSE(r.is_ok()) << b.why;
    if (!r.is_ok()) EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << b.why;
  }
}

TEST(FileStore, AtomicFilesSurviveReopenAndLeftoversAreRemoved) {
  test::TempDir dir("file-store");
  std::string id;
  {
    auto store = server::FileStore::open(dir.str());
    ASSERT_TRUE(store.is_ok()) << store.status().to_string();
    auto f = (*store)->create("a.jsonl", "batch", std::string("x\0y", 3));
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    id = f->id;
    EXPECT_EQ(id.rfind("file-", 0), 0u);
    EXPECT_EQ(f->bytes, 3);
  }
  // What a crash can leave: a temporary file, bytes never committed, metadata of lost bytes.
  std::ofstream(dir.path / "file-zzz.data.tmp-1234") << "partial";
  std::ofstream(dir.path / "file-orphan.data") << "never committed";
  std::ofstream(dir.path / "file-lost.json")
      << R"({"id":"file-lost","bytes":5,"created_at":1,"filename":"l","purpose":"batch","seq":9})";
  auto store = server::FileStore::open(dir.str());
  ASSERT_TRUE(store.is_ok()) << store.status().to_string();
  ASSERT_EQ((*store)->list().size(), 1u);
  EXPECT_EQ((*store)->list()[0].id, id);
  auto bytes = (*store)->read(id);
  ASSERT_TRUE(bytes.is_ok());
  EXPECT_EQ(*bytes, std::string("x\0y", 3));
  EXPECT_FALSE(fs::exists(dir.path / "file-zzz.data.tmp-1234"));
  EXPECT_FALSE(fs::exists(dir.path / "file-orphan.data"));
  EXPECT_FALSE(fs::exists(dir.path / "file-lost.json"));
  EXPECT_EQ((*store)->read("file-lost").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE((*store)->remove(id).is_ok());
  EXPECT_EQ((*store)->remove(id).code(), StatusCode::kNotFound);
  EXPECT_TRUE((*store)->list().empty());
}

server::ServerOptions files_options(const test::TempDir& dir) {
  server::ServerOptions so = test::server_test_options();
  so.data_dir = dir.str();
  return so;
}

TEST(ServerFiles, UploadListRetrieveContentDelete) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("files");
  test::RunningServer rs(files_options(dir));
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  int st = 0;
  const std::string content = std::string("{\"a\":1}\n\r\n--not-a-boundary\0\xff", 29);
  const json f = test::upload(*c, content, &st, "batch", "in.jsonl");
  ASSERT_EQ(st, 200) << f;
  EXPECT_EQ(f["object"], "file");
  EXPECT_EQ(f["bytes"], content.size());
  EXPECT_EQ(f["filename"], "in.jsonl");
  EXPECT_EQ(f["purpose"], "batch");
  EXPECT_TRUE(f["created_at"].is_number_integer());
  const std::string id = f["id"];
  EXPECT_EQ(id.rfind("file-", 0), 0u);
  const json g = test::upload(*c, "second", &st, "user_data", "b.txt");
  ASSERT_EQ(st, 200) << g;

  EXPECT_EQ(test::get_json(*c, "/v1/files/" + id, &st), f);
  EXPECT_EQ(st, 200);
  EXPECT_EQ(test::file_content(*c, id), content);
  json list = test::get_json(*c, "/v1/files", &st);
  ASSERT_EQ(st, 200) << list;
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 2u);
  EXPECT_EQ(list["data"][0]["id"], g["id"]);  // newest first by default
  EXPECT_EQ(list["has_more"], false);
  list = test::get_json(*c, "/v1/files?order=asc&limit=1", &st);
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], id);
  EXPECT_EQ(list["has_more"], true);
  list = test::get_json(*c, "/v1/files?order=asc&after=" + id, &st);
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], g["id"]);
  list = test::get_json(*c, "/v1/files?purpose=batch", &st);
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], id);
  test::get_json(*c, "/v1/files?limit=0", &st);
  EXPECT_EQ(st, 400);
  test::get_json(*c, "/v1/files?order=up", &st);
  EXPECT_EQ(st, 400);

  auto del = c->Delete(("/v1/files/" + id).c_str());
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200);
  EXPECT_EQ(json::parse(del->body), (json{{"id", id}, {"object", "file"}, {"deleted", true}}));
  const json gone = test::get_json(*c, "/v1/files/" + id, &st);
  EXPECT_EQ(st, 404);
  test::expect_error_body(gone);
  test::get_json(*c, "/v1/files/" + id + "/content", &st);
  EXPECT_EQ(st, 404);
  del = c->Delete(("/v1/files/" + id).c_str());
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 404);
  list = test::get_json(*c, "/v1/files", &st);
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_FALSE(fs::exists(dir.path / "files" / (id + ".data")));
}

TEST(ServerFiles, BadUploadsAre400AndOverTheBodyLimit413) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("files-bad");
  server::ServerOptions so = files_options(dir);
  so.max_body_bytes = 4096;
  test::RunningServer rs(so);
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  int st = 0;
  struct Bad {
    std::string type, body, param;
  };
  const std::string b = "--" + std::string(test::kBoundary);
  auto field = [&](const std::string& name, const std::string& value,
                   const std::string& filename = "") {
    return b + "\r\nContent-Disposition: form-data; name=\"" + name + "\"" +
           (filename.empty() ? "" : "; filename=\"" + filename + "\"") + "\r\n\r\n" + value +
           "\r\n";
  };
  const std::vector<Bad> bad = {
      {"application/json", "{}", "file"},
      {test::multipart_type(), field("file", "x", "a.jsonl") + b + "--", "purpose"},
      {test::multipart_type(), field("purpose", "batch") + b + "--", "file"},
      {test::multipart_type(), field("purpose", "bogus") + field("file", "x", "a") + b + "--",
       "purpose"},
      {test::multipart_type(),
       field("purpose", "batch") + field("file", "x", "a") + field("extra", "1") + b + "--",
       "extra"},
      {test::multipart_type(), field("purpose", "batch") + field("file", "x") + b + "--", "file"},
      {test::multipart_type(), field("purpose", "batch") + field("file", "x", "a"), "file"},
  };
  for (const Bad& x : bad) {
    const json r = test::response_json(c->Post("/v1/files", x.body, x.type.c_str()), &st);
    EXPECT_EQ(st, 400) << x.body << " -> " << r;
    test::expect_error_body(r);
    EXPECT_EQ(r["error"]["param"], x.param) << r;
  }
  const json big = test::upload(*c, std::string(5000, 'x'), &st);
  EXPECT_EQ(st, 413) << big;
  EXPECT_TRUE(test::get_json(*c, "/v1/files", &st)["data"].empty());
}

TEST(ServerFiles, FilesSurviveARestartOnTheSameDataDir) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("files-restart");
  json f;
  {
    test::RunningServer rs(files_options(dir));
    ASSERT_TRUE(rs.srv);
    auto c = rs.client();
    int st = 0;
    f = test::upload(*c, "{\"x\":1}\n", &st);
    ASSERT_EQ(st, 200) << f;
  }
  test::RunningServer rs(files_options(dir));
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  int st = 0;
  EXPECT_EQ(test::get_json(*c, "/v1/files/" + f["id"].get<std::string>(), &st), f);
  EXPECT_EQ(test::file_content(*c, f["id"]), "{\"x\":1}\n");
  // Without a data dir the server keeps its files in a temporary folder of its own.
  server::ServerOptions so = test::server_test_options();
  auto tmp = std::make_unique<server::Server>(so);
  ASSERT_TRUE(tmp->start().is_ok());
}

TEST(ServerFiles, TwoServersCannotShareADataDir) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("files-lock");
  test::RunningServer rs(files_options(dir));
  ASSERT_TRUE(rs.srv);
  server::Server second(files_options(dir));
  const Status s = second.start();
  EXPECT_EQ(s.code(), StatusCode::kIo) << s.to_string();
  EXPECT_NE(s.message().find("in use"), std::string::npos) << s.message();
}

TEST(ServerFiles, ADiskFullUploadIs507AndLeavesNothing) {
  LLMT_REQUIRE_DATA(test::kServerModel);
  test::TempDir dir("files-full");
  test::RunningServer rs(files_options(dir));
  ASSERT_TRUE(rs.srv);
  auto c = rs.client();
  int st = 0;
  const json small = test::upload(*c, "ok\n", &st);
  ASSERT_EQ(st, 200) << small;
  // A file size limit makes the store's write fail as a full disk does (EFBIG; SIGXFSZ ignored).
  signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  rlimit lim = old;
  lim.rlim_cur = 64 << 10;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  const json r = test::upload(*c, std::string(200 << 10, 'y'), &st);
  setrlimit(RLIMIT_FSIZE, &old);
  EXPECT_EQ(st, 507) << r;
  test::expect_error_body(r);
  EXPECT_EQ(r["error"]["code"], "insufficient_storage") << r;
  // Nothing half-written: only the first file's two files are there, and it alone is listed.
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir.path / "files")) {
    ++n;
    EXPECT_NE(e.path().filename().string().find(small["id"].get<std::string>()), std::string::npos)
        << e.path();
  }
  EXPECT_EQ(n, 2u);
  const json list = test::get_json(*c, "/v1/files", &st);
  ASSERT_EQ(list["data"].size(), 1u) << list;
  EXPECT_EQ(list["data"][0]["id"], small["id"]);
}

}  // namespace
}  // namespace llmt
