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

/// Where an encrypted subvolume's key comes from.
#[derive(Args, Debug, Clone)]
#[group(multiple = false)]
pub struct KeyArgs {
    /// A file of exactly 64 random bytes, mode 600 (`head -c 64 /dev/urandom`).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// A file holding a passphrase of 8-512 bytes (one trailing newline is
    /// dropped), mode 600; stretched with Argon2id.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
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
        /// Reserve the whole size: it can always be written (checked against free space).
        #[arg(long)]
        guarantee: bool,
        /// XFS host: allocate the image in chunks of this size (fewer extents,
        /// cheaper snapshots and diffs; 0 turns it off).
        #[arg(long, value_name = "SIZE", default_value = "1M")]
        extent_hint: String,
        /// --fs raw without --guarantee in an overcommitted pool: accept that
        /// its user (a VM) may get I/O errors when the host fills (the guard
        /// cannot freeze a raw image).
        #[arg(long)]
        thin_unsafe: bool,
        /// Encrypt its files with the kernel's fscrypt (ext4 only), with the
        /// key from --key-file or --passphrase-file.
        #[arg(long)]
        encrypt: bool,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Load an encrypted subvolume's key (mounting it first if it is not
    /// mounted): its file names and contents become readable.
    Unlock {
        name: String,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove an encrypted subvolume's key, then mount it again where it
    /// was, with nothing decrypted left in memory.
    Lock {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List subvolumes (and, with --snapshots, their snapshots).
    List {
        /// Only this subvolume (and its snapshots).
        name: Option<String>,
        /// Include snapshots, listed with their origin.
        #[arg(long, short = 's')]
        snapshots: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one subvolume or snapshot (NAME or NAME@SNAP).
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
    /// Delete a subvolume or a snapshot (NAME@SNAP).
    Delete {
        name: String,
        /// Unmount it first if mounted.
        #[arg(long)]
        force: bool,
        /// Delete the subvolume's snapshots too.
        #[arg(long, short = 'r', conflicts_with = "keep_snapshots")]
        recursive: bool,
        /// Delete only the subvolume; its snapshots stay (rollback brings it back).
        #[arg(long)]
        keep_snapshots: bool,
    },
    /// Take consistent read-only snapshots (several names: one point in time).
    Snapshot {
        /// NAME or NAME@SNAP; SNAP defaults to the UTC time.
        #[arg(required = true)]
        names: Vec<String>,
        /// Tag the snapshots (repeatable), e.g. for prune --tag.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Make a writable subvolume from a snapshot.
    Clone {
        snapshot: String,
        new_name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Return a subvolume to a snapshot (a pre-rollback snapshot is taken first).
    Rollback {
        snapshot: String,
        /// Unmount the subvolume first and mount it again after.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Hold a snapshot: it cannot be deleted or pruned until released.
    Hold { snapshot: String, tag: String },
    /// Release a hold.
    Release { snapshot: String, tag: String },
    /// Delete snapshots that the keep-rules do not keep.
    Prune {
        name: String,
        #[arg(long, value_name = "N")]
        keep_last: Option<u32>,
        #[arg(long, value_name = "N")]
        keep_hourly: Option<u32>,
        #[arg(long, value_name = "N")]
        keep_daily: Option<u32>,
        #[arg(long, value_name = "N")]
        keep_weekly: Option<u32>,
        #[arg(long, value_name = "N")]
        keep_monthly: Option<u32>,
        #[arg(long, value_name = "N")]
        keep_yearly: Option<u32>,
        /// Only consider snapshots with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Show what would be deleted, and why the rest is kept.
        #[arg(long, short = 'n')]
        dry_run: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Snapshot and prune by each subvolume's snapshot.policy (for timers).
    Autosnap {
        names: Vec<String>,
        /// One line per subvolume: the sentence (text), key=value pairs (kv)
        /// or JSON (json), with its numbers.
        #[arg(long, value_enum, default_value = "text")]
        log_format: crate::logline::LogFormat,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Set a property: snapshot.policy=daily=7,... or a user property (with ':').
    Set { name: String, assignment: String },
    /// Show properties.
    Get {
        name: String,
        property: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Write a snapshot as a stream (full, or incremental with --from).
    Send {
        /// NAME@SNAP to send.
        snapshot: String,
        /// Send only what changed since this older snapshot.
        #[arg(long, value_name = "NAME@BASE")]
        from: Option<String>,
        /// Compress records with zstd (level 1-19, default 3).
        #[arg(long, value_name = "LEVEL", num_args = 0..=1, require_equals = true, default_missing_value = "3")]
        compress: Option<i32>,
        /// Encrypt to this age recipient (age1..., repeatable).
        #[arg(long = "encrypt-to", value_name = "RECIPIENT")]
        encrypt_to: Vec<String>,
        /// Encrypt with the passphrase in this file (first line).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Write to FILE instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace an existing -o FILE (only once the new stream is complete).
        #[arg(long, requires = "output")]
        force: bool,
        /// Continue an interrupted stream from the receiver's token.
        #[arg(long, value_name = "TOKEN")]
        resume: Option<String>,
        /// Only print how many bytes the stream would carry.
        #[arg(long)]
        estimate: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Read a stream from standard input into subvolume NAME.
    Receive {
        name: String,
        /// Keep a resumable state if the stream breaks off (and continue one).
        #[arg(long)]
        resume: bool,
        /// Drop a partial (resumable) receive into NAME.
        #[arg(long)]
        abort: bool,
        /// Print the resume token of a partial receive into NAME.
        #[arg(long)]
        token: bool,
        /// Roll NAME back to the stream's base first if it moved on.
        #[arg(long)]
        force: bool,
        /// age identity file for encrypted streams (repeatable).
        #[arg(long, value_name = "FILE")]
        identity: Vec<PathBuf>,
        /// Passphrase file for passphrase-encrypted streams.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Read from FILE instead of standard input.
        #[arg(long = "input", value_name = "FILE")]
        input: Option<PathBuf>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Replicate SRC to DST: snapshot, send the increment, hold the new base.
    ///
    /// Without DST, sync SRC again to every destination it was synced to.
    Sync {
        /// NAME, POOLDIR:NAME, or [user@]host:[POOLDIR:]NAME.
        #[arg(required_unless_present = "list")]
        src: Option<String>,
        /// NAME, POOLDIR:NAME, or [user@]host:[POOLDIR:]NAME; omitted: the
        /// destinations SRC was synced to before (see --list).
        dst: Option<String>,
        /// Show where SRC (or every subvolume) was synced to: last sync, its
        /// size, the lag behind the source, the last error. Contacts nothing.
        #[arg(long, conflicts_with_all = ["dst", "bwlimit", "compress", "forget"])]
        list: bool,
        /// Forget destination DST of SRC (it is no longer synced by `sync SRC`).
        #[arg(long, requires = "dst", conflicts_with_all = ["bwlimit", "compress"])]
        forget: bool,
        /// Limit the transfer rate, e.g. 10M (bytes per second).
        #[arg(long, value_name = "RATE")]
        bwlimit: Option<String>,
        /// Compress the stream (zstd level 3).
        #[arg(long)]
        compress: bool,
        /// Extra ssh option (repeatable), e.g. --ssh-opt=-p --ssh-opt=2222.
        #[arg(long = "ssh-opt", value_name = "OPT", allow_hyphen_values = true)]
        ssh_opt: Vec<String>,
        /// The subvol command on remote hosts.
        #[arg(long, value_name = "PATH", default_value = "subvol")]
        remote_bin: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Watch free space; freeze thin subvolumes before the host fills up.
    ///
    /// Stopped (SIGTERM, SIGINT), it thaws what it froze: nothing watches
    /// the host after it.
    Guard {
        /// Check once and exit; what it froze stays frozen (recorded) until
        /// a later check thaws it.
        #[arg(long)]
        once: bool,
        /// Poll interval in milliseconds.
        #[arg(long, default_value_t = 100, value_name = "MS")]
        interval_ms: u64,
        /// Freeze below this much headroom (default: the pool's margin).
        #[arg(long, value_name = "SIZE")]
        low_watermark: Option<String>,
        /// Thaw above this much headroom (default: low + 5% of capacity).
        #[arg(long, value_name = "SIZE")]
        high_watermark: Option<String>,
        /// Allow pruning snapshots by their snapshot.policy to reclaim space.
        #[arg(long)]
        prune: bool,
        /// One line per event: the sentence (text), key=value pairs (kv) or
        /// JSON (json), with its numbers.
        #[arg(long, value_enum, default_value = "text")]
        log_format: crate::logline::LogFormat,
    },
    /// Give space freed inside mounted subvolumes back to the host (FITRIM).
    Trim {
        names: Vec<String>,
        /// All mounted subvolumes.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Mount a subvolume (default: under the pool's mount base); snapshots read-only.
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
    Umount {
        name: String,
        /// Also release an earlier image of NAME that was deleted while
        /// mounted (unmounted lazily if its files are open, then detached).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Verify snapshots against their manifests: every chunk is read (each
    /// shared block once) and compared with what the snapshot held.
    Scrub {
        /// NAME (its snapshots) or NAME@SNAP.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Every snapshot in the pool.
        #[arg(long)]
        all: bool,
        /// Say nothing about live subvolumes (they have no manifest).
        #[arg(long)]
        snapshots_only: bool,
        /// Read at most this many bytes per second, e.g. 50M.
        #[arg(long, value_name = "RATE")]
        bwlimit: Option<String>,
        /// I/O class of the reads: idle (served when nothing else waits) or
        /// best-effort (like other programs).
        #[arg(long, value_name = "CLASS", default_value = "idle", value_parser = ["idle", "best-effort"])]
        io_class: String,
        /// Start from the beginning, not where an interrupted scrub stopped.
        #[arg(long)]
        restart: bool,
        /// Repair the damage found from a replica holding the same snapshots:
        /// a pool directory here, or HOST:/POOLDIR over ssh (HOST: for its
        /// default pool). Only chunks that match this pool's manifests are written.
        #[arg(long, value_name = "[HOST:]POOL")]
        repair_from: Option<String>,
        /// Extra ssh option for --repair-from (repeatable), e.g. --ssh-opt=-p --ssh-opt=2222.
        #[arg(long = "ssh-opt", value_name = "OPT", allow_hyphen_values = true, requires = "repair_from")]
        ssh_opt: Vec<String>,
        /// The subvol command on the replica's host.
        #[arg(long, value_name = "PATH", default_value = "subvol")]
        remote_bin: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Check what an admin pages on (late snapshots, frozen writers, low
    /// space, no guard, unfinished receives, pool check problems); exit 0 OK,
    /// 1 WARNING, 2 CRITICAL, 3 UNKNOWN, as monitoring plugins do.
    Health {
        /// Warn when a subvolume's newest snapshot is older than this (e.g.
        /// 25h, 2d); default: 1.5 intervals of its snapshot.policy.
        #[arg(long, value_name = "AGE")]
        warn_age: Option<String>,
        /// Critical past this age; default: 3 intervals of its policy.
        #[arg(long, value_name = "AGE")]
        crit_age: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Print the pool's metrics in the Prometheus text format (for the
    /// node_exporter textfile collector).
    Metrics {
        /// Write to FILE atomically (mode 0644) instead of standard output.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print a completion script for bash, zsh or fish (it also completes
    /// subvolume and snapshot names from the pool).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page per command into DIR (default: print subvol(1)).
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Serve the CSI driver (Kubernetes and other COs) on a Unix socket:
    /// Identity, Controller and Node for this node's pool (docs/CSI.md).
    Csi {
        /// The socket: unix:///path/csi.sock (or the plain path).
        #[arg(long, value_name = "ENDPOINT")]
        endpoint: String,
        /// This node's name: its volumes' topology (topology.subvol.io/node).
        #[arg(long, value_name = "NODE")]
        node_id: String,
        /// The most volumes this node takes, as NodeGetInfo reports it
        /// (0: no limit of the driver's own).
        #[arg(long, value_name = "N", default_value_t = 0)]
        max_volumes: i64,
    },
    /// Build the manifests of new snapshots (NAME@SNAP...): what a snapshot
    /// starts in the background.
    #[command(hide = true)]
    BuildManifests { names: Vec<String> },
    /// Write chunks of the snapshot with GUID (a chunk-read reply, for
    /// `scrub --repair-from` on another host).
    #[command(hide = true)]
    ReadChunks {
        guid: String,
        /// Chunk indices, e.g. 0-3,17.
        #[arg(long)]
        chunks: String,
    },
    /// Subvolume and snapshot names, one per line, for completion scripts.
    #[command(hide = true)]
    CompleteNames {
        #[arg(long)]
        snapshots: bool,
    },
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
    /// Verify the pool; with --repair, fix what is safe to fix.
    Check {
        /// Fix what is safe to fix, and say what was done.
        #[arg(long)]
        repair: bool,
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
    /// Destroy the pool at DIR: every subvolume and snapshot, its metadata
    /// and, for a backing-image pool, the backing image.
    Destroy {
        dir: PathBuf,
        /// Unmount mounted subvolumes and drop holds instead of refusing.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}
