// The packet layer's operator path end to end: a PacketLayer on DPDK net_ring ports (frames
// injected as a NIC would deliver them), PacketOps exactly as `pgwarden-dp --dpdk` wires it
// (stats snapshots and audit events to cp, SIGHUP rule reloads), the real pgwarden-cp binary
// and the real pgwardenctl binary reading `pgwardenctl dataplane --json`. A last test runs
// the real pgwarden-dp --dpdk binary on net_null ports against the same cp.
#include "dataplane/packet/packet_ops.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <rte_eth_ring.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/protocol/client.h"
#include "common/source_root.h"
#include "controlplane/vault/credential_hash.h"
#include "dataplane/packet/eal_for_tests.h"
#include "dataplane/packet/frame_builder.h"
#include "dataplane/packet/packet_parser.h"
#include "tests/integration/cp_process.h"

namespace pgwarden::packet {
namespace {

using nlohmann::json;
using pgwarden::testing::CpProcess;
using pgwarden::testing::CtlResult;
using pgwarden::testing::slurp;

const Address kAgent = Address::v4(0xC612000A);  // 198.18.0.10
const Address kDb = Address::v4(0xC6120014);     // 198.18.0.20

constexpr char kKvRule[] =
    "\n[deny.kv]\naction = deny\nview = code\npattern = \\bkv\\b\n"
    "message = kv is off limits\nseverity = high\n";

std::string be32(uint32_t v) {
  std::string s(4, '\0');
  store_be32(reinterpret_cast<uint8_t*>(s.data()), v);
  return s;
}
std::string startup_message() {
  std::string body = be32(196608) + std::string("user\0agent\0\0", 12);
  return be32(static_cast<uint32_t>(body.size() + 4)) + body;
}
std::string query(const std::string& sql) {
  return "Q" + be32(static_cast<uint32_t>(sql.size() + 5)) + sql + std::string(1, '\0');
}

class PacketOpsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(init_eal_for_tests().is_ok()) << init_eal_for_tests().to_string();
    pool_ = rte_pktmbuf_pool_create("ops_frames", 1023, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    ASSERT_NE(pool_, nullptr);
    char tmpl[] = "/tmp/pgw-packet-ops-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::ofstream(dir_ + "/alice.cred") << "alice-secret-123\n";
    ::chmod((dir_ + "/alice.cred").c_str(), 0600);
    json config = testing::base_cp_config(dir_, "agent-secret");
    config["control_plane"]["admin_socket"] = dir_ + "/admin.sock";
    config["control_plane"]["admin_principals"] = {
        {{"name", "alice"},
         {"credential_hash", vault::hash_credential("alice-secret-123", 1000)},
         {"groups", {"ops"}}}};
    config["policies"] = {{{"name", "agents"},
                           {"groups", {"agents"}},
                           {"targets", {"demo"}},
                           {"allowed_kinds", {"select"}},
                           {"allowed_relations", {"public.*"}}}};
    std::ofstream(dir_ + "/pgwarden.json") << config.dump(2);
    cp_ = new CpProcess();
    Status st = cp_->start(dir_ + "/pgwarden.json", dir_ + "/cp.log");
    if (st.is_ok()) st = cp_->wait_ready(dir_ + "/cp.sock", dir_ + "/admin.sock");
    ASSERT_TRUE(st.is_ok()) << "pgwarden-cp did not come up: " << st.message();
  }

  static void TearDownTestSuite() {
    if (cp_ != nullptr) {
      EXPECT_EQ(cp_->stop(), 0) << slurp(dir_ + "/cp.log");
      delete cp_;
      cp_ = nullptr;
    }
    std::filesystem::remove_all(dir_);
  }

  struct Ring {
    rte_ring* rx = nullptr;
    rte_ring* tx = nullptr;
    std::string name;
  };

