#include "controlplane/approvals/chat.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace pgwarden::approvals {

namespace {

constexpr size_t kMaxSqlInMessage = 2800;  // Block Kit section text is capped at 3000
constexpr size_t kMaxPayloadFieldBytes = 256;

std::string truncate(std::string_view s, size_t max) {
  if (s.size() <= max) return std::string(s);
  // Do not cut inside a UTF-8 sequence.
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n)) + "…";
}

// Slack's mrkdwn needs &, < and > escaped; backticks would end the code block.
std::string mrkdwn_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '`':
        out += "'";
        break;
      default:
        out += c;
    }
  }
  return out;
}

nlohmann::json section(std::string text) {
  return {{"type", "section"}, {"text", {{"type", "mrkdwn"}, {"text", std::move(text)}}}};
}

nlohmann::json request_blocks(const ApprovalRequest& r, std::string_view console_url) {
  nlohmann::json blocks = nlohmann::json::array();
  blocks.push_back(section("*Approval needed* `" + r.id + "`"));
  nlohmann::json fields = nlohmann::json::array();
  auto field = [&](const std::string& name, std::string_view value) {
    fields.push_back(
        {{"type", "mrkdwn"}, {"text", "*" + name + "*\n" + mrkdwn_escape(truncate(value, 500))}});
  };
  field("Identity", r.identity);
  field("Target", r.target);
  field("Rule", r.rule);
  field("Reason", r.request_reason.empty() ? "-" : r.request_reason);
  blocks.push_back({{"type", "section"}, {"fields", std::move(fields)}});
  blocks.push_back(section("```" + mrkdwn_escape(truncate(r.sql, kMaxSqlInMessage)) + "```"));
  std::string context = "Approvals " + std::to_string(r.votes.size()) + " of " +
                        std::to_string(r.required_approvals) + " · expires <!date^" +
                        std::to_string(r.deadline_ms / 1000) + "^{date_short_pretty} {time}|" +
                        std::to_string(r.deadline_ms) + " ms>";
  if (!r.effect.reasons.empty()) context += " · " + mrkdwn_escape(r.effect.reasons.front());
  if (!console_url.empty()) context += " · <" + std::string(console_url) + "|open in console>";
  blocks.push_back(
      {{"type", "context"},
       {"elements", nlohmann::json::array({{{"type", "mrkdwn"}, {"text", context}}})}});
  return blocks;
}

