// libFuzzer target: the GGUF parser on arbitrary bytes, then every typed getter on what parsed,
// then a tokenizer built from its metadata. Any crash, leak, UB or sanitizer report is a bug:
// the contract is that malformed input yields a Status, never undefined behaviour.
#include <cstddef>
#include <cstdint>
#include <span>

#include "llmthreads/gguf.h"
#include "llmthreads/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  llmt::GgufOpenOptions options;
  // Small limits so a fuzzed count cannot make a single input allocate gigabytes.
  options.max_array_elems = 1u << 16;
  options.max_tensors = 1u << 12;
  options.max_kvs = 1u << 12;
  auto file = llmt::GgufFile::from_memory(std::span<const uint8_t>(data, size), "<fuzz>", options);
  if (!file.is_ok()) return 0;
  const llmt::GgufFile& g = **file;
  for (const auto& kv : g.kvs()) {
    (void)g.get_string(kv.key);
    (void)g.get_int(kv.key);
    (void)g.get_float(kv.key);
    (void)g.get_bool(kv.key);
    (void)g.get_string_array(kv.key);
    (void)g.get_float_array(kv.key);
    (void)g.get_int_array(kv.key);
  }
  for (const auto& t : g.tensors()) (void)g.find_tensor(t.name);
  auto tok = llmt::Tokenizer::from_gguf(g);
  if (tok.is_ok()) {
    auto ids = (*tok)->encode("Hello world \xE4\xB8\xAD <s>",
                              {.add_special = true, .parse_special = true});
    (void)(*tok)->decode(ids);
  }
  return 0;
}
