// Fuzzes what transaction pooling reads of client input (dataplane/session/pool_restrictions.h,
// pooled_statements.h): the session-state check over the lexer's code view of arbitrary SQL,
// and the statement-name rewriting of arbitrary Parse/Bind/Describe/Close messages.
// Invariants: no crash or sanitizer report; the check is deterministic; a renamed message has
// a correct length header, and renaming it back to the original name gives the original bytes.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "dataplane/pgwire/wire.h"
#include "dataplane/session/pool_restrictions.h"
#include "dataplane/session/pooled_statements.h"
#include "rules/lexer.h"

namespace {

namespace pw = pgwarden::pgwire;

pw::Message message_of(const std::string& bytes) {
  pw::Message m;
  m.type = static_cast<uint8_t>(bytes[0]);
  m.bytes = pw::Bytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  m.body = m.bytes.subspan(5);
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  pgwarden::rules::LexedSql lexed = pgwarden::rules::lex_sql(input);
  std::string a = pgwarden::session::transaction_pooling_refusal(lexed.code());
  std::string b = pgwarden::session::transaction_pooling_refusal(lexed.code());
  if (a != b) std::abort();

  // The same bytes as a typed message: first byte the type, the rest the body.
  if (size < 1) return 0;
  std::string msg(1, input[0]);
  uint8_t len[4];
  pw::store_be32(len, static_cast<uint32_t>(4 + size - 1));
  msg.append(reinterpret_cast<const char*>(len), 4);
  msg.append(input.substr(1));
  pw::Message m = message_of(msg);
  std::string_view tail = pgwarden::session::parse_tail(m);
  if (!tail.empty()) (void)pgwarden::session::server_statement_name(tail);
  std::string renamed;
  if (!pgwarden::session::append_renamed(m, "pgw_0123456789abcdef0123456789abcdef", renamed)) {
    if (!renamed.empty()) std::abort();
    return 0;
  }
  if (renamed.size() < 5 ||
      pw::load_be32(reinterpret_cast<const uint8_t*>(renamed.data()) + 1) != renamed.size() - 1) {
    std::abort();
  }
  // Back to the original name: the original message.
  std::string_view body = input.substr(1);
  size_t start = 0;
  if (m.type == 'B') start = body.find('\0') + 1;
  if (m.type == 'D' || m.type == 'C') start = 1;
  std::string original_name(body.substr(start, body.find('\0', start) - start));
  std::string back;
  if (!pgwarden::session::append_renamed(message_of(renamed), original_name, back) || back != msg) {
    std::abort();
  }
  return 0;
}
