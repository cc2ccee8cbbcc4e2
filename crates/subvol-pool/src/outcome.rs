//! What a mutating call did. Every such call may be retried (after a
//! crash, a timeout, or by Kubernetes, which retries every call): finding
//! the pool already as asked is success, and says so, rather than an
//! "already exists" or "not found" that the caller would have to decode.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The call made the change.
    Done,
    /// The pool already was as asked; nothing was changed.
    AlreadyDone,
}

impl Outcome {
    pub fn changed(self) -> bool {
        self == Outcome::Done
    }
}
