// libFuzzer target: the batch job's JSONL reader (tools/common/job-io) on arbitrary file contents,
// in each input format. The bytes are put in a memfd so the reader opens a real regular file (its
// contract) without touching the disk. The contract checked: every record is either ok() with a
// non-empty text / a valid body, or carries an error code; indices and line numbers increase.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/job-io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  int fd = memfd_create("fuzz-jsonl", 0);
  if (fd < 0) return 0;
  size_t off = 1;
  while (off < size) {
    ssize_t n = write(fd, data + off, size - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  llmt::tasks::InputReaderOptions opt;
  opt.max_line_bytes = 4096;
  const llmt::tasks::InputFormat formats[] = {llmt::tasks::InputFormat::kAuto,
                                              llmt::tasks::InputFormat::kSimple,
                                              llmt::tasks::InputFormat::kOpenAiBatch};
  opt.format = formats[data[0] % 3];
  auto reader = llmt::tasks::InputReader::open(path, opt);
  if (reader.is_ok()) {
    llmt::tasks::InputRecord rec;
    uint64_t last_index = 0, last_line = 0;
    bool first = true;
    for (int i = 0; i < 100000; ++i) {
      auto more = (*reader)->next(&rec);
      if (!more.is_ok() || !*more) break;
      if (!first && (rec.index != last_index + 1 || rec.line_number <= last_line)) {
        std::fprintf(stderr, "fuzz-jsonl: record order broken\n");
        std::abort();
      }
      if (rec.ok() && rec.format == llmt::tasks::InputFormat::kSimple && rec.text.empty()) {
        std::fprintf(stderr, "fuzz-jsonl: ok record with empty text\n");
        std::abort();
      }
      first = false;
      last_index = rec.index;
      last_line = rec.line_number;
    }
  }
  close(fd);
  return 0;
}
