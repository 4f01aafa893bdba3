#include "dataplane/session/cancel_map.h"

#include <gtest/gtest.h>

namespace pgwarden::session {
namespace {

TEST(CancelMapTest, FindNeedsBothHalvesOfTheGatewayKey) {
  CancelMap m;
  CancelTarget t;
  t.host = "127.0.0.1";
  t.process_id = 4242;
  t.secret_key = 99;
  GatewayKey k = m.add(t);
  EXPECT_EQ(k.process_id, 4242);  // the upstream backend's real pid
  EXPECT_NE(k.secret_key, 99);    // the gateway's own secret, never the upstream's
  auto found = m.find(k.process_id, k.secret_key);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->process_id, 4242);
  EXPECT_EQ(found->secret_key, 99);
  EXPECT_FALSE(m.find(k.process_id, k.secret_key + 1).has_value());
  m.remove(k);
  EXPECT_FALSE(m.find(k.process_id, k.secret_key).has_value());
}

TEST(CancelMapTest, SamePidOnTwoUpstreamsGetsTwoKeysThatCancelTheirOwnServer) {
  CancelMap m;
  CancelTarget a;
  a.host = "10.0.0.1";
  a.process_id = 77;
  a.secret_key = 1;
  CancelTarget b = a;
  b.host = "10.0.0.2";
  b.secret_key = 2;
  GatewayKey ka = m.add(a);
  GatewayKey kb = m.add(b);
  EXPECT_EQ(ka.process_id, 77);
  EXPECT_EQ(kb.process_id, 77);
  EXPECT_NE(ka.secret_key, kb.secret_key);
  EXPECT_EQ(m.size(), 2u);
  EXPECT_EQ(m.find(77, ka.secret_key)->host, "10.0.0.1");
  EXPECT_EQ(m.find(77, kb.secret_key)->host, "10.0.0.2");
  // Neither upstream secret opens anything.
  if (ka.secret_key != 1 && kb.secret_key != 1) {
    EXPECT_FALSE(m.find(77, 1).has_value());
  }
  m.remove(ka);
  EXPECT_FALSE(m.find(77, ka.secret_key).has_value());
  EXPECT_TRUE(m.find(77, kb.secret_key).has_value());
}

TEST(CancelMapTest, UpdatedKeyFollowsThePooledBackendAndIsIgnoredBetweenTransactions) {
  CancelMap map;
  CancelTarget first{.host = "db-primary.internal.example", .port = 5432, .process_id = 100,
                     .secret_key = 1};
  std::shared_ptr<CancelEntry> entry;
  GatewayKey key = map.add(first, &entry);
  ASSERT_NE(entry, nullptr);
  CancelTarget second = first;
  second.process_id = 200;
  second.secret_key = 2;
  entry->set(second);
  auto found = map.find(key.process_id, key.secret_key);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->process_id, 200);
  EXPECT_EQ(found->secret_key, 2);
  EXPECT_EQ(found->host, "db-primary.internal.example");
  entry->clear();  // between transactions: no backend
  EXPECT_FALSE(map.find(key.process_id, key.secret_key).has_value());
  entry->set(first);
  EXPECT_EQ(map.find(key.process_id, key.secret_key)->process_id, 100);
  // The gateway key is still the one issued at login, whatever backend it points at.
  EXPECT_FALSE(map.find(200, key.secret_key).has_value());
  EXPECT_EQ(map.size(), 1u);
  // Removed: no longer found, though the session's handle stays usable until it lets go.
  map.remove(key);
  entry->set(second);
  EXPECT_FALSE(map.find(key.process_id, key.secret_key).has_value());
  EXPECT_EQ(map.size(), 0u);
}

}  // namespace
}  // namespace pgwarden::session
