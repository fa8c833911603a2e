//! Veil Relay, version 2 (docs/relay-protocol.md): the pure parts every party shares.
//!
//! - [`KeyConfig`]: the server's long-term X-Wing key, published in RFC 9458 §3's key
//!   configuration encoding (key id, KEM 0x647a X-Wing, KDF 0x0001 HKDF-SHA256, AEAD 0x0002
//!   AES-256-GCM) and pinned by clients.
//! - Pairing ([`ClientOffer`], [`ServerKey::accept`]): a secret encapsulated to the pinned
//!   key and an ephemeral X-Wing exchange, mixed by an RFC 9180-style labeled HKDF key
//!   schedule over the whole transcript, with a key confirmation the client checks.
//! - Exchanges ([`Exchange`], [`RequestCipher`], [`AnswerCipher`]): request parts under
//!   `c2s`; every answer under a key derived from `s2c` and 32 fresh bytes of the server's
//!   (the response nonce, as OHTTP), bound to the request it answers.
//! - The header rules of the decoded and the wire request, and the clients' retry rule.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use super::kem::{self, ClientKem, CIPHERTEXT_LEN, ESEED_LEN, PUBLIC_KEY_LEN, SEED_LEN};
use super::keys::PairKeys;
use super::wire::{is_pair_id, TAG_LEN};
use super::RelayError;

/// The protocol label: first bytes of every labeled KDF input, the transcript and every AD.
pub const LABEL: &[u8] = b"veil-relay/v2";
/// HPKE KEM id of X-Wing (IANA HPKE KEM registry).
pub const KEM_ID: u16 = 0x647a;
/// HPKE KDF id of HKDF-SHA256.
pub const KDF_ID: u16 = 0x0001;
/// HPKE AEAD id of AES-256-GCM.
pub const AEAD_ID: u16 = 0x0002;
/// `u16be(KEM_ID) || u16be(KDF_ID) || u16be(AEAD_ID)`, after [`LABEL`] in every labeled KDF call.
pub const SUITE_ID: [u8; 6] = [0x64, 0x7a, 0x00, 0x01, 0x00, 0x02];
/// Length of an encoded [`KeyConfig`] with the one symmetric suite: 1 + 2 + 1216 + 2 + 4.
pub const KEY_CONFIG_LEN: usize = 1 + 2 + PUBLIC_KEY_LEN + 2 + 4;
/// Length of an answer's response nonce (OHTTP: `max(Nn, Nk)` = 32 for AES-256-GCM).
pub const RESPONSE_NONCE_LEN: usize = 32;
/// Length of the pairing's key confirmation.
pub const CONFIRM_LEN: usize = 32;
/// Length of a [`RequestBinding`]: the GCM tags of request parts 1 and 2.
pub const REQUEST_BINDING_LEN: usize = 2 * TAG_LEN;
/// Version field of the `x-veil-relay` control headers.
pub const VERSION: &str = "v2";

// --- encoding helpers ------------------------------------------------------------------------

/// Appends `u32be(len(field)) || field`: every variable-length field of the transcript and
/// the ADs is length-prefixed, so no two field lists encode alike.
fn push_lp(out: &mut Vec<u8>, field: &[u8]) -> Result<(), RelayError> {
    let len = u32::try_from(field.len())
        .map_err(|_| RelayError::BadRequest("a relay field is over 2^32 bytes"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = b.split_at_checked(n)?;
    *b = tail;
    Some(head)
}

fn take_u16(b: &mut &[u8]) -> Option<u16> {
    let h = take(b, 2)?;
    Some(u16::from_be_bytes([*h.first()?, *h.get(1)?]))
}

// --- key configuration (RFC 9458 §3) ---------------------------------------------------------

/// Why a key configuration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyConfigError {
    #[error("relay key config is not base64url without padding")]
    NotBase64,
    #[error("relay key config is truncated")]
    Truncated,
    #[error("relay key config has bytes after its end")]
    TrailingBytes,
    #[error("relay key config: KEM {0:#06x} is not X-Wing (0x647a)")]
    UnsupportedKem(u16),
    #[error("relay key config: the X-Wing public key does not parse")]
    BadPublicKey,
    #[error(
        "relay key config: the symmetric algorithm list is empty or not a multiple of 4 bytes"
    )]
    BadSymmetricList,
    #[error("relay key config does not offer HKDF-SHA256 with AES-256-GCM")]
    NoSupportedSuite,
}

/// The server's public key configuration: RFC 9458 §3.1's `Key Config` with X-Wing,
/// HKDF-SHA256 and AES-256-GCM. Its encoding is what clients pin and what the transcript
/// hashes, so a client pinned to one key cannot be paired under another.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyConfig {
    key_id: u8,
    public_key: Vec<u8>,
}

impl core::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KeyConfig(key_id {})", self.key_id)
    }
}

impl KeyConfig {
    /// A configuration for an X-Wing public key (checked to parse).
    pub fn new(key_id: u8, public_key: Vec<u8>) -> Result<Self, KeyConfigError> {
        kem::parse_public_key(&public_key).map_err(|_| KeyConfigError::BadPublicKey)?;
        Ok(KeyConfig { key_id, public_key })
    }

    pub fn key_id(&self) -> u8 {
        self.key_id
    }

