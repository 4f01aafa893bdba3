#include "dataplane/packet/packet_ops.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "common/protocol/messages.h"

namespace pgwarden::packet {
namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "pgwarden-dp";
  return buf;
}

}  // namespace

PacketOps::PacketOps(PacketOpsOptions options) : options_(std::move(options)) {
  if (options_.dp_name.empty()) options_.dp_name = host_name();
  started_unix_ms_ = protocol::now_unix_ms();
}

PacketOps::~PacketOps() { detach(); }

Result<std::unique_ptr<PacketOps>> PacketOps::start(PacketOpsOptions options) {
  std::unique_ptr<PacketOps> ops(new PacketOps(std::move(options)));
  Result<std::unique_ptr<AuditForwarder>> f = AuditForwarder::start(ops->options_.audit);
  if (!f) return f.status();
  ops->forwarder_ = std::move(*f);
  return ops;
}

Status PacketOps::attach(PacketLayer& layer) {
  detach();
  std::string version = layer.stats().rules_version;
  Result<std::unique_ptr<RuleReloader>> r = RuleReloader::start(
      options_.rule_files, version,
      [&layer](std::shared_ptr<const rules::CompiledRuleSet> set) {
        return layer.publish_rules(std::move(set));
      },
      [this](nlohmann::json event) { forwarder_->submit(std::move(event)); });
  if (!r) return r.status();
  PGW_RETURN_IF_ERROR((*r)->install_sighup());
  reloader_ = std::move(*r);
  return Status::ok();
}

void PacketOps::detach() { reloader_.reset(); }

void PacketOps::on_audit(const AuditEvent& event) { forwarder_->submit(event.to_json()); }

nlohmann::json PacketOps::snapshot(const PacketLayerStats& stats) const {
  nlohmann::json j = nlohmann::json::parse(stats.to_json());
  uint64_t flows = 0, capacity = 0;
  for (const LcoreStats& l : stats.lcores) {
    flows += l.flows_active;
    capacity += l.flow_capacity;
  }
  j["type"] = "event";
  j["kind"] = "dataplane_stats";
  j["dp"] = {{"name", options_.dp_name},
             {"mode", "dpdk"},
             {"pid", static_cast<int64_t>(::getpid())},
             {"started_unix_ms", started_unix_ms_}};
  j["interval_ms"] = options_.interval_ms;
  j["unix_ms"] = protocol::now_unix_ms();
  j["flows"] = {{"active", flows}, {"capacity", capacity}};
  RuleReloadStats reload = reloader_ ? reloader_->stats() : RuleReloadStats{};
  j["rules"].update(reload.to_json());
  j["rules"]["rule_files"] = options_.rule_files;
  j["audit"] = forwarder_->stats().to_json();
  return j;
}

void PacketOps::on_stats(const PacketLayerStats& stats) {
  last_stats_ = stats;
  have_stats_ = true;
  nlohmann::json j = snapshot(stats);
  write_stats_file(j);
  forwarder_->publish_stats(std::move(j));
}

void PacketOps::finish() {
  forwarder_->flush();
  if (have_stats_) write_stats_file(snapshot(last_stats_));
}

void PacketOps::write_stats_file(const nlohmann::json& snapshot) const {
  if (options_.stats_file.empty()) return;
  std::string tmp = options_.stats_file + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << snapshot.dump() << "\n";
  }
  std::rename(tmp.c_str(), options_.stats_file.c_str());
}

}  // namespace pgwarden::packet
