//! Command-line grammar. This is a public contract: flags may be added,
//! never renamed.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "subvol",
    version,
    about = "Subvolumes, snapshots and replication on image files",
    propagate_version = true
)]
pub struct Cli {
    /// The pool directory.
    #[arg(long, global = true, env = "SUBVOL_POOL", default_value = "/var/lib/subvol")]
    pub pool: PathBuf,
    /// Seconds to wait for another subvol command to release the pool lock.
    #[arg(long, global = true, default_value_t = 300, value_name = "SECONDS")]
    pub lock_timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct JsonFlag {
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, inspect and mount pools.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Create a subvolume: a sparse image with a fresh filesystem.
    Create {
        name: String,
        /// Virtual size, e.g. 512M, 10G, 1.5T or plain bytes.
        #[arg(long)]
        size: String,
        /// Filesystem inside the image.
        #[arg(long, default_value = "xfs", value_parser = ["xfs", "ext4", "raw"])]
        fs: String,
        /// Extra option for mkfs (repeatable), e.g. --mkfs-opt=-L --mkfs-opt=data.
        #[arg(long = "mkfs-opt", value_name = "OPT", allow_hyphen_values = true)]
        mkfs_opt: Vec<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List subvolumes.
    List {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one subvolume.
    Info {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Grow a subvolume and its filesystem (online if mounted).
    Resize {
        name: String,
        size: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Rename a subvolume (not while mounted).
    Rename { old: String, new: String },
    /// Delete a subvolume.
    Delete {
        name: String,
        /// Unmount it first if mounted.
        #[arg(long)]
        force: bool,
    },
    /// Mount a subvolume (default: under the pool's mount base).
    Mount {
        name: String,
        path: Option<PathBuf>,
        /// Mount read-only.
        #[arg(long)]
        ro: bool,
        /// Filesystem mount options, e.g. -o noatime,discard.
        #[arg(short = 'o', value_name = "OPTS")]
        options: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Unmount a subvolume.
    #[command(alias = "unmount")]
    Umount { name: String },
}

#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Make DIR a pool (with --backing-image, on its own XFS in a sparse file).
    Init {
        dir: PathBuf,
        /// Size of a sparse file holding an XFS (reflink=1) for the pool.
        #[arg(long, value_name = "SIZE")]
        backing_image: Option<String>,
        /// Path of that file (default: DIR.img beside DIR).
        #[arg(long, value_name = "FILE", requires = "backing_image")]
        backing_file: Option<PathBuf>,
        /// Default parent directory of mount points (default: DIR/mnt).
        #[arg(long, value_name = "DIR")]
        mount_base: Option<PathBuf>,
        /// Accept a directory that is not empty.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show the pool's space and state.
    Status {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Mount a backing-image pool at DIR (e.g. at boot).
    Mount {
        dir: PathBuf,
        /// The backing file (default: DIR.img beside DIR).
        #[arg(long, value_name = "FILE")]
        backing_file: Option<PathBuf>,
    },
    /// Unmount a backing-image pool.
    #[command(alias = "unmount")]
    Umount {
        dir: PathBuf,
        /// Unmount its mounted subvolumes first.
        #[arg(long)]
        force: bool,
    },
}