    /// The X-Wing public key (1216 bytes).
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// `key_id || u16be(KEM_ID) || pk || u16be(4) || u16be(KDF_ID) || u16be(AEAD_ID)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_CONFIG_LEN);
        out.push(self.key_id);
        out.extend_from_slice(&KEM_ID.to_be_bytes());
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&KDF_ID.to_be_bytes());
        out.extend_from_slice(&AEAD_ID.to_be_bytes());
        out
    }

    /// Reads one configuration from the front of `b`, leaving the rest.
    fn read(b: &mut &[u8]) -> Result<Self, KeyConfigError> {
        const T: KeyConfigError = KeyConfigError::Truncated;
        let key_id = *take(b, 1).and_then(|k| k.first()).ok_or(T)?;
        let kem_id = take_u16(b).ok_or(T)?;
        if kem_id != KEM_ID {
            return Err(KeyConfigError::UnsupportedKem(kem_id));
        }
        let pk = take(b, PUBLIC_KEY_LEN).ok_or(T)?.to_vec();
        let sym_len = usize::from(take_u16(b).ok_or(T)?);
        if sym_len == 0 || sym_len % 4 != 0 {
            return Err(KeyConfigError::BadSymmetricList);
        }
        let mut sym = take(b, sym_len).ok_or(T)?;
        let mut supported = false;
        while !sym.is_empty() {
            let kdf = take_u16(&mut sym).ok_or(T)?;
            let aead = take_u16(&mut sym).ok_or(T)?;
            supported |= kdf == KDF_ID && aead == AEAD_ID;
        }
        if !supported {
            return Err(KeyConfigError::NoSupportedSuite);
        }
        KeyConfig::new(key_id, pk)
    }

    /// Exactly one encoded configuration. A configuration that lists more symmetric suites
    /// is accepted when HKDF-SHA256 with AES-256-GCM is among them; [`to_bytes`] of the
    /// result lists only that one, so clients pin the server's own encoding.
    ///
    /// [`to_bytes`]: KeyConfig::to_bytes
    pub fn from_bytes(mut b: &[u8]) -> Result<Self, KeyConfigError> {
        let c = Self::read(&mut b)?;
        if b.is_empty() {
            Ok(c)
        } else {
            Err(KeyConfigError::TrailingBytes)
        }
    }

    /// base64url without padding of [`to_bytes`](KeyConfig::to_bytes): what `veil-keyservice
    /// relay-key show` prints and clients take as `--server-key`.
    pub fn to_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.to_bytes())
    }

    /// Reads [`to_b64`](KeyConfig::to_b64)'s form (surrounding whitespace ignored).
    pub fn from_b64(s: &str) -> Result<Self, KeyConfigError> {
        let b = URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| KeyConfigError::NotBase64)?;
        Self::from_bytes(&b)
    }

    /// RFC 9458 §3.2 `application/ohttp-keys`: each configuration as `u16be(len) || config`.
    pub fn encode_list(configs: &[KeyConfig]) -> Vec<u8> {
        let mut out = Vec::with_capacity(configs.len() * (2 + KEY_CONFIG_LEN));
        for c in configs {
            let b = c.to_bytes();
            // KEY_CONFIG_LEN fits in u16
            out.extend_from_slice(&(b.len() as u16).to_be_bytes());
            out.extend_from_slice(&b);
        }
        out
    }

    /// Reads `application/ohttp-keys`, skipping configurations with another KEM or no
    /// supported suite (RFC 9458 §3.2: clients ignore what they do not support).
    pub fn decode_list(mut b: &[u8]) -> Result<Vec<KeyConfig>, KeyConfigError> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = usize::from(take_u16(&mut b).ok_or(KeyConfigError::Truncated)?);
            let one = take(&mut b, len).ok_or(KeyConfigError::Truncated)?;
            match Self::from_bytes(one) {
                Ok(c) => out.push(c),
                Err(KeyConfigError::UnsupportedKem(_) | KeyConfigError::NoSupportedSuite) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

// --- labeled HKDF (RFC 9180 §4 shape) --------------------------------------------------------

/// `HKDF-Extract(salt, LABEL || SUITE_ID || label || ikm)`.
pub fn labeled_extract(salt: &[u8], label: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut x = hkdf::HkdfExtract::<Sha256>::new(Some(salt));
    for piece in [LABEL, &SUITE_ID, label, ikm] {
        x.input_ikm(piece);
    }
    let (prk, _) = x.finalize();
    Zeroizing::new(prk.into())
}

/// `HKDF-Expand(prk, u16be(L) || LABEL || SUITE_ID || label || info, L)` into `out`
/// (`L = out.len()`, at most 255 × 32; the protocol asks for 12 or 32 bytes). Longer is an
/// error, never a short or zero output.
pub fn labeled_expand(
    prk: &[u8; 32],
    label: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), RelayError> {
    const TOO_LONG: RelayError = RelayError::BadRequest("HKDF-Expand: output over 255 blocks");
    let hk = hkdf::Hkdf::<Sha256>::from_prk(prk).map_err(|_| TOO_LONG)?;
    labeled_expand_from(&hk, label, info, out)
}

/// [`labeled_expand`] from a PRK already keyed into HMAC: several outputs of one PRK share
/// the keyed state (the inner and outer pad blocks are hashed once, not per output).
fn labeled_expand_from(
    hk: &hkdf::Hkdf<Sha256>,
    label: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), RelayError> {
    const TOO_LONG: RelayError = RelayError::BadRequest("HKDF-Expand: output over 255 blocks");
    let len = u16::try_from(out.len())
        .map_err(|_| TOO_LONG)?
        .to_be_bytes();
    hk.expand_multi_info(&[&len, LABEL, &SUITE_ID, label, info], out)
        .map_err(|_| TOO_LONG)
}

fn expand32(prk: &[u8; 32], label: &[u8]) -> Result<[u8; 32], RelayError> {
    let mut k = [0u8; 32];
    labeled_expand(prk, label, b"", &mut k)?;
    Ok(k)
}

// --- pairing ---------------------------------------------------------------------------------

/// Everything the pairing transcript hash covers, in its order.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    /// The encoded [`KeyConfig`] the client pinned.
    pub key_config: &'a [u8],
    pub client_id: &'a str,
    pub pair_id: &'a str,
    /// The client's encapsulation to the server key (`ct_s`, 1120 bytes).
    pub enc_server: &'a [u8],
    /// The client's ephemeral X-Wing public key (`pk_e`, 1216 bytes).
    pub ephemeral_pk: &'a [u8],
    /// The server's encapsulation to `pk_e` (`ct_e`, 1120 bytes).
    pub enc_ephemeral: &'a [u8],
    /// The pair's end of life, Unix seconds.
    pub expires_at: u64,
}

impl Transcript<'_> {
    /// The exact bytes hashed: `LABEL || SUITE_ID || "pair" || lp(key_config) ||
    /// lp(client_id) || lp(pair_id) || lp(ct_s) || lp(pk_e) || lp(ct_e) || u64be(expires_at)`.
    pub fn input(&self) -> Result<Vec<u8>, RelayError> {
        let mut b = Vec::with_capacity(64 + self.key_config.len() + 3 * PUBLIC_KEY_LEN);
        b.extend_from_slice(LABEL);
        b.extend_from_slice(&SUITE_ID);
        b.extend_from_slice(b"pair");
        for f in [
            self.key_config,
            self.client_id.as_bytes(),
            self.pair_id.as_bytes(),
            self.enc_server,
            self.ephemeral_pk,
            self.enc_ephemeral,
        ] {
            push_lp(&mut b, f)?;
        }
        b.extend_from_slice(&self.expires_at.to_be_bytes());
        Ok(b)
    }

    /// `th = SHA-256(input)`.
    pub fn hash(&self) -> Result<[u8; 32], RelayError> {
        Ok(Sha256::digest(self.input()?).into())
    }
}

/// A pairing's outcome on either side: the pair keys and the key confirmation.
pub struct PairSecrets {
    pub keys: PairKeys,
    /// `LabeledExpand(secret, "confirm", "", 32)`: the server sends it, the client checks it.
    pub confirm: [u8; CONFIRM_LEN],
}

impl Drop for PairSecrets {
    fn drop(&mut self) {
        self.confirm.zeroize();
    }
}

impl core::fmt::Debug for PairSecrets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PairSecrets(<redacted>)")
    }
}

/// The key schedule: `secret = LabeledExtract(th, "secret", ss_s || ss_e)`, then `c2s`,
/// `s2c` and `confirm` as `LabeledExpand(secret, label, "", 32)`.
pub fn key_schedule(
    ss_server: &[u8; 32],
    ss_ephemeral: &[u8; 32],
    th: &[u8; 32],
) -> Result<PairSecrets, RelayError> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    let (a, b) = ikm.split_at_mut(32);
    a.copy_from_slice(ss_server);
    b.copy_from_slice(ss_ephemeral);
    let secret = labeled_extract(th, b"secret", ikm.as_slice());
    Ok(PairSecrets {
        keys: PairKeys {
            c2s: expand32(&secret, b"c2s")?,
            s2c: expand32(&secret, b"s2c")?,
        },
        confirm: expand32(&secret, b"confirm")?,
    })
}

