//! The one table from subvol's error kinds to gRPC status codes. Every
//! pool error a call meets leaves the driver through here, with the pool's
//! one-line message (which names the fix) as the status message.

use subvol_pool::{Error, ErrorKind};
use tonic::{Code, Status};

/// The gRPC code of a pool error kind (docs/CSI.md, "Error codes").
pub(crate) fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        // Mounted, attached, held, frozen, files open, the pool lock taken:
        // the request is sound but the volume is not in a state for it.
        ErrorKind::Busy => Code::FailedPrecondition,
        // The CO then tries another node.
        ErrorKind::NoSpace => Code::ResourceExhausted,
        ErrorKind::Unsupported => Code::FailedPrecondition,
        ErrorKind::Corrupt => Code::DataLoss,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::MissingTool => Code::FailedPrecondition,
        // No pool there (yet): its backing image not mounted, say.
        ErrorKind::NotInitialised => Code::Unavailable,
        ErrorKind::Io => Code::Internal,
    }
}

pub(crate) fn status(e: Error) -> Status {
    Status::new(code(e.kind), e.message)
}

/// A required field left empty.
pub(crate) fn missing(field: &str) -> Status {
    Status::invalid_argument(format!("{field} is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_the_spec_names() {
        assert_eq!(code(ErrorKind::NoSpace), Code::ResourceExhausted);
        assert_eq!(code(ErrorKind::AlreadyExists), Code::AlreadyExists);
        assert_eq!(code(ErrorKind::NotFound), Code::NotFound);
        assert_eq!(code(ErrorKind::InvalidArgument), Code::InvalidArgument);
        let s = status(Error::new(ErrorKind::Busy, "db is mounted at /x; umount it first"));
        assert_eq!((s.code(), s.message()), (Code::FailedPrecondition, "db is mounted at /x; umount it first"));
    }
}
