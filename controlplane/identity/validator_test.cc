#include "controlplane/identity/validator.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <thread>

#include "common/source_root.h"
#include "controlplane/identity/base64url.h"
#include "controlplane/identity/rfc_vectors.h"
#include "controlplane/identity/service_key.h"
#include "controlplane/identity/test_signer.h"

namespace pgwarden::identity {
namespace {

using std::chrono::seconds;
using std::chrono::system_clock;
using testing::TestSigner;

constexpr int64_t kNow = 1'800'000'000;
constexpr char kIssuer[] = "https://idp.example.test/realms/agents";
constexpr char kJwksUrl[] = "https://idp.example.test/jwks";

// An in-memory IdP: URL -> body, and a switch to take it down. Counts fetches.
struct FakeIdp {
  std::mutex mu;
  std::map<std::string, std::string> docs;
  bool down = false;
  std::atomic<int> fetches{0};

  HttpGetter getter() {
    return
        [this](std::string_view url, const net::HttpClientOptions&) -> Result<net::HttpResponse> {
          ++fetches;
          std::lock_guard lock(mu);
          if (down) return unavailable("connection refused");
          auto it = docs.find(std::string(url));
          if (it == docs.end()) return net::HttpResponse{404, "text/plain", "not found"};
          return net::HttpResponse{200, "application/json", it->second};
        };
  }
  void set(const std::string& url, const std::string& body) {
    std::lock_guard lock(mu);
    docs[url] = body;
  }
  void set_down(bool d) {
    std::lock_guard lock(mu);
    down = d;
  }
};

class ValidatorTest : public ::testing::Test {
 protected:
  // Key generation (RSA especially) is slow; the suite shares one set of keys.
  struct Keys {
    TestSigner es256{"ES256", "k-es256"}, ed{"EdDSA", "k-ed"}, rs{"RS256", "k-rs"};
  };
  static Keys& keys() {
    static Keys k;
    return k;
  }

  void SetUp() override { idp_.set(kJwksUrl, es256_.jwks({&ed_, &rs_})); }

  IdentityProviderConfig provider() const {
    IdentityProviderConfig c;
    c.name = "agents";
    c.issuer = kIssuer;
    c.audiences = {"pgwarden", "pgwarden-staging"};
    c.jwks_url = kJwksUrl;
    c.groups_claim = "realm_access.roles";
    c.leeway_seconds = 60;
    c.refresh_min_interval_seconds = 30;
    c.refresh_interval_seconds = 3600;
    return c;
  }

  std::unique_ptr<TokenValidator> make(std::vector<IdentityProviderConfig> providers,
                                       std::vector<ServiceKeyConfig> keys = {}) {
    ValidatorOptions o;
    o.clock = [this] { return system_clock::time_point(seconds(now_.load())); };
    o.http_get = idp_.getter();
    auto v = TokenValidator::create(std::move(providers), std::move(keys), std::move(o));
    EXPECT_TRUE(v.is_ok()) << v.status().to_string();
    return v.is_ok() ? std::move(v.value()) : nullptr;
  }
  std::unique_ptr<TokenValidator> make() { return make({provider()}); }

  nlohmann::json claims() const {
    return {{"iss", kIssuer},    {"sub", "agent-7"},
            {"aud", "pgwarden"}, {"iat", kNow - 10},
            {"exp", kNow + 300}, {"realm_access", {{"roles", {"readers", "analysts"}}}}};
  }

  RejectReason reason(const TokenValidator& v, std::string_view token) {
    auto r = v.validate(token);
    EXPECT_FALSE(r.is_ok()) << "unexpectedly accepted";
    if (r.is_ok()) return static_cast<RejectReason>(-1);
    // The token (or its signature) never ends up in a message.
    size_t dot = token.rfind('.');
    if (dot != std::string_view::npos && token.size() - dot > 16) {
      EXPECT_EQ(r.rejection().message.find(token.substr(dot + 1)), std::string::npos);
    }
    return r.rejection().reason;
  }

