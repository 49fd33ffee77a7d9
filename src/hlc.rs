//! Hybrid logical clock (Kulkarni et al. 2014), packed into 64 bits: 48 bits of wall-clock
//! milliseconds and a 16-bit logical counter. Packing makes the causal order a plain integer
//! order, and the fixed-width lowercase hex form keeps string order equal to numeric order.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bits of the logical counter.
const LOGICAL_BITS: u32 = 16;

/// A hybrid logical timestamp.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(pub u64);

impl Hlc {
    pub const ZERO: Hlc = Hlc(0);

    pub fn new(wall_ms: u64, logical: u16) -> Hlc {
        Hlc((wall_ms << LOGICAL_BITS) | u64::from(logical))
    }

    /// The physical part, in milliseconds since the Unix epoch.
    pub fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    pub fn logical(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// Milliseconds from this timestamp's wall time to `now_ms`; 0 for a timestamp in the
    /// future (a peer's clock ahead of ours), never a wrap.
    pub fn age_ms(self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.wall_ms())
    }

    /// Sixteen lowercase hex digits.
    pub fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }

    /// Parses exactly sixteen lowercase hex digits; anything else is an error, never a panic.
    pub fn from_hex(s: &str) -> Result<Hlc, HlcParseError> {
        if s.len() != 16
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(HlcParseError(s.chars().take(40).collect()));
        }
        u64::from_str_radix(s, 16)
            .map(Hlc)
            .map_err(|_| HlcParseError(s.to_string()))
    }

    /// The value as SQLite stores it (HLCs of real times fit comfortably in 63 bits).
    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }

    pub fn from_i64(v: i64) -> Hlc {
        Hlc(v as u64)
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({:016x})", self.0)
    }
}

impl std::str::FromStr for Hlc {
    type Err = HlcParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hlc::from_hex(s)
    }
}

impl Serialize for Hlc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 16];
        let hex = encode_hex(self.0, &mut buf);
        s.serialize_str(hex)
    }
}

impl<'de> Deserialize<'de> for Hlc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hlc::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

fn encode_hex(v: u64, buf: &mut [u8; 16]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(buf).unwrap_or("0000000000000000")
}

/// A string that is not a 16-digit lowercase hex HLC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an HLC: expected 16 lowercase hex digits")]
pub struct HlcParseError(pub String);

/// A remote timestamp too far ahead of this node's wall clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "clock drift: remote HLC {remote} is {ahead_ms} ms ahead of local wall clock (max {max_ms} ms)"
)]
pub struct DriftError {
    pub remote: Hlc,
    pub ahead_ms: u64,
    pub max_ms: u64,
}

/// Source of wall-clock time; injectable so tests can skew a node's clock.
pub trait WallClock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// The system clock shifted by a fixed offset (positive = ahead).
#[derive(Debug, Clone, Copy)]
pub struct SkewedClock(pub i64);

impl WallClock for SkewedClock {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms().saturating_add_signed(self.0)
    }
}

/// A clock that only moves when told to (unit tests).
#[derive(Debug, Default)]
pub struct ManualClock(pub std::sync::atomic::AtomicU64);

impl ManualClock {
    pub fn new(ms: u64) -> Self {
        ManualClock(std::sync::atomic::AtomicU64::new(ms))
    }
    pub fn set(&self, ms: u64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl WallClock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl<T: WallClock> WallClock for Arc<T> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// Default bound on how far ahead a remote HLC may be.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 500;

/// The node's clock: local/send and receive rules plus the drift guard.
pub struct HlcClock {
    last: Mutex<Hlc>,
    wall: Box<dyn WallClock>,
    max_drift_ms: u64,
}

impl fmt::Debug for HlcClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HlcClock")
            .field("last", &self.peek())
            .field("max_drift_ms", &self.max_drift_ms)
            .finish()
    }
}

impl HlcClock {
    pub fn new(wall: impl WallClock, max_drift_ms: u64) -> Self {
        HlcClock {
            last: Mutex::new(Hlc::ZERO),
            wall: Box::new(wall),
            max_drift_ms,
        }
    }

    pub fn system() -> Self {
        Self::new(SystemClock, DEFAULT_MAX_DRIFT_MS)
    }

    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    pub fn wall_ms(&self) -> u64 {
        self.wall.now_ms()
    }

