//! Random bytes from the kernel (getrandom(2)), for salts.

use crate::error::{OsError, OsResult};

/// `N` bytes from getrandom(2), which blocks only until the kernel's pool
/// is first seeded at boot.
pub fn bytes<const N: usize>() -> OsResult<[u8; N]> {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(OsError::sys("getrandom", None, e)),
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_draws_differ() {
        assert_ne!(super::bytes::<16>().unwrap(), super::bytes::<16>().unwrap());
    }
}
