// Which extended-protocol executions of a recording-required session already have their
// write-ahead record.
//
// An allowed Parse is recorded before it is forwarded; that record covers the statement's
// first execution (the Bind/Execute that normally follows it in the same pipeline). Every
// further execution of a prepared statement needs a record of its own, written before its
// Execute is forwarded, with the Bind's parameter values. PostgreSQL runs a portal's
// statement at most once per Bind (another Execute of a suspended portal fetches more rows of
// the same run; a finished portal cannot be run again), so a portal stays covered until it is
// bound again.
//
// Anything the ledger does not know (a name it evicted, a statement parsed before recording
// became required) counts as not covered: the failure mode is one record too many, never an
// execution without one.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>

#include "dataplane/pgwire/framer.h"
#include "dataplane/pgwire/messages.h"

namespace pgwarden::session {

class ExecutionLedger {
 public:
  // What an execute record says about the execution a portal is about to run.
  struct Portal {
    std::string sql;
    std::string rule;
    nlohmann::json params;   // null when covered; else the Bind's values (rendered, capped)
    bool truncated = false;  // parameter values cut at kMaxParamBytes
    bool recorded = false;
  };

  // Total bytes of parameter text kept per execute record; longer values are cut.
  static constexpr size_t kMaxParamBytes = 64 * 1024;
  // Names tracked per session; beyond it the maps start over (costing extra records only).
  static constexpr size_t kMaxNames = 4096;

  // A forwarded client message: Parse (with whether its statement record was written and the
  // rule that allowed it), Bind, Close, or an Execute that was forwarded after its own record.
  void on_forwarded(const pgwire::Message& m, bool recorded, std::string_view rule);

  // A Bind relayed as it streamed (too large to hold whole): its names and its parameters as
  // BindStream rendered them (`summarised`: some value is recorded as prefix + length + hash).
  void on_bind_streamed(std::string_view portal, std::string_view statement, nlohmann::json params,
                        bool summarised);
  // Forgets a portal (a Bind the ledger could not read): a later Execute needs its own record.
  void forget_portal(std::string_view portal) { portals_.erase(std::string(portal)); }

  // The portal an Execute names if that execution still needs its record, else nullptr.
  const Portal* uncovered(std::string_view portal) const;

 private:
  struct Statement {
    std::string sql;
    std::string rule;
    bool covers_first = false;  // its Parse record covers the next Bind's execution
  };
  void on_bind(const pgwire::Bind& b);
  // The portal a Bind of `statement` creates, with its coverage decided; `params` is set on it
  // when it needs its own record.
  Portal* bind_portal(std::string_view portal, std::string_view statement);

  std::unordered_map<std::string, Statement> statements_;
  std::unordered_map<std::string, Portal> portals_;
  Portal unknown_;  // an Execute of a portal the ledger never saw bound
};

// The Bind's parameters for a record: text values as strings, NULL as null, binary values as
// {"binary_hex": ...}; at most `budget` bytes of value text in all (`*truncated` says if cut).
nlohmann::json render_params(const pgwire::Bind& b, size_t budget, bool* truncated);

}  // namespace pgwarden::session
