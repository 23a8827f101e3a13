// Tests of common/job-io: both input formats and their detection, every kind of malformed line,
// output line schemas, the in-order buffer, crash-safe resume (partial lines, cut files, damaged
// lines, a SIGKILLed writer), sidecar refusals, overwrite, and progress formatting and timing.
#include "common/job-io.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace llmt::tasks {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class JobIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "llmt-jobio-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  static void write_file(const std::string& p, const std::string& content) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << content;
  }
  static void append_file(const std::string& p, const std::string& content) {
    std::ofstream f(p, std::ios::binary | std::ios::app);
    f << content;
  }
  static std::string read_all(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  static std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : text) {
      if (c == '\n') {
        out.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    if (!cur.empty()) out.push_back(cur);
    return out;
  }

  static std::vector<InputRecord> read_records(const std::string& p, InputReaderOptions o = {},
                                               InputFormat* format = nullptr) {
    auto r = InputReader::open(p, o);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    if (!r.is_ok()) return {};
    if (format) *format = (*r)->format();
    std::vector<InputRecord> out;
    for (;;) {
      InputRecord rec;
      auto got = (*r)->next(&rec);
      EXPECT_TRUE(got.is_ok()) << got.status().to_string();
      if (!got.is_ok() || !*got) break;
      out.push_back(rec);
    }
    return out;
  }

  std::unique_ptr<OutputWriter> open_writer(const std::string& out, const JobIdentity& id,
                                            OutputWriterOptions o = {}) {
    auto r = OutputWriter::open(out, id, std::move(o));
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? std::move(r).value() : nullptr;
  }

  JobIdentity identity(const std::string& input, const std::string& params = "task=x") {
    auto r = make_job_identity(input, params);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? *r : JobIdentity{};
  }

  std::string dir_;
};

// ---------------------------------------------------------------------------------------------
// Input.

TEST_F(JobIoTest, SimpleFormatRecordsLineNumbersOffsetsAndExtras) {
  std::string l1 =
      "\xEF\xBB\xBF{\"id\": \"a\", \"text\": \"hello\", \"label\": 1, \"meta\": {\"k\": [1,2]}}";
  std::string l2 = "   \t";
  std::string l3 = "{\"id\": 17, \"text\": \"w\\u00e9rld\"}\r";
  std::string l4 = "{\"text\": \"no id\"}";  // last line without LF
  std::string content = l1 + "\n" + l2 + "\n\n" + l3 + "\n" + l4;
  write_file(path("in.jsonl"), content);
  InputFormat fmt = InputFormat::kAuto;
  auto recs = read_records(path("in.jsonl"), {}, &fmt);
  EXPECT_EQ(fmt, InputFormat::kSimple);
  ASSERT_EQ(recs.size(), 3u);
  for (auto& r : recs) EXPECT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(recs[0].index, 0u);
  EXPECT_EQ(recs[0].line_number, 1u);
  EXPECT_EQ(recs[0].byte_offset, 0u);
  EXPECT_EQ(recs[0].id, json("a"));
  EXPECT_EQ(recs[0].text, "hello");
  EXPECT_EQ(recs[0].extra, json::parse(R"({"label": 1, "meta": {"k": [1,2]}})"));
  EXPECT_EQ(recs[1].index, 1u);
  EXPECT_EQ(recs[1].line_number, 4u);
  EXPECT_EQ(recs[1].byte_offset, l1.size() + 1 + l2.size() + 1 + 1);
  EXPECT_EQ(recs[1].id, json(17));
  EXPECT_EQ(recs[1].text, "w\xC3\xA9rld");
  EXPECT_TRUE(recs[1].extra.is_object() && recs[1].extra.empty());
  EXPECT_EQ(recs[2].index, 2u);
  EXPECT_EQ(recs[2].line_number, 5u);
  EXPECT_TRUE(recs[2].id.is_null());
  EXPECT_EQ(recs[2].text, "no id");

  auto n = count_input_records(path("in.jsonl"));
  ASSERT_TRUE(n.is_ok());
  EXPECT_EQ(*n, 3u);
}

TEST_F(JobIoTest, OpenAiFormatBothEndpoints) {
  std::string content =
      R"({"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}})"
      "\n"
      R"({"custom_id": "req-2", "method": "POST", "url": "/v1/completions", "body": {"prompt": "Once upon"}})"
      "\n"
      R"({"custom_id": "req-3", "method": "POST", "url": "/v1/completions", "body": {"prompt": ["a", "b"]}})"
      "\n";
  write_file(path("in.jsonl"), content);
  InputFormat fmt = InputFormat::kAuto;
  auto recs = read_records(path("in.jsonl"), {}, &fmt);
  EXPECT_EQ(fmt, InputFormat::kOpenAiBatch);
  ASSERT_EQ(recs.size(), 3u);
  for (auto& r : recs) {
    EXPECT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.format, InputFormat::kOpenAiBatch);
  }
  EXPECT_EQ(recs[0].custom_id, json("req-1"));
  EXPECT_EQ(recs[0].endpoint, OpenAiEndpoint::kChatCompletions);
  EXPECT_EQ(recs[0].body["max_tokens"], 5);
  EXPECT_EQ(recs[0].body["messages"][0]["content"], "Hi");
  EXPECT_EQ(recs[1].endpoint, OpenAiEndpoint::kCompletions);
  EXPECT_EQ(recs[1].body["prompt"], "Once upon");
  EXPECT_EQ(recs[2].custom_id, json("req-3"));
}

