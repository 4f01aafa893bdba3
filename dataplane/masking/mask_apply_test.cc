#include "dataplane/masking/mask_apply.h"

#include <gtest/gtest.h>
#include <openssl/hmac.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <optional>

#include "dataplane/pgwire/messages.h"

// GCC cannot see that every operator new below comes from malloc.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
// Counts heap allocations so the empty-plan fast path can be shown to allocate nothing.
static std::atomic<uint64_t> g_allocations{0};
void* operator new(size_t n) {
  ++g_allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace pgwarden::masking {
namespace {

using Row = std::vector<std::optional<std::string>>;

std::string data_row_body(const Row& row) {
  std::vector<std::optional<std::string_view>> views;
  for (const auto& v : row) views.push_back(v ? std::optional<std::string_view>(*v) : std::nullopt);
  std::string msg;
  pgwire::append_data_row(msg, views);
  return msg.substr(5);
}

Row parse_row_message(const std::string& msg) {
  EXPECT_GE(msg.size(), 5u);
  EXPECT_EQ(msg[0], 'D');
  uint32_t len = pgwire::load_be32(reinterpret_cast<const uint8_t*>(msg.data() + 1));
  EXPECT_EQ(len, msg.size() - 1);
  pgwire::DataRow row;
  EXPECT_TRUE(pgwire::parse(pgwire::as_bytes(std::string_view(msg).substr(5)), &row).ok());
  Row out;
  for (const auto& v : row.columns) {
    out.push_back(v.is_null ? std::nullopt : std::optional<std::string>(std::string(v.text())));
  }
  return out;
}

std::string key_bytes() { return std::string(32, '\x42'); }

std::string reference_hmac_hex(std::string_view key, std::string_view value) {
  unsigned char mac[32];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(value.data()), value.size(), mac, &n);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    out += kHex[mac[i] >> 4];
    out += kHex[mac[i] & 15];
  }
  return out;
}

// A stand-in for rules::detect: finds US SSN-like "ddd-dd-dddd" runs and the word "secret".
void test_detector(std::string_view v, std::vector<DetectSpan>* spans) {
  for (size_t i = 0; i + 11 <= v.size(); ++i) {
    auto d = [&](size_t k) { return v[i + k] >= '0' && v[i + k] <= '9'; };
    if (d(0) && d(1) && d(2) && v[i + 3] == '-' && d(4) && d(5) && v[i + 6] == '-' && d(7) &&
        d(8) && d(9) && d(10)) {
      spans->push_back({i, i + 11});
    }
  }
  for (size_t at = v.find("secret"); at != std::string_view::npos; at = v.find("secret", at + 1)) {
    spans->push_back({at, at + 6});
  }
}

struct ValueCase {
  const char* name;
  MaskFunction function;
  std::optional<std::string> input;
  std::optional<std::string> expected;
  uint32_t type_oid = 25;
  int16_t format = 0;
  int keep_last = 4;
  std::string text = "****";
};

class MaskValueTest : public ::testing::TestWithParam<ValueCase> {};

TEST_P(MaskValueTest, MasksSecondColumnAndLeavesOthers) {
  const ValueCase& c = GetParam();
  RowMaskPlan plan;
  plan.column_count = 3;
  plan.columns.resize(2);
  plan.columns[1] = ColumnMask{c.function, c.text, c.keep_last, c.type_oid, c.format};
  plan.hash_key = key_bytes();
  auto masker = RowMasker::create(plan, test_detector);
  ASSERT_TRUE(masker.is_ok()) << masker.status().to_string();
  Row in = {std::string("42"), c.input, std::nullopt};
  std::string body = data_row_body(in);
  std::string out = "prefix";
  auto r = (*masker)->mask_data_row(pgwire::as_bytes(body), out);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  Row expected = {std::string("42"), c.expected, std::nullopt};
  if (!*r) {
    EXPECT_EQ(out, "prefix");
    EXPECT_EQ(in, expected) << "row unchanged but a change was expected";
    return;
  }
  ASSERT_EQ(out.substr(0, 6), "prefix");
  EXPECT_EQ(parse_row_message(out.substr(6)), expected);
}

const std::string kHuge(16 << 20, 'x');

INSTANTIATE_TEST_SUITE_P(
    Functions, MaskValueTest,
    ::testing::Values(
        ValueCase{"RedactDefault", MaskFunction::kRedact, "alice@example.com", "****"},
        ValueCase{"RedactCustomText", MaskFunction::kRedact, "x", "[hidden]", 25, 0, 4, "[hidden]"},
        ValueCase{"RedactEmptyValue", MaskFunction::kRedact, "", "****"},
        ValueCase{"RedactKeepsNull", MaskFunction::kRedact, std::nullopt, std::nullopt},
        ValueCase{"PartialCard", MaskFunction::kPartial, "4111111111111111", "************1111"},
        ValueCase{"PartialCountsUtf8Characters", MaskFunction::kPartial, "Zo\xc3\xab M\xc3\xbcller",
                  "******ller"},
        ValueCase{"PartialKeepsMultibyteTail", MaskFunction::kPartial,
                  "\xe6\x9d\xb1\xe4\xba\xac\xe9\x83\xbd\xe6\xb8\xaf", "**\xe9\x83\xbd\xe6\xb8\xaf",
                  25, 0, 2},
        ValueCase{"PartialNeverRevealsMoreThanHalf", MaskFunction::kPartial, "abcd", "**cd"},
        ValueCase{"PartialShortValue", MaskFunction::kPartial, "x", "*"},
        ValueCase{"PartialEmptyValue", MaskFunction::kPartial, "", ""},
        ValueCase{"PartialKeepZero", MaskFunction::kPartial, "abc", "***", 25, 0, 0},
        ValueCase{"PartialHugeValue", MaskFunction::kPartial, kHuge,
                  std::string((16 << 20) - 4, '*') + "xxxx"},
        ValueCase{"HashIsHmacSha256Hex", MaskFunction::kHash, "alice@example.com",
                  reference_hmac_hex(std::string(32, '\x42'), "alice@example.com")},
        ValueCase{"HashOfEmptyValue", MaskFunction::kHash, "",
                  reference_hmac_hex(std::string(32, '\x42'), "")},
        ValueCase{"EmailKeepsDomain", MaskFunction::kEmail, "alice@example.com", "***@example.com"},
        ValueCase{"EmailUsesLastAt", MaskFunction::kEmail, "a@b@c.org", "***@c.org"},
        ValueCase{"EmailWithoutAt", MaskFunction::kEmail, "not-an-email", "***"},
        ValueCase{"EmailWithEmptyDomain", MaskFunction::kEmail, "bob@", "***"},
        ValueCase{"NullMakesNull", MaskFunction::kNull, "123-45-6789", std::nullopt},
        ValueCase{"BinaryTextIsString", MaskFunction::kPartial, "abcdefgh", "****efgh", 25, 1},
        ValueCase{"BinaryVarcharIsString", MaskFunction::kEmail, "a@x.io", "***@x.io", 1043, 1},
        ValueCase{"BinaryIntegerBecomesNull", MaskFunction::kRedact,
                  std::string("\x00\x00\x00\x2a", 4), std::nullopt, 23, 1},
        ValueCase{"TextFormatIntegerIsRedactedAsText", MaskFunction::kRedact, "42", "****", 23, 0},
        ValueCase{"DetectReplacesSpanKeepingLength", MaskFunction::kDetect,
                  "ssn 123-45-6789 on file", "ssn *********** on file"},
        ValueCase{"DetectTwoSpans", MaskFunction::kDetect, "secret and 111-22-3333",
                  "****** and ***********"},
        ValueCase{"DetectWithoutMatchLeavesRow", MaskFunction::kDetect, "nothing here",
                  "nothing here"},
        ValueCase{"DetectOnBinaryIntegerIsNull", MaskFunction::kDetect,
                  std::string("\x00\x00\x00\x01", 4), std::nullopt, 23, 1},
        ValueCase{"DetectOnBinaryJsonScansItsText", MaskFunction::kDetect,
                  R"({"ssn": "123-45-6789"})", R"({"ssn": "***********"})", 114, 1},
        ValueCase{"DetectOnBinaryJsonbScansAfterVersionByte", MaskFunction::kDetect,
                  std::string("\x01") + R"({"ssn": "123-45-6789"})",
                  std::string("\x01") + R"({"ssn": "***********"})", 3802, 1},
        ValueCase{"DetectOnBinaryJsonbUnknownVersionIsNull", MaskFunction::kDetect,
                  std::string("\x02") + R"({"ssn": "123-45-6789"})", std::nullopt, 3802, 1},
        ValueCase{"RedactOnBinaryJsonIsNull", MaskFunction::kRedact, R"({"a": 1})", std::nullopt,
                  114, 1},
        ValueCase{"DetectOnBinaryArrayIsNull", MaskFunction::kDetect,
                  std::string("\x00\x00\x00\x01", 4), std::nullopt, 1009, 1}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(MaskIgnoresValue, OnlyFunctionsWhoseOutputDoesNotDependOnTheValue) {
  auto mask = [](MaskFunction f, uint32_t type_oid, int16_t format) {
    ColumnMask m;
    m.function = f;
    m.type_oid = type_oid;
    m.format = format;
    return m;
  };
  EXPECT_TRUE(mask_ignores_value(mask(MaskFunction::kRedact, 25, 0)));
  EXPECT_TRUE(mask_ignores_value(mask(MaskFunction::kNull, 25, 1)));
  EXPECT_FALSE(mask_ignores_value(mask(MaskFunction::kNone, 25, 0)));
  EXPECT_FALSE(mask_ignores_value(mask(MaskFunction::kNone, 17, 1)));
  for (MaskFunction f :
       {MaskFunction::kPartial, MaskFunction::kHash, MaskFunction::kEmail, MaskFunction::kDetect}) {
    EXPECT_FALSE(mask_ignores_value(mask(f, 25, 0)));
    EXPECT_FALSE(mask_ignores_value(mask(f, 25, 1)));  // binary text: rewritten as text
  }
  // Binary values of non-text types become NULL under every function but detect.
  EXPECT_TRUE(mask_ignores_value(mask(MaskFunction::kHash, 17, 1)));
  EXPECT_FALSE(mask_ignores_value(mask(MaskFunction::kHash, 17, 0)));
  EXPECT_FALSE(mask_ignores_value(mask(MaskFunction::kDetect, 3802, 1)));
}

TEST(RowMasker, HashIsDeterministicAndKeyed) {
  RowMaskPlan plan;
  plan.columns = {ColumnMask{MaskFunction::kHash}};
  plan.hash_key = key_bytes();
  auto a = RowMasker::create(plan);
  plan.hash_key = std::string(32, '\x43');
  auto b = RowMasker::create(plan);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  std::string body = data_row_body({std::string("v")});
  std::string o1, o2, o3;
  ASSERT_TRUE(*(*a)->mask_data_row(pgwire::as_bytes(body), o1));
  ASSERT_TRUE(*(*a)->mask_data_row(pgwire::as_bytes(body), o2));
  ASSERT_TRUE(*(*b)->mask_data_row(pgwire::as_bytes(body), o3));
  EXPECT_EQ(o1, o2);
  EXPECT_NE(o1, o3);
}

TEST(RowMasker, EmptyPlanForwardsWithoutParsingOrAllocating) {
  auto masker = RowMasker::create(RowMaskPlan{});
  ASSERT_TRUE(masker.is_ok());
  std::string body = data_row_body({std::string("a"), std::string("b")});
  std::string out;
  out.reserve(64);
  uint64_t before = g_allocations.load();
  for (int i = 0; i < 1000; ++i) {
    auto r = (*masker)->mask_data_row(pgwire::as_bytes(body), out);
    ASSERT_TRUE(r.is_ok());
    ASSERT_FALSE(*r);
  }
  EXPECT_EQ(g_allocations.load(), before);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ((*masker)->rows_passed(), 1000u);
}

TEST(RowMasker, SteadyStateMaskingDoesNotAllocatePerRow) {
  RowMaskPlan plan;
  plan.columns = {ColumnMask{MaskFunction::kPartial}, ColumnMask{MaskFunction::kHash},
                  ColumnMask{MaskFunction::kDetect}};
  plan.hash_key = key_bytes();
  auto masker = RowMasker::create(plan, test_detector);
  ASSERT_TRUE(masker.is_ok());
  std::string body = data_row_body(
      {std::string("4111111111111111"), std::string("alice"), std::string("id 123-45-6789")});
  std::string out;
  ASSERT_TRUE(*(*masker)->mask_data_row(pgwire::as_bytes(body), out));  // warms buffers
  uint64_t before = g_allocations.load();
  for (int i = 0; i < 1000; ++i) {
    out.clear();
    ASSERT_TRUE(*(*masker)->mask_data_row(pgwire::as_bytes(body), out));
  }
  EXPECT_EQ(g_allocations.load(), before);
}

TEST(RowMasker, DetectorSpansAreClippedMergedAndAlignedToCharacters) {
  RowMaskPlan plan;
  plan.columns = {ColumnMask{MaskFunction::kDetect}};
  // Value "aé€b": a(1) é(2) €(3) b(1) = 7 bytes. Spans: mid-é to mid-€, an overlap, and one
  // past the end.
  auto det = [](std::string_view v, std::vector<DetectSpan>* s) {
    s->push_back({2, 4});
    s->push_back({3, 5});
    s->push_back({6, 100});
    s->push_back({50, 60});
    (void)v;
  };
  auto masker = RowMasker::create(plan, det);
  ASSERT_TRUE(masker.is_ok());
  std::string body =
      data_row_body({std::string("a\xc3\xa9\xe2\x82\xac"
                                 "b")});
  std::string out;
  ASSERT_TRUE(*(*masker)->mask_data_row(pgwire::as_bytes(body), out));
  EXPECT_EQ(parse_row_message(out), Row{std::string("a***")});
}

TEST(RowMasker, DetectPlanWithoutDetectorIsRefused) {
  RowMaskPlan plan;
  plan.columns = {ColumnMask{MaskFunction::kDetect}};
  EXPECT_EQ(RowMasker::create(plan).status().code(), StatusCode::kFailedPrecondition);
}

TEST(RowMasker, HashPlanWithoutKeyIsRefused) {
  RowMaskPlan plan;
  plan.columns = {ColumnMask{MaskFunction::kHash}};
  EXPECT_FALSE(RowMasker::create(plan).is_ok());
}

struct MalformedCase {
  const char* name;
  std::string body;
};

class MalformedDataRowTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedDataRowTest, IsRejectedWithProtocolViolationAndAppendsNothing) {
  RowMaskPlan plan;
  plan.column_count = 2;
  plan.columns = {ColumnMask{MaskFunction::kRedact}};
  auto masker = RowMasker::create(plan);
  ASSERT_TRUE(masker.is_ok());
  std::string out = "keep";
  auto r = (*masker)->mask_data_row(pgwire::as_bytes(GetParam().body), out);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().sqlstate(), "08P01");
  EXPECT_EQ(out, "keep");
  EXPECT_EQ((*masker)->rows_malformed(), 1u);
}

INSTANTIATE_TEST_SUITE_P(
    Bodies, MalformedDataRowTest,
    ::testing::Values(MalformedCase{"Empty", ""},
                      MalformedCase{"HalfCount", std::string("\x00", 1)},
                      MalformedCase{"MissingColumns", std::string("\x00\x02", 2)},
                      MalformedCase{"LengthPastEnd", std::string("\x00\x02\x00\x00\x00\x10"
                                                                 "ab",
                                                                 8)},
                      MalformedCase{"NegativeLength",
                                    std::string("\x00\x02\xff\xff\xff\xfe\xff\xff\xff\xff", 10)},
                      MalformedCase{"TrailingBytes",
                                    std::string("\x00\x02\xff\xff\xff\xff\xff\xff\xff\xff!", 11)},
                      MalformedCase{"NegativeCount", std::string("\xff\xff", 2)},
                      MalformedCase{"WrongColumnCount",
                                    std::string("\x00\x01\x00\x00\x00\x01x", 7)}),
    [](const auto& info) { return std::string(info.param.name); });

struct CopyCase {
  const char* name;
  MaskFunction function;
  std::string line;
  std::string expected;  // "" = unchanged
  std::string text = "****";
};

class CopyLineTest : public ::testing::TestWithParam<CopyCase> {};

TEST_P(CopyLineTest, MasksSecondField) {
  const CopyCase& c = GetParam();
  RowMaskPlan plan;
  plan.column_count = 3;
  plan.columns.resize(2);
  plan.columns[1] = ColumnMask{c.function, c.text};
  plan.hash_key = key_bytes();
  auto masker = RowMasker::create(plan, test_detector);
  ASSERT_TRUE(masker.is_ok());
  std::string out;
  auto r = (*masker)->mask_copy_line(c.line, out);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  if (c.expected.empty()) {
    EXPECT_FALSE(*r);
    EXPECT_TRUE(out.empty());
  } else {
    EXPECT_TRUE(*r);
    EXPECT_EQ(out, c.expected);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Lines, CopyLineTest,
    ::testing::Values(
        CopyCase{"EmailWithNewline", MaskFunction::kEmail, "1\talice@example.com\tx\n",
                 "1\t***@example.com\tx\n"},
        CopyCase{"NullStaysNull", MaskFunction::kRedact, "1\t\\N\tx\n", ""},
        CopyCase{"NullFunctionWritesNullMarker", MaskFunction::kNull, "1\tv\tx\n", "1\t\\N\tx\n"},
        CopyCase{"EscapedTabDecodedBeforeMasking", MaskFunction::kPartial, "1\tab\\tcdef\tx\n",
                 "1\t****def\tx\n"},
        CopyCase{"ReplacementIsEscaped", MaskFunction::kRedact, "1\tv\tx\n", "1\ta\\tb\\\\c\tx\n",
                 "a\tb\\c"},
        CopyCase{"OctalAndHexEscapesDecoded", MaskFunction::kDetect, "1\t\\061\\x323-45-6789\tx\n",
                 "1\t***********\tx\n"},
        CopyCase{"DetectWithoutMatchUnchanged", MaskFunction::kDetect, "1\tplain\tx\n", ""},
        CopyCase{"CrLfEndingKept", MaskFunction::kRedact, "1\tv\tx\r\n", "1\t****\tx\r\n"},
        CopyCase{"EndOfDataMarkerPasses", MaskFunction::kRedact, "\\.\n", ""},
        CopyCase{"MultibyteHash", MaskFunction::kHash, "1\t\xc3\xa9\tx\n",
                 "1\t" + reference_hmac_hex(std::string(32, '\x42'), "\xc3\xa9") + "\tx\n"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(RowMasker, CopyLineWithWrongFieldCountIsRejected) {
  RowMaskPlan plan;
  plan.column_count = 3;
  plan.columns = {ColumnMask{MaskFunction::kRedact}};
  auto masker = RowMasker::create(plan);
  ASSERT_TRUE(masker.is_ok());
  std::string out;
  EXPECT_FALSE((*masker)->mask_copy_line("a\tb\n", out).is_ok());
  EXPECT_FALSE((*masker)->mask_copy_line("a\tb\tc\td\n", out).is_ok());
  EXPECT_TRUE(out.empty());
}

TEST(RowMasker, CopyLineThatIsNotExactlyOneRowIsRejected) {
  RowMaskPlan plan;
  plan.column_count = 2;
  plan.columns = {ColumnMask{MaskFunction::kRedact}};
  auto masker = RowMasker::create(plan);
  ASSERT_TRUE(masker.is_ok());
  std::string out;
  EXPECT_FALSE((*masker)->mask_copy_line("a\tb", out).is_ok());          // partial row
  EXPECT_FALSE((*masker)->mask_copy_line("a\tb\nc\td\n", out).is_ok());  // two rows
  EXPECT_FALSE((*masker)->mask_copy_line("a\tb\rc\n", out).is_ok());     // raw CR inside
  EXPECT_FALSE((*masker)->mask_copy_line("", out).is_ok());
  CopyFormat csv = CopyFormat::csv_default();
  EXPECT_FALSE((*masker)->mask_copy_line("\"a,b\n", out, csv).is_ok());     // open quote
  EXPECT_FALSE((*masker)->mask_copy_line("\"a\"x,b\n", out, csv).is_ok());  // text after quote
  EXPECT_FALSE((*masker)->mask_copy_line("a,b\nc,d\n", out, csv).is_ok());  // two rows
  EXPECT_TRUE(out.empty());
}

struct CsvCase {
  const char* name;
  MaskFunction function;
  std::string line;
  std::string expected;  // "" = unchanged
  CopyFormat format = CopyFormat::csv_default();
  std::string text = "****";
};

class CopyCsvTest : public ::testing::TestWithParam<CsvCase> {};

TEST_P(CopyCsvTest, MasksSecondField) {
  const CsvCase& c = GetParam();
  RowMaskPlan plan;
  plan.column_count = 3;
  plan.columns.resize(2);
  plan.columns[1] = ColumnMask{c.function, c.text};
  plan.hash_key = key_bytes();
  auto masker = RowMasker::create(plan, test_detector);
  ASSERT_TRUE(masker.is_ok());
  std::string out;
  auto r = (*masker)->mask_copy_line(c.line, out, c.format);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  if (c.expected.empty()) {
    EXPECT_FALSE(*r);
    EXPECT_TRUE(out.empty());
  } else {
    EXPECT_TRUE(*r);
    EXPECT_EQ(out, c.expected);
  }
}

CopyFormat csv_with(char delimiter, std::string null_marker, char quote, char escape) {
  return CopyFormat{true, delimiter, std::move(null_marker), quote, escape};
}

INSTANTIATE_TEST_SUITE_P(
    Lines, CopyCsvTest,
    ::testing::Values(
        CsvCase{"PlainEmail", MaskFunction::kEmail, "1,alice@example.com,x\n",
                "1,***@example.com,x\n"},
        CsvCase{"QuotedFieldWithDelimiterQuoteAndNewline", MaskFunction::kPartial,
                "\"a,b\",\"x\"\"y\nz1234\",\"q\"\"\"\n", "\"a,b\",*****1234,\"q\"\"\"\n"},
        CsvCase{"EmptyUnquotedIsNull", MaskFunction::kRedact, "1,,x\n", ""},
        CsvCase{"QuotedEmptyIsAValue", MaskFunction::kRedact, "1,\"\",x\n", "1,****,x\n"},
        CsvCase{"NullFunctionWritesUnquotedNullMarker", MaskFunction::kNull, "1,v,x\n", "1,,x\n"},
        CsvCase{"ReplacementWithDelimiterIsQuoted", MaskFunction::kRedact, "1,v,x\n",
                "1,\"a,\"\"b\",x\n", CopyFormat::csv_default(), "a,\"b"},
        CsvCase{"ReplacementEqualToNullMarkerIsQuoted", MaskFunction::kRedact, "1;v;x\n",
                "1;\"NULL\";x\n", csv_with(';', "NULL", '"', '"'), "NULL"},
        CsvCase{"CustomNullMarkerStaysNull", MaskFunction::kRedact, "1;NULL;x\n", "",
                csv_with(';', "NULL", '"', '"')},
        CsvCase{"CustomQuoteAndEscape", MaskFunction::kEmail, "1|'a\\'b@ex|ample'|x\n",
                "1|'***@ex|ample'|x\n", csv_with('|', "", '\'', '\\')},
        CsvCase{"EscapeBeforeEscapeDecoded", MaskFunction::kRedact, "1|'\\\\'|x\n", "1|q\\|x\n",
                csv_with('|', "", '\'', '\\'), "q\\"},
        CsvCase{"DetectInsideQuotedField", MaskFunction::kDetect, "1,\"ssn 123-45-6789, ok\",x\n",
                "1,\"ssn ***********, ok\",x\n"},
        CsvCase{"UnmaskedQuotedFieldsKeptByteForByte", MaskFunction::kRedact,
                "\"1\",\"v\",\"a\"\"\nb\"\r\n", "\"1\",****,\"a\"\"\nb\"\r\n"},
        CsvCase{"EndOfDataMarkerPasses", MaskFunction::kRedact, "\\.\n", ""}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(RowMaskPlanJson, ParsesProtocolResponseAndRoundTrips) {
  auto j = nlohmann::json::parse(R"({"column_count": 4, "detect": true,
      "hash_key": "4242424242424242424242424242424242424242424242424242424242424242",
      "columns": [{"index": 1, "function": "email"},
                  {"index": 2, "function": "partial", "keep_last": 2},
                  {"index": 3, "function": "hash", "type_oid": 25, "format": 1},
                  {"index": 0, "function": "detect"}]})");
  auto plan = RowMaskPlan::from_json(j);
  ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
  EXPECT_EQ(plan->column_count, 4u);
  ASSERT_EQ(plan->columns.size(), 4u);
  EXPECT_EQ(plan->columns[0].function, MaskFunction::kDetect);
  EXPECT_EQ(plan->columns[2].keep_last, 2);
  EXPECT_EQ(plan->columns[3].format, 1);
  EXPECT_EQ(plan->hash_key, key_bytes());
  EXPECT_TRUE(plan->needs_detector());
  auto again = RowMaskPlan::from_json(plan->to_json());
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ(again->to_json(), plan->to_json());
}

TEST(RowMaskPlanJson, RejectsInvalidPlans) {
  const char* bad[] = {
      R"([])",
      R"({"columns": 3})",
      R"({"columns": [{"index": 0, "function": "rot13"}]})",
      R"({"columns": [{"index": -1, "function": "null"}]})",
      R"({"column_count": 2, "columns": [{"index": 2, "function": "null"}]})",
      R"({"columns": [{"index": 0, "function": "null"}, {"index": 0, "function": "redact"}]})",
      R"({"columns": [{"index": 0, "function": "partial", "keep_last": -3}]})",
      R"({"columns": [{"index": 0, "function": "hash"}]})",
      R"({"columns": [{"index": 0, "function": "hash"}], "hash_key": "zz"})",
      R"({"columns": [{"index": 0, "function": "redact", "format": 7}]})",
      R"({"columns": [{"function": "redact"}]})",
  };
  for (const char* text : bad) {
    EXPECT_FALSE(RowMaskPlan::from_json(nlohmann::json::parse(text)).is_ok()) << text;
  }
  nlohmann::json long_text = {
      {"columns", {{{"index", 0}, {"function", "redact"}, {"text", std::string(2000, 'x')}}}}};
  EXPECT_FALSE(RowMaskPlan::from_json(long_text).is_ok());
}

TEST(Utf8Length, CountsCharacterStartsTolerantly) {
  EXPECT_EQ(utf8_length(""), 0u);
  EXPECT_EQ(utf8_length("abc"), 3u);
  EXPECT_EQ(utf8_length("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"), 3u);
  EXPECT_EQ(utf8_length("\x80\x80"), 0u);
}

}  // namespace
}  // namespace pgwarden::masking
