#include "dataplane/masking/error_redaction.h"

#include <gtest/gtest.h>

#include "dataplane/pgwire/messages.h"

namespace pgwarden::masking {
namespace {

namespace pw = pgwarden::pgwire;

// A detector that finds every "SECRET".
void secret_detector(std::string_view value, std::vector<DetectSpan>* spans) {
  for (size_t at = value.find("SECRET"); at != std::string_view::npos;
       at = value.find("SECRET", at + 1)) {
    spans->push_back({at, at + 6});
  }
}

std::string error_message(char type, std::string_view sqlstate, std::string_view message,
                          std::string_view detail) {
  const pw::ErrorField fields[] = {{pw::kFieldSeverity, "ERROR"},
                                   {pw::kFieldSqlstate, sqlstate},
                                   {pw::kFieldMessage, message},
                                   {pw::kFieldDetail, detail},
                                   {'t', "customers"}};
  std::string out;
  pw::append_error_fields(out, type, fields);
  return out;
}

pw::ErrorResponse parse_error(const std::string& whole) {
  pw::ErrorResponse e;
  EXPECT_TRUE(pw::parse(pw::as_bytes(std::string_view(whole).substr(5)), &e).ok());
  return e;
}

TEST(ErrorRedaction, IntegrityViolationDetailIsReplacedInAnyLanguage) {
  for (const char* detail :
       {"Failing row contains (1, null, 123-45-6789).", "Key (ssn)=(123-45-6789) already exists.",
        "La fila que falla contiene (1, null, 123-45-6789)."}) {
    std::string msg = error_message('E', "23502", "null value in column", detail);
    std::string out;
    auto r = redact_error_message('E', std::string_view(msg).substr(5), {}, out);
    ASSERT_TRUE(r.is_ok());
    ASSERT_TRUE(*r);
    pw::ErrorResponse e = parse_error(out);
    EXPECT_EQ(e.get(pw::kFieldDetail), kRedactedRowDetail);
    EXPECT_EQ(e.sqlstate(), "23502");
    EXPECT_EQ(e.message(), "null value in column");
    EXPECT_EQ(e.get('t'), "customers");
    EXPECT_EQ(out.find("123-45-6789"), std::string::npos);
  }
}

// A write through a view WITH CHECK OPTION: 44000, and the base table's whole row in DETAIL.
TEST(ErrorRedaction, CheckOptionViolationDetailIsReplaced) {
  std::string msg = error_message('E', "44000", "new row violates check option for view \"v\"",
                                  "Failing row contains (101, Mallory, 123-45-6789, moved).");
  std::string out;
  auto r = redact_error_message('E', std::string_view(msg).substr(5), {}, out);
  ASSERT_TRUE(r.is_ok());
  ASSERT_TRUE(*r);
  pw::ErrorResponse e = parse_error(out);
  EXPECT_EQ(e.get(pw::kFieldDetail), kRedactedRowDetail);
  EXPECT_EQ(e.sqlstate(), "44000");
  EXPECT_EQ(out.find("123-45-6789"), std::string::npos);
}

TEST(ErrorRedaction, OtherErrorsPassUnchangedWithoutDetections) {
  std::string msg = error_message('E', "22P02", "invalid input syntax", "no detail");
  std::string out;
  auto r = redact_error_message('E', std::string_view(msg).substr(5), secret_detector, out);
  ASSERT_TRUE(r.is_ok());
  EXPECT_FALSE(*r);
  EXPECT_TRUE(out.empty());
}

TEST(ErrorRedaction, DetectedSpansInTextFieldsAreMasked) {
  std::string msg = error_message('N', "01000", "value SECRET here", "and SECRETSECRET");
  std::string out;
  auto r = redact_error_message('N', std::string_view(msg).substr(5), secret_detector, out);
  ASSERT_TRUE(r.is_ok());
  ASSERT_TRUE(*r);
  ASSERT_EQ(out[0], 'N');
  pw::ErrorResponse e = parse_error(out);
  EXPECT_EQ(e.message(), "value ****** here");
  EXPECT_EQ(e.get(pw::kFieldDetail), "and ************");
  EXPECT_EQ(e.get('t'), "customers");  // names are not free text
}

TEST(ErrorRedaction, NotificationPayloadGoesThroughTheDetectors) {
  std::string msg;
  pw::append_notification_response(msg, 42, "chan", "x SECRET y");
  std::string out;
  auto r = redact_notification(std::string_view(msg).substr(5), secret_detector, out);
  ASSERT_TRUE(r.is_ok());
  ASSERT_TRUE(*r);
  pw::NotificationResponse n;
  ASSERT_TRUE(pw::parse(pw::as_bytes(std::string_view(out).substr(5)), &n).ok());
  EXPECT_EQ(n.process_id, 42);
  EXPECT_EQ(n.channel, "chan");
  EXPECT_EQ(n.payload, "x ****** y");
  out.clear();
  r = redact_notification(std::string_view(msg).substr(5), {}, out);
  ASSERT_TRUE(r.is_ok());
  EXPECT_FALSE(*r);
}

TEST(ErrorRedaction, MalformedMessagesAreErrors) {
  std::string out;
  auto r = redact_error_message('E',
                                std::string_view("\x43"
                                                 "23505",
                                                 6),
                                {}, out);
  EXPECT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().sqlstate(), "08P01");
  EXPECT_FALSE(redact_notification("ab", {}, out).is_ok());
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace pgwarden::masking
