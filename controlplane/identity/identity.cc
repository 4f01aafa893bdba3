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
  return unauthenticated(std::string(reject_reason_name(reason)) + ": " + message);
}

}  // namespace pgwarden::identity
