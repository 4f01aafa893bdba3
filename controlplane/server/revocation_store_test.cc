#include "controlplane/server/revocation_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "controlplane/server/session_ticket.h"

namespace pgwarden::server {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/pgw_revoke_XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(RevocationStore, RevocationPersistsAcrossReopenAndUnrevokeRemovesIt) {
  TempDir dir;
  {
    auto store = RevocationStore::open(dir.path());
    ASSERT_TRUE(store.is_ok()) << store.status().message();
    ASSERT_TRUE((*store)
                    ->revoke(Revocation{.name = "svc:a",
                                        .kind = RevocationKind::kIdentity,
                                        .reason = "leaked",
                                        .by = "alice",
                                        .created_ms = 1})
                    .is_ok());
  }
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() + "/revocations.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto store = RevocationStore::open(dir.path());
  ASSERT_TRUE(store.is_ok());
  auto hit = (*store)->find("svc:a", "", 10);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->reason, "leaked");
  EXPECT_EQ(hit->by, "alice");
  EXPECT_FALSE((*store)->find("svc:b", "", 10).has_value());
  // An identity entry does not match a key of the same name.
  EXPECT_FALSE((*store)->find("", "svc:a", 10).has_value());
  ASSERT_TRUE((*store)->unrevoke("svc:a", RevocationKind::kAny).is_ok());
  EXPECT_FALSE((*store)->find("svc:a", "", 10).has_value());
  EXPECT_EQ((*store)->unrevoke("svc:a", RevocationKind::kAny).status().code(),
            StatusCode::kNotFound);
}

TEST(RevocationStore, KeyAndAnyEntriesMatchKeyIdsAndExpireAtUntil) {
  TempDir dir;
  auto store = RevocationStore::open(dir.path());
  ASSERT_TRUE(store.is_ok());
  ASSERT_TRUE((*store)
                  ->revoke(Revocation{.name = "k1", .kind = RevocationKind::kKey, .until_ms = 100})
                  .is_ok());
  ASSERT_TRUE((*store)->revoke(Revocation{.name = "both", .kind = RevocationKind::kAny}).is_ok());
  EXPECT_TRUE((*store)->find("someone", "k1", 99).has_value());
  EXPECT_FALSE((*store)->find("someone", "k1", 100).has_value());
  EXPECT_FALSE((*store)->find("k1", "", 50).has_value());
  EXPECT_TRUE((*store)->find("both", "", 1).has_value());
  EXPECT_TRUE((*store)->find("x", "both", 1).has_value());
  EXPECT_EQ((*store)->list(1).size(), 2u);
  EXPECT_EQ((*store)->list(200).size(), 1u);
  EXPECT_EQ((*store)->list(200, /*all=*/true).size(), 2u);
}

TEST(RevocationStore, CorruptFileRefusesToOpen) {
  TempDir dir;
  std::ofstream(dir.path() + "/revocations.json") << "{not json";
  EXPECT_FALSE(RevocationStore::open(dir.path()).is_ok());
}

TEST(SessionTicket, RoundTripsAndRejectsTamperingAndOtherKeys) {
  TempDir dir;
  auto key = TicketKey::open(dir.path());
  ASSERT_TRUE(key.is_ok()) << key.status().message();
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() + "/ticket.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  TicketClaims c{.session_id = "s-1",
                 .subject = "svc:a",
                 .issuer = "pgwarden:service-key",
                 .groups = {"g1", "g2"},
                 .provider = "service-key:k1",
                 .key_id = "k1",
                 .policy = "p",
                 .target = "crm",
                 .client_addr = "127.0.0.1:5",
                 .tls = true,
                 .token_exp_ms = 0,
                 .issued_ms = 42};
  std::string t = (*key)->issue(c);
  auto back = (*key)->verify(t);
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  EXPECT_EQ(back->session_id, "s-1");
  EXPECT_EQ(back->groups, c.groups);
  EXPECT_EQ(back->key_id, "k1");
  EXPECT_EQ(back->issued_ms, 42);
  // Reopening reads the same key.
  auto again = TicketKey::open(dir.path());
  ASSERT_TRUE(again.is_ok());
  EXPECT_TRUE((*again)->verify(t).is_ok());
  // Any changed byte of the payload breaks the MAC.
  std::string tampered = t;
  tampered[5] = tampered[5] == 'A' ? 'B' : 'A';
  EXPECT_FALSE((*key)->verify(tampered).is_ok());
  EXPECT_FALSE(TicketKey::from_bytes(std::string(32, 'x'))->verify(t).is_ok());
  EXPECT_FALSE((*key)->verify("").is_ok());
  EXPECT_FALSE((*key)->verify("v1.").is_ok());
  EXPECT_FALSE((*key)->verify("v1.abc.def").is_ok());
}

}  // namespace
}  // namespace pgwarden::server
