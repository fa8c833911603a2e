//! The wire format of encoded requests and responses (docs/relay-protocol.md §3–4): the
//! `x-veil-relay` control headers, the sealed parts (AES-256-GCM with a nonce and AD built
//! from the pair, `seq`, method, flags, part and status), and the headers JSON.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{RelayError, LABEL};

/// AES-GCM tag length, appended to every sealed part.
pub const TAG_LEN: usize = 16;
/// Nonce length: `u32be(part) || u64be(seq)`.
pub const NONCE_LEN: usize = 12;
/// Length of a pair id (b64url of 16 bytes).
pub const PAIR_ID_LEN: usize = 22;
/// The marker between the prefix and the sealed path: `P "/x/" b64url(...)`.
pub const PATH_MARK: &str = "/x/";

/// A sealed part. The discriminant is the `byte(part)` of the AD and the nonce's `u32be(part)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Part {
    RequestUrl = 1,
    RequestHeaders = 2,
    RequestBody = 3,
    ResponseHeaders = 4,
    ResponseBody = 5,
}

impl Part {
    /// The part's number (1–5).
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// Parts 4 and 5 travel server→client (key `s2c`, AD with the status).
    pub fn is_response(self) -> bool {
        matches!(self, Part::ResponseHeaders | Part::ResponseBody)
    }
}

/// Whether `s` looks like a pair id: 22 base64url characters.
pub fn is_pair_id(s: &str) -> bool {
    s.len() == PAIR_ID_LEN
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Highest `seq`: 2^53 − 1, exact in a JavaScript number and in the keyservice's Redis store.
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// `seq` in canonical decimal (no sign, no leading zero), 1 to `MAX_SEQ`.
fn parse_seq(s: &str) -> Result<u64, RelayError> {
    const BAD: RelayError = RelayError::BadRequest("seq is not a decimal number from 1 to 2^53-1");
    let canonical = !s.is_empty()
        && s.len() <= 16
        && s.bytes().all(|c| c.is_ascii_digit())
        && !s.starts_with('0');
    if !canonical {
        return Err(BAD);
    }
    match s.parse::<u64>() {
        Ok(n) if n <= MAX_SEQ => Ok(n),
        _ => Err(BAD),
    }
}

/// The request's `x-veil-relay`: `"v1," client_id "," pair_id "," seq "," flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestControl<'a> {
    pub client_id: &'a str,
    pub pair_id: &'a str,
    pub seq: u64,
    /// `b` in the flags: a body part follows.
    pub body: bool,
}

impl<'a> RequestControl<'a> {
    /// Parses a header value. Only the shape is checked here; the filter still verifies the
    /// client id and looks the pair up.
    pub fn parse(value: &'a str) -> Result<Self, RelayError> {
        let mut it = value.split(',');
        let (Some(v), Some(client_id), Some(pair_id), Some(seq), Some(flags), None) = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        ) else {
            return Err(RelayError::BadRequest(
                "x-veil-relay does not have 5 fields",
            ));
        };
        if v != "v1" {
            return Err(RelayError::BadRequest("x-veil-relay version is not v1"));
        }
        if client_id.is_empty() {
            return Err(RelayError::BadClientId);
        }
        if !is_pair_id(pair_id) {
            return Err(RelayError::BadRequest(
                "pair id is not 22 base64url characters",
            ));
        }
        let seq = parse_seq(seq)?;
        let body = match flags {
            "uh" => false,
            "uhb" => true,
            _ => return Err(RelayError::BadRequest("request flags are not uh or uhb")),
        };
        Ok(RequestControl {
            client_id,
            pair_id,
            seq,
            body,
        })
    }

    /// `uh` or `uhb`.
    pub fn flags(&self) -> &'static str {
        if self.body {
            "uhb"
        } else {
            "uh"
        }
    }

    /// The header value.
    pub fn to_header_value(&self) -> String {
        format!(
            "v1,{},{},{},{}",
            self.client_id,
            self.pair_id,
            self.seq,
            self.flags()
        )
    }

    /// The context of the request parts (1–3).
    pub fn context(&self, method: &'a str) -> PartContext<'a> {
        PartContext {
            pair_id: self.pair_id,
            seq: self.seq,
            method,
            flags: self.flags(),
            status: None,
        }
    }
}

