//! The verification pass of a scrub: every chunk of every member snapshot
//! against its manifest, each distinct chunk read once.
//!
//! Members are walked together, chunk position by chunk position, in
//! windows. At each position the members' chunk layouts (which host blocks
//! hold the chunk, from their extent maps) are grouped: members whose
//! chunk lives in the same blocks hold the same bytes, so the chunk is read
//! once, through one of them, and its entry compared with every member's
//! manifest. Snapshots of one subvolume share most blocks, so a scrub of
//! many costs about their unique data. Damage in a shared block is found
//! in every snapshot that has it.
//!
//! Manifests are held interned (a u32 per data chunk, one table of distinct
//! hashes): snapshots repeat each other's entries, and a thousand of them
//! would otherwise hold a thousand copies.

use crate::chunk_io::{Job, Outcome, Plan, MAX_READ};
use crate::error::Result;
use std::collections::{HashMap, VecDeque};
use subvol_core::chunks::{layouts, Layout};
use subvol_core::manifest::{Entry, Hash, Manifest};
use subvol_core::scrub::Fault;
use subvol_core::ExtentMap;

/// Bytes of chunk positions planned at once.
const WINDOW_BYTES: u64 = 32 << 20;

/// Distinct hashes of all members' manifests.
#[derive(Default)]
pub(crate) struct HashTable {
    hashes: Vec<Hash>,
    index: HashMap<Hash, u32>,
}

impl HashTable {
    fn intern(&mut self, h: &Hash) -> u32 {
        if let Some(&i) = self.index.get(h) {
            return i;
        }
        self.hashes.push(*h);
        let i = self.hashes.len() as u32;
        self.index.insert(*h, i);
        i
    }

    /// Whether `entry` is what interned value `want` (0: a zero chunk) stands for.
    fn matches(&self, want: u32, entry: &Entry) -> bool {
        match entry {
            Entry::Zero => want == 0,
            Entry::Data(h) => want > 0 && self.hashes.get(want as usize - 1) == Some(h),
        }
    }
}

/// One member's manifest, interned: data runs of table indices.
pub(crate) struct Interned {
    runs: Vec<(u64, Vec<u32>)>,
}

impl Interned {
    pub(crate) fn of(m: &Manifest, table: &mut HashTable) -> Interned {
        Interned {
            runs: m.data_runs().map(|(first, hs)| (first, hs.iter().map(|h| table.intern(h)).collect())).collect(),
        }
    }

    fn expected(&self, i: u64) -> u32 {
        let k = self.runs.partition_point(|(first, v)| first + v.len() as u64 <= i);
        match self.runs.get(k) {
            Some((first, v)) if *first <= i => v[(i - first) as usize],
            _ => 0,
        }
    }
}

/// A snapshot being verified.
pub(crate) struct Member {
    pub(crate) map: ExtentMap,
    pub(crate) size: u64,
    pub(crate) entries: Interned,
    /// Damaged chunks found, by position.
    pub(crate) damage: Vec<(u64, Fault)>,
}

/// One distinct chunk at one position, and who expects what of it.
struct Version {
    pos: u64,
    reader: usize,
    members: Vec<(usize, u32)>,
}

struct Window {
    seq: u64,
    end: u64,
    versions: Vec<Version>,
    remaining: usize,
}

/// The verification plan over all members, from chunk `next` on.
pub(crate) struct Verify<'a> {
    pub(crate) members: Vec<Member>,
    table: HashTable,
    chunk: u64,
    total: u64,
    planned: u64,
    /// Every chunk before it is verified in every member.
    pub(crate) completed: u64,
    windows: VecDeque<Window>,
    jobs: VecDeque<Job<(u64, u32)>>,
    seq: u64,
    on_completed: Option<&'a mut dyn FnMut(&Verify<'_>)>,
}

