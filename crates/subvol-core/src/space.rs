//! Space arithmetic: what the pool owes its guaranteed subvolumes, whether
//! a new obligation can be honoured, and when the guard must stop writers.
//! Pure functions, so the rules can be checked exhaustively without a disk.

use serde::Serialize;

/// What a guaranteed subvolume may still need: its virtual size minus the
/// blocks only it holds (holes still to fill, plus blocks shared with
/// snapshots, which a write would have to copy).
pub fn still_needed(virtual_bytes: u64, exclusive_bytes: u64) -> u64 {
    virtual_bytes.saturating_sub(exclusive_bytes)
}

/// The pool's space as admission control sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Free bytes on the host filesystem.
    pub free_bytes: u64,
    /// Sum of `still_needed` over guaranteed subvolumes.
    pub outstanding_bytes: u64,
    /// Kept back for metadata, dirty data in flight and the guard's reaction.
    pub margin_bytes: u64,
}

impl Budget {
    /// Bytes that can still be promised.
    pub fn available(&self) -> u64 {
        self.free_bytes.saturating_sub(self.outstanding_bytes).saturating_sub(self.margin_bytes)
    }

    /// Whether a new obligation of `extra` bytes fits.
    pub fn admits(&self, extra: u64) -> bool {
        extra <= self.available()
    }
}

/// The part of the safety margin that does not depend on thin subvolumes: a
/// share of the capacity, at least a floor, kept for the host's own metadata
/// and for admission control's rounding.
pub fn base_margin(capacity_bytes: u64) -> u64 {
    (capacity_bytes / 100).max(64 << 20)
}

/// The safety margin admission control keeps: the base plus what each
/// mounted thin subvolume may still push to the host once it is told to stop
/// (its capped dirty page cache, one extent-hint rounding, the inner
/// filesystem's metadata flush). docs/SPACE.md derives it.
pub fn margin(capacity_bytes: u64, mounted_thin: u64, dirty_limit_bytes: u64) -> u64 {
    guard_low_watermark(&GuardInputs {
        capacity_bytes,
        thin_mounted: mounted_thin,
        dirty_cap_bytes: dirty_limit_bytes,
        ..GuardInputs::default()
    })
}

/// How far above its low watermark the guard waits before thawing: 5% of
/// the host, at least 128 MiB, so writers resumed at full speed do not hit
/// the low watermark again at once.
pub fn guard_thaw_gap(capacity_bytes: u64) -> u64 {
    (capacity_bytes / 20).max(128 << 20)
}

/// Host free space below which a receive stops writing: what guaranteed
/// subvolumes are still owed, the margin, and the guard's thaw gap. A
/// receive writes to the host directly (the guard cannot freeze it), so it
/// must stop itself before it takes promised space or drives the guard into
/// freezing the mounted subvolumes.
pub fn receive_floor(outstanding_bytes: u64, margin_bytes: u64, capacity_bytes: u64) -> u64 {
    outstanding_bytes.saturating_add(margin_bytes).saturating_add(guard_thaw_gap(capacity_bytes))
}

/// Host bytes an inner filesystem's freeze may write besides the data in
/// its page cache: the metadata it logged, written back in place (bounded by
/// its log, which subvol's mkfs keeps at the default for the image size), and
/// the log itself. A constant per subvolume, measured in docs/SPACE.md.
pub const METADATA_FLUSH_BYTES: u64 = 16 << 20;

/// What freezing one mounted subvolume may still write to the host: its
/// dirty page cache (the cap), one extent-hint rounding and the inner
/// filesystem's metadata flush. Used by the guard's watermark and by
/// commands that freeze or grow a mounted subvolume.
pub fn freeze_flush_bytes(dirty_cap_bytes: u64, extent_hint_bytes: u64, metadata_flush_bytes: u64) -> u64 {
    dirty_cap_bytes.saturating_add(extent_hint_bytes).saturating_add(metadata_flush_bytes)
}