  Ring make_port(const std::string& role) {
    static int n = 0;
    Ring p;
    std::string id = "ops_" + role + std::to_string(n++);
    p.rx = rte_ring_create(("rx_" + id).c_str(), 256, 0, 0);
    p.tx = rte_ring_create(("tx_" + id).c_str(), 256, 0, 0);
    p.name = "net_ring_" + id;
    EXPECT_GE(rte_eth_from_rings(id.c_str(), &p.rx, 1, &p.tx, 1, 0), 0);
    rings_.push_back(p);
    return p;
  }

  void SetUp() override {
    rule_file_ = dir_ + "/wire.rules";
    std::filesystem::copy_file(PGW_SOURCE_ROOT "/rules/sets/deny.rules", rule_file_,
                               std::filesystem::copy_options::overwrite_existing);
    agent_ = make_port("agent");
    db_ = make_port("db");
    PacketLayerConfig c;
    c.agent_port = agent_.name;
    c.database_port = db_.name;
    c.allowed_direct_sources = {Prefix{kAgent, 32}};
    c.rule_files = {rule_file_};
    c.rx_descriptors = 64;
    c.tx_descriptors = 64;
    c.flow_capacity = 16;
    auto l = PacketLayer::create(c);
    ASSERT_TRUE(l.is_ok()) << l.status().to_string();
    layer_ = std::move(*l);
    dp_name_ = std::string("it-") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    PacketOpsOptions o;
    o.dp_name = dp_name_;
    o.rule_files = c.rule_files;
    o.stats_file = dir_ + "/stats.json";
    o.audit.cp_socket = dir_ + "/cp.sock";
    o.audit.fallback_path = dir_ + "/wire-audit.jsonl";
    auto ops = PacketOps::start(o);
    ASSERT_TRUE(ops.is_ok()) << ops.status().to_string();
    ops_ = std::move(*ops);
    ASSERT_TRUE(ops_->attach(*layer_).is_ok());
  }

  void TearDown() override {
    ops_.reset();
    layer_.reset();
    for (Ring& p : rings_) {
      drain(p.rx);
      drain(p.tx);
      rte_ring_free(p.rx);
      rte_ring_free(p.tx);
    }
    rings_.clear();
  }

  static void drain(rte_ring* r) {
    void* m;
    while (rte_ring_dequeue(r, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
  }

  void inject(const Ring& port, const std::vector<uint8_t>& frame) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    ASSERT_NE(m, nullptr);
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(frame.size())), frame.data(),
                frame.size());
    ASSERT_EQ(rte_ring_enqueue(port.rx, m), 0);
    layer_->poll_once(0);
    layer_->flush(0);
  }

  // Frames the layer sent on `port` (consumed): their TCP flags.
  std::vector<uint8_t> sent_flags(const Ring& port) {
    std::vector<uint8_t> flags;
    void* m;
    while (rte_ring_dequeue(port.tx, &m) == 0) {
      auto* mb = static_cast<rte_mbuf*>(m);
      ParsedPacket p;
      std::span<const uint8_t> f(rte_pktmbuf_mtod(mb, const uint8_t*), rte_pktmbuf_data_len(mb));
      EXPECT_EQ(parse_frame(f, &p), ParseStatus::kOk);
      flags.push_back(p.tcp_flags);
      rte_pktmbuf_free(mb);
    }
    return flags;
  }

  std::vector<uint8_t> tcp(uint16_t sport, bool from_agent, uint32_t seq, uint32_t ack,
                           uint8_t flags, const std::string& payload = "") {
    TcpFrameSpec s;
    s.src = from_agent ? kAgent : kDb;
    s.dst = from_agent ? kDb : kAgent;
    s.src_port = from_agent ? sport : 5432;
    s.dst_port = from_agent ? 5432 : sport;
    s.seq = TcpSeq(seq);
    s.ack = TcpSeq(ack);
    s.flags = flags;
    s.payload = {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()};
    return build_tcp_frame(s);
  }