TEST_F(JobIoTest, DetectionUsesFirstValidLineAndFlagsMismatches) {
  std::string openai_line =
      R"({"custom_id": "c1", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}})";
  // Leading broken lines (even a simple-looking invalid one) do not decide the format.
  write_file(path("a.jsonl"),
             "\n{broken\n{\"id\": 1}\n" + openai_line + "\n{\"id\": 2, \"text\": \"simple\"}\n");
  auto r = InputReader::open(path("a.jsonl"));
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ((*r)->format(), InputFormat::kOpenAiBatch);
  EXPECT_EQ((*r)->format_line(), 4u);
  auto recs = read_records(path("a.jsonl"));
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(recs[0].error_code, "invalid_json");
  EXPECT_EQ(recs[0].line_number, 2u);
  EXPECT_EQ(recs[0].format, InputFormat::kOpenAiBatch);
  EXPECT_EQ(recs[1].error_code, "missing_field");  // no custom_id
  EXPECT_TRUE(recs[2].ok());
  EXPECT_EQ(recs[3].error_code, "format_mismatch");
  EXPECT_EQ(recs[3].line_number, 5u);

  write_file(path("b.jsonl"), "{\"id\": 1, \"text\": \"t\"}\n" + openai_line + "\n");
  recs = read_records(path("b.jsonl"));
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_TRUE(recs[0].ok());
  EXPECT_EQ(recs[1].error_code, "format_mismatch");
  EXPECT_EQ(recs[1].custom_id, json(nullptr));  // simple file: error line carries the id field
  EXPECT_EQ(recs[1].format, InputFormat::kSimple);

  // No valid line at all: simple.
  write_file(path("c.jsonl"), "nope\n[1]\n");
  InputFormat fmt = InputFormat::kAuto;
  recs = read_records(path("c.jsonl"), {}, &fmt);
  EXPECT_EQ(fmt, InputFormat::kSimple);
  EXPECT_EQ(recs.size(), 2u);

  // Forced format.
  InputReaderOptions o;
  o.format = InputFormat::kSimple;
  recs = read_records(path("a.jsonl"), o, &fmt);
  EXPECT_EQ(fmt, InputFormat::kSimple);
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(recs[2].error_code, "format_mismatch");
  EXPECT_TRUE(recs[3].ok());
}

TEST_F(JobIoTest, EveryMalformedKindIsAnErrorRecordAndReadingContinues) {
  struct Case {
    std::string line;
    std::string code;
  };
  std::string deep = std::string(300, '[') + std::string(300, ']');
  std::vector<Case> simple_cases = {
      {"{\"id\": \"ok0\", \"text\": \"fine\"}", ""},
      {"{\"id\": 1, \"text\": \"" + std::string(200, 'x') + "\"}", "line_too_long"},
      {"{\"id\": 2, \"text\": \"bad \xC3\x28 utf8\"}", "invalid_utf8"},
      {"{\"id\": 3, \"text\": \"surrogate \xED\xA0\x80\"}", "invalid_utf8"},
      {"{\"id\": 4, \"text\": \"overlong \xC0\xAF\"}", "invalid_utf8"},
      {deep, "too_deep"},
      {"{\"id\": 5, \"text\": \"unterminated}", "invalid_json"},
      {"{\"id\": 6, \"text\": \"x\"} trailing", "invalid_json"},
      {"[\"an\", \"array\"]", "not_an_object"},
      {"\"just a string\"", "not_an_object"},
      {"{\"id\": true, \"text\": \"x\"}", "invalid_field"},
      {"{\"id\": 7, \"text\": 42}", "invalid_field"},
      {"{\"id\": 8}", "missing_field"},
      {"{\"id\": 9, \"text\": \"\"}", "empty_text"},
      {"{\"id\": 10, \"text\": \"  \\n \"}", "empty_text"},
      {"{\"id\": 11, \"text\": \"ok again\"}", ""},
  };
  std::string content;
  for (auto& c : simple_cases) content += c.line + "\n";
  write_file(path("s.jsonl"), content);
  InputReaderOptions o;
  o.max_line_bytes = 100;
  // The deep line is 600 bytes: allow it past the length check in a second pass below.
  auto recs = read_records(path("s.jsonl"), o);
  ASSERT_EQ(recs.size(), simple_cases.size());
  for (size_t i = 0; i < recs.size(); ++i) {
    SCOPED_TRACE("line " + std::to_string(i + 1) + ": " + simple_cases[i].line.substr(0, 60));
    EXPECT_EQ(recs[i].line_number, i + 1);
    EXPECT_EQ(recs[i].index, i);
    std::string want = simple_cases[i].code;
    if (simple_cases[i].line == deep) want = "line_too_long";
    EXPECT_EQ(recs[i].error_code, want) << recs[i].error;
    if (!want.empty()) {
      EXPECT_FALSE(recs[i].error.empty());
    }
  }
  // With a large limit the long line is fine and the deep one is too_deep.
  recs = read_records(path("s.jsonl"));
  ASSERT_EQ(recs.size(), simple_cases.size());
  EXPECT_TRUE(recs[1].ok());
  EXPECT_EQ(recs[5].error_code, "too_deep");
  // The id of a record that is malformed after parsing is kept for its error line.
  EXPECT_EQ(recs[12].id, json(8));

  std::string good =
      R"({"custom_id": "g", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}})";
  std::vector<Case> openai_cases = {
      {good, ""},
      {R"({"custom_id": 5, "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}})",
       "invalid_field"},
      {R"({"custom_id": "", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}})",
       "invalid_field"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "p"}})", "missing_field"},
      {R"({"custom_id": "b", "method": "GET", "url": "/v1/completions", "body": {"prompt": "p"}})",
       "invalid_field"},
      {R"({"custom_id": "c", "method": "POST", "body": {"prompt": "p"}})", "missing_field"},
      {R"({"custom_id": "d", "method": "POST", "url": "/v1/embeddings", "body": {"input": "p"}})",
       "invalid_field"},
      {R"({"custom_id": "e", "method": "POST", "url": "/v1/completions"})", "missing_field"},
      {R"({"custom_id": "f", "method": "POST", "url": "/v1/completions", "body": "p"})",
       "invalid_field"},
      {R"({"custom_id": "h", "method": "POST", "url": "/v1/chat/completions", "body": {}})",
       "missing_field"},
      {R"({"custom_id": "i", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}})",
       "invalid_field"},
      {R"({"custom_id": "j", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": ["x"]}})",
       "invalid_field"},
      {R"({"custom_id": "k", "method": "POST", "url": "/v1/completions", "body": {"prompt": 3}})",
       "invalid_field"},
      {R"({"custom_id": "l", "method": "POST", "url": "/v1/completions", "body": {"prompt": []}})",
       "invalid_field"},
      {R"({"id": "m", "text": "simple line"})", "format_mismatch"},
      {R"({"body": {}})", "missing_field"},
      {"not json", "invalid_json"},
      {good, ""},
  };
  content.clear();
  for (auto& c : openai_cases)
    content += c.line + "\n\n";  // blank lines between: line numbers skip
  write_file(path("o.jsonl"), content);
  recs = read_records(path("o.jsonl"));
  ASSERT_EQ(recs.size(), openai_cases.size());
  for (size_t i = 0; i < recs.size(); ++i) {
    SCOPED_TRACE(openai_cases[i].line);
    EXPECT_EQ(recs[i].index, i);
    EXPECT_EQ(recs[i].line_number, 2 * i + 1);
    EXPECT_EQ(recs[i].error_code, openai_cases[i].code) << recs[i].error;
  }
  EXPECT_EQ(recs[4].custom_id, json("b"));  // kept for the error line
  EXPECT_TRUE(recs[1].custom_id.is_null());
}