  FakeIdp idp_;
  std::atomic<int64_t> now_{kNow};
  const TestSigner& es256_ = keys().es256;
  const TestSigner& ed_ = keys().ed;
  const TestSigner& rs_ = keys().rs;
};

TEST_F(ValidatorTest, ValidTokenYieldsIdentity) {
  auto v = make();
  auto r = v->validate(es256_.sign(claims()));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const Identity& id = r.identity();
  EXPECT_EQ(id.subject, "agent-7");
  EXPECT_EQ(id.issuer, kIssuer);
  EXPECT_EQ(id.provider, "agents");
  EXPECT_EQ(id.groups, (std::vector<std::string>{"readers", "analysts"}));
  ASSERT_TRUE(id.expires_at.has_value());
  EXPECT_EQ(id.expires_at->time_since_epoch().count(), kNow + 300);
  EXPECT_EQ(id.claims["realm_access"]["roles"][1], "analysts");
}

TEST_F(ValidatorTest, IdentityNamesTheSigningKeyAndHasKeyFollowsJwksRefreshes) {
  auto v = make();
  auto r = v->validate(ed_.sign(claims()));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.identity().key_id, "k-ed");
  EXPECT_EQ(v->has_key("agents", "k-ed"), std::optional<bool>(true));
  EXPECT_EQ(v->has_key("agents", "k-gone"), std::optional<bool>(false));
  EXPECT_EQ(v->has_key("no-such-provider", "k-ed"), std::optional<bool>(false));
  // The provider drops k-ed; once the keys are stale they are refetched and it is gone.
  idp_.set(kJwksUrl, es256_.jwks({&rs_}));
  EXPECT_EQ(v->has_key("agents", "k-ed"), std::optional<bool>(true));  // not refetched yet
  now_ += 3601;
  EXPECT_EQ(v->has_key("agents", "k-ed"), std::optional<bool>(false));
  EXPECT_EQ(v->has_key("agents", "k-rs"), std::optional<bool>(true));
}

TEST_F(ValidatorTest, EveryKeyTypeInTheJwksValidates) {
  auto v = make();
  for (const TestSigner* s : {&es256_, &ed_, &rs_}) {
    auto r = v->validate(s->sign(claims()));
    EXPECT_TRUE(r.is_ok()) << s->alg() << ": " << r.status().to_string();
  }
}

TEST_F(ValidatorTest, TokenWithoutKidIsCheckedAgainstKeysThatFit) {
  auto v = make();
  auto r = v->validate(ed_.sign_raw_parts(R"({"alg":"EdDSA"})", claims().dump()));
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
}

TEST_F(ValidatorTest, AlgNoneIsRejected) {
  auto v = make();
  std::string payload = base64url_encode(claims().dump());
  EXPECT_EQ(reason(*v, base64url_encode(R"({"alg":"none"})") + "." + payload + "."),
            RejectReason::kAlgNone);
  EXPECT_EQ(
      reason(*v, base64url_encode(R"({"alg":"None","kid":"k-es256"})") + "." + payload + ".AAAA"),
      RejectReason::kAlgNone);
}

TEST_F(ValidatorTest, AlgorithmNotAllowedForProviderIsRejected) {
  auto c = provider();
  c.algorithms = {"ES256", "RS256"};
  auto v = make({c});
  EXPECT_TRUE(v->validate(es256_.sign(claims())).is_ok());
  EXPECT_EQ(reason(*v, ed_.sign(claims())), RejectReason::kAlgNotAllowed);
}

TEST_F(ValidatorTest, UnknownAlgorithmIsUnsupported) {
  auto v = make();
  EXPECT_EQ(reason(*v, es256_.sign(claims(), {{"alg", "ES256K"}})), RejectReason::kUnsupportedAlg);
}

TEST_F(ValidatorTest, Hs256SignedWithThePublicKeyIsRejected) {
  // The classic confusion attack: HMAC keyed with the published public key.
  auto v = make();
  std::string input =
      base64url_encode(R"({"alg":"HS256","kid":"k-rs"})") + "." + base64url_encode(claims().dump());
  std::string secret = rs_.public_jwk().dump();
  unsigned char mac[64];
  size_t mac_len = 0;
  ASSERT_NE(EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, secret.data(), secret.size(),
                      reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac,
                      sizeof(mac), &mac_len),
            nullptr);
  std::string token =
      input + "." + base64url_encode(std::string(reinterpret_cast<char*>(mac), mac_len));
  EXPECT_EQ(reason(*v, token), RejectReason::kHmacWithAsymmetricKey);
  EXPECT_EQ(reason(*v, es256_.sign(claims(), {{"alg", "HS512"}})),
            RejectReason::kHmacWithAsymmetricKey);
}

