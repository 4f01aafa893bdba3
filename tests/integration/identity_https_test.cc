// JWKS over real HTTPS: a throwaway CA and server certificate made with the openssl CLI, an
// `openssl s_server -WWW` serving files from a temp dir on 127.0.0.1, and the identity
// module's HTTPS client and key cache fetching, rotating and surviving the server's death.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "controlplane/identity/test_signer.h"
#include "controlplane/identity/validator.h"
#include "controlplane/net/http_client.h"
#include "tests/integration/test_pki.h"

namespace pgwarden::identity {
namespace {

namespace fs = std::filesystem;
using net::HttpClientOptions;
using net::https_get;
using std::chrono::seconds;
using std::chrono::system_clock;
using testing::TestSigner;

constexpr int64_t kNow = 1'800'000'000;

void write_file(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

bool port_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

// A CA, a server certificate for IP 127.0.0.1 signed by it, a second unrelated CA, and an
// s_server serving `dir_` over TLS.
class HttpsJwksServer : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-identity-https.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    www_ = dir_ / "www";
    fs::create_directories(www_);
    std::string d = dir_.string();
    ASSERT_TRUE(pgwarden::testing::make_test_pki(d))
        << "openssl CLI failed; see " << d << "/openssl.log";
    ca_file_ = (dir_ / "ca.crt").string();
    start_server();
  }

  void TearDown() override {
    stop_server();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void start_server() {
    port_ = free_port();
    std::string accept = "127.0.0.1:" + std::to_string(port_);
    std::string cert = (dir_ / "server.crt").string(), key = (dir_ / "server.key").string();
    pid_ = fork();
    if (pid_ == 0) {
      if (chdir(www_.c_str()) != 0) _exit(126);
      execlp("openssl", "openssl", "s_server", "-accept", accept.c_str(), "-cert", cert.c_str(),
             "-key", key.c_str(), "-WWW", "-quiet", static_cast<char*>(nullptr));
      _exit(127);
    }
    ASSERT_GT(pid_, 0);
    for (int i = 0; i < 100 && !port_open(port_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(port_open(port_)) << "s_server did not start";
  }

  void stop_server() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  std::string url(const std::string& path) const {
    return "https://127.0.0.1:" + std::to_string(port_) + "/" + path;
  }

  HttpClientOptions options() const {
    HttpClientOptions o;
    o.ca_file = ca_file_;
    o.timeout = std::chrono::milliseconds(5000);
    return o;
  }

  fs::path dir_, www_;
  std::string ca_file_;
  int port_ = 0;
  pid_t pid_ = -1;
};

TEST_F(HttpsJwksServer, FetchesAFileOverVerifiedTls) {
  write_file(www_ / "jwks.json", R"({"keys":[]})");
  auto r = https_get(url("jwks.json"), options());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, R"({"keys":[]})");
}

TEST_F(HttpsJwksServer, ServerCertificateFromAnotherCaIsRefused) {
  write_file(www_ / "jwks.json", R"({"keys":[]})");
  auto o = options();
  o.ca_file = (dir_ / "rogue.crt").string();
  auto r = https_get(url("jwks.json"), o);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("certificate verification failed"), std::string::npos)
      << r.status().message();
  // The system store does not know the throwaway CA either.
  o.ca_file.clear();
  EXPECT_FALSE(https_get(url("jwks.json"), o).is_ok());
}

TEST_F(HttpsJwksServer, CertificateForAnotherNameIsRefused) {
  write_file(www_ / "jwks.json", R"({"keys":[]})");
  // Same server, reached as "localhost": the certificate only names IP 127.0.0.1.
  auto r = https_get("https://localhost:" + std::to_string(port_) + "/jwks.json", options());
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
}

TEST_F(HttpsJwksServer, ResponseOverTheCapIsRefused) {
  write_file(www_ / "big.json", std::string(300 * 1024, 'x'));
  auto o = options();
  o.max_response_bytes = 64 * 1024;
  auto r = https_get(url("big.json"), o);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
}

TEST(HttpsClient, SilentServerTimesOut) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(fd, 4), 0);  // never accepts, never answers the ClientHello
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  HttpClientOptions o;
  o.timeout = std::chrono::milliseconds(400);
  auto start = std::chrono::steady_clock::now();
  auto r = https_get("https://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/jwks", o);
  auto took = std::chrono::steady_clock::now() - start;
  close(fd);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_LT(took, std::chrono::seconds(3));
}

