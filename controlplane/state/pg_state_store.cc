#include "controlplane/state/pg_state_store.h"

#include <libpq-fe.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

namespace pgwarden::state {

namespace {

using json = nlohmann::json;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Migrations, in order: kMigrations[i] takes the schema from version i to i + 1.
constexpr const char* kMigrations[] = {
    // 1: every table of the shared state.
    R"sql(
CREATE TABLE pgwarden_nodes (
  node_id text PRIMARY KEY, admin_socket text NOT NULL, seen_ms bigint NOT NULL);
CREATE TABLE pgwarden_approvals (
  id text PRIMARY KEY, state text NOT NULL, session_id text NOT NULL, identity text NOT NULL,
  node_id text NOT NULL, created_ms bigint NOT NULL, updated_ms bigint NOT NULL,
  snapshot jsonb NOT NULL);
CREATE INDEX pgwarden_approvals_pending ON pgwarden_approvals (state, updated_ms);
CREATE TABLE pgwarden_standing_grants (
  identity text NOT NULL, shape_key text NOT NULL, approval_id text NOT NULL,
  expires_ms bigint NOT NULL, PRIMARY KEY (identity, shape_key, approval_id));
CREATE TABLE pgwarden_revocations (
  name text NOT NULL, kind text NOT NULL, entry jsonb NOT NULL, node_id text NOT NULL,
  PRIMARY KEY (name, kind));
CREATE TABLE pgwarden_killed_sessions (
  id bigserial PRIMARY KEY, selector jsonb NOT NULL, reason text NOT NULL, by text NOT NULL,
  cause text NOT NULL, node_id text NOT NULL, created_ms bigint NOT NULL);
CREATE TABLE pgwarden_sessions (
  session_id text PRIMARY KEY, node_id text NOT NULL, identity text NOT NULL,
  target text NOT NULL, started_ms bigint NOT NULL);
CREATE TABLE pgwarden_recordings (
  session_id text PRIMARY KEY, node_id text NOT NULL, file text NOT NULL,
  state text NOT NULL, updated_ms bigint NOT NULL);
CREATE TABLE pgwarden_rule_generations (
  node_id text NOT NULL, generation bigint NOT NULL, digest text NOT NULL,
  loaded_ms bigint NOT NULL, PRIMARY KEY (node_id, generation));
CREATE TABLE IF NOT EXISTS pgwarden_audit (
  id bigserial PRIMARY KEY, ts timestamptz NOT NULL, event text NOT NULL,
  record jsonb NOT NULL);
)sql",
    // 2: nodes advertise their HTTPS admin API (recordings fetched by other nodes); budget
    // counters shared by the nodes (one row per budget and identity, its current window).
    R"sql(
ALTER TABLE pgwarden_nodes ADD COLUMN admin_url text NOT NULL DEFAULT '';
CREATE TABLE pgwarden_budget_usage (
  budget text NOT NULL, identity text NOT NULL, window_start_ms bigint NOT NULL,
  statements bigint NOT NULL, rows_returned bigint NOT NULL, result_bytes bigint NOT NULL,
  masked_cells bigint NOT NULL, updated_ms bigint NOT NULL, PRIMARY KEY (budget, identity));
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kStateSchemaVersion);

std::string pg_error(PGconn* c) {
  std::string m = c == nullptr ? "no connection" : PQerrorMessage(c);
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

struct ResultCloser {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Res = std::unique_ptr<PGresult, ResultCloser>;

void ignore_notice(void*, const char*) {}

PGconn* connect(const std::string& conninfo, int timeout_ms, std::string* error) {
  std::string timeout = std::to_string(std::max(1, (timeout_ms + 999) / 1000));
  const char* keys[] = {"dbname", "connect_timeout", "application_name", nullptr};
  const char* values[] = {conninfo.c_str(), timeout.c_str(), "pgwarden-cp state store", nullptr};
  PGconn* c = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (c == nullptr || PQstatus(c) != CONNECTION_OK) {
    *error = pg_error(c);
    if (c != nullptr) PQfinish(c);
    return nullptr;
  }
  // Server notices (CREATE ... IF NOT EXISTS) are not for the operator's terminal.
  PQsetNoticeProcessor(c, ignore_notice, nullptr);
  // A decision is reported only once it is durable, whatever the server's default: with
  // synchronous_commit off a store crash right after an approval would forget it.
  Res set(PQexec(c, "SET synchronous_commit = on"));
  if (PQresultStatus(set.get()) != PGRES_COMMAND_OK) {
    *error = pg_error(c);
    PQfinish(c);
    return nullptr;
  }
  return c;
}

std::string str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}
int64_t num(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0;
}

// A PostgreSQL array literal of `items` ({"a","b\\"c"}), for unnest($n::text[]).
std::string pg_array(const std::vector<std::string>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

// Rows of (budget, identity, window_start_ms, statements, rows_returned, result_bytes,
// masked_cells) as counters.
std::vector<BudgetCounter> budget_rows(PGresult* p) {
  std::vector<BudgetCounter> out;
  for (int i = 0; i < PQntuples(p); ++i) {
    BudgetCounter c{PQgetvalue(p, i, 0), PQgetvalue(p, i, 1), std::atoll(PQgetvalue(p, i, 2)), {}};
    for (size_t m = 0; m < c.used.size(); ++m) {
      c.used[m] = std::strtoull(PQgetvalue(p, i, 3 + static_cast<int>(m)), nullptr, 10);
    }
    out.push_back(std::move(c));
  }
  return out;
}

// A queued background write: SQL and its text parameters.
struct Write {
  std::string sql;
  std::vector<std::string> params;
};

}  // namespace

struct PgStateStore::Impl {
  PgStateStoreOptions options;

  std::mutex mu;  // conn
  PGconn* conn = nullptr;
  std::atomic<bool> ok{true};

  std::atomic<bool> stopping{false};
  ChangeHandler handler;
  std::mutex listen_mu;
  std::condition_variable listen_cv;
  bool listening = false;  // the feed's first LISTEN succeeded
  std::thread listener;

  std::mutex queue_mu;
  std::condition_variable queue_cv;
  std::deque<Write> queue;
  bool writing = false;  // the writer holds a write it took from the queue
  std::atomic<uint64_t> dropped{0};
  std::thread writer;
  PGconn* writer_conn = nullptr;

  ~Impl() {
    if (conn != nullptr) PQfinish(conn);
    if (writer_conn != nullptr) PQfinish(writer_conn);
  }

  // The caller's error names the operation only (it may reach an agent); libpq's detail
  // (host, port, reason; never the password) goes to the log when the store goes away.
  Status unavailable_error(const std::string& what, const std::string& detail) {
    if (ok.exchange(false)) spdlog::error("state store unreachable ({}): {}", what, detail);
    return unavailable("state store unavailable (" + what + "); details in the pgwarden-cp log",
                       "57P03");
  }

  // REQUIRES: mu held. Runs one statement on `conn`, connecting first when needed. A statement
  // that fails with a broken connection closes it: unavailable.
  Result<Res> exec(const std::string& what, const std::string& sql,
                   const std::vector<std::string>& params) {
    if (conn == nullptr) {
      std::string error;
      conn = connect(options.conninfo, options.connect_timeout_ms, &error);
      if (conn == nullptr) return unavailable_error(what, error);
    }
    std::vector<const char*> values;
    for (const auto& p : params) values.push_back(p.c_str());
    // Without parameters: the simple protocol (a migration is several statements).
    Res r(params.empty() ? PQexec(conn, sql.c_str())
                         : PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr,
                                        values.data(), nullptr, nullptr, 0));
    ExecStatusType st = PQresultStatus(r.get());
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
      if (!ok.exchange(true)) spdlog::info("state store reachable again ({})", what);
      return r;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
      std::string error = pg_error(conn);
      PQfinish(conn);
      conn = nullptr;
      return unavailable_error(what, error);
    }
    const char* code = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    return internal_error("state store " + what + " failed: " + pg_error(conn) + " (SQLSTATE " +
                          (code != nullptr ? code : "?") + ")");
  }

