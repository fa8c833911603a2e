//! X25519 (RFC 7748) known answers for the X25519 half of X-Wing, through `x25519-dalek`
//! (the implementation `x-wing` uses): §5.2 (the two scalar-multiplication vectors, from
//! PyPI `cryptography-vectors` 50.0.2 `asymmetric/X25519/rfc7748.txt`, and the iterated
//! test after 1 and 1,000 iterations, written out from the RFC) and §6.1 (Diffie–Hellman).

use x25519_dalek::{x25519, PublicKey, StaticSecret, X25519_BASEPOINT_BYTES};

fn h32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

#[test]
fn rfc7748_section_5_2_vectors_from_cryptography_vectors() {
    let text = include_str!("vectors/x25519_rfc7748.txt");
    let mut seen = 0;
    let (mut k, mut u) = (None, None);
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("INPUT_SCALAR = ") {
            k = Some(h32(v));
        } else if let Some(v) = line.strip_prefix("INPUT_U = ") {
            u = Some(h32(v));
        } else if let Some(v) = line.strip_prefix("OUTPUT_U = ") {
            assert_eq!(x25519(k.take().unwrap(), u.take().unwrap()), h32(v));
            seen += 1;
        }
    }
    assert_eq!(seen, 3);
}

#[test]
fn rfc7748_section_5_2_iterated() {
    let mut k = X25519_BASEPOINT_BYTES;
    let mut u = X25519_BASEPOINT_BYTES;
    for i in 1..=1000 {
        let r = x25519(k, u);
        u = k;
        k = r;
        if i == 1 {
            assert_eq!(
                k,
                h32("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
            );
        }
    }
    assert_eq!(
        k,
        h32("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
    );
}

#[test]
fn rfc7748_section_6_1_diffie_hellman() {
    let a = StaticSecret::from(h32(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    ));
    let b = StaticSecret::from(h32(
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
    ));
    let pa = PublicKey::from(&a);
    let pb = PublicKey::from(&b);
    assert_eq!(
        pa.as_bytes(),
        &h32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    assert_eq!(
        pb.as_bytes(),
        &h32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    );
    let k = h32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(a.diffie_hellman(&pb).as_bytes(), &k);
    assert_eq!(b.diffie_hellman(&pa).as_bytes(), &k);
}