TEST_F(JobIoTest, VeryLongLineIsSkippedWithoutStoppingTheReader) {
  std::string big(3 << 20, 'y');  // 3 MiB, over a 1 MiB limit, spans many read buffers
  write_file(path("in.jsonl"),
             "{\"text\": \"a\"}\n{\"text\": \"" + big + "\"}\n{\"text\": \"b\"}\n");
  InputReaderOptions o;
  o.max_line_bytes = 1 << 20;
  auto recs = read_records(path("in.jsonl"), o);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_TRUE(recs[0].ok());
  EXPECT_EQ(recs[1].error_code, "line_too_long");
  EXPECT_EQ(recs[1].line_number, 2u);
  EXPECT_EQ(recs[2].text, "b");
  EXPECT_EQ(recs[2].byte_offset, 14u + 10 + big.size() + 3);
}

// next_raw() + parse_raw_record() (how MPI ranks parse the lines rank 0 reads) give exactly
// next()'s records: numbering, blank lines, malformed and too-long lines.
TEST_F(JobIoTest, RawRecordsParseToTheSameRecords) {
  const std::string content = "{\"id\": 1, \"text\": \"a\", \"k\": [1.5, -0.0]}\n\n  \n{bad\n" +
                              std::string("{\"text\": \"") + std::string(300, 'x') +
                              "\"}\n{\"id\": \"z\", \"text\": \"\\u00e9t\u00e9\"}";
  write_file(path("in.jsonl"), content);
  InputReaderOptions o;
  o.max_line_bytes = 200;
  auto want = read_records(path("in.jsonl"), o);
  auto reader = InputReader::open(path("in.jsonl"), o);
  ASSERT_TRUE(reader.is_ok());
  std::vector<InputRecord> got;
  InputReader::RawRecord raw;
  while (true) {
    auto r = (*reader)->next_raw(&raw);
    ASSERT_TRUE(r.is_ok());
    if (!*r) break;
    InputRecord rec;
    parse_raw_record(raw, (*reader)->format(), (*reader)->max_line_bytes(), &rec);
    got.push_back(std::move(rec));
  }
  ASSERT_EQ(got.size(), 4u);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].index, want[i].index);
    EXPECT_EQ(got[i].line_number, want[i].line_number);
    EXPECT_EQ(got[i].byte_offset, want[i].byte_offset);
    EXPECT_EQ(got[i].error_code, want[i].error_code);
    EXPECT_EQ(got[i].id, want[i].id);
    EXPECT_EQ(got[i].text, want[i].text);
    EXPECT_EQ(got[i].extra, want[i].extra);
    EXPECT_EQ(format_output_line(got[i], RecordOutcome{}),
              format_output_line(want[i], RecordOutcome{}));
  }
  EXPECT_EQ(got[1].error_code, "invalid_json");
  EXPECT_EQ(got[2].error_code, "line_too_long");
  EXPECT_EQ(got[3].line_number, 6u);
}

// A record without an id is known by its 1-based input line, in its line and in its errors.
TEST_F(JobIoTest, RecordsWithoutIdCarryTheirLineNumber) {
  InputRecord r;
  parse_input_line(R"({"text": "t", "line": "input field", "zz": 1})", InputFormat::kSimple,
                   1 << 20, false, &r);
  r.index = 10;
  r.line_number = 12;
  ASSERT_TRUE(r.ok());
  RecordOutcome ok;
  ok.result = json{{"text", "x"}};
  EXPECT_EQ(format_output_line(r, ok),
            R"({"id":null,"line":12,"zz":1,"result":{"text":"x"},"error":null})");
  RecordOutcome bad;
  bad.error = RecordError{"context_overflow", "prompt is 9000 tokens"};
  const json j = json::parse(format_output_line(r, bad));
  EXPECT_TRUE(j["id"].is_null());
  EXPECT_EQ(j["line"], 12);
  EXPECT_EQ(j["error"]["code"], "context_overflow");
  EXPECT_EQ(j["error"]["message"], "line 12: prompt is 9000 tokens");
  EXPECT_EQ(j["error"]["line"], 12);

  InputRecord malformed;  // an input error line too
  parse_input_line(R"({"txt": "no text"})", InputFormat::kSimple, 1 << 20, false, &malformed);
  malformed.line_number = 3;
  ASSERT_FALSE(malformed.ok());
  const json m = json::parse(format_input_error_line(malformed));
  EXPECT_EQ(m["line"], 3);
  EXPECT_EQ(m["error"]["line"], 3);

  InputRecord with_id;  // an id: no "line", an input "line" field is copied as before
  parse_input_line(R"({"id": 0, "text": "t", "line": 5})", InputFormat::kSimple, 1 << 20, false,
                   &with_id);
  with_id.line_number = 7;
  EXPECT_EQ(format_output_line(with_id, ok),
            R"({"id":0,"line":5,"result":{"text":"x"},"error":null})");
}

TEST(ParamChanges, NamesTheChangedOptionsWithOldAndNewValues) {
  const json was = {{"temp", 0.7f},
                    {"max_tokens", 64},
                    {"prompt", "Review: {text}"},
                    {"model", "a.gguf"},
                    {"chat", false}};
  json now = was;
  now["temp"] = 0.9f;
  EXPECT_EQ(describe_param_changes(was.dump(), now.dump(), {}), "--temp 0.7; this run has 0.9");
  now["max_tokens"] = 32;
  now["model"] = "b.gguf";
  EXPECT_EQ(describe_param_changes(was.dump(), now.dump(), {{"model", "-m"}}),
            "--max-tokens 64, -m a.gguf, --temp 0.7; this run has --max-tokens 32, -m b.gguf, "
            "--temp 0.9");
  json added = was;
  added["schema"] = std::string(200, 's');
  const std::string d = describe_param_changes(was.dump(), added.dump(), {});
  EXPECT_EQ(d.rfind("--schema (unset); this run has sss", 0), 0u) << d;
  EXPECT_EQ(d.substr(d.size() - 3), "...");
  EXPECT_LT(d.size(), 100u) << d;
  json prompt = was;
  prompt["prompt"] = "Other";
  EXPECT_EQ(describe_param_changes(was.dump(), prompt.dump(), {}),
            "--prompt \"Review: {text}\"; this run has Other");
  EXPECT_EQ(describe_param_changes(was.dump(), was.dump(), {}), "");
  EXPECT_EQ(describe_param_changes("task=x", was.dump(), {}), "");
}