/// One entry of a v2 pairing request, as the client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferWire {
    /// `ct_s`: encapsulated to the server's key (1120 bytes).
    pub enc: Vec<u8>,
    /// `pk_e`: the client's ephemeral X-Wing public key (1216 bytes).
    pub pk: Vec<u8>,
}

/// The client's half of one pairing entry: the secret encapsulated to the pinned key and
/// the ephemeral key pair. Used once, by [`ClientOffer::finish`].
pub struct ClientOffer {
    key_config: Vec<u8>,
    enc: Vec<u8>,
    ss_server: Zeroizing<[u8; 32]>,
    ephemeral: ClientKem,
    pk: Vec<u8>,
}

impl core::fmt::Debug for ClientOffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ClientOffer(<redacted>)")
    }
}

/// The pairing answer's entry, as the client received it.
#[derive(Debug, Clone, Copy)]
pub struct PairAnswer<'a> {
    pub pair_id: &'a str,
    /// `ct_e` (1120 bytes).
    pub enc: &'a [u8],
    pub expires_at: u64,
    pub confirm: &'a [u8],
}

impl ClientOffer {
    /// An offer from fixed randomness (known-answer tests; reusing `eseed` or `seed`
    /// reveals the secrets).
    pub fn deterministic(
        config: &KeyConfig,
        eseed: &[u8; ESEED_LEN],
        ephemeral_seed: [u8; SEED_LEN],
    ) -> Result<Self, RelayError> {
        let (enc, ss_server) = kem::encapsulate_deterministic(config.public_key(), eseed)?;
        let ephemeral = ClientKem::from_seed(ephemeral_seed);
        let pk = ephemeral.public_key();
        Ok(ClientOffer {
            key_config: config.to_bytes(),
            enc,
            ss_server,
            ephemeral,
            pk,
        })
    }

    /// A fresh offer from the system RNG.
    pub fn generate_os(config: &KeyConfig) -> Result<Self, RelayError> {
        let mut eseed = Zeroizing::new([0u8; ESEED_LEN]);
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        getrandom::fill(eseed.as_mut_slice())
            .and_then(|()| getrandom::fill(seed.as_mut_slice()))
            .map_err(|_| RelayError::Unavailable("no randomness"))?;
        Self::deterministic(config, &eseed, *seed)
    }

    /// What the pairing request carries for this entry.
    pub fn wire(&self) -> OfferWire {
        OfferWire {
            enc: self.enc.clone(),
            pk: self.pk.clone(),
        }
    }

    /// Checks the server's key confirmation and returns the pair keys. A mismatch is
    /// [`RelayError::ServerAuthFailed`]: whoever answered does not hold the pinned key.
    pub fn finish(self, client_id: &str, answer: &PairAnswer<'_>) -> Result<PairKeys, RelayError> {
        if !is_pair_id(answer.pair_id) {
            return Err(RelayError::ServerAuthFailed);
        }
        let ss_ephemeral = self
            .ephemeral
            .decapsulate(answer.enc)
            .map_err(|_| RelayError::ServerAuthFailed)?;
        let th = Transcript {
            key_config: &self.key_config,
            client_id,
            pair_id: answer.pair_id,
            enc_server: &self.enc,
            ephemeral_pk: &self.pk,
            enc_ephemeral: answer.enc,
            expires_at: answer.expires_at,
        }
        .hash()?;
        let s = key_schedule(&self.ss_server, &ss_ephemeral, &th)?;
        if answer.confirm.len() == CONFIRM_LEN && bool::from(s.confirm.ct_eq(answer.confirm)) {
            Ok(s.keys.clone())
        } else {
            Err(RelayError::ServerAuthFailed)
        }
    }
}

/// The server's long-term relay key: its id and X-Wing decapsulation key (from a 32-byte
/// seed, which the keyservice keeps wrapped under the keyring's KEK).
pub struct ServerKey {
    dk: ClientKem,
    config: KeyConfig,
}

impl core::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ServerKey(key_id {}, <redacted>)", self.config.key_id)
    }
}

/// The server's answer to one pairing entry.
pub struct Accepted {
    /// `ct_e`, encapsulated to the client's ephemeral key.
    pub enc: Vec<u8>,
    pub secrets: PairSecrets,
}

impl ServerKey {
    pub fn from_seed(key_id: u8, seed: [u8; SEED_LEN]) -> Result<Self, RelayError> {
        let dk = ClientKem::from_seed(seed);
        let config = KeyConfig::new(key_id, dk.public_key())
            .map_err(|_| RelayError::Unavailable("relay key does not make a key config"))?;
        Ok(ServerKey { dk, config })
    }

    pub fn config(&self) -> &KeyConfig {
        &self.config
    }

    /// Accepts one entry: decapsulates `ct_s`, encapsulates to `pk_e` with `eseed`, runs the
    /// key schedule over the transcript. `eseed` must be fresh randomness
    /// ([`ServerKey::accept_os`]) except in known-answer tests.
    pub fn accept_deterministic(
        &self,
        client_id: &str,
        pair_id: &str,
        expires_at: u64,
        offer: &OfferWire,
        eseed: &[u8; ESEED_LEN],
    ) -> Result<Accepted, RelayError> {
        let ss_server = self.dk.decapsulate(&offer.enc).map_err(|_| {
            RelayError::BadRequest("pairing: enc is not an X-Wing ciphertext (1120 bytes)")
        })?;
        let (enc, ss_ephemeral) = kem::encapsulate_deterministic(&offer.pk, eseed)?;
        let th = Transcript {
            key_config: &self.config.to_bytes(),
            client_id,
            pair_id,
            enc_server: &offer.enc,
            ephemeral_pk: &offer.pk,
            enc_ephemeral: &enc,
            expires_at,
        }
        .hash()?;
        Ok(Accepted {
            enc,
            secrets: key_schedule(&ss_server, &ss_ephemeral, &th)?,
        })
    }

    /// [`ServerKey::accept_deterministic`] with randomness from the system RNG.
    pub fn accept_os(
        &self,
        client_id: &str,
        pair_id: &str,
        expires_at: u64,
        offer: &OfferWire,
    ) -> Result<Accepted, RelayError> {
        let mut eseed = Zeroizing::new([0u8; ESEED_LEN]);
        getrandom::fill(eseed.as_mut_slice())
            .map_err(|_| RelayError::Unavailable("no randomness"))?;
        self.accept_deterministic(client_id, pair_id, expires_at, offer, &eseed)
    }
}

/// Why the entries of a v2 pairing request were refused; `index` is the entry's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OfferError {
    #[error("pairs: 1 to {max} entries, got {got}")]
    Count { got: usize, max: usize },
    #[error("pairs[{index}]: enc or pk is not base64url without padding")]
    NotBase64 { index: usize },
    #[error("pairs[{index}]: enc is {CIPHERTEXT_LEN} bytes and pk {PUBLIC_KEY_LEN} bytes")]
    BadLength { index: usize },
}

