#include "dataplane/pgwire/messages.h"

namespace pgwarden::pgwire {

namespace {

// Reads one message body field by field, remembering the first error (with the message type)
// so each parser is a straight sequence of reads followed by `finish()`.
class BodyParser {
 public:
  BodyParser(Bytes body, uint8_t type) : body_(body), r_(body), type_(type) {}

  bool int8(uint8_t* out) { return r_.read_int8(out); }
  bool int16(int16_t* out) { return r_.read_int16(out); }
  bool count16(uint16_t* out) {
    int16_t v = 0;
    if (!int16(&v)) return false;
    *out = static_cast<uint16_t>(v);
    return true;
  }
  bool int32(int32_t* out) { return r_.read_int32(out); }
  bool uint32(uint32_t* out) { return r_.read_uint32(out); }
  bool string(std::string_view* out) { return r_.read_string(out); }
  bool bytes(size_t n, Bytes* out) { return r_.read_bytes(n, out); }
  Bytes rest() { return r_.read_rest(); }
  size_t remaining() const { return r_.remaining(); }

  bool invalid(uint32_t value) {
    if (error_.ok()) error_ = {FrameErrorCode::kInvalidFieldValue, type_, value};
    return false;
  }

  // Int16 format code: 0 (text) or 1 (binary).
  bool format(int16_t* out) {
    if (!int16(out)) return false;
    return (*out == 0 || *out == 1) || invalid(static_cast<uint16_t>(*out));
  }

  // `n` elements of T; each is validated by reading it.
  template <typename T>
  bool elements(size_t n, ListView<T>* out) {
    size_t start = r_.position();
    for (size_t i = 0; i < n; ++i) {
      T element{};
      if (!ElementReader<T>::read(r_, &element)) {
        return r_.ok() ? invalid(static_cast<uint32_t>(i)) : false;
      }
    }
    *out = ListView<T>(body_.subspan(start, r_.position() - start), n);
    return true;
  }

  // Int16 count, then that many elements. PostgreSQL reads these counts unsigned
  // (pq_getmsgint(msg, 2)): 0..65535, e.g. 65,535 bind parameters.
  template <typename T>
  bool counted16(ListView<T>* out) {
    uint16_t n = 0;
    if (!count16(&n)) return false;
    return elements(static_cast<size_t>(n), out);
  }

  // Int16 count (unsigned, as above), then that many format codes (0/1).
  bool formats16(ListView<int16_t>* out) {
    uint16_t n = 0;
    if (!count16(&n)) return false;
    size_t start = r_.position();
    for (uint32_t i = 0; i < n; ++i) {
      int16_t f = 0;
      if (!format(&f)) return false;
    }
    *out = ListView<int16_t>(body_.subspan(start, r_.position() - start), static_cast<size_t>(n));
    return true;
  }

  // Elements up to a terminator; `is_end(reader, &end)` reads the terminator if it is next.
  template <typename T, typename IsEnd>
  bool terminated(ListView<T>* out, IsEnd is_end) {
    size_t start = r_.position();
    size_t n = 0;
    while (true) {
      Reader probe = r_;
      bool end = false;
      if (!is_end(probe, &end)) {
        r_ = probe;  // keep the failure (truncated / missing NUL)
        return false;
      }
      if (end) {
        *out = ListView<T>(body_.subspan(start, r_.position() - start), n);
        r_ = probe;
        return true;
      }
      T element{};
      if (!ElementReader<T>::read(r_, &element)) return r_.ok() ? invalid(0) : false;
      ++n;
    }
  }

  FrameError finish() const {
    if (!error_.ok()) return error_;
    switch (r_.failure()) {
      case ReadFailure::kTruncated:
        return {FrameErrorCode::kTruncatedField, type_, 0};
      case ReadFailure::kMissingNul:
        return {FrameErrorCode::kMissingNul, type_, 0};
      case ReadFailure::kNone:
        break;
    }
    if (!r_.at_end()) {
      return {FrameErrorCode::kTrailingBytes, type_, static_cast<uint32_t>(r_.remaining())};
    }
    return {};
  }

