#include "controlplane/vault/secret.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

namespace pgwarden::vault {
namespace {

class TempFile {
 public:
  explicit TempFile(const std::string& content, mode_t mode = 0600) {
    char tmpl[] = "/tmp/pgw-secret-XXXXXX";
    int fd = mkstemp(tmpl);
    path_ = tmpl;
    (void)!write(fd, content.data(), content.size());
    close(fd);
    chmod(path_.c_str(), mode);
  }
  ~TempFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(SecretTest, ReadsFileAndStripsOneTrailingNewline) {
  TempFile f("hunter2\n");
  auto s = read_secret({SecretSource::Kind::kFile, f.path()});
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  EXPECT_EQ(s->view(), "hunter2");
}

TEST(SecretTest, MissingFileErrorNamesThePathOnly) {
  auto s = read_secret({SecretSource::Kind::kFile, "/nonexistent/pgw-secret"});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("/nonexistent/pgw-secret"), std::string::npos);
}

TEST(SecretTest, GroupReadableFileRejectedWhenPrivacyRequired) {
  TempFile f("hunter2", 0644);
  EXPECT_FALSE(read_secret({SecretSource::Kind::kFile, f.path()}, true).is_ok());
  EXPECT_TRUE(read_secret({SecretSource::Kind::kFile, f.path()}, false).is_ok());
}

TEST(SecretTest, EmptyFileRejected) {
  TempFile f("\n");
  EXPECT_FALSE(read_secret({SecretSource::Kind::kFile, f.path()}).is_ok());
}

TEST(SecretTest, OversizedFileRejected) {
  TempFile f(std::string(70 * 1024, 'a'));
  EXPECT_FALSE(read_secret({SecretSource::Kind::kFile, f.path()}).is_ok());
}

TEST(SecretTest, ReadsEnvironmentVariable) {
  setenv("PGW_TEST_SECRET_VAR", "s3cret", 1);
  auto s = read_secret({SecretSource::Kind::kEnv, "PGW_TEST_SECRET_VAR"});
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(s->view(), "s3cret");
  unsetenv("PGW_TEST_SECRET_VAR");
  auto missing = read_secret({SecretSource::Kind::kEnv, "PGW_TEST_SECRET_VAR"});
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().message().find("s3cret"), std::string::npos);
}

TEST(SecretTest, MoveLeavesSourceEmptyAndTakingWipesCallerString) {
  std::string raw = "topsecret-value-longer-than-sso-buffer";
  Secret a(std::move(raw));
  EXPECT_TRUE(raw.empty());
  Secret b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): documented moved-from state
  EXPECT_EQ(b.view(), "topsecret-value-longer-than-sso-buffer");
}

TEST(SecretTest, WipeStringZeroesBytes) {
  std::string s = "abcdefghijklmnopqrstuvwxyz0123456789";
  const char* data = s.data();
  size_t n = s.size();
  wipe_string(s);
  EXPECT_TRUE(s.empty());
  // The buffer is still owned by `s` (clear() keeps capacity), so reading it is defined.
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(data[i], '\0');
}

}  // namespace
}  // namespace pgwarden::vault
