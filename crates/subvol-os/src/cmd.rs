//! Running the external filesystem tools (mkfs, xfs_growfs, resize2fs...)
//! with errors that name the missing package.

use crate::error::{OsError, OsResult};
use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// Runs `tool args...`, capturing output. A missing binary becomes
/// `MissingTool` naming `package`; a non-zero exit becomes `ToolFailed` with
/// the last line of stderr.
pub fn run<I, S>(tool: &str, package: &str, args: I) -> OsResult<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(resolve(tool)).args(args).stdin(Stdio::null()).env("LC_ALL", "C").output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            OsError::MissingTool { tool: tool.to_string(), package: package.to_string() }
        } else {
            OsError::sys("exec", Some(std::path::Path::new(tool)), e)
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // A line naming a full device says what went wrong (the tool may
        // go on to print a summary); otherwise the last non-empty line
        // (stderr after stdout) does.
        let mut lines = stdout.lines().chain(stderr.lines()).map(str::trim).filter(|l| !l.is_empty());
        let msg = lines.clone().find(|l| crate::error::names_full_device(l)).or_else(|| lines.next_back());
        let msg = msg.unwrap_or("").to_string();
        return Err(OsError::ToolFailed { tool: tool.to_string(), status: out.status.to_string(), stderr: msg });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `tool` can be found on PATH (or as an absolute path).
pub fn have(tool: &str) -> bool {
    if tool.contains('/') {
        return std::path::Path::new(tool).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]).any(|d| d.join(tool).is_file())
}

/// Finds `tool` on PATH, falling back to the sbin directories that a
/// non-login root shell may lack.
fn resolve(tool: &str) -> std::path::PathBuf {
    if tool.contains('/') {
        return tool.into();
    }
    search_dirs().into_iter().map(|d| d.join(tool)).find(|p| p.is_file()).unwrap_or_else(|| tool.into())
}

/// PATH, then the sbin directories a non-login root shell may lack.
/// `SUBVOL_TOOL_FALLBACK_DIRS` (colon-separated, may be empty) replaces that
/// fallback list, for systems with tools elsewhere and for tests.
fn search_dirs() -> Vec<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let fallback = std::env::var_os("SUBVOL_TOOL_FALLBACK_DIRS").unwrap_or_else(|| "/usr/sbin:/sbin".into());
    std::env::split_paths(&path).chain(std::env::split_paths(&fallback)).filter(|d| !d.as_os_str().is_empty()).collect()
}