  // Runs `sql` once; a connection that broke since the last call (store restarted) is
  // reconnected and the statement tried once more.
  Result<Res> run(const std::string& what, const std::string& sql,
                  const std::vector<std::string>& params) {
    std::lock_guard lock(mu);
    bool had_conn = conn != nullptr;
    auto r = exec(what, sql, params);
    if (!r.is_ok() && had_conn && conn == nullptr &&
        r.status().code() == StatusCode::kUnavailable) {
      r = exec(what, sql, params);
    }
    return r;
  }

  std::string payload(const char* kind, const std::string& key, json extra = json::object()) {
    extra["k"] = kind;
    extra["key"] = key;
    extra["node"] = options.node_id;
    extra["ts"] = now_ms();
    return extra.dump();
  }

  Status migrate() {
    std::lock_guard lock(mu);
    auto step = [&](const std::string& sql) -> Status {
      auto r = exec("migration", sql, {});
      return r.is_ok() ? Status::ok() : r.status();
    };
    PGW_RETURN_IF_ERROR(step("BEGIN"));
    Status st = [&]() -> Status {
      PGW_RETURN_IF_ERROR(step("SELECT pg_advisory_xact_lock(7417650291)"));
      PGW_RETURN_IF_ERROR(
          step("CREATE TABLE IF NOT EXISTS pgwarden_schema_version (version int PRIMARY KEY, "
               "applied_ms bigint NOT NULL, applied_by text NOT NULL)"));
      auto v =
          exec("migration", "SELECT coalesce(max(version), 0) FROM pgwarden_schema_version", {});
      if (!v.is_ok()) return v.status();
      int version = std::atoi(PQgetvalue(v->get(), 0, 0));
      if (version > kStateSchemaVersion) {
        return failed_precondition("the state store's schema is version " +
                                   std::to_string(version) + ", newer than this pgwarden-cp (" +
                                   std::to_string(kStateSchemaVersion) +
                                   "): upgrade pgwarden-cp before pointing it at this store");
      }
      for (int next = version + 1; next <= kStateSchemaVersion; ++next) {
        PGW_RETURN_IF_ERROR(step(kMigrations[next - 1]));
        auto ins = exec("migration",
                        "INSERT INTO pgwarden_schema_version VALUES ($1::int, $2::bigint, $3)",
                        {std::to_string(next), std::to_string(now_ms()), options.node_id});
        if (!ins.is_ok()) return ins.status();
      }
      return Status::ok();
    }();
    if (!st.is_ok()) {
      if (conn != nullptr) (void)exec("migration", "ROLLBACK", {});
      return st;
    }
    return step("COMMIT");
  }

