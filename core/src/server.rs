//! The server side of a session: what serves the client, and why it stopped serving.

use crate::ExitStatus;
use std::fmt;
use std::time::Duration;

/// Why a server side stopped serving. `Display` gives the text clients and logs see after
/// `mcp-relay: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ServerEnd {
    /// The process exited, or was killed by a signal.
    Exited(ExitStatus),
    /// A replacement could not be started (the first start failing ends the session at once,
    /// with the command in the text: see the session's `EndReason::CouldNotStart`).
    CouldNotStart(String),
    /// The relay found it hung and stopped it.
    Hung(Hang),
    /// It finished with no known cause.
    Gone,
}

impl fmt::Display for ServerEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerEnd::Exited(status) => write!(f, "the server {status}"),
            ServerEnd::CouldNotStart(error) => {
                write!(f, "the server could not be started again: {error}")
            }
            ServerEnd::Hung(why) => write!(f, "hung: {why}"),
            ServerEnd::Gone => f.write_str("the server is gone"),
        }
    }
}

/// Why the relay judged a server hung.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Hang {
    /// Bytes for its stdin waited this long with none read.
    StdinStalled(Duration),
    /// It did not answer a probe within this long.
    ProbeUnanswered(Duration),
    /// It was stopping and read none of what was still queued for it within this long.
    StoppingStalled(Duration),
    /// It replaced a server that ended (`after`) and did not answer the replayed
    /// `initialize` within this long.
    ReplayUnanswered {
        after: Box<ServerEnd>,
        within: Duration,
    },
}

impl fmt::Display for Hang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hang::StdinStalled(d) => write!(f, "the server stopped reading its stdin for {d:?}"),
            Hang::ProbeUnanswered(d) => write!(f, "the server did not answer a ping within {d:?}"),
            Hang::StoppingStalled(d) => {
                write!(f, "it read none of its input for {d:?} while stopping")
            }
            Hang::ReplayUnanswered { after, within } => write!(
                f,
                "{after}; its replacement did not answer initialize within {within:?}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(end: ServerEnd, expect: &str) {
        assert_eq!(end.to_string(), expect);
    }

    #[test]
    fn ends_read_as_before() {
        let s = Duration::from_secs(2);
        check(
            ServerEnd::Exited(ExitStatus::Code(3)),
            "the server exited with status 3",
        );
        check(
            ServerEnd::Exited(ExitStatus::Signal(9)),
            "the server was killed by signal 9",
        );
        check(
            ServerEnd::CouldNotStart("no such file".into()),
            "the server could not be started again: no such file",
        );
        check(ServerEnd::Gone, "the server is gone");
        check(
            ServerEnd::Hung(Hang::ProbeUnanswered(s)),
            "hung: the server did not answer a ping within 2s",
        );
        check(
            ServerEnd::Hung(Hang::StdinStalled(s)),
            "hung: the server stopped reading its stdin for 2s",
        );
        check(
            ServerEnd::Hung(Hang::StoppingStalled(s)),
            "hung: it read none of its input for 2s while stopping",
        );
        check(
            ServerEnd::Hung(Hang::ReplayUnanswered {
                after: Box::new(ServerEnd::Hung(Hang::ProbeUnanswered(s))),
                within: s,
            }),
            "hung: hung: the server did not answer a ping within 2s; its replacement did not \
             answer initialize within 2s",
        );
    }
}
