//! Subvolume lifecycle on real hosts: create, list, info, resize, rename,
//! delete, on XFS and btrfs.

use crate::harness::*;
use crate::require_privileges;
use std::path::Path;

fn lifecycle(kind: HostKind) {
    let host = TestHost::new(kind, "6G");
    let c = host.run(&["create", "web", "--size", "1G", "--json"]).json();
    assert_eq!(c["name"], "web");
    assert_eq!(c["fs"], "xfs");
    assert_eq!(c["type"], "subvolume");
    host.run(&["create", "db", "--size", "512M", "--fs", "ext4", "--mkfs-opt=-L", "--mkfs-opt=dbdata"]).ok();
    host.run(&["create", "vm", "--size", "2G", "--fs", "raw"]).ok();
    let list = host.run(&["list", "--json"]).json();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["db", "vm", "web"]);
    for s in list.as_array().unwrap() {
        let alloc = s["allocated_bytes"].as_u64().unwrap();
        let size = s["virtual_size_bytes"].as_u64().unwrap();
        assert!(alloc < size / 4, "{} is not sparse: {alloc} of {size}", s["name"]);
        assert!(s["image"].as_str().unwrap().starts_with(path_str(&host.pool)));
        assert!(s["created"].as_str().unwrap().ends_with('Z'));
        assert!(s["mount_point"].is_null());
    }
    let table = host.run(&["list"]).ok();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("web") && table.contains("ext4"));
    let db_label = sh("blkid", &["-o", "value", "-s", "LABEL", host.info("db")["image"].as_str().unwrap()]);
    assert_eq!(db_label.trim(), "dbdata");

    // Offline grow of each kind; the filesystem grows too.
    host.run(&["resize", "web", "2G"]).ok();
    host.run(&["resize", "db", "1G"]).ok();
    host.run(&["resize", "vm", "3G"]).ok();
    assert_eq!(host.info("web")["virtual_size_bytes"], 2u64 << 30);
    assert_eq!(host.info("vm")["virtual_size_bytes"], 3u64 << 30);
    let web_img = host.info("web")["image"].as_str().unwrap().to_string();
    let dblocks = sh("xfs_db", &["-r", "-c", "sb 0", "-c", "print dblocks", &web_img]);
    let blocks: u64 = dblocks.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(blocks * 4096, 2u64 << 30, "xfs did not grow: {dblocks}");
    let db_img = host.info("db")["image"].as_str().unwrap().to_string();
    let dump = sh("dumpe2fs", &["-h", &db_img]);
    let count: u64 = dump
        .lines()
        .find(|l| l.starts_with("Block count:"))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(count * 4096, 1u64 << 30, "ext4 did not grow");
    // Growing to the same size again is a no-op that succeeds.
    host.run(&["resize", "web", "2G"]).ok();

    host.run(&["rename", "web", "www"]).ok();
    host.run(&["info", "web"]).fails(3, "no subvolume");
    let guid_before = c["guid"].as_str().unwrap().to_string();
    assert_eq!(host.info("www")["guid"], guid_before.as_str(), "rename must keep the identity");
    host.run(&["rename", "www", "db"]).fails(4, "already exists");
    for n in ["www", "db", "vm"] {
        host.run(&["delete", n]).ok();
    }
    assert!(host.run(&["list", "--json"]).json().as_array().unwrap().is_empty());
    assert!(std::fs::read_dir(host.pool.join(".subvol/tmp")).unwrap().next().is_none(), "temp files left behind");
}

#[test]
fn lifecycle_on_xfs_host() {
    require_privileges!("lifecycle_on_xfs_host");
    lifecycle(HostKind::Xfs);
}

#[test]
fn lifecycle_on_btrfs_host() {
    require_privileges!("lifecycle_on_btrfs_host");
    lifecycle(HostKind::Btrfs);
}

#[test]
fn interrupted_create_leaves_no_trace() {
    require_privileges!("interrupted_create_leaves_no_trace");
    let host = TestHost::xfs();
    // A crashed create leaves an image in the tmp dir; the next mutating
    // command removes it, and it never shows as a subvolume.
    let stale = host.pool.join(".subvol/tmp/create.ghost.123456789abc.img");
    std::fs::write(&stale, b"partial").unwrap();
    assert!(host.run(&["list", "--json"]).json().as_array().unwrap().is_empty());
    host.run(&["create", "real", "--size", "300M"]).ok();
    assert!(!stale.exists(), "stale temp image survived a mutating command");
}

