#include "controlplane/approvals/chat.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <mutex>

namespace pgwarden::approvals {
namespace {

namespace fs = std::filesystem;

// Slack's published example ("Verifying requests from Slack"): secret, timestamp, body and the
// signature Slack sent for them.
constexpr char kSlackSecret[] = "8f742231b10e8888abcd99yyyzzz85a5";
constexpr char kSlackTimestamp[] = "1531420618";
constexpr char kSlackBody[] =
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    "G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-"
    "collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%"
    "2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121."
    "803a0bc887a14d10d2c447fce8b6703c";
constexpr char kSlackSignature[] =
    "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

TEST(ChatSignature, MatchesSlacksPublishedExample) {
  EXPECT_EQ(chat_signature(kSlackSecret, kSlackTimestamp, kSlackBody), kSlackSignature);
}

TEST(ChatForm, DecodesPercentAndPlusAndRefusesBadEscapes) {
  auto f = parse_form("payload=%7B%22a%22%3A+1%7D&x=y&x=z&flag");
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(f->at("payload"), "{\"a\": 1}");
  EXPECT_EQ(f->at("x"), "y");
  EXPECT_EQ(f->at("flag"), "");
  for (const char* bad : {"payload=%", "payload=%4", "payload=%zz", "a%2=1"}) {
    EXPECT_FALSE(parse_form(bad).is_ok()) << bad;
  }
}

std::string form_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string callback_body(const std::string& user, const std::string& action,
                          const std::string& approval_id, const std::string& trigger = "") {
  nlohmann::json p = {{"type", "block_actions"},
                      {"user", {{"id", user}, {"username", "u-" + user}}},
                      {"actions", {{{"action_id", action}, {"value", approval_id}}}}};
  if (!trigger.empty()) p["trigger_id"] = trigger;
  return "payload=" + form_encode(p.dump());
}

TEST(ChatCallbackParse, ReadsTheClickAndRefusesOtherShapes) {
  auto a = parse_chat_callback(callback_body("U1", "approve", "abc", "t-1"));
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  EXPECT_EQ(a->user_id, "U1");
  EXPECT_EQ(a->user_name, "u-U1");
  EXPECT_EQ(a->action, "approve");
  EXPECT_EQ(a->approval_id, "abc");
  EXPECT_EQ(a->trigger_id, "t-1");
  for (const std::string& bad :
       {std::string("payload=not-json"), std::string("nopayload=1"),
        "payload=" + form_encode(R"({"type":"view_submission","user":{"id":"U1"}})"),
        "payload=" + form_encode(R"({"type":"block_actions","user":{"id":"U1"},"actions":[]})"),
        "payload=" + form_encode(R"({"type":"block_actions","user":{"id":7},
                "actions":[{"action_id":"approve","value":"x"}]})"),
        callback_body("U1", "delete_everything", "abc"), callback_body("U1", "approve", "")}) {
    EXPECT_FALSE(parse_chat_callback(bad).is_ok()) << bad;
  }
}

class ChatCallbackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-chat-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ApprovalStoreOptions o;
    o.state_dir = dir_;
    o.start_timer_thread = false;
    o.clock_ms = [this] { return now_s_.load() * 1000; };
    auto s = ApprovalStore::open(std::move(o));
    ASSERT_TRUE(s.is_ok());
    store_ = std::move(*s);
    ChatCallbackOptions c;
    c.signing_secret = vault::Secret(std::string("s3cr3t-signing"));
    c.store = store_.get();
    c.users = {{"UALICE", {"alice@example.com", {"dba"}}},
               {"UBOB", {"bob@example.com", {"dba"}}},
               {"UAGENT", {"agent-7", {"dba"}}}};
    c.clock_s = [this] { return now_s_.load(); };
    c.console_base_url = "https://gw.example.com";
    c.audit = [this](const nlohmann::json& j) {
      std::lock_guard lock(mu_);
      audit_.push_back(j);
    };
    auto cb = ChatCallback::create(std::move(c));
    ASSERT_TRUE(cb.is_ok());
    chat_ = std::move(*cb);
  }
  void TearDown() override {
    chat_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }

  std::string create(int required = 1) {
    NewApprovalRequest n;
    n.session_id = "s1";
    n.identity = "agent-7";
    n.target = "crm";
    n.sql = "DELETE FROM crm.orders";
    n.rule = "approve.delete";
    n.settings.approver_groups = {"dba"};
    n.settings.required_approvals = required;
    auto r = store_->create(n);
    EXPECT_TRUE(r.is_ok());
    return r->id;
  }

  ChatReply send(const std::string& body, int64_t ts) {
    std::string t = std::to_string(ts);
    return chat_->handle(t, chat_signature("s3cr3t-signing", t, body), body);
  }

  nlohmann::json last_audit() {
    std::lock_guard lock(mu_);
    return audit_.empty() ? nlohmann::json() : audit_.back();
  }

  std::string dir_;
  std::atomic<int64_t> now_s_{1'700'000'000};
  std::unique_ptr<ApprovalStore> store_;
  std::unique_ptr<ChatCallback> chat_;
  std::mutex mu_;
  std::vector<nlohmann::json> audit_;
};

