// The vault's SCRAM client logs in to a real PostgreSQL through the exact message sequence
// the dataplane relays (StartupMessage, SASLInitialResponse, SASLResponse), by hand.
#include <gtest/gtest.h>

#include <algorithm>

#include "controlplane/vault/scram_client.h"
#include "tests/integration/pg_raw.h"
#include "tests/support/pg_sandbox.h"

namespace pgwarden {
namespace {

using testing::BackendMessage;
using testing::PgSandbox;
using testing::RawPgConnection;

class ScramUpstreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    sandbox_ = new PgSandbox();
    Status s = sandbox_->start();
    ASSERT_TRUE(s.is_ok()) << s.to_string();
  }
  static void TearDownTestSuite() {
    delete sandbox_;
    sandbox_ = nullptr;
  }
  static PgSandbox* sandbox_;
};
PgSandbox* ScramUpstreamTest::sandbox_ = nullptr;

// Runs the login with `password`; returns the message that ended the SASL exchange.
BackendMessage login(PgSandbox& sb, const std::string& password, bool* server_verified) {
  *server_verified = false;
  RawPgConnection conn;
  EXPECT_TRUE(conn.connect_tcp(sb.host(), sb.port()).is_ok());
  EXPECT_TRUE(conn.send_startup("app_scram", "demo").is_ok());
  auto sasl = conn.read_message();
  EXPECT_TRUE(sasl.is_ok());
  EXPECT_EQ(sasl->auth_code(), 10);
  auto mechs = sasl->sasl_mechanisms();
  EXPECT_NE(std::find(mechs.begin(), mechs.end(), "SCRAM-SHA-256"), mechs.end());

  vault::ScramClient scram(vault::Secret::copy_of(password));
  auto first = scram.client_first_message();
  EXPECT_TRUE(first.is_ok());
  EXPECT_TRUE(conn.send_sasl_initial_response("SCRAM-SHA-256", *first).is_ok());
  auto cont = conn.read_message();
  EXPECT_TRUE(cont.is_ok());
  EXPECT_EQ(cont->auth_code(), 11);
  auto final_msg = scram.handle_server_first(cont->sasl_data());
  EXPECT_TRUE(final_msg.is_ok()) << final_msg.status().to_string();
  EXPECT_TRUE(conn.send_sasl_response(*final_msg).is_ok());
  auto fin = conn.read_message();
  EXPECT_TRUE(fin.is_ok());
  if (fin->type != 'R' || fin->auth_code() != 12) return *fin;
  *server_verified = scram.verify_server_final(fin->sasl_data()).is_ok();
  // After AuthenticationSASLFinal: AuthenticationOk, ParameterStatus*, BackendKeyData, RFQ.
  auto ok = conn.read_message();
  EXPECT_TRUE(ok.is_ok());
  EXPECT_EQ(ok->auth_code(), 0);
  while (true) {
    auto m = conn.read_message();
    EXPECT_TRUE(m.is_ok());
    if (!m.is_ok() || m->type == 'Z' || m->type == 'E') return *m;
  }
}

TEST_F(ScramUpstreamTest, CorrectPasswordReachesReadyForQueryWithVerifiedServer) {
  bool verified = false;
  BackendMessage last = login(*sandbox_, sandbox_->get("PGW_SCRAM_PASSWORD"), &verified);
  EXPECT_TRUE(verified);
  EXPECT_EQ(last.type, 'Z');
  EXPECT_EQ(last.payload, "I");
}

TEST_F(ScramUpstreamTest, WrongPasswordFailsWithServer28P01) {
  bool verified = false;
  BackendMessage last = login(*sandbox_, "not-the-password", &verified);
  EXPECT_FALSE(verified);
  ASSERT_EQ(last.type, 'E');
  EXPECT_EQ(last.fields()['C'], "28P01");
}

}  // namespace
}  // namespace pgwarden
