//! Streams written by released versions must keep decoding. Each sample in
//! tests/data/ is applied to an image and the result compared with the hash
//! of the snapshot it was sent from.

use std::path::PathBuf;
use subvol_core::stream::{Record, StreamReader};

fn data(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn apply(image: &mut Vec<u8>, stream: &[u8]) -> subvol_core::stream::StreamHeader {
    let mut r = StreamReader::new(stream).expect("header");
    image.resize(r.header.virtual_size as usize, 0);
    let mut ended = false;
    while let Some(rec) = r.next_record().expect("record") {
        match rec {
            Record::Data { offset, data } => {
                image[offset as usize..offset as usize + data.len()].copy_from_slice(&data)
            }
            Record::Hole { offset, length } => image[offset as usize..(offset + length) as usize].fill(0),
            Record::End(_) => ended = true,
        }
    }
    assert!(ended);
    r.header
}

#[test]
fn v1_samples_still_decode() {
    let mut image = Vec::new();
    let full = apply(&mut image, &data("v1-full.stream"));
    assert!(full.base.is_none());
    assert_eq!(full.snapshot.name, "sample@one");
    assert_eq!(
        blake3::hash(&image).to_hex().as_str(),
        "a6d351a36ba8f13fa229658e579f81316d3a30c00de716a30e976a3f47512735"
    );
    let inc = apply(&mut image, &data("v1-incremental-zstd.stream"));
    assert_eq!(inc.base.as_ref().map(|b| b.guid), Some(full.snapshot.guid));
    assert_eq!(
        blake3::hash(&image).to_hex().as_str(),
        "0d19041e6bc77e3b6e0f3134d0987aa410e28d014f47736621363d808c9cac39"
    );
}
