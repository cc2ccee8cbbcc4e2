//! Named crash points for crash-injection tests: when the environment
//! variable `SUBVOL_CRASH_AT` names a point, the process kills itself with
//! SIGKILL there, exactly as a power cut or an OOM kill would stop it. The
//! check is one environment lookup; nothing happens unless the variable is set.

/// Every crash point compiled into subvol, for harnesses to enumerate.
/// (A test checks this list against the `point("...")` calls in the source.)
pub const POINTS: &[&str] = &[
    "create-after-mkfs",
    "create-before-publish",
    "create-after-publish",
    "resize-after-truncate",
    "rename-after-intent",
    "rename-between-moves",
    "delete-before-unlink",
    "delete-snapshot-unprotected",
    "hold-unprotected",
    "snapshot-after-preclone",
    "snapshot-frozen",
    "snapshot-before-publish",
    "snapshot-before-protect",
    "clone-before-publish",
    "rollback-after-pre-snapshot",
    "rollback-before-replace",
    "prune-between-deletes",
    "receive-adopt-held",
    "receive-after-setup",
    "receive-mid-stream",
    "receive-before-publish",
    "receive-before-follow",
    "receive-adopt-released",
    "destroy-record-gone",
    "unlock-after-mount",
    "unlock-after-add-key",
    "lock-after-remove-key",
    "lock-after-umount",
    "repair-after-write",
];

/// The variable naming the crash point to die at.
pub const ENV: &str = "SUBVOL_CRASH_AT";

/// Dies with SIGKILL if `SUBVOL_CRASH_AT` equals `name`.
pub fn point(name: &str) {
    if std::env::var_os(ENV).is_some_and(|v| v == name) {
        let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // SIGKILL cannot be caught; if it somehow returned, stop anyway.
        std::process::abort();
    }
}