  // Opens a flow and sends the startup message plus `sql`; returns the next client sequence
  // number and whether the statement's segment was forwarded.
  uint32_t open_and_query(uint16_t sport, const std::string& sql, bool* forwarded) {
    inject(agent_, tcp(sport, true, 1000, 0, kTcpSyn));
    inject(db_, tcp(sport, false, 5000, 1001, kTcpSyn | kTcpAck));
    inject(agent_, tcp(sport, true, 1001, 5001, kTcpAck));
    (void)sent_flags(agent_);
    (void)sent_flags(db_);
    std::string data = startup_message() + query(sql);
    inject(agent_, tcp(sport, true, 1001, 5001, kTcpAck, data));
    std::vector<uint8_t> to_db = sent_flags(db_);
    *forwarded = to_db.size() == 1 && !(to_db[0] & kTcpRst);
    return 1001 + static_cast<uint32_t>(data.size());
  }

  // Sends `sql` on an open flow; true if forwarded, false if reset.
  bool next_query(uint16_t sport, uint32_t* seq, const std::string& sql) {
    std::string q = query(sql);
    inject(agent_, tcp(sport, true, *seq, 5001, kTcpAck, q));
    *seq += static_cast<uint32_t>(q.size());
    std::vector<uint8_t> to_db = sent_flags(db_);
    return to_db.size() == 1 && !(to_db[0] & kTcpRst);
  }

