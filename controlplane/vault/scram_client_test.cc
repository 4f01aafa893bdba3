#include "controlplane/vault/scram_client.h"

#include <gtest/gtest.h>

namespace pgwarden::vault {
namespace {

// RFC 7677 section 3 example exchange.
constexpr char kNonce[] = "rOprNGfwEbeRWgbNEkqO";
constexpr char kServerFirst[] =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr char kClientFinal[] =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr char kServerFinal[] = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

ScramClient rfc_client() { return ScramClient(Secret::copy_of("pencil"), kNonce, "user"); }

TEST(ScramClientTest, Rfc7677ExampleExchangeMatchesByteForByte) {
  ScramClient c(Secret::copy_of("pencil"), kNonce, "user");
  auto first = c.client_first_message();
  ASSERT_TRUE(first.is_ok());
  EXPECT_EQ(*first, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
  auto final_msg = c.handle_server_first(kServerFirst);
  ASSERT_TRUE(final_msg.is_ok()) << final_msg.status().to_string();
  EXPECT_EQ(*final_msg, kClientFinal);
  EXPECT_TRUE(c.verify_server_final(kServerFinal).is_ok());
  EXPECT_EQ(c.state(), ScramClient::State::kDone);
}

TEST(ScramClientTest, DefaultClientFirstHasEmptyUserAndRandomNonce) {
  ScramClient a(Secret::copy_of("x")), b(Secret::copy_of("x"));
  auto fa = a.client_first_message();
  auto fb = b.client_first_message();
  ASSERT_TRUE(fa.is_ok() && fb.is_ok());
  EXPECT_EQ(fa->rfind("n,,n=,r=", 0), 0u);
  EXPECT_EQ(fa->size(), std::string("n,,n=,r=").size() + 24);
  EXPECT_NE(*fa, *fb);
}

TEST(ScramClientTest, WrongServerSignatureFailsClosed) {
  ScramClient c = rfc_client();
  ASSERT_TRUE(c.client_first_message().is_ok());
  ASSERT_TRUE(c.handle_server_first(kServerFirst).is_ok());
  Status s = c.verify_server_final("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.sqlstate(), "28000");
  EXPECT_EQ(c.state(), ScramClient::State::kFailed);
}

TEST(ScramClientTest, ServerErrorAttributeFailsWithInvalidPassword) {
  ScramClient c = rfc_client();
  ASSERT_TRUE(c.client_first_message().is_ok());
  ASSERT_TRUE(c.handle_server_first(kServerFirst).is_ok());
  Status s = c.verify_server_final("e=invalid-proof");
  EXPECT_EQ(s.sqlstate(), "28P01");
  EXPECT_EQ(c.state(), ScramClient::State::kFailed);
}

struct BadServerFirst {
  const char* name;
  const char* message;
};

class ScramBadServerFirstTest : public ::testing::TestWithParam<BadServerFirst> {};

TEST_P(ScramBadServerFirstTest, IsRejected) {
  ScramClient c = rfc_client();
  ASSERT_TRUE(c.client_first_message().is_ok());
  auto r = c.handle_server_first(GetParam().message);
  EXPECT_FALSE(r.is_ok());
  EXPECT_EQ(c.state(), ScramClient::State::kFailed);
  // A failed client never proceeds.
  EXPECT_FALSE(c.verify_server_final(kServerFinal).is_ok());
}

INSTANTIATE_TEST_SUITE_P(
    Corpus, ScramBadServerFirstTest,
    ::testing::Values(
        BadServerFirst{"NonceNotExtended",
                       "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"},
        BadServerFirst{"NonceOtherPrefix",
                       "r=XXprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"},
        BadServerFirst{"IterationsTooLow",
                       "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095"},
        BadServerFirst{"IterationsAbsurd",
                       "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=10000001"},
        BadServerFirst{"IterationsNotNumber",
                       "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4k"},
        BadServerFirst{"IterationsMissing", "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ=="},
        BadServerFirst{"SaltNotBase64",
                       "r=rOprNGfwEbeRWgbNEkqOabc,s=W22Z!J0SNY7soEsUEjb6gQ==,i=4096"},
        BadServerFirst{"MandatoryExtension",
                       "m=x,r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"},
        BadServerFirst{"AttributesOutOfOrder",
                       "s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOabc,i=4096"},
        BadServerFirst{"Empty", ""}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ScramClientTest, StepsOutOfOrderFail) {
  ScramClient c = rfc_client();
  EXPECT_FALSE(c.handle_server_first(kServerFirst).is_ok());
  EXPECT_EQ(c.state(), ScramClient::State::kFailed);
  EXPECT_FALSE(c.client_first_message().is_ok());
}

TEST(ScramClientTest, UsernameIsEscaped) {
  ScramClient c(Secret::copy_of("p"), "abc", "a,b=c");
  auto first = c.client_first_message();
  ASSERT_TRUE(first.is_ok());
  EXPECT_EQ(*first, "n,,n=a=2Cb=3Dc,r=abc");
}

}  // namespace
}  // namespace pgwarden::vault