TEST_F(JobIoTest, ResumeWithChangedOptionsNamesThem) {
  write_file(path("in.jsonl"), "{\"text\": \"a\"}\n{\"text\": \"b\"}\n");
  const std::string out = path("out.jsonl");
  JobIdentity id = identity(path("in.jsonl"), json{{"temp", 0.7f}, {"top_k", 40}}.dump());
  {
    auto w = open_writer(out, id);
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->submit_result(0, "{\"id\":null}").is_ok());
  }
  JobIdentity changed = identity(path("in.jsonl"), json{{"temp", 0.9f}, {"top_k", 40}}.dump());
  auto r = OutputWriter::open(out, changed);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            out +
                " was written with --temp 0.7; this run has 0.9 (use --overwrite to start "
                "over, or the same options)");
  EXPECT_TRUE(OutputWriter::open(out, id).is_ok());  // the same options still resume
}

TEST_F(JobIoTest, SkipResumesAtTheRightRecord) {
  std::string content;
  for (int i = 0; i < 50; ++i) {
    content += "{\"id\": " + std::to_string(i) + ", \"text\": \"t\"}\n";
    if (i % 7 == 0) content += "\n  \n";
  }
  write_file(path("in.jsonl"), content);
  auto r = InputReader::open(path("in.jsonl"));
  ASSERT_TRUE(r.is_ok());
  auto skipped = (*r)->skip(20);
  ASSERT_TRUE(skipped.is_ok());
  EXPECT_EQ(*skipped, 20u);
  InputRecord rec;
  auto got = (*r)->next(&rec);
  ASSERT_TRUE(got.is_ok() && *got);
  EXPECT_EQ(rec.index, 20u);
  EXPECT_EQ(rec.id, json(20));
  skipped = (*r)->skip(100);
  ASSERT_TRUE(skipped.is_ok());
  EXPECT_EQ(*skipped, 29u);
  EXPECT_EQ((*r)->n_records_read(), 50u);
  EXPECT_EQ((*r)->bytes_consumed(), content.size());
  EXPECT_FALSE(*(*r)->next(&rec));
}

TEST_F(JobIoTest, OpenErrors) {
  auto r = InputReader::open(path("missing.jsonl"));
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  r = InputReader::open(dir_);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(count_input_records(path("missing.jsonl")).status().code(), StatusCode::kNotFound);
  write_file(path("empty.jsonl"), "");
  auto recs = read_records(path("empty.jsonl"));
  EXPECT_TRUE(recs.empty());
}

// ---------------------------------------------------------------------------------------------
// Output lines.

