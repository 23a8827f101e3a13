// libFuzzer target: the GBNF parser, the JSON Schema -> GBNF compiler and the token matcher
// (src/sampling/grammar*.cpp, json-schema.cpp, json-validate.cpp). Input layout: byte 0 picks the
// mode (even: the text is GBNF; odd: the text is a JSON Schema, compiled to GBNF first); the
// bytes after it up to the first NUL are the text, the bytes after the NUL pick tokens to feed
// the matcher over a small fixed vocabulary (every single byte, a few multi-byte pieces, an EOG).
// The contract checked: any text yields a grammar or an error Status (never a crash, a hang or
// UB); a schema that compiles gives GBNF that parses; the matcher's mask, is_allowed() and
// accept() agree; a rejected token changes nothing; and after the accepted tokens, can_end()
// says the same as Grammar::matches() on their bytes.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "llmthreads/grammar.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz-grammar: %s\n", what);
  std::abort();
}

// Built once per process; immutable afterwards.
const std::shared_ptr<const llmt::TokenVocab>& vocab() {
  static const std::shared_ptr<const llmt::TokenVocab> v = [] {
    std::vector<std::string> pieces;
    for (int b = 0; b < 256; ++b) pieces.emplace_back(1, static_cast<char>(b));
    for (const char* p : {"{\"", "\":", "\",", "true", "false", "null", "  ", "\n", "ab", "12",
                          "\xE4\xB8\xAD", "\xF0\x9F\x98\x80", "\"}", "[1", "-0.5e+3"}) {
      pieces.emplace_back(p);
    }
    pieces.emplace_back("");  // the EOG token's piece
    const int32_t eog = static_cast<int32_t>(pieces.size()) - 1;
    return llmt::TokenVocab::from_pieces(std::move(pieces), {eog});
  }();
  return v;
}

void check_not_internal(const llmt::Status& st) {
  if (st.code() == llmt::StatusCode::kInternal) fail(st.message().c_str());
}

// Feeds the tokens that `picks` selects and checks the matcher's invariants on the way.
void walk(const std::shared_ptr<const llmt::Grammar>& g, std::string_view picks) {
  auto m = llmt::GrammarMatcher::create(g, vocab());
  if (!m.is_ok()) return;
  const int32_t n_vocab = vocab()->n_vocab();
  std::string accepted;
  for (size_t i = 0; i < picks.size() && i < 128; ++i) {
    auto mask = m->allowed();
    if (!mask.is_ok()) {
      check_not_internal(mask.status());
      break;
    }
    const std::vector<uint64_t> bits(mask->begin(), mask->end());
    if (m->can_end() &&
        (bits[static_cast<size_t>(n_vocab - 1) / 64] >> ((n_vocab - 1) % 64) & 1) == 0)
      fail("the grammar can end but EOG is not allowed");
    // Two pick bytes for the multi-byte pieces, one otherwise.
    int32_t tok = static_cast<uint8_t>(picks[i]);
    if (tok == 0xFF && i + 1 < picks.size())
      tok = 256 + static_cast<uint8_t>(picks[++i]) % (n_vocab - 256);
    const bool in_mask = (bits[static_cast<size_t>(tok) / 64] >> (tok % 64) & 1) != 0;
    if (m->is_allowed(tok) != in_mask) fail("is_allowed() disagrees with allowed()");
    const int64_t before = m->n_bytes_accepted();
    const llmt::Status st = m->accept(tok);
    if (st.is_ok() != in_mask) fail("accept() disagrees with allowed()");
    if (!st.is_ok()) {
      if (m->n_bytes_accepted() != before) fail("a rejected token changed the matcher");
      continue;
    }
    if (vocab()->is_eog(tok)) {
      if (!m->is_finished()) fail("accepted EOG but not finished");
      break;
    }
    accepted += vocab()->piece(tok);
  }
  if (!m->is_finished() && m->can_end() != g->matches(accepted))
    fail("can_end() disagrees with matches() on the accepted bytes");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool schema = (data[0] & 1) != 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  const size_t nul = input.find('\0');
  const std::string_view text = input.substr(0, nul);
  const std::string_view picks =
      nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);

  std::string gbnf(text);
  if (schema) {
    auto compiled = llmt::json_schema_to_gbnf(text);
    (void)llmt::validate_json(picks, text);
    if (!compiled.is_ok()) {
      check_not_internal(compiled.status());
      return 0;
    }
    gbnf = std::move(compiled).value();
  }
  auto g = llmt::Grammar::parse(gbnf);
  if (!g.is_ok()) {
    check_not_internal(g.status());
    if (schema) fail("a compiled JSON Schema gave GBNF that does not parse");
    return 0;
  }
  (void)(*g)->n_rules();
  walk(*g, picks);
  return 0;
}
