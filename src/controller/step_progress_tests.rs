use super::*;

fn counts(step: &str, pending: u64, running: u64, succeeded: u64, failed: u64) -> StepCounts {
    StepCounts {
        step: step.into(),
        pending,
        running,
        succeeded,
        failed,
        ..Default::default()
    }
}

const MIN: Millis = 60_000;

#[test]
fn throughput_is_the_growth_of_finished_tasks_over_the_window() {
    let mut p = StepProgress::default();
    let t0 = 100 * MIN;
    // The first refresh has no history: nothing finished in the window (no seed).
    let r = p.report(counts("a", 100, 0, 10, 0), t0);
    assert_eq!(r.finished_in_window, 0);
    assert_eq!(r.eta_ms, None);
    // 30 more a minute later, 20 (5 of them failed) two minutes later.
    assert_eq!(
        p.report(counts("a", 70, 0, 40, 0), t0 + MIN)
            .finished_in_window,
        30
    );
    let r = p.report(counts("a", 50, 0, 55, 5), t0 + 2 * MIN);
    assert_eq!(r.finished_in_window, 50);
    assert!((r.throughput_per_min - 10.0).abs() < 1e-9);
    assert_eq!(r.eta_ms, Some(5 * MIN));
    // A requeue (succeeded down) adds nothing and takes nothing away.
    assert_eq!(
        p.report(counts("a", 51, 0, 54, 5), t0 + 3 * MIN)
            .finished_in_window,
        50
    );
    // Five minutes after the minute-one refresh its 30 are out of the window.
    assert_eq!(
        p.report(counts("a", 51, 0, 54, 5), t0 + 6 * MIN)
            .finished_in_window,
        20
    );
    assert_eq!(
        p.report(counts("a", 51, 0, 54, 5), t0 + 7 * MIN)
            .finished_in_window,
        0
    );
}

#[test]
fn a_seed_fades_out_over_the_window() {
    let mut p = StepProgress::default();
    let t0 = 100 * MIN;
    assert_eq!(p.unseeded(&["a".to_string()]), vec!["a".to_string()]);
    p.seed("a", 100, t0);
    assert_eq!(
        p.report(counts("a", 10, 0, 500, 0), t0).finished_in_window,
        100
    );
    assert!(p.unseeded(&["a".to_string()]).is_empty());
    // Half the window later half the seed is left, besides the 10 finished since.
    let r = p.report(counts("a", 0, 0, 510, 0), t0 + THROUGHPUT_WINDOW_MS / 2);
    assert_eq!(r.finished_in_window, 60);
    let r = p.report(counts("a", 0, 0, 510, 0), t0 + THROUGHPUT_WINDOW_MS);
    assert_eq!(r.finished_in_window, 10);
}

#[test]
fn oldest_pending_is_read_again_only_where_it_can_have_moved() {
    let mut p = StepProgress::default();
    let t0 = 100 * MIN;
    let a = counts("a", 10, 0, 0, 0);
    let idle = counts("b", 0, 0, 5, 0);
    // Unknown with tasks pending: read; without any: not.
    assert_eq!(p.oldest_to_read(&[a.clone(), idle.clone()], t0), vec!["a"]);
    p.note_oldest(&a, Some(t0 - MIN), t0);
    let r = p.report(a.clone(), t0);
    assert_eq!(r.oldest_pending_age_ms, Some(MIN));
    // Unmoved: kept however old the read.
    assert!(p
        .oldest_to_read(std::slice::from_ref(&a), t0 + 10 * MIN)
        .is_empty());
    // Moved: kept for OLDEST_KEPT_MS, then read.
    let moved = counts("a", 9, 1, 0, 0);
    assert!(p
        .oldest_to_read(std::slice::from_ref(&moved), t0 + OLDEST_KEPT_MS - 1)
        .is_empty());
    assert_eq!(
        p.oldest_to_read(std::slice::from_ref(&moved), t0 + OLDEST_KEPT_MS),
        vec!["a"]
    );
    // Nothing pending any more: no time, whatever was read.
    assert_eq!(
        p.report(counts("a", 0, 10, 0, 0), t0 + MIN)
            .oldest_pending_age_ms,
        None
    );
}

#[test]
fn at_most_a_few_moved_steps_are_read_per_refresh_longest_ago_first() {
    let mut p = StepProgress::default();
    let t0 = 100 * MIN;
    let n = OLDEST_READS_PER_REFRESH + 3;
    let before: Vec<StepCounts> = (0..n)
        .map(|i| counts(&format!("s{i:02}"), 10, 0, 0, 0))
        .collect();
    for (i, c) in before.iter().enumerate() {
        // s00 read last, s10 first.
        p.note_oldest(c, Some(0), t0 - i as Millis);
    }
    let now: Vec<StepCounts> = (0..n)
        .map(|i| counts(&format!("s{i:02}"), 9, 1, 0, 0))
        .collect();
    let read = p.oldest_to_read(&now, t0 + 2 * MIN);
    assert_eq!(read.len(), OLDEST_READS_PER_REFRESH);
    assert_eq!(read[0], format!("s{:02}", n - 1));
    assert!(!read.contains(&"s00".to_string()));
}

#[test]
fn steps_are_counted_whole_first_and_again_when_due() {
    let mut p = StepProgress::default();
    let steps = vec!["a".to_string(), "b".to_string()];
    assert_eq!(p.counted_whole(&steps, Duration::from_secs(600)), steps);
    let mut a = counts("a", 3, 0, 0, 0);
    a.oldest_pending_at = Some(5);
    p.note_counted_whole(&a, 10, Instant::now());
    assert_eq!(p.counted_whole(&steps, Duration::from_secs(600)), vec!["b"]);
    assert_eq!(p.counted_whole(&steps, Duration::ZERO), steps);
    // Its oldest pending time came with it.
    assert_eq!(p.report(a, 10).oldest_pending_age_ms, Some(5));
}
