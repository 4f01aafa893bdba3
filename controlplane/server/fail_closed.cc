#include "controlplane/server/interfaces.h"

namespace pgwarden::server {

protocol::AnalyseResponse FailClosedAnalyser::analyse(const SessionView&,
                                                      const protocol::AnalyseRequest& request) {
  for (const auto& hit : request.prescreen) {
    if (hit.action == "deny") {
      return {"deny", hit.rule, "statement denied by rule " + hit.rule, true};
    }
  }
  return {"deny", "cp.analysis_unavailable",
          "statement analysis is not available on this gateway; denied (fail closed)", false};
}

Result<protocol::MaskPlanResponse> FailClosedMaskPlanner::plan(const SessionView&,
                                                               const protocol::MaskPlanRequest&) {
  return Status(StatusCode::kFailedPrecondition,
                "result masking is not available on this gateway; result refused (fail closed)",
                "0A000");
}

}  // namespace pgwarden::server
