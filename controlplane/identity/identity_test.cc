#include "controlplane/identity/identity.h"

#include <gtest/gtest.h>

#include <cctype>
#include <set>

namespace pgwarden::identity {
namespace {

TEST(RejectReason, NamesAreDistinctSnakeCaseAndStable) {
  std::set<std::string_view> seen;
  int count = 0;
#define PGW_X(name, str)                                            \
  ++count;                                                          \
  EXPECT_EQ(reject_reason_name(RejectReason::name), str);           \
  EXPECT_TRUE(seen.insert(str).second) << "duplicate name " << str; \
  for (char c : std::string_view(str)) EXPECT_TRUE(std::islower(c) || c == '_') << str;
  PGW_IDENTITY_REJECT_REASONS(PGW_X)
#undef PGW_X
  EXPECT_EQ(count, 22);
  // Names other components and operators rely on.
  EXPECT_EQ(reject_reason_name(RejectReason::kAlgNone), "alg_none");
  EXPECT_EQ(reject_reason_name(RejectReason::kHmacWithAsymmetricKey), "hmac_with_asymmetric_key");
  EXPECT_EQ(reject_reason_name(RejectReason::kEcdsaSignatureOutOfRange),
            "ecdsa_signature_out_of_range");
  EXPECT_EQ(reject_reason_name(RejectReason::kExpired), "expired");
}

TEST(Rejection, BecomesAnInvalidAuthorizationStatus) {
  Rejection r{RejectReason::kWrongAudience, "audience is not pgwarden"};
  Status st = r.to_status();
  EXPECT_EQ(st.code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(st.sqlstate(), "28P01");
  EXPECT_EQ(st.message(), "wrong_audience: audience is not pgwarden");
}

TEST(IdentityResult, HoldsEitherAnIdentityOrARejection) {
  IdentityResult ok(Identity{.subject = "a"});
  EXPECT_TRUE(ok.is_ok());
  EXPECT_TRUE(ok.status().is_ok());
  EXPECT_EQ(ok.identity().subject, "a");
  IdentityResult bad(Rejection{RejectReason::kExpired, "x"});
  EXPECT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.rejection().reason, RejectReason::kExpired);
  EXPECT_EQ(bad.status().sqlstate(), "28P01");
}

}  // namespace
}  // namespace pgwarden::identity