TEST(HttpsClient, NonHttpsUrlsAreRefused) {
  HttpClientOptions o;
  EXPECT_EQ(https_get("http://127.0.0.1/jwks", o).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(https_get("https://user:pw@127.0.0.1/jwks", o).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(https_get("https://127.0.0.1:99999999/jwks", o).status().code(),
            StatusCode::kInvalidArgument);
}

// The whole path: discovery document -> jwks_uri -> keys, rotation, provider outage.
TEST_F(HttpsJwksServer, ValidatorFetchesRotatesAndSurvivesProviderOutage) {
  const std::string issuer = "https://127.0.0.1:" + std::to_string(port_) + "/realms/agents";
  TestSigner k1("ES256", "k1"), k2("EdDSA", "k2"), k3("RS256", "k3");
  write_file(www_ / "realms/agents/.well-known/openid-configuration",
             nlohmann::json{{"issuer", issuer}, {"jwks_uri", url("realms/agents/certs")}}.dump());
  write_file(www_ / "realms/agents/certs", k1.jwks());

  IdentityProviderConfig c;
  c.name = "agents";
  c.issuer = issuer;
  c.audiences = {"pgwarden"};
  c.discovery_url = url("realms/agents/.well-known/openid-configuration");
  c.ca_file = ca_file_;
  c.refresh_min_interval_seconds = 30;
  c.refresh_interval_seconds = 600;
  std::atomic<int64_t> now{kNow};
  ValidatorOptions o;
  o.clock = [&] { return system_clock::time_point(seconds(now.load())); };
  auto created = TokenValidator::create({c}, {}, o);
  ASSERT_TRUE(created.is_ok()) << created.status().to_string();
  auto& v = *created.value();
  auto claims = [&] {
    return nlohmann::json{
        {"iss", issuer}, {"sub", "agent"}, {"aud", "pgwarden"}, {"exp", now.load() + 300}};
  };

  auto r = v.validate(k1.sign(claims()));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(v.provider_status()[0].fetches, 1u);

  // Rotation: k2 is published; a token naming it triggers one refetch, but not before the
  // minimum interval since the last fetch has passed.
  write_file(www_ / "realms/agents/certs", k1.jwks({&k2}));
  now += 10;
  r = v.validate(k2.sign(claims()));
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.rejection().reason, RejectReason::kUnknownKid);
  EXPECT_EQ(v.provider_status()[0].fetches, 1u);
  now += 25;
  r = v.validate(k2.sign(claims()));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(v.provider_status()[0].fetches, 2u);
  EXPECT_EQ(v.provider_status()[0].key_count, 2u);

  // A token for a kid the IdP never published: one more fetch (interval passed), rejected.
  now += 31;
  r = v.validate(k3.sign(claims()));
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.rejection().reason, RejectReason::kUnknownKid);
  EXPECT_EQ(v.provider_status()[0].fetches, 3u);

  // Provider down: keys go stale, the refresh fails, the last good keys keep working.
  stop_server();
  now += 700;
  for (const TestSigner* k : {&k1, &k2}) {
    r = v.validate(k->sign(claims()));
    EXPECT_TRUE(r.is_ok()) << k->kid() << ": " << r.status().to_string();
  }
  auto st = v.provider_status()[0];
  EXPECT_EQ(st.fetches, 4u);
  EXPECT_EQ(st.fetch_failures, 1u);
  EXPECT_FALSE(st.last_error.empty());
  EXPECT_EQ(st.key_count, 2u);
}

}  // namespace
}  // namespace pgwarden::identity
