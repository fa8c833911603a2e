//! The cryptography of sealed values and of the filter's own records: key ids and key
//! derivation ([`keys`]), the value ciphers ([`cipher`], built on [`siv`] and [`nonce`]), the
//! text form of a sealed value ([`value`]), and the sealing of records in Envoy shared data
//! ([`shared_record`]). The relay's protocol crypto lives with the relay (`crate::relay`).

pub mod cipher;
pub mod keys;
pub mod nonce;
pub mod shared_record;
pub mod siv;
pub mod value;
