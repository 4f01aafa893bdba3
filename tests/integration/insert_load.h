#pragma once

// Client sessions that insert rows as fast as they can while a fault test breaks things around
// them (cp restarts, channel breaks, reloads). Each session runs
// `INSERT INTO <table> VALUES ('<prefix><n>')` in a loop on its own thread and keeps what every
// statement got, so the test can compare PostgreSQL's rows with the recordings afterwards.

#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {

struct Inserter {
  struct Failure {
    std::string sqlstate;
    std::string message;
    int64_t waited_ms = 0;
  };
  std::string prefix;  // of the inserted values
  Conn conn;
  std::atomic<int> ok{0};
  std::atomic<bool> dead{false};  // the connection itself broke (FATAL, closed)
  std::mutex mu;
  std::vector<Failure> failures;
  std::set<std::string> succeeded;
  std::thread thread;

  void run(const std::string& table, const std::atomic<bool>& stop) {
    using Clock = std::chrono::steady_clock;
    for (int i = 0; !stop.load(); ++i) {
      std::string v = prefix + std::to_string(i);
      auto t0 = Clock::now();
      Res r(PQexec(conn.get(), ("INSERT INTO " + table + " VALUES ('" + v + "')").c_str()));
      std::lock_guard<std::mutex> lock(mu);
      if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) {
        succeeded.insert(v);
        ++ok;
        continue;
      }
      auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
      failures.push_back(Failure{sqlstate(r.get()), PQerrorMessage(conn.get()), waited.count()});
      if (PQstatus(conn.get()) != CONNECTION_OK) {
        dead = true;
        return;
      }
    }
  }
};

// `n` inserters on `conninfo`, values `<prefix><session>-<n>`.
class InsertLoad {
 public:
  ~InsertLoad() { stop(); }

  // Connects every session and starts them; false (with the reason added as a test failure)
  // when a session cannot log in.
  bool start(const std::string& conninfo, const std::string& table, const std::string& prefix,
             int n) {
    table_ = table;
    for (int i = 0; i < n; ++i) {
      auto c = std::make_unique<Inserter>();
      c->prefix = prefix + std::to_string(i) + "-";
      c->conn.reset(PQconnectdb(conninfo.c_str()));
      if (PQstatus(c->conn.get()) != CONNECTION_OK) {
        ADD_FAILURE() << "session " << i << ": " << PQerrorMessage(c->conn.get());
        return false;
      }
      clients.push_back(std::move(c));
    }
    for (auto& c : clients) {
      c->thread = std::thread([&c = *c, this] { c.run(table_, stop_); });
    }
    return true;
  }

  // Statements that succeeded so far, per session.
  std::vector<int> counts() const {
    std::vector<int> out;
    for (const auto& c : clients) out.push_back(c->ok.load());
    return out;
  }

  // Waits until every session is alive and ran `by` more statements than at `since`.
  bool progress_from(const std::vector<int>& since, int by) const {
    return eventually([&] {
      for (size_t i = 0; i < clients.size(); ++i) {
        if (clients[i]->dead || clients[i]->ok.load() < since[i] + by) return false;
      }
      return true;
    });
  }
  bool progress(int by) const { return progress_from(std::vector<int>(clients.size(), 0), by); }

  // Stops and joins every session (their connections stay open).
  void stop() {
    stop_ = true;
    for (auto& c : clients) {
      if (c->thread.joinable()) c->thread.join();
    }
  }

  std::vector<std::unique_ptr<Inserter>> clients;

 private:
  std::string table_;
  std::atomic<bool> stop_{false};
};

}  // namespace pgwarden::testing
