//! Request bodies with `Content-Encoding: gzip` or `deflate` (Moesif's SDKs gzip, its Lua
//! plugin deflates). Decoding is bounded: output beyond the limit stops the decoder, so a
//! decompression bomb costs at most `limit + 1` bytes of memory and becomes a 413.

use std::io::Read;

use flate2::read::{DeflateDecoder, GzDecoder, ZlibDecoder};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
    Deflate,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("content-encoding {0:?} is not supported (identity, gzip and deflate are)")]
    Unsupported(String),
    #[error("the decompressed body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the {0} body is corrupt")]
    Corrupt(&'static str),
}

impl ContentEncoding {
    /// Parses a `content-encoding` header value. Stacked encodings are refused.
    /// The `content-encoding` of a whole header map. Several header lines are one list
    /// (RFC 9110 §5.3), and a list of more than one coding is not one Veil decodes: refused,
    /// never decoded once and passed on as if that were all.
    pub fn from_headers(
        headers: &crate::header_map::HeaderMap,
    ) -> Result<ContentEncoding, DecodeError> {
        if headers.count("content-encoding") > 1 {
            return Err(DecodeError::Unsupported(
                "several content-encoding headers".into(),
            ));
        }
        ContentEncoding::from_header(headers.get("content-encoding").as_deref())
    }

    pub fn from_header(value: Option<&str>) -> Result<ContentEncoding, DecodeError> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(ContentEncoding::Identity);
        };
        if v.eq_ignore_ascii_case("identity") {
            Ok(ContentEncoding::Identity)
        } else if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
            Ok(ContentEncoding::Gzip)
        } else if v.eq_ignore_ascii_case("deflate") {
            Ok(ContentEncoding::Deflate)
        } else {
            Err(DecodeError::Unsupported(v.chars().take(40).collect()))
        }
    }
}

/// Decodes `body` into at most `limit` bytes. Identity bodies are returned as they are
/// (the caller checks their size).
pub fn decode(
    encoding: ContentEncoding,
    body: &[u8],
    limit: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, DecodeError> {
    match encoding {
        ContentEncoding::Identity => Ok(std::borrow::Cow::Borrowed(body)),
        ContentEncoding::Gzip => bounded(GzDecoder::new(body), limit, "gzip").map(Into::into),
        // HTTP's "deflate" is the zlib format (RFC 1950), but some clients send raw
        // deflate (RFC 1951): a zlib stream starts with a header whose checksum is valid.
        ContentEncoding::Deflate if is_zlib_header(body) => {
            bounded(ZlibDecoder::new(body), limit, "deflate").map(Into::into)
        }
        ContentEncoding::Deflate => {
            bounded(DeflateDecoder::new(body), limit, "deflate").map(Into::into)
        }
    }
}

fn is_zlib_header(b: &[u8]) -> bool {
    match (b.first(), b.get(1)) {
        (Some(&cmf), Some(&flg)) => {
            cmf & 0x0F == 8 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
        }
        _ => false,
    }
}

fn bounded(reader: impl Read, limit: usize, what: &'static str) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Corrupt(what))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;

    #[test]
    fn a_header_map_gives_one_coding_or_a_refusal() {
        use crate::header_map::{encode, HeaderMap};
        let map = |pairs: &[(&str, &str)]| HeaderMap::parse(encode(pairs)).unwrap();
        assert_eq!(
            ContentEncoding::from_headers(&map(&[(":path", "/")])).unwrap(),
            ContentEncoding::Identity
        );
        assert_eq!(
            ContentEncoding::from_headers(&map(&[("content-encoding", "GZIP")])).unwrap(),
            ContentEncoding::Gzip
        );
        for two in [
            &[("content-encoding", "gzip"), ("content-encoding", "gzip")][..],
            &[
                ("content-encoding", "identity"),
                ("content-encoding", "gzip"),
            ][..],
            &[("content-encoding", "gzip, gzip")][..],
        ] {
            assert!(
                matches!(
                    ContentEncoding::from_headers(&map(two)),
                    Err(DecodeError::Unsupported(_))
                ),
                "{two:?}"
            );
        }
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn header_values() {
        use ContentEncoding::*;
        assert_eq!(ContentEncoding::from_header(None), Ok(Identity));
        assert_eq!(ContentEncoding::from_header(Some(" GZIP ")), Ok(Gzip));
        assert_eq!(ContentEncoding::from_header(Some("deflate")), Ok(Deflate));
        assert!(matches!(
            ContentEncoding::from_header(Some("gzip, br")),
            Err(DecodeError::Unsupported(_))
        ));
    }

    #[test]
    fn gzip_zlib_and_raw_deflate_decode() {
        let data = br#"{"a":"b"}"#;
        assert_eq!(
            &*decode(ContentEncoding::Gzip, &gz(data), 100).unwrap(),
            data
        );
        let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
        z.write_all(data).unwrap();
        let z = z.finish().unwrap();
        assert_eq!(&*decode(ContentEncoding::Deflate, &z, 100).unwrap(), data);
        let mut d = DeflateEncoder::new(Vec::new(), Compression::fast());
        d.write_all(data).unwrap();
        let d = d.finish().unwrap();
        assert_eq!(&*decode(ContentEncoding::Deflate, &d, 100).unwrap(), data);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compress to well under 1 MiB.
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(&vec![0u8; 64 << 20]).unwrap();
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        assert_eq!(
            decode(ContentEncoding::Gzip, &bomb, 1 << 20).unwrap_err(),
            DecodeError::TooLarge { limit: 1 << 20 }
        );
    }

    #[test]
    fn corrupt_bodies_are_errors() {
        assert_eq!(
            decode(ContentEncoding::Gzip, b"not gzip", 100).unwrap_err(),
            DecodeError::Corrupt("gzip")
        );
        let mut truncated = gz(b"{\"a\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"}");
        truncated.truncate(truncated.len() - 10);
        assert_eq!(
            decode(ContentEncoding::Gzip, &truncated, 100).unwrap_err(),
            DecodeError::Corrupt("gzip")
        );
    }
}
