// Typed views, parsers and builders for the protocol 3.0 messages the gateway touches.
//
// Protocol reference (field names and types follow it: Int8/Int16/Int32, String, ByteN):
//   https://www.postgresql.org/docs/15/protocol-message-formats.html
//
// Parsing: `FrameError parse(Bytes body, T* out)` validates the whole body of one message
// (Message::body from the Framer, i.e. the bytes after the Int32 length) and fills the view
// `out`. Validation is complete before the call returns: every String has its NUL, every
// count and length fits, no bytes are left over, enumerated values are known. On error `*out`
// is unspecified. Views never copy: their string_views/Bytes/ListViews point into `body`,
// which must outlive them. No parser allocates.
//
// Building: `append_*(std::string& out, ...)` appends one whole message (type byte, Int32
// length, body) to `out`. Strings are written up to their first NUL (a String field cannot
// carry one), so a builder always emits a well-formed message. REQUIRES for list builders:
// at most 32767 elements (Int16 counts).
//
// Thread-safety: all functions are pure; views are immutable.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "dataplane/pgwire/frame_error.h"
#include "dataplane/pgwire/framer.h"
#include "dataplane/pgwire/wire.h"

namespace pgwarden::pgwire {

// ---------------------------------------------------------------------------------------------
// List elements and their (validated) lazy iteration.

// A column value (DataRow), parameter value (Bind) or argument (FunctionCall):
// Int32 length (-1 = NULL) then ByteN.
struct Value {
  bool is_null = true;
  Bytes data;
  std::string_view text() const { return as_string_view(data); }
};

// StartupMessage parameter: String name, String value.
struct Parameter {
  std::string_view name;
  std::string_view value;
};

// RowDescription field.
struct FieldDescription {
  std::string_view name;  // String
  Oid table_oid = 0;      // Int32, 0 if not a table column
  Int16 attnum = 0;       // Int16, 0 if not a table column
  Oid type_oid = 0;       // Int32
  Int16 typlen = 0;       // Int16, negative = variable width
  Int32 typmod = 0;       // Int32
  Int16 format = 0;       // Int16, 0 text, 1 binary
};

// ErrorResponse/NoticeResponse field: Byte1 code, String value.
struct ErrorField {
  char code = 0;
  std::string_view value;
};

// Reads (and validates) one list element. Specialised for int16_t (format codes), uint32_t
// (OIDs), std::string_view (Strings) and the structs above.
template <typename T>
struct ElementReader;

template <>
struct ElementReader<int16_t> {
  static bool read(Reader& r, int16_t* out) { return r.read_int16(out); }
};
template <>
struct ElementReader<uint32_t> {
  static bool read(Reader& r, uint32_t* out) { return r.read_uint32(out); }
};
template <>
struct ElementReader<std::string_view> {
  static bool read(Reader& r, std::string_view* out) { return r.read_string(out); }
};
template <>
struct ElementReader<Parameter> {
  static bool read(Reader& r, Parameter* out) {
    return r.read_string(&out->name) && r.read_string(&out->value);
  }
};
template <>
struct ElementReader<ErrorField> {
  static bool read(Reader& r, ErrorField* out) {
    uint8_t code = 0;
    if (!r.read_int8(&code)) return false;
    out->code = static_cast<char>(code);
    return r.read_string(&out->value);
  }
};
template <>
struct ElementReader<FieldDescription> {
  static bool read(Reader& r, FieldDescription* out) {
    return r.read_string(&out->name) && r.read_uint32(&out->table_oid) &&
           r.read_int16(&out->attnum) && r.read_uint32(&out->type_oid) &&
           r.read_int16(&out->typlen) && r.read_int32(&out->typmod) && r.read_int16(&out->format);
  }
};
// Int32 length then ByteN; -1 is NULL, any other negative length fails.
template <>
struct ElementReader<Value> {
  static bool read(Reader& r, Value* out) {
    int32_t len = 0;
    if (!r.read_int32(&len) || len < -1) return false;
    out->is_null = len == -1;
    out->data = Bytes();
    return len < 0 || r.read_bytes(static_cast<size_t>(len), &out->data);
  }
};

// A list already validated by a parser; iterating re-reads elements from the body without
// allocating. REQUIRES: constructed only by the parsers (the bytes were validated).
template <typename T>
class ListView {
 public:
  class Iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using iterator_category = std::input_iterator_tag;
    using pointer = const T*;
    using reference = const T&;