impl core::fmt::Display for RequestControl<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.to_header_value())
    }
}

/// The response's `x-veil-relay`: `"v1," pair_id "," seq "," flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseControl<'a> {
    pub pair_id: &'a str,
    pub seq: u64,
    /// `b` in the flags: a body part follows.
    pub body: bool,
}

impl<'a> ResponseControl<'a> {
    /// Parses a header value.
    pub fn parse(value: &'a str) -> Result<Self, RelayError> {
        let mut it = value.split(',');
        let (Some(v), Some(pair_id), Some(seq), Some(flags), None) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Err(RelayError::DecodeFailed(
                "x-veil-relay does not have 4 fields",
            ));
        };
        if v != "v1" || !is_pair_id(pair_id) {
            return Err(RelayError::DecodeFailed(
                "x-veil-relay is not v1 with a pair id",
            ));
        }
        let seq = parse_seq(seq).map_err(|_| RelayError::DecodeFailed("bad seq"))?;
        let body = match flags {
            "h" => false,
            "hb" => true,
            _ => return Err(RelayError::DecodeFailed("response flags are not h or hb")),
        };
        Ok(ResponseControl { pair_id, seq, body })
    }

    /// `h` or `hb`.
    pub fn flags(&self) -> &'static str {
        if self.body {
            "hb"
        } else {
            "h"
        }
    }

    /// The header value.
    pub fn to_header_value(&self) -> String {
        format!("v1,{},{},{}", self.pair_id, self.seq, self.flags())
    }

    /// The context of the response parts (4–5): the request's method, this status.
    pub fn context(&self, method: &'a str, status: u16) -> PartContext<'a> {
        PartContext {
            pair_id: self.pair_id,
            seq: self.seq,
            method,
            flags: self.flags(),
            status: Some(status),
        }
    }
}

impl core::fmt::Display for ResponseControl<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.to_header_value())
    }
}

/// What a part's nonce and AD are built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartContext<'a> {
    pub pair_id: &'a str,
    pub seq: u64,
    pub method: &'a str,
    /// The flags of the control header the part travels with (`uh`/`uhb`, `h`/`hb`).
    pub flags: &'a str,
    /// The response status; `Some` exactly for response parts.
    pub status: Option<u16>,
}

impl PartContext<'_> {
    /// `u32be(part) || u64be(seq)`.
    pub fn nonce(&self, part: Part) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        let (p, s) = n.split_at_mut(4);
        p.copy_from_slice(&u32::from(part.byte()).to_be_bytes());
        s.copy_from_slice(&self.seq.to_be_bytes());
        n
    }

    /// `LABEL 0 pair_id 0 seq 0 method 0 flags 0 byte(part)` and, for response parts,
    /// `0 status` (3 decimal digits). `byte(part)` is the raw byte 0x01–0x05.
    pub fn ad(&self, part: Part) -> Result<Vec<u8>, RelayError> {
        let status = match (part.is_response(), self.status) {
            (false, None) => None,
            (true, Some(s)) if (100..=999).contains(&s) => Some(s),
            _ => return Err(RelayError::DecodeFailed("part and status do not fit")),
        };
        let seq = self.seq.to_string();
        let mut ad = Vec::with_capacity(
            LABEL.len()
                + self.pair_id.len()
                + seq.len()
                + self.method.len()
                + self.flags.len()
                + 10,
        );
        for field in [
            LABEL,
            self.pair_id.as_bytes(),
            seq.as_bytes(),
            self.method.as_bytes(),
            self.flags.as_bytes(),
        ] {
            ad.extend_from_slice(field);
            ad.push(0);
        }
        ad.push(part.byte());
        if let Some(s) = status {
            ad.push(0);
            ad.extend_from_slice(format!("{s:03}").as_bytes());
        }
        Ok(ad)
    }
}

/// One direction's AES-256-GCM key schedule, built once per pair (zeroized on drop through
/// the `aes`/`aes-gcm` `zeroize` features). `c2s` seals parts 1–3, `s2c` parts 4–5; using
/// the wrong one simply fails to open.
pub struct PartCipher {
    gcm: Aes256Gcm,
}

