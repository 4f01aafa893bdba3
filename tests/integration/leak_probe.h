// Helpers for tests that look for masked values in everything a client receives through the
// gateway (gateway_lineage_test, gateway_mask_attack_test): statements in each protocol mode,
// a result flattened to the bytes the client got, and the session recordings.
#pragma once

#include <libpq-fe.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {

// 0: simple query; 1: extended, text results; 2: extended, binary results.
inline Res run_in_mode(PGconn* c, const std::string& sql, int mode) {
  if (mode == 0) return Res(PQexec(c, sql.c_str()));
  return Res(PQexecParams(c, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, mode - 1));
}

// Everything the client got of a result: the error message as libpq renders it (with the
// connection's verbosity), every diagnostic field, then the values ('|' after each value, a
// newline after each row).
inline std::string result_bytes(const PGresult* r) {
  if (r == nullptr) return "";
  std::string out = PQresultErrorMessage(r);
  for (int code : {PG_DIAG_MESSAGE_PRIMARY, PG_DIAG_MESSAGE_DETAIL, PG_DIAG_MESSAGE_HINT,
                   PG_DIAG_CONTEXT, PG_DIAG_INTERNAL_QUERY, PG_DIAG_SCHEMA_NAME, PG_DIAG_TABLE_NAME,
                   PG_DIAG_COLUMN_NAME, PG_DIAG_DATATYPE_NAME, PG_DIAG_CONSTRAINT_NAME}) {
    if (const char* f = PQresultErrorField(r, code)) (out += '\n') += f;
  }
  for (int i = 0; i < PQntuples(r); ++i) {
    for (int j = 0; j < PQnfields(r); ++j) {
      out.append(PQgetvalue(r, i, j), PQgetlength(r, i, j));
      out += '|';
    }
    out += '\n';
  }
  return out;
}

// Calls `visit(path, text)` for every recording file of the gateway.
inline void for_each_recording(
    GatewayHarness& gw, const std::function<void(const std::string&, const std::string&)>& visit) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(gw.dir() + "/state/recordings", ec)) {
    std::ifstream in(e.path(), std::ios::binary);
    visit(e.path().string(),
          std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()));
  }
}

// The text of the finished (session_end written) recording that contains `marker`; "" when
// none appears within 15 s (the recorder writes in batches).
inline std::string finished_recording(GatewayHarness& gw, const std::string& marker) {
  std::string found;
  eventually(
      [&] {
        for_each_recording(gw, [&](const std::string&, const std::string& text) {
          if (text.find(marker) != std::string::npos &&
              text.find("session_end") != std::string::npos) {
            found = text;
          }
        });
        return !found.empty();
      },
      15000);
  return found;
}

}  // namespace pgwarden::testing
