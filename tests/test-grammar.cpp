// Constrained decoding: the GBNF parser (sentences in and out, errors with positions), the token
// mask against a brute-force check, EOG and multi-byte UTF-8 across tokens, unsatisfiable
// grammars, JSON Schema -> GBNF on 30+ schemas (instances accepted and rejected by both the
// grammar and the validator), unsupported keywords, and every output sampled through the engine
// at temperature 1.5 on stories260K and a random-weight Llama 3 parsing and validating.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "llmthreads/engine.h"
#include "llmthreads/grammar.h"
#include "llmthreads/sampling.h"
#include "test-util.h"

namespace llmt {
namespace {

std::shared_ptr<const Grammar> compile(const std::string& gbnf) {
  auto g = Grammar::parse(gbnf);
  EXPECT_TRUE(g.is_ok()) << g.status().to_string() << "\n" << gbnf;
  return g.is_ok() ? *g : nullptr;
}

TEST(Gbnf, SentencesInAndOut) {
  struct Case {
    const char* gbnf;
    std::vector<std::string> yes, no;
  };
  const std::vector<Case> cases = {
      {R"(root ::= "abc")", {"abc"}, {"", "ab", "abcd", "abd"}},
      {R"(root ::= "a" | "bc" | "")", {"a", "bc", ""}, {"b", "abc"}},
      {R"(root ::= [a-c]+ [^x-z]?)", {"a", "abc", "cab!", "aaaw"}, {"", "x", "abx", "ab!!"}},
      {R"(root ::= "x"{2,4})", {"xx", "xxx", "xxxx"}, {"x", "xxxxx"}},
      {R"(root ::= "x"{3})", {"xxx"}, {"xx", "xxxx"}},
      {R"(root ::= "ab"{2,})", {"abab", "ababab"}, {"ab", "aba"}},
      {R"(root ::= ("a" "b"?)* "c")", {"c", "ac", "abac", "aac"}, {"bc", "a", "abbc"}},
      {"# comment\nroot ::= a b # trailing\na ::= \"1\"\nb ::=\n  \"2\" |\n  \"3\"\n",
       {"12", "13"},
       {"1", "23"}},
      {R"(root ::= "\x41\u00e9\n\t\"\\" [\]\-])",
       {"A\xC3\xA9\n\t\"\\]", "A\xC3\xA9\n\t\"\\-"},
       {"A"}},
      {R"(root ::= [\u4e00-\u9fff]{1,2} "!")",
       {"\xE4\xB8\x80!", "\xE4\xB8\x80\xE9\xBE\xA5!"},
       {"!", "a!"}},
      {R"(root ::= . . )", {"ab", "\xF0\x9F\x98\x80x"}, {"a", "abc"}},
      {R"(root ::= "[" (item ("," item)*)? "]"
          item ::= [0-9]+ | root)",
       {"[]", "[1]", "[1,[2,[]],3]"},
       {"[", "[1,]", "[,]"}},
      {R"(root ::= [^"\\]* )", {"", "abc d", "\xC3\xA9"}, {"\"", "a\\"}},
  };
  for (const Case& c : cases) {
    auto g = compile(c.gbnf);
    ASSERT_TRUE(g);
    for (const auto& s : c.yes) EXPECT_TRUE(g->matches(s)) << c.gbnf << " should match " << s;
    for (const auto& s : c.no) EXPECT_FALSE(g->matches(s)) << c.gbnf << " should not match " << s;
  }
}