impl<'a> Verify<'a> {
    /// Verifies `members` (with `table` holding their hashes) in chunks of
    /// `chunk` bytes from chunk `next` on; `on_completed` is called each
    /// time `completed` advances.
    pub(crate) fn new(
        members: Vec<Member>,
        table: HashTable,
        chunk: u64,
        next: u64,
        on_completed: &'a mut dyn FnMut(&Verify<'_>),
    ) -> Self {
        let total = members.iter().map(|m| m.size.div_ceil(chunk)).max().unwrap_or(0);
        Verify {
            members,
            table,
            chunk,
            total,
            planned: next.min(total),
            completed: next.min(total),
            windows: VecDeque::new(),
            jobs: VecDeque::new(),
            seq: 0,
            on_completed: Some(on_completed),
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Groups the next window's chunks by layout and queues one read per
    /// distinct chunk (runs of them merged per image).
    fn plan_window(&mut self) {
        let start = self.planned;
        let end = (start + (WINDOW_BYTES / self.chunk).max(1)).min(self.total);
        self.planned = end;
        let per_member: Vec<Vec<Layout>> =
            self.members.iter().map(|m| layouts(&m.map, m.size, self.chunk, start..end)).collect();
        let mut versions: Vec<Version> = Vec::new();
        for pos in start..end {
            let k = (pos - start) as usize;
            let mut by_layout: HashMap<&Layout, usize> = HashMap::new();
            for (mi, layout) in per_member.iter().enumerate().filter_map(|(mi, l)| l.get(k).map(|l| (mi, l))) {
                let want = self.members[mi].entries.expected(pos);
                let fresh = Version { pos, reader: mi, members: vec![(mi, want)] };
                match layout {
                    Layout::Zero => {
                        if want != 0 {
                            self.members[mi].damage.push((pos, Fault::Missing));
                        }
                    }
                    Layout::Private => versions.push(fresh),
                    Layout::Blocks { .. } => match by_layout.get(layout) {
                        Some(&v) => versions[v].members.push((mi, want)),
                        None => {
                            by_layout.insert(layout, versions.len());
                            versions.push(fresh);
                        }
                    },
                }
            }
        }
        let seq = self.seq;
        self.seq += 1;
        let mut order: Vec<usize> = (0..versions.len()).collect();
        order.sort_by_key(|&v| (versions[v].reader, versions[v].pos));
        let mut job: Option<Job<(u64, u32)>> = None;
        for v in order {
            let (pos, reader) = (versions[v].pos, versions[v].reader);
            let offset = pos * self.chunk;
            let len = (offset + self.chunk).min(self.members[reader].size) - offset;
            match &mut job {
                Some(j) if j.source == reader && j.offset + j.len() == offset && j.len() + len <= MAX_READ => {
                    j.chunks.push(((seq, v as u32), len))
                }
                _ => {
                    self.jobs.extend(job.take());
                    job = Some(Job { source: reader, offset, chunks: vec![((seq, v as u32), len)] });
                }
            }
        }
        self.jobs.extend(job);
        let remaining = versions.len();
        self.windows.push_back(Window { seq, end, versions, remaining });
        self.retire();
    }

    /// Retires finished windows in order, advancing `completed`.
    fn retire(&mut self) {
        let mut advanced = false;
        while self.windows.front().is_some_and(|w| w.remaining == 0) {
            if let Some(w) = self.windows.pop_front() {
                self.completed = w.end;
                advanced = true;
            }
        }
        if !advanced {
            return;
        }
        if let Some(f) = self.on_completed.take() {
            f(self);
            self.on_completed = Some(f);
        }
    }

    /// The layouts (host blocks) of the chunks found damaged or unreadable,
    /// with the fault: another image whose chunk has one of them reads the
    /// same damage.
    pub(crate) fn damaged_layouts(&self) -> Vec<(u64, Layout, Fault)> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for m in &self.members {
            for &(pos, fault) in m.damage.iter().filter(|d| d.1 != Fault::Missing) {
                if let Some(l @ Layout::Blocks { .. }) = layouts(&m.map, m.size, self.chunk, pos..pos + 1).pop() {
                    if seen.insert((pos, l.clone())) {
                        out.push((pos, l, fault));
                    }
                }
            }
        }
        out
    }

    /// Damage found before chunk `before`, per member, ascending.
    pub(crate) fn damage_before(&self, before: u64) -> Vec<Vec<(u64, Fault)>> {
        self.members
            .iter()
            .map(|m| {
                let mut d: Vec<(u64, Fault)> = m.damage.iter().copied().filter(|(p, _)| *p < before).collect();
                d.sort_unstable();
                d.dedup_by_key(|x| x.0);
                d
            })
            .collect()
    }
}