/// Everything the guard's low watermark accounts for. Pure data, so the
/// arithmetic is property-tested.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GuardInputs {
    pub capacity_bytes: u64,
    /// Mounted thin subvolumes: the ones the guard freezes.
    pub thin_mounted: u64,
    /// Dirty page cache each may hold (its loop device's BDI `max_bytes`
    /// with `strict_limit`): written to the host by the freeze itself.
    pub dirty_cap_bytes: u64,
    /// Host allocation granule of an image write (its extent-size hint):
    /// the flush may round a run of dirty data up by this much.
    pub extent_hint_bytes: u64,
    /// The inner filesystem's metadata flush during FIFREEZE.
    pub metadata_flush_bytes: u64,
    /// The fastest host fill rate the guard has seen recently (bytes/s).
    pub peak_fill_rate: f64,
    /// Time from one statfs sample to the next: the poll interval plus how
    /// late the guard has been woken (a busy CPU).
    pub sample_gap_secs: f64,
    /// How long freezing every thin subvolume takes (FIFREEZE in parallel).
    pub freeze_secs: f64,
}

impl Default for GuardInputs {
    fn default() -> Self {
        GuardInputs {
            capacity_bytes: 0,
            thin_mounted: 0,
            dirty_cap_bytes: 0,
            extent_hint_bytes: 1 << 20,
            metadata_flush_bytes: METADATA_FLUSH_BYTES,
            peak_fill_rate: 0.0,
            sample_gap_secs: 0.0,
            freeze_secs: 0.0,
        }
    }
}

/// The low watermark: the headroom (host free minus outstanding guarantees)
/// below which every thin subvolume must already be frozen. It is what can
/// still land on the host after the guard last saw enough room:
///   base margin
/// + per thin subvolume: dirty cap + extent-hint rounding + metadata flush
/// + peak fill rate x (sample gap + freeze time): a writer that starts, or
///   speeds up to the fastest rate seen, right after a sample, is seen one
///   gap later and keeps writing until its filesystem is frozen. This term
///   is capped at a quarter of the capacity, so one spike (a large
///   fallocate by someone else) cannot freeze the pool for long; the guard
///   lets its peak decay.
///
/// A steady writer is caught earlier by the horizon (`guard_horizon_secs`).
pub fn guard_low_watermark(i: &GuardInputs) -> u64 {
    let per_thin = freeze_flush_bytes(i.dirty_cap_bytes, i.extent_hint_bytes, i.metadata_flush_bytes);
    let reaction = i.sample_gap_secs.max(0.0) + i.freeze_secs.max(0.0);
    let burst = (i.peak_fill_rate.max(0.0) * reaction).min((i.capacity_bytes / 4) as f64) as u64;
    base_margin(i.capacity_bytes).saturating_add(i.thin_mounted.saturating_mul(per_thin)).saturating_add(burst)
}

/// How far ahead (seconds at the current fill rate) the guard freezes: at
/// least the configured horizon, and never less than a whole reaction (the
/// next sample may come one gap late, then the freeze takes its time).
pub fn guard_horizon_secs(configured_secs: f64, sample_gap_secs: f64, freeze_secs: f64) -> f64 {
    configured_secs.max(sample_gap_secs.max(0.0) + freeze_secs.max(0.0))
}

/// Guard settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GuardPolicy {
    /// Freeze when free-minus-outstanding falls below this.
    pub low_watermark_bytes: u64,
    /// Thaw when it is back above this.
    pub high_watermark_bytes: u64,
    /// Freeze early if, at the current fill rate, the low watermark would
    /// be crossed within this many seconds.
    pub horizon_secs: f64,
}

/// Whether (and how) the guard holds writers frozen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Frozen {
    No,
    /// Frozen because the low watermark was about to be crossed at the
    /// current fill rate: a pause; after the cool-down writers may go on
    /// (and are caught again if they still race towards the watermark).
    Soft {
        for_secs: f64,
    },
    /// Frozen at or below the low watermark: stays until space is back
    /// above the high watermark.
    Hard,
}