TEST_F(ValidatorTest, SignatureFromAnotherKeyWithTheSameKidIsBadSignature) {
  auto v = make();
  TestSigner impostor("ES256", "k-es256");
  EXPECT_EQ(reason(*v, impostor.sign(claims())), RejectReason::kBadSignature);
}

TEST_F(ValidatorTest, PayloadChangedAfterSigningIsBadSignature) {
  auto v = make();
  std::string token = ed_.sign(claims());
  auto evil = claims();
  evil["sub"] = "admin";
  size_t d1 = token.find('.'), d2 = token.rfind('.');
  std::string tampered = token.substr(0, d1 + 1) + base64url_encode(evil.dump()) + token.substr(d2);
  EXPECT_EQ(reason(*v, tampered), RejectReason::kBadSignature);
}

TEST_F(ValidatorTest, EcdsaSignatureWithZeroOrOversizedScalarsIsOutOfRange) {
  auto v = make();
  std::string token = es256_.sign(claims());
  std::string input = token.substr(0, token.rfind('.'));
  auto sig = *base64url_decode(token.substr(token.rfind('.') + 1));
  EXPECT_EQ(reason(*v, input + "." + base64url_encode(std::string(32, '\0') + sig.substr(32))),
            RejectReason::kEcdsaSignatureOutOfRange);
  EXPECT_EQ(reason(*v, input + "." + base64url_encode(sig.substr(0, 32) + std::string(32, '\xff'))),
            RejectReason::kEcdsaSignatureOutOfRange);
  EXPECT_EQ(reason(*v, input + "." + base64url_encode(sig.substr(0, 63))),
            RejectReason::kBadSignatureLength);
}

TEST_F(ValidatorTest, KidOfAKeyOfAnotherTypeIsKeyAlgMismatch) {
  auto v = make();
  // Header says ES384 but names the P-256 key.
  TestSigner p384("ES384", "k-es256");
  EXPECT_EQ(reason(*v, p384.sign(claims())), RejectReason::kKeyAlgMismatch);
}

TEST_F(ValidatorTest, ExpiredTokenIsRejectedAfterLeeway) {
  auto v = make();
  auto c = claims();
  c["exp"] = kNow - 61;
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kExpired);
  c["exp"] = kNow - 30;  // within the 60 s leeway
  EXPECT_TRUE(v->validate(es256_.sign(c)).is_ok());
}

TEST_F(ValidatorTest, NotYetValidTokenIsRejected) {
  auto v = make();
  auto c = claims();
  c["nbf"] = kNow + 120;
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kNotYetValid);
  c["nbf"] = kNow + 30;  // within leeway
  EXPECT_TRUE(v->validate(es256_.sign(c)).is_ok());
  c.erase("nbf");
  c["iat"] = kNow + 3600;
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kNotYetValid);
}

TEST_F(ValidatorTest, MissingOrMistypedTimeClaimsAreRejected) {
  auto v = make();
  auto c = claims();
  c.erase("exp");
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kMissingClaim);
  c["exp"] = "1800000300";
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kInvalidClaim);
  c["exp"] = 1e300;
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kInvalidClaim);
}

