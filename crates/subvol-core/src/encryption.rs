//! Encrypted subvolumes, the parts that need no kernel: the master key and
//! the identifier fscrypt names it by, the passphrase KDF, the record every
//! encrypted image carries, and the ext4 superblock bit that marks one.
//!
//! An encrypted subvolume is an ext4 whose root stays plain (the kernel
//! refuses a policy on ext4's root, and e2fsck needs a plain lost+found) and
//! holds one directory, [`DATA_DIR`], under an fscrypt v2 policy; the mount
//! point shows that directory. The record lives in an xattr of that
//! directory, inside the image, so every byte-for-byte copy of the image (a
//! snapshot, a clone, a stream, a replica) carries the record that matches
//! its ciphertext, and replication needs no field of its own.

use crate::meta::{self, MetaError};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha512;
use std::fmt;
use zeroize::Zeroizing;

/// fscrypt's longest master key, and the only length subvol uses: AES-256-XTS
/// takes 64 bytes of key.
pub const KEY_BYTES: usize = 64;
/// Version of the encryption record written by this build.
pub const ENCRYPTION_FORMAT: u32 = 1;
/// The encrypted directory in the filesystem's root, shown at the mount point.
pub const DATA_DIR: &str = "data";
/// Where the record is kept: an xattr of [`DATA_DIR`]. `trusted.` so that no
/// user inside the subvolume can read or change it (xattrs are not
/// encrypted by fscrypt, and the record holds nothing secret).
pub const RECORD_XATTR: &str = "trusted.subvol.encryption";
/// The contents and file name modes subvol sets (the kernel's recommended
/// pair for hardware with AES instructions).
pub const CONTENTS_MODE: &str = "aes-256-xts";
pub const FILENAMES_MODE: &str = "aes-256-cts";
/// File names are padded to a multiple of 32 bytes, the longest padding,
/// so their ciphertext tells the least about their length.
pub const NAME_PADDING: u8 = 32;

/// Shortest and longest passphrase accepted (the bounds ZFS uses too).
pub const PASSPHRASE_MIN: usize = 8;
pub const PASSPHRASE_MAX: usize = 512;

/// A 64-byte master key. Wiped from memory when dropped, never printed.
pub struct MasterKey(Zeroizing<Box<[u8]>>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<secret>)")
    }
}

/// What is wrong with key material, in words that name the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "holds {0} bytes; a key file holds exactly 64 random bytes (make one with `head -c 64 /dev/urandom > FILE`)"
    )]
    KeyFileSize(usize),
    #[error("holds no passphrase")]
    EmptyPassphrase,
    #[error("holds a passphrase of {0} bytes; give {PASSPHRASE_MIN} to {PASSPHRASE_MAX}")]
    PassphraseLength(usize),
    #[error("cannot derive the key: {0}")]
    Kdf(String),
}

impl MasterKey {
    /// The key in a key file: exactly [`KEY_BYTES`] raw bytes, no newline.
    pub fn from_key_file(bytes: &[u8]) -> Result<MasterKey, KeyError> {
        if bytes.len() != KEY_BYTES {
            return Err(KeyError::KeyFileSize(bytes.len()));
        }
        Ok(MasterKey(Zeroizing::new(bytes.into())))
    }

    /// The key stretched from a passphrase file's bytes with `kdf`.
    pub fn from_passphrase(file_bytes: &[u8], kdf: &Kdf) -> Result<MasterKey, KeyError> {
        let pass = passphrase(file_bytes)?;
        let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(KEY_BYTES))
            .map_err(|e| KeyError::Kdf(e.to_string()))?;
        let salt = unhex(&kdf.salt).ok_or_else(|| KeyError::Kdf("the salt is not hex".into()))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key: Zeroizing<Box<[u8]>> = Zeroizing::new(vec![0u8; KEY_BYTES].into_boxed_slice());
        argon.hash_password_into(pass, &salt, &mut key).map_err(|e| KeyError::Kdf(e.to_string()))?;
        Ok(MasterKey(key))
    }

    /// The raw key, for the one ioctl that hands it to the kernel.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The identifier fscrypt v2 derives from the key (and names it by):
    /// HKDF-SHA512 with no salt, info `"fscrypt\0"` followed by context
    /// byte 1 (HKDF_CONTEXT_KEY_IDENTIFIER), 16 bytes of output. Computed
    /// here so a wrong key is refused before it reaches the kernel.
    pub fn identifier(&self) -> KeyIdentifier {
        let hk = Hkdf::<Sha512>::new(None, &self.0);
        let mut id = [0u8; 16];
        // 16 bytes is far below HKDF-SHA512's limit of 255 * 64.
        hk.expand(b"fscrypt\0\x01", &mut id).expect("16 bytes is a valid HKDF-SHA512 output length");
        KeyIdentifier(id)
    }
}

