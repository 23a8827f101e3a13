// Splitters: a table of sentence cases (English abbreviations, decimals, quotes, ellipses, CJK
// and full-width punctuation, mixed text, no punctuation, whitespace only, invalid UTF-8) with
// exact pieces; paragraphs; token windows over the real vocabularies (exact token counts, byte
// spans that map back to the tokens); the hierarchy's levels and parents; the --split parser.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "llmthreads/gguf.h"
#include "llmthreads/tokenizer.h"
#include "tasks/split.h"
#include "test-util.h"

namespace llmt::tasks {
namespace {

std::vector<std::string> texts_of(std::string_view doc, const std::vector<Piece>& pieces) {
  std::vector<std::string> out;
  for (const Piece& p : pieces) out.emplace_back(p.text(doc));
  return out;
}

bool is_ws_byte(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Invariants every flat split of `doc` keeps: indices in order, non-empty, spans inside the
// document and increasing, no surrounding ASCII whitespace, not splitting a UTF-8 character.
void check_flat(std::string_view doc, const std::vector<Piece>& pieces, bool trimmed) {
  size_t prev_end = 0;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Piece& p = pieces[i];
    EXPECT_EQ(p.index, static_cast<int32_t>(i));
    ASSERT_LT(p.begin, p.end) << "piece " << i;
    ASSERT_LE(p.end, doc.size());
    EXPECT_EQ(p.parent, -1);
    if (trimmed) {
      EXPECT_GE(p.begin, prev_end) << "piece " << i;
      EXPECT_FALSE(is_ws_byte(doc[p.begin])) << "piece " << i;
      EXPECT_FALSE(is_ws_byte(doc[p.end - 1])) << "piece " << i;
    }
    prev_end = p.end;
  }
}

struct SentenceCase {
  const char* name;
  std::string text;
  std::vector<std::string> sentences;
};

class SentenceTest : public ::testing::TestWithParam<SentenceCase> {};

TEST_P(SentenceTest, ExactPieces) {
  const SentenceCase& c = GetParam();
  const std::vector<Piece> pieces = split_sentences(c.text);
  EXPECT_EQ(texts_of(c.text, pieces), c.sentences);
  check_flat(c.text, pieces, true);
  for (const Piece& p : pieces) EXPECT_EQ(p.level, PieceLevel::kSentence);
}

const SentenceCase kSentenceCases[] = {
    {"Simple",
     "Hello world. How are you? I am fine!",
     {"Hello world.", "How are you?", "I am fine!"}},
    {"NoTerminal", "no punctuation at all", {"no punctuation at all"}},
    {"Empty", "", {}},
    {"WhitespaceOnly", " \t\n\r\n  \n", {}},
    {"IdeographicSpaceOnly", "\xE3\x80\x80 \xC2\xA0", {}},
    {"TrimsSurrounding", "   First one.   Second one.  \n", {"First one.", "Second one."}},
    {"Titles",
     "Mr. Smith met Dr. Jones and Mrs. Brown. They talked.",
     {"Mr. Smith met Dr. Jones and Mrs. Brown.", "They talked."}},
    {"MoreTitles",
     "Prof. X and Ms. Y met St. Peter. Sr. Lopez and Jr. came too.",
     {"Prof. X and Ms. Y met St. Peter.", "Sr. Lopez and Jr. came too."}},
    {"DottedLetters",
     "Use e.g. apples, i.e. fruit. The U.S. team won at 5 p.m. today. Next.",
     {"Use e.g. apples, i.e. fruit.", "The U.S. team won at 5 p.m. today.", "Next."}},
    {"AbbreviationNeverEnds", "We met at 5 p.m. Then we left.", {"We met at 5 p.m. Then we left."}},
    {"Etc",
     "Apples, pears, etc. are fruit. Cats vs. dogs.",
     {"Apples, pears, etc. are fruit.", "Cats vs. dogs."}},
    {"Initials",
     "J. K. Rowling wrote it. She is famous.",
     {"J. K. Rowling wrote it.", "She is famous."}},
    {"CompanyAndFigure",
     "Acme Inc. and Foo Ltd. and Bar Co. merged. See Fig. 3 here.",
     {"Acme Inc. and Foo Ltd. and Bar Co. merged.", "See Fig. 3 here."}},
    {"Months", "It was Jan. 5 or Feb. 6 then. Done.", {"It was Jan. 5 or Feb. 6 then.", "Done."}},
    {"NumberAbbreviation",
     "He was No. 1 in the list. The answer is no. Then he left.",
     {"He was No. 1 in the list.", "The answer is no.", "Then he left."}},
    {"Decimals",
     "Pi is 3.14 roughly. It costs $4.50. Pay now.",
     {"Pi is 3.14 roughly.", "It costs $4.50.", "Pay now."}},
    {"NumberAtEnd",
     "It happened in 2020. Then it ended.",
     {"It happened in 2020.", "Then it ended."}},
    {"UrlsAndEmails",
     "Visit example.com or mail a.b@example.org today. Thanks.",
     {"Visit example.com or mail a.b@example.org today.", "Thanks."}},
    {"UrlAtSentenceEnd",
     "Go to www.example.com. It works.",
     {"Go to www.example.com.", "It works."}},
    {"QuestionBang", "Really?! Yes!! Wow?? Ok.", {"Really?!", "Yes!!", "Wow??", "Ok."}},
    {"ClosingQuotes",
     "He said \"Hi.\" Then he left. 'Go!' she cried.",
     {"He said \"Hi.\"", "Then he left.", "'Go!' she cried."}},
    {"QuoteThenLowercase",
     "\"Really?\" she asked. \"Yes.\" He nodded.",
     {"\"Really?\" she asked.", "\"Yes.\"", "He nodded."}},
    {"CurlyQuotesAndBrackets",
     "It ended (finally.) Next \xE2\x80\x9Cone.\xE2\x80\x9D Last.",
     {"It ended (finally.)",
      "Next \xE2\x80\x9C"
      "one.\xE2\x80\x9D",
      "Last."}},
    {"EllipsisLowercase",
     "Well... maybe not. Wait... Then go.",
     {"Well... maybe not.", "Wait...", "Then go."}},
    {"UnicodeEllipsis",
     "So\xE2\x80\xA6 what now? Hmm\xE2\x80\xA6 Fine.",
     {"So\xE2\x80\xA6 what now?", "Hmm\xE2\x80\xA6", "Fine."}},
    {"EllipsisInsideWord", "Wait...what? Ok.", {"Wait...what?", "Ok."}},
    {"EllipsisAtEnd", "And then...", {"And then..."}},
    {"ListNumbers", "1. Buy milk.\n2. Buy eggs.", {"1. Buy milk.", "2. Buy eggs."}},
    {"SingleNewlineDoesNotSplit",
     "This line\ncontinues here. Next",
     {"This line\ncontinues here.", "Next"}},
    {"BlankLineSplits",
     "Title without punctuation\n\nBody text here\n  \nMore",
     {"Title without punctuation", "Body text here", "More"}},
    {"CrLfBlankLine", "First line\r\n\r\nSecond line\r\n", {"First line", "Second line"}},
    {"Chinese",
     "\xE4\xBD\xA0\xE5\xA5\xBD\xE3\x80\x82\xE6\x88\x91\xE5\xBE\x88\xE5\xA5\xBD\xEF\xBC\x81"
     "\xE4\xBD\xA0\xE5\x91\xA2\xEF\xBC\x9F",  // 你好。我很好！你呢？
     {"\xE4\xBD\xA0\xE5\xA5\xBD\xE3\x80\x82", "\xE6\x88\x91\xE5\xBE\x88\xE5\xA5\xBD\xEF\xBC\x81",
      "\xE4\xBD\xA0\xE5\x91\xA2\xEF\xBC\x9F"}},
    {"ChineseSemicolonAndFullStop",
     "\xE7\xAC\xAC\xE4\xB8\x80\xEF\xBC\x9B\xE7\xAC\xAC\xE4\xBA\x8C\xEF\xBC\x8E\xE7\xAC\xAC\xE4\xB8"
     "\x89",
     // 第一；第二．第三
     {"\xE7\xAC\xAC\xE4\xB8\x80\xEF\xBC\x9B", "\xE7\xAC\xAC\xE4\xBA\x8C\xEF\xBC\x8E",
      "\xE7\xAC\xAC\xE4\xB8\x89"}},
    {"ChineseQuotes",
     // 他说：“你好。”然后走了。
     "\xE4\xBB\x96\xE8\xAF\xB4\xEF\xBC\x9A\xE2\x80\x9C\xE4\xBD\xA0\xE5\xA5\xBD\xE3\x80\x82\xE2\x80"
     "\x9D\xE7\x84\xB6\xE5\x90\x8E\xE8\xB5\xB0\xE4\xBA\x86\xE3\x80\x82",
     {"\xE4\xBB\x96\xE8\xAF\xB4\xEF\xBC\x9A\xE2\x80\x9C\xE4\xBD\xA0\xE5\xA5\xBD\xE3\x80\x82\xE2\x80"
      "\x9D",
      "\xE7\x84\xB6\xE5\x90\x8E\xE8\xB5\xB0\xE4\xBA\x86\xE3\x80\x82"}},
    {"Japanese",
     // 「こんにちは。」と言った。ありがとう！本当？はい
     "\xE3\x80\x8C\xE3\x81\x93\xE3\x82\x93\xE3\x81\xAB\xE3\x81\xA1\xE3\x81\xAF\xE3\x80\x82\xE3\x80"
     "\x8D\xE3\x81\xA8\xE8\xA8\x80\xE3\x81\xA3\xE3\x81\x9F\xE3\x80\x82\xE3\x81\x82\xE3\x82\x8A\xE3"
     "\x81\x8C\xE3\x81\xA8\xE3\x81\x86\xEF\xBC\x81\xE6\x9C\xAC\xE5\xBD\x93\xEF\xBC\x9F\xE3\x81\xAF"
     "\xE3\x81\x84",
     {"\xE3\x80\x8C\xE3\x81\x93\xE3\x82\x93\xE3\x81\xAB\xE3\x81\xA1\xE3\x81\xAF\xE3\x80\x82\xE3\x80"
      "\x8D",
      "\xE3\x81\xA8\xE8\xA8\x80\xE3\x81\xA3\xE3\x81\x9F\xE3\x80\x82",
      "\xE3\x81\x82\xE3\x82\x8A\xE3\x81\x8C\xE3\x81\xA8\xE3\x81\x86\xEF\xBC\x81",
      "\xE6\x9C\xAC\xE5\xBD\x93\xEF\xBC\x9F", "\xE3\x81\xAF\xE3\x81\x84"}},
    {"JapaneseDoubleBracketAndParen",
     // 『本』を読んだ。（楽しい！）次
     "\xE3\x80\x8E\xE6\x9C\xAC\xE3\x80\x8F\xE3\x82\x92\xE8\xAA\xAD\xE3\x82\x93\xE3\x81\xA0\xE3\x80"
     "\x82\xEF\xBC\x88\xE6\xA5\xBD\xE3\x81\x97\xE3\x81\x84\xEF\xBC\x81\xEF\xBC\x89\xE6\xAC\xA1",
     {"\xE3\x80\x8E\xE6\x9C\xAC\xE3\x80\x8F\xE3\x82\x92\xE8\xAA\xAD\xE3\x82\x93\xE3\x81\xA0\xE3\x80"
      "\x82",
      "\xEF\xBC\x88\xE6\xA5\xBD\xE3\x81\x97\xE3\x81\x84\xEF\xBC\x81\xEF\xBC\x89", "\xE6\xAC\xA1"}},
    {"CjkWithAsciiMarks",
     // 你好!我好?好
     "\xE4\xBD\xA0\xE5\xA5\xBD!\xE6\x88\x91\xE5\xA5\xBD?\xE5\xA5\xBD",
     {"\xE4\xBD\xA0\xE5\xA5\xBD!", "\xE6\x88\x91\xE5\xA5\xBD?", "\xE5\xA5\xBD"}},
    {"Mixed",
     // This is English. 这是中文。Back to English! 日本語です。
     "This is English. \xE8\xBF\x99\xE6\x98\xAF\xE4\xB8\xAD\xE6\x96\x87\xE3\x80\x82"
     "Back to English! \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xA7\xE3\x81\x99\xE3\x80\x82",
     {"This is English.", "\xE8\xBF\x99\xE6\x98\xAF\xE4\xB8\xAD\xE6\x96\x87\xE3\x80\x82",
      "Back to English!",
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xA7\xE3\x81\x99\xE3\x80\x82"}},
    {"EnglishGluedToChinese",
     "Done.\xE5\xA5\xBD\xE3\x80\x82",
     {"Done.", "\xE5\xA5\xBD\xE3\x80\x82"}},
    {"FullWidthSpaceBetween", "One.\xE3\x80\x80Two.", {"One.", "Two."}},
    {"InvalidUtf8",
     "Bad \xFF\xFE bytes. More \xC3 here.\x80 End",
     {"Bad \xFF\xFE bytes.", "More \xC3 here.\x80 End"}},
    {"TruncatedAtEnd", "Ends badly. \xE4\xBD", {"Ends badly.", "\xE4\xBD"}},
    {"OnlyPunctuation", "...", {"..."}},
    {"AccentedWordBeforeDot",
     "I like caf\xC3\xA9. It is good.",
     {"I like caf\xC3\xA9.", "It is good."}},
};

INSTANTIATE_TEST_SUITE_P(Cases, SentenceTest, ::testing::ValuesIn(kSentenceCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(SplitSentences, SpansReconstructAndCoverAllNonSpace) {
  const std::string doc =
      "  Dr. Who arrived at 3 p.m. sharp.  \"Why?\" asked Mr. Pond...\n\n"
      "\xE4\xBD\xA0\xE5\xA5\xBD\xE3\x80\x82\xE5\x86\x8D\xE8\xA7\x81\xEF\xBC\x81\r\n"
      "Last line no stop";
  const std::vector<Piece> pieces = split_sentences(doc);
  check_flat(doc, pieces, true);
  // Removing the pieces from the document leaves only whitespace.
  std::string rest = doc;
  for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) rest.erase(it->begin, it->size());
  for (char c : rest) EXPECT_TRUE(is_ws_byte(c)) << "byte " << int(c) << " not in any piece";
}

TEST(SplitSentences, RandomBytesNeverCrashOrSplitCharacters) {
  uint32_t state = 12345;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  const std::string alphabet[] = {"a",
                                  "B",
                                  " ",
                                  "\n",
                                  ".",
                                  "!",
                                  "?",
                                  "\"",
                                  ")",
                                  "\xE3\x80\x82",
                                  "\xEF\xBC\x81",
                                  "\xE2\x80\x9D",
                                  "\xE4\xBD\xA0",
                                  "\xFF",
                                  "\xC3",
                                  "\x80",
                                  "Mr",
                                  "3",
                                  "\xE2\x80\xA6",
                                  "\xE3\x80\x80"};
  for (int round = 0; round < 300; ++round) {
    std::string doc;
    const int n = static_cast<int>(next() % 60);
    for (int i = 0; i < n; ++i) doc += alphabet[(next() >> 8) % std::size(alphabet)];
    const std::vector<Piece> pieces = split_sentences(doc);
    check_flat(doc, pieces, true);
    for (const Piece& p : pieces) {
      // A valid character's continuation bytes never start or follow the end of a piece.
      const auto b = static_cast<unsigned char>(doc[p.begin]);
      if ((b & 0xC0) == 0x80 && p.begin > 0) {
        const auto prev = static_cast<unsigned char>(doc[p.begin - 1]);
        EXPECT_FALSE(prev >= 0xC2) << "piece starts inside a character";
      }
    }
  }
}

TEST(SplitParagraphs, Cases) {
  struct Case {
    std::string text;
    std::vector<std::string> paragraphs;
  };
  const Case cases[] = {
      {"", {}},
      {"\n\n  \n", {}},
      {"One paragraph.", {"One paragraph."}},
      {"Line one\nline two\n\nSecond para", {"Line one\nline two", "Second para"}},
      {"  indented\n\n\n\n   \t \nnext  \n", {"indented", "next"}},
      {"crlf one\r\ncontinued\r\n\r\ncrlf two\r\n", {"crlf one\r\ncontinued", "crlf two"}},
      {"cr only\r\rsecond", {"cr only", "second"}},
      {"a\n\xE3\x80\x80\nb", {"a", "b"}},  // a line of one ideographic space is blank
      {"x\n \xFF \n\ny", {"x\n \xFF", "y"}},
  };
  for (const Case& c : cases) {
    const std::vector<Piece> pieces = split_paragraphs(c.text);
    EXPECT_EQ(texts_of(c.text, pieces), c.paragraphs) << c.text;
    check_flat(c.text, pieces, true);
  }
}

TEST(SplitNone, WholeTrimmedText) {
  const std::string doc = "\n  All of it.\n\nAnd more.  ";
  EXPECT_EQ(texts_of(doc, split_none(doc)), std::vector<std::string>{"All of it.\n\nAnd more."});
  EXPECT_TRUE(split_none(" \n\t").empty());
}

// ---- token windows ----

using test::load;
using test::Loaded;

const char* const kModels[] = {
    "models/vocab/ggml-vocab-llama-spm.gguf", "models/vocab/ggml-vocab-gpt-2.gguf",
    "models/vocab/ggml-vocab-deepseek-coder.gguf", "models/vocab/ggml-vocab-deepseek-llm.gguf",
    "models/stories260K.gguf"};

const std::string kWindowDoc =
    "Once upon a time, there was a little girl named Lily.  She loved to play outside!\n\n"
    "   Leading spaces, tabs\tand \"quotes\" 3.14159 and emoji \xF0\x9F\x98\x80\xF0\x9F\x91\x8D.\n"
    "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C\xE3\x80\x82"
    "\xE3\x81\x93\xE3\x82\x93\xE3\x81\xAB\xE3\x81\xA1\xE3\x81\xAF caf\xC3\xA9 na\xC3\xAFve "
    "<s> </s> [INST] trailing   ";

class WindowTest : public ::testing::TestWithParam<const char*> {};

TEST_P(WindowTest, OffsetsMapTokensBackToText) {
  LLMT_REQUIRE_DATA(GetParam());
  Loaded l = load(GetParam());
  ASSERT_TRUE(l.tok);
  for (const std::string& doc : {kWindowDoc, std::string(" x"), std::string("a  b\n\n\nc"),
                                 std::string(""), std::string("\xE2\x82\xAC\xFF end")}) {
    auto r = tokenize_with_offsets(*l.tok, doc);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    const TokenOffsets& t = *r;
    TokenizeOptions plain;
    plain.add_special = false;
    EXPECT_EQ(t.ids, l.tok->encode(doc, plain));
    ASSERT_EQ(t.offsets.size(), t.ids.size() + 1);
    EXPECT_EQ(t.offsets.front(), 0u);
    EXPECT_EQ(t.offsets.back(), doc.size());
    for (size_t i = 0; i + 1 < t.offsets.size(); ++i) EXPECT_LE(t.offsets[i], t.offsets[i + 1]);
  }
}

TEST_P(WindowTest, ExactTokenCountsAndSpans) {
  LLMT_REQUIRE_DATA(GetParam());
  Loaded l = load(GetParam());
  ASSERT_TRUE(l.tok);
  const std::string& doc = kWindowDoc;
  auto t = tokenize_with_offsets(*l.tok, doc);
  ASSERT_TRUE(t.is_ok());
  const int32_t n = static_cast<int32_t>(t->ids.size());
  ASSERT_GT(n, 40);
  for (auto [n_window, n_overlap] :
       {std::pair{1, 0}, {7, 0}, {7, 3}, {16, 15}, {10, 2}, {n, 0}, {n + 5, 4}}) {
    SCOPED_TRACE(std::to_string(n_window) + ":" + std::to_string(n_overlap));
    auto r = split_token_windows(doc, *l.tok, n_window, n_overlap);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    const std::vector<Piece>& w = *r;
    const int32_t step = n_window - n_overlap;
    // Expected windows: starts 0, step, 2 step, ... until one reaches the last token. A window
    // whose tokens stand for no bytes is dropped, so match by start token.
    size_t k = 0;
    int32_t n_expected = 0;
    for (int32_t first = 0; first < n; first += step) {
      const int32_t last = std::min(first + n_window, n);
      ++n_expected;
      size_t b = t->offsets[first], e = t->offsets[last];
      if (b == e) continue;
      ASSERT_LT(k, w.size());
      const Piece& p = w[k];
      EXPECT_EQ(p.index, static_cast<int32_t>(k));
      EXPECT_EQ(p.level, PieceLevel::kWindow);
      EXPECT_EQ(p.n_tokens, last - first) << "window " << k;
      if (last < n) {
        EXPECT_EQ(p.n_tokens, n_window);
      }
      // The span is the tokens' bytes, widened only to whole characters.
      EXPECT_LE(p.begin, b);
      EXPECT_GE(p.end, e);
      EXPECT_LE(b - p.begin, 3u);
      EXPECT_LE(p.end - e, 3u);
      if (p.begin > 0) {
        EXPECT_NE(static_cast<unsigned char>(doc[p.begin]) & 0xC0, 0x80);
      }
      if (p.end < doc.size()) {
        EXPECT_NE(static_cast<unsigned char>(doc[p.end]) & 0xC0, 0x80);
      }
      ++k;
      if (last == n) break;
    }
    EXPECT_EQ(k, w.size());
    EXPECT_EQ(n_expected, (n <= n_window) ? 1 : 1 + (n - n_window + step - 1) / step);
    EXPECT_EQ(w.back().end, doc.size());
    EXPECT_EQ(w.front().begin, 0u);
    // The non-overlapping parts (each window's first `step` tokens, the last window whole)
    // concatenate to the document, and re-tokenizing that gives the document's tokens.
    std::string joined;
    for (int32_t first = 0; first < n; first += step) {
      const int32_t last = std::min(first + n_window, n);
      const int32_t stop = last == n ? n : first + step;
      joined += doc.substr(t->offsets[first], t->offsets[stop] - t->offsets[first]);
      if (last == n) break;
    }
    EXPECT_EQ(joined, doc);
    TokenizeOptions plain;
    plain.add_special = false;
    EXPECT_EQ(l.tok->encode(joined, plain), t->ids);
    // Each window's own tokens decode to the bytes of its span.
    size_t wi = 0;
    for (int32_t first = 0; first < n && wi < w.size(); first += step) {
      const int32_t last = std::min(first + n_window, n);
      if (t->offsets[first] == t->offsets[last]) continue;
      std::string bytes;
      for (int32_t i = first; i < last; ++i) {
        bytes += doc.substr(t->offsets[i], t->offsets[i + 1] - t->offsets[i]);
      }
      const std::string span(w[wi].text(doc));
      EXPECT_NE(span.find(bytes), std::string::npos) << "window " << wi;
      ++wi;
      if (last == n) break;
    }
  }
}

TEST_P(WindowTest, RandomTextsMapBack) {
  LLMT_REQUIRE_DATA(GetParam());
  Loaded l = load(GetParam());
  ASSERT_TRUE(l.tok);
  uint32_t state = 777;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  const std::string alphabet[] = {
      "a",    "Th",   " ",   "  ", "\n",       "\t", ".",   "\xE4\xBD\xA0", "\xF0\x9F\x98\x80",
      "\xFF", "\xC3", "<s>", "1",  "\xC3\xA9", "'s", "\r\n"};
  for (int round = 0; round < 300; ++round) {
    std::string doc;
    const int n = static_cast<int>(next() % 60);
    for (int i = 0; i < n; ++i) doc += alphabet[(next() >> 8) % std::size(alphabet)];
    auto t = tokenize_with_offsets(*l.tok, doc);
    ASSERT_TRUE(t.is_ok()) << t.status().to_string();
    EXPECT_EQ(t->offsets.back(), doc.size());
    ASSERT_EQ(t->offsets.size(), t->ids.size() + 1);
    for (size_t i = 0; i + 1 < t->offsets.size(); ++i) EXPECT_LE(t->offsets[i], t->offsets[i + 1]);
    auto w = split_token_windows(doc, *l.tok, 5, 2);
    ASSERT_TRUE(w.is_ok());
    int32_t covered = 0;
    for (const Piece& p : *w) covered = std::max(covered, p.n_tokens);
    EXPECT_LE(covered, 5);
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabs, WindowTest, ::testing::ValuesIn(kModels), [](const auto& info) {
  std::string name = std::filesystem::path(info.param).stem().string();
  for (char& c : name)
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
});

TEST(SplitTokenWindows, BadArguments) {
  LLMT_REQUIRE_DATA(kModels[1]);
  Loaded l = load(kModels[1]);
  ASSERT_TRUE(l.tok);
  for (auto [nw, no] : {std::pair{0, 0}, {-1, 0}, {4, 4}, {4, 5}, {4, -1}}) {
    auto r = split_token_windows("text", *l.tok, nw, no);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
  auto empty = split_token_windows("", *l.tok, 4, 1);
  ASSERT_TRUE(empty.is_ok());
  EXPECT_TRUE(empty->empty());
  // Exactly: "Hello world" in GPT-2 is "Hello", " world".
  auto two = split_token_windows("Hello world", *l.tok, 1, 0);
  ASSERT_TRUE(two.is_ok());
  EXPECT_EQ(texts_of("Hello world", *two), (std::vector<std::string>{"Hello", " world"}));
}

TEST(SplitTokenWindows, SpmLeadingSpaceBelongsToNoBytes) {
  LLMT_REQUIRE_DATA(kModels[0]);
  Loaded l = load(kModels[0]);
  ASSERT_TRUE(l.tok);
  const std::string doc = "Hello world and more";
  auto t = tokenize_with_offsets(*l.tok, doc);
  ASSERT_TRUE(t.is_ok());
  // "▁Hello" stands for "Hello" (the inserted space is not in the text), "▁world" for " world".
  ASSERT_GE(t->ids.size(), 2u);
  EXPECT_EQ(doc.substr(t->offsets[0], t->offsets[1]), "Hello");
  EXPECT_EQ(doc.substr(t->offsets[1], t->offsets[2] - t->offsets[1]), " world");
  auto w = split_token_windows(doc, *l.tok, 2, 1);
  ASSERT_TRUE(w.is_ok());
  EXPECT_EQ(texts_of(doc, *w),
            (std::vector<std::string>{"Hello world", " world and", " and more"}));
}

// A SentencePiece-like tokenizer without byte fallback: a space is inserted before the text,
// words of its vocabulary and single ASCII characters are tokens, every non-ASCII character is
// the unknown token (piece ""). Exercises the inserted-space and unknown-token rules.
class FakeSpm : public Tokenizer {
 public:
  FakeSpm() : pieces_{"", " hello", " world", " ", "  "} {
    for (int c = 0x21; c < 0x7F; ++c) pieces_.push_back(std::string(1, static_cast<char>(c)));
  }
  TokenizerKind kind() const override { return TokenizerKind::kSpm; }
  std::string_view model_name() const override { return "fake"; }
  std::string_view pre_name() const override { return "default"; }
  int32_t n_vocab() const override { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const override { return -1; }
  int32_t eos_id() const override { return -1; }
  int32_t eot_id() const override { return -1; }
  int32_t unk_id() const override { return 0; }
  bool add_bos() const override { return false; }
  bool add_eos() const override { return false; }
  bool is_eog(int32_t) const override { return false; }
  TokenType token_type(int32_t id) const override {
    return id == 0 ? TokenType::kUnknown : TokenType::kNormal;
  }
  std::vector<int32_t> encode(std::string_view text, const TokenizeOptions&) const override {
    std::vector<int32_t> ids;
    if (text.empty()) return ids;
    std::string s(1, ' ');
    s += text;
    for (size_t i = 0; i < s.size();) {
      int32_t best = -1;
      for (size_t id = 1; id < pieces_.size(); ++id) {
        if (std::string_view(s).substr(i).starts_with(pieces_[id]) &&
            (best < 0 || pieces_[id].size() > pieces_[static_cast<size_t>(best)].size())) {
          best = static_cast<int32_t>(id);
        }
      }
      if (best > 0) {
        ids.push_back(best);
        i += pieces_[static_cast<size_t>(best)].size();
      } else {  // unknown: one UTF-8 character
        ids.push_back(0);
        ++i;
        while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) ++i;
      }
    }
    return ids;
  }
  std::string_view token_text(int32_t id) const override { return pieces_.at(id); }
  std::string token_to_piece(int32_t id, bool) const override { return pieces_.at(id); }
  int32_t find_token(std::string_view) const override { return -1; }

 private:
  std::vector<std::string> pieces_;
};

TEST(SplitTokenWindows, UnknownTokensAndInsertedSpaces) {
  FakeSpm tok;
  const std::string doc = "hello w\xC3\xB6rld  world\xE4\xBD\xA0!";
  auto t = tokenize_with_offsets(tok, doc);
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  std::vector<std::string> parts;
  for (size_t i = 0; i + 1 < t->offsets.size(); ++i) {
    parts.push_back(doc.substr(t->offsets[i], t->offsets[i + 1] - t->offsets[i]));
  }
  EXPECT_EQ(parts, (std::vector<std::string>{"hello", " ", "w", "\xC3\xB6", "r", "l", "d", "  ",
                                             "w", "o", "r", "l", "d", "\xE4\xBD\xA0", "!"}));
  auto w = split_token_windows(doc, tok, 4, 1);
  ASSERT_TRUE(w.is_ok());
  EXPECT_EQ(texts_of(doc, *w), (std::vector<std::string>{"hello w\xC3\xB6", "\xC3\xB6rld", "d  wo",
                                                         "orld", "d\xE4\xBD\xA0!"}));
  // A text starting with a space: the token "  " is the inserted space and the real one.
  auto s = tokenize_with_offsets(tok, " hello");
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(s->offsets, (std::vector<size_t>{0, 1, 2, 3, 4, 5, 6}));
}

// ---- hierarchical ----

TEST(SplitHierarchical, LevelsAndParentsWithoutTokenizer) {
  const std::string doc =
      "First para. Two sentences.\n\nSecond para one sentence.\n\n\n  Third. A. B!";
  auto r = split_hierarchical(doc, nullptr, 8);
  ASSERT_TRUE(r.is_ok());
  const std::vector<Piece>& p = *r;
  std::vector<std::string> texts = texts_of(doc, p);
  EXPECT_EQ(texts,
            (std::vector<std::string>{"First para. Two sentences.", "First para.", "Two sentences.",
                                      "Second para one sentence.", "Second para one sentence.",
                                      "Third. A. B!", "Third.", "A. B!"}));
  const std::vector<PieceLevel> levels = {
      PieceLevel::kParagraph, PieceLevel::kSentence,  PieceLevel::kSentence, PieceLevel::kParagraph,
      PieceLevel::kSentence,  PieceLevel::kParagraph, PieceLevel::kSentence, PieceLevel::kSentence};
  const std::vector<int32_t> parents = {-1, 0, 0, -1, 3, -1, 5, 5};
  const std::vector<int32_t> children = {2, 0, 0, 1, 0, 2, 0, 0};
  ASSERT_EQ(p.size(), levels.size());
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_EQ(p[i].index, static_cast<int32_t>(i));
    EXPECT_EQ(p[i].level, levels[i]) << i;
    EXPECT_EQ(p[i].parent, parents[i]) << i;
    EXPECT_EQ(p[i].n_children, children[i]) << i;
    EXPECT_EQ(p[i].n_tokens, -1);
  }
  EXPECT_EQ(leaf_indices(p), (std::vector<int32_t>{1, 2, 4, 6, 7}));
}

TEST(SplitHierarchical, LongSentencesGetWindows) {
  LLMT_REQUIRE_DATA(kModels[1]);
  Loaded l = load(kModels[1]);
  ASSERT_TRUE(l.tok);
  const std::string long_sentence =
      "This sentence goes on and on with many words so that it is longer than the limit";
  const std::string doc = "Short one. " + long_sentence + ".\n\nTiny.";
  const int32_t max_tokens = 6;
  auto r = split_hierarchical(doc, l.tok.get(), max_tokens);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const std::vector<Piece>& p = *r;
  TokenizeOptions plain;
  plain.add_special = false;
  ASSERT_GE(p.size(), 6u);
  EXPECT_EQ(p[0].level, PieceLevel::kParagraph);
  EXPECT_EQ(p[1].text(doc), "Short one.");
  EXPECT_EQ(p[1].n_tokens, 3);
  EXPECT_TRUE(p[1].is_leaf());
  EXPECT_EQ(p[2].text(doc), long_sentence + ".");
  const int32_t n_long = static_cast<int32_t>(l.tok->encode(long_sentence + ".", plain).size());
  EXPECT_EQ(p[2].n_tokens, n_long);
  EXPECT_EQ(p[2].n_children, (n_long + max_tokens - 1) / max_tokens);
  // Windows: children of the long sentence, in order, tiling it exactly (no overlap).
  size_t k = 3;
  size_t cursor = p[2].begin;
  int32_t total = 0;
  for (; k < p.size() && p[k].level == PieceLevel::kWindow; ++k) {
    EXPECT_EQ(p[k].parent, 2);
    EXPECT_EQ(p[k].begin, cursor);
    EXPECT_LE(p[k].n_tokens, max_tokens);
    total += p[k].n_tokens;
    cursor = p[k].end;
    EXPECT_TRUE(p[k].is_leaf());
  }
  EXPECT_EQ(cursor, p[2].end);
  EXPECT_EQ(total, n_long);
  ASSERT_EQ(k + 2, p.size());
  EXPECT_EQ(p[k].level, PieceLevel::kParagraph);
  EXPECT_EQ(p[k + 1].text(doc), "Tiny.");
  EXPECT_EQ(p[k + 1].parent, static_cast<int32_t>(k));
  // Leaves in document order.
  size_t prev = 0;
  for (int32_t i : leaf_indices(p)) {
    EXPECT_GE(p[static_cast<size_t>(i)].begin, prev);
    prev = p[static_cast<size_t>(i)].end;
  }
  auto bad = split_hierarchical(doc, l.tok.get(), 0);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

// ---- --split parsing ----

TEST(ParseSplitSpec, Valid) {
  struct Case {
    const char* text;
    SplitKind kind;
    int32_t n_window, n_overlap, max_tokens;
    const char* canonical;
  };
  const Case cases[] = {
      {"none", SplitKind::kNone, 0, 0, 512, "none"},
      {"sentence", SplitKind::kSentence, 0, 0, 512, "sentence"},
      {"paragraph", SplitKind::kParagraph, 0, 0, 512, "paragraph"},
      {"window:128", SplitKind::kWindow, 128, 0, 512, "window:128:0"},
      {"window:128:16", SplitKind::kWindow, 128, 16, 512, "window:128:16"},
      {"window:1:0", SplitKind::kWindow, 1, 0, 512, "window:1:0"},
      {"hierarchical", SplitKind::kHierarchical, 0, 0, 512, "hierarchical:512"},
      {"hierarchical:64", SplitKind::kHierarchical, 0, 0, 64, "hierarchical:64"},
  };
  for (const Case& c : cases) {
    auto r = parse_split_spec(c.text);
    ASSERT_TRUE(r.is_ok()) << c.text << ": " << r.status().to_string();
    EXPECT_EQ(r->kind, c.kind);
    EXPECT_EQ(r->n_window, c.n_window);
    EXPECT_EQ(r->n_overlap, c.n_overlap);
    EXPECT_EQ(r->max_tokens, c.max_tokens);
    EXPECT_EQ(to_string(*r), c.canonical);
    auto again = parse_split_spec(to_string(*r));
    ASSERT_TRUE(again.is_ok());
    EXPECT_EQ(to_string(*again), c.canonical);
  }
  EXPECT_TRUE(needs_tokenizer(*parse_split_spec("window:4")));
  EXPECT_FALSE(needs_tokenizer(*parse_split_spec("sentence")));
}

TEST(ParseSplitSpec, Invalid) {
  struct Case {
    const char* text;
    const char* message_part;
  };
  const Case cases[] = {
      {"", "unknown splitter ''"},
      {"sentences", "unknown splitter 'sentences'"},
      {"Sentence", "unknown splitter"},
      {"sentence:3", "takes no parameters"},
      {"none:", "takes no parameters"},
      {"window", "expected window:N or window:N:M"},
      {"window:", "window size N is empty"},
      {"window:0", "at least 1"},
      {"window:abc", "'abc' is not a non-negative integer"},
      {"window:-4", "not a non-negative integer"},
      {"window:+4", "not a non-negative integer"},
      {"window:4:4", "overlap M must be less than"},
      {"window:4:9", "overlap M must be less than"},
      {"window:4:", "overlap M is empty"},
      {"window:4:1:2", "expected window:N or window:N:M"},
      {"window:99999999999999999999", "larger than"},
      {"hierarchical:0", "at least 1"},
      {"hierarchical:x", "not a non-negative integer"},
      {"hierarchical:4:5", "expected hierarchical"},
  };
  for (const Case& c : cases) {
    auto r = parse_split_spec(c.text);
    ASSERT_FALSE(r.is_ok()) << c.text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.message_part), std::string::npos)
        << c.text << " -> " << r.status().message();
    EXPECT_NE(r.status().message().find(std::string("'") + c.text + "'"), std::string::npos)
        << r.status().message();
  }
}

TEST(Split, Dispatch) {
  const std::string doc = "A b. C d.\n\nE f.";
  EXPECT_EQ(split(doc, *parse_split_spec("sentence"), nullptr)->size(), 3u);
  EXPECT_EQ(split(doc, *parse_split_spec("paragraph"), nullptr)->size(), 2u);
  EXPECT_EQ(split(doc, *parse_split_spec("none"), nullptr)->size(), 1u);
  EXPECT_EQ(split(doc, *parse_split_spec("hierarchical"), nullptr)->size(), 5u);
  auto w = split(doc, *parse_split_spec("window:4"), nullptr);
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmt::tasks
