//! Deterministic simulation tests of mcp-relay's sans-IO core, over TCP and Streamable HTTP.
//!
//! The harness plays every part the core does not: the driver (it performs each
//! [`Output`](mcp_relay_core::Output) and reports facts back as
//! [`Input`](mcp_relay_core::Input)s), the clients and the child servers. Time is simulated
//! ([`clock`]), every choice comes from one seeded PRNG ([`rng`]), so one seed is one run,
//! and the same seed gives the same trace byte for byte.
//!
//! * [`sim::Sim`] — the one world and its one event loop: TCP clients, Streamable HTTP
//!   clients or both ([`Sim::mixed`]) against one relay; `step()` runs one input (or timeout)
//!   and performs every output (one driver, one module driving every child); `run()` goes to
//!   the end and checks the end-of-run invariants of both kinds of client.
//! * [`http_sim`] — the Streamable HTTP clients (sessions, event streams, resumption, expiry,
//!   retries after 503) speaking HTTP/1.1 through [`http_client`]; [`HttpSim::new`] builds a
//!   run of HTTP sessions only.
//! * [`client`] — the scripted TCP peer; [`server`] — the one child model of both worlds
//!   (crashes, hangs, slow stdin, banners, stubborn servers, grandchildren; in tools mode it
//!   also serves the HTTP clients' `echo` and `slow` calls with tagged progress and answers);
//!   [`jsonrpc`] — the lines peers write and the reaction each line is owed; [`pipe`] — byte
//!   streams between peers and driver.
//! * [`model`], [`invariants`] — what must hold (TCP and HTTP); [`runner`] — seeds, replay,
//!   reports, determinism, for both worlds ([`runner::World`]).
//! * [`profile`] — which faults a family of runs injects, and how often ([`Profile`] for TCP,
//!   [`HttpProfile`] for HTTP). Nothing is tolerated: a profile only says how often a real
//!   peer does something, never what to avoid.
//! * [`script::Script`] — a hand-driven relay for regression tests of one exact sequence.
//! * [`remote_sim::RemoteSim`] — client mode: the relay's own stdio client in front of
//!   [`remote::Remote`], a scripted remote MCP server (Streamable HTTP, HTTP+SSE, TCP) that
//!   cuts, ends, forgets, refuses and stalls; its own driver and invariants (listed there),
//!   sharing the clock, randomness, trace, logger and seed runner.
//!
//! Replay: `SIM_SEED=<n>` runs one seed, `SIM_SEEDS=<count>` changes how many run,
//! `SIM_TRACE=<file>` writes the whole trace.
//!
//! HTTP sessions' servers crash, hang, close their stdout or fail to start
//! ([`HttpProfile::faults`]): the clients take the relay's -32003 (and -32000, -32001) as a
//! call's final answer, a 404 as the end of their session (they initialize a new one), a 413
//! as the answer to a body over `max_message_size`; each such answer must have its cause (a
//! fault of that session's server, an oversize message). A call unanswered after
//! [`HttpProfile::call_timeout`] (a hung server nothing probes) is cancelled with
//! `notifications/cancelled`, as SDK clients do. HTTP sessions' restarts are checked
//! against the policy, budget and backoff as TCP sessions' are.
//!
//! Not modelled: pipe and socket capacities (writers never block), real process groups (a
//! grandchild only holds pipes), servers that send requests to clients (except in
//! `sim_http_mrtr.rs`, which plays the 2026-07-28 bridge's input rounds with its own scripted
//! children), the legacy HTTP+SSE transport and other stateless HTTP (end-to-end tests cover
//! them), and JSON-RPC batches over HTTP in sessions of 2025-06-18 and later (real clients of
//! those versions send none; 2025-03-26 sessions send them, `HttpProfile::batches`). (Mixed runs, [`Sim::mixed`], put HTTP clients under
//! the TCP chaos profile: tiny message, in-flight and buffer limits, failing servers, early
//! and double shutdowns, where a client's connection is refused and its requests are left
//! without a response.)
//!
//! # Invariants
//!
//! Checked after every step (step = one input or one `handle_timeout`, plus draining and
//! performing all outputs):
//!
//! 1. Every complete message a peer sent reaches the right peer only, at most once, in
//!    order, byte for byte: a client's lines reach its session's children (a `\r\n`
//!    ending becomes `\n`; the only gap is where a replacement child starts, and the lines
//!    the relay writes itself carry its own ids); a child's JSON-RPC lines reach its own
//!    client, never another. At the end: nothing owed is missing.
//! 2. Nothing is sent, closed, paused or resumed on an endpoint after it was closed, broke or
//!    was released; nothing is sent to, paused on or signalled to a child before it is
//!    spawned or after it is released.
//! 3. `relay.buffered(conn) <= relay.buffer_bound()` for every connection.
//! 4. After `handle_timeout(now)`, `poll_timeout()` is `None` or later than `now`.
//! 5. Every non-JSON client line gets -32700 with id null; every other malformed line and
//!    every oversize line gets -32600 (with the line's id when it has one), in order; non-JSON
//!    lines of a child never reach a client; an oversize answer gets -32001 with its id.
//! 6. When a session's server could not be spawned, its requests get -32000 naming the cause.
//! 7. At the end (every peer done, a graceful shutdown, the clock run until the relay is
//!    finished): every spawned child exited, its exit was reported and it was released; no
//!    connection is left open; the run ended within a bounded number of steps.
//!
//! Also: every client request gets exactly one answer (its server's, or the relay's error);
//! the stop sequence keeps time (SIGTERM exactly `shutdown_grace` after stdin was closed,
//! SIGKILL exactly `shutdown_grace` after that, to the nanosecond of simulated time); a server
//! is declared hung only when it is; restarts follow the policy, the budget and the exact
//! backoff; a second shutdown kills every child at once; no ERROR is logged except one per
//! failed start, session given up or prespawn pool given up, as the core's counters
//! ([`mcp_relay_core::Stats`]) count them in that step. Facts come from those counters, not
//! from log text: a hang verdict (`servers_hung`), a client dropped for silence
//! (`heartbeat_failures`), a given-up session (`sessions_given_up`, which the harness's own
//! restart-budget model must agree with), output given up on after an exit
//! (`outputs_abandoned`, matched to exactly that many exited children whose output is open).
//!
//! Completeness is judged at the end of a run, excusing what a fault explains: a reset
//! client, a crashed or hung child, a shutdown, a cancelled request.