/// Decodes the `(enc, pk)` base64url pairs of a pairing request: 1 to `max` entries, the
/// count checked before anything is decoded.
pub fn decode_offers<S: AsRef<str>>(
    entries: &[(S, S)],
    max: usize,
) -> Result<Vec<OfferWire>, OfferError> {
    if entries.is_empty() || entries.len() > max {
        return Err(OfferError::Count {
            got: entries.len(),
            max,
        });
    }
    entries
        .iter()
        .enumerate()
        .map(|(index, (enc, pk))| {
            let d = |s: &S| {
                URL_SAFE_NO_PAD
                    .decode(s.as_ref())
                    .map_err(|_| OfferError::NotBase64 { index })
            };
            let (enc, pk) = (d(enc)?, d(pk)?);
            if enc.len() != CIPHERTEXT_LEN || pk.len() != PUBLIC_KEY_LEN {
                return Err(OfferError::BadLength { index });
            }
            Ok(OfferWire { enc, pk })
        })
        .collect()
}

// --- exchanges -------------------------------------------------------------------------------

/// A sealed part; the discriminant is `byte(part)` of the AD and the request nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Part {
    RequestUrl = 1,
    RequestHeaders = 2,
    RequestBody = 3,
    ResponseHeaders = 4,
    ResponseBody = 5,
    /// The relay's own error code, on an answer with flags `e`.
    Error = 6,
}

impl Part {
    pub fn byte(self) -> u8 {
        self as u8
    }

    pub fn is_request(self) -> bool {
        matches!(
            self,
            Part::RequestUrl | Part::RequestHeaders | Part::RequestBody
        )
    }
}

/// What an answer carries: its flags in `x-veil-relay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// `h`: sealed headers, no body.
    Headers,
    /// `hb`: sealed headers and a sealed body.
    HeadersBody,
    /// `e`: the relay refused the request; part 6 seals the error code.
    Error,
}

impl AnswerKind {
    pub fn flags(self) -> &'static str {
        match self {
            AnswerKind::Headers => "h",
            AnswerKind::HeadersBody => "hb",
            AnswerKind::Error => "e",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "h" => Some(AnswerKind::Headers),
            "hb" => Some(AnswerKind::HeadersBody),
            "e" => Some(AnswerKind::Error),
            _ => None,
        }
    }

    fn allows(self, part: Part) -> bool {
        matches!(
            (self, part),
            (AnswerKind::Headers, Part::ResponseHeaders)
                | (
                    AnswerKind::HeadersBody,
                    Part::ResponseHeaders | Part::ResponseBody
                )
                | (AnswerKind::Error, Part::Error)
        )
    }
}

/// Highest `seq`: 2^53 − 1 (exact in a JavaScript number and in the Redis store).
pub const MAX_SEQ: u64 = (1 << 53) - 1;

fn parse_seq(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= 16
        && s.bytes().all(|c| c.is_ascii_digit())
        && !s.starts_with('0');
    s.parse::<u64>().ok().filter(|n| canonical && *n <= MAX_SEQ)
}

/// The request's `x-veil-relay`: `"v2," client_id "," pair_id "," seq "," flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestControl<'a> {
    pub client_id: &'a str,
    pub pair_id: &'a str,
    pub seq: u64,
    /// `b` in the flags: a body part follows.
    pub body: bool,
}

impl<'a> RequestControl<'a> {
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
        if v != VERSION {
            return Err(RelayError::BadRequest("x-veil-relay version is not v2"));
        }
        if client_id.is_empty() {
            return Err(RelayError::BadClientId);
        }
        if !is_pair_id(pair_id) {
            return Err(RelayError::BadRequest(
                "pair id is not 22 base64url characters",
            ));
        }
        let seq = parse_seq(seq).ok_or(RelayError::BadRequest(
            "seq is not a decimal number from 1 to 2^53-1",
        ))?;
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

    pub fn flags(&self) -> &'static str {
        if self.body {
            "uhb"
        } else {
            "uh"
        }
    }

    pub fn to_header_value(&self) -> String {
        format!(
            "{VERSION},{},{},{},{}",
            self.client_id,
            self.pair_id,
            self.seq,
            self.flags()
        )
    }
}

/// The answer's `x-veil-relay`: `"v2," pair_id "," seq "," b64url(response_nonce) "," flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseControl<'a> {
    pub pair_id: &'a str,
    pub seq: u64,
    pub response_nonce: [u8; RESPONSE_NONCE_LEN],
    pub kind: AnswerKind,
}

impl<'a> ResponseControl<'a> {
    /// Parses a header value (the client's side: a failure is `relay-decode-failed`).
    pub fn parse(value: &'a str) -> Result<Self, RelayError> {
        const BAD: RelayError = RelayError::DecodeFailed("x-veil-relay of the answer is not v2");
        let mut it = value.split(',');
        let (Some(v), Some(pair_id), Some(seq), Some(rn), Some(flags), None) = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        ) else {
            return Err(BAD);
        };
        if v != VERSION || !is_pair_id(pair_id) {
            return Err(BAD);
        }
        let seq = parse_seq(seq).ok_or(BAD)?;
        let response_nonce = URL_SAFE_NO_PAD
            .decode(rn)
            .ok()
            .and_then(|b| <[u8; RESPONSE_NONCE_LEN]>::try_from(b).ok())
            .ok_or(BAD)?;
        let kind = AnswerKind::parse(flags).ok_or(BAD)?;
        Ok(ResponseControl {
            pair_id,
            seq,
            response_nonce,
            kind,
        })
    }

    pub fn to_header_value(&self) -> String {
        format!(
            "{VERSION},{},{},{},{}",
            self.pair_id,
            self.seq,
            URL_SAFE_NO_PAD.encode(self.response_nonce),
            self.kind.flags()
        )
    }
}

/// What both directions of one request/answer are bound to: the pair, `seq`, and the
/// request line as the client addressed it (method, scheme, `:authority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange<'a> {
    pub pair_id: &'a str,
    pub seq: u64,
    pub method: &'a str,
    /// `https` or `http`: the scheme of the URL the client addressed.
    pub scheme: &'a str,
    /// The `:authority` (host and optional port) the client addressed, lowercase.
    pub authority: &'a str,
}

/// The GCM tags of the request's parts 1 and 2 (the last 16 bytes of each sealed part):
/// every answer's AD holds them, so an answer (an error answer included) authenticates
/// which request it answers — not just which `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBinding(pub [u8; REQUEST_BINDING_LEN]);

impl RequestBinding {
    /// From the sealed bytes of parts 1 and 2 (each `ciphertext || tag`).
    pub fn of(sealed_url: &[u8], sealed_headers: &[u8]) -> Result<Self, RelayError> {
        const SHORT: RelayError = RelayError::DecodeFailed("a part is shorter than its tag");
        fn tag(s: &[u8]) -> Result<&[u8], RelayError> {
            s.len()
                .checked_sub(TAG_LEN)
                .and_then(|i| s.get(i..))
                .ok_or(SHORT)
        }
        let mut b = [0u8; REQUEST_BINDING_LEN];
        let (a, c) = b.split_at_mut(TAG_LEN);
        a.copy_from_slice(tag(sealed_url)?);
        c.copy_from_slice(tag(sealed_headers)?);
        Ok(RequestBinding(b))
    }
}