std::string hex(const unsigned char* p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += kHex[p[i] >> 4];
    out += kHex[p[i] & 15];
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::string> url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%') {
      if (i + 2 >= s.size()) return invalid_argument("truncated %-escape in form body");
      int hi = hex_value(s[i + 1]);
      int lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return invalid_argument("bad %-escape in form body");
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

// A string member of `j` of at most kMaxPayloadFieldBytes, or "".
std::string short_string(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return "";
  const auto& s = it->get_ref<const std::string&>();
  return s.size() <= kMaxPayloadFieldBytes ? s : "";
}

bool all_digits(std::string_view s) {
  return !s.empty() && s.size() <= 12 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

nlohmann::json chat_message(const ApprovalRequest& r, std::string_view console_url) {
  nlohmann::json blocks = request_blocks(r, console_url);
  nlohmann::json actions = nlohmann::json::array();
  actions.push_back({{"type", "button"},
                     {"action_id", "approve"},
                     {"style", "primary"},
                     {"text", {{"type", "plain_text"}, {"text", "Approve"}}},
                     {"value", r.id}});
  actions.push_back({{"type", "button"},
                     {"action_id", "deny"},
                     {"style", "danger"},
                     {"text", {{"type", "plain_text"}, {"text", "Deny"}}},
                     {"value", r.id}});
  blocks.push_back(
      {{"type", "actions"}, {"block_id", "pgwarden_approval"}, {"elements", std::move(actions)}});
  return {{"text",
           "pgwarden: approval needed for " + r.identity + " on " + r.target + " (" + r.id + ")"},
          {"blocks", std::move(blocks)}};
}

nlohmann::json chat_decided_message(const ApprovalRequest& r, std::string_view console_url) {
  std::string status;
  if (r.state == ApprovalState::kPending) {
    status = ":hourglass: Approved by " +
             mrkdwn_escape(r.votes.empty() ? "" : r.votes.back().decider) + " — " +
             std::to_string(r.votes.size()) + " of " + std::to_string(r.required_approvals) +
             " approvals";
  } else if (r.state == ApprovalState::kApproved) {
    status = ":white_check_mark: Approved by " + mrkdwn_escape(r.decider);
    if (r.break_glass) status += " (break-glass)";
  } else if (r.state == ApprovalState::kDenied) {
    status = ":no_entry: Denied by " + mrkdwn_escape(r.decider);
    if (!r.decision_reason.empty()) status += ": " + mrkdwn_escape(r.decision_reason);
  } else {
    status = "Request " + std::string(approval_state_name(r.state));
  }
  nlohmann::json blocks = request_blocks(r, console_url);
  blocks.push_back(section(status));
  nlohmann::json out = {
      {"replace_original", true},
      {"text", "pgwarden: approval " + r.id + " " + std::string(approval_state_name(r.state))},
      {"blocks", std::move(blocks)}};
  if (r.state == ApprovalState::kPending) {
    // Still pending: keep the buttons for the remaining approvers.
    nlohmann::json again = chat_message(r, console_url);
    out["blocks"].push_back(again["blocks"].back());
  }
  return out;
}

Result<std::map<std::string, std::string>> parse_form(std::string_view body) {
  std::map<std::string, std::string> out;
  while (!body.empty()) {
    size_t amp = body.find('&');
    std::string_view pair = body.substr(0, amp);
    body = amp == std::string_view::npos ? std::string_view() : body.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    auto name = url_decode(pair.substr(0, eq));
    if (!name) return name.status();
    auto value =
        url_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
    if (!value) return value.status();
    out.emplace(std::move(*name), std::move(*value));
  }
  return out;
}

Result<ChatAction> parse_chat_callback(std::string_view body) {
  auto form = parse_form(body);
  if (!form) return form.status();
  auto p = form->find("payload");
  if (p == form->end()) return invalid_argument("callback body has no payload field");
  nlohmann::json j = nlohmann::json::parse(p->second, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return invalid_argument("payload is not a JSON object");
  if (short_string(j, "type") != "block_actions") {
    return invalid_argument("payload type is not block_actions");
  }
  ChatAction a;
  auto user = j.find("user");
  if (user == j.end() || !user->is_object()) return invalid_argument("payload has no user");
  a.user_id = short_string(*user, "id");
  a.user_name = short_string(*user, "username");
  if (a.user_name.empty()) a.user_name = short_string(*user, "name");
  if (a.user_id.empty()) return invalid_argument("payload has no user id");
  a.trigger_id = short_string(j, "trigger_id");
  auto actions = j.find("actions");
  if (actions == j.end() || !actions->is_array() || actions->size() != 1) {
    return invalid_argument("payload must carry exactly one action");
  }
  const nlohmann::json& act = (*actions)[0];
  a.action = short_string(act, "action_id");
  a.approval_id = short_string(act, "value");
  if (a.action != "approve" && a.action != "deny") {
    return invalid_argument("unknown action " + truncate(a.action, 40));
  }
  if (a.approval_id.empty() || a.approval_id.size() > 64) {
    return invalid_argument("action has no approval id");
  }
  return a;
}

std::string chat_signature(std::string_view secret, std::string_view timestamp,
                           std::string_view body) {
  std::string base = "v0:";
  base += timestamp;
  base += ':';
  base += body;
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(base.data()), base.size(), mac, &len);
  return "v0=" + hex(mac, len);
}

Result<std::unique_ptr<ChatCallback>> ChatCallback::create(ChatCallbackOptions options) {
  if (options.signing_secret.empty()) return invalid_argument("chat: signing secret is empty");
  if (options.store == nullptr) return invalid_argument("chat: no approval store");
  if (options.window_s <= 0) return invalid_argument("chat: timestamp window must be positive");
  return std::unique_ptr<ChatCallback>(new ChatCallback(std::move(options)));
}

ChatReply ChatCallback::refuse(int status, const std::string& reason,
                               const nlohmann::json& detail) {
  nlohmann::json a = detail;
  a["event"] = "chat_callback";
  a["decision"] = "refused";
  a["reason"] = reason;
  if (options_.audit) options_.audit(a);
  ChatReply reply;
  reply.status = status;
  reply.body = nlohmann::json{{"ok", false}, {"error", reason}}.dump();
  return reply;
}

bool ChatCallback::remember(const std::string& key, int64_t expires_s, int64_t now_s, bool* full) {
  std::lock_guard lock(mu_);
  // Forget what is older than the window: a replay of it fails the timestamp check anyway.
  for (auto it = seen_.begin(); it != seen_.end();) {
    it = it->second < now_s ? seen_.erase(it) : std::next(it);
  }
  if (seen_.count(key) != 0) return false;
  if (seen_.size() >= options_.max_remembered) {
    *full = true;
    return false;
  }
  seen_.emplace(key, expires_s);
  return true;
}

ChatReply ChatCallback::handle(std::string_view timestamp, std::string_view signature,
                               std::string_view body) {
  int64_t now_s = options_.clock_s ? options_.clock_s()
                                   : std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count();
  nlohmann::json detail = nlohmann::json::object();
  if (body.size() > options_.max_body_bytes) return refuse(413, "callback body too large", detail);
  if (!all_digits(timestamp)) return refuse(401, "missing or malformed request timestamp", detail);
  int64_t ts = std::strtoll(std::string(timestamp).c_str(), nullptr, 10);
  if (ts < now_s - options_.window_s || ts > now_s + options_.window_s) {
    detail["request_ts"] = ts;
    return refuse(
        401, "request timestamp outside the " + std::to_string(options_.window_s) + " s window",
        detail);
  }
  std::string expected = chat_signature(options_.signing_secret.view(), timestamp, body);
  if (signature.size() != expected.size() ||
      CRYPTO_memcmp(signature.data(), expected.data(), expected.size()) != 0) {
    return refuse(401, "bad request signature", detail);
  }
  bool full = false;
  if (!remember("sig:" + expected, ts + options_.window_s, now_s, &full)) {
    return full ? refuse(503, "too many callbacks to remember for replay protection", detail)
                : refuse(409, "replayed callback (signature already seen)", detail);
  }
  auto action = parse_chat_callback(body);
  if (!action) return refuse(400, action.status().message(), detail);
  detail["chat_user"] = action->user_id;
  if (!action->user_name.empty()) detail["chat_user_name"] = action->user_name;
  detail["approval_id"] = action->approval_id;
  detail["action"] = action->action;
  if (!action->trigger_id.empty() &&
      !remember("trigger:" + action->trigger_id, now_s + options_.window_s, now_s, &full)) {
    return full ? refuse(503, "too many callbacks to remember for replay protection", detail)
                : refuse(409, "replayed callback (trigger_id already seen)", detail);
  }
  auto user = options_.users.find(action->user_id);
  if (user == options_.users.end()) {
    ChatReply r =
        refuse(403, "chat user " + action->user_id + " is not mapped to a reviewer", detail);
    return r;
  }
  detail["identity"] = user->second.identity;
  ApprovalDecision d;
  d.approve = action->action == "approve";
  d.decider = user->second.identity;
  d.decider_groups = user->second.groups;
  d.via = "chat";
  d.reason = (d.approve ? "approved" : "denied") + std::string(" in chat by ") +
             (action->user_name.empty() ? action->user_id : action->user_name) + " (" +
             action->user_id + ")";
  auto decided = options_.store->decide(action->approval_id, d);
  if (!decided) {
    ChatReply r = refuse(200, decided.status().message(), detail);
    // The chat service shows a 200 answer to the clicking user only (ephemeral).
    r.body = nlohmann::json{{"response_type", "ephemeral"},
                            {"replace_original", false},
                            {"text", "pgwarden refused: " + decided.status().message()}}
                 .dump();
    return r;
  }
  detail["event"] = "chat_callback";
  detail["decision"] = "ok";
  detail["reason"] = d.reason;
  detail["state"] = std::string(approval_state_name(decided->state));
  if (options_.audit) options_.audit(detail);
  ChatReply reply;
  std::string url = approval_console_url(options_.console_base_url, decided->id);
  reply.body = chat_decided_message(*decided, url)
                   .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return reply;
}

}  // namespace pgwarden::approvals
