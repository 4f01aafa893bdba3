#include "controlplane/identity/identity.h"

namespace pgwarden::identity {

std::string_view reject_reason_name(RejectReason reason) {
  switch (reason) {
#define PGW_X(name, str)   \
  case RejectReason::name: \
    return str;
    PGW_IDENTITY_REJECT_REASONS(PGW_X)
#undef PGW_X
  }
  return "unknown";
}

Status Rejection::to_status() const {
  // 28P01 (invalid_password): what PostgreSQL answers for a wrong password; a token is the
  // agent's password. 28000 stays for "no such role / no pg_hba entry" (no policy).
  return unauthenticated(std::string(reject_reason_name(reason)) + ": " + message, "28P01");
}

}  // namespace pgwarden::identity
