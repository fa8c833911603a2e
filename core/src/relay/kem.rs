//! X-Wing (X25519 + ML-KEM-768, draft-connolly-cfrg-xwing-kem-06) through the RustCrypto
//! `x-wing` crate: the keyservice encapsulates to a client's public key, the client
//! decapsulates. Pure and `no_std` underneath, so it builds for wasm too (the filter never
//! calls it, so it is not linked there).

use x_wing::{Decapsulate, Decapsulator, Generate, KeyExport};
use zeroize::Zeroizing;

pub use x_wing::{CryptoRng, TryCryptoRng};

use super::RelayError;

/// X-Wing public (encapsulation) key length.
pub const PUBLIC_KEY_LEN: usize = x_wing::ENCAPSULATION_KEY_SIZE;
/// X-Wing ciphertext length.
pub const CIPHERTEXT_LEN: usize = x_wing::CIPHERTEXT_SIZE;
/// Shared secret length.
pub const SHARED_SECRET_LEN: usize = 32;
/// Decapsulation key seed length (the draft's `sk`).
pub const SEED_LEN: usize = x_wing::DECAPSULATION_KEY_SIZE;
/// Encapsulation randomness length (the draft's `eseed`: 32 bytes for ML-KEM, then 32 for X25519).
pub const ESEED_LEN: usize = x_wing::ENCAPSULATION_RANDOMNESS_SIZE;

/// A ciphertext and the shared secret it carries.
pub type Encapsulated = (Vec<u8>, Zeroizing<[u8; SHARED_SECRET_LEN]>);

/// Parses an X-Wing public key (1216 bytes).
pub(crate) fn parse_public_key(pk: &[u8]) -> Result<x_wing::EncapsulationKey, RelayError> {
    if pk.len() != PUBLIC_KEY_LEN {
        return Err(RelayError::BadRequest(
            "X-Wing public key is not 1216 bytes",
        ));
    }
    x_wing::EncapsulationKey::try_from(pk)
        .map_err(|_| RelayError::BadRequest("X-Wing public key does not parse"))
}

/// Encapsulates to `pk` with randomness from `rng`.
pub fn encapsulate<R: TryCryptoRng + ?Sized>(
    pk: &[u8],
    rng: &mut R,
) -> Result<Encapsulated, RelayError> {
    let mut eseed = Zeroizing::new([0u8; ESEED_LEN]);
    rng.try_fill_bytes(eseed.as_mut_slice())
        .map_err(|_| RelayError::Unavailable("no randomness"))?;
    encapsulate_deterministic(pk, &eseed)
}

/// Encapsulates to `pk` with randomness from the system RNG (`getrandom`).
pub fn encapsulate_os(pk: &[u8]) -> Result<Encapsulated, RelayError> {
    let mut eseed = Zeroizing::new([0u8; ESEED_LEN]);
    getrandom::fill(eseed.as_mut_slice()).map_err(|_| RelayError::Unavailable("no randomness"))?;
    encapsulate_deterministic(pk, &eseed)
}

/// Encapsulates with the given `eseed` (the draft's deterministic form). For known-answer
/// tests only: reusing an `eseed` reveals the shared secret.
pub fn encapsulate_deterministic(
    pk: &[u8],
    eseed: &[u8; ESEED_LEN],
) -> Result<Encapsulated, RelayError> {
    let ek = parse_public_key(pk)?;
    let randomness = x_wing::kem::common::array::Array::from(*eseed);
    let (ct, ss) = ek.encapsulate_deterministic(&randomness);
    let mut out = Zeroizing::new([0u8; SHARED_SECRET_LEN]);
    out.copy_from_slice(&ss);
    Ok((ct.to_vec(), out))
}

/// A client's X-Wing decapsulation key (zeroized on drop by the crate).
pub struct ClientKem {
    dk: x_wing::DecapsulationKey,
}

impl core::fmt::Debug for ClientKem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ClientKem(<redacted>)")
    }
}

impl ClientKem {
    /// The key pair of a 32-byte seed (the draft's `sk`).
    pub fn from_seed(seed: [u8; SEED_LEN]) -> Self {
        let seed = Zeroizing::new(seed);
        ClientKem {
            dk: x_wing::DecapsulationKey::from(*seed),
        }
    }

    /// A fresh key pair from `rng`.
    pub fn generate<R: TryCryptoRng + ?Sized>(rng: &mut R) -> Result<Self, RelayError> {
        let dk = x_wing::DecapsulationKey::try_generate_from_rng(rng)
            .map_err(|_| RelayError::Unavailable("no randomness"))?;
        Ok(ClientKem { dk })
    }

    /// A fresh key pair from the system RNG (`getrandom`).
    pub fn generate_os() -> Result<Self, RelayError> {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        getrandom::fill(seed.as_mut_slice())
            .map_err(|_| RelayError::Unavailable("no randomness"))?;
        Ok(Self::from_seed(*seed))
    }

    /// The public key to send in `POST P/pair` (1216 bytes).
    pub fn public_key(&self) -> Vec<u8> {
        self.dk.encapsulation_key().to_bytes().to_vec()
    }

    /// The shared secret of a ciphertext from the pairing answer.
    pub fn decapsulate(&self, ct: &[u8]) -> Result<Zeroizing<[u8; SHARED_SECRET_LEN]>, RelayError> {
        let ct = x_wing::Ciphertext::try_from(ct)
            .map_err(|_| RelayError::DecodeFailed("X-Wing ciphertext is not 1120 bytes"))?;
        let ss = self.dk.decapsulate(&ct);
        let mut out = Zeroizing::new([0u8; SHARED_SECRET_LEN]);
        out.copy_from_slice(&ss);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let a = ClientKem::generate_os().unwrap();
        let b = ClientKem::generate_os().unwrap();
        let pk = a.public_key();
        assert_eq!(pk.len(), PUBLIC_KEY_LEN);
        let (ct, ss) = encapsulate_os(&pk).unwrap();
        assert_eq!(ct.len(), CIPHERTEXT_LEN);
        assert_eq!(*a.decapsulate(&ct).unwrap(), *ss);
        // ML-KEM's implicit rejection: another key yields an unrelated secret, not an error
        assert_ne!(*b.decapsulate(&ct).unwrap(), *ss);
        let (ct2, ss2) = encapsulate_os(&pk).unwrap();
        assert_ne!((ct.clone(), *ss), (ct2, *ss2));
    }

    #[test]
    fn deterministic_and_seeded_forms_are_stable() {
        let k = ClientKem::from_seed([7; 32]);
        assert_eq!(k.public_key(), ClientKem::from_seed([7; 32]).public_key());
        let (ct1, ss1) = encapsulate_deterministic(&k.public_key(), &[9; 64]).unwrap();
        let (ct2, ss2) = encapsulate_deterministic(&k.public_key(), &[9; 64]).unwrap();
        assert_eq!((ct1.clone(), *ss1), (ct2, *ss2));
        assert_eq!(*k.decapsulate(&ct1).unwrap(), *ss1);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let k = ClientKem::from_seed([1; 32]);
        assert!(encapsulate_os(&[0; PUBLIC_KEY_LEN - 1]).is_err());
        assert!(encapsulate_os(&[]).is_err());
        assert!(k.decapsulate(&[0; CIPHERTEXT_LEN + 1]).is_err());
        assert!(k.decapsulate(&[]).is_err());
        assert!(!format!("{k:?}").contains('['));
    }
}
