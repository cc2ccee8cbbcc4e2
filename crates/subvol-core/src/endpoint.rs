//! Where one side of a `sync` lives: `NAME`, `/POOLDIR:NAME` or
//! `[user@]host:[/POOLDIR:]NAME`.
//!
//! An endpoint ends up on an ssh command line and in a pool's sync-target
//! records, and is printed back to people, so it is checked as strictly as
//! a name: the host cannot pass for an ssh option, and nothing in it can
//! drive a terminal.

use crate::name::{NameError, ObjectName};
use crate::text::{self, TextError};
use std::fmt;
use std::path::PathBuf;

/// Longest endpoint text accepted (a path plus a host and a name).
pub const MAX_ENDPOINT_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{0:?} is not NAME, /POOLDIR:NAME or [user@]host:[/POOLDIR:]NAME")]
    Form(String),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Text(#[from] TextError),
}

/// One side of a sync.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `[user@]host` of a remote side; `None` for this machine.
    pub host: Option<String>,
    /// The pool directory (default: the local `--pool`, or the remote's default).
    pub pool: Option<PathBuf>,
    /// The subvolume.
    pub name: String,
}

impl Endpoint {
    /// Parses `NAME`, `/POOLDIR:NAME` or `[user@]host:[/POOLDIR:]NAME`.
    pub fn parse(s: &str) -> Result<Endpoint, EndpointError> {
        text::validate("the endpoint", s, MAX_ENDPOINT_LEN)?;
        let bad = || EndpointError::Form(s.to_string());
        let (host, rest) = match s.split_once(':') {
            Some((h, r)) if !h.starts_with('/') => (Some(h.to_string()), r),
            _ => (None, s),
        };
        if let Some(h) = &host {
            // A leading '-' would reach ssh as an option.
            if h.is_empty() || h.starts_with('-') || h.contains(char::is_whitespace) {
                return Err(bad());
            }
        }
        let (pool, name) = match rest.rsplit_once(':') {
            Some((p, n)) if p.starts_with('/') => (Some(PathBuf::from(p)), n),
            Some(_) => return Err(bad()),
            None => (None, rest),
        };
        let name = ObjectName::parse_subvolume(name)?.subvolume;
        Ok(Endpoint { host, pool, name })
    }

    pub fn is_remote(&self) -> bool {
        self.host.is_some()
    }
}

/// The endpoint as it is written on a command line (and parsed back).
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(h) = &self.host {
            write!(f, "{h}:")?;
        }
        if let Some(p) = &self.pool {
            write!(f, "{}:", p.display())?;
        }
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn parses_every_form_and_prints_it_back() {
        let e = Endpoint::parse("web").unwrap();
        assert_eq!((e.host.as_deref(), e.pool.as_deref(), e.name.as_str()), (None, None, "web"));
        let e = Endpoint::parse("/srv/pool:web").unwrap();
        assert_eq!((e.host.as_deref(), e.pool.as_deref()), (None, Some(Path::new("/srv/pool"))));
        let e = Endpoint::parse("root@backup:web").unwrap();
        assert_eq!((e.host.as_deref(), e.pool.as_deref()), (Some("root@backup"), None));
        let e = Endpoint::parse("backup:/var/lib/subvol:web").unwrap();
        assert_eq!(
            (e.host.as_deref(), e.pool.as_deref(), e.name.as_str()),
            (Some("backup"), Some(Path::new("/var/lib/subvol")), "web")
        );
        for s in ["web", "/srv/pool:web", "root@backup:web", "backup:/var/lib/subvol:web", "/a:b:web"] {
            assert_eq!(Endpoint::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_what_is_no_endpoint() {
        for bad in ["", "host:", "host:rel/pool:web", "-oProxyCommand=x:web", "a:b:c", "web@snap", "/p:../x"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(Endpoint::parse("a b:web"), Err(EndpointError::Form(_))));
        let e = Endpoint::parse("host:/p\u{1b}[2J:web").unwrap_err().to_string();
        assert!(e.contains("\\u{1b}") && !e.contains('\u{1b}'), "{e}");
        assert!(matches!(Endpoint::parse(&format!("h:/{}:w", "p".repeat(5000))), Err(EndpointError::Text(_))));
    }
}
