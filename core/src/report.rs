//! The text of `/metrics` (Prometheus exposition format), from the relay's counters.

use crate::config::Stats;
use crate::http::HttpCounters;

/// Every counter and gauge, with its help line.
pub(crate) fn metrics(
    s: &Stats,
    children_alive: usize,
    requests_in_flight: usize,
    http: &HttpCounters<'_>,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP mcp_relay_{name} {help}\n# TYPE mcp_relay_{name} {kind}\n{value}\n"
        ));
    };
    metric(
        "sessions_open",
        "gauge",
        "Sessions open now.",
        format!("mcp_relay_sessions_open {}", s.sessions_open),
    );
    metric(
        "sessions_created_total",
        "counter",
        "Sessions created.",
        format!("mcp_relay_sessions_created_total {}", s.sessions_total),
    );
    metric(
        "stateless_awaiting_input",
        "gauge",
        "2026-07-28 requests answered with input_required whose retry is awaited (each holds a server process).",
        format!("mcp_relay_stateless_awaiting_input {}", http.awaiting_input),
    );
    metric(
        "stateless_listen_streams",
        "gauge",
        "Open 2026-07-28 subscriptions/listen streams.",
        format!("mcp_relay_stateless_listen_streams {}", http.listens),
    );
    metric(
        "sessions_reaped_total",
        "counter",
        "HTTP sessions ended by cause.",
        format!(
            "mcp_relay_sessions_reaped_total{{cause=\"expired\"}} {}\nmcp_relay_sessions_reaped_total{{cause=\"deleted\"}} {}",
            http.sessions_expired, http.sessions_deleted
        ),
    );
    metric(
        "children_alive",
        "gauge",
        "Server processes running.",
        format!("mcp_relay_children_alive {}", children_alive),
    );
    metric(
        "children_spawned_total",
        "counter",
        "Server processes started.",
        format!("mcp_relay_children_spawned_total {}", s.children_spawned),
    );
    metric(
        "restarts_total",
        "counter",
        "Server restarts.",
        format!("mcp_relay_restarts_total {}", s.restarts),
    );
    metric(
        "messages_total",
        "counter",
        "Messages relayed, by direction.",
        format!(
            "mcp_relay_messages_total{{direction=\"to_server\"}} {}\nmcp_relay_messages_total{{direction=\"to_client\"}} {}",
            s.messages_to_server, s.messages_to_client
        ),
    );
    metric(
        "bytes_total",
        "counter",
        "Bytes relayed, by direction.",
        format!(
            "mcp_relay_bytes_total{{direction=\"to_server\"}} {}\nmcp_relay_bytes_total{{direction=\"to_client\"}} {}",
            s.bytes_to_server, s.bytes_to_client
        ),
    );
    metric(
        "requests_in_flight",
        "gauge",
        "Client requests waiting for an answer.",
        format!("mcp_relay_requests_in_flight {}", requests_in_flight),
    );
    let statuses: Vec<String> = http
        .responses
        .iter()
        .map(|(st, n)| format!("mcp_relay_http_responses_total{{status=\"{st}\"}} {n}"))
        .collect();
    metric(
        "http_responses_total",
        "counter",
        "HTTP responses by status.",
        statuses.join("\n"),
    );
    metric(
        "heartbeat_failures_total",
        "counter",
        "Clients dropped for missing heartbeats.",
        format!(
            "mcp_relay_heartbeat_failures_total {}",
            s.heartbeat_failures
        ),
    );
    for (name, help, value) in [
        (
            "servers_hung_total",
            "Servers found hung and stopped.",
            s.servers_hung,
        ),
        (
            "sessions_given_up_total",
            "Sessions ended because their server kept failing.",
            s.sessions_given_up,
        ),
        (
            "connections_refused_total",
            "Connections refused past --max-connections or --max-sessions.",
            s.connections_refused,
        ),
        (
            "starts_cancelled_total",
            "Server starts cancelled because their session ended first.",
            s.starts_cancelled,
        ),
        (
            "idle_closed_total",
            "TCP clients closed after --idle-timeout.",
            s.idle_closed,
        ),
        (
            "spawn_failures_total",
            "Server starts that failed.",
            s.spawn_failures,
        ),
    ] {
        metric(name, "counter", help, format!("mcp_relay_{name} {value}"));
    }
    out
}

/// One configured server's figures, for the `server`-labelled metrics.
pub(crate) struct PerServer<'a> {
    pub(crate) name: &'a str,
    pub(crate) sessions_open: usize,
    pub(crate) sessions_total: u64,
    pub(crate) children_alive: usize,
    pub(crate) requests_in_flight: usize,
}

/// Appends the metrics labelled `server="NAME"` (several servers behind one relay; a
/// retired server and its new definition share a name, and their figures add up).
pub(crate) fn per_server(out: &mut String, servers: &[PerServer<'_>]) {
    let mut by_name: std::collections::BTreeMap<&str, [u64; 4]> = Default::default();
    for s in servers {
        let v = by_name.entry(s.name).or_default();
        v[0] += s.sessions_open as u64;
        v[1] += s.sessions_total;
        v[2] += s.children_alive as u64;
        v[3] += s.requests_in_flight as u64;
    }
    let families = [
        (
            "server_sessions_open",
            "gauge",
            "Sessions open now, per server.",
        ),
        (
            "server_sessions_created_total",
            "counter",
            "Sessions created, per server.",
        ),
        (
            "server_children_alive",
            "gauge",
            "Server processes running, per server.",
        ),
        (
            "server_requests_in_flight",
            "gauge",
            "Client requests waiting for an answer, per server.",
        ),
    ];
    for (i, (name, kind, help)) in families.iter().enumerate() {
        out.push_str(&format!(
            "# HELP mcp_relay_{name} {help}\n# TYPE mcp_relay_{name} {kind}\n"
        ));
        for (server, v) in &by_name {
            // Server names are [A-Za-z0-9._-]: nothing to escape in a label value.
            out.push_str(&format!(
                "mcp_relay_{name}{{server=\"{server}\"}} {}\n",
                v[i]
            ));
        }
    }
}