 private:
  Bytes body_;
  Reader r_;
  uint8_t type_;
  FrameError error_;
};

// Terminator probe: a String that is empty ends the list (startup parameters, SASL mechanisms).
bool empty_string_ends(Reader& r, bool* end) {
  std::string_view s;
  if (!r.read_string(&s)) return false;
  *end = s.empty();
  return true;
}

// Terminator probe: a zero field code ends ErrorResponse/NoticeResponse.
bool zero_byte_ends(Reader& r, bool* end) {
  uint8_t code = 0;
  if (!r.read_int8(&code)) return false;
  *end = code == 0;
  return true;
}

template <typename T>
FrameError parse_empty(Bytes body) {
  BodyParser p(body, T::kType);
  return p.finish();
}

FrameError parse_error_fields(Bytes body, uint8_t type, ErrorFields* out) {
  BodyParser p(body, type);
  p.terminated(&out->fields, zero_byte_ends);
  return p.finish();
}

FrameError parse_copy_response(Bytes body, uint8_t type, CopyResponse* out) {
  BodyParser p(body, type);
  uint8_t format = 0;
  if (p.int8(&format)) {
    out->format = static_cast<int8_t>(format);
    if (format > 1) {
      p.invalid(format);
    } else {
      p.formats16(&out->column_formats);
    }
  }
  return p.finish();
}

void append_values(std::string& out, std::span<const std::optional<std::string_view>> values) {
  append_int16(out, static_cast<int16_t>(values.size()));
  for (const auto& v : values) append_value(out, v);
}

void append_int16_list(std::string& out, std::span<const int16_t> list) {
  append_int16(out, static_cast<int16_t>(list.size()));
  for (int16_t v : list) append_int16(out, v);
}

void append_empty(std::string& out, char type) {
  size_t at = begin_message(out, type);
  finish_message(out, at);
}

void append_string_message(std::string& out, char type, std::string_view s) {
  size_t at = begin_message(out, type);
  append_string(out, s);
  finish_message(out, at);
}

void append_named(std::string& out, char type, char kind, std::string_view name) {
  size_t at = begin_message(out, type);
  append_int8(out, static_cast<uint8_t>(kind));
  append_string(out, name);
  finish_message(out, at);
}

void append_copy_response(std::string& out, char type, int8_t format,
                          std::span<const int16_t> column_formats) {
  size_t at = begin_message(out, type);
  append_int8(out, static_cast<uint8_t>(format));
  append_int16_list(out, column_formats);
  finish_message(out, at);
}

void append_auth(std::string& out, int32_t code, std::string_view data) {
  size_t at = begin_message(out, 'R');
  append_int32(out, code);
  out.append(data);
  finish_message(out, at);
}

}  // namespace

// ----- lookups ------------------------------------------------------------------------------

std::optional<std::string_view> StartupMessage::find(std::string_view name) const {
  for (const Parameter& p : parameters) {
    if (p.name == name) return p.value;
  }
  return std::nullopt;
}

std::string_view ErrorFields::get(char code) const {
  for (const ErrorField& f : fields) {
    if (f.code == code) return f.value;
  }
  return {};
}

std::string_view ErrorFields::severity() const {
  std::string_view v = get(kFieldSeverityNonLocalized);
  return v.empty() ? get(kFieldSeverity) : v;
}

// ----- frontend parsers ---------------------------------------------------------------------

FrameError parse(Bytes body, StartupMessage* out) {
  BodyParser p(body, 0);
  if (p.uint32(&out->protocol_version)) {
    if ((out->protocol_version >> 16) != 3) {
      return {FrameErrorCode::kUnsupportedProtocol, 0, out->protocol_version};
    }
    p.terminated(&out->parameters, empty_string_ends);
  }
  return p.finish();
}

namespace {
FrameError parse_request(Bytes body, uint32_t code) {
  BodyParser p(body, 0);
  uint32_t got = 0;
  if (p.uint32(&got) && got != code) p.invalid(got);
  return p.finish();
}
}  // namespace

FrameError parse(Bytes body, SslRequest*) { return parse_request(body, kSslRequestCode); }
FrameError parse(Bytes body, GssEncRequest*) { return parse_request(body, kGssEncRequestCode); }

FrameError parse(Bytes body, CancelRequest* out) {
  BodyParser p(body, 0);
  uint32_t code = 0;
  if (p.uint32(&code)) {
    if (code != kCancelRequestCode) {
      p.invalid(code);
    } else {
      p.int32(&out->process_id) && p.int32(&out->secret_key);
    }
  }
  return p.finish();
}

FrameError parse(Bytes body, PasswordMessage* out) {
  BodyParser p(body, PasswordMessage::kType);
  p.string(&out->password);
  return p.finish();
}

FrameError parse(Bytes body, SaslInitialResponse* out) {
  BodyParser p(body, SaslInitialResponse::kType);
  int32_t len = 0;
  if (p.string(&out->mechanism) && p.int32(&len)) {
    out->has_data = len >= 0;
    out->data = Bytes();
    if (len < -1) {
      p.invalid(static_cast<uint32_t>(len));
    } else if (len >= 0) {
      p.bytes(static_cast<size_t>(len), &out->data);
    }
  }
  return p.finish();
}

FrameError parse(Bytes body, SaslResponse* out) {
  BodyParser p(body, SaslResponse::kType);
  out->data = p.rest();
  return p.finish();
}

FrameError parse(Bytes body, Query* out) {
  BodyParser p(body, Query::kType);
  p.string(&out->sql);
  return p.finish();
}

FrameError parse(Bytes body, Parse* out) {
  BodyParser p(body, Parse::kType);
  p.string(&out->statement) && p.string(&out->query) && p.counted16(&out->param_types);
  return p.finish();
}

FrameError parse(Bytes body, Bind* out) {
  BodyParser p(body, Bind::kType);
  p.string(&out->portal) && p.string(&out->statement) && p.formats16(&out->param_formats) &&
      p.counted16(&out->params) && p.formats16(&out->result_formats);
  // As PostgreSQL: one format applies to all parameters, otherwise one per parameter.
  if (p.finish().ok() && out->param_formats.size() > 1 &&
      out->param_formats.size() != out->params.size()) {
    p.invalid(static_cast<uint32_t>(out->param_formats.size()));
  }
  return p.finish();
}

namespace {
FrameError parse_named(Bytes body, uint8_t type, char* kind, std::string_view* name) {
  BodyParser p(body, type);
  uint8_t k = 0;
  if (p.int8(&k)) {
    *kind = static_cast<char>(k);
    if (k != 'S' && k != 'P') {
      p.invalid(k);
    } else {
      p.string(name);
    }
  }
  return p.finish();
}
}  // namespace

FrameError parse(Bytes body, Describe* out) {
  return parse_named(body, Describe::kType, &out->kind, &out->name);
}
FrameError parse(Bytes body, Close* out) {
  return parse_named(body, Close::kType, &out->kind, &out->name);
}

FrameError parse(Bytes body, Execute* out) {
  BodyParser p(body, Execute::kType);
  if (p.string(&out->portal) && p.int32(&out->max_rows) && out->max_rows < 0) {
    p.invalid(static_cast<uint32_t>(out->max_rows));
  }
  return p.finish();
}

FrameError parse(Bytes body, Sync*) { return parse_empty<Sync>(body); }
FrameError parse(Bytes body, Flush*) { return parse_empty<Flush>(body); }
FrameError parse(Bytes body, Terminate*) { return parse_empty<Terminate>(body); }
FrameError parse(Bytes body, CopyDone*) { return parse_empty<CopyDone>(body); }

FrameError parse(Bytes body, CopyData* out) {
  out->data = body;
  return {};
}

FrameError parse(Bytes body, CopyFail* out) {
  BodyParser p(body, CopyFail::kType);
  p.string(&out->message);
  return p.finish();
}

FrameError parse(Bytes body, FunctionCall* out) {
  BodyParser p(body, FunctionCall::kType);
  p.uint32(&out->function_oid) && p.formats16(&out->arg_formats) && p.counted16(&out->args) &&
      p.format(&out->result_format);
  return p.finish();
}

// ----- backend parsers ----------------------------------------------------------------------

FrameError parse(Bytes body, Authentication* out) {
  BodyParser p(body, Authentication::kType);
  out->salt = Bytes();
  out->data = Bytes();
  out->mechanisms = ListView<std::string_view>();
  if (!p.int32(&out->code)) return p.finish();
  switch (out->code) {
    case kAuthOk:
    case kAuthKerberosV5:
    case kAuthCleartextPassword:
    case kAuthGss:
    case kAuthSspi:
      break;
    case kAuthMd5Password:
      p.bytes(4, &out->salt);
      break;
    case kAuthSasl:
      p.terminated(&out->mechanisms, empty_string_ends);
      break;
    case kAuthGssContinue:
    case kAuthSaslContinue:
    case kAuthSaslFinal:
      out->data = p.rest();
      break;
    default:
      p.invalid(static_cast<uint32_t>(out->code));
  }
  return p.finish();
}

FrameError parse(Bytes body, ParameterStatus* out) {
  BodyParser p(body, ParameterStatus::kType);
  p.string(&out->name) && p.string(&out->value);
  return p.finish();
}

FrameError parse(Bytes body, BackendKeyData* out) {
  BodyParser p(body, BackendKeyData::kType);
  p.int32(&out->process_id) && p.int32(&out->secret_key);
  return p.finish();
}

FrameError parse(Bytes body, ReadyForQuery* out) {
  BodyParser p(body, ReadyForQuery::kType);
  uint8_t s = 0;
  if (p.int8(&s)) {
    out->status = static_cast<char>(s);
    if (s != 'I' && s != 'T' && s != 'E') p.invalid(s);
  }
  return p.finish();
}

FrameError parse(Bytes body, RowDescription* out) {
  BodyParser p(body, RowDescription::kType);
  if (p.counted16(&out->fields)) {
    for (const FieldDescription& f : out->fields) {
      if (f.format != 0 && f.format != 1) {
        p.invalid(static_cast<uint16_t>(f.format));
        break;
      }
    }
  }
  return p.finish();
}

FrameError parse(Bytes body, DataRow* out) {
  BodyParser p(body, DataRow::kType);
  p.counted16(&out->columns);
  return p.finish();
}

FrameError parse(Bytes body, CommandComplete* out) {
  BodyParser p(body, CommandComplete::kType);
  p.string(&out->tag);
  return p.finish();
}

FrameError parse(Bytes body, EmptyQueryResponse*) { return parse_empty<EmptyQueryResponse>(body); }
FrameError parse(Bytes body, ErrorResponse* out) {
  return parse_error_fields(body, ErrorResponse::kType, out);
}
FrameError parse(Bytes body, NoticeResponse* out) {
  return parse_error_fields(body, NoticeResponse::kType, out);
}
FrameError parse(Bytes body, ParseComplete*) { return parse_empty<ParseComplete>(body); }
FrameError parse(Bytes body, BindComplete*) { return parse_empty<BindComplete>(body); }
FrameError parse(Bytes body, CloseComplete*) { return parse_empty<CloseComplete>(body); }
FrameError parse(Bytes body, NoData*) { return parse_empty<NoData>(body); }
FrameError parse(Bytes body, PortalSuspended*) { return parse_empty<PortalSuspended>(body); }

FrameError parse(Bytes body, ParameterDescription* out) {
  BodyParser p(body, ParameterDescription::kType);
  p.counted16(&out->types);
  return p.finish();
}

FrameError parse(Bytes body, CopyInResponse* out) {
  return parse_copy_response(body, CopyInResponse::kType, out);
}
FrameError parse(Bytes body, CopyOutResponse* out) {
  return parse_copy_response(body, CopyOutResponse::kType, out);
}
FrameError parse(Bytes body, CopyBothResponse* out) {
  return parse_copy_response(body, CopyBothResponse::kType, out);
}

FrameError parse(Bytes body, NotificationResponse* out) {
  BodyParser p(body, NotificationResponse::kType);
  p.int32(&out->process_id) && p.string(&out->channel) && p.string(&out->payload);
  return p.finish();
}

FrameError parse(Bytes body, NegotiateProtocolVersion* out) {
  BodyParser p(body, NegotiateProtocolVersion::kType);
  int32_t n = 0;
  if (p.int32(&out->newest_minor) && p.int32(&n)) {
    if (n < 0) {
      p.invalid(static_cast<uint32_t>(n));
    } else if (static_cast<size_t>(n) > p.remaining()) {
      // Each option takes at least its NUL: a larger count cannot fit.
      return {FrameErrorCode::kTruncatedField, NegotiateProtocolVersion::kType, 0};
    } else {
      p.elements(static_cast<size_t>(n), &out->unrecognized_options);
    }
  }
  return p.finish();
}

FrameError parse(Bytes body, FunctionCallResponse* out) {
  BodyParser p(body, FunctionCallResponse::kType);
  ListView<Value> one;
  if (p.elements(1, &one)) out->result = *one.begin();
  return p.finish();
}

namespace {
template <typename T>
FrameError check(Bytes body) {
  T out{};
  return parse(body, &out);
}
}  // namespace

FrameError validate_message(Direction direction, const Message& m) {
  Bytes b = m.body;
  if (m.type == 0) {
    switch (m.startup) {
      case StartupKind::kStartupMessage:
        return check<StartupMessage>(b);
      case StartupKind::kSslRequest:
        return check<SslRequest>(b);
      case StartupKind::kGssEncRequest:
        return check<GssEncRequest>(b);
      case StartupKind::kCancel:
        return check<CancelRequest>(b);
      case StartupKind::kNone:
        break;
    }
    return {FrameErrorCode::kInvalidMessageType, 0, 0};
  }
  if (direction == Direction::kFrontend) {
    switch (m.type) {
      case 'p':
        return check<SaslResponse>(b);
      case 'Q':
        return check<Query>(b);
      case 'P':
        return check<Parse>(b);
      case 'B':
        return check<Bind>(b);
      case 'D':
        return check<Describe>(b);
      case 'C':
        return check<Close>(b);
      case 'E':
        return check<Execute>(b);
      case 'S':
        return check<Sync>(b);
      case 'H':
        return check<Flush>(b);
      case 'X':
        return check<Terminate>(b);
      case 'd':
        return check<CopyData>(b);
      case 'c':
        return check<CopyDone>(b);
      case 'f':
        return check<CopyFail>(b);
      case 'F':
        return check<FunctionCall>(b);
      default:
        return {FrameErrorCode::kInvalidMessageType, m.type, 0};
    }
  }
  switch (m.type) {
    case 'R':
      return check<Authentication>(b);
    case 'S':
      return check<ParameterStatus>(b);
    case 'K':
      return check<BackendKeyData>(b);
    case 'Z':
      return check<ReadyForQuery>(b);
    case 'T':
      return check<RowDescription>(b);
    case 'D':
      return check<DataRow>(b);
    case 'C':
      return check<CommandComplete>(b);
    case 'I':
      return check<EmptyQueryResponse>(b);
    case 'E':
      return check<ErrorResponse>(b);
    case 'N':
      return check<NoticeResponse>(b);
    case '1':
      return check<ParseComplete>(b);
    case '2':
      return check<BindComplete>(b);
    case '3':
      return check<CloseComplete>(b);
    case 'n':
      return check<NoData>(b);
    case 's':
      return check<PortalSuspended>(b);
    case 't':
      return check<ParameterDescription>(b);
    case 'G':
      return check<CopyInResponse>(b);
    case 'H':
      return check<CopyOutResponse>(b);
    case 'W':
      return check<CopyBothResponse>(b);
    case 'A':
      return check<NotificationResponse>(b);
    case 'v':
      return check<NegotiateProtocolVersion>(b);
    case 'V':
      return check<FunctionCallResponse>(b);
    case 'd':
      return check<CopyData>(b);
    case 'c':
      return check<CopyDone>(b);
    default:
      return {FrameErrorCode::kInvalidMessageType, m.type, 0};
  }
}

// ----- frontend builders --------------------------------------------------------------------

void append_startup_message(std::string& out, std::span<const Parameter> parameters,
                            uint32_t protocol_version) {
  size_t at = begin_message(out, 0);
  append_uint32(out, protocol_version);
  for (const Parameter& p : parameters) {
    append_string(out, p.name);
    append_string(out, p.value);
  }
  append_int8(out, 0);
  finish_message(out, at);
}

void append_ssl_request(std::string& out) {
  append_int32(out, 8);
  append_uint32(out, kSslRequestCode);
}

void append_gssenc_request(std::string& out) {
  append_int32(out, 8);
  append_uint32(out, kGssEncRequestCode);
}

void append_cancel_request(std::string& out, int32_t process_id, int32_t secret_key) {
  append_int32(out, 16);
  append_uint32(out, kCancelRequestCode);
  append_int32(out, process_id);
  append_int32(out, secret_key);
}

void append_password_message(std::string& out, std::string_view password) {
  append_string_message(out, 'p', password);
}

void append_sasl_initial_response(std::string& out, std::string_view mechanism,
                                  std::optional<std::string_view> initial_response) {
  size_t at = begin_message(out, 'p');
  append_string(out, mechanism);
  append_value(out, initial_response);
  finish_message(out, at);
}

void append_sasl_response(std::string& out, std::string_view data) {
  size_t at = begin_message(out, 'p');
  out.append(data);
  finish_message(out, at);
}

void append_query(std::string& out, std::string_view sql) { append_string_message(out, 'Q', sql); }

void append_parse(std::string& out, std::string_view statement, std::string_view query,
                  std::span<const uint32_t> param_types) {
  size_t at = begin_message(out, 'P');
  append_string(out, statement);
  append_string(out, query);
  append_int16(out, static_cast<int16_t>(param_types.size()));
  for (uint32_t oid : param_types) append_uint32(out, oid);
  finish_message(out, at);
}

void append_bind(std::string& out, std::string_view portal, std::string_view statement,
                 std::span<const int16_t> param_formats,
                 std::span<const std::optional<std::string_view>> params,
                 std::span<const int16_t> result_formats) {
  size_t at = begin_message(out, 'B');
  append_string(out, portal);
  append_string(out, statement);
  append_int16_list(out, param_formats);
  append_values(out, params);
  append_int16_list(out, result_formats);
  finish_message(out, at);
}

void append_describe(std::string& out, char kind, std::string_view name) {
  append_named(out, 'D', kind, name);
}

void append_close(std::string& out, char kind, std::string_view name) {
  append_named(out, 'C', kind, name);
}

void append_execute(std::string& out, std::string_view portal, int32_t max_rows) {
  size_t at = begin_message(out, 'E');
  append_string(out, portal);
  append_int32(out, max_rows);
  finish_message(out, at);
}

void append_sync(std::string& out) { append_empty(out, 'S'); }
void append_flush(std::string& out) { append_empty(out, 'H'); }
void append_terminate(std::string& out) { append_empty(out, 'X'); }

void append_copy_data(std::string& out, std::string_view data) {
  size_t at = begin_message(out, 'd');
  out.append(data);
  finish_message(out, at);
}

void append_copy_done(std::string& out) { append_empty(out, 'c'); }

void append_copy_fail(std::string& out, std::string_view message) {
  append_string_message(out, 'f', message);
}

void append_function_call(std::string& out, uint32_t function_oid,
                          std::span<const int16_t> arg_formats,
                          std::span<const std::optional<std::string_view>> args,
                          int16_t result_format) {
  size_t at = begin_message(out, 'F');
  append_uint32(out, function_oid);
  append_int16_list(out, arg_formats);
  append_values(out, args);
  append_int16(out, result_format);
  finish_message(out, at);
}

// ----- backend builders ---------------------------------------------------------------------

void append_authentication_ok(std::string& out) { append_auth(out, kAuthOk, {}); }

void append_authentication_cleartext_password(std::string& out) {
  append_auth(out, kAuthCleartextPassword, {});
}

void append_authentication_md5_password(std::string& out, std::array<uint8_t, 4> salt) {
  append_auth(out, kAuthMd5Password,
              std::string_view(reinterpret_cast<const char*>(salt.data()), salt.size()));
}

void append_authentication_sasl(std::string& out, std::span<const std::string_view> mechanisms) {
  size_t at = begin_message(out, 'R');
  append_int32(out, kAuthSasl);
  for (std::string_view m : mechanisms) {
    if (!m.empty()) append_string(out, m);
  }
  append_int8(out, 0);
  finish_message(out, at);
}

void append_authentication_sasl_continue(std::string& out, std::string_view data) {
  append_auth(out, kAuthSaslContinue, data);
}

void append_authentication_sasl_final(std::string& out, std::string_view data) {
  append_auth(out, kAuthSaslFinal, data);
}

void append_parameter_status(std::string& out, std::string_view name, std::string_view value) {
  size_t at = begin_message(out, 'S');
  append_string(out, name);
  append_string(out, value);
  finish_message(out, at);
}

void append_backend_key_data(std::string& out, int32_t process_id, int32_t secret_key) {
  size_t at = begin_message(out, 'K');
  append_int32(out, process_id);
  append_int32(out, secret_key);
  finish_message(out, at);
}

void append_ready_for_query(std::string& out, char status) {
  size_t at = begin_message(out, 'Z');
  append_int8(out, static_cast<uint8_t>(status));
  finish_message(out, at);
}

void append_row_description(std::string& out, std::span<const FieldDescription> fields) {
  size_t at = begin_message(out, 'T');
  append_int16(out, static_cast<int16_t>(fields.size()));
  for (const FieldDescription& f : fields) {
    append_string(out, f.name);
    append_uint32(out, f.table_oid);
    append_int16(out, f.attnum);
    append_uint32(out, f.type_oid);
    append_int16(out, f.typlen);
    append_int32(out, f.typmod);
    append_int16(out, f.format);
  }
  finish_message(out, at);
}

void append_data_row(std::string& out, std::span<const std::optional<std::string_view>> columns) {
  size_t at = begin_message(out, 'D');
  append_values(out, columns);
  finish_message(out, at);
}

void append_value(std::string& out, std::optional<std::string_view> value) {
  if (!value) {
    append_int32(out, -1);
    return;
  }
  append_int32(out, static_cast<int32_t>(value->size()));
  out.append(*value);
}

void append_command_complete(std::string& out, std::string_view tag) {
  append_string_message(out, 'C', tag);
}

void append_empty_query_response(std::string& out) { append_empty(out, 'I'); }

void append_error_fields(std::string& out, char type, std::span<const ErrorField> fields) {
  size_t at = begin_message(out, type);
  for (const ErrorField& f : fields) {
    if (f.code == 0) continue;  // a zero code would end the field list early
    append_int8(out, static_cast<uint8_t>(f.code));
    append_string(out, f.value);
  }
  append_int8(out, 0);
  finish_message(out, at);
}

void append_error_response(std::string& out, std::string_view severity, std::string_view sqlstate,
                           std::string_view message) {
  const ErrorField fields[] = {{kFieldSeverity, severity},
                               {kFieldSeverityNonLocalized, severity},
                               {kFieldSqlstate, sqlstate},
                               {kFieldMessage, message}};
  append_error_fields(out, 'E', fields);
}

void append_notice_response(std::string& out, std::string_view severity, std::string_view sqlstate,
                            std::string_view message) {
  const ErrorField fields[] = {{kFieldSeverity, severity},
                               {kFieldSeverityNonLocalized, severity},
                               {kFieldSqlstate, sqlstate},
                               {kFieldMessage, message}};
  append_error_fields(out, 'N', fields);
}

void append_parse_complete(std::string& out) { append_empty(out, '1'); }
void append_bind_complete(std::string& out) { append_empty(out, '2'); }
void append_close_complete(std::string& out) { append_empty(out, '3'); }
void append_no_data(std::string& out) { append_empty(out, 'n'); }
void append_portal_suspended(std::string& out) { append_empty(out, 's'); }

void append_parameter_description(std::string& out, std::span<const uint32_t> types) {
  size_t at = begin_message(out, 't');
  append_int16(out, static_cast<int16_t>(types.size()));
  for (uint32_t oid : types) append_uint32(out, oid);
  finish_message(out, at);
}

void append_copy_in_response(std::string& out, int8_t format,
                             std::span<const int16_t> column_formats) {
  append_copy_response(out, 'G', format, column_formats);
}
void append_copy_out_response(std::string& out, int8_t format,
                              std::span<const int16_t> column_formats) {
  append_copy_response(out, 'H', format, column_formats);
}
void append_copy_both_response(std::string& out, int8_t format,
                               std::span<const int16_t> column_formats) {
  append_copy_response(out, 'W', format, column_formats);
}

void append_notification_response(std::string& out, int32_t process_id, std::string_view channel,
                                  std::string_view payload) {
  size_t at = begin_message(out, 'A');
  append_int32(out, process_id);
  append_string(out, channel);
  append_string(out, payload);
  finish_message(out, at);
}

void append_negotiate_protocol_version(std::string& out, int32_t newest_minor,
                                       std::span<const std::string_view> unrecognized_options) {
  size_t at = begin_message(out, 'v');
  append_int32(out, newest_minor);
  append_int32(out, static_cast<int32_t>(unrecognized_options.size()));
  for (std::string_view o : unrecognized_options) append_string(out, o);
  finish_message(out, at);
}

void append_function_call_response(std::string& out, std::optional<std::string_view> result) {
  size_t at = begin_message(out, 'V');
  append_value(out, result);
  finish_message(out, at);
}

}  // namespace pgwarden::pgwire