TEST_F(JobIoTest, SimpleOutputLineSchemas) {
  InputRecord r;
  parse_input_line(
      R"({"id": "x1", "text": "t", "label": "pos", "result": "clash", "error": 1, "n": 2})",
      InputFormat::kSimple, 1 << 20, false, &r);
  r.index = 3;
  r.line_number = 4;
  ASSERT_TRUE(r.ok());
  RecordOutcome ok;
  ok.result = json{{"sentiment", "positive"}};
  std::string line = format_output_line(r, ok);
  EXPECT_EQ(line,
            R"({"id":"x1","label":"pos","n":2,"result":{"sentiment":"positive"},"error":null})");
  json j = json::parse(line);
  EXPECT_EQ(j["id"], "x1");
  EXPECT_TRUE(j["error"].is_null());

  RecordOutcome bad;
  bad.error = RecordError{"context_overflow", "prompt is 9000 tokens; the context holds 4096"};
  j = json::parse(format_output_line(r, bad));
  EXPECT_TRUE(j["result"].is_null());
  EXPECT_EQ(j["error"]["code"], "context_overflow");
  EXPECT_EQ(j["error"]["message"], "prompt is 9000 tokens; the context holds 4096");
  EXPECT_FALSE(j["error"].contains("line"));

  InputRecord m;
  parse_input_line(R"({"id": 12, "note": "n"})", InputFormat::kSimple, 1 << 20, false, &m);
  m.line_number = 9;
  ASSERT_FALSE(m.ok());
  line = format_output_line(m, ok);  // a malformed record ignores the outcome
  EXPECT_EQ(line, format_input_error_line(m));
  j = json::parse(line);
  EXPECT_EQ(j["id"], 12);
  EXPECT_EQ(j["note"], "n");
  EXPECT_TRUE(j["result"].is_null());
  EXPECT_EQ(j["error"]["code"], "missing_field");
  EXPECT_EQ(j["error"]["line"], 9);

  // Invalid UTF-8 produced by a task is replaced, and the line stays valid JSON.
  RecordOutcome weird;
  weird.result = std::string("cut \xE2\x82");
  line = format_output_line(r, weird);
  j = json::parse(line);
  EXPECT_EQ(j["result"], "cut \xEF\xBF\xBD");
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST_F(JobIoTest, OpenAiOutputLineSchemas) {
  InputRecord r;
  parse_input_line(
      R"({"custom_id": "req-9", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "hi"}]}})",
      InputFormat::kOpenAiBatch, 1 << 20, false, &r);
  ASSERT_TRUE(r.ok());
  r.index = 41;
  RecordOutcome ok;
  ok.result = json{{"object", "chat.completion"}, {"choices", json::array()}};
  std::string line = format_output_line(r, ok);
  json j = json::parse(line);
  EXPECT_EQ(line.rfind("{\"id\":\"batch_req_41\",\"custom_id\":\"req-9\",\"response\":{", 0), 0u)
      << line;
  EXPECT_EQ(j["id"], "batch_req_41");
  EXPECT_EQ(j["custom_id"], "req-9");
  EXPECT_EQ(j["response"]["status_code"], 200);
  EXPECT_EQ(j["response"]["request_id"], "req_41");
  EXPECT_EQ(j["response"]["body"]["object"], "chat.completion");
  EXPECT_TRUE(j["error"].is_null());

  RecordOutcome bad;
  bad.error = RecordError{"internal", "boom"};
  j = json::parse(format_output_line(r, bad));
  EXPECT_EQ(j["custom_id"], "req-9");
  EXPECT_TRUE(j["response"].is_null());
  EXPECT_EQ(j["error"], json::parse(R"({"code": "internal", "message": "boom"})"));

  InputRecord m;
  parse_input_line("{oops", InputFormat::kOpenAiBatch, 1 << 20, false, &m);
  m.index = 2;
  m.line_number = 3;
  j = json::parse(format_output_line(m, ok));
  EXPECT_EQ(j["id"], "batch_req_2");
  EXPECT_TRUE(j["custom_id"].is_null());
  EXPECT_TRUE(j["response"].is_null());
  EXPECT_EQ(j["error"]["code"], "invalid_json");
  EXPECT_EQ(j["error"]["line"], 3);
}

// ---------------------------------------------------------------------------------------------
// OutputWriter.

std::string rec_line(uint64_t i) {
  return "{\"i\":" + std::to_string(i) + "}";
}

TEST_F(JobIoTest, InOrderBufferWithShuffledCompletion) {
  write_file(path("in.jsonl"), "{\"text\":\"a\"}\n");
  OutputWriterOptions o;
  o.sync_every_records = 7;
  auto w = open_writer(path("out.jsonl"), identity(path("in.jsonl")), o);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->n_done_at_open(), 0u);
  constexpr uint64_t kN = 300;
  std::vector<uint64_t> order(kN);
  std::iota(order.begin(), order.end(), 0);
  // Shuffle within windows of 16 (a bounded number of records in flight).
  std::mt19937 rng(7);
  for (size_t b = 0; b < kN; b += 16)
    std::shuffle(order.begin() + b, order.begin() + std::min<size_t>(b + 16, kN), rng);
  size_t max_buffered = 0;
  for (uint64_t i : order) {
    ASSERT_TRUE(w->submit_result(i, rec_line(i)).is_ok());
    max_buffered = std::max(max_buffered, w->n_buffered());
    EXPECT_LE(w->n_durable(), w->n_written());
    EXPECT_LE(w->n_written(), w->next_index());
  }
  EXPECT_LT(max_buffered, 16u);
  EXPECT_EQ(w->n_buffered(), 0u);
  EXPECT_EQ(w->bytes_buffered(), 0u);
  EXPECT_EQ(w->next_index(), kN);
  EXPECT_EQ(w->submit_result(5, rec_line(5)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w->submit_result(kN + 2, "{\"a\":\n1}").code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(w->submit_result(kN + 2, rec_line(kN + 2)).is_ok());
  EXPECT_EQ(w->submit_result(kN + 2, rec_line(kN + 2)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w->n_buffered(), 1u);
  ASSERT_TRUE(w->flush_durable().is_ok());
  EXPECT_EQ(w->n_durable(), kN);
  w.reset();  // the buffered kN+2 waits for kN and kN+1: not written
  auto lines = lines_of(read_all(path("out.jsonl")));
  ASSERT_EQ(lines.size(), kN);
  for (uint64_t i = 0; i < kN; ++i) EXPECT_EQ(lines[i], rec_line(i));
  json side = json::parse(read_all(job_sidecar_path(path("out.jsonl"))));
  EXPECT_EQ(side["n_done"], kN);
}

TEST_F(JobIoTest, DurableBatchesByCountAndByTime) {
  write_file(path("in.jsonl"), "{\"text\":\"a\"}\n");
  double t = 100.0;
  OutputWriterOptions o;
  o.sync_every_records = 4;
  o.sync_every_seconds = 2.0;
  o.clock = [&t] { return t; };
  auto w = open_writer(path("out.jsonl"), identity(path("in.jsonl")), o);
  ASSERT_TRUE(w);
  for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE(w->submit_result(i, rec_line(i)).is_ok());
  EXPECT_EQ(w->n_written(), 0u);
  EXPECT_EQ(read_all(path("out.jsonl")), "");
  ASSERT_TRUE(w->submit_result(3, rec_line(3)).is_ok());
  EXPECT_EQ(w->n_durable(), 4u);
  EXPECT_EQ(lines_of(read_all(path("out.jsonl"))).size(), 4u);
  ASSERT_TRUE(w->submit_result(4, rec_line(4)).is_ok());
  t += 1.5;
  ASSERT_TRUE(w->tick().is_ok());
  EXPECT_EQ(w->n_durable(), 4u);
  t += 0.6;  // the pending line is now 2.1 s old
  ASSERT_TRUE(w->tick().is_ok());
  EXPECT_EQ(w->n_durable(), 5u);
  // By time on submit too.
  ASSERT_TRUE(w->submit_result(5, rec_line(5)).is_ok());
  t += 3;
  ASSERT_TRUE(w->submit_result(6, rec_line(6)).is_ok());
  EXPECT_EQ(w->n_durable(), 7u);
  // The destructor flushes what is contiguous.
  ASSERT_TRUE(w->submit_result(7, rec_line(7)).is_ok());
  w.reset();
  EXPECT_EQ(lines_of(read_all(path("out.jsonl"))).size(), 8u);
}

TEST_F(JobIoTest, ResumeCutsPartialAndDamagedLines) {
  write_file(path("in.jsonl"), "{\"text\":\"a\"}\n");
  JobIdentity id = identity(path("in.jsonl"));
  std::string out = path("out.jsonl");
  {
    auto w = open_writer(out, id);
    ASSERT_TRUE(w);
    for (uint64_t i = 0; i < 10; ++i) ASSERT_TRUE(w->submit_result(i, rec_line(i)).is_ok());
  }
  const std::string ten = read_all(out);
  ASSERT_EQ(lines_of(ten).size(), 10u);

  // 1. A crash mid-write: a trailing partial line.
  append_file(out, "{\"i\":10,\"partial");
  {
    auto w = open_writer(out, id);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->n_done_at_open(), 10u);
    EXPECT_EQ(w->next_index(), 10u);
    EXPECT_EQ(w->bytes_truncated_at_open(), 16u);
    EXPECT_FALSE(w->complete_at_open());
  }
  EXPECT_EQ(read_all(out), ten);

  // 2. The file cut in the middle of line 7: six complete lines remain.
  size_t cut = 0;
  for (int k = 0; k < 6; ++k) cut = ten.find('\n', cut) + 1;
  write_file(out, ten.substr(0, cut + 3));
  {
    auto w = open_writer(out, id);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->n_done_at_open(), 6u);
    // The job goes on from record 6, in any order.
    for (uint64_t i : {8, 6, 9, 7}) ASSERT_TRUE(w->submit_result(i, rec_line(i)).is_ok());
  }
  EXPECT_EQ(read_all(out), ten);

  // 3. A complete but damaged line (not JSON; e.g. zeros after a crash): cut from there.
  std::string damaged = ten.substr(0, cut) + std::string(5, '\0') + "\n" + ten.substr(cut);
  write_file(out, damaged);
  {
    auto w = open_writer(out, id);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->n_done_at_open(), 6u);
  }
  EXPECT_EQ(read_all(out), ten.substr(0, cut));

  // 4. Empty line in the output is damage too.
  write_file(out, ten.substr(0, cut) + "\n" + ten.substr(cut));
  {
    auto w = open_writer(out, id);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->n_done_at_open(), 6u);
  }
}