  void enqueue(Write w) {
    {
      std::lock_guard lock(queue_mu);
      if (queue.size() >= options.background_queue_cap) {
        ++dropped;
        return;
      }
      queue.push_back(std::move(w));
    }
    queue_cv.notify_all();
  }

  void writer_loop() {
    std::unique_lock lock(queue_mu);
    while (!stopping) {
      if (queue.empty()) {
        queue_cv.wait_for(lock, std::chrono::milliseconds(500));
        continue;
      }
      Write w = queue.front();
      writing = true;
      lock.unlock();
      bool done = write_one(w);
      lock.lock();
      writing = false;
      if (done) {
        queue.pop_front();
        queue_cv.notify_all();
      } else {
        // The store is away: keep the order, try again shortly.
        queue_cv.wait_for(lock, std::chrono::milliseconds(300), [this] { return stopping.load(); });
      }
    }
  }

  bool write_one(const Write& w) {
    if (writer_conn == nullptr) {
      std::string error;
      writer_conn = connect(options.conninfo, options.connect_timeout_ms, &error);
      if (writer_conn == nullptr) return false;
    }
    std::vector<const char*> values;
    for (const auto& p : w.params) values.push_back(p.c_str());
    Res r(PQexecParams(writer_conn, w.sql.c_str(), static_cast<int>(values.size()), nullptr,
                       values.data(), nullptr, nullptr, 0));
    ExecStatusType st = PQresultStatus(r.get());
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return true;
    if (PQstatus(writer_conn) != CONNECTION_OK) {
      PQfinish(writer_conn);
      writer_conn = nullptr;
      return false;
    }
    return true;  // refused by the database (a data error): retrying cannot help
  }