TEST_F(ValidatorTest, WrongIssuerForARequiredProviderIsRejected) {
  auto other = provider();
  other.name = "ci";
  other.issuer = "https://ci.example.test";
  auto v = make({provider(), other});
  EXPECT_TRUE(v->validate_for_provider(es256_.sign(claims()), "agents").is_ok());
  auto r = v->validate_for_provider(es256_.sign(claims()), "ci");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.rejection().reason, RejectReason::kWrongIssuer);
}

TEST_F(ValidatorTest, IssuerOfNoProviderIsNoMatchingProvider) {
  auto v = make();
  auto c = claims();
  c["iss"] = "https://evil.example.test";
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kNoMatchingProvider);
  c.erase("iss");
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kMissingClaim);
}

TEST_F(ValidatorTest, WrongAudienceIsRejected) {
  auto v = make();
  auto c = claims();
  c["aud"] = "another-service";
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kWrongAudience);
  c["aud"] = {"another-service", "yet-another"};
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kWrongAudience);
  c.erase("aud");
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kWrongAudience);
  c["aud"] = {"another-service", "pgwarden-staging"};  // array containing one of ours
  EXPECT_TRUE(v->validate(es256_.sign(c)).is_ok());
  c["aud"] = 7;
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kInvalidClaim);
}

TEST_F(ValidatorTest, MalformedTokensAreRejected) {
  auto v = make();
  std::string good = es256_.sign(claims());
  EXPECT_EQ(reason(*v, ""), RejectReason::kMalformed);
  EXPECT_EQ(reason(*v, "hunter2"), RejectReason::kMalformed);
  EXPECT_EQ(reason(*v, good.substr(0, good.rfind('.'))), RejectReason::kMalformed);
  EXPECT_EQ(reason(*v, good + ".AAAA"), RejectReason::kMalformed);
  EXPECT_EQ(reason(*v, good + "="), RejectReason::kMalformed);
  EXPECT_EQ(reason(*v, good + " garbage"), RejectReason::kMalformed);
  std::string slash = good;
  slash[slash.find('_') != std::string::npos ? slash.find('_') : 3] = '/';
  EXPECT_EQ(reason(*v, slash), RejectReason::kMalformed);
  EXPECT_EQ(reason(*v, es256_.sign_raw_parts(R"({"alg":"ES256","kid":"k-es256"})", "not json")),
            RejectReason::kMalformed);
}

TEST_F(ValidatorTest, OversizedTokenIsRejected) {
  auto v = make();
  auto c = claims();
  c["padding"] = std::string(kMaxTokenBytes, 'x');
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kOversized);
  EXPECT_EQ(reason(*v, std::string(kMaxTokenBytes + 1, 'a')), RejectReason::kOversized);
}

TEST_F(ValidatorTest, CritHeaderIsRejected) {
  auto v = make();
  EXPECT_EQ(reason(*v, es256_.sign(claims(), {{"crit", {"exp"}}, {"exp", 1}})),
            RejectReason::kUnsupportedCrit);
}

TEST_F(ValidatorTest, UnknownKidIsRejectedAfterOneRefetch) {
  auto v = make();
  now_ += 31;  // past the minimum interval since the initial load
  int before = idp_.fetches;
  TestSigner stranger("ES256", "k-unknown");
  EXPECT_EQ(reason(*v, stranger.sign(claims())), RejectReason::kUnknownKid);
  EXPECT_EQ(idp_.fetches, before + 1);  // tried the IdP once ...
  EXPECT_EQ(reason(*v, stranger.sign(claims())), RejectReason::kUnknownKid);
  EXPECT_EQ(idp_.fetches, before + 1);  // ... and not again within the minimum interval
}

