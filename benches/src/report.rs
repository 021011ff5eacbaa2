//! The Markdown report: one row per figure, direct beside relay, the ratio, the target.

use std::fmt::Write as _;

/// A target a row is held to.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// relay ÷ direct at most this (latencies, times).
    RatioAtMost(f64),
    /// relay ÷ direct at least this (throughputs).
    RatioAtLeast(f64),
    /// The relay's figure, in the row's unit, at most this.
    AtMost(f64),
    /// The workload must simply succeed.
    Succeeds,
}

impl Goal {
    fn describe(self, unit: &str) -> String {
        match self {
            Goal::RatioAtMost(r) => format!("≤ {r}× direct"),
            Goal::RatioAtLeast(r) => format!("≥ {r}× direct"),
            Goal::AtMost(v) => format!("≤ {v} {unit}"),
            Goal::Succeeds => "no failure".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Micros,
    Millis,
    ReqPerSec,
    MiBPerSec,
    MiB,
    KiB,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Micros => "µs",
            Unit::Millis => "ms",
            Unit::ReqPerSec => "req/s",
            Unit::MiBPerSec => "MiB/s",
            Unit::MiB => "MiB",
            Unit::KiB => "KiB",
        }
    }

    fn format(self, v: f64) -> String {
        let n = match self {
            Unit::ReqPerSec | Unit::MiBPerSec => thousands(v.round() as u64),
            Unit::Micros | Unit::KiB => format!("{v:.1}"),
            Unit::Millis | Unit::MiB => format!("{v:.2}"),
        };
        format!("{n} {}", self.name())
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string().into_bytes();
    let groups: Vec<&str> = digits
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or("?"))
        .collect();
    groups.join(",")
}

/// One figure of a workload: the direct-stdio value (when there is one), the relay's, and
/// the target it is held to.
#[derive(Clone, Debug)]
pub struct Row {
    pub workload: String,
    pub metric: String,
    pub unit: Unit,
    pub direct: Option<f64>,
    pub relay: Option<f64>,
    pub goal: Option<Goal>,
    /// The workload failed: why.
    pub error: Option<String>,
}

impl Row {
    pub fn new(workload: &str, metric: &str, unit: Unit) -> Row {
        Row {
            workload: workload.into(),
            metric: metric.into(),
            unit,
            direct: None,
            relay: None,
            goal: None,
            error: None,
        }
    }

    pub fn values(mut self, direct: Option<f64>, relay: Option<f64>) -> Row {
        self.direct = direct;
        self.relay = relay;
        self
    }

    pub fn goal(mut self, goal: Goal) -> Row {
        self.goal = Some(goal);
        self
    }

    pub fn failed(mut self, error: String) -> Row {
        self.error = Some(error);
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        match (self.direct, self.relay) {
            (Some(d), Some(r)) if d > 0.0 => Some(r / d),
            _ => None,
        }
    }

    /// PASS, MISS, or nothing when the row has no target.
    pub fn verdict(&self) -> Option<bool> {
        let goal = self.goal?;
        if self.error.is_some() {
            return Some(false);
        }
        Some(match goal {
            Goal::RatioAtMost(max) => self.ratio().is_some_and(|r| r <= max),
            Goal::RatioAtLeast(min) => self.ratio().is_some_and(|r| r >= min),
            Goal::AtMost(max) => self.relay.is_some_and(|v| v <= max),
            Goal::Succeeds => self.relay.is_some(),
        })
    }
}

/// Renders the rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    table_named(rows, "direct", "relay")
}

/// The same, with the two columns (a row's `direct` and `relay`) named otherwise: the TLS rows
/// compare plain with TLS through the same relay. Without a target in any row, the target
/// and result columns are left out.
pub fn table_named(rows: &[Row], left: &str, right: &str) -> String {
    let goals = rows.iter().any(|r| r.goal.is_some());
    let mut s = String::new();
    let _ = write!(
        s,
        "| workload | metric | {left} | {right} | ratio {right} ÷ {left} |"
    );
    let _ = writeln!(s, "{}", if goals { " target | result |" } else { "" });
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|{}",
        if goals { "---|---|" } else { "" }
    );
    for r in rows {
        let cell = |v: Option<f64>| v.map_or_else(|| "—".to_string(), |v| r.unit.format(v));
        let relay = match &r.error {
            Some(e) => format!("FAILED: {}", e.replace('|', "/").replace('\n', " ")),
            None => cell(r.relay),
        };
        let ratio = r
            .ratio()
            .map_or_else(|| "—".to_string(), |x| format!("{x:.2}×"));
        let goal = r
            .goal
            .map_or_else(String::new, |g| g.describe(r.unit.name()));
        let verdict = match r.verdict() {
            Some(true) => "PASS",
            Some(false) => "**MISS**",
            None => "",
        };
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {} |",
            r.workload,
            r.metric,
            cell(r.direct),
            relay,
            ratio
        );
        if goals {
            let _ = write!(s, " {goal} | {verdict} |");
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_format() {
        let r = Row::new("w", "p50", Unit::Micros)
            .values(Some(10.0), Some(15.0))
            .goal(Goal::RatioAtMost(1.6));
        assert_eq!(r.verdict(), Some(true));
        let r = Row::new("w", "tput", Unit::ReqPerSec)
            .values(Some(1000.0), Some(500.0))
            .goal(Goal::RatioAtLeast(0.6));
        assert_eq!(r.verdict(), Some(false));
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        let t = table(std::slice::from_ref(&r));
        assert!(t.contains("0.50×") && t.contains("**MISS**"));
        let untargeted = Row { goal: None, ..r };
        let t = table_named(&[untargeted], "plain", "TLS");
        assert!(t.starts_with("| workload | metric | plain | TLS | ratio TLS ÷ plain |\n"));
        assert!(t.ends_with("| w | tput | 1,000 req/s | 500 req/s | 0.50× |\n"));
    }
}