// The key schedule is wiped by its own drop (aes-gcm's `zeroize` feature); checked here at
// compile time, so the marker below stays true.
const _: fn() = || {
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    wiped_on_drop::<Aes256Gcm>();
};
impl zeroize::ZeroizeOnDrop for PartCipher {}

impl core::fmt::Debug for PartCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PartCipher(<redacted>)")
    }
}

impl PartCipher {
    pub fn new(key: &[u8; 32]) -> Self {
        PartCipher {
            gcm: Aes256Gcm::new(&(*key).into()),
        }
    }

    /// `ciphertext || tag` of `plaintext`.
    pub fn seal(
        &self,
        part: Part,
        ctx: &PartContext<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, RelayError> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        self.seal_into(part, ctx, plaintext, &mut out)?;
        Ok(out)
    }

    /// Appends `ciphertext || tag` of `plaintext` to `out` (left as it was on error).
    pub fn seal_into(
        &self,
        part: Part,
        ctx: &PartContext<'_>,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RelayError> {
        let start = out.len();
        out.reserve(plaintext.len() + TAG_LEN);
        out.extend_from_slice(plaintext);
        let r = self.seal_tail(part, ctx, out, start);
        if r.is_err() {
            if let Some(tail) = out.get_mut(start..) {
                zeroize::Zeroize::zeroize(tail);
            }
            out.truncate(start);
        }
        r
    }

    /// Seals `buf` in place: the plaintext becomes `ciphertext || tag`.
    pub fn seal_in_place(
        &self,
        part: Part,
        ctx: &PartContext<'_>,
        buf: &mut Vec<u8>,
    ) -> Result<(), RelayError> {
        self.seal_tail(part, ctx, buf, 0)
    }

    /// Encrypts `buf[start..]` and appends the tag.
    fn seal_tail(
        &self,
        part: Part,
        ctx: &PartContext<'_>,
        buf: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), RelayError> {
        let ad = ctx.ad(part)?;
        let nonce = aes_gcm::Nonce::<U12>::from(ctx.nonce(part));
        let pt = buf.get_mut(start..).ok_or(RelayError::TooLarge)?;
        let tag = self
            .gcm
            .encrypt_inout_detached(&nonce, &ad, InOutBuf::from(pt))
            .map_err(|_| RelayError::TooLarge)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// The plaintext of `ciphertext || tag`.
    pub fn open(
        &self,
        part: Part,
        ctx: &PartContext<'_>,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, RelayError> {
        let mut buf = ciphertext.to_vec();
        self.open_in_place(part, ctx, &mut buf)?;
        Ok(buf)
    }

    /// Opens `buf` in place: `ciphertext || tag` becomes the plaintext. On error `buf` holds
    /// no plaintext (GCM checks the tag before decrypting).
    pub fn open_in_place(
        &self,
        part: Part,
        ctx: &PartContext<'_>,
        buf: &mut Vec<u8>,
    ) -> Result<(), RelayError> {
        const FAILED: RelayError = RelayError::DecodeFailed("a part does not open");
        let ad = ctx.ad(part)?;
        let nonce = aes_gcm::Nonce::<U12>::from(ctx.nonce(part));
        let ct_len = buf.len().checked_sub(TAG_LEN).ok_or(FAILED)?;
        let (ct, tag) = buf.split_at_mut_checked(ct_len).ok_or(FAILED)?;
        let tag = aes_gcm::Tag::try_from(&*tag).map_err(|_| FAILED)?;
        self.gcm
            .decrypt_inout_detached(&nonce, &ad, InOutBuf::from(ct), &tag)
            .map_err(|_| FAILED)?;
        buf.truncate(ct_len);
        Ok(())
    }

    /// `b64url(seal(...))`, for the path and the `x-veil-relay-eh` header.
    pub fn seal_b64(
        &self,
        part: Part,
        ctx: &PartContext<'_>,
        plaintext: &[u8],
    ) -> Result<String, RelayError> {
        Ok(URL_SAFE_NO_PAD.encode(self.seal(part, ctx, plaintext)?))
    }

    /// Opens a `b64url(seal(...))`.
    pub fn open_b64(
        &self,
        part: Part,
        ctx: &PartContext<'_>,
        b64: &str,
    ) -> Result<Vec<u8>, RelayError> {
        let mut buf = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| RelayError::DecodeFailed("a part is not base64url"))?;
        self.open_in_place(part, ctx, &mut buf)?;
        Ok(buf)
    }
}