  void listener_loop() {
    PGconn* lc = nullptr;
    bool first = true;
    while (!stopping) {
      if (lc == nullptr) {
        std::string error;
        lc = connect(options.conninfo, options.connect_timeout_ms, &error);
        if (lc != nullptr) {
          Res r(PQexec(lc, "LISTEN pgwarden_state"));
          if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
            PQfinish(lc);
            lc = nullptr;
          }
        }
        if (lc == nullptr) {
          if (ok.exchange(false)) spdlog::error("state store unreachable (change feed): {}", error);
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          continue;
        }
        // After an interruption changes may have been missed: the owner re-reads everything.
        if (!first && handler) handler(StateChange{.kind = StateChange::Kind::kResync});
        if (first) {
          std::lock_guard lock(listen_mu);
          listening = true;
          listen_cv.notify_all();
        }
        first = false;
      }
      pollfd p{PQsocket(lc), POLLIN, 0};
      int n = ::poll(&p, 1, 200);
      if (n < 0) continue;
      if (n > 0 && PQconsumeInput(lc) == 0) {
        PQfinish(lc);
        lc = nullptr;
        continue;
      }
      while (PGnotify* note = PQnotifies(lc)) {
        json j = json::parse(note->extra, nullptr, false);
        PQfreemem(note);
        if (!j.is_object() || str(j, "node") == options.node_id || !handler) continue;
        StateChange c;
        std::string k = str(j, "k");
        c.key = str(j, "key");
        c.sent_ms = num(j, "ts");
        if (k == "approval") {
          c.kind = StateChange::Kind::kApproval;
        } else if (k == "revocations") {
          c.kind = StateChange::Kind::kRevocations;
        } else if (k == "kill") {
          c.kind = StateChange::Kind::kKill;
          c.kill = j;
        } else if (k == "budgets") {
          c.kind = StateChange::Kind::kBudgets;
          if (j.contains("ids") && j["ids"].is_array()) {
            for (const auto& id : j["ids"]) {
              if (id.is_string()) c.identities.push_back(id.get<std::string>());
            }
          }
        } else {
          continue;
        }
        handler(c);
      }
      if (PQstatus(lc) != CONNECTION_OK) {
        PQfinish(lc);
        lc = nullptr;
      }
    }
    if (lc != nullptr) PQfinish(lc);
  }
};

PgStateStore::PgStateStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PgStateStore::~PgStateStore() { stop(); }

void PgStateStore::stop() {
  impl_->stopping = true;
  impl_->queue_cv.notify_all();
  if (impl_->listener.joinable()) impl_->listener.join();
  if (impl_->writer.joinable()) impl_->writer.join();
}

Result<std::unique_ptr<PgStateStore>> PgStateStore::open(PgStateStoreOptions options) {
  if (options.node_id.empty()) return invalid_argument("state store: node_id is empty");
  if (options.conninfo.empty()) return invalid_argument("state store: the conninfo is empty");
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  PGW_RETURN_IF_ERROR(impl->migrate());
  auto node = impl->run("node registration",
                        "INSERT INTO pgwarden_nodes (node_id, admin_socket, seen_ms, admin_url) "
                        "VALUES ($1, $2, $3::bigint, $4) ON CONFLICT (node_id) DO UPDATE "
                        "SET admin_socket = EXCLUDED.admin_socket, seen_ms = EXCLUDED.seen_ms, "
                        "admin_url = EXCLUDED.admin_url",
                        {impl->options.node_id, impl->options.admin_socket,
                         std::to_string(now_ms()), impl->options.admin_url});
  if (!node.is_ok()) return node.status();
  // Sessions this node registered before it restarted are gone with that process.
  auto stale = impl->run("session registry", "DELETE FROM pgwarden_sessions WHERE node_id = $1",
                         {impl->options.node_id});
  if (!stale.is_ok()) return stale.status();
  return std::unique_ptr<PgStateStore>(new PgStateStore(std::move(impl)));
}

const std::string& PgStateStore::node_id() const { return impl_->options.node_id; }