pub mod client;
pub mod clock;
pub mod http_client;
pub mod http_sim;
pub mod invariants;
pub mod jsonrpc;
pub mod logger;
pub mod model;
pub mod pipe;
pub mod process;
pub mod profile;
pub mod remote;
pub mod remote_sim;
pub mod rng;
pub mod runner;
pub mod script;
pub mod server;
pub mod sim;
pub mod trace;

pub use http_sim::HttpSim;
pub use profile::{HttpProfile, Profile};
pub use runner::{run_seeds, same_trace_twice, TestName};
pub use script::Script;
pub use sim::{Sabotage, Sim};

/// The harness's own tests: a driver that misbehaves must be caught.
#[cfg(test)]
mod self_test {
    use super::*;

    /// Runs seeds with the sabotage until one run applies it; that run must fail.
    fn caught(sabotage: Sabotage, profile: Profile) {
        for seed in 0..50 {
            let mut sim = Sim::new(seed, profile.clone(), false);
            sim.sabotage = Some(sabotage);
            let result = sim.run();
            logger::stop_capture();
            if sim.sabotage.is_none() {
                match result {
                    Ok(()) => panic!("seed {seed}: {sabotage:?} went unnoticed by the invariants"),
                    Err(f) => eprintln!("{sabotage:?} caught: {}", f.what),
                }
                return;
            }
        }
        panic!("{sabotage:?} never applied");
    }

    #[test]
    fn a_corrupted_byte_is_caught() {
        caught(Sabotage::CorruptClientByte, Profile::healthy());
    }

    #[test]
    fn cross_talk_is_caught() {
        let mut p = Profile::healthy();
        p.conns = (3, 4);
        caught(Sabotage::MisrouteChildOutput, p);
    }

    #[test]
    fn a_lost_line_is_caught() {
        caught(Sabotage::LoseChildOutput, Profile::healthy());
    }
}
