#include "controlplane/server/cp_metrics.h"

#include <chrono>
#include <string>

#include "common/protocol/messages.h"

namespace pgwarden::server {

void collect_cp_metrics(ControlPlane& plane, metrics::Families& f) {
  EscalationServer& server = plane.escalation_server();
#define PGW_X(name)                                                                     \
  f.counter("pgwarden_cp_" #name,                                                       \
            "Control plane counter " #name " (escalation server, docs/monitoring.md).", \
            static_cast<double>(server.counter(Counter::k_##name)));
  PGW_CP_COUNTERS(PGW_X)
#undef PGW_X
  if (const approvals::WebhookNotifier* webhook = plane.webhook()) {
#define PGW_X(name)                                                      \
  f.counter("pgwarden_cp_" #name, "Approval webhook counter " #name ".", \
            static_cast<double>(webhook->name()));
    PGW_WEBHOOK_COUNTERS(PGW_X)
#undef PGW_X
  }
  const auto& audit_pg = plane.audit_pg_sinks();
  for (size_t i = 0; i < audit_pg.size(); ++i) {
    metrics::Labels sink{{"sink", std::to_string(i)}};
#define PGW_X(name)                                                                        \
  f.counter("pgwarden_cp_audit_pg_" #name,                                                 \
            "PostgreSQL audit sink counter " #name " (label sink: its index among them).", \
            static_cast<double>(audit_pg[i]->name()), sink);
    PGW_AUDIT_PG_COUNTERS(PGW_X)
#undef PGW_X
  }
  f.gauge("pgwarden_cp_sessions", "Authenticated sessions the control plane tracks.",
          static_cast<double>(server.session_count()));
  f.histogram("pgwarden_cp_analysis_seconds",
              "Time the statement analyser took per analyse request (parse, policy, effect probe).",
              server.analysis_latency());

  recording::Recorder& recorder = plane.recorder();
#define PGW_X(name)                                                       \
  f.counter("pgwarden_cp_recorder_" #name, "Recorder counter " #name ".", \
            static_cast<double>(recorder.name()));
  PGW_RECORDER_COUNTERS(PGW_X)
#undef PGW_X
  f.gauge("pgwarden_cp_recorder_queue_depth", "Records waiting for the recorder's writer thread.",
          static_cast<double>(recorder.queue_depth()));
  f.histogram("pgwarden_cp_recorder_fsync_seconds", "Latency of the recorder's fdatasync calls.",
              recorder.sync_latency());
  recording::RecorderHealth health = recorder.health();
  f.gauge("pgwarden_cp_recorder_failing",
          "1 while the recorder's last write or sync failed (statements of recording-required "
          "sessions are refused).",
          health.failing ? 1 : 0);
  f.gauge("pgwarden_cp_recorder_gaps_pending",
          "Sessions with refused records not yet recorded in a gap record.",
          static_cast<double>(health.gaps_pending));

  audit::AuditHealth audit = plane.audit().health();
  f.gauge("pgwarden_cp_audit_failing",
          "1 while the audit log's last write failed (statements that would be audited are "
          "refused).",
          audit.failing ? 1 : 0);
  f.counter("pgwarden_cp_audit_lines_lost", "Audit lines that could not be written.",
            static_cast<double>(audit.lines_lost));

  // Approval requests in the journal by state: pending is the backlog; the others only grow
  // while the process runs (the journal is reloaded at start).
  size_t by_state[5] = {0, 0, 0, 0, 0};
  for (const auto& r : plane.approvals().list()) {
    size_t i = static_cast<size_t>(r.state);
    if (i < 5) ++by_state[i];
  }
  f.gauge("pgwarden_cp_approvals_pending", "Approval requests waiting for a reviewer.",
          static_cast<double>(by_state[static_cast<size_t>(approvals::ApprovalState::kPending)]));
  for (auto state : {approvals::ApprovalState::kApproved, approvals::ApprovalState::kDenied,
                     approvals::ApprovalState::kExpired, approvals::ApprovalState::kAbandoned}) {
    f.counter("pgwarden_cp_approvals_resolved_total",
              "Approval requests by final state (approved, denied, expired, abandoned).",
              static_cast<double>(by_state[static_cast<size_t>(state)]),
              {{"state", std::string(approvals::approval_state_name(state))}});
  }

  nlohmann::json dps = server.dataplanes().to_json(protocol::now_unix_ms());
  size_t connected = 0, stale = 0;
  for (const auto& d : dps.value("dataplanes", nlohmann::json::array())) {
    if (d.value("connected", false)) ++connected;
    if (d.value("stale", true)) ++stale;
  }
  f.gauge("pgwarden_cp_dataplanes", "Dataplanes known to the control plane, by state.",
          static_cast<double>(connected), {{"state", "connected"}});
  f.gauge("pgwarden_cp_dataplanes", "Dataplanes known to the control plane, by state.",
          static_cast<double>(stale), {{"state", "stale"}});
  f.gauge("pgwarden_cp_rules_generation", "The rules generation the control plane pushes.",
          static_cast<double>(server.rules_status().value("generation", uint64_t{0})));
  auto cfg = plane.config_store().current();
  f.gauge("pgwarden_cp_policy_version", "The running configuration's policy version.",
          cfg ? static_cast<double>(cfg->version) : 0);
}

}  // namespace pgwarden::server