TEST_F(JobIoTest, SidecarRefusalsOverwriteAndCompletion) {
  write_file(path("in.jsonl"), "{\"text\":\"a\"}\n{\"text\":\"b\"}\n");
  std::string out = path("out.jsonl");
  JobIdentity id = identity(path("in.jsonl"), "task=classify;temp=0");
  {
    auto w = open_writer(out, id);
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->submit_result(0, rec_line(0)).is_ok());
  }
  // Different parameters.
  auto r = OutputWriter::open(out, identity(path("in.jsonl"), "task=classify;temp=1"));
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("task parameters"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("--overwrite"), std::string::npos);
  // Different input content, same size.
  write_file(path("in2.jsonl"), "{\"text\":\"A\"}\n{\"text\":\"b\"}\n");
  r = OutputWriter::open(out, identity(path("in2.jsonl"), "task=classify;temp=0"));
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("input content"), std::string::npos) << r.status().message();
  // Appended input.
  write_file(path("in3.jsonl"), "{\"text\":\"a\"}\n{\"text\":\"b\"}\n{\"text\":\"c\"}\n");
  r = OutputWriter::open(out, identity(path("in3.jsonl"), "task=classify;temp=0"));
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("input size"), std::string::npos);
  // The same content under another path resumes.
  write_file(path("copy.jsonl"), read_all(path("in.jsonl")));
  {
    auto w = open_writer(out, identity(path("copy.jsonl"), "task=classify;temp=0"));
    ASSERT_TRUE(w);
    EXPECT_EQ(w->n_done_at_open(), 1u);
  }
  // A second writer on the same output is refused while the first holds it.
  {
    auto w = open_writer(out, id);
    ASSERT_TRUE(w);
    auto again = OutputWriter::open(out, id);
    ASSERT_FALSE(again.is_ok());
    EXPECT_NE(again.status().message().find("another process"), std::string::npos);
    ASSERT_TRUE(w->submit_result(1, rec_line(1)).is_ok());
    EXPECT_EQ(w->mark_complete(3).code(), StatusCode::kInternal);
    ASSERT_TRUE(w->mark_complete(2).is_ok());
  }
  {
    auto w = open_writer(out, id);
    ASSERT_TRUE(w);
    EXPECT_TRUE(w->complete_at_open());
    EXPECT_EQ(w->n_done_at_open(), 2u);
  }
  // Overwrite starts fresh, even with other parameters.
  OutputWriterOptions ow;
  ow.overwrite = true;
  JobIdentity other = identity(path("in.jsonl"), "task=summarize");
  {
    auto w = open_writer(out, other, ow);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->n_done_at_open(), 0u);
    EXPECT_FALSE(w->complete_at_open());
    EXPECT_EQ(read_all(out), "");
  }
  {
    auto w = open_writer(out, other);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->n_done_at_open(), 0u);
  }
  EXPECT_TRUE(OutputWriter::open(out, id).is_ok());  // empty output: nothing to protect
  {
    auto w = open_writer(out, other);
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->submit_result(0, rec_line(0)).is_ok());
  }
  EXPECT_FALSE(OutputWriter::open(out, id).is_ok());

  // A foreign output file (no sidecar) is refused; an empty one is taken.
  write_file(path("foreign.jsonl"), "{\"mine\":1}\n");
  r = OutputWriter::open(path("foreign.jsonl"), id);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  write_file(path("empty.jsonl"), "");
  EXPECT_TRUE(OutputWriter::open(path("empty.jsonl"), id).is_ok());
  // A damaged sidecar.
  write_file(job_sidecar_path(out), "{\"format\": \"llmthreads-job\", ");
  r = OutputWriter::open(out, other);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  // Output path = input path.
  r = OutputWriter::open(path("in.jsonl"), id, ow);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(read_all(path("in.jsonl")), "{\"text\":\"a\"}\n{\"text\":\"b\"}\n");
}

TEST_F(JobIoTest, EndToEndReadWriteResume) {
  std::string content;
  for (int i = 0; i < 40; ++i) {
    if (i % 9 == 4) {
      content += "{\"id\": " + std::to_string(i) + "}\n";  // malformed
    } else {
      content +=
          "{\"id\": " + std::to_string(i) + ", \"text\": \"doc " + std::to_string(i) + "\"}\n";
    }
  }
  write_file(path("in.jsonl"), content);
  std::string out = path("out.jsonl");
  JobIdentity id = identity(path("in.jsonl"), "p");
  auto process = [&](uint64_t stop_after) {
    auto w = open_writer(out, id);
    ASSERT_TRUE(w);
    auto reader = InputReader::open(path("in.jsonl"));
    ASSERT_TRUE(reader.is_ok());
    auto skipped = (*reader)->skip(w->n_done_at_open());
    ASSERT_TRUE(skipped.is_ok());
    InputRecord rec;
    uint64_t n = 0;
    while (n < stop_after && *(*reader)->next(&rec)) {
      RecordOutcome o;
      o.result = "len " + std::to_string(rec.text.size());
      ASSERT_TRUE(w->submit_result(rec.index, format_output_line(rec, o)).is_ok());
      ++n;
    }
  };
  process(15);
  append_file(out, "{\"id\":15,\"res");  // crash mid-line
  process(1000);
  auto lines = lines_of(read_all(out));
  ASSERT_EQ(lines.size(), 40u);
  for (int i = 0; i < 40; ++i) {
    json j = json::parse(lines[i]);
    EXPECT_EQ(j["id"], i);
    EXPECT_EQ(j["error"].is_null(), i % 9 != 4);
  }
}