  // What the main lcore's control tick does in pgwarden-dp, then waits until the forwarder
  // delivered the snapshot.
  void control_tick() {
    layer_->reclaim_rules();
    for (const AuditEvent& ev : layer_->drain_audit()) ops_->on_audit(ev);
    uint64_t before = ops_->forwarder().stats().stats_sent;
    ops_->on_stats(layer_->stats());
    ops_->forwarder().flush();
    for (int i = 0; i < 500 && ops_->forwarder().stats().stats_sent <= before; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_GT(ops_->forwarder().stats().stats_sent, before) << "snapshot never reached cp";
  }

  static CtlResult ctl(std::vector<std::string> args) {
    args.insert(args.begin(), "dataplane");
    return testing::run_ctl({dir_ + "/admin.sock", "alice", dir_ + "/alice.cred"}, args, dir_);
  }

  // This test's dataplane entry from `pgwardenctl dataplane --json`.
  json dataplane() {
    CtlResult r = ctl({"--json"});
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    json all = json::parse(r.out, nullptr, false);
    EXPECT_TRUE(all.is_object()) << r.out;
    if (!all.is_object()) return json::object();
    for (const json& d : all["dataplanes"]) {
      if (d["name"] == dp_name_) return d;
    }
    ADD_FAILURE() << "no dataplane " << dp_name_ << " in " << r.out;
    return json::object();
  }

  static uint64_t lcore_counter(const json& d, const char* name) {
    return d["snapshot"]["lcores"][0]["counters"][name].get<uint64_t>();
  }

  void wait_reloads(uint64_t n) {
    for (int i = 0; i < 1000 && ops_->reloader()->reload_count() < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_EQ(ops_->reloader()->reload_count(), n);
    layer_->poll_once(0);  // the worker picks the new generation up between bursts
  }

  static rte_mempool* pool_;
  static std::string dir_;
  static CpProcess* cp_;
  std::string rule_file_;
  std::string dp_name_;
  std::vector<Ring> rings_;
  Ring agent_, db_;
  std::unique_ptr<PacketLayer> layer_;
  std::unique_ptr<PacketOps> ops_;
};

rte_mempool* PacketOpsTest::pool_ = nullptr;
std::string PacketOpsTest::dir_;
CpProcess* PacketOpsTest::cp_ = nullptr;

TEST_F(PacketOpsTest, DataplaneCommandShowsPortsLinkStateAndLcoreCountersFollowingTraffic) {
  control_tick();
  json before = dataplane();
  ASSERT_TRUE(before.contains("snapshot"));
  EXPECT_EQ(before["connected"], true);
  EXPECT_EQ(before["stale"], false);
  const json& ports = before["snapshot"]["ports"];
  ASSERT_EQ(ports.size(), 2u);
  EXPECT_EQ(ports[0]["role"], "agent");
  EXPECT_EQ(ports[0]["name"], agent_.name);
  EXPECT_EQ(ports[0]["link_up"], true);
  EXPECT_EQ(ports[1]["role"], "database");
  EXPECT_EQ(before["snapshot"]["dp"]["mode"], "dpdk");
  EXPECT_EQ(before["snapshot"]["rules"]["generation"], 1);
  EXPECT_EQ(before["snapshot"]["lcores"][0]["flow_capacity"], 16);
  uint64_t rx0 = lcore_counter(before, "rx_packets");
  uint64_t port_rx0 = ports[0]["rx_packets"].get<uint64_t>();

  bool forwarded = false;
  (void)open_and_query(41000, "SELECT 1", &forwarded);
  EXPECT_TRUE(forwarded);
  control_tick();
  json after = dataplane();
  // SYN, ACK and the data segment from the agent, SYN|ACK from the database.
  EXPECT_EQ(lcore_counter(after, "rx_packets"), rx0 + 4);
  EXPECT_EQ(lcore_counter(after, "flows_created"), lcore_counter(before, "flows_created") + 1);
  EXPECT_EQ(lcore_counter(after, "prescreen_messages"),
            lcore_counter(before, "prescreen_messages") + 2);
  EXPECT_EQ(after["snapshot"]["ports"][0]["rx_packets"].get<uint64_t>(), port_rx0 + 3);
  EXPECT_EQ(after["snapshot"]["lcores"][0]["flows_active"], 1);
  EXPECT_EQ(after["snapshot"]["flows"]["active"], 1);
  EXPECT_GT(after["received_unix_ms"].get<int64_t>(), 0);

  CtlResult human = ctl({});
  ASSERT_EQ(human.code, 0) << human.err;
  EXPECT_NE(human.out.find("dataplane " + dp_name_), std::string::npos) << human.out;
  EXPECT_NE(human.out.find(agent_.name), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("PORT"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("LCORE"), std::string::npos) << human.out;
  // One worker: nothing to spread, the steering columns are there and stay zero.
  EXPECT_NE(human.out.find("spread: single_worker"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("STEER_IN"), std::string::npos) << human.out;

  // The optional stats file carries the same snapshot.
  json file = json::parse(slurp(dir_ + "/stats.json"), nullptr, false);
  ASSERT_TRUE(file.is_object());
  EXPECT_EQ(file["lcores"][0]["counters"]["rx_packets"], lcore_counter(after, "rx_packets"));

  // The dataplane goes away: cp keeps its last snapshot, marked stale.
  ops_.reset();
  json gone;
  for (int i = 0; i < 200; ++i) {
    gone = dataplane();
    if (gone.value("connected", true) == false) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(gone["connected"], false);
  EXPECT_EQ(gone["stale"], true);
  EXPECT_EQ(lcore_counter(gone, "rx_packets"), rx0 + 4);
}

TEST_F(PacketOpsTest, SighupWithAnAddedRuleDeniesAStatementAllowedBeforeAndBrokenFileKeepsIt) {
  bool forwarded = false;
  uint32_t seq = open_and_query(42000, "SELECT v FROM kv", &forwarded);
  ASSERT_TRUE(forwarded) << "the shipped deny set must allow this statement";

  std::ofstream(rule_file_, std::ios::app) << kKvRule;
  ASSERT_EQ(::kill(::getpid(), SIGHUP), 0);
  wait_reloads(1);
  EXPECT_FALSE(next_query(42000, &seq, "SELECT v FROM kv")) << "same statement, new rules";
  control_tick();
  json d = dataplane();
  const json& rules = d["snapshot"]["rules"];
  EXPECT_EQ(rules["generation"], 2);
  EXPECT_EQ(rules["reloads_ok"], 1);
  EXPECT_EQ(rules["reloads_failed"], 0);
  EXPECT_EQ(d["snapshot"]["lcores"][0]["rules_generation"], 2);
  EXPECT_EQ(rules["retired_generations"], 0);  // generation 1 freed once the lcore moved on
  std::string version = rules["version"];

  // A broken file: the running generation stays and the failure is visible.
  std::ofstream(rule_file_, std::ios::app)
      << "\n[deny.broken]\naction = deny\nview = code\npattern = (unclosed\n"
         "message = x\nseverity = high\n";
  ASSERT_EQ(::kill(::getpid(), SIGHUP), 0);
  wait_reloads(2);
  bool allowed_before = false;
  uint32_t seq2 = open_and_query(42001, "SELECT 1", &allowed_before);
  EXPECT_TRUE(allowed_before);
  EXPECT_FALSE(next_query(42001, &seq2, "SELECT v FROM kv")) << "the kv rule must still apply";
  control_tick();
  d = dataplane();
  const json& kept = d["snapshot"]["rules"];
  EXPECT_EQ(kept["generation"], 2);
  EXPECT_EQ(kept["version"], version);
  EXPECT_EQ(kept["reloads_ok"], 1);
  EXPECT_EQ(kept["reloads_failed"], 1);
  EXPECT_NE(kept["last_error"].get<std::string>().find("wire.rules"), std::string::npos)
      << kept.dump();
  EXPECT_EQ(lcore_counter(d, "prescreen_denied"), 2u);

  // Both reloads and both wire denies reached cp's audit log.
  std::string audit;
  for (int i = 0; i < 200; ++i) {
    audit = slurp(dir_ + "/state/audit.log");
    if (audit.find("\"rejected\"") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(audit.find("wire_rules_reload"), std::string::npos) << audit;
  EXPECT_NE(audit.find("running rules stay"), std::string::npos) << audit;
  EXPECT_NE(audit.find("deny:deny.kv"), std::string::npos) << audit;
}

TEST_F(PacketOpsTest, RealDpdkBinaryReportsNullPortsAndRejectsABrokenReload) {
  const char* dp = std::getenv("PGW_DP_BIN");
  ASSERT_NE(dp, nullptr) << "PGW_DP_BIN not set";
  // The in-process layer of this fixture is not needed; the binary runs its own EAL.
  std::string ready = dir_ + "/dp.ready", name = "bin-" + std::to_string(::getpid());
  pid_t pid = fork();
  if (pid == 0) {
    int fd = ::open((dir_ + "/dp.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    std::string eal =
        "-l 0 --no-huge -m 256 --no-pci --no-shconf --no-telemetry "
        "--file-prefix=pgwbin" +
        std::to_string(::getpid()) + " --vdev=net_null0 --vdev=net_null1";
    execl(dp, "pgwarden-dp", "--dpdk", eal.c_str(), "--agent-port", "net_null0", "--db-port",
          "net_null1", "--rule-file", rule_file_.c_str(), "--cp-socket",
          (dir_ + "/cp.sock").c_str(), "--name", name.c_str(), "--stats-interval-ms", "200",
          "--idle-sleep-us", "1000", "--ready-file", ready.c_str(), nullptr);
    _exit(127);
  }
  auto find = [&]() -> json {
    CtlResult r = ctl({"--json"});
    json all = json::parse(r.out, nullptr, false);
    if (all.is_object()) {
      for (const json& d : all["dataplanes"]) {
        if (d["name"] == name) return d;
      }
    }
    return json();
  };
  json d;
  for (int i = 0; i < 300 && (d.is_null() || lcore_counter(d, "rx_packets") == 0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    d = find();
  }
  ASSERT_FALSE(d.is_null()) << slurp(dir_ + "/dp.log");
  EXPECT_EQ(d["snapshot"]["interval_ms"], 200);
  EXPECT_EQ(d["snapshot"]["ports"][0]["name"], "net_null0");
  EXPECT_EQ(d["snapshot"]["ports"][0]["link_up"], true);
  uint64_t rx = lcore_counter(d, "rx_packets");
  EXPECT_GT(rx, 0u);  // net_null delivers frames on every poll

  std::ofstream(rule_file_, std::ios::trunc) << "[deny.broken]\naction = deny\nview = code\n"
                                                "pattern = (unclosed\nmessage = x\n";
  ASSERT_EQ(::kill(pid, SIGHUP), 0);
  json after;
  for (int i = 0; i < 300; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    after = find();
    if (!after.is_null() && after["snapshot"]["rules"]["reloads_failed"] == 1) break;
  }
  EXPECT_EQ(after["snapshot"]["rules"]["reloads_failed"], 1) << slurp(dir_ + "/dp.log");
  EXPECT_EQ(after["snapshot"]["rules"]["generation"], 1);
  EXPECT_GT(lcore_counter(after, "rx_packets"), rx);

  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  std::error_code ec;
  std::filesystem::remove_all("/var/run/dpdk/pgwbin" + std::to_string(pid), ec);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << slurp(dir_ + "/dp.log");
  EXPECT_NE(slurp(dir_ + "/dp.log").find("rule reload rejected"), std::string::npos);
}

// GET /metrics from 127.0.0.1:port (HTTP/1.0); "" when nobody answers yet.
std::string scrape_metrics(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  std::string req = "GET /metrics HTTP/1.0\r\n\r\n";
  (void)!::write(fd, req.data(), req.size());
  std::string out;
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

// The value of the first sample line starting with `series` (-1 when absent).
double sample(const std::string& text, const std::string& series) {
  size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::strtod(text.c_str() + at + series.size() + 2, nullptr);
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  (void)::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST_F(PacketOpsTest, RealDpdkBinaryServesPacketMetricsThatFollowTraffic) {
  const char* dp = std::getenv("PGW_DP_BIN");
  ASSERT_NE(dp, nullptr) << "PGW_DP_BIN not set";
  int port = free_port();
  std::string listen = "127.0.0.1:" + std::to_string(port);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = ::open((dir_ + "/dp-metrics.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    std::string eal =
        "-l 0 --no-huge -m 256 --no-pci --no-shconf --no-telemetry "
        "--file-prefix=pgwmet" +
        std::to_string(::getpid()) + " --vdev=net_null0 --vdev=net_null1";
    // --metrics-listen before --dpdk's own flags: main.cc hands it to the packet layer.
    execl(dp, "pgwarden-dp", "--dpdk", eal.c_str(), "--metrics-listen", listen.c_str(),
          "--agent-port", "net_null0", "--db-port", "net_null1", "--rule-file", rule_file_.c_str(),
          "--audit-log", (dir_ + "/dp-metrics-audit.jsonl").c_str(), "--stats-interval-ms", "200",
          "--idle-sleep-us", "1000", nullptr);
    _exit(127);
  }
  // Wait for a snapshot with traffic (net_null delivers frames on every poll), then for a
  // later one that moved.
  std::string first;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline &&
         sample(first = scrape_metrics(port), "pgwarden_packet_rx_packets_total") <= 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  double rx = sample(first, "pgwarden_packet_rx_packets_total");
  EXPECT_GT(rx, 0) << first << slurp(dir_ + "/dp-metrics.log");
  EXPECT_EQ(sample(first, "pgwarden_packet_port_link_up{port=\"agent\"}"), 1) << first;
  EXPECT_GE(sample(first, "pgwarden_packet_port_rx_packets_total{port=\"agent\"}"), 0) << first;
  EXPECT_GE(sample(first, "pgwarden_packet_prescreen_denied_total"), 0) << first;
  EXPECT_GE(sample(first, "pgwarden_packet_tcp_held_out_of_order_total"), 0) << first;
  EXPECT_GE(sample(first, "pgwarden_packet_flows_active"), 0) << first;
  EXPECT_EQ(sample(first, "pgwarden_packet_rules_generation"), 1) << first;
  std::string later;
  while (std::chrono::steady_clock::now() < deadline &&
         sample(later = scrape_metrics(port), "pgwarden_packet_rx_packets_total") <= rx) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GT(sample(later, "pgwarden_packet_rx_packets_total"), rx) << later;

  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  std::error_code ec;
  std::filesystem::remove_all("/var/run/dpdk/pgwmet" + std::to_string(pid), ec);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << slurp(dir_ + "/dp-metrics.log");
}

}  // namespace
}  // namespace pgwarden::packet
