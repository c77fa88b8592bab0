//! Exponential backoff with jitter, shared by every retry loop of the worker (claims,
//! heartbeats, completions, registration).

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with "equal jitter": the n-th delay is uniformly drawn from
/// `[d/2, d]` where `d = min(cap, base * 2^n)`, so retries of many workers spread out but
/// never collapse to zero.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let exp = self.attempt.min(20);
        self.attempt = self.attempt.saturating_add(1);
        let d = self.base.saturating_mul(1u32 << exp).min(self.cap);
        jitter_between(d / 2, d)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A uniformly random duration in `[lo, hi]`.
pub(crate) fn jitter_between(lo: Duration, hi: Duration) -> Duration {
    if hi <= lo {
        return lo;
    }
    let span = (hi - lo).as_micros().min(u64::MAX as u128) as u64;
    lo + Duration::from_micros(rand::rng().random_range(0..=span))
}

/// `d` spread by ±`frac` (e.g. 0.2 for ±20 %), so pollers of many workers do not align.
pub(crate) fn spread(d: Duration, frac: f64) -> Duration {
    let lo = d.mul_f64((1.0 - frac).max(0.0));
    let hi = d.mul_f64(1.0 + frac);
    jitter_between(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d0 = b.next_delay();
        assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
        for _ in 0..10 {
            b.next_delay();
        }
        let d = b.next_delay();
        assert!(
            d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
            "{d:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn spread_stays_in_range() {
        for _ in 0..100 {
            let d = spread(Duration::from_secs(1), 0.2);
            assert!(d >= Duration::from_millis(800) && d <= Duration::from_millis(1200));
        }
    }
}
