// PolicyAnalyser: the StatementAnalyser backed by controlplane/policy (libpg_query analysis +
// evaluate against the session's policy). Stateless, thread-safe.
//
// `cacheable` tells the dataplane it may reuse the verdict for every statement of the same
// shape (literals replaced) under the same policy version. It is false when literal values
// can change the verdict: SET/RESET/set_config, PREPARE/EXECUTE/DEALLOCATE/DISCARD, DO, CALL,
// parse errors, approvals.
#pragma once

#include "controlplane/server/interfaces.h"

namespace pgwarden::server {

class PolicyAnalyser : public StatementAnalyser {
 public:
  protocol::AnalyseResponse analyse(const SessionView& session,
                                    const protocol::AnalyseRequest& request) override;
};

}  // namespace pgwarden::server