TEST_F(ValidatorTest, RotatedKeyIsFetchedOnFirstUseAndRefetchesRespectMinInterval) {
  auto v = make();
  TestSigner next("ES256", "k-next"), later("EdDSA", "k-later");
  idp_.set(kJwksUrl, es256_.jwks({&next}));
  now_ += 31;  // past the minimum interval since the initial load
  int before = idp_.fetches;
  auto r = v->validate(next.sign(claims()));
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(idp_.fetches, before + 1);

  idp_.set(kJwksUrl, es256_.jwks({&next, &later}));
  now_ += 5;  // inside refresh_min_interval_seconds (30)
  EXPECT_EQ(reason(*v, later.sign(claims())), RejectReason::kUnknownKid);
  EXPECT_EQ(idp_.fetches, before + 1);
  now_ += 30;
  EXPECT_TRUE(v->validate(later.sign(claims())).is_ok());
  EXPECT_EQ(idp_.fetches, before + 2);
}

TEST_F(ValidatorTest, ProviderDownKeepsLastGoodKeys) {
  auto v = make();
  idp_.set_down(true);
  now_ += 7200;  // keys are stale: a refresh is attempted and fails
  auto c = claims();
  c["exp"] = now_ + 300;
  c["iat"] = now_.load();
  int before = idp_.fetches;
  auto r = v->validate(es256_.sign(c));
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(idp_.fetches, before + 1);
  auto st = v->provider_status();
  ASSERT_EQ(st.size(), 1u);
  EXPECT_EQ(st[0].key_count, 3u);
  EXPECT_GE(st[0].fetch_failures, 1u);
  EXPECT_NE(st[0].last_error.find("connection refused"), std::string::npos);
  // While down, validations do not each wait for a fetch.
  EXPECT_TRUE(v->validate(es256_.sign(c)).is_ok());
  EXPECT_EQ(idp_.fetches, before + 1);
}

TEST_F(ValidatorTest, ProviderDownFromTheStartIsJwksUnavailableUntilItComesUp) {
  idp_.set_down(true);
  auto v = make();
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(reason(*v, es256_.sign(claims())), RejectReason::kJwksUnavailable);
  idp_.set_down(false);
  now_ += 31;
  auto c = claims();
  c["exp"] = now_ + 300;
  EXPECT_TRUE(v->validate(es256_.sign(c)).is_ok());
}

TEST_F(ValidatorTest, DiscoveryDocumentLeadsToJwks) {
  const std::string disco = "https://idp.example.test/.well-known/openid-configuration";
  idp_.set(disco, nlohmann::json{{"issuer", kIssuer}, {"jwks_uri", kJwksUrl}}.dump());
  auto c = provider();
  c.jwks_url.clear();
  c.discovery_url = disco;
  auto v = make({c});
  EXPECT_TRUE(v->validate(es256_.sign(claims())).is_ok());
}

TEST_F(ValidatorTest, DiscoveryDocumentForAnotherIssuerIsNotTrusted) {
  const std::string disco = "https://idp.example.test/.well-known/openid-configuration";
  idp_.set(disco, nlohmann::json{{"issuer", "https://other"}, {"jwks_uri", kJwksUrl}}.dump());
  auto c = provider();
  c.jwks_url.clear();
  c.discovery_url = disco;
  auto v = make({c});
  EXPECT_EQ(reason(*v, es256_.sign(claims())), RejectReason::kJwksUnavailable);
  EXPECT_NE(v->provider_status()[0].last_error.find("issuer"), std::string::npos);
}

TEST_F(ValidatorTest, JwksFileSourceWorksAndABadFileFailsCreate) {
  char path[] = "/tmp/pgw-jwks-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  std::string doc = ed_.jwks();
  ASSERT_EQ(write(fd, doc.data(), doc.size()), static_cast<ssize_t>(doc.size()));
  close(fd);
  auto c = provider();
  c.jwks_url.clear();
  c.jwks_file = path;
  auto v = make({c});
  EXPECT_TRUE(v->validate(ed_.sign(claims())).is_ok());
  unlink(path);
  c.jwks_file = "/nonexistent/jwks.json";
  auto bad = TokenValidator::create({c}, {});
  EXPECT_FALSE(bad.is_ok());
}