/// The passphrase in a file: its bytes less one trailing newline (as
/// `echo` writes it), within [`PASSPHRASE_MIN`]..=[`PASSPHRASE_MAX`].
pub fn passphrase(file_bytes: &[u8]) -> Result<&[u8], KeyError> {
    let p = file_bytes.strip_suffix(b"\n").unwrap_or(file_bytes);
    let p = p.strip_suffix(b"\r").unwrap_or(p);
    match p.len() {
        0 => Err(KeyError::EmptyPassphrase),
        n if !(PASSPHRASE_MIN..=PASSPHRASE_MAX).contains(&n) => Err(KeyError::PassphraseLength(n)),
        _ => Ok(p),
    }
}

/// Whether a key or passphrase file's permission bits let anyone but its
/// owner read or write it: such a file is refused, naming the fix.
pub fn file_mode_problem(mode: u32) -> Option<String> {
    (mode & 0o077 != 0).then(|| format!("has mode {:o}, open to group or others; `chmod 600` it", mode & 0o7777))
}

/// fscrypt's name for a master key (16 bytes), shown and stored as hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyIdentifier(pub [u8; 16]);

impl fmt::Display for KeyIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for KeyIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyIdentifier({self})")
    }
}

impl KeyIdentifier {
    pub fn parse(s: &str) -> Option<KeyIdentifier> {
        unhex(s)?.try_into().ok().map(KeyIdentifier)
    }
}

/// How a passphrase becomes a key: Argon2id (RFC 9106) with a random salt.
/// The parameters are stored with the salt, so they can be raised for new
/// subvolumes without breaking old ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    /// `argon2id`.
    pub algorithm: String,
    /// Argon2 version, 19 (0x13).
    pub version: u32,
    /// Random salt, hex.
    pub salt: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// Bounds on parameters read from a record: it may come from another
/// host's stream, and must not make `unlock` take all memory or hours.
const MAX_MEMORY_KIB: u32 = 4 << 20;
const MAX_ITERATIONS: u32 = 64;
const MAX_PARALLELISM: u32 = 16;

impl Kdf {
    /// The parameters of new subvolumes: RFC 9106's second recommended
    /// option (64 MiB, 3 passes, 4 lanes; about 0.2 s on one core of the
    /// test machine).
    pub fn new_argon2id(salt: [u8; 16]) -> Kdf {
        Kdf {
            algorithm: "argon2id".into(),
            version: 0x13,
            salt: hex(&salt),
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 4,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.algorithm != "argon2id" || self.version != 0x13 {
            return Err(format!("KDF {} version {} is not one this subvol knows", self.algorithm, self.version));
        }
        let salt = unhex(&self.salt).ok_or("the KDF salt is not hex")?;
        if !(16..=64).contains(&salt.len()) {
            return Err(format!("the KDF salt has {} bytes, not 16 to 64", salt.len()));
        }
        let fits = (1..=MAX_PARALLELISM).contains(&self.parallelism)
            && (1..=MAX_ITERATIONS).contains(&self.iterations)
            && (8 * self.parallelism..=MAX_MEMORY_KIB).contains(&self.memory_kib);
        if !fits {
            return Err(format!(
                "KDF parameters out of bounds (memory {} KiB, {} passes, {} lanes)",
                self.memory_kib, self.iterations, self.parallelism
            ));
        }
        Ok(())
    }
}

/// What an encrypted image says about itself (record type `encryption`,
/// version 1, in the xattr [`RECORD_XATTR`] of [`DATA_DIR`]). Nothing in
/// it is secret: the identifier is a one-way function of the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionRecord {
    /// fscrypt policy version: 2.
    pub policy_version: u32,
    pub contents: String,
    pub filenames: String,
    /// File name padding in bytes.
    pub name_padding: u8,
    /// The master key's identifier, 32 hex digits.
    pub key_identifier: String,
    /// The directory under the policy, relative to the filesystem's root.
    pub directory: String,
    /// How a passphrase becomes the key; absent when the key comes from a
    /// key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<Kdf>,
}