/// Every mutating call may be retried (a crash, a timeout, Kubernetes):
/// finding the pool as asked is success, reported as such; finding
/// something else under the name is still refused.
#[test]
fn retried_calls_succeed_and_say_so() {
    require_privileges!("retried_calls_succeed_and_say_so");
    let host = TestHost::new(HostKind::Xfs, "3G");
    let outcome = |args: &[&str]| host.run(args).json()["outcome"].as_str().unwrap().to_string();
    assert_eq!(outcome(&["create", "a", "--size", "300M", "--json"]), "done");
    let before = tree_state(&host.pool);
    assert_eq!(outcome(&["create", "a", "--size", "300M", "--json"]), "already_done");
    assert!(host.run(&["create", "a", "--size", "300M"]).ok().starts_with("already created: a"));
    host.run(&["create", "a", "--size", "400M"]).fails(4, "already exists as 300M xfs (asked: 400M xfs)");
    host.run(&["create", "a", "--size", "300M", "--guarantee"]).fails(4, "(asked: 300M xfs guaranteed)");
    assert_eq!(tree_state(&host.pool), before);

    let snap = |args: &[&str]| host.run(args).json()[0]["outcome"].as_str().unwrap().to_string();
    assert_eq!(snap(&["snapshot", "a@s", "--json"]), "done");
    assert_eq!(snap(&["snapshot", "a@s", "--json"]), "already_done");
    // A snapshot of an earlier `a` is not this one.
    host.run(&["create", "b", "--size", "300M"]).ok();
    host.run(&["snapshot", "b@s"]).ok();
    host.run(&["snapshot", "a@t"]).ok();
    host.run(&["snapshot", "a@t", "b@t"]).fails(4, "not all the others do");
    host.run(&["delete", "b", "--keep-snapshots"]).ok();
    host.run(&["create", "b", "--size", "300M"]).ok();
    host.run(&["snapshot", "b@s"]).fails(4, "taken from an earlier subvolume");

    assert_eq!(outcome(&["clone", "a@s", "c", "--json"]), "done");
    assert_eq!(outcome(&["clone", "a@s", "c", "--json"]), "already_done");
    host.run(&["clone", "a@t", "c"]).fails(4, "not a clone of a@t");

    assert!(host.run(&["hold", "a@s", "keep"]).ok().starts_with("held"));
    assert!(host.run(&["hold", "a@s", "keep"]).ok().starts_with("already held"));
    assert!(host.run(&["release", "a@s", "keep"]).ok().starts_with("released"));
    assert!(host.run(&["release", "a@s", "keep"]).ok().contains("nothing released"));

    assert!(host.run(&["rename", "c", "d"]).ok().starts_with("renamed"));
    assert!(host.run(&["rename", "c", "d"]).ok().starts_with("already renamed"));
    host.run(&["rename", "c", "e"]).fails(3, "no subvolume");

    assert!(host.run(&["delete", "d"]).ok().starts_with("deleted"));
    assert!(host.run(&["delete", "d"]).ok().contains("not there; nothing deleted"));
    assert!(host.run(&["delete", "a@t"]).ok().starts_with("deleted"));
    assert!(host.run(&["delete", "a@t"]).ok().contains("not there"));
    // --recursive finishes what a crash left: snapshots of a gone subvolume.
    host.run(&["delete", "b", "--keep-snapshots"]).ok();
    assert!(host.run(&["delete", "b", "--recursive"]).ok().starts_with("deleted"));
    host.run(&["info", "b@s"]).fails(3, "no snapshot");
}