TEST_F(ValidatorTest, GroupsClaimShapes) {
  auto c = provider();
  c.groups_claim = "groups";
  auto v = make({c});
  auto cl = claims();
  cl["groups"] = "solo";
  auto r = v->validate(es256_.sign(cl));
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r.identity().groups, std::vector<std::string>{"solo"});
  cl.erase("groups");
  r = v->validate(es256_.sign(cl));
  ASSERT_TRUE(r.is_ok());
  EXPECT_TRUE(r.identity().groups.empty());
  cl["groups"] = {"a", 5};
  EXPECT_EQ(reason(*v, es256_.sign(cl)), RejectReason::kInvalidClaim);
  cl["groups"] = {{"nested", true}};
  EXPECT_EQ(reason(*v, es256_.sign(cl)), RejectReason::kInvalidClaim);
}

TEST_F(ValidatorTest, MissingSubjectIsRejected) {
  auto v = make();
  auto c = claims();
  c.erase("sub");
  EXPECT_EQ(reason(*v, es256_.sign(c)), RejectReason::kMissingClaim);
}

TEST_F(ValidatorTest, ServiceKeyValidatesThroughTheSameEntryPoint) {
  KdfParams fast;
  fast.scrypt_n = 1024;
  auto g = generate_service_key("nightly", fast);
  ASSERT_TRUE(g.is_ok());
  auto v = make({provider()}, {{"nightly", g->hash.salt, g->hash.hash, "nightly-etl", {"etl"}}});
  auto r = v->validate(g->key);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.identity().subject, "nightly-etl");
  EXPECT_EQ(reason(*v, g->key + "x"), RejectReason::kBadServiceKey);
  auto pinned = v->validate_for_provider(g->key, "agents");
  ASSERT_FALSE(pinned.is_ok());
  EXPECT_EQ(pinned.rejection().reason, RejectReason::kNoMatchingProvider);
}

TEST_F(ValidatorTest, ConcurrentValidationDuringRotationIsConsistent) {
  auto v = make();
  TestSigner next("EdDSA", "k-rotated");
  std::vector<std::string> tokens = {es256_.sign(claims()), ed_.sign(claims()), rs_.sign(claims())};
  std::atomic<int> ok{0}, bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        auto r = v->validate(tokens[(t + i) % tokens.size()]);
        (r.is_ok() ? ok : bad)++;
      }
    });
  }
  idp_.set(kJwksUrl, es256_.jwks({&ed_, &rs_, &next}));
  now_ += 31;
  EXPECT_TRUE(v->validate(next.sign(claims())).is_ok());
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok, 1600);
  EXPECT_EQ(bad, 0);
}

TEST_F(ValidatorTest, ConfigErrorsAreReportedByCreate) {
  auto c = provider();
  c.audiences.clear();
  EXPECT_FALSE(TokenValidator::create({c}, {}).is_ok());
  c = provider();
  c.discovery_url = "https://x/.well-known/openid-configuration";  // two sources
  EXPECT_FALSE(TokenValidator::create({c}, {}).is_ok());
  c = provider();
  c.jwks_url = "http://idp.example.test/jwks";
  EXPECT_FALSE(TokenValidator::create({c}, {}).is_ok());
  c = provider();
  c.algorithms = {"HS256"};
  EXPECT_FALSE(TokenValidator::create({c}, {}).is_ok());
  c = provider();
  c.groups_claim = "realm_access..roles";
  EXPECT_FALSE(TokenValidator::create({c}, {}).is_ok());
  EXPECT_FALSE(TokenValidator::create({provider(), provider()}, {}).is_ok());
}

// RFC examples through the whole validator. Their exp (1300819380) is in 2011, so the clock
// is injected: just before exp the signature and time checks pass and the first failing
// check is the audience (the examples have none); after exp (+ leeway) it is "expired".
class RfcExamplesThroughValidator : public ValidatorTest {
 protected:
  std::unique_ptr<TokenValidator> make_joe() {
    idp_.set(kJwksUrl, std::string(R"({"keys":[)") + testing::kRfc7515A2Jwk + "," +
                           testing::kRfc7515A3Jwk + "]}");
    auto c = provider();
    c.issuer = "joe";
    return make({c});
  }
};

