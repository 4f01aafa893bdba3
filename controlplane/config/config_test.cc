#include "controlplane/config/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/source_root.h"

namespace pgwarden::config {
namespace {

using json = nlohmann::json;

ValidationOptions no_env() {
  ValidationOptions o;
  o.check_environment = false;
  return o;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json example() {
  return json::parse(read_file(std::string(PGW_SOURCE_ROOT) + "/docs/examples/pgwarden.json"));
}

bool has_error(const LoadOutcome& o, const std::string& text) {
  for (const auto& e : o.errors) {
    if (e.to_string() == text) return true;
  }
  return false;
}

TEST(ConfigTest, DocumentedExampleIsValid) {
  LoadOutcome o = parse_config(example().dump(), 7, no_env());
  ASSERT_TRUE(o.ok()) << o.error_text();
  const Config& c = *o.config;
  EXPECT_EQ(c.version, 7u);
  EXPECT_EQ(c.dataplane.port, 6432);
  EXPECT_TRUE(c.dataplane.tls);
  EXPECT_EQ(c.control_plane.socket_path, "/run/pgwarden/cp.sock");
  ASSERT_EQ(c.identity_providers.size(), 2u);
  EXPECT_EQ(c.identity_providers[0].groups_claim, "realm_access.roles");
  ASSERT_EQ(c.service_keys.size(), 1u);
  EXPECT_EQ(c.service_keys[0].hash.rfind("scrypt:", 0), 0u);
  EXPECT_EQ(c.identity_providers[0].name, "keycloak");
  EXPECT_EQ(c.identity_providers[1].name, "https://token.actions.githubusercontent.com");
  EXPECT_EQ(c.identity_providers[0].refresh_interval_seconds, 300);
  ASSERT_EQ(c.audit_sinks.size(), 3u);
  EXPECT_EQ(c.audit_sinks[2].kind, AuditSink::Kind::kPostgres);
  EXPECT_EQ(c.audit_sinks[2].target, "crm");
  EXPECT_EQ(c.approvals.webhook_url, "https://chatops.example.com/hooks/pgwarden");
  // Links in NOTICEs and chat messages lead to the console's page of the request; no
  // console files, no link.
  EXPECT_EQ(c.console_public_url(), "https://pgwarden.example.com:8443");
  Config no_console = c;
  no_console.control_plane.http.console_dir.clear();
  EXPECT_EQ(no_console.console_public_url(), "");
  // People review over HTTPS with the SSO; the static principal is only the break-glass
  // account (on the local admin socket; over HTTPS it stays off).
  EXPECT_EQ(c.control_plane.http.listen, "0.0.0.0:8443");
  ASSERT_TRUE(c.control_plane.http.oidc.has_value());
  EXPECT_EQ(c.control_plane.http.oidc->client_id, "pgwarden");
  EXPECT_EQ(c.control_plane.http.role_groups.reviewer, std::vector<std::string>{"reviewers"});
  EXPECT_FALSE(c.control_plane.http.break_glass);
  ASSERT_EQ(c.control_plane.admin_principals.size(), 1u);
  EXPECT_EQ(c.control_plane.admin_principals[0].name, "break-glass");
  ASSERT_EQ(c.budgets.size(), 1u);
  EXPECT_EQ(c.budgets[0].name, "agents-hourly");
  EXPECT_EQ(c.budgets[0].window_ms, 3600000);
  EXPECT_EQ(c.budgets[0].limit[2], 50000000u);
  ASSERT_GE(c.policies.size(), 2u);
  EXPECT_EQ(c.policies[1].approve_when_rows_over, 1000);
  EXPECT_TRUE(c.policies[1].dry_run);
  EXPECT_TRUE(c.policies[1].approve_unbounded_writes);
  EXPECT_EQ(c.approvals.webhook_ca_file, "/etc/pgwarden/chatops-ca.pem");
  EXPECT_EQ(c.approvals.reminder_interval_s, 60);
  ASSERT_EQ(c.approvals.identity_links.size(), 1u);
  EXPECT_EQ(c.approvals.identity_links[0].person, "alice@example.com");
  EXPECT_EQ(c.policies[1].approvals.required_approvals, 2);
  EXPECT_EQ(c.policies[1].approvals.break_glass_groups,
            std::vector<std::string>{"incident-commanders"});
  EXPECT_EQ(c.approvals.webhook_timeout_ms, 3000);
  EXPECT_EQ(c.approvals.webhook_connect_timeout_ms, 1000);
  ASSERT_TRUE(c.approvals.webhook_authorization.has_value());
  EXPECT_EQ(c.approvals.webhook_authorization->kind, vault::SecretSource::Kind::kFile);
  EXPECT_EQ(c.approvals.webhook_authorization->location,
            "/etc/pgwarden/secrets/webhook-authorization");
  EXPECT_EQ(c.control_plane.admin_socket_mode, 0660u);
  EXPECT_EQ(c.control_plane.admin_socket_group, "pgwarden-admins");
  ASSERT_TRUE(c.masking.key.has_value());
  EXPECT_EQ(c.masking.key->location, "/etc/pgwarden/secrets/mask-key");
  EXPECT_EQ(c.recording.retention_max_age_days, 90);
  EXPECT_EQ(c.recording.retention_max_total_bytes, 53687091200u);
  ASSERT_EQ(c.targets.size(), 2u);
  EXPECT_EQ(c.targets[0].tls_mode, UpstreamTlsMode::kVerifyFull);
  EXPECT_EQ(c.targets[1].tls_mode, UpstreamTlsMode::kDisable);
  EXPECT_EQ(c.targets[1].credential.kind, vault::SecretSource::Kind::kEnv);
  ASSERT_EQ(c.policies.size(), 3u);
  EXPECT_EQ(c.policies[0].masks.size(), 4u);
  EXPECT_EQ(c.policies[0].masks[1].keep_last, 4);
  EXPECT_EQ(c.policies[0].masks[0].text, "***-**-****");
  EXPECT_EQ(c.policies[0].masks[2].allow_predicates,
            (std::vector<std::string>{"is_null", "equality_join"}));
  EXPECT_EQ(c.policies[1].approvals.timeout_seconds, 600);
  EXPECT_FALSE(c.policies[1].read_only);
  EXPECT_EQ(c.policies[2].recording, policy::RecordingLevel::kMetadata);
  for (const auto& p : c.policies) EXPECT_EQ(p.version, 7u);
  EXPECT_EQ(c.audit_sinks[0].path, "/var/lib/pgwarden/audit.log");
}

// pgwarden-dp reads its parts of the same file without control-plane code
// (common/protocol/dataplane_settings.h): for the documented example it must see what the
// control plane sees.
TEST(ConfigTest, TheDataplaneReadsItsPartsOfTheExampleAsTheControlPlaneDoes) {
  json file = example();
  file["recording"]["hold_timeout_ms"] = 1234;
  file["limits"] = {{"cp_unavailable_wait_ms", 4321}};
  LoadOutcome o = parse_config(file.dump(), 7, no_env());
  ASSERT_TRUE(o.ok()) << o.error_text();
  const Config& c = *o.config;
  char tmpl[] = "/tmp/pgw_config_dp_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/pgwarden.json";
  std::ofstream(path) << file.dump();
  auto dp = protocol::load_dataplane_settings(path);
  std::remove(path.c_str());
  ::rmdir(tmpl);
  ASSERT_TRUE(dp.is_ok()) << dp.status().message();
  EXPECT_EQ(dp->listener.address, c.dataplane.address);
  EXPECT_EQ(dp->listener.port, c.dataplane.port);
  EXPECT_EQ(dp->listener.tls, c.dataplane.tls);
  EXPECT_EQ(dp->listener.tls_cert_file, c.dataplane.tls_cert_file);
  EXPECT_EQ(dp->listener.max_connections, c.dataplane.max_connections);
  EXPECT_EQ(dp->listener.max_message_bytes, c.dataplane.max_message_bytes);
  EXPECT_EQ(dp->controlplane_socket, c.control_plane.socket_path);
  EXPECT_EQ(dp->recording_hold_timeout_ms, 1234);
  EXPECT_EQ(c.recording.hold_timeout_ms, 1234);
  EXPECT_EQ(dp->limits.cp_unavailable_wait_ms, 4321);
  EXPECT_EQ(c.limits.cp_unavailable_wait_ms, 4321);
  EXPECT_EQ(dp->metrics_listen, c.metrics.dataplane_listen);
  std::vector<std::vector<std::string>> lists;
  for (const policy::Policy& p : c.policies) {
    if (std::find(lists.begin(), lists.end(), p.rule_sets) == lists.end()) {
      lists.push_back(p.rule_sets);
    }
  }
  EXPECT_EQ(dp->rule_set_lists, lists);
}

TEST(ConfigTest, EveryErrorIsReportedWithItsJsonPath) {
  json j = example();
  j["policies"][2]["masks"] =
      json::array({{{"column", "crm.customers.ssn"}, {"function", "blur"}}});
  j["policies"][0]["colour"] = "red";
  j["targets"][0]["port"] = 70000;
  j["targets"][1]["tls"] = {{"mode", "sometimes"}};
  j["identity"]["providers"][1]["algorithms"] = json::array({"RS256", "none", "HS256"});
  j["listeners"]["dataplane"].erase("tls");
  j["policies"][1]["targets"] = json::array({"crm", "nope"});
  LoadOutcome o = parse_config(j.dump(), 1, no_env());
  EXPECT_FALSE(o.ok());
  EXPECT_TRUE(has_error(o, "$.policies[2].masks[0].function: unknown mask function \"blur\""))
      << o.error_text();
  EXPECT_TRUE(has_error(o, "$.policies[0].colour: unknown key \"colour\"")) << o.error_text();
  EXPECT_TRUE(has_error(o, "$.targets[0].port: must be between 1 and 65535")) << o.error_text();
  EXPECT_TRUE(has_error(
      o, "$.targets[1].tls.mode: unknown TLS mode \"sometimes\" (disable, require, verify-full)"))
      << o.error_text();
  EXPECT_TRUE(has_error(o,
                        "$.identity.providers[1].algorithms[1]: algorithm \"none\" is not "
                        "allowed (unsigned or symmetric)"))
      << o.error_text();
  EXPECT_TRUE(has_error(o,
                        "$.identity.providers[1].algorithms[2]: algorithm \"HS256\" is not "
                        "allowed (unsigned or symmetric)"))
      << o.error_text();
  EXPECT_TRUE(has_error(o,
                        "$.listeners.dataplane.tls: is required unless loopback_only is true "
                        "(tokens travel as passwords)"))
      << o.error_text();
  EXPECT_TRUE(has_error(o, "$.policies[1].targets[1]: unknown target \"nope\"")) << o.error_text();
  EXPECT_EQ(o.errors.size(), 8u) << o.error_text();
}

struct BadCase {
  const char* name;
  std::function<void(json&)> mutate;
  const char* expected;
};

class ConfigRejectsTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigRejectsTest, WithPathAndReason) {
  json j = example();
  GetParam().mutate(j);
  LoadOutcome o = parse_config(j.dump(), 1, no_env());
  EXPECT_FALSE(o.ok());
  EXPECT_TRUE(has_error(o, GetParam().expected)) << o.error_text();
}

INSTANTIATE_TEST_SUITE_P(
    Corpus, ConfigRejectsTest,
    ::testing::Values(
        BadCase{"UnknownTopLevelKey", [](json& j) { j["extra"] = 1; },
                "$.extra: unknown key \"extra\""},
        BadCase{"BudgetUnknownKey", [](json& j) { j["budgets"][0]["rows"] = 5; },
                "$.budgets[0].rows: unknown key \"rows\""},
        BadCase{"BudgetBadSizeUnit", [](json& j) { j["budgets"][0]["result_bytes"] = "50mb"; },
                "$.budgets[0].result_bytes: unknown unit \"mb\" (use B, kB, MB, GB, TB, KiB, "
                "MiB, GiB or TiB)"},
        BadCase{"BudgetBadWindow", [](json& j) { j["budgets"][0]["window"] = "1w"; },
                "$.budgets[0].window: unknown unit \"w\" (use s, m, h or d)"},
        BadCase{"MissingControlPlane", [](json& j) { j.erase("control_plane"); },
                "$.control_plane: is required"},
        BadCase{"RelativeSocket", [](json& j) { j["control_plane"]["socket"] = "cp.sock"; },
                "$.control_plane.socket: must be an absolute path"},
        BadCase{"BadServiceKeyHash",
                [](json& j) { j["identity"]["service_keys"][0]["hash"] = "plain"; },
                "$.identity.service_keys[0]: hash must be \"scrypt:N:r:p:<b64>\" or "
                "\"pbkdf2-sha256:iter:<b64>\""},
        BadCase{"ServiceKeyWithoutGroups",
                [](json& j) { j["identity"]["service_keys"][0]["groups"] = json::array(); },
                "$.identity.service_keys[0].groups: must not be empty"},
        BadCase{"TwoJwksSources",
                [](json& j) { j["identity"]["providers"][1]["jwks_url"] = "https://x/jwks"; },
                "$.identity.providers[1]: needs exactly one of jwks_file, jwks_url, "
                "discovery_url"},
        BadCase{"PlainHttpJwks",
                [](json& j) {
                  j["identity"]["providers"][1].erase("jwks_file");
                  j["identity"]["providers"][1]["jwks_url"] = "http://x/jwks";
                },
                "$.identity.providers[1].jwks_url: must be an https:// URL"},
        BadCase{"TargetHostAndSocket", [](json& j) { j["targets"][0]["unix_socket"] = "/tmp"; },
                "$.targets[0]: needs exactly one of host, unix_socket"},
        BadCase{"CredentialBothSources",
                [](json& j) { j["targets"][0]["credential"]["env"] = "X"; },
                "$.targets[0].credential: needs exactly one of file, env"},
        BadCase{"DuplicateTarget", [](json& j) { j["targets"][1]["name"] = "crm"; },
                "$.targets[1].name: duplicate target \"crm\""},
        BadCase{"ReadOnlyAllowsInsert",
                [](json& j) { j["policies"][0]["allowed_kinds"] = json::array({"insert"}); },
                "$.policies[0].allowed_kinds[0]: read_only policy cannot allow \"insert\" (set "
                "read_only to false)"},
        BadCase{"ApproveWithoutApprovers", [](json& j) { j["policies"][1].erase("approvals"); },
                "$.policies[1].approvals.approver_groups: is required when approve_kinds is set"},
        BadCase{"UnknownKind",
                [](json& j) { j["policies"][1]["allowed_kinds"] = json::array({"selec"}); },
                "$.policies[1].allowed_kinds[0]: unknown statement kind \"selec\""},
        BadCase{"RowsOverWithoutApprovers",
                [](json& j) {
                  j["policies"][0]["approve_when_rows_over"] = 100;
                  j["policies"][0].erase("approvals");
                },
                "$.policies[0].approvals.approver_groups: is required when approve_when_rows_over "
                "is set"},
        BadCase{"NegativeRowsOver",
                [](json& j) { j["policies"][1]["approve_when_rows_over"] = -1; },
                "$.policies[1].approve_when_rows_over: must be between 0 and 2000000000"},
        BadCase{"BadRelationGlob",
                [](json& j) { j["policies"][0]["allowed_relations"][0] = "customers"; },
                "$.policies[0].allowed_relations[0]: must be a \"schema.table\" glob (letters, "
                "digits, _, $, * ?)"},
        BadCase{"MaskTwoSelectors", [](json& j) { j["policies"][0]["masks"][0]["name"] = "*ssn*"; },
                "$.policies[0].masks[0]: needs exactly one of column, name, type"},
        BadCase{"KeepLastOnRedact", [](json& j) { j["policies"][0]["masks"][0]["keep_last"] = 2; },
                "$.policies[0].masks[0].keep_last: only applies to function \"partial\""},
        BadCase{"UnknownPredicateForm",
                [](json& j) {
                  j["policies"][0]["masks"][0]["allow_predicates"] = json::array({"like"});
                },
                "$.policies[0].masks[0].allow_predicates: unknown predicate form \"like\" "
                "(is_null, equality_join)"},
        BadCase{"PredicatesOnTypeMask",
                [](json& j) {
                  j["policies"][0]["masks"][3]["allow_predicates"] = json::array({"is_null"});
                },
                "$.policies[0].masks[3].allow_predicates: only applies to column and name masks"},
        BadCase{"RecordingLevel", [](json& j) { j["policies"][0]["recording"]["level"] = "some"; },
                "$.policies[0].recording.level: unknown recording level \"some\" (off, metadata, "
                "full)"},
        BadCase{"RecordingSyncWord", [](json& j) { j["recording"]["sync"] = "sometimes"; },
                "$.recording.sync: must be \"always\" or an interval in milliseconds (1..60000)"},
        BadCase{"RecordingSyncZero", [](json& j) { j["recording"]["sync"] = 0; },
                "$.recording.sync: must be \"always\" or an interval in milliseconds (1..60000)"},
        BadCase{"WrongType", [](json& j) { j["policies"][0]["read_only"] = "yes"; },
                "$.policies[0].read_only: must be true or false"},
        BadCase{"LoopbackOnlyOnPublicAddress",
                [](json& j) { j["listeners"]["dataplane"]["loopback_only"] = true; },
                "$.listeners.dataplane.address: must be a loopback address when loopback_only "
                "is true"},
        BadCase{
            "AuditSinkType", [](json& j) { j["audit"]["sinks"][0]["type"] = "syslog"; },
            "$.audit.sinks[0].type: unknown audit sink type \"syslog\" (file, stderr, postgres)"},
        BadCase{"IdentityLinkedToTwoPeople",
                [](json& j) {
                  j["approvals"]["identity_links"] = json::parse(
                      R"([{"person": "alice", "identities": ["svc:x"]},
                          {"person": "bob", "identities": ["svc:x"]}])");
                },
                "$.approvals.identity_links[1]: \"svc:x\" is already linked to \"alice\""},
        BadCase{"RequiredApprovalsZero",
                [](json& j) {
                  j["policies"][0]["approvals"] =
                      json{{"approver_groups", {"reviewers"}}, {"required_approvals", 0}};
                },
                "$.policies[0].approvals.required_approvals: must be between 1 and 16"},
        BadCase{"ChatWithoutSigningSecret",
                [](json& j) {
                  j["approvals"]["chat"] = json{{"webhook_url", "https://hooks.example.com/x"},
                                                {"users", json::object()}};
                },
                "$.approvals.chat: needs exactly one of signing_secret_file, signing_secret_env"},
        BadCase{"ChatUserWithoutGroups",
                [](json& j) {
                  j["approvals"]["chat"] =
                      json{{"webhook_url", "https://hooks.example.com/x"},
                           {"signing_secret_env", "SLACK_SIGNING_SECRET"},
                           {"users", {{"U1", {{"identity", "alice"}}}}}};
                },
                "$.approvals.chat.users.U1.groups: is required"},
        BadCase{"WebhookUnknownScheme",
                [](json& j) { j["approvals"]["webhook_url"] = "ftp://chatops.example.com/x"; },
                "$.approvals.webhook_url: only https:// and http:// URLs are allowed"},
        BadCase{"WebhookPlainHttpToRemoteHost",
                [](json& j) { j["approvals"]["webhook_url"] = "http://chatops.example.com/x"; },
                "$.approvals.webhook_url: plain http:// is only allowed to a loopback host; use "
                "https://"},
        BadCase{"WebhookCredentialsInUrl",
                [](json& j) { j["approvals"]["webhook_url"] = "https://u:p@chatops/x"; },
                "$.approvals.webhook_url: credentials in URLs are not allowed"},
        BadCase{"WebhookAuthorizationBothSources",
                [](json& j) { j["approvals"]["webhook_authorization_env"] = "HOOK_AUTH"; },
                "$.approvals: needs at most one of webhook_authorization_file, "
                "webhook_authorization_env"},
        BadCase{"WebhookTimeoutOutOfRange",
                [](json& j) { j["approvals"]["webhook_timeout_ms"] = 5; },
                "$.approvals.webhook_timeout_ms: must be between 100 and 60000"},
        BadCase{"WebhookSettingsWithoutUrl", [](json& j) { j["approvals"].erase("webhook_url"); },
                "$.approvals.webhook_ca_file: needs webhook_url"},
        BadCase{"AdminSocketModeForOthers",
                [](json& j) { j["control_plane"]["admin_socket_mode"] = "0666"; },
                "$.control_plane.admin_socket_mode: must not grant any permission to others "
                "(last digit must be 0), got \"0666\""},
        BadCase{"AdminSocketModeNotOctal",
                [](json& j) { j["control_plane"]["admin_socket_mode"] = "0680"; },
                "$.control_plane.admin_socket_mode: must be an octal mode string such as "
                "\"0660\", got \"0680\""},
        BadCase{"AdminSocketModeSetuid",
                [](json& j) { j["control_plane"]["admin_socket_mode"] = "4660"; },
                "$.control_plane.admin_socket_mode: must be an octal mode string such as "
                "\"0660\", got \"4660\""},
        BadCase{"AdminSocketModeAsNumber",
                [](json& j) { j["control_plane"]["admin_socket_mode"] = 432; },
                "$.control_plane.admin_socket_mode: must be a string"},
        BadCase{"AdminSocketModeOwnerCannotWrite",
                [](json& j) { j["control_plane"]["admin_socket_mode"] = "0460"; },
                "$.control_plane.admin_socket_mode: must give the owner read and write (06x0), "
                "got \"0460\""},
        BadCase{"AdminSocketModeWithoutSocket",
                [](json& j) {
                  j["control_plane"].erase("admin_socket");
                  j["control_plane"].erase("admin_principals");
                },
                "$.control_plane.admin_socket: is required when admin_socket_mode or "
                "admin_socket_group is set"},
        BadCase{"NotJson", [](json& j) { j = "just a string"; }, "$: must be an object"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ConfigTest, RecordingSyncIsAnIntervalOrAlways) {
  json j = example();
  LoadOutcome d = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(d.ok()) << d.error_text();
  EXPECT_FALSE(d.config->recording.sync_always);
  EXPECT_EQ(d.config->recording.sync_interval_ms, 100);
  EXPECT_EQ(d.config->recording.checkpoint_interval_ms, 1000);
  j["recording"]["sync"] = "always";
  j["recording"]["checkpoint_interval_ms"] = 250;
  LoadOutcome a = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(a.ok()) << a.error_text();
  EXPECT_TRUE(a.config->recording.sync_always);
  EXPECT_EQ(a.config->recording.checkpoint_interval_ms, 250);
  j["recording"]["sync"] = 20;
  LoadOutcome i = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(i.ok()) << i.error_text();
  EXPECT_FALSE(i.config->recording.sync_always);
  EXPECT_EQ(i.config->recording.sync_interval_ms, 20);
}

TEST(ConfigTest, StateStoreIsTheFileStoreByDefaultOrAValidatedPostgresStore) {
  json j = example();
  LoadOutcome d = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(d.ok()) << d.error_text();
  EXPECT_EQ(d.config->control_plane.state_store.kind, StateStoreSettings::Kind::kFile);
  j["control_plane"]["state_store"] = {
      {"kind", "postgres"}, {"dsn_file", "/etc/pgwarden/store.dsn"}, {"node_id", "gw-1.eu"}};
  LoadOutcome p = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(p.ok()) << p.error_text();
  EXPECT_EQ(p.config->control_plane.state_store.kind, StateStoreSettings::Kind::kPostgres);
  EXPECT_EQ(p.config->control_plane.state_store.dsn_file, "/etc/pgwarden/store.dsn");
  EXPECT_EQ(p.config->control_plane.state_store.node_id, "gw-1.eu");
  EXPECT_EQ(p.config->control_plane.state_store.connect_timeout_ms, 2000);

  j["control_plane"]["state_store"] = {{"kind", "postgres"}, {"node_id", "a b"}};
  LoadOutcome bad = parse_config(j.dump(), 1, no_env());
  EXPECT_FALSE(bad.ok());
  EXPECT_TRUE(
      has_error(bad, "$.control_plane.state_store.dsn_file: is required for kind \"postgres\""))
      << bad.error_text();
  EXPECT_TRUE(has_error(bad,
                        "$.control_plane.state_store.node_id: is required for kind \"postgres\": "
                        "1..63 of [A-Za-z0-9._-]"))
      << bad.error_text();
  j["control_plane"]["state_store"] = {{"kind", "etcd"}};
  EXPECT_TRUE(has_error(parse_config(j.dump(), 1, no_env()),
                        "$.control_plane.state_store.kind: must be \"file\" or \"postgres\""));
  j["control_plane"]["state_store"] = {{"kind", "file"}, {"node_id", "x"}};
  EXPECT_TRUE(has_error(parse_config(j.dump(), 1, no_env()),
                        "$.control_plane.state_store: dsn_file, node_id, admin_url, "
                        "node_key_file and node_ca_file only apply to kind \"postgres\""));
  // Recordings of other nodes: an https admin_url of this node's HTTPS API, with a node key.
  j["control_plane"].erase("http");
  j["control_plane"]["state_store"] = {{"kind", "postgres"},
                                       {"dsn_file", "/etc/pgwarden/store.dsn"},
                                       {"node_id", "gw-1"},
                                       {"admin_url", "http://gw-1:8443"}};
  LoadOutcome url = parse_config(j.dump(), 1, no_env());
  EXPECT_TRUE(has_error(url,
                        "$.control_plane.state_store.admin_url: must be an https:// URL "
                        "(this node's control_plane.http)"))
      << url.error_text();
  EXPECT_TRUE(has_error(url,
                        "$.control_plane.state_store.admin_url: needs control_plane.http "
                        "(the HTTPS admin API it names)"))
      << url.error_text();
  EXPECT_TRUE(has_error(url,
                        "$.control_plane.state_store.node_key_file: is required with "
                        "admin_url (other nodes sign with it)"))
      << url.error_text();
  j["control_plane"]["state_store"] = {{"kind", "file"}, {"password", "x"}};
  EXPECT_TRUE(has_error(parse_config(j.dump(), 1, no_env()),
                        "$.control_plane.state_store.password: unknown key \"password\""));
}

TEST(ConfigTest, LimitsAndTokenExpiryParseWithDefaults) {
  json j = example();
  LoadOutcome o = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(o.ok()) << o.error_text();
  EXPECT_EQ(o.config->limits.cp_unavailable_wait_ms, 5000);
  EXPECT_FALSE(o.config->policies[0].keep_session_past_token_expiry);
  j["limits"] = {{"cp_unavailable_wait_ms", 250}};
  j["policies"][0]["token_expiry"] = "keep";
  j["policies"][1]["token_expiry"] = "end";
  o = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(o.ok()) << o.error_text();
  EXPECT_EQ(o.config->limits.cp_unavailable_wait_ms, 250);
  EXPECT_TRUE(o.config->policies[0].keep_session_past_token_expiry);
  EXPECT_FALSE(o.config->policies[1].keep_session_past_token_expiry);
  j["policies"][0]["token_expiry"] = "forever";
  j["limits"] = {{"cp_unavailable_wait_ms", -1}, {"other", 1}};
  o = parse_config(j.dump(), 1, no_env());
  EXPECT_FALSE(o.ok());
  EXPECT_TRUE(has_error(o, "$.policies[0].token_expiry: unknown value \"forever\" (end, keep)"))
      << o.error_text();
  EXPECT_TRUE(has_error(o, "$.limits.other: unknown key \"other\"")) << o.error_text();
  EXPECT_NE(o.error_text().find("$.limits.cp_unavailable_wait_ms"), std::string::npos)
      << o.error_text();
}

TEST(ConfigTest, MetricsEndpointsAreOffByDefaultAndParseWhenSet) {
  json j = example();
  j.erase("metrics");
  LoadOutcome o = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(o.ok()) << o.error_text();
  EXPECT_EQ(o.config->metrics.controlplane_listen, "");
  EXPECT_EQ(o.config->metrics.dataplane_listen, "");
  j["metrics"] = {{"controlplane_listen", "127.0.0.1:9631"}, {"dataplane_listen", "[::1]:9632"}};
  o = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(o.ok()) << o.error_text();
  EXPECT_EQ(o.config->metrics.controlplane_listen, "127.0.0.1:9631");
  EXPECT_EQ(o.config->metrics.dataplane_listen, "[::1]:9632");
  j["metrics"] = {{"controlplane_listen", "localhost:9631"},
                  {"dataplane_listen", "127.0.0.1:70000"},
                  {"path", "/metrics"}};
  o = parse_config(j.dump(), 1, no_env());
  EXPECT_FALSE(o.ok());
  EXPECT_TRUE(has_error(o,
                        "$.metrics.controlplane_listen: \"localhost:9631\": address must be a "
                        "numeric IPv4 address or a bracketed IPv6 address ([::1]:9631)"))
      << o.error_text();
  EXPECT_TRUE(has_error(
      o, "$.metrics.dataplane_listen: \"127.0.0.1:70000\": port must be a number 1..65535"))
      << o.error_text();
  EXPECT_TRUE(has_error(o, "$.metrics.path: unknown key \"path\"")) << o.error_text();
  j["metrics"] = {{"controlplane_listen", "127.0.0.1:9631"},
                  {"dataplane_listen", "127.0.0.1:9631"}};
  o = parse_config(j.dump(), 1, no_env());
  EXPECT_TRUE(has_error(o,
                        "$.metrics.dataplane_listen: must differ from controlplane_listen (both "
                        "processes usually run on one host)"))
      << o.error_text();
}

TEST(ConfigTest, HttpsAdminApiNeedsTlsAndParsesRolesAndThePeoplesIdp) {
  json j = example();
  json http = {{"listen", "127.0.0.1:8443"},
               {"tls_cert_file", "/etc/pgwarden/https.crt"},
               {"tls_key_file", "/etc/pgwarden/https.key"},
               {"public_url", "https://pgwarden.example.com:8443"},
               {"role_groups", {{"reviewer", {"dba"}}, {"admin", {"root"}}}},
               {"oidc",
                {{"issuer", "https://sso.example.com"},
                 {"jwks_url", "https://sso.example.com/jwks"},
                 {"client_id", "pgwarden"},
                 {"authorization_endpoint", "https://sso.example.com/auth"},
                 {"token_endpoint", "https://sso.example.com/token"}}}};
  j["control_plane"]["http"] = http;
  LoadOutcome o = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(o.ok()) << o.error_text();
  const HttpSettings& h = o.config->control_plane.http;
  EXPECT_EQ(h.listen, "127.0.0.1:8443");
  EXPECT_EQ(h.role_groups.reviewer, std::vector<std::string>{"dba"});
  EXPECT_FALSE(h.break_glass);
  ASSERT_TRUE(h.oidc.has_value());
  EXPECT_EQ(h.oidc->provider.audiences, std::vector<std::string>{"pgwarden"});
  EXPECT_EQ(h.oidc->provider.issuer, "https://sso.example.com");
  EXPECT_EQ(h.oidc->name_claim, "preferred_username");

  json bad = http;
  bad.erase("tls_key_file");
  bad["public_url"] = "http://pgwarden.example.com";
  bad["listen"] = "localhost:8443";
  bad["oidc"]["token_endpoint"] = "http://sso.example.com/token";
  bad["oidc"]["jwks_url"] = "http://sso.example.com/jwks";
  bad["oidc"]["colour"] = "blue";
  bad["break_glass"] = true;
  j["control_plane"]["http"] = bad;
  j["control_plane"].erase("admin_principals");
  o = parse_config(j.dump(), 1, no_env());
  EXPECT_FALSE(o.ok());
  for (const char* e : {"$.control_plane.http.tls_key_file: is required",
                        "$.control_plane.http.public_url: must be an https:// URL without query or "
                        "fragment",
                        "$.control_plane.http.listen: address must be a "
                        "numeric IPv4 address or a bracketed IPv6 address ([::1]:9631)",
                        "$.control_plane.http.oidc.token_endpoint: must be an https:// URL",
                        "$.control_plane.http.oidc.jwks_url: must be an https:// URL",
                        "$.control_plane.http.oidc.colour: unknown key \"colour\"",
                        "$.control_plane.http.break_glass: needs $.control_plane.admin_principals"}) {
    EXPECT_TRUE(has_error(o, e)) << e << "\n" << o.error_text();
  }
}

TEST(ConfigTest, HttpsSamlSignInIsParsedAndChecked) {
  json j = example();
  json http = {{"listen", "127.0.0.1:8443"},
               {"tls_cert_file", "/etc/pgwarden/https.crt"},
               {"tls_key_file", "/etc/pgwarden/https.key"},
               {"public_url", "https://pgwarden.example.com:8443"},
               {"saml", {{"idp_metadata_file", "/etc/pgwarden/idp-metadata.xml"}}}};
  j["control_plane"]["http"] = http;
  LoadOutcome o = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(o.ok()) << o.error_text();
  const HttpSettings& h = o.config->control_plane.http;
  ASSERT_TRUE(h.saml.has_value());
  EXPECT_EQ(h.saml->idp_metadata_file, "/etc/pgwarden/idp-metadata.xml");
  EXPECT_EQ(h.saml->entity_id, "");  // <public_url>/auth/saml/metadata
  EXPECT_EQ(h.saml->groups_attribute, "groups");
  EXPECT_EQ(h.saml->clock_skew_s, 60);

  http["saml"] = {{"entity_id", "https://gw/saml"}, {"clock_skew_s", 3600}, {"colour", "x"}};
  j["control_plane"]["http"] = http;
  o = parse_config(j.dump(), 1, no_env());
  EXPECT_FALSE(o.ok());
  for (const char* e : {"$.control_plane.http.saml.idp_metadata_file: is required",
                        "$.control_plane.http.saml.colour: unknown key \"colour\""}) {
    EXPECT_TRUE(has_error(o, e)) << e << "\n" << o.error_text();
  }
  EXPECT_NE(o.error_text().find("$.control_plane.http.saml.clock_skew_s"), std::string::npos)
      << o.error_text();
}

struct ListenCase {
  const char* listen;
  bool valid;
};

class ListenAddressTest : public ::testing::TestWithParam<ListenCase> {};

TEST_P(ListenAddressTest, OnlyNumericAddressesWithAPortAreAccepted) {
  EXPECT_EQ(check_listen_address(GetParam().listen).empty(), GetParam().valid) << GetParam().listen;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ListenAddressTest,
    ::testing::Values(ListenCase{"127.0.0.1:9187", true}, ListenCase{"0.0.0.0:1", true},
                      ListenCase{"[::1]:9187", true}, ListenCase{"[::]:65535", true},
                      ListenCase{"127.0.0.1", false}, ListenCase{"localhost:9187", false},
                      ListenCase{"127.0.0.1:0", false}, ListenCase{"127.0.0.1:65536", false},
                      ListenCase{"127.0.0.1:91a", false}, ListenCase{"::1:9187", false},
                      ListenCase{"[::1:9187", false}, ListenCase{":9187", false},
                      ListenCase{"", false}));

TEST(ConfigTest, DuplicateKeysAreErrors) {
  std::string text = example().dump();
  text.replace(text.find("\"read_only\":true"), std::string("\"read_only\":true").size(),
               "\"read_only\":true,\"read_only\":false");
  LoadOutcome o = parse_config(text, 1, no_env());
  EXPECT_FALSE(o.ok());
  EXPECT_TRUE(has_error(o, "$: duplicate key \"read_only\"")) << o.error_text();
}

TEST(ConfigTest, InvalidJsonIsOneErrorAtRoot) {
  LoadOutcome o = parse_config("{\"listeners\": ", 1, no_env());
  ASSERT_EQ(o.errors.size(), 1u);
  EXPECT_EQ(o.errors[0].path, "$");
  EXPECT_NE(o.errors[0].message.find("invalid JSON"), std::string::npos);
}

TEST(ConfigTest, EnvironmentChecksReportMissingFilesAndVariables) {
  unsetenv("PGWARDEN_ANALYTICS_PASSWORD");
  LoadOutcome o = parse_config(example().dump(), 1);
  EXPECT_TRUE(has_error(o,
                        "$.targets[1].credential.env: environment variable "
                        "\"PGWARDEN_ANALYTICS_PASSWORD\" is not set"))
      << o.error_text();
  EXPECT_TRUE(has_error(o,
                        "$.targets[0].credential.file: cannot read "
                        "\"/etc/pgwarden/secrets/crm\""))
      << o.error_text();
}

TEST(ConfigTest, AdminSocketGroupMustExist) {
  json j = example();
  j["control_plane"]["admin_socket_group"] = "pgw-no-such-group-xyz";
  LoadOutcome o = parse_config(j.dump(), 1);
  EXPECT_TRUE(
      has_error(o, "$.control_plane.admin_socket_group: unknown group \"pgw-no-such-group-xyz\""))
      << o.error_text();
  j["control_plane"]["admin_socket_group"] = "root";
  o = parse_config(j.dump(), 1);
  for (const auto& e : o.errors) EXPECT_NE(e.path, "$.control_plane.admin_socket_group");
  EXPECT_EQ(lookup_group("root").value(), 0u);
}

TEST(ConfigTest, SelectPolicyTakesFirstMatchInFileOrder) {
  json j = example();
  j["policies"][2]["groups"] = json::array({"support", "reporting"});
  LoadOutcome o = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(o.ok()) << o.error_text();
  const Config& c = *o.config;
  EXPECT_EQ(c.select_policy({"support"}, "crm")->name, "support-agents");
  EXPECT_EQ(c.select_policy({"support"}, "analytics")->name, "reporting");
  EXPECT_EQ(c.select_policy({"x", "ops"}, "crm")->name, "ops-writers");
  EXPECT_EQ(c.select_policy({"ops"}, "analytics"), nullptr);
  EXPECT_EQ(c.select_policy({}, "crm"), nullptr);
}

TEST(ConfigTest, AllowedStartupSettingsAreOptionalGlobsAndNeverNameTheSessionIdentity) {
  json j = example();
  LoadOutcome plain = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(plain.ok()) << plain.error_text();
  EXPECT_FALSE(plain.config->policies[0].allowed_startup_settings.has_value());  // dp default

  j["policies"][0]["allowed_startup_settings"] = json::array({"application_name", "app.*"});
  LoadOutcome listed = parse_config(j.dump(), 1, no_env());
  ASSERT_TRUE(listed.ok()) << listed.error_text();
  ASSERT_TRUE(listed.config->policies[0].allowed_startup_settings.has_value());
  EXPECT_EQ(*listed.config->policies[0].allowed_startup_settings,
            (std::vector<std::string>{"application_name", "app.*"}));

  for (const char* bad : {"role", "Session_Authorization", "search path", "a=b"}) {
    j["policies"][0]["allowed_startup_settings"] = json::array({bad});
    LoadOutcome o = parse_config(j.dump(), 1, no_env());
    EXPECT_FALSE(o.ok()) << bad;
    EXPECT_NE(o.error_text().find("allowed_startup_settings[0]"), std::string::npos)
        << o.error_text();
  }
}

TEST(ConfigStoreTest, InvalidReloadKeepsOldConfigAndVersionsIncrease) {
  char tmpl[] = "/tmp/pgw-config-XXXXXX";
  int fd = mkstemp(tmpl);
  close(fd);
  std::string path = tmpl;
  auto write = [&](const std::string& text) { std::ofstream(path) << text; };
  json j = example();
  write(j.dump());
  ConfigStore store(path, no_env());
  EXPECT_EQ(store.current(), nullptr);
  ASSERT_TRUE(store.reload().ok());
  auto first = store.current();
  write("{ broken");
  LoadOutcome bad = store.reload();
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(store.current(), first);
  j["policies"][0]["name"] = "renamed";
  write(j.dump());
  ASSERT_TRUE(store.reload().ok());
  EXPECT_GT(store.current()->version, first->version);
  EXPECT_EQ(store.current()->policies[0].name, "renamed");
  EXPECT_EQ(store.current()->policies[0].version, store.current()->version);
  unlink(path.c_str());
}

// A policy's masks version moves only when its masks (or deny_masked_in_expressions) change:
// open sessions re-check what they prepared only then (docs/masking.md, "Verdicts across a
// policy reload").
TEST(ConfigStoreTest, MasksVersionMovesOnlyWhenThePolicysMasksChange) {
  char tmpl[] = "/tmp/pgw-config-XXXXXX";
  int fd = mkstemp(tmpl);
  close(fd);
  std::string path = tmpl;
  auto write = [&](const json& j) { std::ofstream(path) << j.dump(); };
  json j = example();
  j["policies"][0]["masks"] = json::parse(R"([{"column": "crm.customers.ssn", "function": "hash"}])");
  write(j);
  ConfigStore store(path, no_env());
  ASSERT_TRUE(store.reload().ok());
  const uint64_t first = store.current()->policies[0].masks_version;
  EXPECT_EQ(first, store.current()->version);
  // Another setting changes: the masks version stays.
  j["policies"][0]["allowed_relations"].push_back("sales.*");
  write(j);
  ASSERT_TRUE(store.reload().ok());
  EXPECT_GT(store.current()->version, first);
  EXPECT_EQ(store.current()->policies[0].masks_version, first);
  // A mask's function changes: a new masks version.
  j["policies"][0]["masks"][0]["function"] = "null";
  write(j);
  ASSERT_TRUE(store.reload().ok());
  const uint64_t second = store.current()->policies[0].masks_version;
  EXPECT_EQ(second, store.current()->version);
  EXPECT_GT(second, first);
  // deny_masked_in_expressions is mask-relevant too.
  j["policies"][0]["deny_masked_in_expressions"] =
      !store.current()->policies[0].deny_masked_in_expressions;
  write(j);
  ASSERT_TRUE(store.reload().ok());
  EXPECT_GT(store.current()->policies[0].masks_version, second);
  unlink(path.c_str());
}

}  // namespace
}  // namespace pgwarden::config