impl Plan for Verify<'_> {
    type Tag = (u64, u32);

    fn next_job(&mut self) -> Result<Option<Job<(u64, u32)>>> {
        while self.jobs.is_empty() && self.planned < self.total {
            self.plan_window();
        }
        Ok(self.jobs.pop_front())
    }

    fn done(&mut self, (seq, v): (u64, u32), outcome: Outcome) -> Result<()> {
        let front = self.windows.front().map(|w| w.seq).unwrap_or(seq);
        let Some(w) = self.windows.get_mut((seq - front) as usize) else { return Ok(()) };
        w.remaining -= 1;
        let version = &w.versions[v as usize];
        for &(mi, want) in &version.members {
            let fault = match &outcome {
                Outcome::Read(e) if self.table.matches(want, e) => continue,
                Outcome::Read(_) => Fault::Mismatch,
                Outcome::Unreadable(_) => Fault::Unreadable,
            };
            self.members[mi].damage.push((version.pos, fault));
        }
        self.retire();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subvol_core::extent::{Extent, ExtentFlags};
    use subvol_core::manifest::{BuiltBy, Geometry, Provenance};

    const C: u64 = 65536;

    fn prov() -> Provenance {
        Provenance::unmeasured(BuiltBy::Snapshot)
    }

    fn member(table: &mut HashTable, extents: Vec<(u64, u64)>, entries: Vec<Entry>, size: u64) -> Member {
        let map = ExtentMap::new(
            extents
                .into_iter()
                .map(|(l, p)| Extent { logical: l, physical: p, length: C, flags: ExtentFlags(0) })
                .collect(),
        )
        .unwrap();
        let m = Manifest::from_entries(Geometry::new(C as u32, size).unwrap(), uuid::Uuid::nil(), prov(), entries);
        Member { map, size, entries: Interned::of(&m, table), damage: Vec::new() }
    }

    /// Three snapshots: b shares chunk 0 with a, c shares chunk 0 with a and
    /// chunk 1 with b. Every distinct chunk is read once; a wrong entry is
    /// damage in exactly the members sharing it.
    #[test]
    fn shared_chunks_are_read_once_and_judged_for_every_member() {
        let mut t = HashTable::default();
        let (x, y, z) = (Entry::Data([1; 32]), Entry::Data([2; 32]), Entry::Data([3; 32]));
        let a = member(&mut t, vec![(0, 0), (C, C)], vec![x, y], 2 * C);
        let b = member(&mut t, vec![(0, 0), (C, 10 * C)], vec![x, z], 2 * C);
        let c = member(&mut t, vec![(0, 0), (C, 10 * C)], vec![x, z, Entry::Zero], 3 * C);
        let calls = std::cell::Cell::new(0);
        let mut on = |_: &Verify<'_>| calls.set(calls.get() + 1);
        let mut v = Verify::new(vec![a, b, c], t, C, 0, &mut on);
        let mut reads = Vec::new();
        while let Some(job) = v.next_job().unwrap() {
            for (tag, _) in job.chunks.iter() {
                reads.push((job.source, job.offset, *tag));
            }
            let offset = job.offset;
            for (k, (tag, _)) in job.chunks.into_iter().enumerate() {
                // What the disk holds: chunk 0 right, chunk 1 of a rotten,
                // chunk 1 of b/c right.
                let pos = offset / C + k as u64;
                let e = match (job.source, pos) {
                    (_, 0) => x,
                    (0, 1) => Entry::Data([9; 32]),
                    (_, _) => z,
                };
                v.done(tag, Outcome::Read(e)).unwrap();
            }
        }
        assert_eq!(reads.len(), 3, "{reads:?}");
        assert_eq!(v.completed, 3);
        assert!(calls.get() >= 1);
        let d = v.damage_before(3);
        assert_eq!(d[0], vec![(1, Fault::Mismatch)]);
        assert!(d[1].is_empty() && d[2].is_empty(), "{d:?}");
    }
}
