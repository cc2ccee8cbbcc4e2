//! Man pages, rendered by clap_mangen from the definitions that also make
//! `--help`, so the two cannot drift: subvol(1), and subvol-CMD(1) for every
//! command (subvol-pool-init(1) for nested ones).

use clap::CommandFactory;
use std::path::{Path, PathBuf};
use subvol_pool::{Error, Result};

/// subvol(1) as roff.
pub fn main_page() -> Result<Vec<u8>> {
    render(crate::cli::Cli::command())
}

/// Writes every page into `dir`; returns the files written.
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let mut cmd = crate::cli::Cli::command();
    cmd.build();
    let mut pages = vec![("subvol".to_string(), cmd.clone())];
    collect(&cmd, "subvol", &mut pages);
    let mut written = Vec::new();
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let roff = render(page.name(name.clone()))?;
        std::fs::write(&path, roff).map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        written.push(path);
    }
    Ok(written)
}

/// Every visible subcommand below `cmd`, named `PREFIX-NAME`.
fn collect(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, clap::Command)>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let name = format!("{prefix}-{}", sub.get_name());
        out.push((name.clone(), sub.clone()));
        collect(sub, &name, out);
    }
}

fn render(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out).map_err(|e| Error::io("cannot render the man page", e))?;
    Ok(out)
}
