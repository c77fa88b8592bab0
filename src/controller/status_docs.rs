//! Which status documents a pass writes. A fleet's document (and the controller's) is written
//! when its content changed since this controller last wrote it — the time it was observed at
//! aside — and otherwise again once the last write is [`rewrite_after`] old, one interval before
//! readers would call it stale ([`STALE_AFTER_INTERVALS`]). An idle pass over 50 fleets wrote
//! 51 documents; now it writes them about every other `STALE_AFTER_INTERVALS - 1` passes.
//! Pure: [`super::publish`] writes (fenced, as every leader's write).

use std::collections::HashMap;

use serde_json::Value;

use super::status::STALE_AFTER_INTERVALS;
use crate::clock::Millis;
use crate::store::StatusDoc;

/// The field of a fleet's report that changes every pass without its content changing.
const OBSERVED_AT: &str = "observed_at";

/// An unchanged document is written again once its last write is this old: one interval
/// before readers call it stale (an interval of 0, unknown, writes it every pass).
pub fn rewrite_after(interval_ms: Millis) -> Millis {
    interval_ms.saturating_mul(STALE_AFTER_INTERVALS - 1)
}

/// What this controller last wrote, per document, in its current leadership term.
#[derive(Debug, Default)]
pub struct DocsWritten {
    /// The leadership's fencing number the documents were written under (`None`: unfenced).
    term: Option<u64>,
    written: HashMap<String, (Millis, Value)>,
}

/// The part of a document compared: its body without [`OBSERVED_AT`].
fn content(doc: &StatusDoc) -> Value {
    let mut body = doc.body.clone();
    if let Some(o) = body.as_object_mut() {
        o.remove(OBSERVED_AT);
    }
    body
}

impl DocsWritten {
    /// Starts over when the leadership term is not the one the documents were written under
    /// (another controller may have written them since).
    pub fn term(&mut self, term: Option<u64>) {
        if self.term != term {
            self.written.clear();
            self.term = term;
        }
    }

    /// Whether `doc` is to be written at `now` by a controller passing every `interval_ms`.
    pub fn due(&self, doc: &StatusDoc, interval_ms: Millis, now: Millis) -> bool {
        match self.written.get(&doc.name) {
            None => true,
            Some((at, body)) => {
                now.saturating_sub(*at) >= rewrite_after(interval_ms) || *body != content(doc)
            }
        }
    }

    /// Notes `doc` written.
    pub fn wrote(&mut self, doc: &StatusDoc) {
        self.written
            .insert(doc.name.clone(), (doc.updated_at, content(doc)));
    }

    /// Forgets everything written (a write failed, or this controller stopped leading).
    pub fn clear(&mut self) {
        self.written.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(name: &str, at: Millis, body: Value) -> StatusDoc {
        StatusDoc {
            name: name.into(),
            updated_at: at,
            body,
        }
    }

    #[test]
    fn an_unchanged_document_is_written_again_one_interval_before_it_is_stale() {
        let mut w = DocsWritten::default();
        let first = doc("fleet/a", 0, json!({"desired": 1, "observed_at": 0}));
        assert!(w.due(&first, 10_000, 0));
        w.wrote(&first);
        // Only the time it was observed at moved: not written...
        let later = doc(
            "fleet/a",
            10_000,
            json!({"desired": 1, "observed_at": 10_000}),
        );
        assert!(!w.due(&later, 10_000, 10_000));
        // ...until two intervals after the last write (readers call it stale after three).
        assert_eq!(STALE_AFTER_INTERVALS, 3);
        assert!(!w.due(&later, 10_000, 19_999));
        assert!(w.due(&later, 10_000, 20_000));
        // Changed content is written at once; so is every document of an unknown interval.
        let changed = doc(
            "fleet/a",
            10_000,
            json!({"desired": 2, "observed_at": 10_000}),
        );
        assert!(w.due(&changed, 10_000, 10_000));
        assert!(w.due(&later, 0, 10_000));
        // Another document is its own.
        assert!(w.due(&doc("fleet/b", 0, json!({})), 10_000, 0));
    }

    #[test]
    fn a_new_term_or_a_failed_write_starts_over() {
        let mut w = DocsWritten::default();
        let d = doc("controller/c", 0, json!({"interval_ms": 1000}));
        w.term(Some(1));
        w.wrote(&d);
        assert!(!w.due(&d, 1_000, 0));
        w.term(Some(1));
        assert!(!w.due(&d, 1_000, 0));
        w.term(Some(2));
        assert!(w.due(&d, 1_000, 0));
        w.wrote(&d);
        w.clear();
        assert!(w.due(&d, 1_000, 0));
    }
}
