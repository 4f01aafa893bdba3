// The Prometheus metrics of pgwarden-cp (docs/monitoring.md): read at each scrape from the
// counters the control plane already keeps — the escalation server's (PGW_CP_COUNTERS), the
// recorder's (PGW_RECORDER_COUNTERS, queue depth, fdatasync latency), the webhook's, the
// approval store and the dataplane registry. Labels are bounded: approval states, dataplane
// connection states. Nothing secret, no SQL, no identities.
#pragma once

#include "common/metrics/metrics_server.h"
#include "controlplane/server/control_plane.h"

namespace pgwarden::server {

// Thread-safe (reads only thread-safe accessors of `plane`).
void collect_cp_metrics(ControlPlane& plane, metrics::Families& f);

}  // namespace pgwarden::server