TEST_F(ChatCallbackTest, SignedClickApprovesAndAnswersWithTheUpdatedMessage) {
  std::string id = create();
  ChatReply r = send(callback_body("UALICE", "approve", id, "trig-1"), now_s_);
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["replace_original"], true);
  EXPECT_NE(j.dump().find("Approved by alice@example.com"), std::string::npos);
  EXPECT_EQ(j.dump().find("\"actions\""), std::string::npos);  // no buttons once decided
  auto req = store_->get(id);
  EXPECT_EQ(req->state, ApprovalState::kApproved);
  EXPECT_EQ(req->decider, "alice@example.com");
  EXPECT_EQ(req->via, "chat");
  EXPECT_EQ(last_audit()["event"], "chat_callback");
  EXPECT_EQ(last_audit()["decision"], "ok");
  EXPECT_EQ(last_audit()["chat_user"], "UALICE");
  EXPECT_EQ(last_audit()["identity"], "alice@example.com");
}

TEST_F(ChatCallbackTest, BadSignatureOldTimestampAndReplayAreRefused) {
  std::string id = create(2);
  std::string body = callback_body("UALICE", "approve", id);
  std::string t = std::to_string(now_s_.load());
  std::string good = chat_signature("s3cr3t-signing", t, body);
  std::string wrong_key = chat_signature("another-secret", t, body);
  EXPECT_EQ(chat_->handle(t, wrong_key, body).status, 401);
  EXPECT_EQ(chat_->handle(t, good.substr(0, good.size() - 1), body).status, 401);
  EXPECT_EQ(chat_->handle(t, "", body).status, 401);
  EXPECT_EQ(chat_->handle("", good, body).status, 401);
  EXPECT_EQ(chat_->handle("12ab", good, body).status, 401);
  // Body changed after signing.
  EXPECT_EQ(chat_->handle(t, good, callback_body("UALICE", "deny", id)).status, 401);
  EXPECT_EQ(last_audit()["reason"], "bad request signature");
  // Signed correctly but 6 minutes old (and 6 minutes in the future).
  EXPECT_EQ(send(body, now_s_ - 360).status, 401);
  EXPECT_NE(last_audit()["reason"].get<std::string>().find("window"), std::string::npos);
  EXPECT_EQ(send(body, now_s_ + 360).status, 401);
  EXPECT_EQ(store_->get(id)->votes.size(), 0u);
  // The genuine request, then its replay.
  EXPECT_EQ(chat_->handle(t, good, body).status, 200);
  EXPECT_EQ(chat_->handle(t, good, body).status, 409);
  EXPECT_EQ(last_audit()["decision"], "refused");
  EXPECT_EQ(store_->get(id)->votes.size(), 1u);
  // Never the secret in an audit record.
  std::lock_guard lock(mu_);
  for (const auto& a : audit_) EXPECT_EQ(a.dump().find("s3cr3t"), std::string::npos);
}

