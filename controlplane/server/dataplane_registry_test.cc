#include "controlplane/server/dataplane_registry.h"

#include <gtest/gtest.h>

namespace pgwarden::server {
namespace {

using json = nlohmann::json;

json snapshot(const std::string& name, uint64_t rx, int64_t interval_ms = 1000) {
  return json{{"dp", {{"name", name}, {"mode", "dpdk"}}},
              {"interval_ms", interval_ms},
              {"lcores", json::array({{{"lcore_id", 0}, {"counters", {{"rx_packets", rx}}}}})}};
}

const json& entry(const json& all, size_t i) { return all["dataplanes"][i]; }

TEST(DataplaneRegistryTest, KeepsTheLatestSnapshotPerDataplaneName) {
  DataplaneRegistry r;
  ASSERT_TRUE(r.update(1, snapshot("gw-b", 5), 10'000).is_ok());
  ASSERT_TRUE(r.update(2, snapshot("gw-a", 1), 10'000).is_ok());
  ASSERT_TRUE(r.update(2, snapshot("gw-a", 7), 10'500).is_ok());
  json all = r.to_json(10'600);
  ASSERT_EQ(all["dataplanes"].size(), 2u);
  EXPECT_EQ(entry(all, 0)["name"], "gw-a");  // sorted by name
  EXPECT_EQ(entry(all, 0)["snapshot"]["lcores"][0]["counters"]["rx_packets"], 7);
  EXPECT_EQ(entry(all, 0)["received_unix_ms"], 10'500);
  EXPECT_EQ(entry(all, 0)["age_ms"], 100);
  EXPECT_EQ(entry(all, 0)["stale"], false);
  EXPECT_EQ(entry(all, 0)["connected"], true);
}

TEST(DataplaneRegistryTest, OldSnapshotOrClosedConnectionIsStale) {
  DataplaneRegistry r;
  ASSERT_TRUE(r.update(1, snapshot("gw", 1, 200), 1'000).is_ok());
  EXPECT_EQ(entry(r.to_json(1'000 + 3 * 200), 0)["stale"], false);
  EXPECT_EQ(entry(r.to_json(1'000 + 3 * 200 + 1), 0)["stale"], true);
  ASSERT_TRUE(r.update(1, snapshot("gw", 2, 200), 5'000).is_ok());
  r.disconnected(1);
  json all = r.to_json(5'001);
  EXPECT_EQ(entry(all, 0)["stale"], true);
  EXPECT_EQ(entry(all, 0)["connected"], false);
  // The dp reconnects: fresh again, on its new connection.
  ASSERT_TRUE(r.update(3, snapshot("gw", 3, 200), 6'000).is_ok());
  r.disconnected(1);
  EXPECT_EQ(entry(r.to_json(6'000), 0)["stale"], false);
}

TEST(DataplaneRegistryTest, RejectsSnapshotsWithoutADataplaneName) {
  DataplaneRegistry r;
  EXPECT_FALSE(r.update(1, json{{"interval_ms", 1000}}, 1).is_ok());
  EXPECT_FALSE(r.update(1, json{{"dp", {{"name", ""}}}}, 1).is_ok());
  EXPECT_FALSE(r.update(1, json{{"dp", {{"name", std::string(129, 'x')}}}}, 1).is_ok());
  EXPECT_FALSE(r.update(1, json{{"dp", "gw"}}, 1).is_ok());
  EXPECT_TRUE(r.to_json(1)["dataplanes"].empty());
}

TEST(DataplaneRegistryTest, FullRegistryEvictsOnlyDisconnectedDataplanes) {
  DataplaneRegistry r;
  for (size_t i = 0; i < kMaxDataplanes; ++i) {
    ASSERT_TRUE(r.update(i, snapshot("gw" + std::to_string(i), 0), 100 + i).is_ok());
  }
  Status full = r.update(999, snapshot("one-too-many", 0), 1'000);
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted);
  r.disconnected(5);
  r.disconnected(7);
  ASSERT_TRUE(r.update(999, snapshot("one-too-many", 0), 1'000).is_ok());
  json all = r.to_json(1'000);
  EXPECT_EQ(all["dataplanes"].size(), kMaxDataplanes);
  bool has5 = false, has7 = false;
  for (const json& e : all["dataplanes"]) {
    has5 = has5 || e["name"] == "gw5";
    has7 = has7 || e["name"] == "gw7";
  }
  EXPECT_FALSE(has5);  // received longest ago among the disconnected ones
  EXPECT_TRUE(has7);
}

}  // namespace
}  // namespace pgwarden::server
