//! Resume tokens: what a receiver tells a sender so an interrupted stream
//! can continue. The sender checks the token against its own snapshots
//! rather than trusting it; the checksum only catches copy-paste damage.
//!
//! Form: `1-<target guid>-<base guid or "full">-<offset>-<8 hex of BLAKE3>`,
//! with the guids in simple (32 hex digit) form.

use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeToken {
    pub target: Uuid,
    pub base: Option<Uuid>,
    /// Everything below this offset is durably received.
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed resume token; copy it exactly as `subvol receive` printed it")]
pub struct TokenError;

impl ResumeToken {
    fn body(&self) -> String {
        let base = self.base.map(|b| b.simple().to_string()).unwrap_or_else(|| "full".into());
        format!("1-{}-{}-{}", self.target.simple(), base, self.offset)
    }
}

impl fmt::Display for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = self.body();
        let sum = blake3::hash(body.as_bytes()).to_hex();
        write!(f, "{body}-{}", &sum[..8])
    }
}

impl FromStr for ResumeToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        let parts: Vec<&str> = s.trim().split('-').collect();
        if parts.len() != 5 || parts[0] != "1" {
            return Err(TokenError);
        }
        let target = Uuid::try_parse(parts[1]).map_err(|_| TokenError)?;
        let base = if parts[2] == "full" { None } else { Some(Uuid::try_parse(parts[2]).map_err(|_| TokenError)?) };
        let offset: u64 = parts[3].parse().map_err(|_| TokenError)?;
        let token = ResumeToken { target, base, offset };
        let sum = blake3::hash(token.body().as_bytes()).to_hex();
        if parts[4] != &sum[..8] {
            return Err(TokenError);
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(t in any::<u128>(), b in proptest::option::of(any::<u128>()), off in any::<u64>()) {
            let tok = ResumeToken { target: Uuid::from_u128(t), base: b.map(Uuid::from_u128), offset: off };
            prop_assert_eq!(tok.to_string().parse::<ResumeToken>().unwrap(), tok);
        }

        #[test]
        fn damage_is_detected(off in 1u64..1_000_000, pos in any::<prop::sample::Index>()) {
            let tok = ResumeToken { target: Uuid::from_u128(7), base: None, offset: off }.to_string();
            let mut b = tok.into_bytes();
            let i = pos.index(b.len());
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            let s = String::from_utf8(b).unwrap();
            if let Ok(t) = s.parse::<ResumeToken>() {
                // Only a change that happens to keep the same meaning passes.
                prop_assert_eq!(t.offset, off);
            }
        }
    }
}