Status PgStateStore::put_approval(const json& snapshot, bool create) {
  std::string id = str(snapshot, "id");
  std::string state = str(snapshot, "state");
  if (id.empty() || state.empty()) return invalid_argument("approval snapshot without id/state");
  std::string text = snapshot.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string note = impl_->payload("approval", id);
  std::string now = std::to_string(now_ms());
  if (create) {
    auto r = impl_->run(
        "create approval",
        "WITH i AS (INSERT INTO pgwarden_approvals VALUES ($1, $2, $3, $4, $5, $6::bigint, "
        "$7::bigint, $8::jsonb) ON CONFLICT (id) DO NOTHING RETURNING id) "
        "SELECT id, pg_notify('pgwarden_state', $9) FROM i",
        {id, state, str(snapshot, "session_id"), str(snapshot, "identity"), impl_->options.node_id,
         std::to_string(num(snapshot, "created_ms")), now, text, note});
    if (!r.is_ok()) return r.status();
    if (PQntuples(r->get()) != 1) return failed_precondition("approval request " + id + " exists");
    return Status::ok();
  }
  bool grant = state == "approved" && str(snapshot, "scope") == "shape";
  // An approval (a vote that stays pending, or the one that approves) adds one vote to those
  // the store has: compare-and-set on their number, so two votes cast at once on two nodes
  // cannot both count as the n-th.
  const json votes = snapshot.contains("votes") && snapshot["votes"].is_array() ? snapshot["votes"]
                                                                                : json::array();
  int64_t votes_before = (state == "approved" || state == "pending") && !votes.empty()
                             ? static_cast<int64_t>(votes.size()) - 1
                             : -1;
  auto r = impl_->run(
      "decide approval",
      "WITH u AS (UPDATE pgwarden_approvals SET state = $2, snapshot = $3::jsonb, "
      "updated_ms = $4::bigint WHERE id = $1 AND state = 'pending' AND ($9::int < 0 OR "
      "jsonb_array_length(coalesce(snapshot->'votes', '[]'::jsonb)) = $9::int) "
      "RETURNING id, identity), "
      "g AS (INSERT INTO pgwarden_standing_grants SELECT identity, $6, id, $7::bigint FROM u "
      "WHERE $8::boolean ON CONFLICT DO NOTHING) "
      "SELECT id, pg_notify('pgwarden_state', $5) FROM u",
      {id, state, text, now, note, str(snapshot, "shape_key"),
       std::to_string(num(snapshot, "grant_expires_ms")), grant ? "true" : "false",
       std::to_string(votes_before)});
  if (!r.is_ok()) return r.status();
  if (PQntuples(r->get()) == 1) return Status::ok();
  auto current = get_approval(id);
  if (!current.is_ok()) return current.status();
  if (!current->has_value()) return not_found("no approval request " + id + " in the state store");
  const json& c = **current;
  // Our own write whose answer was lost when the store restarted: it did apply.
  if (str(c, "state") == state && str(c, "decider") == str(snapshot, "decider") &&
      num(c, "decided_ms") == num(snapshot, "decided_ms") &&
      c.value("votes", json::array()) == votes) {
    return Status::ok();
  }
  if (str(c, "state") == "pending") {
    return failed_precondition("approval request " + id +
                               " got another vote on another node meanwhile; decide again");
  }
  return failed_precondition("approval request " + id + " is already " + str(c, "state") +
                             " (decided by " + str(c, "decider") + ")");
}

Result<std::optional<json>> PgStateStore::get_approval(const std::string& id) {
  auto r =
      impl_->run("read approval", "SELECT snapshot FROM pgwarden_approvals WHERE id = $1", {id});
  if (!r.is_ok()) return r.status();
  if (PQntuples(r->get()) == 0) return std::optional<json>();
  json j = json::parse(PQgetvalue(r->get(), 0, 0), nullptr, false);
  if (!j.is_object()) return internal_error("approval " + id + " in the state store is corrupt");
  return std::optional<json>(std::move(j));
}

