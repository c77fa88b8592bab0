//! Time source. Everything time-based takes a `Clock` (or an explicit `now`) so tests can step
//! time forward instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch. The store keeps every timestamp in this unit.
pub type Millis = i64;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Millis;
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }
}

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Millis) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(start)))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
    pub fn set(&self, to: Millis) {
        self.0.store(to, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn ms(d: Duration) -> Millis {
    d.as_millis().min(i64::MAX as u128) as Millis
}

/// Human-readable RFC 3339 timestamp for output.
pub fn format_millis(t: Millis) -> String {
    if t <= 0 {
        return "-".to_string();
    }
    let st = UNIX_EPOCH + Duration::from_millis(t as u64);
    humantime::format_rfc3339_seconds(st).to_string()
}

/// Short human-readable duration (e.g. `3m 12s`) for output.
pub fn format_duration_ms(d: Millis) -> String {
    if d < 0 {
        return "-".to_string();
    }
    let secs = d / 1000;
    if secs == 0 {
        return format!("{d}ms");
    }
    humantime::format_duration(Duration::from_secs(secs as u64)).to_string()
}
