//! Nonces of randomized (AES-256-GCM) seals: from a per-thread ChaCha20 CSPRNG seeded from
//! the operating system (`getrandom`), reseeded every [`RESEED_EVERY`] nonces.
//!
//! Why not `getrandom` per value: in Envoy each call is a WASI `random_get` host call out of
//! the VM (and natively a syscall), which was over half the cost of a randomized seal. A
//! ChaCha20 keystream seeded from the OS is a CSPRNG; 96-bit nonces drawn from it keep the
//! same collision bound as nonces drawn from the OS directly. Reseeding bounds how much
//! output depends on one seed. The state is zeroized on drop; it is per thread (one per
//! Envoy worker VM), never shared, and the first nonce of a thread seeds it.

use std::cell::RefCell;

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::crypto::cipher::CipherError;
use crate::crypto::value::GCM_NONCE_LEN;

/// Nonces drawn from one seed before the next seed is read from the OS.
pub const RESEED_EVERY: u32 = 1 << 16;

struct Seeded {
    rng: ChaCha20Rng,
    left: u32,
}

thread_local! {
    static RNG: RefCell<Option<Seeded>> = const { RefCell::new(None) };
}

fn os_seeded() -> Result<Seeded, CipherError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|_| CipherError::Random)?;
    Ok(Seeded {
        rng: ChaCha20Rng::from_seed(*seed),
        left: RESEED_EVERY,
    })
}

/// A fresh random GCM nonce.
pub fn fresh() -> Result<[u8; GCM_NONCE_LEN], CipherError> {
    let mut nonce = [0u8; GCM_NONCE_LEN];
    fill(&mut nonce)?;
    Ok(nonce)
}

/// Fills `out` from the same per-thread CSPRNG (e.g. the nonce of a signed keyservice
/// request, [`crate::keyservice_auth`]).
pub fn fill(out: &mut [u8]) -> Result<(), CipherError> {
    let drawn = RNG.try_with(|cell| -> Result<(), CipherError> {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return Err(CipherError::Random);
        };
        let s = match slot.as_mut() {
            Some(s) if s.left > 0 => s,
            _ => slot.insert(os_seeded()?),
        };
        s.left -= 1;
        s.rng.fill_bytes(out);
        Ok(())
    });
    match drawn {
        Ok(r) => r,
        // The thread is being torn down (or re-entered): the OS directly.
        Err(_) => getrandom::fill(out).map_err(|_| CipherError::Random),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn nonces_are_distinct_across_a_reseed() {
        let n = RESEED_EVERY as usize + 1000;
        let mut seen = HashSet::with_capacity(n);
        for _ in 0..n {
            assert!(seen.insert(fresh().unwrap()), "a nonce repeated");
        }
    }

    #[test]
    fn threads_draw_different_streams() {
        let a = std::thread::spawn(|| fresh().unwrap()).join().unwrap();
        let b = std::thread::spawn(|| fresh().unwrap()).join().unwrap();
        assert_ne!(a, b);
    }
}