impl Exchange<'_> {
    fn ad_head(&self, part: Part, flags: &str) -> Result<Vec<u8>, RelayError> {
        let mut ad = Vec::with_capacity(
            LABEL.len() + 48 + self.pair_id.len() + self.method.len() + self.authority.len(),
        );
        ad.extend_from_slice(LABEL);
        ad.push(part.byte());
        push_lp(&mut ad, self.pair_id.as_bytes())?;
        ad.extend_from_slice(&self.seq.to_be_bytes());
        push_lp(&mut ad, self.method.as_bytes())?;
        push_lp(&mut ad, self.scheme.as_bytes())?;
        push_lp(&mut ad, self.authority.as_bytes())?;
        push_lp(&mut ad, flags.as_bytes())?;
        Ok(ad)
    }

    /// Request part AD: `LABEL || byte(part) || lp(pair_id) || u64be(seq) || lp(method) ||
    /// lp(scheme) || lp(authority) || lp(flags)`.
    pub fn request_ad(&self, part: Part, body: bool) -> Result<Vec<u8>, RelayError> {
        if !part.is_request() || (part == Part::RequestBody && !body) {
            return Err(RelayError::DecodeFailed("part does not fit the request"));
        }
        self.ad_head(part, if body { "uhb" } else { "uh" })
    }

    /// Request part nonce: `u32be(part) || u64be(seq)` (unique under `c2s`: a client uses
    /// each `seq` of a pair once).
    pub fn request_nonce(&self, part: Part) -> [u8; 12] {
        let mut n = [0u8; 12];
        let (p, s) = n.split_at_mut(4);
        p.copy_from_slice(&u32::from(part.byte()).to_be_bytes());
        s.copy_from_slice(&self.seq.to_be_bytes());
        n
    }

    /// Answer part AD: `LABEL || byte(part) || lp(pair_id) || u64be(seq) || lp(flags) ||
    /// u16be(status) || binding`. The request line is not repeated: the binding (the tags
    /// of the request's parts) commits to it, and it must not depend on the server's view
    /// of it — an error answer to a request a hop sent to another authority still opens
    /// for the client.
    pub fn answer_ad(
        &self,
        part: Part,
        kind: AnswerKind,
        status: u16,
        binding: &RequestBinding,
    ) -> Result<Vec<u8>, RelayError> {
        if !kind.allows(part) || !(100..=999).contains(&status) {
            return Err(RelayError::DecodeFailed("part does not fit the answer"));
        }
        let mut ad = Vec::with_capacity(LABEL.len() + 72 + self.pair_id.len());
        ad.extend_from_slice(LABEL);
        ad.push(part.byte());
        push_lp(&mut ad, self.pair_id.as_bytes())?;
        ad.extend_from_slice(&self.seq.to_be_bytes());
        push_lp(&mut ad, kind.flags().as_bytes())?;
        ad.extend_from_slice(&status.to_be_bytes());
        ad.extend_from_slice(&binding.0);
        Ok(ad)
    }
}

const OPEN_FAILED: RelayError = RelayError::DecodeFailed("a part does not open");

fn seal_with(gcm: &Aes256Gcm, nonce: [u8; 12], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
    buf.extend_from_slice(plaintext);
    let nonce = aes_gcm::Nonce::<U12>::from(nonce);
    match gcm.encrypt_inout_detached(&nonce, ad, InOutBuf::from(buf.as_mut_slice())) {
        Ok(tag) => {
            buf.extend_from_slice(&tag);
            buf
        }
        // only for plaintexts over 2^36 bytes, which no relay limit allows
        Err(_) => {
            buf.zeroize();
            Vec::new()
        }
    }
}

fn open_with(
    gcm: &Aes256Gcm,
    nonce: [u8; 12],
    ad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, RelayError> {
    let mut buf = sealed.to_vec();
    let ct_len = buf.len().checked_sub(TAG_LEN).ok_or(OPEN_FAILED)?;
    let (ct, tag) = buf.split_at_mut_checked(ct_len).ok_or(OPEN_FAILED)?;
    let tag = aes_gcm::Tag::try_from(&*tag).map_err(|_| OPEN_FAILED)?;
    let nonce = aes_gcm::Nonce::<U12>::from(nonce);
    gcm.decrypt_inout_detached(&nonce, ad, InOutBuf::from(ct), &tag)
        .map_err(|_| OPEN_FAILED)?;
    buf.truncate(ct_len);
    Ok(buf)
}

/// The request direction: AES-256-GCM under `c2s`.
pub struct RequestCipher {
    gcm: Aes256Gcm,
}

impl zeroize::ZeroizeOnDrop for RequestCipher {}

impl core::fmt::Debug for RequestCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RequestCipher(<redacted>)")
    }
}

impl RequestCipher {
    pub fn new(c2s: &[u8; 32]) -> Self {
        RequestCipher {
            gcm: Aes256Gcm::new(&(*c2s).into()),
        }
    }

    /// `ciphertext || tag` of a request part.
    pub fn seal(
        &self,
        ex: &Exchange<'_>,
        part: Part,
        body: bool,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, RelayError> {
        let ad = ex.request_ad(part, body)?;
        Ok(seal_with(&self.gcm, ex.request_nonce(part), &ad, plaintext))
    }

    pub fn open(
        &self,
        ex: &Exchange<'_>,
        part: Part,
        body: bool,
        sealed: &[u8],
    ) -> Result<Vec<u8>, RelayError> {
        let ad = ex.request_ad(part, body)?;
        open_with(&self.gcm, ex.request_nonce(part), &ad, sealed)
    }
}

/// One answer's cipher: `rs = LabeledExtract(response_nonce, "response", s2c)`,
/// `key = LabeledExpand(rs, "key", "", 32)`, `base = LabeledExpand(rs, "nonce", "", 12)`,
/// part nonce `base XOR (0^11 || byte(part))`. A fresh response nonce gives a fresh key,
/// so two answers to one (replayed) request never share a key and nonce.
pub struct AnswerCipher {
    gcm: Aes256Gcm,
    base_nonce: [u8; 12],
}

impl zeroize::ZeroizeOnDrop for AnswerCipher {}

impl Drop for AnswerCipher {
    fn drop(&mut self) {
        self.base_nonce.zeroize();
    }
}

impl core::fmt::Debug for AnswerCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AnswerCipher(<redacted>)")
    }
}

/// 32 fresh bytes from the system RNG for one answer.
pub fn response_nonce_os() -> Result<[u8; RESPONSE_NONCE_LEN], RelayError> {
    let mut n = [0u8; RESPONSE_NONCE_LEN];
    getrandom::fill(&mut n).map_err(|_| RelayError::Unavailable("no randomness"))?;
    Ok(n)
}

