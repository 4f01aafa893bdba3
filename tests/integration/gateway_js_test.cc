// pgwarden-dp with the npm clients `pg` (node-postgres) and `postgres` (postgres.js): the
// script tests/js/gateway_clients.mjs runs login, SELECT, a transaction, a denied statement,
// a reused prepared statement, COPY in/out and a cancel with each, against the real gateway.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>

#include "common/source_root.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

TEST(GatewayJsTest, NodePostgresAndPostgresJsClientsWorkThroughTheGateway) {
  std::string js = std::string(PGW_SOURCE_ROOT) + "/tests/js";
  struct stat st;
  if (stat((js + "/node_modules/pg").c_str(), &st) != 0 ||
      stat((js + "/node_modules/postgres").c_str(), &st) != 0) {
    GTEST_SKIP() << "npm packages not installed: run `npm install` in tests/js (scripts/test "
                    "does)";
  }
  GatewayHarness gw;
  Status s = gw.start();
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  auto out = run_command("cd " + js + " && PGW_GW_PORT=" + std::to_string(gw.port()) +
                         " PGW_TOKEN=" + gw.token() + " timeout 120 node gateway_clients.mjs 2>&1");
  std::string text = out.is_ok() ? *out : out.status().message();
  EXPECT_TRUE(out.is_ok()) << text << "\n---- dp log ----\n" << gw.dp_log();
  for (const char* client : {"pg", "postgres"}) {
    for (const char* step :
         {"login", "select", "transaction", "deny", "prepared", "copy", "cancel"}) {
      std::string line = std::string("ok ") + client + " " + step;
      EXPECT_NE(text.find(line), std::string::npos) << "missing: " << line << "\n" << text;
    }
  }
}

}  // namespace
}  // namespace pgwarden::testing