/// The encoded `:path`: `prefix "/x/" b64`.
pub fn encoded_path(prefix: &str, sealed_b64: &str) -> String {
    format!("{}{PATH_MARK}{sealed_b64}", prefix.trim_end_matches('/'))
}

/// The sealed path part of an encoded `:path` (`None` if it is not `prefix "/x/" ...`).
/// Anything after a `?` is not part of it.
pub fn sealed_path_part<'p>(prefix: &str, path: &'p str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix.trim_end_matches('/'))?;
    let b64 = rest.strip_prefix(PATH_MARK)?;
    let b64 = b64.split_once('?').map_or(b64, |(p, _)| p);
    (!b64.is_empty()).then_some(b64)
}

/// Request header names the filter refuses in the decoded headers: framing and hop-by-hop
/// headers (the filter and Envoy own them), and `origin` and `referer`, which the browser
/// sets on the wire and a page's script cannot: a decoded header replaces the wire header
/// of the same name, so a malicious page could otherwise encode its own `origin` and pass
/// an upstream's Origin (CSRF) check.
pub const FORBIDDEN_REQUEST_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "proxy-connection",
    "origin",
    "referer",
];

/// Name prefixes refused in the decoded request headers: `x-veil-` (the relay's own) and
/// `sec-` (`sec-fetch-*`, `sec-ch-*`, …: set by the browser only, by the fetch spec's rule
/// that scripts may not set `sec-` names, so an encoded one would be a forgery).
pub const FORBIDDEN_REQUEST_HEADER_PREFIXES: &[&str] = &["x-veil-", "sec-"];

/// Whether the protocol keeps `name` (lowercase) out of the decoded request headers.
pub fn is_forbidden_request_header(name: &str) -> bool {
    FORBIDDEN_REQUEST_HEADERS.contains(&name)
        || FORBIDDEN_REQUEST_HEADER_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
}

/// The headers JSON: `[[name, value], ...]` in order.
pub fn encode_headers(list: &[(String, String)]) -> Vec<u8> {
    serde_json::to_vec(list).unwrap_or_default()
}

/// A lowercase HTTP token (RFC 9110 `tchar`, no uppercase): no pseudo-headers, no spaces.
pub fn is_lowercase_token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&c)
        })
}

/// A field value Envoy forwards as is: no control characters other than tab.
fn is_field_value(v: &str) -> bool {
    v.bytes().all(|c| c == b'\t' || (c >= 0x20 && c != 0x7f))
}

fn decode_headers(bytes: &[u8]) -> Result<Vec<(String, String)>, RelayError> {
    let list: Vec<(String, String)> = serde_json::from_slice(bytes)
        .map_err(|_| RelayError::DecodeFailed("headers are not a JSON array of pairs"))?;
    for (name, value) in &list {
        if !is_lowercase_token(name) {
            return Err(RelayError::DecodeFailed(
                "a header name is not a lowercase token",
            ));
        }
        if !is_field_value(value) {
            return Err(RelayError::DecodeFailed(
                "a header value holds control characters",
            ));
        }
    }
    Ok(list)
}

/// Decoded request headers, refused when a name is not a lowercase token, is forbidden
/// ([`is_forbidden_request_header`]) or a value holds control characters.
pub fn decode_request_headers(bytes: &[u8]) -> Result<Vec<(String, String)>, RelayError> {
    let list = decode_headers(bytes)?;
    if list.iter().any(|(n, _)| is_forbidden_request_header(n)) {
        return Err(RelayError::DecodeFailed("a decoded header is not allowed"));
    }
    Ok(list)
}

/// Decoded response headers (the client's side): lowercase tokens, clean values.
pub fn decode_response_headers(bytes: &[u8]) -> Result<Vec<(String, String)>, RelayError> {
    decode_headers(bytes)
}