TEST_F(RfcExamplesThroughValidator, Rs256AndEs256PassSignatureAndTimeBeforeExp) {
  now_ = 1300819380 - 100;
  auto v = make_joe();
  EXPECT_EQ(reason(*v, testing::kRfc7515A2Token), RejectReason::kWrongAudience);
  EXPECT_EQ(reason(*v, testing::kRfc7515A3Token), RejectReason::kWrongAudience);
}

TEST_F(RfcExamplesThroughValidator, Rs256AndEs256AreExpiredToday) {
  now_ = 1300819380 + 61;
  auto v = make_joe();
  EXPECT_EQ(reason(*v, testing::kRfc7515A2Token), RejectReason::kExpired);
  EXPECT_EQ(reason(*v, testing::kRfc7515A3Token), RejectReason::kExpired);
}

TEST_F(RfcExamplesThroughValidator, TamperedRfcTokenIsBadSignature) {
  now_ = 1300819380 - 100;
  auto v = make_joe();
  std::string t = testing::kRfc7515A3Token;
  t[t.size() - 5] = t[t.size() - 5] == 'A' ? 'B' : 'A';
  EXPECT_EQ(reason(*v, t), RejectReason::kBadSignature);
}

// Tokens minted by the `jose` npm package (tests/js/mint.mjs).
struct Minted {
  std::string alg, kid, token;
  nlohmann::json jwk;
};

class JoseInterop : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    if (std::system("command -v node >/dev/null 2>&1") != 0) {
      skip_reason_ = "node is not installed; jose interoperability not tested";
      return;
    }
    nlohmann::json c = {{"iss", kIssuer},    {"sub", "jose-agent"}, {"aud", {"x", "pgwarden"}},
                        {"exp", kNow + 600}, {"nbf", kNow - 60},    {"groups", {"g1", "g2"}}};
    std::string cmd = "cd '" PGW_SOURCE_ROOT "/tests/js' && node mint.mjs '" + c.dump() +
                      "' RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while (p && (n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    int rc = p ? pclose(p) : -1;
    if (rc != 0) {
      error_ = "mint.mjs failed (run `npm install` in tests/js): " + out;
      return;
    }
    auto doc = nlohmann::json::parse(out);
    nlohmann::json keys = nlohmann::json::array();
    for (const auto& r : doc["results"]) {
      minted_[r["alg"]] = Minted{r["alg"], r["kid"], r["token"], r["jwk"]};
      keys.push_back(r["jwk"]);
    }
    jwks_ = nlohmann::json{{"keys", keys}}.dump();
  }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    ASSERT_TRUE(error_.empty()) << error_;
    idp_.set(kJwksUrl, jwks_);
    IdentityProviderConfig c;
    c.name = "jose";
    c.issuer = kIssuer;
    c.audiences = {"pgwarden"};
    c.jwks_url = kJwksUrl;
    ValidatorOptions o;
    o.clock = [] { return system_clock::time_point(seconds(kNow)); };
    o.http_get = idp_.getter();
    auto v = TokenValidator::create({c}, {}, o);
    ASSERT_TRUE(v.is_ok()) << v.status().to_string();
    validator_ = std::move(v.value());
    ASSERT_TRUE(minted_.count(GetParam()));
    m_ = minted_[GetParam()];
  }

  RejectReason reason(const std::string& token) {
    auto r = validator_->validate(token);
    EXPECT_FALSE(r.is_ok());
    return r.is_ok() ? static_cast<RejectReason>(-1) : r.rejection().reason;
  }

  static inline std::string skip_reason_, error_, jwks_;
  static inline std::map<std::string, Minted> minted_;
  FakeIdp idp_;
  std::unique_ptr<TokenValidator> validator_;
  Minted m_;
};

TEST_P(JoseInterop, MintedTokenValidates) {
  auto r = validator_->validate(m_.token);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.identity().subject, "jose-agent");
  EXPECT_EQ(r.identity().groups, (std::vector<std::string>{"g1", "g2"}));
}

