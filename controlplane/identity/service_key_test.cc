#include "controlplane/identity/service_key.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

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

// A new key "fleet", the configured keys that hold it, and an empty memory of verified keys.
class VerifiedServiceKeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto g = generate_service_key("fleet", fast_scrypt());
    ASSERT_TRUE(g.is_ok()) << g.status().to_string();
    fleet_ = *g;
    keys_ = {config_for("fleet", fleet_)};
  }
  GeneratedServiceKey fleet_;
  std::vector<ServiceKeyConfig> keys_;
  VerifiedServiceKeys verified_;
};

TEST_F(VerifiedServiceKeysTest, AcceptedKeyIsAnsweredFromMemoryWithTheSameIdentity) {
  auto first = verified_.verify(fleet_.key, keys_);
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  EXPECT_EQ(verified_.hits(), 0u);
  EXPECT_EQ(verified_.size(), 1u);
  for (int i = 0; i < 3; ++i) {
    auto again = verified_.verify(fleet_.key, keys_);
    ASSERT_TRUE(again.is_ok()) << again.status().to_string();
    EXPECT_EQ(again.identity().subject, first.identity().subject);
    EXPECT_EQ(again.identity().key_id, "fleet");
    EXPECT_EQ(again.identity().provider, "service-key:fleet");
    EXPECT_EQ(again.identity().groups, first.identity().groups);
    EXPECT_EQ(again.identity().claims, first.identity().claims);
  }
  EXPECT_EQ(verified_.hits(), 3u);
}

TEST_F(VerifiedServiceKeysTest, WrongOrUnknownSecretsAreNeverRemembered) {
  ASSERT_TRUE(verified_.verify(fleet_.key, keys_).is_ok());
  // Near misses of a remembered credential pay the KDF and fail, every time.
  std::string last_changed = fleet_.key;
  last_changed.back() = last_changed.back() == 'A' ? 'B' : 'A';
  for (const std::string& wrong :
       {fleet_.key + "x", fleet_.key.substr(0, fleet_.key.size() - 1), last_changed}) {
    for (int i = 0; i < 2; ++i) {
      auto r = verified_.verify(wrong, keys_);
      ASSERT_FALSE(r.is_ok()) << wrong;
      EXPECT_EQ(r.rejection().reason, RejectReason::kBadServiceKey) << wrong;
    }
  }
  auto unknown =
      verified_.verify("pgw_sk_other_" + fleet_.key.substr(fleet_.key.rfind('_') + 1), keys_);
  ASSERT_FALSE(unknown.is_ok());
  EXPECT_EQ(unknown.rejection().reason, RejectReason::kUnknownServiceKey);
  EXPECT_EQ(verified_.size(), 1u);
  EXPECT_EQ(verified_.hits(), 0u);
}

TEST_F(VerifiedServiceKeysTest, AKeyNoLongerConfiguredIsVerifiedInFullAndRefused) {
  ASSERT_TRUE(verified_.verify(fleet_.key, keys_).is_ok());
  auto r = verified_.verify(fleet_.key, {});
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.rejection().reason, RejectReason::kUnknownServiceKey);
  EXPECT_EQ(verified_.size(), 0u);
}

TEST(VerifiedServiceKeysCapacity, StaysWithinItsCapacityAndKeepsAnsweringCorrectly) {
  std::vector<ServiceKeyConfig> keys;
  std::vector<std::string> creds;
  for (int i = 0; i < 5; ++i) {
    std::string id = "k" + std::to_string(i);
    auto g = generate_service_key(id, fast_scrypt());
    ASSERT_TRUE(g.is_ok());
    keys.push_back(config_for(id, *g));
    creds.push_back(g->key);
  }
  VerifiedServiceKeys verified(2);
  for (int round = 0; round < 2; ++round) {
    for (size_t i = 0; i < creds.size(); ++i) {
      auto r = verified.verify(creds[i], keys);
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
      EXPECT_EQ(r.identity().key_id, "k" + std::to_string(i));
      EXPECT_LE(verified.size(), 2u);
    }
  }
}

TEST_F(VerifiedServiceKeysTest, ConcurrentLoginsOfOneKeyAllSucceed) {
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        if (verified_.verify(fleet_.key, keys_).is_ok()) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 400);
  EXPECT_GE(verified_.hits(), 400u - 8u);  // at most one full verification per thread
}

}  // namespace
}  // namespace pgwarden::identity