// A child process writes records with the OutputWriter and is SIGKILLed mid-way; resuming gives
// every record exactly once, in order.
TEST_F(JobIoTest, SigkillMidJobThenResumeIsExactlyOnce) {
  write_file(path("in.jsonl"), "{\"text\":\"a\"}\n");
  JobIdentity id = identity(path("in.jsonl"), "kill");
  std::string out = path("out.jsonl");
  constexpr uint64_t kN = 40000;
  auto line_of = [](uint64_t i) {
    return "{\"i\":" + std::to_string(i) + ",\"pad\":\"" + std::string(40 + i % 23, 'p') + "\"}";
  };

  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    OutputWriterOptions o;
    o.sync_every_records = 5;
    auto r = OutputWriter::open(out, id, o);
    if (!r.is_ok()) ::_exit(2);
    for (uint64_t b = 0; b < kN; b += 8) {
      for (uint64_t k = 8; k-- > 0;) {  // each window of 8 completes in reverse
        if (b + k < kN && !(*r)->submit_result(b + k, line_of(b + k)).is_ok()) ::_exit(3);
      }
    }
    ::_exit(0);
  }
  // Kill once some output exists.
  for (int k = 0; k < 20000; ++k) {
    struct stat st {};
    if (::stat(out.c_str(), &st) == 0 && st.st_size > 64 * 1024) break;
    ::usleep(100);
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0)) << status;

  auto w = open_writer(out, id);
  ASSERT_TRUE(w);
  uint64_t done = w->n_done_at_open();
  EXPECT_GT(done, 0u);
  std::printf("killed child after %llu of %llu records were durable (%s)\n",
              static_cast<unsigned long long>(done), static_cast<unsigned long long>(kN),
              WIFSIGNALED(status) ? "SIGKILL" : "child had finished");
  {
    auto lines = lines_of(read_all(out));
    ASSERT_EQ(lines.size(), done);
    for (uint64_t i = 0; i < done; ++i) ASSERT_EQ(lines[i], line_of(i)) << i;
  }
  for (uint64_t i = done; i < kN; ++i) ASSERT_TRUE(w->submit_result(i, line_of(i)).is_ok());
  ASSERT_TRUE(w->mark_complete(kN).is_ok());
  w.reset();
  auto lines = lines_of(read_all(out));
  ASSERT_EQ(lines.size(), kN);
  for (uint64_t i = 0; i < kN; ++i) ASSERT_EQ(lines[i], line_of(i)) << i;
}

// The shipped examples read cleanly.
TEST_F(JobIoTest, ExampleFilesAreValid) {
  // The source tree's examples (committed files: absent is a failure, not a skip).
  const fs::path examples = fs::path(LLMT_SOURCE_DIR) / "examples";
  ASSERT_TRUE(fs::exists(examples / "reviews.jsonl")) << "no examples folder at " << examples;
  InputFormat fmt = InputFormat::kAuto;
  auto reviews = read_records((examples / "reviews.jsonl").string(), {}, &fmt);
  EXPECT_EQ(fmt, InputFormat::kSimple);
  ASSERT_EQ(reviews.size(), 300u);
  for (size_t i = 0; i < reviews.size(); ++i) {
    EXPECT_TRUE(reviews[i].ok()) << reviews[i].error;
    char want[24];
    std::snprintf(want, sizeof want, "r%04zu", i + 1);
    EXPECT_EQ(reviews[i].id, json(want));
    EXPECT_TRUE(reviews[i].extra.contains("label"));
  }
  auto docs = read_records((examples / "documents.jsonl").string());
  ASSERT_EQ(docs.size(), 5u);
  for (auto& d : docs) {
    EXPECT_TRUE(d.ok()) << d.error;
    EXPECT_GT(d.text.size(), 3000u);
  }
  for (const char* p : {"prompts/classify-sentiment.txt", "prompts/summarize.txt"}) {
    std::string text = read_all((examples / p).string());
    EXPECT_NE(text.find("{text}"), std::string::npos) << p;
  }
}

// ---------------------------------------------------------------------------------------------
// Progress.

TEST(ProgressFormat, CompactNumbersAndDurations) {
  EXPECT_EQ(format_compact_number(0), "0.0");
  EXPECT_EQ(format_compact_number(12.34), "12.3");
  EXPECT_EQ(format_compact_number(99.94), "99.9");
  EXPECT_EQ(format_compact_number(99.96), "100");
  EXPECT_EQ(format_compact_number(950), "950");
  EXPECT_EQ(format_compact_number(999.4), "999");
  EXPECT_EQ(format_compact_number(999.6), "1.0k");
  EXPECT_EQ(format_compact_number(1500), "1.5k");
  EXPECT_EQ(format_compact_number(12345), "12k");
  EXPECT_EQ(format_compact_number(2.3e6), "2.3M");
  EXPECT_EQ(format_compact_number(1.2e9), "1.2G");
  EXPECT_EQ(format_compact_number(-5), "0.0");
  EXPECT_EQ(format_compact_number(std::nan("")), "0.0");

  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_EQ(format_duration(44.2), "0:45");
  EXPECT_EQ(format_duration(723), "12:03");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-1), "--:--");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::infinity()), "--:--");
}

TEST(ProgressFormat, BarAndPlainLines) {
  ProgressSnapshot s;
  s.n_done = 450;
  s.n_total = 1000;
  s.elapsed_s = 450 / 12.3;
  s.n_tokens = 54878;
  EXPECT_EQ(format_progress_bar(s),
            "[=========>          ] 450/1000 docs  12.3 docs/s  1.5k tok/s  ETA 0:45");
  EXPECT_EQ(format_progress_line(s),
            "progress: 450/1000 docs (45.0%)  12.3 docs/s  1.5k tok/s  elapsed 0:37  ETA 0:45");

  // MPI runs: the ranks alive, with a shorter bar.
  ProgressSnapshot ranked = s;
  ranked.n_ranks = 3;
  ranked.n_ranks_alive = 2;
  EXPECT_EQ(format_progress_bar(ranked),
            "[=======>         ] 450/1000 docs  12.3 docs/s  1.5k tok/s  2/3 ranks  ETA 0:45");
  EXPECT_LE(format_progress_bar(ranked).size(), 79u);
  EXPECT_EQ(format_progress_line(ranked),
            "progress: 450/1000 docs (45.0%)  12.3 docs/s  1.5k tok/s  2/3 ranks  elapsed 0:37  "
            "ETA 0:45");

  ProgressSnapshot start;
  start.n_total = 10;
  EXPECT_EQ(format_progress_bar(start),
            "[>                   ] 0/10 docs  0.0 docs/s  0.0 tok/s  ETA --:--");

  ProgressSnapshot done;
  done.n_done = done.n_total = 10;
  done.elapsed_s = 5;
  done.n_tokens = 1000;
  EXPECT_EQ(format_progress_bar(done),
            "[====================] 10/10 docs  2.0 docs/s  200 tok/s  ETA 0:00");

  ProgressSnapshot resumed;  // rates count this run only
  resumed.n_done = 600;
  resumed.n_total = 1000;
  resumed.n_done_at_start = 500;
  resumed.elapsed_s = 10;
  resumed.n_tokens = 25000;
  EXPECT_EQ(format_progress_bar(resumed),
            "[============>       ] 600/1000 docs  10.0 docs/s  2.5k tok/s  ETA 0:40");

  ProgressSnapshot unknown;
  unknown.n_done = 450;
  unknown.elapsed_s = 3725;
  EXPECT_EQ(format_progress_bar(unknown), "450 docs  0.1 docs/s  0.0 tok/s  1:02:05");
  EXPECT_EQ(format_progress_line(unknown),
            "progress: 450 docs  0.1 docs/s  0.0 tok/s  elapsed 1:02:05");

  ProgressSnapshot huge;
  huge.n_done = std::numeric_limits<uint64_t>::max() / 3;
  huge.n_total = std::numeric_limits<uint64_t>::max();
  huge.elapsed_s = 1;
  huge.n_tokens = std::numeric_limits<uint64_t>::max();
  std::string bar = format_progress_bar(huge);
  EXPECT_LE(bar.size(), 79u) << bar;
  EXPECT_NE(bar.find(std::to_string(huge.n_done)), std::string::npos) << bar;
  for (uint64_t d : {0, 1, 9999, 123456}) {
    ProgressSnapshot m;
    m.n_done = d;
    m.n_total = 1000000;
    m.elapsed_s = 12345;
    m.n_tokens = 987654321;
    EXPECT_LE(format_progress_bar(m).size(), 79u);
  }
}