impl AnswerCipher {
    pub fn new(
        s2c: &[u8; 32],
        response_nonce: &[u8; RESPONSE_NONCE_LEN],
    ) -> Result<Self, RelayError> {
        let rs = labeled_extract(response_nonce, b"response", s2c);
        // One keyed PRK for both outputs (a PRK of 32 bytes is always accepted).
        let hk = hkdf::Hkdf::<Sha256>::from_prk(rs.as_slice())
            .map_err(|_| RelayError::BadRequest("HKDF-Expand: output over 255 blocks"))?;
        let mut key = Zeroizing::new([0u8; 32]);
        labeled_expand_from(&hk, b"key", b"", key.as_mut_slice())?;
        let mut base_nonce = [0u8; 12];
        labeled_expand_from(&hk, b"nonce", b"", &mut base_nonce)?;
        Ok(AnswerCipher {
            gcm: Aes256Gcm::new(&(*key).into()),
            base_nonce,
        })
    }

    /// `base XOR (0^11 || byte(part))`.
    pub fn nonce(&self, part: Part) -> [u8; 12] {
        let mut n = self.base_nonce;
        if let Some(last) = n.last_mut() {
            *last ^= part.byte();
        }
        n
    }

    pub fn seal(
        &self,
        ex: &Exchange<'_>,
        part: Part,
        kind: AnswerKind,
        status: u16,
        binding: &RequestBinding,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, RelayError> {
        let ad = ex.answer_ad(part, kind, status, binding)?;
        Ok(seal_with(&self.gcm, self.nonce(part), &ad, plaintext))
    }

    pub fn open(
        &self,
        ex: &Exchange<'_>,
        part: Part,
        kind: AnswerKind,
        status: u16,
        binding: &RequestBinding,
        sealed: &[u8],
    ) -> Result<Vec<u8>, RelayError> {
        let ad = ex.answer_ad(part, kind, status, binding)?;
        open_with(&self.gcm, self.nonce(part), &ad, sealed)
    }
}

// --- headers ---------------------------------------------------------------------------------

/// Whether a decoded (sealed) request header is allowed: v1's rules
/// ([`super::wire::is_forbidden_request_header`]), and `cookie` only when the relay's
/// `allow_sealed_cookie` is on — in a browser a page's script cannot set `cookie`, so a
/// sealed one would be a page forging a session.
pub fn is_allowed_sealed_header(name: &str, allow_sealed_cookie: bool) -> bool {
    !super::wire::is_forbidden_request_header(name) && (name != "cookie" || allow_sealed_cookie)
}

/// Decoded request headers (v2): shape as v1, names per [`is_allowed_sealed_header`].
pub fn decode_request_headers(
    bytes: &[u8],
    allow_sealed_cookie: bool,
) -> Result<Vec<(String, String)>, RelayError> {
    let list = super::wire::decode_response_headers(bytes)?;
    for (n, _) in &list {
        if n == "cookie" && !allow_sealed_cookie {
            return Err(RelayError::HeaderNotAllowed(
                "a sealed cookie (relay.allow_sealed_cookie is off)",
            ));
        }
        if !is_allowed_sealed_header(n, allow_sealed_cookie) {
            return Err(RelayError::HeaderNotAllowed(
                "a name the protocol forbids (pseudo, host, hop-by-hop, origin, referer, sec-*, x-veil-*)",
            ));
        }
    }
    Ok(list)
}

/// The wire (unauthenticated) request headers that reach the upstream by default: those a
/// browser sets and a page cannot, which the relay cannot seal. A hop can change them; every
/// other wire header (`cookie`, `authorization`, `x-forwarded-*`, `accept-encoding`, …) is
/// dropped unless named in the relay's `forward_wire_headers`.
pub const DEFAULT_FORWARDED_WIRE_HEADERS: &[&str] = &[
    "user-agent",
    "accept-language",
    "origin",
    "referer",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// Name prefixes of wire headers forwarded by default: the browser's Fetch Metadata and
/// client hints.
pub const DEFAULT_FORWARDED_WIRE_PREFIXES: &[&str] = &["sec-fetch-", "sec-ch-"];

/// Whether a wire header of a relayed request reaches the upstream (`name` lowercase;
/// `extra` is the relay's `forward_wire_headers`, compared without case). `x-veil-*` never
/// does.
pub fn is_forwarded_wire_header(name: &str, extra: &[String]) -> bool {
    !name.starts_with("x-veil-")
        && (DEFAULT_FORWARDED_WIRE_HEADERS.contains(&name)
            || DEFAULT_FORWARDED_WIRE_PREFIXES
                .iter()
                .any(|p| name.starts_with(p))
            || extra.iter().any(|e| e.eq_ignore_ascii_case(name)))
}

// --- the clients' retry rule -----------------------------------------------------------------

/// RFC 9110 §9.2.2's idempotent methods.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// How a relay error reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorOrigin {
    /// An answer with flags `e` whose part 6 opened under this request's binding: the relay
    /// itself refused exactly this request.
    Authenticated,
    /// A plaintext `x-veil-relay-error`, or anything else that did not open: anyone on the
    /// path may have written it, and the request may have run.
    Unauthenticated,
}

/// What a client does after a relay error (it retries at most once per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Report the error to the caller.
    GiveUp,
    /// Re-validate the client id, re-pair, send again on a fresh pair.
    RevalidateAndRetry,
    /// Drop the pair, re-pair, send again on the fresh pair.
    RepairAndRetry,
    /// Send again on the same pair with a fresh `seq`.
    RetryFreshSeq,
    /// Wait a moment (the relay's state was unreachable), then a fresh `seq`.
    RetryLater,
}