/// What the guard should do after one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum GuardAction {
    Nothing,
    /// At or below the low watermark: reclaim, then freeze until the high
    /// watermark is reached.
    FreezeHard,
    /// About to cross the low watermark: reclaim, then pause writers.
    FreezeSoft,
    /// A pause became a hard freeze (the low watermark was crossed).
    Harden,
    /// Space is back (or a pause is over): thaw.
    Thaw,
}

/// One decision. `headroom` is free minus outstanding guarantees;
/// `fill_rate` is bytes per second being consumed (negative when freeing).
pub fn guard_decision(p: &GuardPolicy, frozen: Frozen, headroom: u64, fill_rate: f64) -> GuardAction {
    match frozen {
        Frozen::Hard => {
            if headroom >= p.high_watermark_bytes {
                GuardAction::Thaw
            } else {
                GuardAction::Nothing
            }
        }
        Frozen::Soft { for_secs } => {
            if headroom <= p.low_watermark_bytes {
                GuardAction::Harden
            } else if headroom >= p.high_watermark_bytes || for_secs >= p.horizon_secs {
                GuardAction::Thaw
            } else {
                GuardAction::Nothing
            }
        }
        Frozen::No => {
            if headroom <= p.low_watermark_bytes {
                return GuardAction::FreezeHard;
            }
            if fill_rate > 0.0 {
                let secs_left = (headroom - p.low_watermark_bytes) as f64 / fill_rate;
                if secs_left <= p.horizon_secs {
                    return GuardAction::FreezeSoft;
                }
            }
            GuardAction::Nothing
        }
    }
}

