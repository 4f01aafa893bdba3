#include "controlplane/web/admin_routes.h"

#include <gtest/gtest.h>

namespace pgwarden::web {
namespace {

using json = nlohmann::json;

struct RouteCase {
  const char* method;
  const char* path;
  const char* query;
  const char* body;
  const char* command;  // "" = not found
  Role role;
  const char* args;  // expected args (JSON)
};

class AdminCallTest : public ::testing::TestWithParam<RouteCase> {};

TEST_P(AdminCallTest, MapsMethodAndPathToTheSocketsCommand) {
  const RouteCase& c = GetParam();
  Request r;
  r.method = c.method;
  r.path = c.path;
  r.query = c.query;
  r.body = c.body;
  auto call = admin_call_for(r);
  if (std::string(c.command).empty()) {
    ASSERT_FALSE(call.is_ok());
    EXPECT_EQ(call.status().code(), StatusCode::kNotFound);
    return;
  }
  ASSERT_TRUE(call.is_ok()) << call.status().to_string();
  EXPECT_EQ(call->command, c.command);
  EXPECT_EQ(call->min_role, c.role);
  EXPECT_EQ(call->args, json::parse(c.args));
}

INSTANTIATE_TEST_SUITE_P(
    Endpoints, AdminCallTest,
    ::testing::Values(
        RouteCase{"GET", "/api/v1/status", "", "", "status", Role::kViewer, "{}"},
        RouteCase{"GET", "/api/v1/approvals", "state=pending", "", "approvals.list", Role::kViewer,
                  R"({"state":"pending"})"},
        RouteCase{"GET", "/api/v1/approvals/a1", "", "", "approvals.show", Role::kViewer,
                  R"({"id":"a1"})"},
        // The id in the path wins over one in the body: the URL is what was authorized.
        RouteCase{"POST", "/api/v1/approvals/a1/approve", "", R"({"id":"b2","reason":"ok"})",
                  "approvals.approve", Role::kReviewer, R"({"id":"a1","reason":"ok"})"},
        RouteCase{"POST", "/api/v1/approvals/a1/deny", "", R"({"reason":"no"})", "approvals.deny",
                  Role::kReviewer, R"({"id":"a1","reason":"no"})"},
        RouteCase{"POST", "/api/v1/approvals/a1/break-glass", "", R"({"reason":"INC-7"})",
                  "approvals.break_glass", Role::kReviewer, R"({"id":"a1","reason":"INC-7"})"},
        RouteCase{"GET", "/api/v1/approvals/a1/approve", "", "", "", Role::kNone, ""},
        RouteCase{"POST", "/api/v1/sessions/s1/kill", "", "", "sessions.kill", Role::kOperator,
                  R"({"id":"s1"})"},
        RouteCase{"POST", "/api/v1/sessions/kill", "", R"({"identity":"svc:a"})", "sessions.kill",
                  Role::kOperator, R"({"identity":"svc:a"})"},
        RouteCase{"GET", "/api/v1/sessions/s1/replay", "", "", "sessions.replay", Role::kReviewer,
                  R"({"id":"s1"})"},
        RouteCase{"GET", "/api/v1/identities", "all=1", "", "identities.list", Role::kViewer,
                  R"({"all":true})"},
        RouteCase{"POST", "/api/v1/rules/deny/add", "", R"({"text":"x"})", "rules.add",
                  Role::kAdmin, R"({"set":"deny","text":"x"})"},
        RouteCase{"POST", "/api/v1/config/reload", "", "", "config.reload", Role::kAdmin, "{}"},
        RouteCase{"GET", "/api/v1/budgets", "", "", "budgets.list", Role::kViewer, "{}"},
        RouteCase{"GET", "/api/v1/budgets/svc:agent1", "", "", "budgets.show", Role::kViewer,
                  R"({"identity":"svc:agent1"})"},
        RouteCase{"POST", "/api/v1/budgets/svc:agent1/reset", "", R"({"budget":"rows"})",
                  "budgets.reset", Role::kOperator, R"({"identity":"svc:agent1","budget":"rows"})"},
        RouteCase{"GET", "/api/v1/audit", "event=admin&limit=5&since_ms=x", "", "audit.search",
                  Role::kViewer, R"({"event":"admin","limit":5})"},
        RouteCase{"POST", "/api/v1/commands/approvals.list", "", R"({"state":"all"})",
                  "approvals.list", Role::kViewer, R"({"state":"all"})"},
        RouteCase{"POST", "/api/v1/commands/shell.exec", "", "", "", Role::kNone, ""},
        RouteCase{"GET", "/api/v2/status", "", "", "", Role::kNone, ""},
        RouteCase{"DELETE", "/api/v1/approvals/a1", "", "", "", Role::kNone, ""}));

TEST(AdminCall, ABodyThatIsNotAnObjectIsRefused) {
  Request r{.method = "POST", .path = "/api/v1/sessions/kill", .body = "[1]"};
  auto call = admin_call_for(r);
  ASSERT_FALSE(call.is_ok());
  EXPECT_EQ(call.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pgwarden::web