TEST(Gbnf, InvalidUtf8IsNeverAccepted) {
  auto g = compile(R"(root ::= .*)");
  ASSERT_TRUE(g);
  EXPECT_TRUE(g->matches("h\xC3\xA9llo \xF0\x9F\x98\x80"));
  EXPECT_FALSE(g->matches("\xC0\xAF"));          // overlong
  EXPECT_FALSE(g->matches("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(g->matches("\xF4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(g->matches("\xC3"));              // cut short
}

TEST(Gbnf, LongNullableRepetitionsStayUsable) {
  // 5,000 nested optional copies of a nullable item: every step expands a long chain of empty
  // alternatives; it must still compile and match promptly (no left recursion, no blow-up).
  auto g = compile(R"(root ::= ("a"?){0,5000} "b")");
  ASSERT_TRUE(g);
  EXPECT_TRUE(g->matches("b"));
  EXPECT_TRUE(g->matches(std::string(300, 'a') + "b"));
  EXPECT_FALSE(g->matches("c"));
  // Too many rules after expansion is an error, not an allocation storm.
  std::string many = "root ::=";
  for (int i = 0; i < 30; ++i) many += " \"a\"{0,9999}";
  auto big = Grammar::parse(many);
  ASSERT_FALSE(big.is_ok());
  EXPECT_NE(big.status().message().find("rules"), std::string::npos) << big.status().message();
}

TEST(Gbnf, ErrorsNamePlaceAndProblem) {
  struct Bad {
    const char* gbnf;
    const char* says;
  };
  const std::vector<Bad> bad = {
      {"root ::= foo", "rule 'foo' is used but not defined"},
      {"start ::= \"a\"", "no 'root' rule"},
      {"root ::= root \"a\" | \"b\"", "left-recursive"},
      {"root ::= a\na ::= \"x\"? root", "left-recursive"},
      {"root ::= \"abc", "line 1, col 10: unterminated literal"},
      {"root ::= \"a\"\n  x ::= [a-", "line 2"},
      {"root ::= \"\\q\"", "unknown escape"},
      {"root ::= [z-a]", "reversed"},
      {"root ::= \"a\"{3,2}", "m <= n"},
      {"root ::= \"a\"{1,999999}", "repetition bound"},
      {"root ::= \"a\" )", "unexpected"},
      {"root ::= \"a\"\nroot ::= \"b\"", "defined twice"},
      {"root = \"a\"", "expected '::='"},
  };
  for (const Bad& b : bad) {
    auto g = Grammar::parse(b.gbnf);
    ASSERT_FALSE(g.is_ok()) << b.gbnf;
    EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(g.status().message().find(b.says), std::string::npos)
        << b.gbnf << " -> " << g.status().message();
  }
}

// Brute force: a token is allowed iff some sentence of the grammar starts with prefix + piece.
// For grammars with a finite language, enumerate the sentences.
TEST(GrammarMatcher, MaskEqualsBruteForceOnEveryStep) {
  const std::vector<std::string> sentences = {"cat", "car", "cart",
                                              "dog", "do",  "\xC3\xA9t\xC3\xA9"};
  std::string gbnf = "root ::= ";
  for (size_t i = 0; i < sentences.size(); ++i) gbnf += (i ? " | \"" : "\"") + sentences[i] + "\"";
  auto g = compile(gbnf);
  ASSERT_TRUE(g);
  std::vector<std::string> pieces = {"c",        "ca",    "cat", "r", "rt", "t",    "d",
                                     "do",       "og",    "g",   "x", "",   "\xC3", "\xA9",
                                     "\xC3\xA9", "t\xC3", "art", "o", "a"};
  const int32_t eos = static_cast<int32_t>(pieces.size());
  pieces.push_back("");  // EOS
  auto vocab = TokenVocab::from_pieces(pieces, {eos});
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    auto m = GrammarMatcher::create(g, vocab);
    ASSERT_TRUE(m.is_ok());
    std::string prefix;
    for (int step = 0; step < 10; ++step) {
      auto mask = m->allowed();
      ASSERT_TRUE(mask.is_ok()) << mask.status().to_string();
      std::vector<int32_t> allowed;
      for (int32_t id = 0; id < vocab->n_vocab(); ++id) {
        bool want = false;
        if (id == eos) {
          want = std::find(sentences.begin(), sentences.end(), prefix) != sentences.end();
        } else if (!pieces[static_cast<size_t>(id)].empty()) {
          const std::string p = prefix + pieces[static_cast<size_t>(id)];
          for (const auto& s : sentences) want = want || s.compare(0, p.size(), p) == 0;
        }
        const bool got = ((*mask)[static_cast<size_t>(id) / 64] >> (id % 64)) & 1;
        EXPECT_EQ(got, want) << "prefix '" << prefix << "' token '"
                             << pieces[static_cast<size_t>(id)] << "'";
        EXPECT_EQ(m->is_allowed(id), want);
        if (want) allowed.push_back(id);
      }
      ASSERT_FALSE(allowed.empty());
      const int32_t pick = allowed[rng() % allowed.size()];
      ASSERT_TRUE(m->accept(pick).is_ok());
      if (pick == eos) {
        EXPECT_TRUE(m->is_finished());
        break;
      }
      prefix += pieces[static_cast<size_t>(pick)];
      EXPECT_EQ(m->n_bytes_accepted(), static_cast<int64_t>(prefix.size()));
    }
  }
}

TEST(GrammarMatcher, RejectsAndUnsatisfiable) {
  auto g = compile(R"(root ::= "a" "c")");
  ASSERT_TRUE(g);
  auto vocab = TokenVocab::from_pieces({"a", "b", "ab"}, {});
  auto m = GrammarMatcher::create(g, vocab);
  ASSERT_TRUE(m.is_ok());
  EXPECT_FALSE(m->accept(1).is_ok());  // "b" is not allowed
  EXPECT_FALSE(m->is_allowed(2));
  ASSERT_TRUE(m->accept(0).is_ok());
  auto mask = m->allowed();
  ASSERT_FALSE(mask.is_ok());
  EXPECT_NE(mask.status().message().find("cannot be satisfied"), std::string::npos);
  EXPECT_NE(mask.status().message().find("after 1 bytes"), std::string::npos);
}

TEST(GrammarMatcher, EndsAndEogOnlyWhereTheGrammarMayEnd) {
  auto g = compile(R"(root ::= "a" "b"?)");
  ASSERT_TRUE(g);
  auto vocab = TokenVocab::from_pieces({"a", "b", "", "ab"}, {2});
  auto m = GrammarMatcher::create(g, vocab);
  ASSERT_TRUE(m.is_ok());
  EXPECT_FALSE(m->can_end());
  EXPECT_FALSE(m->is_allowed(2));
  ASSERT_TRUE(m->accept(0).is_ok());
  EXPECT_TRUE(m->can_end());
  EXPECT_FALSE(m->is_finished());
  EXPECT_TRUE(m->is_allowed(2));
  EXPECT_TRUE(m->is_allowed(1));
  ASSERT_TRUE(m->accept(1).is_ok());
  EXPECT_TRUE(m->is_finished());
  auto mask = m->allowed();
  ASSERT_TRUE(mask.is_ok());
  EXPECT_EQ((*mask)[0], uint64_t{1} << 2);  // only EOG
}

TEST(Sampler, MaskedSamplingOnlyPicksAllowed) {
  SamplingParams p;
  p.temperature = 1.5f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  Sampler s(p, 200);
  std::vector<float> logits(200);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(i % 5);
  std::vector<uint64_t> allowed(4, 0);
  for (int id : {3, 64, 130, 199})
    allowed[static_cast<size_t>(id) / 64] |= uint64_t{1} << (id % 64);
  std::set<int32_t> seen;
  for (int i = 0; i < 400; ++i) seen.insert(s.sample(logits, allowed));
  EXPECT_EQ(seen, (std::set<int32_t>{3, 64, 130, 199}));
  std::vector<uint64_t> none(4, 0);
  EXPECT_EQ(s.sample(logits, none), -1);
  // All allowed logits -inf: still an allowed token.
  std::vector<float> neg(200, -std::numeric_limits<float>::infinity());
  neg[0] = 1.0f;
  EXPECT_EQ(s.sample(neg, allowed), 3);
}

// ---------------------------------------------------------------------------------------------
// JSON Schema

struct SchemaCase {
  const char* name;
  const char* schema;
  std::vector<const char*> valid;    // instances both the grammar and the validator accept
  std::vector<const char*> invalid;  // instances both reject
  bool bounded = true;               // the grammar's language is finite (used for sampling)
};

const std::vector<SchemaCase>& schema_cases() {
  static const std::vector<SchemaCase> kCases = {
      {"string",
       R"({"type":"string","maxLength":12})",
       {R"("hi")", R"("")", R"("a\"b\u00e9")"},
       {R"(1)", R"("0123456789abc")"}},
      {"integer",
       R"({"type":"integer"})",
       {"0", "-12", "1234567890123456"},
       {"1.5", "01", "\"1\""}},
      {"number", R"({"type":"number"})", {"0", "-1.25", "3e5", "2.5E-3"}, {"1.", ".5", "\"x\""}},
      {"boolean", R"({"type":"boolean"})", {"true", "false"}, {"1", "null"}},
      {"null", R"({"type":"null"})", {"null"}, {"0", "false"}},
      {"enum-strings",
       R"({"enum":["red","green","blue"]})",
       {R"("red")", R"("blue")"},
       {R"("Red")", R"("")"}},
      {"enum-mixed",
       R"({"enum":[1,"two",null,true,{"a":[1]}]})",
       {"1", R"("two")", "null", "true", R"({"a":[1]})"},
       {"2", "false"}},
      {"const", R"({"const":"fixed"})", {R"("fixed")"}, {R"("fixe")"}},
      {"enum-typed", R"({"type":"string","enum":["a",1,"b"]})", {R"("a")", R"("b")"}, {"1"}},
      {"type-list", R"({"type":["integer","null"]})", {"5", "null"}, {"\"5\"", "true"}},
      {"object-required",
       R"({"type":"object","properties":{"name":{"type":"string","maxLength":8},"age":{"type":"integer"}},"required":["name","age"],"additionalProperties":false})",
       {R"({"name":"Al","age":3})", R"({ "name" : "Bo",
  "age": -1 })"},
       {R"({"name":"Al"})", R"({"age":3,"name":"Al","x":1})", R"({"name":"Al","age":"3"})"}},
      {"object-optional",
       R"({"type":"object","properties":{"a":{"type":"boolean"},"b":{"type":"null"},"c":{"type":"integer"}},"required":["b"],"additionalProperties":false})",
       {R"({"b":null})", R"({"a":true,"b":null})", R"({"b":null,"c":7})",
        R"({"a":false,"b":null,"c":1})"},
       {R"({})", R"({"a":true})", R"({"b":null,"d":1})"}},
      {"object-all-optional",
       R"({"type":"object","properties":{"x":{"type":"integer"},"y":{"type":"integer"}},"additionalProperties":false})",
       {"{}", R"({"x":1})", R"({"y":2})", R"({"x":1,"y":2})"},
       {R"({"z":1})", "[]"}},
      {"object-empty",
       R"({"type":"object","additionalProperties":false})",
       {"{}", "{ }"},
       {R"({"a":1})"}},
      {"nested",
       R"({"type":"object","properties":{"user":{"type":"object","properties":{"id":{"type":"integer"},"tags":{"type":"array","items":{"enum":["x","y"]},"maxItems":3}},"required":["id","tags"],"additionalProperties":false}},"required":["user"],"additionalProperties":false})",
       {R"({"user":{"id":1,"tags":[]}})", R"({"user":{"id":1,"tags":["x","y","x"]}})"},
       {R"({"user":{"id":1,"tags":["x","y","x","y"]}})", R"({"user":{"id":1}})"}},
      {"array-bounds",
       R"({"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":4})",
       {"[1,2]", "[1, 2, 3]", "[1,2,3,4]"},
       {"[]", "[1]", "[1,2,3,4,5]", "[1,\"2\"]"}},
      {"array-exact",
       R"({"type":"array","items":{"type":"boolean"},"minItems":2,"maxItems":2})",
       {"[true,false]"},
       {"[true]", "[true,true,true]"}},
      {"array-empty-only", R"({"type":"array","maxItems":0})", {"[]", "[ ]"}, {"[1]"}},
      {"array-min1",
       R"({"type":"array","items":{"type":"null"},"minItems":1,"maxItems":5})",
       {"[null]", "[null,null]"},
       {"[]"}},
      {"anyOf",
       R"({"anyOf":[{"type":"integer"},{"type":"string","maxLength":4}]})",
       {"3", R"("abc")"},
       {"true", R"("abcde")"}},
      {"oneOf", R"({"oneOf":[{"type":"boolean"},{"type":"null"}]})", {"true", "null"}, {"0"}},
      {"refs",
       R"({"$defs":{"pt":{"type":"object","properties":{"x":{"type":"integer"},"y":{"type":"integer"}},"required":["x","y"],"additionalProperties":false}},"type":"array","items":{"$ref":"#/$defs/pt"},"maxItems":3})",
       {R"([{"x":1,"y":2}])", "[]"},
       {R"([{"x":1}])"}},
      {"definitions",
       R"({"definitions":{"c":{"enum":["a","b"]}},"type":"object","properties":{"k":{"$ref":"#/definitions/c"}},"required":["k"],"additionalProperties":false})",
       {R"({"k":"a"})"},
       {R"({"k":"c"})"}},
      {"string-lengths",
       R"({"type":"string","minLength":2,"maxLength":3})",
       {R"("ab")", R"("abc")", R"("\u00e9\u00e9")", "\"\xC3\xA9\xC3\xA9\""},
       {R"("a")", R"("abcd")"}},
      {"date",
       R"({"type":"string","format":"date"})",
       {R"("2024-02-29")", R"("1999-12-31")"},
       {R"("2024-13-01")", R"("2024-04-31")", R"("24-01-01")"}},
      {"time",
       R"({"type":"string","format":"time"})",
       {R"("23:59:59Z")", R"("08:00:00.5+02:00")"},
       {R"("24:00:00Z")", R"("08:00:00")"}},
      {"date-time",
       R"({"type":"string","format":"date-time"})",
       {R"("2024-01-02T03:04:05Z")", R"("2024-01-02T03:04:05.123-07:30")"},
       {R"("2024-01-02 03:04:05Z")"}},
      {"uuid",
       R"({"type":"string","format":"uuid"})",
       {R"("123e4567-e89b-12d3-a456-426614174000")"},
       {R"("123e4567e89b12d3a456426614174000")"}},
      {"extra-schema",
       R"({"type":"object","properties":{"id":{"type":"integer"}},"required":["id"],"additionalProperties":{"type":"boolean"}})",
       {R"({"id":1})", R"({"id":1,"ok":true})", R"({"id":1,"i":false,"idd":true})"},
       {R"({"id":1,"ok":1})", R"({"id":1,"id":true})"},
       false},
      {"extra-any",
       R"({"type":"object","properties":{"a":{"type":"null"}}})",
       {"{}", R"({"a":null,"b":[1,{"c":"d"}]})"},
       {R"({"a":1})"},
       false},
      {"free-string",
       R"({"type":"string"})",
       {R"("any thing \n \\ \u12ab")"},
       {R"("\ud800")", "\"\x01\""},
       false},
      {"true-schema", R"(true)", {"1", R"({"a":[null]})"}, {"nul"}, false},
      {"recursive-tree",
       R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":2}},"required":["v"],"additionalProperties":false}},"$ref":"#/$defs/node"})",
       {R"({"v":1})", R"({"v":1,"kids":[{"v":2,"kids":[]},{"v":3}]})"},
       {R"({"v":1,"kids":[{}]})"},
       false},
      {"annotations",
       R"({"title":"T","description":"D","$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"s":{"type":"string","maxLength":5,"default":"x","examples":["y"]}},"required":["s"],"additionalProperties":false})",
       {R"({"s":"hey"})"},
       {R"({"s":1})"}},
      {"mixed-nested",
       R"({"type":"object","properties":{"items":{"type":"array","items":{"anyOf":[{"type":"integer"},{"type":"object","properties":{"k":{"const":1}},"required":["k"],"additionalProperties":false}]},"maxItems":3},"flag":{"type":["boolean","null"]}},"required":["items","flag"],"additionalProperties":false})",
       {R"({"items":[1,{"k":1}],"flag":null})"},
       {R"({"items":[{"k":2}],"flag":true})"}},
      {"unicode-enum",
       R"({"enum":["caf\u00e9","\u4e2d\u6587","a\"b"]})",
       {"\"caf\xC3\xA9\"", "\"\xE4\xB8\xAD\xE6\x96\x87\"", R"("a\"b")"},
       {R"("cafe")"}},
  };
  return kCases;
}

