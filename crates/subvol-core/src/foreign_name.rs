//! Names for objects named elsewhere. A front end (the CSI driver) gets
//! names from its caller that subvol cannot use as they are: longer than
//! 128 bytes once combined, or holding characters subvol refuses. It keeps a
//! readable piece of the foreign name and a hash of all of it, so the same
//! foreign name always gives the same subvol name (a retried call finds its
//! object) and two foreign names give two subvol names.

use crate::name::validate_part;

/// Characters of the foreign name kept, at most.
pub const KEPT_CHARS: usize = 40;
/// Hex digits of the BLAKE3 hash of the foreign name (64 bits).
pub const HASH_HEX: usize = 16;

/// `PREFIX` + up to 40 characters of `foreign` (each outside
/// `[A-Za-z0-9._-]` turned into `_`) + `-` + the first 16 hex digits of the
/// BLAKE3 hash of `foreign`. `prefix` must start with a letter or digit, so
/// the result is a valid name part whatever `foreign` holds; at most
/// `prefix.len() + 57` bytes.
pub fn derive(prefix: &str, foreign: &str) -> String {
    let kept: String = foreign
        .chars()
        .take(KEPT_CHARS)
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .collect();
    let hash = blake3::hash(foreign.as_bytes()).to_hex();
    let name = format!("{prefix}{kept}-{}", &hash[..HASH_HEX]);
    debug_assert!(validate_part(&name).is_ok(), "{name}");
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kubernetes_names_stay_readable() {
        let n = derive("csi-", "pvc-4f9a1c2e-7b1d-4d8e-9a51-0c6f0b7e2d11");
        assert!(n.starts_with("csi-pvc-4f9a1c2e-7b1d-4d8e-9a51-0c6f0b7e2d11-"), "{n}");
        assert_eq!(n.len(), 4 + 40 + 1 + HASH_HEX);
    }

    proptest! {
        #[test]
        fn any_foreign_name_gives_a_valid_stable_name(s in "\\PC{0,200}") {
            let n = derive("csi-", &s);
            prop_assert!(validate_part(&n).is_ok(), "{n}");
            prop_assert!(n.len() <= 4 + KEPT_CHARS * 4 + 1 + HASH_HEX);
            prop_assert!(n.is_ascii());
            prop_assert_eq!(&n, &derive("csi-", &s));
        }

        #[test]
        fn different_foreign_names_give_different_names(a in "\\PC{0,60}", b in "\\PC{0,60}") {
            prop_assume!(a != b);
            prop_assert_ne!(derive("csi-", &a), derive("csi-", &b));
        }
    }
}