/// The bash completion script, sourced in bash, completes subvolume and
/// snapshot names from the pool named on the command line.
#[test]
fn bash_completion_offers_names_from_the_pool() {
    require_privileges!("bash_completion_offers_names_from_the_pool");
    let host = TestHost::new(HostKind::Xfs, "2G");
    host.run(&["create", "web", "--size", "8M", "--fs", "raw"]).ok();
    host.run(&["create", "db", "--size", "8M", "--fs", "raw"]).ok();
    host.run(&["snapshot", "web@s1"]).ok();
    host.run(&["snapshot", "web@s2"]).ok();
    let dir = tempdir();
    let script = dir.path().join("subvol.bash");
    std::fs::write(&script, host.run(&["completions", "bash"]).ok()).unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let complete = |line: &str| -> Vec<String> {
        let code = format!(
            r#"source {script}
line={line:?}
read -ra COMP_WORDS <<<"$(sed 's/@/ @ /g' <<<"$line")"
[[ $line == *" " ]] && COMP_WORDS+=("")
[[ $line == *@ ]] && COMP_WORDS+=("")
COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE=$line; COMP_POINT=${{#line}}
_subvol_names subvol "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}" | grep -v '^-' | sort -u"#,
            script = script.display()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &code])
            .env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(String::from).collect()
    };
    let pool = path_str(&host.pool);
    assert_eq!(complete(&format!("subvol --pool {pool} info w")), ["web", "web@s1", "web@s2"]);
    assert_eq!(complete(&format!("subvol --pool {pool} send web@")), ["s1", "s2"]);
    assert_eq!(complete(&format!("subvol --pool {pool} send web@s2 --from web@s")), ["s1", "s2"]);
    assert_eq!(complete(&format!("subvol --pool {pool} mount d")), ["db"]);
    // No names where a new name or a size goes.
    assert!(complete(&format!("subvol --pool {pool} create w")).is_empty());
    assert!(complete(&format!("subvol --pool {pool} send web@s2 -o ")).iter().all(|w| !w.starts_with("web")));
}

/// A man page for every command, made from the `--help` definitions, that
/// `man` renders without a warning.
#[test]
fn man_pages_render_without_warnings() {
    if !have("man") {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "man is missing, but CI=true forbids skipping");
        eprintln!("SKIPPED man_pages_render_without_warnings: needs man (man-db)");
        return;
    }
    let dir = tempdir();
    let listed = subvol(dir.path(), &["man", "--dir", path_str(dir.path())]).ok();
    let pages: Vec<&str> = listed.lines().collect();
    for cmd in ["subvol.1", "subvol-create.1", "subvol-send.1", "subvol-pool-init.1", "subvol-completions.1"] {
        assert!(pages.iter().any(|p| p.ends_with(&format!("/{cmd}"))), "no {cmd} in {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("complete-names")), "a hidden command got a page");
    for page in pages {
        let out = std::process::Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l", page])
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && out.stderr.is_empty(), "{page}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("SYNOPSIS"), "{page} rendered empty");
    }
    // Without --dir, subvol(1) on stdout.
    assert!(subvol(dir.path(), &["man"]).ok().starts_with(".ie \\n(.g"), "not roff");
}

/// When `xfs_growfs` fails after the image grew (a full host, a kernel
/// refusal), the image is shrunk back and the filesystem is as it was. A
/// stand-in xfs_growfs that fails is put first on PATH.
#[test]
fn failed_xfs_growfs_shrinks_the_image_back() {
    require_privileges!("failed_xfs_growfs_shrinks_the_image_back");
    let host = TestHost::new(HostKind::Xfs, "2G");
    host.run(&["create", "a", "--size", "300M"]).ok();
    let mp = mount(&host, "a");
    let data = write_data(&mp.join("f"), 7, 1 << 20);
    let fake = tempdir();
    let tool = fake.path().join("xfs_growfs");
    std::fs::write(
        &tool,
        "#!/bin/sh\necho 'xfs_growfs: XFS_IOC_FSGROWFSDATA xfsctl failed: No space left on device' >&2\nexit 1\n",
    )
    .unwrap();
    sh("chmod", &["+x", path_str(&tool)]);
    let path = format!("{}:{}", fake.path().display(), std::env::var("PATH").unwrap_or_default());
    let r = subvol_env(&host.pool, &["resize", "a", "400M"], &[("PATH", &path)]);
    let r = r.fails(6, "the image was shrunk back to 300M, nothing changed");
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    let info = host.info("a");
    assert_eq!(info["virtual_size_bytes"], 300u64 << 20);
    let img = info["image"].as_str().unwrap();
    assert_eq!(std::fs::metadata(img).unwrap().len(), 300 << 20);
    assert_eq!(hash_file(&mp.join("f")), data);
    // With the real tool it grows.
    host.run(&["resize", "a", "400M"]).ok();
    assert_eq!(host.info("a")["virtual_size_bytes"], 400u64 << 20);
}