TEST(JsonSchema, ThirtyPlusSchemasAgreeWithTheValidator) {
  ASSERT_GE(schema_cases().size(), 30u);
  for (const SchemaCase& c : schema_cases()) {
    SCOPED_TRACE(c.name);
    auto gbnf = json_schema_to_gbnf(c.schema);
    ASSERT_TRUE(gbnf.is_ok()) << gbnf.status().to_string();
    auto g = compile(*gbnf);
    ASSERT_TRUE(g);
    for (const char* v : c.valid) {
      // The grammar is stricter on spelling ("1" vs "1.0" in enums, escapes in extra keys), so
      // the valid examples are spelled as the grammar writes them.
      EXPECT_TRUE(g->matches(v)) << "grammar rejects " << v << "\n" << *gbnf;
      const Status s = validate_json(v, c.schema);
      EXPECT_TRUE(s.is_ok()) << v << ": " << s.to_string();
    }
    for (const char* v : c.invalid) {
      EXPECT_FALSE(g->matches(v)) << "grammar accepts " << v << "\n" << *gbnf;
      EXPECT_FALSE(validate_json(v, c.schema).is_ok()) << "validator accepts " << v;
    }
  }
}

TEST(JsonSchema, UnsupportedKeywordsAreNamedErrors) {
  const std::vector<std::pair<const char*, const char*>> bad = {
      {R"({"type":"string","pattern":"^a"})", "'pattern' at /"},
      {R"({"type":"integer","minimum":0})", "'minimum'"},
      {R"({"type":"object","properties":{"a":{"type":"number","multipleOf":2}}})",
       "'multipleOf' at /properties/a"},
      {R"({"allOf":[{"type":"integer"}]})", "'allOf'"},
      {R"({"type":"string","format":"email"})", "format 'email'"},
      {R"({"type":"array","uniqueItems":true})", "'uniqueItems'"},
      {R"({"type":"array","prefixItems":[{"type":"integer"}]})", "'prefixItems'"},
      {R"({"type":"object","minProperties":1})", "'minProperties'"},
      {R"({"type":"object","patternProperties":{"a":{}}})", "'patternProperties'"},
      {R"({"not":{"type":"null"}})", "'not'"},
      {R"({"if":{"type":"null"},"then":{}})", "'if'"},
      {R"({"$ref":"https://example.com/s.json"})", "only local $ref"},
      {R"({"$ref":"#/$defs/missing"})", "points nowhere"},
      {R"({"type":"integer","anyOf":[{"const":1}]})", "beside $ref/anyOf/oneOf"},
      {R"({"type":"strin"})", "unknown type 'strin'"},
      {R"({"type":"string","maxLength":-1})", "maxLength"},
      {R"(false)", "matches nothing"},
      {R"({"type":"string", )", "not JSON"},
      {R"({"enum":[1,2],"type":"string"})", "no enum/const value"},
  };
  for (const auto& [schema, says] : bad) {
    auto r = json_schema_to_gbnf(schema);
    ASSERT_FALSE(r.is_ok()) << schema;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(says), std::string::npos)
        << schema << " -> " << r.status().message();
  }
  // The validator refuses the same keywords instead of passing them.
  EXPECT_FALSE(validate_json("\"a\"", R"({"type":"string","pattern":"^b"})").is_ok());
}

TEST(JsonSchema, ValueGrammars) {
  auto any = compile(json_value_gbnf(false));
  auto obj = compile(json_value_gbnf(true));
  ASSERT_TRUE(any && obj);
  for (const char* v : {"1", "\"s\"", "[1, {\"a\": [true, null]}]", "{}"})
    EXPECT_TRUE(any->matches(v)) << v;
  EXPECT_TRUE(obj->matches("{\"a\": 1}"));
  EXPECT_FALSE(obj->matches("[1]"));
  EXPECT_FALSE(any->matches("{\"a\" 1}"));
}

// ---------------------------------------------------------------------------------------------
// Sampling through the engine: every output parses and validates.

void sample_all_schemas(const char* model_rel, int n_seeds, uint64_t seed0) {
  LLMT_REQUIRE_DATA(model_rel);
  auto model = Model::load(test::data_path(model_rel));
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  EngineConfig cfg;
  cfg.model.model = *model;
  cfg.compute.n_threads = 2;
  cfg.kv.budget_bytes = 64u << 20;
  cfg.sched.measure_costs = false;
  auto engine = Engine::create(cfg);
  ASSERT_TRUE(engine.is_ok()) << engine.status().to_string();
  struct Job {
    const SchemaCase* c;
    ThreadHandle h;
  };
  std::vector<Job> jobs;
  int n_bounded = 0;
  for (const SchemaCase& c : schema_cases()) {
    if (!c.bounded) continue;
    ++n_bounded;
    auto g = Grammar::from_json_schema(c.schema);
    ASSERT_TRUE(g.is_ok()) << c.name << ": " << g.status().to_string();
    for (int s = 0; s < n_seeds; ++s) {
      ThreadRequest r;
      r.prompt = "Once upon a time";
      r.max_tokens = 380;
      r.sampling.temperature = 1.5f;
      r.sampling.top_k = 0;
      r.sampling.top_p = 1.0f;
      r.sampling.min_p = 0.0f;
      r.sampling.seed = seed0 + static_cast<uint64_t>(s) * 7919 + jobs.size();
      r.grammar = *g;
      auto h = (*engine)->submit(std::move(r));
      ASSERT_TRUE(h.is_ok()) << h.status().to_string();
      jobs.push_back({&c, *h});
    }
  }
  EXPECT_GE(n_bounded, 25);
  int n_ok = 0;
  for (Job& j : jobs) {
    const ThreadResult res = j.h.wait();
    SCOPED_TRACE(std::string(j.c->name) + ": " + res.text);
    ASSERT_EQ(res.finish_reason, FinishReason::kStop) << res.error;
    nlohmann::json parsed;
    ASSERT_NO_THROW(parsed = nlohmann::json::parse(res.text));
    const Status s = validate_json(res.text, j.c->schema);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    n_ok += s.is_ok();
  }
  EXPECT_EQ(n_ok, static_cast<int>(jobs.size()));
}

TEST(GrammarEngine, EverySampledOutputValidatesStories260K) {
  sample_all_schemas("models/stories260K.gguf", 3, 101);
}

TEST(GrammarEngine, EverySampledOutputValidatesRandomLlama3) {
  sample_all_schemas("models/arch/synth-llama3-q4_k_m.gguf", 3, 9001);
}

TEST(GrammarEngine, UnsatisfiableGrammarEndsTheThreadWithAnError) {
  const char* rel = "models/stories260K.gguf";
  LLMT_REQUIRE_DATA(rel);
  auto model = Model::load(test::data_path(rel));
  ASSERT_TRUE(model.is_ok());
  EngineConfig cfg;
  cfg.model.model = *model;
  cfg.compute.n_threads = 2;
  cfg.kv.budget_bytes = 16u << 20;
  cfg.sched.measure_costs = false;
  auto engine = Engine::create(cfg);
  ASSERT_TRUE(engine.is_ok());
  // After "ok" only a surrogate code point would do: no UTF-8 byte sequence spells one.
  auto g = Grammar::parse(R"(root ::= "ok" [\uD800-\uDFFF])");
  ASSERT_TRUE(g.is_ok());
  ThreadRequest r;
  r.prompt = "Once";
  r.max_tokens = 20;
  r.grammar = *g;
  auto h = (*engine)->submit(std::move(r));
  ASSERT_TRUE(h.is_ok());
  const ThreadResult res = h->wait();
  EXPECT_EQ(res.finish_reason, FinishReason::kError);
  EXPECT_EQ(res.text, "ok");
  EXPECT_NE(res.error.find("grammar: no token can continue the output after 2 bytes"),
            std::string::npos)
      << res.error;
  // Greedy, a grammar that ends: kStop right at its end, the text is the sentence.
  auto g2 = Grammar::parse(R"(root ::= "The " ("cat" | "dog") ".")");
  ASSERT_TRUE(g2.is_ok());
  ThreadRequest r2;
  r2.prompt = "Once";
  r2.max_tokens = 50;
  r2.sampling.temperature = 0.0f;
  r2.grammar = *g2;
  auto h2 = (*engine)->submit(std::move(r2));
  ASSERT_TRUE(h2.is_ok());
  const ThreadResult res2 = h2->wait();
  EXPECT_EQ(res2.finish_reason, FinishReason::kStop);
  EXPECT_TRUE(res2.text == "The cat." || res2.text == "The dog.") << res2.text;
}

TEST(GrammarBench, ScenarioRunsAndReports) {
  const char* rel = "models/stories260K.gguf";
  LLMT_REQUIRE_DATA(rel);
  const auto r = test::run_command(
      test::cli_path() + " bench --scenario grammar --scenario-threads 4 --repetitions 1 -m " +
      test::shell_quote(test::data_path(rel)));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["scenario"], "grammar");
  EXPECT_EQ(j["llm_threads"], 4);
  // The schema needs at least 60 items: every thread runs to max_tokens under the grammar.
  EXPECT_EQ(j["grammar_run"]["finished_by_length"], 4);
  EXPECT_EQ(j["grammar_run"]["tokens"], 4 * 96);
  EXPECT_GT(j["replay_us_per_token"]["cold"].get<double>(), 0.0);
  EXPECT_GT(j["step_ms"]["plain_p50"].get<double>(), 0.0);
  EXPECT_GT(j["step_ms"]["grammar_p50"].get<double>(), 0.0);
  EXPECT_TRUE(j.contains("overhead_fraction"));
}