/// Exclusive (held by one image only) bytes per image, from every image's
/// physical ranges `(start, end)`. Blocks a file shares with itself count as
/// exclusive. Runs in O(n log n) over all ranges.
pub fn exclusive_bytes(ranges: &[Vec<(u64, u64)>]) -> Vec<u64> {
    let mut events: Vec<(u64, i8, u32)> = Vec::new();
    for (i, rs) in ranges.iter().enumerate() {
        for &(s, e) in rs {
            if e > s {
                events.push((s, 1, i as u32));
                events.push((e, -1, i as u32));
            }
        }
    }
    events.sort_unstable_by_key(|&(pos, delta, _)| (pos, delta));
    let mut out = vec![0u64; ranges.len()];
    let mut count = vec![0u32; ranges.len()];
    let mut distinct = 0u32;
    // Sum of the indices of distinct active images: the sole one when
    // `distinct == 1`.
    let mut id_sum: u64 = 0;
    let mut prev = 0u64;
    for (pos, delta, img) in events {
        if distinct == 1 && pos > prev {
            out[id_sum as usize] += pos - prev;
        }
        prev = pos;
        let c = &mut count[img as usize];
        if delta > 0 {
            if *c == 0 {
                distinct += 1;
                id_sum += u64::from(img);
            }
            *c += 1;
        } else {
            *c -= 1;
            if *c == 0 {
                distinct -= 1;
                id_sum -= u64::from(img);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exclusive_simple() {
        // a: [0,10) [20,30); b: [5,25) → a excl 5 + 5, b excl 10.
        let r = vec![vec![(0, 10), (20, 30)], vec![(5, 25)]];
        assert_eq!(exclusive_bytes(&r), vec![10, 10]);
        // A file sharing with itself is still exclusive.
        assert_eq!(exclusive_bytes(&[vec![(0, 10), (0, 10)]]), vec![10]);
    }

    #[test]
    fn guard_rules() {
        let p = GuardPolicy { low_watermark_bytes: 100, high_watermark_bytes: 300, horizon_secs: 1.0 };
        assert_eq!(guard_decision(&p, Frozen::No, 50, 0.0), GuardAction::FreezeHard);
        assert_eq!(guard_decision(&p, Frozen::No, 1000, 0.0), GuardAction::Nothing);
        assert_eq!(
            guard_decision(&p, Frozen::No, 1000, 950.0),
            GuardAction::FreezeSoft,
            "would cross within the horizon"
        );
        assert_eq!(guard_decision(&p, Frozen::No, 1000, 800.0), GuardAction::Nothing);
        assert_eq!(guard_decision(&p, Frozen::Hard, 200, -10.0), GuardAction::Nothing, "hysteresis");
        assert_eq!(guard_decision(&p, Frozen::Hard, 300, 0.0), GuardAction::Thaw);
        assert_eq!(guard_decision(&p, Frozen::Soft { for_secs: 0.1 }, 200, 0.0), GuardAction::Nothing);
        assert_eq!(guard_decision(&p, Frozen::Soft { for_secs: 1.5 }, 200, 0.0), GuardAction::Thaw, "a pause ends");
        assert_eq!(guard_decision(&p, Frozen::Soft { for_secs: 1.5 }, 90, 0.0), GuardAction::Harden);
    }

    fn brute(ranges: &[Vec<(u64, u64)>]) -> Vec<u64> {
        let max = ranges.iter().flatten().map(|r| r.1).max().unwrap_or(0);
        let mut out = vec![0; ranges.len()];
        for b in 0..max {
            let owners: Vec<usize> =
                (0..ranges.len()).filter(|&i| ranges[i].iter().any(|&(s, e)| s <= b && b < e)).collect();
            if owners.len() == 1 {
                out[owners[0]] += 1;
            }
        }
        out
    }

    /// One writer against the guard, in simulated time: the host fills at
    /// `rate` from `start` (a fraction of a sample gap after a sample), the
    /// guard samples every `gap` and decides as `Pool::guard` does; once it
    /// freezes, the freeze takes `freeze` seconds of writing plus every thin
    /// subvolume's dirty cap, hint rounding and metadata. Returns the lowest
    /// headroom.
    fn simulate(i: &GuardInputs, head0: u64, rate: f64, start: f64) -> (f64, GuardAction) {
        let low = guard_low_watermark(i);
        let p = GuardPolicy {
            low_watermark_bytes: low,
            high_watermark_bytes: low + (64 << 20),
            horizon_secs: guard_horizon_secs(0.5, i.sample_gap_secs, i.freeze_secs),
        };
        let mut head = head0 as f64;
        let mut prev = head;
        // The writer starts `start` gaps after the sample at t = 0.
        let mut first = true;
        for _ in 0..100_000 {
            let written = if first { rate * i.sample_gap_secs * (1.0 - start) } else { rate * i.sample_gap_secs };
            first = false;
            head -= written;
            let measured = (prev - head) / i.sample_gap_secs;
            prev = head;
            let a = guard_decision(&p, Frozen::No, head.max(0.0) as u64, measured);
            if a != GuardAction::Nothing {
                let per_thin = (i.dirty_cap_bytes + i.extent_hint_bytes + i.metadata_flush_bytes) as f64;
                let end = head - rate * i.freeze_secs - i.thin_mounted as f64 * per_thin;
                return (end, a);
            }
        }
        (head, GuardAction::Nothing)
    }

    proptest! {
        /// The margin holds: whatever the writer's rate (up to the peak the
        /// guard has seen) and whenever it starts, the host never falls below
        /// the base margin once everything in flight has landed, provided the
        /// guard started with headroom above its low watermark, samples no
        /// later than assumed and freezes no slower than measured.
        #[test]
        fn guard_margin_covers_what_lands_after_the_decision(
            cap_gib in 1u64..64, thin in 1u64..12, dirty_mib in 1u64..256,
            peak_mib in 1u64..4096, rate_frac in 0.0f64..1.0, start in 0.0f64..1.0,
            gap in 0.01f64..1.0, freeze in 0.0f64..1.0, extra_mib in 0u64..4096) {
            let i = GuardInputs {
                capacity_bytes: cap_gib << 30,
                thin_mounted: thin,
                dirty_cap_bytes: dirty_mib << 20,
                peak_fill_rate: (peak_mib << 20) as f64,
                sample_gap_secs: gap,
                freeze_secs: freeze,
                ..GuardInputs::default()
            };
            let low = guard_low_watermark(&i);
            let rate = i.peak_fill_rate * rate_frac;
            // The burst term is capped at a quarter of the capacity: beyond
            // that the guarantee is not claimed (documented).
            prop_assume!(i.peak_fill_rate * (gap + freeze) <= (i.capacity_bytes / 4) as f64);
            let (end, _) = simulate(&i, low + 1 + (extra_mib << 20), rate, start);
            prop_assert!(end >= base_margin(i.capacity_bytes) as f64 - 1.0,
                "ended {end} below base {} (low {low})", base_margin(i.capacity_bytes));
        }

        #[test]
        fn low_watermark_grows_with_every_input(
            cap in 0u64..1 << 44, thin in 0u64..100, dirty in 0u64..1 << 30, peak in 0f64..1e10, gap in 0f64..2.0) {
            let i = GuardInputs { capacity_bytes: cap, thin_mounted: thin, dirty_cap_bytes: dirty,
                peak_fill_rate: peak, sample_gap_secs: gap, ..GuardInputs::default() };
            let low = guard_low_watermark(&i);
            prop_assert!(low >= base_margin(cap));
            let more_thin = GuardInputs { thin_mounted: thin + 1, ..i };
            let more_dirty = GuardInputs { dirty_cap_bytes: dirty + 1, ..i };
            let faster = GuardInputs { peak_fill_rate: peak * 2.0, ..i };
            prop_assert!(guard_low_watermark(&more_thin) >= low);
            prop_assert!(guard_low_watermark(&more_dirty) >= low);
            prop_assert!(guard_low_watermark(&faster) >= low);
            prop_assert!(guard_horizon_secs(0.5, gap, 0.1) >= gap + 0.1);
        }

        #[test]
        fn exclusive_matches_brute_force(ranges in proptest::collection::vec(
            proptest::collection::vec((0u64..60, 1u64..12).prop_map(|(s, l)| (s, s + l)), 0..6), 0..5)) {
            prop_assert_eq!(exclusive_bytes(&ranges), brute(&ranges));
        }

        #[test]
        fn a_receive_stops_above_every_promise(out in 0u64..1 << 50, m in 0u64..1 << 40, cap in 0u64..1 << 50) {
            let floor = receive_floor(out, m, cap);
            // Above the guaranteed and the margin (admission's line), and
            // above the guard's thaw point for that margin as low watermark.
            prop_assert!(floor >= out + m);
            prop_assert!(floor - out >= m + guard_thaw_gap(cap));
        }

        #[test]
        fn admission_never_overpromises(free in 0u64..1 << 40, out in 0u64..1 << 40, m in 0u64..1 << 30, extra in 0u64..1 << 41) {
            let b = Budget { free_bytes: free, outstanding_bytes: out, margin_bytes: m };
            if b.admits(extra) {
                // After admitting, what is owed plus the margin still fits.
                prop_assert!(out as u128 + extra as u128 + m as u128 <= free as u128);
            }
            prop_assert!(b.admits(0) || free < out.saturating_add(m));
        }

        #[test]
        fn still_needed_is_bounded(v in any::<u64>(), e in any::<u64>()) {
            prop_assert!(still_needed(v, e) <= v);
        }

        #[test]
        fn guard_never_lets_writers_run_below_low(
            low in 0u64..1000, gap in 1u64..1000, head in 0u64..3000, rate in -1000f64..1000.0,
            state in 0u8..3, secs in 0f64..3.0) {
            let p = GuardPolicy { low_watermark_bytes: low, high_watermark_bytes: low + gap, horizon_secs: 0.5 };
            let frozen = match state { 0 => Frozen::No, 1 => Frozen::Soft { for_secs: secs }, _ => Frozen::Hard };
            let a = guard_decision(&p, frozen, head, rate);
            if head <= low {
                // Below the line writers are stopped and stay stopped.
                prop_assert!(a != GuardAction::Thaw && a != GuardAction::Nothing || frozen == Frozen::Hard);
            }
            if frozen == Frozen::Hard && a == GuardAction::Thaw { prop_assert!(head >= low + gap); }
            if a == GuardAction::Thaw { prop_assert!(head > low); }
        }
    }
}
