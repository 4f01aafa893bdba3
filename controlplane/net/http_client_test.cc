#include "controlplane/net/http_client.h"

#include <gtest/gtest.h>

namespace pgwarden::net {
namespace {

TEST(ParseUrl, HttpsWithDefaultsPortsPathsAndIpv6) {
  auto u = parse_url("https://hooks.example.com/a/b?x=1#frag");
  ASSERT_TRUE(u.is_ok()) << u.status().to_string();
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "hooks.example.com");
  EXPECT_EQ(u->port, "443");
  EXPECT_EQ(u->path, "/a/b?x=1");
  auto v = parse_url("https://[2001:db8::1]:8443");
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->host, "2001:db8::1");
  EXPECT_EQ(v->port, "8443");
  EXPECT_EQ(v->path, "/");
}

TEST(ParseUrl, PlainHttpOnlyWhenAllowedAndOnlyToLoopback) {
  EXPECT_EQ(parse_url("http://127.0.0.1:8088/x").status().code(), StatusCode::kInvalidArgument);
  for (const char* ok :
       {"http://127.0.0.1:8088/x", "http://localhost/x", "http://[::1]:9/", "http://127.8.9.10/"}) {
    auto u = parse_url(ok, /*allow_plain_http=*/true);
    ASSERT_TRUE(u.is_ok()) << ok << ": " << u.status().to_string();
    EXPECT_FALSE(u->tls);
  }
  EXPECT_EQ(parse_url("http://localhost/x", true)->port, "80");
  auto remote = parse_url("http://hooks.example.com/x", true);
  ASSERT_FALSE(remote.is_ok());
  EXPECT_NE(remote.status().message().find("loopback"), std::string::npos);
  EXPECT_FALSE(parse_url("http://10.0.0.1/x", true).is_ok());
}

TEST(ParseUrl, RejectsUnknownSchemesCredentialsBadPortsAndWhitespace) {
  for (const char* bad :
       {"ftp://x/", "file:///etc/passwd", "HTTPS://x/", "hooks.example.com", "https://",
        "https://:443/", "https://user:pw@host/", "https://host:0/", "https://host:65536/",
        "https://host:x/", "https://host:/", "https://host/a b", "https://host/\r\nX: y",
        "https://[::1/", "https://[::1]x/"}) {
    auto u = parse_url(bad, /*allow_plain_http=*/true);
    ASSERT_FALSE(u.is_ok()) << bad;
    EXPECT_EQ(u.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(HttpRequest, HeaderInjectionIsRefusedBeforeConnecting) {
  HttpClientOptions o;
  HttpRequest r;
  r.method = "POST";
  r.headers = {{"Authorization", "Bearer s3cret\r\nX-Evil: 1"}};
  // Port 1 on loopback: a connect attempt would fail with Unavailable instead.
  auto res = http_request("https://127.0.0.1:1/x", r, o);
  ASSERT_FALSE(res.is_ok());
  EXPECT_EQ(res.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(res.status().message().find("s3cret"), std::string::npos);
  r.headers = {{"Bad:Name", "v"}};
  EXPECT_EQ(http_request("https://127.0.0.1:1/x", r, o).status().code(),
            StatusCode::kInvalidArgument);
  r.headers = {};
  r.method = "post\r\n";
  EXPECT_EQ(http_request("https://127.0.0.1:1/x", r, o).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(HttpRequest, ConnectionRefusedIsUnavailable) {
  HttpClientOptions o;
  o.allow_plain_http = true;
  auto res = http_request("http://127.0.0.1:1/x", HttpRequest{}, o);
  ASSERT_FALSE(res.is_ok());
  EXPECT_EQ(res.status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace pgwarden::net
