//! Phase timings for finding where a long operation spends its time: with
//! `SUBVOL_TRACE=1` in the environment, each phase mark prints
//! `subvol: trace <operation> <phase> <ms since the previous mark> ms` on stderr. Off (and
//! free) otherwise; nothing else depends on it.

use std::sync::OnceLock;
use std::time::Instant;

/// The environment variable that turns the trace on.
pub const ENV: &str = "SUBVOL_TRACE";

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(ENV).is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Times the phases of one operation.
pub struct PhaseClock {
    what: &'static str,
    last: Option<Instant>,
}

impl PhaseClock {
    pub fn start(what: &'static str) -> PhaseClock {
        PhaseClock { what, last: enabled().then(Instant::now) }
    }

    /// Ends the phase `phase`, printing its duration when tracing.
    pub fn mark(&mut self, phase: &str) {
        if let Some(last) = self.last {
            let now = Instant::now();
            eprintln!("subvol: trace {} {phase} {:.1} ms", self.what, (now - last).as_secs_f64() * 1e3);
            self.last = Some(now);
        }
    }
}

/// Prints `subvol: trace <operation> <what>` when tracing: which of several
/// ways an operation took (tests assert on it; nothing else reads it).
pub fn note(operation: &str, what: &str) {
    if enabled() {
        eprintln!("subvol: trace {operation} {what}");
    }
}