Result<std::vector<json>> PgStateStore::list_approvals(int64_t since_ms) {
  auto r = impl_->run("list approvals",
                      "SELECT snapshot FROM pgwarden_approvals WHERE state = 'pending' OR "
                      "updated_ms >= $1::bigint ORDER BY created_ms, id",
                      {std::to_string(since_ms)});
  if (!r.is_ok()) return r.status();
  std::vector<json> out;
  for (int i = 0; i < PQntuples(r->get()); ++i) {
    json j = json::parse(PQgetvalue(r->get(), i, 0), nullptr, false);
    if (j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

Status PgStateStore::put_revocation(const json& entry) {
  auto r = impl_->run(
      "revoke",
      "WITH u AS (INSERT INTO pgwarden_revocations VALUES ($1, $2, $3::jsonb, $4) "
      "ON CONFLICT (name, kind) DO UPDATE SET entry = EXCLUDED.entry, node_id = EXCLUDED.node_id "
      "RETURNING name) SELECT pg_notify('pgwarden_state', $5) FROM u",
      {str(entry, "name"), str(entry, "kind"), entry.dump(), impl_->options.node_id,
       impl_->payload("revocations", str(entry, "name"))});
  return r.is_ok() ? Status::ok() : r.status();
}

Status PgStateStore::remove_revocation(const std::string& name, const std::string& kind) {
  auto r = impl_->run(
      "unrevoke",
      "WITH d AS (DELETE FROM pgwarden_revocations WHERE name = $1 AND ($2 = 'any' OR kind = $2) "
      "RETURNING name) SELECT pg_notify('pgwarden_state', $3) FROM (SELECT 1) one",
      {name, kind, impl_->payload("revocations", name)});
  return r.is_ok() ? Status::ok() : r.status();
}

Result<std::vector<json>> PgStateStore::list_revocations() {
  auto r = impl_->run("list revocations",
                      "SELECT entry FROM pgwarden_revocations ORDER BY name, kind", {});
  if (!r.is_ok()) return r.status();
  std::vector<json> out;
  for (int i = 0; i < PQntuples(r->get()); ++i) {
    json j = json::parse(PQgetvalue(r->get(), i, 0), nullptr, false);
    if (j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

Status PgStateStore::publish_kill(const json& selector, const std::string& reason,
                                  const std::string& by, const std::string& cause) {
  json extra{{"selector", selector}, {"reason", reason}, {"by", by}, {"cause", cause}};
  auto r = impl_->run(
      "kill sessions",
      "WITH i AS (INSERT INTO pgwarden_killed_sessions (selector, reason, by, cause, node_id, "
      "created_ms) VALUES ($1::jsonb, $2, $3, $4, $5, $6::bigint) RETURNING id) "
      "SELECT pg_notify('pgwarden_state', $7) FROM i",
      {selector.dump(), reason, by, cause, impl_->options.node_id, std::to_string(now_ms()),
       impl_->payload("kill", "", extra)});
  return r.is_ok() ? Status::ok() : r.status();
}

void PgStateStore::session_started(const SessionEntry& e) {
  impl_->enqueue(Write{
      "INSERT INTO pgwarden_sessions VALUES ($1, $2, $3, $4, $5::bigint) ON CONFLICT "
      "(session_id) DO UPDATE SET node_id = EXCLUDED.node_id",
      {e.session_id, impl_->options.node_id, e.identity, e.target, std::to_string(e.started_ms)}});
}

void PgStateStore::session_ended(const std::string& session_id) {
  impl_->enqueue(Write{"DELETE FROM pgwarden_sessions WHERE session_id = $1 AND node_id = $2",
                       {session_id, impl_->options.node_id}});
}

void PgStateStore::recording_indexed(const RecordingEntry& e) {
  impl_->enqueue(
      Write{"INSERT INTO pgwarden_recordings VALUES ($1, $2, $3, $4, $5::bigint) ON CONFLICT "
            "(session_id) DO UPDATE SET node_id = EXCLUDED.node_id, file = EXCLUDED.file, "
            "state = EXCLUDED.state, updated_ms = EXCLUDED.updated_ms",
            {e.session_id, impl_->options.node_id, e.file, e.state, std::to_string(now_ms())}});
}

Result<std::optional<SessionEntry>> PgStateStore::find_session(const std::string& session_id) {
  auto r = impl_->run("find session",
                      "SELECT session_id, node_id, identity, target, started_ms FROM "
                      "pgwarden_sessions WHERE session_id = $1",
                      {session_id});
  if (!r.is_ok()) return r.status();
  if (PQntuples(r->get()) == 0) return std::optional<SessionEntry>();
  PGresult* p = r->get();
  return std::optional<SessionEntry>(SessionEntry{PQgetvalue(p, 0, 0), PQgetvalue(p, 0, 1),
                                                  PQgetvalue(p, 0, 2), PQgetvalue(p, 0, 3),
                                                  std::atoll(PQgetvalue(p, 0, 4))});
}

Result<std::optional<RecordingEntry>> PgStateStore::find_recording(const std::string& session_id) {
  auto r = impl_->run("find recording",
                      "SELECT session_id, node_id, file, state FROM pgwarden_recordings WHERE "
                      "session_id = $1",
                      {session_id});
  if (!r.is_ok()) return r.status();
  if (PQntuples(r->get()) == 0) return std::optional<RecordingEntry>();
  PGresult* p = r->get();
  return std::optional<RecordingEntry>(RecordingEntry{PQgetvalue(p, 0, 0), PQgetvalue(p, 0, 1),
                                                      PQgetvalue(p, 0, 2), PQgetvalue(p, 0, 3)});
}

namespace {

std::vector<NodeEntry> node_rows(PGresult* p) {
  std::vector<NodeEntry> out;
  for (int i = 0; i < PQntuples(p); ++i) {
    out.push_back(NodeEntry{PQgetvalue(p, i, 0), PQgetvalue(p, i, 1), PQgetvalue(p, i, 2),
                            std::atoll(PQgetvalue(p, i, 3))});
  }
  return out;
}

}  // namespace

Result<std::optional<NodeEntry>> PgStateStore::find_node(const std::string& node_id) {
  auto r = impl_->run("find node",
                      "SELECT node_id, admin_socket, admin_url, seen_ms FROM pgwarden_nodes "
                      "WHERE node_id = $1",
                      {node_id});
  if (!r.is_ok()) return r.status();
  std::vector<NodeEntry> rows = node_rows(r->get());
  if (rows.empty()) return std::optional<NodeEntry>();
  return std::optional<NodeEntry>(std::move(rows.front()));
}

Result<std::vector<NodeEntry>> PgStateStore::list_nodes() {
  auto r = impl_->run("list nodes",
                      "SELECT node_id, admin_socket, admin_url, seen_ms FROM pgwarden_nodes "
                      "ORDER BY node_id",
                      {});
  if (!r.is_ok()) return r.status();
  return node_rows(r->get());
}

void PgStateStore::rules_loaded(uint64_t generation, const std::string& digest) {
  // A restarted cp numbers its generations again from its policy version: the latest load of
  // a number wins.
  impl_->enqueue(Write{
      "INSERT INTO pgwarden_rule_generations VALUES ($1, $2::bigint, $3, $4::bigint) "
      "ON CONFLICT (node_id, generation) DO UPDATE SET digest = EXCLUDED.digest, "
      "loaded_ms = EXCLUDED.loaded_ms",
      {impl_->options.node_id, std::to_string(generation), digest, std::to_string(now_ms())}});
}

Result<std::vector<RuleGenerationEntry>> PgStateStore::list_rule_generations() {
  auto r = impl_->run("list rule generations",
                      "SELECT DISTINCT ON (node_id) node_id, generation, digest, loaded_ms FROM "
                      "pgwarden_rule_generations ORDER BY node_id, loaded_ms DESC, generation DESC",
                      {});
  if (!r.is_ok()) return r.status();
  std::vector<RuleGenerationEntry> out;
  PGresult* p = r->get();
  for (int i = 0; i < PQntuples(p); ++i) {
    out.push_back(RuleGenerationEntry{PQgetvalue(p, i, 0),
                                      std::strtoull(PQgetvalue(p, i, 1), nullptr, 10),
                                      PQgetvalue(p, i, 2), std::atoll(PQgetvalue(p, i, 3))});
  }
  return out;
}

Result<std::vector<BudgetCounter>> PgStateStore::add_budget_usage(
    const std::vector<BudgetCounter>& deltas) {
  if (deltas.empty()) return std::vector<BudgetCounter>{};
  std::vector<std::string> cols[7];
  json ids = json::array();
  for (const BudgetCounter& d : deltas) {
    cols[0].push_back(d.budget);
    cols[1].push_back(d.identity);
    cols[2].push_back(std::to_string(d.window_start_ms));
    for (size_t m = 0; m < d.used.size(); ++m) cols[3 + m].push_back(std::to_string(d.used[m]));
    ids.push_back(d.identity);
  }
  // NOTIFY payloads are limited to 8000 bytes: without the list, the others re-read everything.
  json extra = json::object();
  if (ids.dump().size() < 6000) extra["ids"] = ids;
  std::vector<std::string> params;
  for (const auto& c : cols) params.push_back(pg_array(c));
  params.push_back(std::to_string(now_ms()));
  params.push_back(impl_->payload("budgets", "", extra));
  // One row per (budget, identity): the same window adds up, a later one starts again from
  // the delta, an earlier one (a late delta of a window that is over) leaves the row alone.
  auto column = [](const char* name) {
    std::string n = name;
    return n + " = CASE WHEN EXCLUDED.window_start_ms > c.window_start_ms THEN EXCLUDED." + n +
           " WHEN EXCLUDED.window_start_ms = c.window_start_ms THEN c." + n + " + EXCLUDED." + n +
           " ELSE c." + n + " END";
  };
  std::string sql =
      "WITH d AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], "
      "$5::bigint[], $6::bigint[], $7::bigint[])), "
      "u AS (INSERT INTO pgwarden_budget_usage AS c SELECT d.*, $8::bigint FROM d "
      "ON CONFLICT (budget, identity) DO UPDATE SET " +
      column("statements") + ", " + column("rows_returned") + ", " + column("result_bytes") + ", " +
      column("masked_cells") +
      ", window_start_ms = greatest(c.window_start_ms, EXCLUDED.window_start_ms), "
      "updated_ms = EXCLUDED.updated_ms RETURNING budget, identity, window_start_ms, statements, "
      "rows_returned, result_bytes, masked_cells) "
      "SELECT u.*, pg_notify('pgwarden_state', $9) FROM u";
  auto r = impl_->run("budget usage", sql, params);
  if (!r.is_ok()) return r.status();
  return budget_rows(r->get());
}

Result<std::vector<BudgetCounter>> PgStateStore::list_budget_counters(const std::string& identity) {
  auto r = impl_->run("list budget usage",
                      "SELECT budget, identity, window_start_ms, statements, rows_returned, "
                      "result_bytes, masked_cells FROM pgwarden_budget_usage WHERE $1 = '' OR "
                      "identity = $1 ORDER BY budget, identity",
                      {identity});
  if (!r.is_ok()) return r.status();
  return budget_rows(r->get());
}

Result<size_t> PgStateStore::reset_budget_counters(const std::string& identity,
                                                   const std::string& budget) {
  auto r = impl_->run(
      "reset budget usage",
      "WITH d AS (DELETE FROM pgwarden_budget_usage WHERE identity = $1 AND ($2 = '' OR "
      "budget = $2) RETURNING 1) SELECT (SELECT count(*) FROM d), pg_notify('pgwarden_state', $3)",
      {identity, budget, impl_->payload("budgets", "", json{{"ids", json::array({identity})}})});
  if (!r.is_ok()) return r.status();
  return static_cast<size_t>(std::atoll(PQgetvalue(r->get(), 0, 0)));
}

Status PgStateStore::start(ChangeHandler handler) {
  if (impl_->listener.joinable()) return failed_precondition("state store already started");
  impl_->handler = std::move(handler);
  Impl* raw = impl_.get();
  impl_->listener = std::thread([raw] { raw->listener_loop(); });
  impl_->writer = std::thread([raw] { raw->writer_loop(); });
  // Changes made after start() returns reach the handler: wait for the LISTEN (the store was
  // reachable at open; if it went away since, the feed catches up with kResync).
  std::unique_lock lock(impl_->listen_mu);
  impl_->listen_cv.wait_for(lock,
                            std::chrono::milliseconds(impl_->options.connect_timeout_ms + 1000),
                            [raw] { return raw->listening; });
  return Status::ok();
}

bool PgStateStore::available() const { return impl_->ok; }

uint64_t PgStateStore::background_dropped() const { return impl_->dropped; }

bool PgStateStore::flush_background(int timeout_ms) {
  std::unique_lock lock(impl_->queue_mu);
  return impl_->queue_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                  [this] { return impl_->queue.empty() && !impl_->writing; });
}

}  // namespace pgwarden::state
