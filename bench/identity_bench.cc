// Token validation cost per algorithm (signature verification dominates) and the service key
// KDF at its default parameters.
#include <benchmark/benchmark.h>

#include "controlplane/identity/service_key.h"
#include "controlplane/identity/test_signer.h"
#include "controlplane/identity/validator.h"

namespace {

using namespace pgwarden::identity;

void BM_ValidateJwt(benchmark::State& state, const char* alg) {
  testing::TestSigner signer(alg, "k");
  std::string jwks = signer.jwks();
  IdentityProviderConfig c;
  c.name = "bench";
  c.issuer = "https://idp.bench";
  c.audiences = {"pgwarden"};
  c.jwks_url = "https://idp.bench/jwks";
  ValidatorOptions o;
  o.http_get = [jwks](std::string_view, const pgwarden::net::HttpClientOptions&)
      -> pgwarden::Result<pgwarden::net::HttpResponse> {
    return pgwarden::net::HttpResponse{200, "application/json", jwks};
  };
  auto v = TokenValidator::create({c}, {}, o);
  auto now = std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  std::string token = signer.sign({{"iss", c.issuer},
                                   {"sub", "agent"},
                                   {"aud", "pgwarden"},
                                   {"exp", now + 3600},
                                   {"groups", {"a", "b"}}});
  for (auto _ : state) {
    auto r = (*v)->validate(token);
    if (!r.is_ok()) state.SkipWithError("token rejected");
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK_CAPTURE(BM_ValidateJwt, RS256, "RS256");
BENCHMARK_CAPTURE(BM_ValidateJwt, PS256, "PS256");
BENCHMARK_CAPTURE(BM_ValidateJwt, ES256, "ES256");
BENCHMARK_CAPTURE(BM_ValidateJwt, ES512, "ES512");
BENCHMARK_CAPTURE(BM_ValidateJwt, EdDSA, "EdDSA");

void BM_ServiceKeyDefaultScrypt(benchmark::State& state) {
  auto g = generate_service_key("bench");
  std::vector<ServiceKeyConfig> keys = {{"bench", g->hash.salt, g->hash.hash, "svc", {}}};
  for (auto _ : state) {
    auto r = verify_service_key(g->key, keys);
    if (!r.is_ok()) state.SkipWithError("key rejected");
  }
}
BENCHMARK(BM_ServiceKeyDefaultScrypt)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
