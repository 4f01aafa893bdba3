#include "dataplane/session/dp_config.h"

#include <gtest/gtest.h>

namespace pgwarden::session {
namespace {

TEST(DataplaneConfigTest, ParsesListenersLimitsAndResolvesRelativePaths) {
  auto c = parse_dataplane_config(R"({
    "controlplane": {"socket": "run/cp.sock"},
    "dataplane": {
      "workers": 2,
      "listeners": [{"address": "127.0.0.1", "port": 7000, "loopback_only": true,
                     "tls": {"cert_file": "tls/dp.crt", "key_file": "/abs/dp.key"}}],
      "limits": {"max_connections": 10, "idle_timeout_ms": 5000}
    }})",
                                  "/etc/pgw");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->workers, 2);
  EXPECT_EQ(c->controlplane_socket, "/etc/pgw/run/cp.sock");
  ASSERT_EQ(c->listeners.size(), 1u);
  EXPECT_EQ(c->listeners[0].port, 7000);
  EXPECT_TRUE(c->listeners[0].loopback_only);
  EXPECT_EQ(c->listeners[0].tls_cert_file, "/etc/pgw/tls/dp.crt");
  EXPECT_EQ(c->listeners[0].tls_key_file, "/abs/dp.key");
  EXPECT_EQ(c->limits.max_connections, 10);
  EXPECT_EQ(c->limits.idle_timeout_ms, 5000);
}

TEST(DataplaneConfigTest, LoopbackOnlyOnPublicAddressIsRejectedWithJsonPath) {
  auto c = parse_dataplane_config(
      R"({"dataplane": {"listeners": [{"address": "0.0.0.0", "loopback_only": true}]}})", ".");
  ASSERT_FALSE(c.is_ok());
  EXPECT_NE(c.status().message().find("$.dataplane.listeners[0].loopback_only"),
            std::string::npos);
}

TEST(DataplaneConfigTest, OutOfRangeLimitIsRejected) {
  auto c = parse_dataplane_config(
      R"({"dataplane": {"listeners": [{}], "limits": {"max_connections": 0}}})", ".");
  ASSERT_FALSE(c.is_ok());
  EXPECT_NE(c.status().message().find("max_connections"), std::string::npos);
}

TEST(DataplaneConfigTest, MissingListenersIsRejected) {
  EXPECT_FALSE(parse_dataplane_config(R"({"dataplane": {}})", ".").is_ok());
  EXPECT_FALSE(parse_dataplane_config("not json", ".").is_ok());
}

}  // namespace
}  // namespace pgwarden::session