impl EncryptionRecord {
    pub fn new(id: KeyIdentifier, kdf: Option<Kdf>) -> EncryptionRecord {
        EncryptionRecord {
            policy_version: 2,
            contents: CONTENTS_MODE.into(),
            filenames: FILENAMES_MODE.into(),
            name_padding: NAME_PADDING,
            key_identifier: id.to_string(),
            directory: DATA_DIR.into(),
            kdf,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        meta::encode("encryption", ENCRYPTION_FORMAT, self)
    }

    /// Decodes and checks a record: known algorithms, a valid identifier,
    /// KDF parameters within bounds.
    pub fn decode(bytes: &[u8]) -> Result<EncryptionRecord, MetaError> {
        let r: EncryptionRecord = meta::decode("encryption", ENCRYPTION_FORMAT, bytes)?;
        let known = r.policy_version == 2
            && r.contents == CONTENTS_MODE
            && r.filenames == FILENAMES_MODE
            && r.name_padding == NAME_PADDING
            && r.directory == DATA_DIR;
        if !known {
            return Err(MetaError::Json(format!(
                "policy v{} {}/{} padding {} on {:?} is not one this subvol knows",
                r.policy_version, r.contents, r.filenames, r.name_padding, r.directory
            )));
        }
        r.identifier()?;
        if let Some(k) = &r.kdf {
            k.validate().map_err(MetaError::Json)?;
        }
        Ok(r)
    }

    pub fn identifier(&self) -> Result<KeyIdentifier, MetaError> {
        KeyIdentifier::parse(&self.key_identifier)
            .ok_or_else(|| MetaError::Json(format!("key identifier {:?} is not 32 hex digits", self.key_identifier)))
    }
}

/// Where the ext4 superblock starts in an image, and how much to read.
pub const EXT4_SUPERBLOCK_OFFSET: u64 = 1024;
pub const EXT4_SUPERBLOCK_BYTES: usize = 1024;

/// Whether an ext4 superblock (the [`EXT4_SUPERBLOCK_BYTES`] at
/// [`EXT4_SUPERBLOCK_OFFSET`]) has the `encrypt` feature, which subvol
/// turns on for encrypted subvolumes only; `None` if it is not an ext4
/// superblock. Read from the image's own bytes, so it is right for
/// snapshots, clones and received copies alike.
pub fn ext4_encrypt_feature(sb: &[u8]) -> Option<bool> {
    const MAGIC_AT: usize = 0x38;
    const INCOMPAT_AT: usize = 0x60;
    const INCOMPAT_ENCRYPT: u32 = 0x1_0000;
    let magic = u16::from_le_bytes(sb.get(MAGIC_AT..MAGIC_AT + 2)?.try_into().ok()?);
    if magic != 0xEF53 {
        return None;
    }
    let incompat = u32::from_le_bytes(sb.get(INCOMPAT_AT..INCOMPAT_AT + 4)?.try_into().ok()?);
    Some(incompat & INCOMPAT_ENCRYPT != 0)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counting_key() -> MasterKey {
        let bytes: Vec<u8> = (0u8..64).collect();
        MasterKey::from_key_file(&bytes).unwrap()
    }

    #[test]
    fn identifier_matches_the_kernel() {
        // FS_IOC_ADD_ENCRYPTION_KEY on Linux 6.18 returned this identifier
        // for the key 00 01 02 .. 3f.
        assert_eq!(counting_key().identifier().to_string(), KERNEL_ID_OF_COUNTING_KEY);
    }

    const KERNEL_ID_OF_COUNTING_KEY: &str = "8699c2c53707405da5aba5ae4d8583c0";

    #[test]
    fn key_files_must_hold_exactly_64_bytes() {
        assert_eq!(MasterKey::from_key_file(&[7; 63]).unwrap_err(), KeyError::KeyFileSize(63));
        assert_eq!(MasterKey::from_key_file(&[7; 65]).unwrap_err(), KeyError::KeyFileSize(65));
        assert!(MasterKey::from_key_file(&[]).unwrap_err().to_string().contains("head -c 64 /dev/urandom"));
        assert_eq!(format!("{:?}", counting_key()), "MasterKey(<secret>)");
    }

    fn cheap_kdf() -> Kdf {
        Kdf { memory_kib: 64, iterations: 1, parallelism: 1, ..Kdf::new_argon2id([9; 16]) }
    }

    #[test]
    fn passphrases_are_stretched_with_their_salt() {
        let kdf = cheap_kdf();
        let a = MasterKey::from_passphrase(b"correct horse\n", &kdf).unwrap();
        let b = MasterKey::from_passphrase(b"correct horse", &kdf).unwrap();
        assert_eq!(a.bytes(), b.bytes(), "one trailing newline is not part of the passphrase");
        let salted = Kdf { salt: hex(&[8; 16]), ..kdf.clone() };
        assert_ne!(a.bytes(), MasterKey::from_passphrase(b"correct horse", &salted).unwrap().bytes());
        assert_ne!(a.bytes(), MasterKey::from_passphrase(b"correct horse\n\n", &kdf).unwrap().bytes());
        assert_eq!(MasterKey::from_passphrase(b"", &kdf).unwrap_err(), KeyError::EmptyPassphrase);
        assert_eq!(MasterKey::from_passphrase(b"\n", &kdf).unwrap_err(), KeyError::EmptyPassphrase);
        assert_eq!(MasterKey::from_passphrase(b"short\n", &kdf).unwrap_err(), KeyError::PassphraseLength(5));
        assert_eq!(MasterKey::from_passphrase(&[b'x'; 513], &kdf).unwrap_err(), KeyError::PassphraseLength(513));
    }

    #[test]
    fn passphrase_kdf_output_is_pinned() {
        // Argon2id with RFC 9106's test inputs (section 5.3) less its secret
        // and associated data, which a plain KDF does not use. A change of
        // crate or of how it is called would lock every passphrase
        // subvolume out, so it must not go unnoticed.
        let kdf = Kdf { memory_kib: 32, iterations: 3, parallelism: 4, ..Kdf::new_argon2id([2; 16]) };
        let k = MasterKey::from_passphrase(&[1u8; 32], &kdf).unwrap();
        assert_eq!(hex(&k.bytes()[..8]), ARGON2ID_PREFIX);
    }

    /// The same inputs through the reference implementation (libargon2, as
    /// Python's argon2-cffi `hash_secret_raw` with a 64-byte tag) give this.
    const ARGON2ID_PREFIX: &str = "b62e1d3d11eb77dd";

    #[test]
    fn records_round_trip_and_refuse_what_they_do_not_know() {
        let r = EncryptionRecord::new(counting_key().identifier(), Some(Kdf::new_argon2id([5; 16])));
        assert_eq!(EncryptionRecord::decode(&r.encode()).unwrap(), r);
        let plain = EncryptionRecord::new(counting_key().identifier(), None);
        assert!(!String::from_utf8(plain.encode()).unwrap().contains("kdf"));
        for bad in [
            EncryptionRecord { contents: "adiantum".into(), ..r.clone() },
            EncryptionRecord { directory: "../etc".into(), ..r.clone() },
            EncryptionRecord { key_identifier: "00".into(), ..r.clone() },
            EncryptionRecord { kdf: Some(Kdf { memory_kib: u32::MAX, ..Kdf::new_argon2id([5; 16]) }), ..r.clone() },
            EncryptionRecord { kdf: Some(Kdf { iterations: 1000, ..Kdf::new_argon2id([5; 16]) }), ..r.clone() },
            EncryptionRecord { kdf: Some(Kdf { salt: "abc".into(), ..Kdf::new_argon2id([5; 16]) }), ..r.clone() },
            EncryptionRecord { kdf: Some(Kdf { algorithm: "scrypt".into(), ..Kdf::new_argon2id([5; 16]) }), ..r },
        ] {
            assert!(EncryptionRecord::decode(&bad.encode()).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn key_and_passphrase_files_must_be_private() {
        assert_eq!(file_mode_problem(0o600), None);
        assert_eq!(file_mode_problem(0o400), None);
        assert!(file_mode_problem(0o644).unwrap().contains("chmod 600"));
        assert!(file_mode_problem(0o640).is_some());
        assert!(file_mode_problem(0o602).is_some());
    }

    #[test]
    fn the_superblock_bit_is_read_only_from_ext4() {
        let mut sb = vec![0u8; EXT4_SUPERBLOCK_BYTES];
        assert_eq!(ext4_encrypt_feature(&sb), None);
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        assert_eq!(ext4_encrypt_feature(&sb), Some(false));
        sb[0x60..0x64].copy_from_slice(&0x1_0240u32.to_le_bytes());
        assert_eq!(ext4_encrypt_feature(&sb), Some(true));
        assert_eq!(ext4_encrypt_feature(&sb[..0x50]), None);
    }

    proptest! {
        #[test]
        fn record_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = EncryptionRecord::decode(&bytes);
        }

        #[test]
        fn identifiers_round_trip_as_hex(id in any::<[u8; 16]>()) {
            prop_assert_eq!(KeyIdentifier::parse(&KeyIdentifier(id).to_string()), Some(KeyIdentifier(id)));
        }
    }
}
