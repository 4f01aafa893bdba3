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
  EXPECT_GT(k.process_id, 0);
  auto found = m.find(k.process_id, k.secret_key);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->process_id, 4242);
  EXPECT_EQ(found->secret_key, 99);
  EXPECT_FALSE(m.find(k.process_id, k.secret_key + 1).has_value());
  m.remove(k.process_id);
  EXPECT_FALSE(m.find(k.process_id, k.secret_key).has_value());
}

TEST(CancelMapTest, KeysAreUniquePerSession) {
  CancelMap m;
  GatewayKey a = m.add({});
  GatewayKey b = m.add({});
  EXPECT_NE(a.process_id, b.process_id);
  EXPECT_EQ(m.size(), 2u);
}

}  // namespace
}  // namespace pgwarden::session