TEST_F(ChatCallbackTest, SameTriggerIdWithAFreshSignatureIsAReplay) {
  std::string id = create(2);
  EXPECT_EQ(send(callback_body("UALICE", "approve", id, "trig-9"), now_s_).status, 200);
  now_s_ += 1;
  EXPECT_EQ(send(callback_body("UALICE", "approve", id, "trig-9"), now_s_).status, 409);
}

TEST_F(ChatCallbackTest, UnmappedUserIsRefusedAndAudited) {
  std::string id = create();
  ChatReply r = send(callback_body("UMALLORY", "approve", id), now_s_);
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(store_->get(id)->state, ApprovalState::kPending);
  auto a = last_audit();
  EXPECT_EQ(a["decision"], "refused");
  EXPECT_EQ(a["chat_user"], "UMALLORY");
  EXPECT_EQ(a["approval_id"], id);
}

TEST_F(ChatCallbackTest, StoreRulesApplyToChatDecisions) {
  std::string id = create(2);
  // The requester's own chat account cannot approve.
  ChatReply self = send(callback_body("UAGENT", "approve", id), now_s_);
  EXPECT_EQ(self.status, 200);
  EXPECT_NE(self.body.find("pgwarden refused"), std::string::npos);
  EXPECT_EQ(last_audit()["decision"], "refused");
  // Two of two: the first click leaves it pending with buttons, the second approves.
  ChatReply first = send(callback_body("UALICE", "approve", id), now_s_);
  EXPECT_EQ(first.status, 200);
  EXPECT_NE(first.body.find("1 of 2 approvals"), std::string::npos);
  EXPECT_NE(first.body.find("\"actions\""), std::string::npos);
  EXPECT_EQ(store_->get(id)->state, ApprovalState::kPending);
  now_s_ += 1;
  ChatReply second = send(callback_body("UBOB", "deny", id), now_s_);
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(store_->get(id)->state, ApprovalState::kDenied);
  EXPECT_EQ(store_->get(id)->decider, "bob@example.com");
}

TEST_F(ChatCallbackTest, MalformedAndOversizedBodiesAreRefused) {
  EXPECT_EQ(send("payload=%zz", now_s_).status, 400);
  EXPECT_EQ(send(std::string(70 << 10, 'a'), now_s_).status, 413);
}

TEST(ChatMessage, CarriesStatementIdentityReasonAndButtons) {
  ApprovalRequest r;
  r.id = "Abc123";
  r.identity = "agent-7";
  r.target = "crm";
  r.rule = "approve.delete";
  r.request_reason = "deletes need a human";
  r.sql = "DELETE FROM t WHERE a < 1 AND b > 2 -- `x`";
  r.required_approvals = 2;
  auto m = chat_message(r, "https://gw.example.com/approvals/Abc123");
  std::string s = m.dump();
  EXPECT_NE(s.find("agent-7"), std::string::npos);
  EXPECT_NE(s.find("deletes need a human"), std::string::npos);
  EXPECT_NE(s.find("a &lt; 1 AND b &gt; 2"), std::string::npos);  // escaped for mrkdwn
  EXPECT_NE(s.find("https://gw.example.com/approvals/Abc123"), std::string::npos);
  const auto& actions = m["blocks"].back();
  ASSERT_EQ(actions["type"], "actions");
  ASSERT_EQ(actions["elements"].size(), 2u);
  EXPECT_EQ(actions["elements"][0]["action_id"], "approve");
  EXPECT_EQ(actions["elements"][0]["value"], "Abc123");
  EXPECT_EQ(actions["elements"][1]["action_id"], "deny");
}

}  // namespace
}  // namespace pgwarden::approvals