TEST(GrammarCli, RunExtractWithSchemaGivesValidJsonOnEveryLine) {
  const char* rel = "models/stories260K.gguf";
  LLMT_REQUIRE_DATA(rel);
  const auto dir =
      std::filesystem::temp_directory_path() / ("llmt-grammar-cli-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string schema =
      R"({"type":"object","properties":{"who":{"type":"string","maxLength":16},)"
      R"("mood":{"enum":["happy","sad"]},"count":{"type":"integer"}},)"
      R"("required":["who","mood","count"],"additionalProperties":false})";
  {
    std::ofstream(dir / "schema.json") << schema;
    std::ofstream in(dir / "in.jsonl");
    for (int i = 0; i < 12; ++i)
      in << R"({"id": )" << i << R"(, "text": "Tom had )" << i
         << R"( red balls and he was happy."})"
         << "\n";
  }
  const std::string out = (dir / "out.jsonl").string();
  const auto r = test::run_command(
      test::cli_path() + " run -m " + test::shell_quote(test::data_path(rel)) +
          " --task extract --schema " + test::shell_quote((dir / "schema.json").string()) +
          " --prompt 'Who, mood, count: {text}' --temp 1.5 --top-k 0 --top-p 1 --min-p 0 -n 200"
          " --threads 2 --progress none -i " +
          test::shell_quote((dir / "in.jsonl").string()) + " -o " + test::shell_quote(out),
      true);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::ifstream f(out);
  std::string line;
  int n = 0;
  std::set<std::string> distinct;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line);
    ASSERT_TRUE(j["error"].is_null()) << line;
    const std::string text = j["result"]["text"].get<std::string>();
    const Status s = validate_json(text, schema);
    EXPECT_TRUE(s.is_ok()) << text << ": " << s.to_string();
    distinct.insert(text);
    ++n;
  }
  EXPECT_EQ(n, 12);
  // One seed for every thread (run's --seed), so similar prompts may share answers; the prompts
  // still change some.
  EXPECT_GT(distinct.size(), 1u);
  // A schema we cannot enforce is refused before anything runs, naming the keyword.
  { std::ofstream(dir / "bad.json") << R"({"type":"string","pattern":"x"})"; }
  const auto bad = test::run_command(
      test::cli_path() + " run -m " + test::shell_quote(test::data_path(rel)) +
          " --task extract --schema " + test::shell_quote((dir / "bad.json").string()) + " -i " +
          test::shell_quote((dir / "in.jsonl").string()) + " -o " +
          test::shell_quote((dir / "bad-out.jsonl").string()),
      true);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("'pattern'"), std::string::npos) << bad.out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace llmt
