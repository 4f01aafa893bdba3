#include "controlplane/fleet/node_auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace pgwarden::fleet {
namespace {

constexpr int64_t kNow = 1'800'000'000'000;
const std::string kPath = "/api/v1/node/recordings/s1";

NodeKey key() { return NodeKey::from_bytes("0123456789abcdef0123456789abcdef-fleet"); }

TEST(NodeAuthTest, ASignatureOfTheSameKeyForThisNodeVerifies) {
  std::string sig = key().sign("GET", kPath, "node-b", "node-a", kNow);
  EXPECT_EQ(sig.size(), 64u);
  EXPECT_TRUE(
      key().verify("GET", kPath, "node-b", "node-a", std::to_string(kNow), sig, kNow).is_ok());
  // A few seconds of clock skew are fine.
  EXPECT_TRUE(key()
                  .verify("GET", kPath, "node-b", "node-a", std::to_string(kNow), sig, kNow + 5000)
                  .is_ok());
}

TEST(NodeAuthTest, EverySignedFieldMattersAndOldSignaturesExpire) {
  std::string sig = key().sign("GET", kPath, "node-b", "node-a", kNow);
  std::string t = std::to_string(kNow);
  auto refused = [&](const Status& st) { return st.code() == StatusCode::kUnauthenticated; };
  // Addressed to another node, another path, method or sender: refused.
  EXPECT_TRUE(refused(key().verify("GET", kPath, "node-b", "node-c", t, sig, kNow)));
  EXPECT_TRUE(refused(key().verify("GET", kPath + "x", "node-b", "node-a", t, sig, kNow)));
  EXPECT_TRUE(refused(key().verify("POST", kPath, "node-b", "node-a", t, sig, kNow)));
  EXPECT_TRUE(refused(key().verify("GET", kPath, "node-x", "node-a", t, sig, kNow)));
  // Another time in the header than the one signed.
  EXPECT_TRUE(
      refused(key().verify("GET", kPath, "node-b", "node-a", std::to_string(kNow + 1), sig, kNow)));
  // Outside the window (a captured request replayed later).
  Status late =
      key().verify("GET", kPath, "node-b", "node-a", t, sig, kNow + kNodeSignatureWindowMs + 1);
  EXPECT_TRUE(refused(late));
  EXPECT_NE(late.message().find("time window"), std::string::npos) << late.message();
  // Another key (another fleet) and no signature at all.
  std::string other = NodeKey::from_bytes("another fleet's key, 32 bytes or more!!")
                          .sign("GET", kPath, "node-b", "node-a", kNow);
  EXPECT_TRUE(refused(key().verify("GET", kPath, "node-b", "node-a", t, other, kNow)));
  EXPECT_TRUE(refused(key().verify("GET", kPath, "node-b", "node-a", t, "", kNow)));
  EXPECT_TRUE(refused(key().verify("GET", kPath, "node-b", "node-a", "soon", sig, kNow)));
}

TEST(NodeAuthTest, TheKeyFileMustBePrivateAndLongEnough) {
  std::string dir =
      std::filesystem::temp_directory_path() / ("pgw-node-key-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string path = dir + "/node.key";
  auto write = [&](const std::string& text, mode_t mode) {
    std::ofstream(path, std::ios::trunc) << text;
    ::chmod(path.c_str(), mode);
  };
  write("0123456789abcdef0123456789abcdef0123456789abcdef\n", 0600);
  EXPECT_TRUE(NodeKey::load(path).is_ok());
  write("0123456789abcdef0123456789abcdef0123456789abcdef\n", 0644);
  EXPECT_FALSE(NodeKey::load(path).is_ok());
  write("short", 0600);
  auto s = NodeKey::load(path);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("fewer than 32 bytes"), std::string::npos);
  EXPECT_EQ(s.status().message().find("short"), std::string::npos);  // never the contents
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pgwarden::fleet