TEST_P(JoseInterop, ChangedPayloadIsRejected) {
  auto d = decode_unverified(m_.token);
  auto claims = std::get<UnverifiedToken>(d).claims;
  claims["sub"] = "root";
  size_t d1 = m_.token.find('.'), d2 = m_.token.rfind('.');
  EXPECT_EQ(
      reason(m_.token.substr(0, d1 + 1) + base64url_encode(claims.dump()) + m_.token.substr(d2)),
      RejectReason::kBadSignature);
}

TEST_P(JoseInterop, FlippedSignatureByteIsRejected) {
  size_t d2 = m_.token.rfind('.');
  auto sig = *base64url_decode(m_.token.substr(d2 + 1));
  sig[sig.size() / 2 + 5] ^= 0x40;  // inside s, away from its top byte
  EXPECT_EQ(reason(m_.token.substr(0, d2 + 1) + base64url_encode(sig)),
            RejectReason::kBadSignature);
}

TEST_P(JoseInterop, ChangedHeaderAlgIsRejected) {
  auto d = decode_unverified(m_.token);
  auto header = std::get<UnverifiedToken>(d).header;
  // Same family, other variant: RS256 -> PS256 -> RS256, ES256 -> ES384, EdDSA -> ES256.
  static const std::map<std::string, std::string> swap = {
      {"RS256", "PS256"}, {"RS384", "PS384"}, {"RS512", "PS512"}, {"PS256", "RS256"},
      {"PS384", "RS384"}, {"PS512", "RS512"}, {"ES256", "ES384"}, {"ES384", "ES512"},
      {"ES512", "ES256"}, {"EdDSA", "ES256"}};
  size_t d1 = m_.token.find('.');
  auto with_alg = [&](const std::string& alg) {
    header["alg"] = alg;
    return base64url_encode(header.dump()) + m_.token.substr(d1);
  };
  RejectReason r = reason(with_alg(swap.at(m_.alg)));
  // The JWK carries "alg", so a different alg is refused before any signature math.
  EXPECT_EQ(r, RejectReason::kKeyAlgMismatch);
  EXPECT_EQ(reason(with_alg("HS256")), RejectReason::kHmacWithAsymmetricKey);
  EXPECT_EQ(reason(with_alg("none")), RejectReason::kAlgNone);
}

TEST_P(JoseInterop, SameTokenWithKeyAlgUnpinnedStillNeedsAValidSignature) {
  // Without "alg" in the JWK, swapping RS <-> PS (or ES curves) reaches the signature check.
  nlohmann::json jwk = m_.jwk;
  jwk.erase("alg");
  idp_.set(kJwksUrl, nlohmann::json{{"keys", {jwk}}}.dump());
  IdentityProviderConfig c;
  c.name = "jose";
  c.issuer = kIssuer;
  c.audiences = {"pgwarden"};
  c.jwks_url = kJwksUrl;
  ValidatorOptions o;
  o.clock = [] { return system_clock::time_point(seconds(kNow)); };
  o.http_get = idp_.getter();
  auto v = TokenValidator::create({c}, {}, o);
  ASSERT_TRUE(v.is_ok());
  EXPECT_TRUE((*v)->validate(m_.token).is_ok());
  if (m_.alg[0] == 'R' || m_.alg[0] == 'P') {
    auto header = std::get<UnverifiedToken>(decode_unverified(m_.token)).header;
    header["alg"] = (m_.alg[0] == 'R' ? "PS" : "RS") + m_.alg.substr(2);
    std::string swapped = base64url_encode(header.dump()) + m_.token.substr(m_.token.find('.'));
    auto r = (*v)->validate(swapped);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.rejection().reason, RejectReason::kBadSignature);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryAlgorithm, JoseInterop,
                         ::testing::Values("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                           "ES256", "ES384", "ES512", "EdDSA"));

}  // namespace
}  // namespace pgwarden::identity