/// Response headers that stay visible (not sealed): pseudo-headers, `set-cookie`, `date`,
/// `server`, `vary`, `cache-control`, `strict-transport-security`, `x-request-id`,
/// `access-control-*`, hop-by-hop headers, and `extra` (`visible_response_headers`,
/// compared without case). `name` is lowercase, as Envoy hands it over.
pub fn is_visible_response_header(name: &str, extra: &[String]) -> bool {
    const VISIBLE: &[&str] = &[
        "set-cookie",
        "date",
        "server",
        "vary",
        "cache-control",
        "strict-transport-security",
        "x-request-id",
        // hop-by-hop (RFC 9110 §7.6.1 and the classic list)
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
    ];
    name.starts_with(':')
        || name.starts_with("access-control-")
        || VISIBLE.contains(&name)
        || extra.iter().any(|e| e.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAIR: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    fn cipher() -> PartCipher {
        PartCipher::new(&[0x42; 32])
    }

    #[test]
    fn request_control_round_trip_and_errors() {
        let v = format!("v1,cid,{PAIR},7,uhb");
        let c = RequestControl::parse(&v).unwrap();
        assert_eq!(
            (c.client_id, c.pair_id, c.seq, c.body),
            ("cid", PAIR, 7, true)
        );
        assert_eq!(c.to_header_value(), v);
        assert_eq!(c.to_string(), v);
        let max = format!("v1,cid,{PAIR},9007199254740991,uh");
        let c = RequestControl::parse(&max).unwrap();
        assert_eq!((c.seq, c.flags()), (MAX_SEQ, "uh"));
        for bad in [
            String::new(),
            format!("v2,cid,{PAIR},1,uh"),
            format!("v1,cid,{PAIR},1"),
            format!("v1,cid,{PAIR},1,uh,x"),
            format!("v1,cid,{PAIR},0,uh"),
            format!("v1,cid,{PAIR},07,uh"),
            format!("v1,cid,{PAIR},+7,uh"),
            format!("v1,cid,{PAIR},-1,uh"),
            format!("v1,cid,{PAIR},9007199254740992,uh"),
            format!("v1,cid,{PAIR},18446744073709551616,uh"),
            format!("v1,cid,{PAIR},1,u"),
            format!("v1,cid,{PAIR},1,UH"),
            format!("v1,cid,{PAIR},1,hb"),
            "v1,cid,short,1,uh".to_string(),
            format!("v1,cid,{}!,1,uh", &PAIR[..21]),
        ] {
            assert!(
                matches!(RequestControl::parse(&bad), Err(RelayError::BadRequest(_))),
                "{bad}"
            );
        }
        assert_eq!(
            RequestControl::parse(&format!("v1,,{PAIR},1,uh")),
            Err(RelayError::BadClientId)
        );
    }

    #[test]
    fn response_control_round_trip_and_errors() {
        let v = format!("v1,{PAIR},3,h");
        let c = ResponseControl::parse(&v).unwrap();
        assert_eq!((c.pair_id, c.seq, c.body), (PAIR, 3, false));
        assert_eq!(c.to_header_value(), v);
        assert!(
            ResponseControl::parse(&format!("v1,{PAIR},3,hb"))
                .unwrap()
                .body
        );
        for bad in [
            format!("v1,{PAIR},3,uh"),
            format!("v1,{PAIR},3"),
            format!("v1,x,{PAIR},3,h"),
            format!("v1,{PAIR},0,h"),
        ] {
            assert!(ResponseControl::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nonce_and_ad_layout() {
        let ctx = RequestControl {
            client_id: "c",
            pair_id: PAIR,
            seq: 258,
            body: false,
        }
        .context("GET");
        assert_eq!(
            ctx.nonce(Part::RequestHeaders),
            [0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        let mut want = b"veil-relay/v1\0".to_vec();
        want.extend_from_slice(PAIR.as_bytes());
        want.extend_from_slice(b"\x00258\x00GET\x00uh\x00\x01");
        assert_eq!(ctx.ad(Part::RequestUrl).unwrap(), want);
        let r = ResponseControl {
            pair_id: PAIR,
            seq: 258,
            body: true,
        }
        .context("GET", 204);
        let ad = r.ad(Part::ResponseBody).unwrap();
        assert!(
            ad.ends_with(b"\x00258\x00GET\x00hb\x00\x05\x00204"),
            "{ad:?}"
        );
        // parts and status must fit together
        assert!(ctx.ad(Part::ResponseHeaders).is_err());
        assert!(r.ad(Part::RequestBody).is_err());
        assert!(ResponseControl::parse(&format!("v1,{PAIR},1,h"))
            .unwrap()
            .context("GET", 42)
            .ad(Part::ResponseHeaders)
            .is_err());
    }

    #[test]
    fn seal_open_and_every_binding() {
        let c = cipher();
        let ctl = RequestControl {
            client_id: "c",
            pair_id: PAIR,
            seq: 5,
            body: true,
        };
        let ctx = ctl.context("POST");
        let sealed = c.seal(Part::RequestBody, &ctx, b"hello").unwrap();
        assert_eq!(sealed.len(), 5 + TAG_LEN);
        assert_eq!(c.open(Part::RequestBody, &ctx, &sealed).unwrap(), b"hello");
        // empty body: just the tag
        assert_eq!(c.seal(Part::RequestBody, &ctx, b"").unwrap().len(), TAG_LEN);
        let fails = |part: Part, ctx: &PartContext<'_>, ct: &[u8]| {
            assert_eq!(
                c.open(part, ctx, ct),
                Err(RelayError::DecodeFailed("a part does not open"))
            );
        };
        fails(Part::RequestHeaders, &ctx, &sealed);
        fails(
            Part::RequestBody,
            &RequestControl { seq: 6, ..ctl }.context("POST"),
            &sealed,
        );
        fails(Part::RequestBody, &ctl.context("PUT"), &sealed);
        fails(
            Part::RequestBody,
            &RequestControl { body: false, ..ctl }.context("POST"),
            &sealed,
        );
        let other_pair = "BAAAAAAAAAAAAAAAAAAAAA";
        fails(
            Part::RequestBody,
            &RequestControl {
                pair_id: other_pair,
                ..ctl
            }
            .context("POST"),
            &sealed,
        );
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        fails(Part::RequestBody, &ctx, &flipped);
        fails(Part::RequestBody, &ctx, &sealed[..TAG_LEN - 1]);
        assert!(PartCipher::new(&[0x43; 32])
            .open(Part::RequestBody, &ctx, &sealed)
            .is_err());
        // response status is bound
        let rc = ResponseControl {
            pair_id: PAIR,
            seq: 5,
            body: true,
        };
        let s = c
            .seal(Part::ResponseBody, &rc.context("POST", 200), b"x")
            .unwrap();
        assert!(c
            .open(Part::ResponseBody, &rc.context("POST", 201), &s)
            .is_err());
        assert_eq!(
            c.open(Part::ResponseBody, &rc.context("POST", 200), &s)
                .unwrap(),
            b"x"
        );
    }

    #[test]
    fn in_place_and_appending_forms_agree() {
        let c = cipher();
        let ctx = RequestControl {
            client_id: "c",
            pair_id: PAIR,
            seq: 1,
            body: true,
        }
        .context("PUT");
        let want = c.seal(Part::RequestBody, &ctx, b"body bytes").unwrap();
        let mut buf = b"body bytes".to_vec();
        c.seal_in_place(Part::RequestBody, &ctx, &mut buf).unwrap();
        assert_eq!(buf, want);
        let mut out = b"head".to_vec();
        c.seal_into(Part::RequestBody, &ctx, b"body bytes", &mut out)
            .unwrap();
        assert_eq!(&out[..4], b"head");
        assert_eq!(&out[4..], &want[..]);
        c.open_in_place(Part::RequestBody, &ctx, &mut buf).unwrap();
        assert_eq!(buf, b"body bytes");
        // a failed seal leaves `out` as it was
        let mut out = b"head".to_vec();
        assert!(c
            .seal_into(Part::ResponseBody, &ctx, b"x", &mut out)
            .is_err());
        assert_eq!(out, b"head");
        let b64 = c.seal_b64(Part::RequestUrl, &ctx, b"/a?b=1").unwrap();
        assert_eq!(c.open_b64(Part::RequestUrl, &ctx, &b64).unwrap(), b"/a?b=1");
        assert!(c
            .open_b64(Part::RequestUrl, &ctx, &format!("{b64}="))
            .is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(encoded_path("/veil", "abc"), "/veil/x/abc");
        assert_eq!(encoded_path("/veil/", "abc"), "/veil/x/abc");
        assert_eq!(sealed_path_part("/veil", "/veil/x/abc"), Some("abc"));
        assert_eq!(sealed_path_part("/veil", "/veil/x/abc?q"), Some("abc"));
        assert_eq!(sealed_path_part("/veil", "/veil/x/"), None);
        assert_eq!(sealed_path_part("/veil", "/veil/y/abc"), None);
        assert_eq!(sealed_path_part("/veil", "/other/x/abc"), None);
    }

    #[test]
    fn headers_json() {
        let list = vec![
            ("accept".to_string(), "a/b".to_string()),
            ("x-app".to_string(), "1".to_string()),
            ("x-app".to_string(), "2\tthree".to_string()),
        ];
        let json = encode_headers(&list);
        assert_eq!(
            json,
            br#"[["accept","a/b"],["x-app","1"],["x-app","2\tthree"]]"#
        );
        assert_eq!(decode_request_headers(&json).unwrap(), list);
        assert_eq!(decode_request_headers(b"[]").unwrap(), vec![]);
        for bad in [
            &br#"[["Accept","x"]]"#[..],
            br#"[[":path","/x"]]"#,
            br#"[["host","x"]]"#,
            br#"[["content-length","1"]]"#,
            br#"[["transfer-encoding","chunked"]]"#,
            br#"[["te","trailers"]]"#,
            br#"[["x-veil-relay","x"]]"#,
            br#"[["a b","x"]]"#,
            br#"[["","x"]]"#,
            br#"[["a","x\r\ny: z"]]"#,
            br#"[["a","x\u0000"]]"#,
            br#"[["a","x","y"]]"#,
            br#"[["a"]]"#,
            br#"{"a":"x"}"#,
            br#"[["a",1]]"#,
            b"not json",
        ] {
            assert!(
                decode_request_headers(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // the response side allows content-length and friends, still checks shape
        let r = decode_response_headers(br#"[["content-length","3"],["etag","\"x\""]]"#).unwrap();
        assert_eq!(r.len(), 2);
        assert!(decode_response_headers(br#"[["Content-Type","x"]]"#).is_err());
    }

    #[test]
    fn browser_controlled_request_headers_are_refused() {
        // A page's script could otherwise replace what the browser put on the wire (a
        // decoded header replaces the wire header of the same name): Origin-based CSRF
        // checks, Fetch Metadata and client hints would trust a forgery.
        for name in [
            "origin",
            "referer",
            "sec-fetch-site",
            "sec-fetch-mode",
            "sec-fetch-dest",
            "sec-fetch-user",
            "sec-ch-ua",
            "sec-ch-ua-platform",
            "sec-websocket-key",
            "sec-",
        ] {
            let json = encode_headers(&[
                ("accept".to_string(), "*/*".to_string()),
                (name.to_string(), "https://evil.example".to_string()),
            ]);
            let e = decode_request_headers(&json).unwrap_err();
            assert_eq!(e.code(), "relay-decode-failed", "{name}");
            assert!(is_forbidden_request_header(name), "{name}");
        }
        // Look-alikes are ordinary application headers; the response side is not limited.
        for name in [
            "origin-x",
            "x-origin",
            "referrer",
            "secret",
            "sec",
            "x-sec-fetch",
        ] {
            let list = vec![(name.to_string(), "v".to_string())];
            assert_eq!(
                decode_request_headers(&encode_headers(&list)).unwrap(),
                list,
                "{name}"
            );
        }
        assert_eq!(
            decode_response_headers(br#"[["origin","o"],["sec-x","1"]]"#)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn visible_response_headers() {
        let extra = vec!["X-Trace".to_string()];
        for v in [
            ":status",
            "set-cookie",
            "date",
            "server",
            "vary",
            "cache-control",
            "strict-transport-security",
            "x-request-id",
            "access-control-allow-origin",
            "connection",
            "transfer-encoding",
            "x-trace",
        ] {
            assert!(is_visible_response_header(v, &extra), "{v}");
        }
        for s in [
            "content-type",
            "content-length",
            "content-encoding",
            "etag",
            "x-app",
            "location",
        ] {
            assert!(!is_visible_response_header(s, &extra), "{s}");
        }
    }
}