    Iterator() : reader_(Bytes()) {}
    Iterator(Bytes data, size_t left) : reader_(data), left_(left) { load(); }
    const T& operator*() const { return current_; }
    const T* operator->() const { return &current_; }
    Iterator& operator++() {
      --left_;
      load();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(const Iterator& other) const { return left_ == other.left_; }

   private:
    void load() {
      if (left_ > 0 && !ElementReader<T>::read(reader_, &current_)) left_ = 0;
    }
    Reader reader_;
    size_t left_ = 0;
    T current_{};
  };

  ListView() = default;
  ListView(Bytes raw, size_t count) : raw_(raw), count_(count) {}

  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  Iterator begin() const { return Iterator(raw_, count_); }
  Iterator end() const { return Iterator(); }
  // The encoded elements (without the count), e.g. to hash a RowDescription.
  Bytes raw() const { return raw_; }

 private:
  Bytes raw_;
  size_t count_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Frontend (client → server) messages.

// StartupMessage (untyped): Int32 length, Int32 protocol version, (String name, String value)*,
// Byte1('\0'). parse() takes Message::body (starting at the version).
struct StartupMessage {
  static constexpr uint8_t kType = 0;
  uint32_t protocol_version = 0;  // major << 16 | minor; parse() requires major 3
  ListView<Parameter> parameters;
  // Value of parameter `name` (e.g. "user", "database"), or nullopt.
  std::optional<std::string_view> find(std::string_view name) const;
};

// SSLRequest / GSSENCRequest: Int32(8) Int32 code. CancelRequest: Int32(16) Int32 code,
// Int32 process ID, Int32 secret key.
struct SslRequest {
  static constexpr uint8_t kType = 0;
};
struct GssEncRequest {
  static constexpr uint8_t kType = 0;
};
struct CancelRequest {
  static constexpr uint8_t kType = 0;
  Int32 process_id = 0;
  Int32 secret_key = 0;
};

// 'p' is shared by PasswordMessage, SASLInitialResponse, SASLResponse (and GSSResponse):
// the authentication exchange in progress says which parser applies.
struct PasswordMessage {
  static constexpr uint8_t kType = 'p';
  std::string_view password;  // String
};
struct SaslInitialResponse {
  static constexpr uint8_t kType = 'p';
  std::string_view mechanism;  // String
  bool has_data = false;       // Int32 length -1 = no initial response
  Bytes data;                  // ByteN
};
struct SaslResponse {
  static constexpr uint8_t kType = 'p';
  Bytes data;  // ByteN (the rest of the message)
};

struct Query {
  static constexpr uint8_t kType = 'Q';
  std::string_view sql;
};

struct Parse {
  static constexpr uint8_t kType = 'P';
  std::string_view statement;  // "" = unnamed
  std::string_view query;
  ListView<Oid> param_types;  // Int16 count, Int32 OIDs (0 = unspecified)
};

struct Bind {
  static constexpr uint8_t kType = 'B';
  std::string_view portal;
  std::string_view statement;
  ListView<Int16> param_formats;   // Int16 count, Int16 codes (0 text, 1 binary)
  ListView<Value> params;          // Int16 count, values
  ListView<Int16> result_formats;  // Int16 count, Int16 codes
};

// Describe and Close name a prepared statement ('S') or a portal ('P').
struct Describe {
  static constexpr uint8_t kType = 'D';
  char kind = 'S';
  std::string_view name;
};
struct Close {
  static constexpr uint8_t kType = 'C';
  char kind = 'S';
  std::string_view name;
};

struct Execute {
  static constexpr uint8_t kType = 'E';
  std::string_view portal;
  Int32 max_rows = 0;  // 0 = no limit
};

struct Sync {
  static constexpr uint8_t kType = 'S';
};
struct Flush {
  static constexpr uint8_t kType = 'H';
};
struct Terminate {
  static constexpr uint8_t kType = 'X';
};

// CopyData and CopyDone travel in both directions.
struct CopyData {
  static constexpr uint8_t kType = 'd';
  Bytes data;
};
struct CopyDone {
  static constexpr uint8_t kType = 'c';
};
struct CopyFail {
  static constexpr uint8_t kType = 'f';
  std::string_view message;
};

struct FunctionCall {
  static constexpr uint8_t kType = 'F';
  Oid function_oid = 0;
  ListView<Int16> arg_formats;
  ListView<Value> args;
  Int16 result_format = 0;
};

// ---------------------------------------------------------------------------------------------
// Backend (server → client) messages.

// Authentication request codes (the Int32 after the length of an 'R' message).
enum AuthCode : Int32 {
  kAuthOk = 0,
  kAuthKerberosV5 = 2,
  kAuthCleartextPassword = 3,
  kAuthMd5Password = 5,
  kAuthGss = 7,
  kAuthGssContinue = 8,
  kAuthSspi = 9,
  kAuthSasl = 10,
  kAuthSaslContinue = 11,
  kAuthSaslFinal = 12,
};

struct Authentication {
  static constexpr uint8_t kType = 'R';
  Int32 code = kAuthOk;
  Bytes salt;                             // kAuthMd5Password: Byte4
  ListView<std::string_view> mechanisms;  // kAuthSasl: String*, terminated by ""
  Bytes data;                             // kAuthSaslContinue/Final, kAuthGssContinue: ByteN
};

struct ParameterStatus {
  static constexpr uint8_t kType = 'S';
  std::string_view name;
  std::string_view value;
};

struct BackendKeyData {
  static constexpr uint8_t kType = 'K';
  Int32 process_id = 0;
  Int32 secret_key = 0;
};

struct ReadyForQuery {
  static constexpr uint8_t kType = 'Z';
  char status = 'I';  // 'I' idle, 'T' in transaction, 'E' failed transaction
};

struct RowDescription {
  static constexpr uint8_t kType = 'T';
  ListView<FieldDescription> fields;
};

struct DataRow {
  static constexpr uint8_t kType = 'D';
  ListView<Value> columns;
};

struct CommandComplete {
  static constexpr uint8_t kType = 'C';
  std::string_view tag;  // e.g. "SELECT 3"
};

struct EmptyQueryResponse {
  static constexpr uint8_t kType = 'I';
};

// Field codes of ErrorResponse/NoticeResponse.
inline constexpr char kFieldSeverity = 'S';
inline constexpr char kFieldSeverityNonLocalized = 'V';
inline constexpr char kFieldSqlstate = 'C';
inline constexpr char kFieldMessage = 'M';
inline constexpr char kFieldDetail = 'D';
inline constexpr char kFieldHint = 'H';
inline constexpr char kFieldPosition = 'P';

struct ErrorFields {
  ListView<ErrorField> fields;
  // Value of the first field with `code`, or "" if absent.
  std::string_view get(char code) const;
  std::string_view severity() const;  // 'V' if present, else 'S'
  std::string_view sqlstate() const { return get(kFieldSqlstate); }
  std::string_view message() const { return get(kFieldMessage); }
};
struct ErrorResponse : ErrorFields {
  static constexpr uint8_t kType = 'E';
};
struct NoticeResponse : ErrorFields {
  static constexpr uint8_t kType = 'N';
};

struct ParseComplete {
  static constexpr uint8_t kType = '1';
};
struct BindComplete {
  static constexpr uint8_t kType = '2';
};
struct CloseComplete {
  static constexpr uint8_t kType = '3';
};
struct NoData {
  static constexpr uint8_t kType = 'n';
};
struct PortalSuspended {
  static constexpr uint8_t kType = 's';
};

struct ParameterDescription {
  static constexpr uint8_t kType = 't';
  ListView<Oid> types;
};

// CopyInResponse / CopyOutResponse / CopyBothResponse: Int8 overall format, Int16 count,
// Int16 column formats.
struct CopyResponse {
  int8_t format = 0;
  ListView<Int16> column_formats;
};
struct CopyInResponse : CopyResponse {
  static constexpr uint8_t kType = 'G';
};
struct CopyOutResponse : CopyResponse {
  static constexpr uint8_t kType = 'H';
};
struct CopyBothResponse : CopyResponse {
  static constexpr uint8_t kType = 'W';
};

struct NotificationResponse {
  static constexpr uint8_t kType = 'A';
  Int32 process_id = 0;
  std::string_view channel;
  std::string_view payload;
};

struct NegotiateProtocolVersion {
  static constexpr uint8_t kType = 'v';
  Int32 newest_minor = 0;
  ListView<std::string_view> unrecognized_options;  // Int32 count, String*
};

struct FunctionCallResponse {
  static constexpr uint8_t kType = 'V';
  Value result;
};

// ---------------------------------------------------------------------------------------------
// Parsers. `body` = Message::body. Errors carry T::kType in FrameError::type.

[[nodiscard]] FrameError parse(Bytes body, StartupMessage* out);
[[nodiscard]] FrameError parse(Bytes body, SslRequest* out);
[[nodiscard]] FrameError parse(Bytes body, GssEncRequest* out);
[[nodiscard]] FrameError parse(Bytes body, CancelRequest* out);
[[nodiscard]] FrameError parse(Bytes body, PasswordMessage* out);
[[nodiscard]] FrameError parse(Bytes body, SaslInitialResponse* out);
[[nodiscard]] FrameError parse(Bytes body, SaslResponse* out);
[[nodiscard]] FrameError parse(Bytes body, Query* out);
[[nodiscard]] FrameError parse(Bytes body, Parse* out);
[[nodiscard]] FrameError parse(Bytes body, Bind* out);
[[nodiscard]] FrameError parse(Bytes body, Describe* out);
[[nodiscard]] FrameError parse(Bytes body, Close* out);
[[nodiscard]] FrameError parse(Bytes body, Execute* out);
[[nodiscard]] FrameError parse(Bytes body, Sync* out);
[[nodiscard]] FrameError parse(Bytes body, Flush* out);
[[nodiscard]] FrameError parse(Bytes body, Terminate* out);
[[nodiscard]] FrameError parse(Bytes body, CopyData* out);
[[nodiscard]] FrameError parse(Bytes body, CopyDone* out);
[[nodiscard]] FrameError parse(Bytes body, CopyFail* out);
[[nodiscard]] FrameError parse(Bytes body, FunctionCall* out);

[[nodiscard]] FrameError parse(Bytes body, Authentication* out);
[[nodiscard]] FrameError parse(Bytes body, ParameterStatus* out);
[[nodiscard]] FrameError parse(Bytes body, BackendKeyData* out);
[[nodiscard]] FrameError parse(Bytes body, ReadyForQuery* out);
[[nodiscard]] FrameError parse(Bytes body, RowDescription* out);
[[nodiscard]] FrameError parse(Bytes body, DataRow* out);
[[nodiscard]] FrameError parse(Bytes body, CommandComplete* out);
[[nodiscard]] FrameError parse(Bytes body, EmptyQueryResponse* out);
[[nodiscard]] FrameError parse(Bytes body, ErrorResponse* out);
[[nodiscard]] FrameError parse(Bytes body, NoticeResponse* out);
[[nodiscard]] FrameError parse(Bytes body, ParseComplete* out);
[[nodiscard]] FrameError parse(Bytes body, BindComplete* out);
[[nodiscard]] FrameError parse(Bytes body, CloseComplete* out);
[[nodiscard]] FrameError parse(Bytes body, NoData* out);
[[nodiscard]] FrameError parse(Bytes body, PortalSuspended* out);
[[nodiscard]] FrameError parse(Bytes body, ParameterDescription* out);
[[nodiscard]] FrameError parse(Bytes body, CopyInResponse* out);
[[nodiscard]] FrameError parse(Bytes body, CopyOutResponse* out);
[[nodiscard]] FrameError parse(Bytes body, CopyBothResponse* out);
[[nodiscard]] FrameError parse(Bytes body, NotificationResponse* out);
[[nodiscard]] FrameError parse(Bytes body, NegotiateProtocolVersion* out);
[[nodiscard]] FrameError parse(Bytes body, FunctionCallResponse* out);

// Parses a framed message as T, first checking its type byte (kInvalidMessageType otherwise).
template <typename T>
[[nodiscard]] FrameError parse_message(const Message& message, T* out) {
  if (message.type != T::kType) {
    return {FrameErrorCode::kInvalidMessageType, message.type, 0};
  }
  return parse(message.body, out);
}

// Validates a framed message from `direction` with the parser for its type (startup packets
// by Message::startup). 'p' is accepted as any of its forms (SASLResponse is free-form), so
// the caller still parses it for the exchange in progress. For a DPDK prescreen or a proxy
// that forwards messages it does not otherwise parse.
[[nodiscard]] FrameError validate_message(Direction direction, const Message& message);

// ---------------------------------------------------------------------------------------------
// Builders: frontend.

void append_startup_message(std::string& out, std::span<const Parameter> parameters,
                            uint32_t protocol_version = kProtocolVersion3);
void append_ssl_request(std::string& out);
void append_gssenc_request(std::string& out);
void append_cancel_request(std::string& out, Int32 process_id, Int32 secret_key);
void append_password_message(std::string& out, std::string_view password);
// `initial_response` nullopt writes length -1 (no initial response).
void append_sasl_initial_response(std::string& out, std::string_view mechanism,
                                  std::optional<std::string_view> initial_response);
void append_sasl_response(std::string& out, std::string_view data);
void append_query(std::string& out, std::string_view sql);
void append_parse(std::string& out, std::string_view statement, std::string_view query,
                  std::span<const Oid> param_types = {});
// A nullopt parameter is NULL.
void append_bind(std::string& out, std::string_view portal, std::string_view statement,
                 std::span<const Int16> param_formats,
                 std::span<const std::optional<std::string_view>> params,
                 std::span<const Int16> result_formats);
void append_describe(std::string& out, char kind, std::string_view name);
void append_close(std::string& out, char kind, std::string_view name);
void append_execute(std::string& out, std::string_view portal, Int32 max_rows);
void append_sync(std::string& out);
void append_flush(std::string& out);
void append_terminate(std::string& out);
void append_copy_data(std::string& out, std::string_view data);
void append_copy_done(std::string& out);
void append_copy_fail(std::string& out, std::string_view message);
void append_function_call(std::string& out, Oid function_oid, std::span<const Int16> arg_formats,
                          std::span<const std::optional<std::string_view>> args,
                          Int16 result_format);

// ---------------------------------------------------------------------------------------------
// Builders: backend.

void append_authentication_ok(std::string& out);
void append_authentication_cleartext_password(std::string& out);
void append_authentication_md5_password(std::string& out, std::array<uint8_t, 4> salt);
void append_authentication_sasl(std::string& out, std::span<const std::string_view> mechanisms);
void append_authentication_sasl_continue(std::string& out, std::string_view data);
void append_authentication_sasl_final(std::string& out, std::string_view data);
void append_parameter_status(std::string& out, std::string_view name, std::string_view value);
void append_backend_key_data(std::string& out, Int32 process_id, Int32 secret_key);
void append_ready_for_query(std::string& out, char status);
void append_row_description(std::string& out, std::span<const FieldDescription> fields);
// A nullopt column is NULL.
void append_data_row(std::string& out, std::span<const std::optional<std::string_view>> columns);
// One Value (Int32 length or -1, then bytes): for callers that rewrite a DataRow column by
// column between begin_message(out, 'D') + append_int16(out, count) and finish_message.
void append_value(std::string& out, std::optional<std::string_view> value);
void append_command_complete(std::string& out, std::string_view tag);
void append_empty_query_response(std::string& out);
// ErrorResponse with S and V = severity ("ERROR", "FATAL", ...), C = sqlstate, M = message.
void append_error_response(std::string& out, std::string_view severity, std::string_view sqlstate,
                           std::string_view message);
void append_notice_response(std::string& out, std::string_view severity, std::string_view sqlstate,
                            std::string_view message);
// Any fields; `type` is 'E' or 'N'.
void append_error_fields(std::string& out, char type, std::span<const ErrorField> fields);
void append_parse_complete(std::string& out);
void append_bind_complete(std::string& out);
void append_close_complete(std::string& out);
void append_no_data(std::string& out);
void append_portal_suspended(std::string& out);
void append_parameter_description(std::string& out, std::span<const Oid> types);
void append_copy_in_response(std::string& out, int8_t format,
                             std::span<const Int16> column_formats);
void append_copy_out_response(std::string& out, int8_t format,
                              std::span<const Int16> column_formats);
void append_copy_both_response(std::string& out, int8_t format,
                               std::span<const Int16> column_formats);
void append_notification_response(std::string& out, Int32 process_id, std::string_view channel,
                                  std::string_view payload);
void append_negotiate_protocol_version(std::string& out, Int32 newest_minor,
                                       std::span<const std::string_view> unrecognized_options);
void append_function_call_response(std::string& out, std::optional<std::string_view> result);

}  // namespace pgwarden::pgwire