// The bar fits the terminal (at most columns - 1 characters, so it never wraps and "\r" redraws
// it in place), keeping the most useful numbers.
TEST(ProgressFormat, BarFitsTheTerminalWidth) {
  ProgressSnapshot s;
  s.n_done = 450;
  s.n_total = 1000;
  s.elapsed_s = 450 / 12.3;
  s.n_tokens = 54878;
  EXPECT_EQ(format_progress_bar(s, 120),
            "[==================>                     ] 450/1000 docs  12.3 docs/s  1.5k tok/s  "
            "ETA 0:45");
  EXPECT_EQ(format_progress_bar(s, 80), format_progress_bar(s));
  EXPECT_EQ(format_progress_bar(s, 50), "[====>     ] 450/1000 docs  12.3 docs/s  ETA 0:45");
  EXPECT_EQ(format_progress_bar(s, 40), "450/1000 docs  12.3 docs/s  ETA 0:45");
  EXPECT_EQ(format_progress_bar(s, 20), "450/1000 docs");
  EXPECT_EQ(format_progress_bar(s, 10), "450/1000 ");
  for (size_t cols : {1, 2, 10, 20, 33, 40, 60, 79, 80, 81, 120, 300}) {
    EXPECT_LE(format_progress_bar(s, cols).size(), std::max<size_t>(cols, 2) - 1) << cols;
    ProgressSnapshot unknown = s;
    unknown.n_total = 0;
    EXPECT_LE(format_progress_bar(unknown, cols).size(), std::max<size_t>(cols, 2) - 1) << cols;
  }
  ProgressSnapshot unknown = s;
  unknown.n_total = 0;
  EXPECT_EQ(format_progress_bar(unknown, 40), "450 docs  12.3 docs/s  1.5k tok/s  0:37");
  EXPECT_EQ(format_progress_bar(unknown, 20), "450 docs  0:37");
  EXPECT_EQ(format_progress_bar(unknown, 12), "450 docs");
}

TEST(ProgressMeterTest, TtyRedrawsInPlaceWithinTheTerminalWidth) {
  double t = 0;
  ProgressMeterOptions o;
  o.tty = true;
  o.n_total = 1000;
  o.clock = [&] { return t; };
  size_t cols = 120;
  o.columns = [&] { return cols; };
  ProgressMeter m(o);
  t = 10;
  const std::string wide = m.update(450, 50000);
  ASSERT_GE(wide.size(), 4u);
  EXPECT_EQ(wide.front(), '\r');
  EXPECT_EQ(wide.substr(wide.size() - 3), "\x1b[K");
  EXPECT_GT(wide.size() - 4, 79u);  // uses the width
  EXPECT_LE(wide.size() - 4, 119u);
  cols = 30;  // the terminal was narrowed: the next redraw follows
  t = 20;
  const std::string narrow = m.update(500, 60000);
  EXPECT_EQ(narrow.front(), '\r');
  EXPECT_EQ(narrow.substr(narrow.size() - 3), "\x1b[K");
  EXPECT_LE(narrow.size() - 4, 29u) << narrow;
  EXPECT_EQ(narrow.find('\n'), std::string::npos);
}

TEST(ProgressFormat, TerminalColumnsFallsBackToColumnsThen80) {
  const int fd = ::open("/dev/null", O_WRONLY);  // not a terminal
  ASSERT_GE(fd, 0);
  ::setenv("COLUMNS", "57", 1);
  EXPECT_EQ(terminal_columns(fd), 57u);
  ::setenv("COLUMNS", "junk", 1);
  EXPECT_EQ(terminal_columns(fd), 80u);
  ::unsetenv("COLUMNS");
  EXPECT_EQ(terminal_columns(fd), 80u);
  ::close(fd);
}

TEST(ProgressMeterTest, PrintIntervals) {
  double t = 1000;
  ProgressMeterOptions o;
  o.tty = true;
  o.tty_interval_s = 0.2;
  o.n_total = 100;
  o.clock = [&t] { return t; };
  ProgressMeter tty(o);
  std::string s = tty.update(0, 0);
  EXPECT_EQ(s, "\r[>                   ] 0/100 docs  0.0 docs/s  0.0 tok/s  ETA --:--\x1b[K");
  t += 0.1;
  EXPECT_EQ(tty.update(1, 10), "");
  t += 0.15;
  EXPECT_FALSE(tty.update(2, 20).empty());
  t += 0.1;
  EXPECT_EQ(tty.update(3, 30), "");
  std::string fin = tty.finish(100, 1000);
  EXPECT_EQ(fin.back(), '\n');
  EXPECT_EQ(fin.front(), '\r');

  t = 0;
  o.tty = false;
  o.plain_interval_s = 10;
  ProgressMeter plain(o);
  EXPECT_EQ(plain.update(0, 0), "");
  t = 5;
  EXPECT_EQ(plain.update(25, 500), "");
  t = 10;
  EXPECT_EQ(plain.update(50, 1000),
            "progress: 50/100 docs (50.0%)  5.0 docs/s  100 tok/s  elapsed 0:10  ETA 0:10\n");
  t = 15;
  EXPECT_EQ(plain.update(60, 1000), "");
  t = 20.5;
  EXPECT_FALSE(plain.update(70, 1000).empty());
  t = 21;
  EXPECT_EQ(plain.finish(100, 2000),
            "progress: 100/100 docs (100.0%)  4.8 docs/s  95.2 tok/s  elapsed 0:21  ETA 0:00\n");
  ProgressSnapshot snap = plain.snapshot(100, 2000);
  EXPECT_EQ(snap.elapsed_s, 21);
}

}  // namespace
}  // namespace llmt::tasks
