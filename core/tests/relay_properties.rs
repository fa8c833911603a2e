//! Properties of the relay's replay window and part sealing, against simple models:
//! the window must accept exactly what "each seq once, and not `width` or more behind the
//! highest seen" allows (a HashSet model), survive a bytes round trip at any point, and
//! sealing must round-trip any part and refuse any single-byte change.

use std::collections::HashSet;

use proptest::prelude::*;
use veil_core::relay::v2::{
    AnswerCipher, AnswerKind, Exchange, Part, RequestBinding, RequestCipher,
};
use veil_core::relay::ReplayWindow;

proptest! {
    #[test]
    fn window_matches_the_model(
        width in 1u32..=128,
        // mostly small steps around a moving front, some big jumps
        steps in prop::collection::vec(prop_oneof![
            8 => -140i64..=20,
            1 => 100i64..=400,
        ], 1..300),
    ) {
        let mut w = ReplayWindow::new();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut max = 0u64;
        let mut cursor: i64 = 1;
        for step in steps {
            cursor = (cursor + step).max(0);
            let seq = cursor as u64;
            let model_ok = seq != 0
                && !seen.contains(&seq)
                && (seq > max || max - seq < u64::from(width));
            let got = w.accept(seq, width).is_ok();
            prop_assert_eq!(got, model_ok, "seq {} max {} width {}", seq, max, width);
            if model_ok {
                seen.insert(seq);
                max = max.max(seq);
            }
            prop_assert_eq!(w.max(), max);
            // persisting and reloading changes nothing
            w = ReplayWindow::from_bytes(&w.to_bytes()).unwrap();
        }
    }

    #[test]
    fn parts_round_trip_and_refuse_any_flip(
        key in any::<[u8; 32]>(),
        seq in 1u64..=(1u64 << 53) - 1,
        body in prop::collection::vec(any::<u8>(), 0..300),
        flip in any::<prop::sample::Index>(),
        status in 100u16..=599,
    ) {
        let c = RequestCipher::new(&key);
        let ex = Exchange {
            pair_id: "AAAAAAAAAAAAAAAAAAAAAA",
            seq,
            method: "POST",
            scheme: "https",
            authority: "app.example",
        };
        let sealed = c.seal(&ex, Part::RequestBody, true, &body).unwrap();
        prop_assert_eq!(sealed.len(), body.len() + 16);
        prop_assert_eq!(&c.open(&ex, Part::RequestBody, true, &sealed).unwrap(), &body);
        let mut bad = sealed.clone();
        let i = flip.index(bad.len());
        bad[i] ^= 0x01;
        prop_assert!(c.open(&ex, Part::RequestBody, true, &bad).is_err());

        let binding = RequestBinding([7; 32]);
        let a = AnswerCipher::new(&key, &[seq as u8; 32]).unwrap();
        let kind = AnswerKind::HeadersBody;
        let sealed = a.seal(&ex, Part::ResponseBody, kind, status, &binding, &body).unwrap();
        prop_assert_eq!(
            &a.open(&ex, Part::ResponseBody, kind, status, &binding, &sealed).unwrap(),
            &body
        );
        let other = if status == 599 { 100 } else { status + 1 };
        prop_assert!(a.open(&ex, Part::ResponseBody, kind, other, &binding, &sealed).is_err());
    }
}
