// Chat approvals, Slack-compatible (docs/approvals.md, "Chat approvals").
//
// Out: chat_message() renders a new approval request as an interactive Block Kit message
// (statement, identity, reason, Approve / Deny buttons whose value is the request id); the
// control plane POSTs it to the configured incoming-webhook URL with a WebhookNotifier.
//
// In: ChatCallback::handle() serves the interactivity callback the chat service sends when a
// reviewer clicks a button: a POST of `payload=<JSON>` (application/x-www-form-urlencoded),
// signed like Slack signs requests:
//   X-Slack-Signature = "v0=" + hex(HMAC-SHA256(signing_secret,
//                                               "v0:" + X-Slack-Request-Timestamp + ":" + body))
// It checks, in this order, the body size, the timestamp window, the signature (constant
// time), replay (a signature seen within the window is refused), the payload, and the
// clicking user's mapping to a reviewer identity; then decides through ApprovalStore::decide
// (so requester/linked-identity, approver-group and N-of-M rules all apply) and answers with
// the updated message. Every outcome is audited (event `chat_callback`); the signing secret is
// never logged, audited or echoed.
//
// Thread-safety: handle() is safe to call from several threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "controlplane/approvals/approval_store.h"
#include "controlplane/vault/secret.h"

namespace pgwarden::approvals {

// The Block Kit message for a new request (fallback `text` plus `blocks`). `console_url` (may
// be empty) is linked from the message.
nlohmann::json chat_message(const ApprovalRequest& request, std::string_view console_url);

// The message after a decision or vote (no buttons once decided).
nlohmann::json chat_decided_message(const ApprovalRequest& request, std::string_view console_url);

// A button click, as parsed from the callback body.
struct ChatAction {
  std::string user_id;      // the chat service's user id (payload.user.id)
  std::string user_name;    // payload.user.username / name, for the audit only
  std::string action;       // "approve" | "deny"
  std::string approval_id;  // the button's value
  std::string trigger_id;   // payload.trigger_id (replay key besides the signature)
};

// Parses `payload=<url-encoded JSON>` of a block_actions callback. invalid_argument for
// anything else (bad encoding, not JSON, other payload types, unknown action ids).
// Validates before reading: sizes and types are checked, never trusted.
Result<ChatAction> parse_chat_callback(std::string_view body);

// Decodes application/x-www-form-urlencoded `body` into name -> value (first value wins).
Result<std::map<std::string, std::string>> parse_form(std::string_view body);

// "v0=" + lowercase hex HMAC-SHA256(secret, "v0:" + timestamp + ":" + body).
std::string chat_signature(std::string_view secret, std::string_view timestamp,
                           std::string_view body);

struct ChatReviewer {
  std::string identity;
  std::vector<std::string> groups;
};

struct ChatCallbackOptions {
  vault::Secret signing_secret;               // REQUIRES: not empty
  int64_t window_s = 300;                     // accepted |now - timestamp|
  std::map<std::string, ChatReviewer> users;  // chat user id -> reviewer
  ApprovalStore* store = nullptr;             // REQUIRES: outlives the ChatCallback
  std::string console_base_url;               // "" = no link in messages
  // One audit record per callback: {"event": "chat_callback", "decision": "ok" | "refused",
  // "reason", "chat_user", "identity"?, "approval_id"?, "action"?}.
  std::function<void(const nlohmann::json&)> audit;
  std::function<int64_t()> clock_s;  // unix seconds; tests inject one
  size_t max_body_bytes = 64 << 10;
  size_t max_remembered = 100000;  // replay memory cap: beyond it, callbacks are refused
};

struct ChatReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

class ChatCallback {
 public:
  static Result<std::unique_ptr<ChatCallback>> create(ChatCallbackOptions options);

  // One callback request: the two headers' values ("" when absent) and the raw body.
  ChatReply handle(std::string_view timestamp, std::string_view signature, std::string_view body);

 private:
  explicit ChatCallback(ChatCallbackOptions options) : options_(std::move(options)) {}
  ChatReply refuse(int status, const std::string& reason, const nlohmann::json& detail);
  // True when `key` was not seen within the window (and remembers it until `expires_s`).
  bool remember(const std::string& key, int64_t expires_s, int64_t now_s, bool* full);

  ChatCallbackOptions options_;
  std::mutex mu_;
  std::map<std::string, int64_t> seen_;  // signature / trigger id -> forget after (unix s)
};

}  // namespace pgwarden::approvals
