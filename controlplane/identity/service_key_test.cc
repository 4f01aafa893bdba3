#include "controlplane/identity/service_key.h"

#include <gtest/gtest.h>

namespace pgwarden::identity {
namespace {

// Cheap parameters keep the tests fast; the defaults are tested once.
KdfParams fast_scrypt() {
  KdfParams p;
  p.scrypt_n = 1024;
  return p;
}
KdfParams fast_pbkdf2() {
  KdfParams p;
  p.kind = KdfKind::kPbkdf2Sha256;
  p.pbkdf2_iterations = 10000;
  return p;
}

ServiceKeyConfig config_for(const std::string& id, const GeneratedServiceKey& g) {
  return ServiceKeyConfig{id, g.hash.salt, g.hash.hash, "ci-runner", {"ci", "readers"}};
}

TEST(ServiceKey, GeneratedScryptKeyVerifiesToItsIdentity) {
  auto g = generate_service_key("ci-1", fast_scrypt());
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  EXPECT_TRUE(g->key.starts_with("pgw_sk_ci-1_"));
  EXPECT_TRUE(g->hash.hash.starts_with("scrypt:1024:8:1:"));
  std::vector<ServiceKeyConfig> keys = {config_for("ci-1", *g)};
  ASSERT_TRUE(validate_service_key_config(keys[0]).is_ok());
  auto r = verify_service_key(g->key, keys);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.identity().subject, "ci-runner");
  EXPECT_EQ(r.identity().provider, "service-key:ci-1");
  EXPECT_EQ(r.identity().key_id, "ci-1");
  EXPECT_EQ(r.identity().groups, (std::vector<std::string>{"ci", "readers"}));
  EXPECT_FALSE(r.identity().expires_at.has_value());
}

TEST(ServiceKey, GeneratedPbkdf2KeyVerifies) {
  auto g = generate_service_key("batch", fast_pbkdf2());
  ASSERT_TRUE(g.is_ok());
  EXPECT_TRUE(g->hash.hash.starts_with("pbkdf2-sha256:10000:"));
  auto r = verify_service_key(g->key, {config_for("batch", *g)});
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
}

TEST(ServiceKey, DefaultParametersProduceAVerifiableHash) {
  auto h = make_service_key_hash("s3cret-value");
  ASSERT_TRUE(h.is_ok());
  EXPECT_TRUE(h->hash.starts_with("scrypt:16384:8:1:"));
  ServiceKeyConfig k{"svc", h->salt, h->hash, "svc-user", {}};
  EXPECT_TRUE(verify_service_key("pgw_sk_svc_s3cret-value", {k}).is_ok());
}

TEST(ServiceKey, SameSecretGetsDifferentSaltAndHash) {
  auto a = make_service_key_hash("same", fast_scrypt());
  auto b = make_service_key_hash("same", fast_scrypt());
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_NE(a->salt, b->salt);
  EXPECT_NE(a->hash, b->hash);
}

TEST(ServiceKey, WrongSecretIsBadServiceKey) {
  auto g = generate_service_key("ci-1", fast_scrypt());
  std::string wrong = g->key;
  wrong.back() = wrong.back() == 'A' ? 'B' : 'A';
  auto r = verify_service_key(wrong, {config_for("ci-1", *g)});
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.rejection().reason, RejectReason::kBadServiceKey);
  EXPECT_EQ(r.status().sqlstate(), "28P01");
  EXPECT_EQ(r.rejection().message.find(wrong), std::string::npos);  // secret not echoed
}

TEST(ServiceKey, UnknownIdIsUnknownServiceKey) {
  auto g = generate_service_key("ci-1", fast_scrypt());
  auto r = verify_service_key("pgw_sk_other_" + g->key.substr(12), {config_for("ci-1", *g)});
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.rejection().reason, RejectReason::kUnknownServiceKey);
}

TEST(ServiceKey, MalformedKeysAreRejected) {
  for (std::string k :
       {"pgw_sk_", "pgw_sk_id", "pgw_sk_id_", "pgw_sk__secret", "pgw_sk_b@d_x", "sk_id_secret"}) {
    auto r = verify_service_key(k, {});
    ASSERT_FALSE(r.is_ok()) << k;
    EXPECT_EQ(r.rejection().reason, RejectReason::kMalformed) << k;
  }
}

TEST(ServiceKey, ConfigValidationCatchesBadEntries) {
  auto g = generate_service_key("ok", fast_scrypt());
  ServiceKeyConfig good = config_for("ok", *g);
  EXPECT_TRUE(validate_service_key_config(good).is_ok());
  auto bad = good;
  bad.id = "has_underscore";
  EXPECT_FALSE(validate_service_key_config(bad).is_ok());
  bad = good;
  bad.hash = "md5:abc";
  EXPECT_FALSE(validate_service_key_config(bad).is_ok());
  bad = good;
  bad.hash = "scrypt:1048576000:8:1:" + good.hash.substr(good.hash.rfind(':') + 1);
  EXPECT_FALSE(validate_service_key_config(bad).is_ok());  // would be a login DoS
  bad = good;
  bad.salt = "not base64!";
  EXPECT_FALSE(validate_service_key_config(bad).is_ok());
  bad = good;
  bad.identity.clear();
  EXPECT_FALSE(validate_service_key_config(bad).is_ok());
}

TEST(ServiceKey, WeakParametersAreRefusedWhenHashing) {
  KdfParams p = fast_pbkdf2();
  p.pbkdf2_iterations = 1000;
  EXPECT_FALSE(make_service_key_hash("x", p).is_ok());
  EXPECT_FALSE(generate_service_key("bad id", fast_scrypt()).is_ok());
}

}  // namespace
}  // namespace pgwarden::identity
