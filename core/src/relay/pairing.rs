//! The public keys of a pairing request (`"keys": [...]`, docs/relay-protocol.md §2): 1 to
//! `max` X-Wing public keys in base64url without padding. Pure, so the keyservice's handler
//! and the `relay_pairing` fuzz target run the same check.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use thiserror::Error;

use super::kem::PUBLIC_KEY_LEN;

/// Why the keys of a pairing request were refused; `index` is the key's place in `keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PairingKeysError {
    #[error("keys: 1 to {max} public keys, got {got}")]
    Count { got: usize, max: usize },
    #[error("keys[{index}]: not base64url without padding")]
    NotBase64 { index: usize },
    #[error("keys[{index}]: an X-Wing public key is {PUBLIC_KEY_LEN} bytes, got {len}")]
    BadLength { index: usize, len: usize },
}

/// The decoded public keys, each exactly [`PUBLIC_KEY_LEN`] bytes, 1 to `max` of them.
/// The count is checked before any key is decoded, so a long list costs nothing.
pub fn decode_public_keys<S: AsRef<str>>(
    keys: &[S],
    max: usize,
) -> Result<Vec<Vec<u8>>, PairingKeysError> {
    if keys.is_empty() || keys.len() > max {
        return Err(PairingKeysError::Count {
            got: keys.len(),
            max,
        });
    }
    keys.iter()
        .enumerate()
        .map(|(index, k)| {
            let pk = URL_SAFE_NO_PAD
                .decode(k.as_ref())
                .map_err(|_| PairingKeysError::NotBase64 { index })?;
            if pk.len() == PUBLIC_KEY_LEN {
                Ok(pk)
            } else {
                Err(PairingKeysError::BadLength {
                    index,
                    len: pk.len(),
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        URL_SAFE_NO_PAD.encode([byte; PUBLIC_KEY_LEN])
    }

    #[test]
    fn accepts_one_to_max_keys_of_the_right_length() {
        let keys = [key(1), key(2)];
        let pks = decode_public_keys(&keys, 2);
        assert_eq!(
            pks,
            Ok(vec![vec![1; PUBLIC_KEY_LEN], vec![2; PUBLIC_KEY_LEN]])
        );
    }

    #[test]
    fn refuses_counts_outside_one_to_max() {
        let none: [String; 0] = [];
        assert_eq!(
            decode_public_keys(&none, 5),
            Err(PairingKeysError::Count { got: 0, max: 5 })
        );
        let three = [key(1), key(1), key(1)];
        assert_eq!(
            decode_public_keys(&three, 2),
            Err(PairingKeysError::Count { got: 3, max: 2 })
        );
    }

    #[test]
    fn refuses_bad_base64_and_bad_lengths_with_the_index() {
        let padded = format!("{}=", key(1));
        assert_eq!(
            decode_public_keys(&[key(1), padded], 5),
            Err(PairingKeysError::NotBase64 { index: 1 })
        );
        let short = URL_SAFE_NO_PAD.encode([0u8; PUBLIC_KEY_LEN - 1]);
        assert_eq!(
            decode_public_keys(&[short], 5),
            Err(PairingKeysError::BadLength {
                index: 0,
                len: PUBLIC_KEY_LEN - 1
            })
        );
    }
}
