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

/// The safety margin: a share of the capacity (at least a floor) plus the
/// dirty data each mounted thin subvolume may still push to the host.
pub fn margin(capacity_bytes: u64, mounted_thin: u64, dirty_limit_bytes: u64) -> u64 {
    let base = (capacity_bytes / 100).max(64 << 20);
    base.saturating_add(mounted_thin.saturating_mul(dirty_limit_bytes))
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

    proptest! {
        #[test]
        fn exclusive_matches_brute_force(ranges in proptest::collection::vec(
            proptest::collection::vec((0u64..60, 1u64..12).prop_map(|(s, l)| (s, s + l)), 0..6), 0..5)) {
            prop_assert_eq!(exclusive_bytes(&ranges), brute(&ranges));
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
