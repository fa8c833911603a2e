//! The bounded gzip/deflate decoder. Properties: output never exceeds the limit (a bomb is
//! `TooLarge`, never memory); compress → decode gives the bytes back, or `TooLarge` exactly
//! when they are over the limit; identity passes through untouched.
#![no_main]

use std::io::Write;

use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;
use libfuzzer_sys::fuzz_target;
use veil_core::encoding::{decode, ContentEncoding, DecodeError};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Some((&lim, body)) = rest.split_first() else {
        return;
    };
    let limit = usize::from(lim) * 64;
    let enc = match pick % 3 {
        0 => ContentEncoding::Gzip,
        1 => ContentEncoding::Deflate,
        _ => ContentEncoding::Identity,
    };
    // Arbitrary compressed bytes.
    match decode(enc, body, limit) {
        Ok(out) if enc == ContentEncoding::Identity => assert!(*out == *body),
        Ok(out) => assert!(out.len() <= limit, "decoded past the limit"),
        Err(DecodeError::TooLarge { limit: l }) => assert_eq!(l, limit),
        Err(_) => {}
    }
    // Well-formed compressed bytes of `body`, in each framing HTTP clients use.
    let packed: Vec<(ContentEncoding, Vec<u8>)> = vec![
        (ContentEncoding::Gzip, {
            let mut e = GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(body).ok();
            e.finish().unwrap_or_default()
        }),
        (ContentEncoding::Deflate, {
            let mut e = ZlibEncoder::new(Vec::new(), Compression::fast());
            e.write_all(body).ok();
            e.finish().unwrap_or_default()
        }),
        (ContentEncoding::Deflate, {
            let mut e = DeflateEncoder::new(Vec::new(), Compression::fast());
            e.write_all(body).ok();
            e.finish().unwrap_or_default()
        }),
    ];
    for (enc, bytes) in packed {
        match decode(enc, &bytes, limit) {
            Ok(out) => {
                assert!(body.len() <= limit);
                assert!(*out == *body, "decode(encode(x)) != x ({enc:?})");
            }
            Err(DecodeError::TooLarge { .. }) => assert!(body.len() > limit),
            Err(e) => panic!("well-formed {enc:?} refused: {e}"),
        }
    }
});
