//! The replay window (docs/relay-protocol.md §5): the highest accepted `seq` and a bitmap of
//! the numbers below it, so each `seq` is accepted once and moderate reordering still works.
//! 24 bytes, so the filter can keep it in shared data and the keyservice in its store.

use super::RelayError;

/// Widest window the 128-bit map can hold.
pub const MAX_WIDTH: u32 = 128;
/// Length of `to_bytes`.
pub const WINDOW_BYTES: usize = 24;

/// Replay state of one pair. Bit `i` of `bits` is set when `max - i` was accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    max: u64,
    bits: u128,
}

impl ReplayWindow {
    /// Nothing accepted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest accepted `seq` (0: none).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Accepts `seq` once: `seq > max` slides the window, `max - width < seq <= max` is
    /// accepted if not seen, anything else is `Replay`. `seq` 0 is never valid. `width` is
    /// clamped to 1..=128. On refusal the window is unchanged.
    pub fn accept(&mut self, seq: u64, width: u32) -> Result<(), RelayError> {
        let width = u64::from(width.clamp(1, MAX_WIDTH));
        if seq == 0 {
            return Err(RelayError::Replay);
        }
        if seq > self.max {
            let shift = seq - self.max;
            self.bits = if shift >= u64::from(MAX_WIDTH) {
                0
            } else {
                self.bits << shift
            };
            self.bits |= 1;
            self.max = seq;
            return Ok(());
        }
        let back = self.max - seq;
        if back >= width {
            return Err(RelayError::Replay);
        }
        let bit = 1u128 << back;
        if self.bits & bit != 0 {
            return Err(RelayError::Replay);
        }
        self.bits |= bit;
        Ok(())
    }

    /// `u64be(max) || u128be(bits)`.
    pub fn to_bytes(&self) -> [u8; WINDOW_BYTES] {
        let mut out = [0u8; WINDOW_BYTES];
        let (m, b) = out.split_at_mut(8);
        m.copy_from_slice(&self.max.to_be_bytes());
        b.copy_from_slice(&self.bits.to_be_bytes());
        out
    }

    /// The window `to_bytes` wrote; `None` unless exactly 24 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != WINDOW_BYTES {
            return None;
        }
        let (m, b) = bytes.split_at(8);
        Some(ReplayWindow {
            max: u64::from_be_bytes(m.try_into().ok()?),
            bits: u128::from_be_bytes(b.try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_each_once() {
        let mut w = ReplayWindow::new();
        for s in 1..=300 {
            w.accept(s, 128).unwrap();
            assert_eq!(w.accept(s, 128), Err(RelayError::Replay));
        }
        assert_eq!(w.max(), 300);
        assert_eq!(w.accept(0, 128), Err(RelayError::Replay));
    }

    #[test]
    fn reorder_within_the_window() {
        let mut w = ReplayWindow::new();
        w.accept(200, 128).unwrap();
        // 73..=199 are inside (200 - 128 < seq), each once, in any order
        for s in (73..200).rev() {
            w.accept(s, 128).unwrap();
        }
        for s in 73..=200 {
            assert_eq!(w.accept(s, 128), Err(RelayError::Replay), "{s}");
        }
        assert_eq!(w.max(), 200);
    }

    #[test]
    fn beyond_the_window_is_refused() {
        let mut w = ReplayWindow::new();
        w.accept(200, 128).unwrap();
        assert_eq!(w.accept(72, 128), Err(RelayError::Replay));
        assert_eq!(w.accept(1, 128), Err(RelayError::Replay));
        // a narrower window refuses earlier
        let mut w = ReplayWindow::new();
        w.accept(10, 4).unwrap();
        w.accept(7, 4).unwrap();
        assert_eq!(w.accept(6, 4), Err(RelayError::Replay));
        // width is clamped to 1..=128
        let mut w = ReplayWindow::new();
        w.accept(10, 0).unwrap();
        assert_eq!(w.accept(9, 0), Err(RelayError::Replay));
        w.accept(500, 1000).unwrap();
        assert_eq!(w.accept(372, 1000), Err(RelayError::Replay));
        w.accept(373, 1000).unwrap();
    }

    #[test]
    fn sliding_forgets_only_what_leaves() {
        let mut w = ReplayWindow::new();
        w.accept(5, 128).unwrap();
        w.accept(3, 128).unwrap();
        w.accept(100, 128).unwrap(); // shift 95: 5 and 3 stay marked
        assert_eq!(w.accept(5, 128), Err(RelayError::Replay));
        assert_eq!(w.accept(3, 128), Err(RelayError::Replay));
        w.accept(4, 128).unwrap();
        w.accept(1000, 128).unwrap(); // jump past the window: all cleared, all too old
        assert_eq!(w.accept(999 - 127, 128), Err(RelayError::Replay));
        w.accept(999 - 126, 128).unwrap();
        w.accept(u64::MAX, 128).unwrap();
        assert_eq!(w.accept(u64::MAX, 128), Err(RelayError::Replay));
    }

    #[test]
    fn bytes_round_trip() {
        let mut w = ReplayWindow::new();
        for s in [9u64, 3, 7, 130] {
            w.accept(s, 128).unwrap();
        }
        let b = w.to_bytes();
        assert_eq!(&b[..8], &130u64.to_be_bytes());
        let mut back = ReplayWindow::from_bytes(&b).unwrap();
        assert_eq!(back, w);
        assert_eq!(back.accept(7, 128), Err(RelayError::Replay));
        back.accept(8, 128).unwrap();
        assert_eq!(ReplayWindow::from_bytes(&b[..23]), None);
        assert_eq!(ReplayWindow::from_bytes(&[0; 25]), None);
        assert_eq!(
            ReplayWindow::from_bytes(&[0; 24]).unwrap(),
            ReplayWindow::new()
        );
    }
}