/// The retry rule (docs/relay-protocol.md §6): a non-idempotent request is never sent
/// twice — an unauthenticated error may be a hop hiding that it ran, and even an
/// authenticated one cannot rule out that a copy ran on another instance in `local` mode.
pub fn retry_after(method: &str, error: RelayError, origin: ErrorOrigin) -> Retry {
    let idempotent = is_idempotent(method);
    match (origin, error) {
        _ if !idempotent => Retry::GiveUp,
        (_, RelayError::Replay) => Retry::RetryFreshSeq,
        (ErrorOrigin::Unauthenticated, RelayError::BadClientId) => Retry::RevalidateAndRetry,
        (_, RelayError::PairUnknown | RelayError::DecodeFailed(_)) => Retry::RepairAndRetry,
        (_, RelayError::Unavailable(_)) => Retry::RetryLater,
        _ => Retry::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAIR: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    fn server() -> ServerKey {
        ServerKey::from_seed(7, [3; 32]).unwrap()
    }

    fn ex(method: &str) -> Exchange<'_> {
        Exchange {
            pair_id: PAIR,
            seq: 9,
            method,
            scheme: "https",
            authority: "app.example",
        }
    }

    #[test]
    fn key_config_round_trips_and_refuses_what_it_does_not_support() {
        let c = server().config().clone();
        let b = c.to_bytes();
        assert_eq!(b.len(), KEY_CONFIG_LEN);
        assert_eq!(&b[..3], &[7, 0x64, 0x7a]);
        assert_eq!(&b[b.len() - 6..], &[0, 4, 0, 1, 0, 2]);
        assert_eq!(KeyConfig::from_bytes(&b).unwrap(), c);
        assert_eq!(
            KeyConfig::from_b64(&format!(" {}\n", c.to_b64())).unwrap(),
            c
        );
        let mut other_kem = b.clone();
        other_kem[2] = 0x20;
        assert_eq!(
            KeyConfig::from_bytes(&other_kem),
            Err(KeyConfigError::UnsupportedKem(0x6420))
        );
        let mut trailing = b.clone();
        trailing.push(0);
        assert_eq!(
            KeyConfig::from_bytes(&trailing),
            Err(KeyConfigError::TrailingBytes)
        );
        assert_eq!(
            KeyConfig::from_bytes(&b[..b.len() - 1]),
            Err(KeyConfigError::Truncated)
        );
        // two suites, ours second: accepted, re-encoded with ours only
        let mut two = b[..b.len() - 6].to_vec();
        two.extend_from_slice(&[0, 8, 0, 1, 0, 1, 0, 1, 0, 2]);
        assert_eq!(KeyConfig::from_bytes(&two).unwrap().to_bytes(), b);
        let mut none = b[..b.len() - 6].to_vec();
        none.extend_from_slice(&[0, 4, 0, 1, 0, 1]);
        assert_eq!(
            KeyConfig::from_bytes(&none),
            Err(KeyConfigError::NoSupportedSuite)
        );
        let list = KeyConfig::encode_list(std::slice::from_ref(&c));
        assert_eq!(&list[..2], &(KEY_CONFIG_LEN as u16).to_be_bytes());
        let mut with_foreign = list.clone();
        with_foreign.extend_from_slice(&(other_kem.len() as u16).to_be_bytes());
        with_foreign.extend_from_slice(&other_kem);
        assert_eq!(KeyConfig::decode_list(&with_foreign).unwrap(), vec![c]);
        assert!(KeyConfig::from_b64("not base64!").is_err());
    }

    #[test]
    fn pairing_agrees_and_confirms() {
        let s = server();
        let offer = ClientOffer::generate_os(s.config()).unwrap();
        let acc = s.accept_os("cid", PAIR, 100, &offer.wire()).unwrap();
        let answer = PairAnswer {
            pair_id: PAIR,
            enc: &acc.enc,
            expires_at: 100,
            confirm: &acc.secrets.confirm,
        };
        let keys = offer.finish("cid", &answer).unwrap();
        assert_eq!(keys.c2s, acc.secrets.keys.c2s);
        assert_eq!(keys.s2c, acc.secrets.keys.s2c);
        assert_ne!(keys.c2s, keys.s2c);
    }

    /// An active man in the middle: it pairs with the server itself (it can encapsulate to
    /// the public key like anyone) and answers the client with its own ephemeral exchange.
    /// It cannot decapsulate the client's `ct_s`, so it cannot produce the confirmation.
    #[test]
    fn a_hop_pairing_on_both_sides_is_detected() {
        let s = server();
        let client = ClientOffer::generate_os(s.config()).unwrap();
        let hop = ClientOffer::generate_os(s.config()).unwrap();
        let to_server = s.accept_os("cid", PAIR, 100, &hop.wire()).unwrap();
        let hop_keys = hop
            .finish(
                "cid",
                &PairAnswer {
                    pair_id: PAIR,
                    enc: &to_server.enc,
                    expires_at: 100,
                    confirm: &to_server.secrets.confirm,
                },
            )
            .unwrap();
        assert_eq!(hop_keys.c2s, to_server.secrets.keys.c2s);
        // Its best answer to the client: the server's real answer (wrong ct_s inside), or
        // an encapsulation of its own with a confirmation it computes without ss_s.
        let (enc, _) = kem::encapsulate_os(&client.wire().pk).unwrap();
        for (enc, confirm) in [
            (to_server.enc.clone(), to_server.secrets.confirm),
            (enc, [0u8; 32]),
        ] {
            let c = ClientOffer::deterministic(s.config(), &[1; 64], [2; 32]).unwrap();
            assert_eq!(
                c.finish(
                    "cid",
                    &PairAnswer {
                        pair_id: PAIR,
                        enc: &enc,
                        expires_at: 100,
                        confirm: &confirm,
                    }
                )
                .map(|_| ()),
                Err(RelayError::ServerAuthFailed)
            );
        }
        // another server key (a wrong pin) fails the same way
        let other = ServerKey::from_seed(7, [4; 32]).unwrap();
        let c = ClientOffer::generate_os(s.config()).unwrap();
        let acc = other.accept_os("cid", PAIR, 100, &c.wire()).unwrap();
        assert_eq!(
            c.finish(
                "cid",
                &PairAnswer {
                    pair_id: PAIR,
                    enc: &acc.enc,
                    expires_at: 100,
                    confirm: &acc.secrets.confirm,
                }
            )
            .map(|_| ()),
            Err(RelayError::ServerAuthFailed)
        );
    }

    #[test]
    fn the_transcript_binds_the_answer_fields() {
        let s = server();
        for tamper in 0..3 {
            let offer = ClientOffer::generate_os(s.config()).unwrap();
            let acc = s.accept_os("cid", PAIR, 100, &offer.wire()).unwrap();
            let (pair_id, expires_at, client_id) = match tamper {
                0 => ("BAAAAAAAAAAAAAAAAAAAAA", 100, "cid"),
                1 => (PAIR, 101, "cid"),
                _ => (PAIR, 100, "cie"),
            };
            let r = offer.finish(
                client_id,
                &PairAnswer {
                    pair_id,
                    enc: &acc.enc,
                    expires_at,
                    confirm: &acc.secrets.confirm,
                },
            );
            assert_eq!(r.map(|_| ()), Err(RelayError::ServerAuthFailed), "{tamper}");
        }
    }

    #[test]
    fn an_over_long_expand_is_an_error_not_a_short_key() {
        let mut big = vec![0u8; 255 * 32 + 1];
        assert!(labeled_expand(&[1; 32], b"x", b"", &mut big).is_err());
        assert!(big.iter().all(|b| *b == 0));
        let mut max = vec![0u8; 255 * 32];
        assert!(labeled_expand(&[1; 32], b"x", b"", &mut max).is_ok());
    }

    #[test]
    fn controls_round_trip() {
        let rc = RequestControl {
            client_id: "cid",
            pair_id: PAIR,
            seq: 12,
            body: true,
        };
        assert_eq!(rc.to_header_value(), format!("v2,cid,{PAIR},12,uhb"));
        assert_eq!(RequestControl::parse(&rc.to_header_value()).unwrap(), rc);
        for bad in [
            format!("v1,cid,{PAIR},12,uhb"),
            format!("v2,cid,{PAIR},012,uhb"),
            format!("v2,cid,{PAIR},0,uh"),
            format!("v2,cid,{PAIR},9007199254740992,uh"),
            format!("v2,cid,{PAIR},1,hb"),
        ] {
            assert!(RequestControl::parse(&bad).is_err(), "{bad}");
        }
        let a = ResponseControl {
            pair_id: PAIR,
            seq: 12,
            response_nonce: [5; 32],
            kind: AnswerKind::Error,
        };
        let v = a.to_header_value();
        assert!(v.ends_with(",e") && v.starts_with("v2,"));
        assert_eq!(ResponseControl::parse(&v).unwrap(), a);
        assert!(ResponseControl::parse(&v.replace(",e", ",x")).is_err());
        assert!(ResponseControl::parse(&format!("v2,{PAIR},12,AAAA,h")).is_err());
    }

    #[test]
    fn answers_to_one_request_never_share_a_key() {
        let s2c = [9u8; 32];
        let e = ex("POST");
        let b = RequestBinding([1; 32]);
        let a1 = AnswerCipher::new(&s2c, &response_nonce_os().unwrap()).unwrap();
        let a2 = AnswerCipher::new(&s2c, &response_nonce_os().unwrap()).unwrap();
        let k = AnswerKind::HeadersBody;
        let c1 = a1
            .seal(&e, Part::ResponseBody, k, 200, &b, b"same body")
            .unwrap();
        let c2 = a2
            .seal(&e, Part::ResponseBody, k, 200, &b, b"same body")
            .unwrap();
        assert_ne!(c1, c2);
        assert_ne!(a1.nonce(Part::ResponseBody), a2.nonce(Part::ResponseBody));
        assert_eq!(
            a1.open(&e, Part::ResponseBody, k, 200, &b, &c1).unwrap(),
            b"same body"
        );
        assert!(a2.open(&e, Part::ResponseBody, k, 200, &b, &c1).is_err());
        // status, binding, kind and the request line are all bound
        assert!(a1.open(&e, Part::ResponseBody, k, 201, &b, &c1).is_err());
        let other = RequestBinding([2; 32]);
        assert!(a1
            .open(&e, Part::ResponseBody, k, 200, &other, &c1)
            .is_err());
        assert!(a1
            .open(&e, Part::ResponseHeaders, AnswerKind::Headers, 200, &b, &c1)
            .is_err());
        // the request line reaches the answer through the binding, not the server's view of
        // it: an answer to a request a hop re-addressed still opens for the client
        let swapped = Exchange {
            authority: "evil.example",
            ..e
        };
        assert!(a1
            .open(&swapped, Part::ResponseBody, k, 200, &b, &c1)
            .is_ok());
        let other_seq = Exchange { seq: 10, ..e };
        assert!(a1
            .open(&other_seq, Part::ResponseBody, k, 200, &b, &c1)
            .is_err());
        // parts must fit the answer's kind
        assert!(a1
            .seal(&e, Part::ResponseBody, AnswerKind::Headers, 200, &b, b"")
            .is_err());
        assert!(a1
            .seal(&e, Part::Error, AnswerKind::HeadersBody, 409, &b, b"")
            .is_err());
    }

    #[test]
    fn requests_bind_authority_and_scheme() {
        let c = RequestCipher::new(&[4; 32]);
        let e = ex("GET");
        let sealed = c.seal(&e, Part::RequestUrl, false, b"/a").unwrap();
        assert_eq!(c.open(&e, Part::RequestUrl, false, &sealed).unwrap(), b"/a");
        for other in [
            Exchange {
                authority: "other.example",
                ..e
            },
            Exchange {
                scheme: "http",
                ..e
            },
            Exchange { seq: 10, ..e },
            Exchange {
                method: "POST",
                ..e
            },
        ] {
            assert!(c.open(&other, Part::RequestUrl, false, &sealed).is_err());
        }
        assert!(c.open(&e, Part::RequestUrl, true, &sealed).is_err());
        assert!(c.seal(&e, Part::RequestBody, false, b"").is_err());
        assert!(c.seal(&e, Part::ResponseBody, true, b"").is_err());
        let b = RequestBinding::of(&sealed, &sealed).unwrap();
        assert_eq!(&b.0[..16], &sealed[sealed.len() - 16..]);
        assert!(RequestBinding::of(&[0; 15], &sealed).is_err());
    }

    #[test]
    fn header_rules() {
        assert!(!is_allowed_sealed_header("cookie", false));
        assert!(is_allowed_sealed_header("cookie", true));
        assert!(is_allowed_sealed_header("authorization", false));
        assert!(!is_allowed_sealed_header("origin", true));
        assert_eq!(
            decode_request_headers(br#"[["cookie","s=1"]]"#, false)
                .unwrap_err()
                .code(),
            "relay-header-not-allowed"
        );
        assert_eq!(
            decode_request_headers(br#"[["host","x"]]"#, true)
                .unwrap_err()
                .code(),
            "relay-header-not-allowed"
        );
        assert_eq!(
            decode_request_headers(br#"[["cookie","s=1"]]"#, true)
                .unwrap()
                .len(),
            1
        );
        for fwd in [
            "user-agent",
            "origin",
            "sec-fetch-site",
            "sec-ch-ua",
            "traceparent",
        ] {
            assert!(is_forwarded_wire_header(fwd, &[]), "{fwd}");
        }
        for dropped in [
            "cookie",
            "authorization",
            "x-forwarded-for",
            "x-forwarded-proto",
            "forwarded",
            "accept-encoding",
            "x-app",
            "x-veil-relay",
        ] {
            assert!(!is_forwarded_wire_header(dropped, &[]), "{dropped}");
        }
        let extra = vec!["Cookie".to_string(), "x-veil-client-id".to_string()];
        assert!(is_forwarded_wire_header("cookie", &extra));
        assert!(!is_forwarded_wire_header("x-veil-client-id", &extra));
    }

    #[test]
    fn retry_rule() {
        use ErrorOrigin::*;
        use RelayError::*;
        let d = DecodeFailed("x");
        // a POST is never sent twice on an error a hop could have written
        for e in [BadClientId, PairUnknown, d, Replay, Unavailable("x")] {
            assert_eq!(
                retry_after("POST", e, Unauthenticated),
                Retry::GiveUp,
                "{e:?}"
            );
            assert_eq!(
                retry_after("PATCH", e, Unauthenticated),
                Retry::GiveUp,
                "{e:?}"
            );
        }
        // ...nor on an authenticated one (an earlier copy ran, or ran on another instance)
        assert_eq!(retry_after("POST", Replay, Authenticated), Retry::GiveUp);
        assert_eq!(retry_after("POST", d, Authenticated), Retry::GiveUp);
        assert_eq!(retry_after("GET", d, Authenticated), Retry::RepairAndRetry);
        assert_eq!(
            retry_after("GET", BadClientId, Unauthenticated),
            Retry::RevalidateAndRetry
        );
        assert_eq!(
            retry_after("GET", PairUnknown, Unauthenticated),
            Retry::RepairAndRetry
        );
        assert_eq!(
            retry_after("PUT", Replay, Unauthenticated),
            Retry::RetryFreshSeq
        );
        assert_eq!(
            retry_after("GET", Unavailable("x"), Unauthenticated),
            Retry::RetryLater
        );
        assert_eq!(
            retry_after("POST", Unavailable("x"), Authenticated),
            Retry::GiveUp
        );
        assert_eq!(
            retry_after("GET", RouteNotAllowed, Authenticated),
            Retry::GiveUp
        );
        assert_eq!(
            retry_after("GET", ServerAuthFailed, Unauthenticated),
            Retry::GiveUp
        );
    }
}