    /// The last timestamp handed out (or observed), without ticking.
    pub fn peek(&self) -> Hlc {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Raises the clock to at least `floor` (used when a store reopens, so timestamps keep
    /// increasing across restarts even if the wall clock went back).
    pub fn advance_to(&self, floor: Hlc) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if floor > *last {
            *last = floor;
        }
    }

    /// Local or send event: strictly greater than every earlier timestamp of this clock.
    pub fn now(&self) -> Hlc {
        let pt = Hlc::new(self.wall.now_ms(), 0);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let next = std::cmp::max(Hlc(last.0 + 1), pt);
        *last = next;
        next
    }

    /// Rejects a remote timestamp too far ahead of the wall clock, without touching the clock.
    pub fn check_drift(&self, remote: Hlc) -> Result<(), DriftError> {
        let wall = self.wall.now_ms();
        let ahead = remote.wall_ms().saturating_sub(wall);
        if ahead > self.max_drift_ms {
            return Err(DriftError {
                remote,
                ahead_ms: ahead,
                max_ms: self.max_drift_ms,
            });
        }
        Ok(())
    }

    /// Receive event: the result is greater than both the local clock and `remote`, so a
    /// write that has seen another always orders after it. Drift is checked first and a
    /// rejected timestamp leaves the clock untouched.
    pub fn update(&self, remote: Hlc) -> Result<Hlc, DriftError> {
        self.check_drift(remote)?;
        let pt = Hlc::new(self.wall.now_ms(), 0);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let next = std::cmp::max(std::cmp::max(Hlc(last.0 + 1), Hlc(remote.0 + 1)), pt);
        *last = next;
        Ok(next)
    }

    /// Receive rule without producing an event: the clock ends at least at `remote`.
    pub fn observe(&self, remote: Hlc) -> Result<(), DriftError> {
        self.check_drift(remote)?;
        self.advance_to(remote);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hex_is_fixed_width_and_strict() {
        let h = Hlc::new(1_700_000_000_000, 7);
        assert_eq!(h.to_hex().len(), 16);
        assert_eq!(Hlc::from_hex(&h.to_hex()).unwrap(), h);
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            format!("\"{}\"", h.to_hex())
        );
        for bad in [
            "",
            "zz",
            "0000000000000000a",
            "ABCDEF0000000000",
            "-000000000000001",
            " 000000000000001",
        ] {
            assert!(Hlc::from_hex(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(serde_json::from_str::<Hlc>("\"xyz\"").is_err());
    }

    #[test]
    fn age_is_wall_time_to_now_and_never_negative() {
        let h = Hlc::new(1_700_000_000_000, 7);
        assert_eq!(h.age_ms(1_700_000_042_500), 42_500);
        assert_eq!(
            h.age_ms(1_700_000_000_000),
            0,
            "the logical part adds no age"
        );
        assert_eq!(h.age_ms(1_699_999_999_000), 0, "a future stamp is age 0");
    }

    #[test]
    fn drift_rejection_leaves_clock_untouched() {
        let wall = Arc::new(ManualClock::new(1_000_000));
        let clock = HlcClock::new(wall.clone(), 500);
        let before = clock.now();
        let far = Hlc::new(1_000_000 + 501, 0);
        let err = clock.update(far).unwrap_err();
        assert_eq!(err.ahead_ms, 501);
        assert!(err.to_string().contains("clock drift"));
        assert_eq!(clock.peek(), before);
        assert!(clock.update(Hlc::new(1_000_000 + 500, 3)).is_ok());
    }

    #[test]
    fn wall_clock_going_back_never_moves_hlc_back() {
        let wall = Arc::new(ManualClock::new(5_000));
        let clock = HlcClock::new(wall.clone(), 500);
        let a = clock.now();
        wall.set(1_000);
        let b = clock.now();
        assert!(b > a);
        assert_eq!(b.wall_ms(), 5_000);
    }

    proptest! {
        #[test]
        fn hex_round_trip(v in any::<u64>()) {
            let h = Hlc(v);
            prop_assert_eq!(Hlc::from_hex(&h.to_hex()).unwrap(), h);
            let json = serde_json::to_string(&h).unwrap();
            prop_assert_eq!(serde_json::from_str::<Hlc>(&json).unwrap(), h);
        }

        #[test]
        fn hex_order_is_numeric_order(a in any::<u64>(), b in any::<u64>()) {
            prop_assert_eq!(Hlc(a).to_hex().cmp(&Hlc(b).to_hex()), a.cmp(&b));
        }

        #[test]
        fn local_events_strictly_increase(walls in proptest::collection::vec(0u64..10_000, 1..50)) {
            let wall = Arc::new(ManualClock::new(0));
            let clock = HlcClock::new(wall.clone(), 500);
            let mut prev = Hlc::ZERO;
            for w in walls {
                wall.set(w);
                let t = clock.now();
                prop_assert!(t > prev);
                prop_assert!(t.wall_ms() >= w);
                prev = t;
            }
        }

        #[test]
        fn receive_is_greater_than_both(local_wall in 0u64..1_000_000, remote_wall in 0u64..1_000_500,
                                        remote_logical in any::<u16>(), ticks in 0usize..5) {
            let wall = Arc::new(ManualClock::new(local_wall));
            let clock = HlcClock::new(wall.clone(), 500);
            for _ in 0..ticks { clock.now(); }
            let local = clock.peek();
            let remote = Hlc::new(remote_wall, remote_logical);
            match clock.update(remote) {
                Ok(t) => {
                    prop_assert!(t > local);
                    prop_assert!(t > remote);
                    prop_assert!(remote_wall <= local_wall + 500);
                }
                Err(_) => {
                    prop_assert!(remote_wall > local_wall + 500);
                    prop_assert_eq!(clock.peek(), local);
                }
            }
        }
    }
}
