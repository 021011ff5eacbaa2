//! Servers started ahead of need (`--prespawn N`): a new connection takes a waiting child
//! (what it said before is dropped), the pool is refilled, replaced after failures with the
//! restart backoff, given up on after too many, and stopped with everything else at shutdown.

use mcp_relay_core::{ChildId, Config, ExitStatus, Input, Output};
use mcp_relay_tests::{run_seeds, test_name, Profile, Script, Sim};
use std::time::Duration;

#[test]
fn prespawned_servers_serve_new_connections() {
    run_seeds(
        test_name!("prespawned_servers_serve_new_connections"),
        80,
        |seed, keep| {
            let mut p = Profile::chaos();
            p.prespawn = vec![1, 2, 4];
            Sim::new(seed, p, keep)
        },
        |_| Ok(()),
    );
}

fn spawns(out: &[Output]) -> Vec<ChildId> {
    out.iter()
        .filter_map(|o| match o {
            Output::Spawn { child, .. } => Some(*child),
            _ => None,
        })
        .collect()
}

fn started(prespawn: usize) -> (Script, Vec<ChildId>) {
    let mut s = Script::new(Config {
        prespawn,
        restart_delay: Duration::from_millis(10),
        max_restarts: 1,
        restart_window: Duration::from_secs(60),
        ping_interval: None,
        ..Config::default()
    });
    let now = s.clock.now();
    s.relay.start(now);
    let mut out = Vec::new();
    while let Some(o) = s.relay.poll_output() {
        out.push(o);
    }
    let children = spawns(&out);
    assert_eq!(children.len(), prespawn);
    (s, children)
}

fn assert_deadline_moves(s: &mut Script, what: &str) {
    s.advance(Duration::from_millis(10));
    s.timeout_now();
    let now = s.clock.now();
    assert!(
        s.relay.poll_timeout().is_none_or(|d| d > now),
        "{what}: after handle_timeout(now), poll_timeout() is {:?}, not after now — the \
         runtime would spin",
        s.relay.next_deadline().map(|(_, why)| why)
    );
}

/// Regression test (fixed) for `prespawn-respawn-deadline-stuck-in-shutdown` (core/src/pool.rs: `pool_decide`
/// sets `respawn_at` even when the pool cannot fill, and `pool_fill` returns early on
/// `given_up` or a shutdown without clearing it): the deadline "prespawn: replace a child"
/// stays in the past, `handle_timeout` never clears it, and the runtime busy-loops.
#[test]
fn the_pool_deadline_moves_after_the_pool_gave_up() {
    // Two prespawned children fail to start: the first schedules a respawn, the second spends
    // the budget (max_restarts 1) and the pool gives up, with the respawn still scheduled.
    let (mut s, children) = started(2);
    for child in children {
        s.input(Input::SpawnFailed {
            child,
            error: "`nope` was not found",
        });
    }
    assert_deadline_moves(&mut s, "after the pool gave up");
}

/// Same bug, other trigger: a prespawned child fails to start during a graceful shutdown.
#[test]
fn the_pool_deadline_moves_during_a_shutdown() {
    let (mut s, children) = started(1);
    s.input(Input::Shutdown);
    s.input(Input::SpawnFailed {
        child: children[0],
        error: "`nope` was not found",
    });
    assert_deadline_moves(&mut s, "during a shutdown");
}

/// Regression test (fixed) for `prespawned-child-not-released-after-immediate-shutdown` (core/src/pool.rs,
/// `pool_stop`: the immediate branch abandons the output of every pooled child but does not
/// reap the ones already exited): such a child is never released.
#[test]
fn an_exited_prespawned_child_is_released_after_an_immediate_shutdown() {
    let (mut s, children) = started(1);
    let child = children[0];
    s.spawned(child);
    // It exits while idle; a grandchild keeps its stdout and stderr open.
    s.input(Input::Exited {
        child,
        status: ExitStatus::Code(1),
    });
    s.input(Input::Shutdown);
    s.input(Input::Shutdown);
    s.advance(Duration::from_secs(60));
    assert!(
        s.log.iter().any(|(_, o)| *o == Output::Release { child }),
        "{child} exited and the relay stopped at once; it must be released:\n{}",
        s.show()
    );
}

/// Regression test (fixed) for `prespawn-give-up-logged-again` (core/src/pool.rs: `decide`
/// still asked the supervisor after the pool gave up, and logged the give-up ERROR again at
/// each later failure, while `Stats::prespawn_given_up` stayed 1): one give-up, one ERROR
/// record. The strict run found it (`SIM_SEED=7 cargo test -p mcp-relay-tests --test
/// sim_spawn_failure requests_to_a_server_that_cannot_start_get_the_cause`).
#[test]
fn the_pool_says_once_that_it_gave_up() {
    let (mut s, children) = started(3);
    for child in children {
        s.input(Input::SpawnFailed {
            child,
            error: "`nope` was not found",
        });
    }
    assert_eq!(s.relay.stats().prespawn_given_up, 1);
    let gave_up: Vec<&String> = s
        .errors
        .iter()
        .filter(|e| !e.starts_with("could not prespawn"))
        .collect();
    assert_eq!(gave_up.len(), 1, "one give-up, one ERROR: {gave_up:#?}");
}
