#include "controlplane/server/control_plane.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>

#include "common/protocol/messages.h"
#include "controlplane/recording/recording_file.h"
#include "controlplane/server/effect_probe.h"
#include "controlplane/server/policy_analyser.h"
#include "controlplane/state/pg_state_store.h"
#include "controlplane/vault/secret.h"

namespace pgwarden::server {

namespace {

// The Recorder's audit JSON ({"event", "session_id"?, "message", ...}) as an audit record; write
// failures and recoveries are also logged.
audit::AuditRecord recorder_audit_record(const nlohmann::json& j) {
  audit::AuditRecord r;
  r.event = j.value("event", std::string("recording_write_failed"));
  r.session_id = j.value("session_id", std::string());
  r.reason = j.value("message", std::string());
  if (r.event == "recording_write_failed") {
    r.decision = "failed";
    spdlog::error("recording: {} (statements that need recording are refused)", r.reason);
  } else if (r.event == "recording_write_resumed") {
    r.decision = "resumed";
    spdlog::warn("recording: {}", r.reason);
  } else if (r.event == "recording_damaged") {
    r.decision = "damaged";
    spdlog::error("recording: {}", r.reason);
  } else if (r.event == "recording_gap") {
    r.decision = "gap";
    spdlog::warn("session {}: recording gap recorded: {}", r.session_id, r.reason);
  } else {
    r.decision = "written";
  }
  for (const auto& [k, v] : j.items()) {
    if (k != "event" && k != "session_id" && k != "message" && k != "ts") r.extra[k] = v;
  }
  return r;
}

// The ApprovalStore's audit JSON ({"event", "ts", "approval": {...}}) as an audit record.
audit::AuditRecord approval_audit_record(const nlohmann::json& j) {
  audit::AuditRecord r;
  r.event = j.value("event", std::string("approval"));
  const nlohmann::json a = j.contains("approval") && j["approval"].is_object()
                               ? j["approval"]
                               : nlohmann::json::object();
  auto s = [&](const char* key) {
    return a.contains(key) && a[key].is_string() ? a[key].get<std::string>() : std::string();
  };
  r.session_id = s("session_id");
  r.identity = s("identity");
  if (a.contains("groups") && a["groups"].is_array()) {
    for (const auto& g : a["groups"]) {
      if (g.is_string()) r.groups.push_back(g.get<std::string>());
    }
  }
  r.target = s("target");
  r.decision = s("state");
  r.rule = s("rule");
  r.reason = s("decision_reason").empty() ? s("request_reason") : s("decision_reason");
  r.sql = s("sql");
  r.extra["approval_id"] = s("id");
  r.extra["shape_key"] = s("shape_key");
  for (const char* key : {"decider", "scope", "deadline_ms", "grant_expires_ms",
                          "required_approvals", "break_glass", "via"}) {
    if (a.contains(key)) r.extra[key] = a[key];
  }
  if (a.contains("votes") && a["votes"].is_array() && !a["votes"].empty()) {
    r.extra["votes"] = a["votes"];
  }
  // Per-event keys: a vote's or a break-glass decision's decider and reason, severity, page.
  for (const auto& [k, v] : j.items()) {
    if (k == "event" || k == "ts" || k == "approval") continue;
    if (k == "reason" && v.is_string()) {
      r.reason = v.get<std::string>();
      continue;
    }
    r.extra[k] = v;
  }
  return r;
}

// Identities linked to `who` by $.approvals.identity_links (the current config), without `who`.
std::vector<std::string> linked_identities(const config::Config& cfg, const std::string& who) {
  std::vector<std::string> out;
  for (const config::ApprovalsSettings::IdentityLink& link : cfg.approvals.identity_links) {
    std::vector<std::string> all = link.identities;
    all.push_back(link.person);
    if (std::find(all.begin(), all.end(), who) == all.end()) continue;
    for (auto& id : all) {
      if (id != who) out.push_back(std::move(id));
    }
  }
  return out;
}

// The page a break-glass approval sends to the approvals webhook right away.
nlohmann::json break_glass_page(const nlohmann::json& j) {
  const nlohmann::json& a = j["approval"];
  return nlohmann::json{{"event", "approval_break_glass"},
                        {"severity", "critical"},
                        {"id", a.value("id", std::string())},
                        {"identity", a.value("identity", std::string())},
                        {"target", a.value("target", std::string())},
                        {"sql", a.value("sql", std::string())},
                        {"decider", j.value("decider", std::string())},
                        {"reason", j.value("reason", std::string())},
                        {"ts", j.value("ts", int64_t{0})}};
}

}  // namespace

Result<std::unique_ptr<ControlPlane>> ControlPlane::open(std::unique_ptr<config::ConfigStore> store,
                                                         std::string rules_dir) {
  std::unique_ptr<ControlPlane> cp(new ControlPlane());
  cp->store_ = std::move(store);
  auto cfg = cp->store_->current();
  if (!cfg) return failed_precondition("no configuration loaded");
  const std::string& state_dir = cfg->control_plane.state_dir;
  if (::mkdir(state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return unavailable("cannot create state_dir " + state_dir + ": " + std::strerror(errno), "");
  }

  // The state store first: the approvals, revocations and audit stream below write to it.
  const config::StateStoreSettings& ss = cfg->control_plane.state_store;
  std::string state_conninfo;
  if (ss.kind == config::StateStoreSettings::Kind::kPostgres) {
    auto ci = vault::read_secret({vault::SecretSource::Kind::kFile, ss.dsn_file});
    if (!ci.is_ok()) return ci.status();
    state_conninfo = std::string(ci->view());
    if (!ss.node_key_file.empty()) {
      auto key = fleet::NodeKey::load(ss.node_key_file);
      if (!key.is_ok()) return key.status();
      cp->node_key_ = std::make_shared<const fleet::NodeKey>(std::move(*key));
    }
    // Copies of other nodes' recordings a command of a previous process did not get to remove.
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(state_dir, ec)) {
      if (e.path().filename().string().starts_with("fetched-recording-")) {
        std::filesystem::remove_all(e.path(), ec);
      }
    }
    auto pg = state::PgStateStore::open({.conninfo = state_conninfo,
                                         .node_id = ss.node_id,
                                         .admin_socket = cfg->control_plane.admin_socket,
                                         .admin_url = ss.admin_url,
                                         .connect_timeout_ms = ss.connect_timeout_ms});
    if (!pg.is_ok()) return pg.status();
    cp->state_ = std::move(pg).value();
    spdlog::info("state store: postgres (node {}, schema version {})", ss.node_id,
                 state::kStateSchemaVersion);
  } else {
    cp->state_ = std::make_unique<state::FileStateStore>();
  }
  state::StateStore* shared = cp->state_->shared() ? cp->state_.get() : nullptr;

  auto audit = audit::AuditLog::open(cfg->audit_sinks);
  if (!audit.is_ok()) return audit.status();
  cp->audit_ = std::move(audit).value();
  // Once per outage (docs/recording.md, "Audit log write errors"): the file and the error,
  // never a line's content.
  cp->audit_->set_on_failure([](const Status& why) {
    spdlog::error("cp.audit_failed sqlstate={} {}", why.sqlstate(), why.message());
  });
  for (size_t i = 0; i < cfg->audit_sinks.size(); ++i) {
    const config::AuditSink& sink = cfg->audit_sinks[i];
    if (sink.kind != config::AuditSink::Kind::kPostgres) continue;
    audit_pg::AuditPgOptions po;
    if (!sink.conninfo_file.empty()) {
      auto ci = vault::read_secret({vault::SecretSource::Kind::kFile, sink.conninfo_file});
      if (!ci.is_ok()) return ci.status();
      po.conninfo = std::string(ci->view());
    } else {
      const config::Target* t = cfg->find_target(sink.target);
      if (t == nullptr) return invalid_argument("audit sink target " + sink.target + " unknown");
      auto pw = vault::read_secret(t->credential);
      if (!pw.is_ok()) return pw.status();
      po.conninfo = metadata_conninfo(*t, pw->view());
    }
    po.spill_path = state_dir + "/audit-pg-spill-" + std::to_string(i) + ".jsonl";
    po.table = sink.table;
    auto pg = audit_pg::AuditPgSink::start(std::move(po));
    if (!pg.is_ok()) return pg.status();
    cp->audit_pg_.push_back(std::move(pg).value());
  }
  if (shared != nullptr) {
    // The audit stream of every node, appended to the shared store (spilled during outages).
    audit_pg::AuditPgOptions po{.conninfo = state_conninfo,
                                .spill_path = state_dir + "/audit-state-store-spill.jsonl"};
    auto pg = audit_pg::AuditPgSink::start(std::move(po));
    if (!pg.is_ok()) return pg.status();
    cp->audit_pg_.push_back(std::move(pg).value());
  }
  if (!cp->audit_pg_.empty()) {
    std::vector<audit_pg::AuditPgSink*> sinks;
    for (auto& p : cp->audit_pg_) sinks.push_back(p.get());
    cp->audit_->set_forwarder([sinks](const nlohmann::json& line) {
      for (auto* sink : sinks) (void)sink->submit(line);
    });
  }

  cp->identity_ = std::make_shared<IdentityAuthenticator>();
  auto validator = cp->identity_->validator_for(*cfg);
  if (!validator.is_ok()) return validator.status();

  audit::AuditLog* audit_log = cp->audit_.get();
  if (!cfg->approvals.webhook_url.empty()) {
    const config::ApprovalsSettings& a = cfg->approvals;
    approvals::WebhookOptions wo{.url = a.webhook_url,
                                 .timeout_ms = a.webhook_timeout_ms,
                                 .connect_timeout_ms = a.webhook_connect_timeout_ms,
                                 .ca_file = a.webhook_ca_file,
                                 .authorization = a.webhook_authorization};
    // Off the decision path (the notifier's own thread): logged and audited, never retried.
    wo.on_failure = [audit_log](std::string_view approval_id, const Status& error) {
      spdlog::warn("approval webhook failed for request {}: {}", approval_id, error.message());
      audit::AuditRecord r{.event = "approval_webhook_failed", .decision = "failed"};
      r.reason = error.message();
      r.extra["approval_id"] = std::string(approval_id);
      audit_log->record(r);
    };
    wo.on_delivered = [audit_log](std::string_view approval_id) {
      audit::AuditRecord r{.event = "approval_webhook_sent", .decision = "sent"};
      r.extra["approval_id"] = std::string(approval_id);
      audit_log->record(r);
    };
    auto webhook = approvals::WebhookNotifier::create(std::move(wo));
    if (!webhook.is_ok()) return webhook.status();
    cp->webhook_ = std::move(webhook).value();
  }
  if (cfg->approvals.chat) {
    const config::ApprovalsSettings::Chat& chat = *cfg->approvals.chat;
    approvals::WebhookOptions wo{.url = chat.webhook_url,
                                 .timeout_ms = cfg->approvals.webhook_timeout_ms,
                                 .connect_timeout_ms = cfg->approvals.webhook_connect_timeout_ms,
                                 .ca_file = chat.webhook_ca_file};
    wo.on_failure = [audit_log](std::string_view approval_id, const Status& error) {
      spdlog::warn("approval chat webhook failed: {}", error.message());
      audit::AuditRecord r{.event = "approval_chat_webhook_failed", .decision = "failed"};
      r.reason = error.message();
      if (!approval_id.empty()) r.extra["approval_id"] = std::string(approval_id);
      audit_log->record(r);
    };
    // The reviewers' chat has the message: one step of the request's audit trail.
    wo.on_delivered = [audit_log](std::string_view approval_id) {
      if (approval_id.empty()) return;  // a break-glass page, audited on its own
      audit::AuditRecord r{.event = "approval_chat_sent", .decision = "sent"};
      r.extra["approval_id"] = std::string(approval_id);
      audit_log->record(r);
    };
    auto chat_webhook = approvals::WebhookNotifier::create(std::move(wo));
    if (!chat_webhook.is_ok()) return chat_webhook.status();
    cp->chat_webhook_ = std::move(chat_webhook).value();
  }
  approvals::ApprovalStoreOptions ao;
  ao.state_dir = state_dir;
  approvals::WebhookNotifier* webhook = cp->webhook_.get();
  approvals::WebhookNotifier* chat_webhook = cp->chat_webhook_.get();
  config::ConfigStore* config_store = cp->store_.get();
  ao.audit = [audit_log, webhook, chat_webhook](const nlohmann::json& j) {
    audit_log->record(approval_audit_record(j));
    if (j.value("event", std::string()) != "approval_break_glass") return;
    // A page: the record above is already flushed to every audit sink; the webhooks carry it
    // at once too (their own threads; never on the decision path).
    spdlog::warn("break-glass approval of request {} by {}: {}",
                 j["approval"].value("id", std::string()), j.value("decider", std::string()),
                 j.value("reason", std::string()));
    if (webhook != nullptr) webhook->enqueue(break_glass_page(j));
    if (chat_webhook != nullptr) {
      nlohmann::json page = break_glass_page(j);
      chat_webhook->enqueue(nlohmann::json{
          {"text", ":rotating_light: BREAK-GLASS approval of " + page["id"].get<std::string>() +
                       " (" + page["identity"].get<std::string>() + " on " +
                       page["target"].get<std::string>() + ") by " +
                       page["decider"].get<std::string>() + ": " +
                       page["reason"].get<std::string>()}});
    }
  };
  ao.linked_identities = [config_store](const std::string& who) {
    auto current = config_store->current();
    return current ? linked_identities(*current, who) : std::vector<std::string>{};
  };
  if (webhook != nullptr || chat_webhook != nullptr) {
    ao.on_created = [webhook, chat_webhook, config_store](const approvals::ApprovalRequest& r) {
      if (webhook != nullptr) webhook->enqueue(approvals::webhook_body(r));
      if (chat_webhook != nullptr) {
        auto current = config_store->current();
        chat_webhook->enqueue(approvals::chat_message(r, approvals::approval_console_url(
                                                             current->console_public_url(), r.id)),
                              r.id);
      }
    };
  }
  if (shared != nullptr) {
    ao.replicate = [shared](const approvals::ApprovalRequest& r, bool created) {
      return shared->put_approval(r.to_json(), created);
    };
    ao.refresh =
        [shared](const std::string& id) -> Result<std::optional<approvals::ApprovalRequest>> {
      auto j = shared->get_approval(id);
      if (!j.is_ok()) return j.status();
      if (!j->has_value()) return std::optional<approvals::ApprovalRequest>();
      auto r = approvals::ApprovalRequest::from_json(**j);
      if (!r.is_ok()) return r.status();
      return std::optional<approvals::ApprovalRequest>(std::move(*r));
    };
  }
  auto store_result = approvals::ApprovalStore::open(std::move(ao));
  if (!store_result.is_ok()) return store_result.status();
  cp->approvals_ = std::move(store_result).value();
  if (cfg->approvals.chat) {
    const config::ApprovalsSettings::Chat& chat = *cfg->approvals.chat;
    if (!chat.signing_secret) return invalid_argument("approvals.chat needs a signing secret");
    auto secret = vault::read_secret(*chat.signing_secret);
    if (!secret.is_ok()) return secret.status();
    approvals::ChatCallbackOptions co;
    co.signing_secret = std::move(secret).value();
    co.window_s = chat.timestamp_window_s;
    for (const auto& [uid, u] : chat.users) co.users[uid] = {u.identity, u.groups};
    co.store = cp->approvals_.get();
    co.console_base_url = cfg->console_public_url();
    co.audit = [audit_log](const nlohmann::json& j) {
      audit::AuditRecord r{.event = "chat_callback"};
      r.decision = j.value("decision", std::string());
      r.reason = j.value("reason", std::string());
      r.identity = j.value("identity", std::string());
      for (const auto& [k, v] : j.items()) {
        if (k != "event" && k != "decision" && k != "reason" && k != "identity") r.extra[k] = v;
      }
      audit_log->record(r);
    };
    auto callback = approvals::ChatCallback::create(std::move(co));
    if (!callback.is_ok()) return callback.status();
    cp->chat_callback_ = std::move(callback).value();
  }

  recording::RecorderOptions ro;
  ro.dir = state_dir + "/recordings";
  ro.queue_capacity = static_cast<size_t>(cfg->recording.queue_capacity);
  ro.sync_mode =
      cfg->recording.sync_always ? recording::SyncMode::kAlways : recording::SyncMode::kInterval;
  ro.sync_interval = std::chrono::milliseconds(cfg->recording.sync_interval_ms);
  ro.checkpoint_interval = std::chrono::milliseconds(cfg->recording.checkpoint_interval_ms);
  ro.checkpoint_path = state_dir + "/recording_checkpoint.json";
  ro.audit = [audit_log](const nlohmann::json& j) { audit_log->record(recorder_audit_record(j)); };
  auto recorder = recording::Recorder::open(std::move(ro));
  if (!recorder.is_ok()) return recorder.status();
  cp->recorder_ = std::move(recorder).value();

  cp->mask_planner_ = std::make_shared<CatalogMaskPlanner>();

  auto revocations = RevocationStore::open(state_dir);
  if (!revocations.is_ok()) return revocations.status();
  cp->revocations_ = std::move(revocations).value();
  if (shared != nullptr) {
    cp->revocations_->set_replica(RevocationReplica{
        .put = [shared](const Revocation& r) { return shared->put_revocation(r.to_json()); },
        .remove =
            [shared](const std::string& name, RevocationKind kind) {
              return shared->remove_revocation(name, std::string(revocation_kind_name(kind)));
            }});
    PGW_RETURN_IF_ERROR(cp->sync_from_state());
  }
  auto tickets = TicketKey::open(state_dir);
  if (!tickets.is_ok()) return tickets.status();
  cp->tickets_ = std::move(tickets).value();
  ControlPlane* plane = cp.get();
  if (shared != nullptr) {
    // Counters of every node in the store. Its change callbacks come after start(): they need
    // usage from sessions (flusher) or the change feed (refresh), both later than server_.
    auto ledger = budgets::SharedBudgetLedger::open(
        {.store = shared,
         .flush_interval_ms = ss.budget_flush_ms,
         .on_remote_change = [plane](const std::string& identity, bool lowered) {
           plane->server_->push_budgets(identity, /*only_exhausted=*/!lowered);
         }});
    if (!ledger.is_ok()) return ledger.status();
    cp->shared_budgets_ = ledger->get();
    cp->budgets_ = std::make_unique<budgets::BudgetBook>(std::move(ledger).value());
  } else {
    auto ledger = budgets::FileBudgetLedger::open(state_dir);
    if (!ledger.is_ok()) return ledger.status();
    cp->budgets_ = std::make_unique<budgets::BudgetBook>(std::move(ledger).value());
  }

  ServerHandlers handlers;
  handlers.authenticator = cp->identity_;
  handlers.analyser = std::make_shared<PolicyAnalyser>(
      std::make_shared<PgEffectProbe>(),
      [planner = cp->mask_planner_](const config::Config& config, const config::Target& target) {
        return planner->lineage_catalog(config, target);
      });
  handlers.mask_planner = cp->mask_planner_;
  handlers.approvals = cp->approvals_.get();
  handlers.recorder = cp->recorder_.get();
  handlers.revocations = cp->revocations_.get();
  handlers.tickets = cp->tickets_.get();
  handlers.budgets = cp->budgets_.get();
  handlers.dataplanes_path = state_dir + "/dataplanes.json";
  handlers.provider_has_key = [plane](const std::string& provider,
                                      const std::string& kid) -> std::optional<bool> {
    auto validator = plane->token_validator();
    if (!validator.is_ok()) return std::nullopt;
    return (*validator)->has_key(provider, kid);
  };
  if (shared != nullptr) {
    std::string recordings_dir = state_dir + "/recordings";
    handlers.on_session = [shared, recordings_dir](const std::string& session_id,
                                                   const std::string& identity,
                                                   const std::string& target, bool started) {
      if (!started) {
        shared->session_ended(session_id);
        shared->recording_indexed({session_id, shared->node_id(),
                                   recordings_dir + "/" + session_id + ".jsonl", "closed"});
        return;
      }
      shared->session_started(
          {session_id, shared->node_id(), identity, target, protocol::now_unix_ms()});
      shared->recording_indexed(
          {session_id, shared->node_id(), recordings_dir + "/" + session_id + ".jsonl", "open"});
    };
  }
  handlers.rules_dir = std::move(rules_dir);
  cp->server_ = std::make_unique<EscalationServer>(*cp->store_, *cp->audit_, std::move(handlers));
  return cp;
}

ControlPlane::~ControlPlane() {
  stop();
  // Members are destroyed in reverse order: the server (no more callbacks) before the
  // planner, recorder, approvals, webhook and audit log it uses.
  server_.reset();
}

Status ControlPlane::sync_from_state() {
  // Approvals decided within the longest standing grant, and every pending one.
  int64_t since = protocol::now_unix_ms() - (8 * 3600 + 600) * int64_t{1000};
  auto list = state_->list_approvals(since);
  if (!list.is_ok()) return list.status();
  for (const nlohmann::json& j : *list) {
    auto r = approvals::ApprovalRequest::from_json(j);
    if (r.is_ok()) PGW_RETURN_IF_ERROR(approvals_->apply_remote(*r));
  }
  auto revs = state_->list_revocations();
  if (!revs.is_ok()) return revs.status();
  std::vector<Revocation> entries;
  for (const nlohmann::json& j : *revs) {
    auto r = Revocation::from_json(j);
    if (r.is_ok()) entries.push_back(std::move(*r));
  }
  return revocations_->apply_remote(std::move(entries));
}

void ControlPlane::apply_state_change(const state::StateChange& change) {
  using Kind = state::StateChange::Kind;
  int64_t lag = change.sent_ms > 0 ? protocol::now_unix_ms() - change.sent_ms : -1;
  Status st = Status::ok();
  if (change.kind == Kind::kApproval) {
    auto j = state_->get_approval(change.key);
    if (!j.is_ok()) {
      st = j.status();
    } else if (j->has_value()) {
      auto r = approvals::ApprovalRequest::from_json(**j);
      st = r.is_ok() ? approvals_->apply_remote(*r) : r.status();
      if (r.is_ok() && r->terminal()) {
        spdlog::info("state store: approval {} {} on another node (propagation {} ms)", r->id,
                     approvals::approval_state_name(r->state), lag);
      }
    }
  } else if (change.kind == Kind::kBudgets) {
    if (shared_budgets_ != nullptr) st = shared_budgets_->refresh(change.identities);
  } else if (change.kind == Kind::kRevocations || change.kind == Kind::kResync) {
    if (change.kind == Kind::kResync) {
      spdlog::info("state store: feed back, re-reading state");
      if (shared_budgets_ != nullptr) {
        if (Status b = shared_budgets_->refresh({}); !b.is_ok()) {
          spdlog::warn("state store: budget counters not re-read: {}", b.message());
        }
      }
    }
    st = change.kind == Kind::kResync ? sync_from_state() : [&]() -> Status {
      auto revs = state_->list_revocations();
      if (!revs.is_ok()) return revs.status();
      std::vector<Revocation> entries;
      for (const nlohmann::json& j : *revs) {
        auto r = Revocation::from_json(j);
        if (r.is_ok()) entries.push_back(std::move(*r));
      }
      return revocations_->apply_remote(std::move(entries));
    }();
    if (st.is_ok()) (void)server_->revalidate_sessions("revoked");
  } else if (change.kind == Kind::kKill) {
    const nlohmann::json& k = change.kill;
    auto get = [](const nlohmann::json& j, const char* key) {
      return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
    };
    const nlohmann::json sel = k.contains("selector") ? k["selector"] : nlohmann::json::object();
    SessionSelector selector{.session_id = get(sel, "session_id"),
                             .subject = get(sel, "identity"),
                             .key_id = get(sel, "key")};
    if (!selector.empty()) {
      auto killed =
          server_->kill_sessions(selector, get(k, "reason"), get(k, "by"), get(k, "cause"));
      if (!killed.empty()) {
        spdlog::info("state store: {} sessions ended on request of node {} (propagation {} ms)",
                     killed.size(), get(k, "node"), lag);
      }
    }
  }
  if (!st.is_ok()) spdlog::warn("state store: change not applied: {}", st.message());
}

Status ControlPlane::start() {
  PGW_RETURN_IF_ERROR(
      state_->start([this](const state::StateChange& c) { apply_state_change(c); }));
  PGW_RETURN_IF_ERROR(server_->start());
  record_rules_generation();
  retention_thread_ = std::thread([this] { retention_loop(); });
  return Status::ok();
}

void ControlPlane::record_rules_generation() {
  if (!state_->shared()) return;
  nlohmann::json r = server_->rules_status();
  uint64_t generation = r.value("generation", uint64_t{0});
  if (generation > 0) state_->rules_loaded(generation, r.value("hash", std::string()));
}

nlohmann::json ControlPlane::fleet_status() {
  if (!state_->shared()) return nullptr;
  auto nodes = state_->list_nodes();
  auto generations = nodes.is_ok()
                         ? state_->list_rule_generations()
                         : Result<std::vector<state::RuleGenerationEntry>>(nodes.status());
  if (!generations.is_ok()) return nlohmann::json{{"error", generations.status().message()}};
  std::string own_hash = server_->rules_status().value("hash", std::string());
  nlohmann::json out = nlohmann::json::array();
  for (const state::NodeEntry& n : *nodes) {
    nlohmann::json e = {{"node_id", n.node_id},
                        {"admin_url", n.admin_url},
                        {"seen_ms", n.seen_ms},
                        {"this_node", n.node_id == state_->node_id()}};
    for (const state::RuleGenerationEntry& g : *generations) {
      if (g.node_id != n.node_id) continue;
      e["rules_generation"] = g.generation;
      e["rules_hash"] = g.digest;
      e["loaded_ms"] = g.loaded_ms;
      e["same_rules"] = !own_hash.empty() && g.digest == own_hash;
    }
    out.push_back(std::move(e));
  }
  return nlohmann::json{{"nodes", std::move(out)}};
}

void ControlPlane::stop() {
  {
    std::lock_guard<std::mutex> lock(retention_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  retention_cv_.notify_all();
  if (retention_thread_.joinable()) retention_thread_.join();
  if (state_) state_->stop();
  if (server_) server_->stop();
  // After the server: the usage of its last statements is written too (and a push of what the
  // store returns finds no session left to tell).
  if (shared_budgets_ != nullptr) shared_budgets_->stop();
  if (recorder_) (void)recorder_->flush();
  for (auto& pg : audit_pg_) (void)pg->flush(std::chrono::seconds(3));
}

config::LoadOutcome ControlPlane::reload() {
  config::LoadOutcome outcome = server_->reload();
  if (outcome.ok()) {
    record_rules_generation();
    (void)identity_->validator_for(*outcome.config);
    // Again with the new config's keys (JWKS files, providers) loaded.
    (void)server_->revalidate_sessions("config_reload");
  }
  return outcome;
}

Result<std::shared_ptr<const identity::TokenValidator>> ControlPlane::token_validator() {
  auto cfg = store_->current();
  return identity_->validator_for(*cfg);
}

Result<std::vector<std::string>> ControlPlane::apply_recording_retention() {
  auto cfg = store_->current();
  recording::RetentionPolicy policy{cfg->recording.retention_max_age_days,
                                    cfg->recording.retention_max_total_bytes};
  if (policy.max_age_days == 0 && policy.max_total_bytes == 0) {
    return std::vector<std::string>{};
  }
  const std::string dir = cfg->control_plane.state_dir + "/recordings";
  std::set<std::string> active;
  auto all = recording::list_recordings(dir);
  if (!all.is_ok()) return all.status();
  for (const auto& r : *all) {
    if (recorder_->session_open(r.session_id)) active.insert(r.session_id);
  }
  auto deleted = recording::apply_retention(dir, policy, protocol::now_unix_ms(), active);
  if (!deleted.is_ok()) return deleted.status();
  if (!deleted->empty()) {
    audit::AuditRecord r{.event = "recording_retention", .decision = "deleted"};
    r.extra["sessions"] = *deleted;
    audit_->record(r);
  }
  return deleted;
}

void ControlPlane::retention_loop() {
  std::unique_lock<std::mutex> lock(retention_mu_);
  while (!stopping_) {
    lock.unlock();
    auto deleted = apply_recording_retention();
    if (!deleted.is_ok()) spdlog::warn("recording retention: {}", deleted.status().message());
    int interval = store_->current()->recording.retention_interval_s;
    lock.lock();
    retention_cv_.wait_for(lock, std::chrono::seconds(interval), [this] { return stopping_; });
  }
}

}  // namespace pgwarden::server
