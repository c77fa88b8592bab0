//! Unit tests of [`polls`](super): plans, shard orders, lanes.

use super::*;

#[test]
fn an_idle_claimer_counts_and_sweeps_every_ttl() {
    let now = Instant::now();
    let every = sweep_every(9_000);
    let mut m = ShardMemory::default();
    assert_eq!(m.plan(now, every), Plan::Busy);
    m.idle = true;
    assert_eq!(m.plan(now, every), Plan::Sweep, "never swept");
    m.swept_at = Some(now);
    assert_eq!(m.plan(now + Duration::from_secs(8), every), Plan::Counted);
    assert_eq!(m.plan(now + Duration::from_secs(9), every), Plan::Sweep);
}

#[test]
fn shards_are_taken_from_the_first_wrapping_as_the_plan_allows() {
    let now = Instant::now();
    let mut m = ShardMemory::default();
    m.empty_at.insert(1, now);
    m.empty_at.insert(3, now - LEFTOVERS_FOR);
    let counts = [0, 2, 0, 1];
    assert_eq!(
        shard_order(&Plan::Sweep, &m, 4, 2, &counts, now),
        [2, 3, 0, 1]
    );
    assert_eq!(
        shard_order(&Plan::Busy, &m, 4, 2, &counts, now),
        [2, 3, 0],
        "shard 1 was found empty just now; shard 3's mark is too old"
    );
    assert_eq!(shard_order(&Plan::Counted, &m, 4, 2, &counts, now), [3, 1]);
    assert!(shard_order(&Plan::Counted, &m, 4, 0, &[0, 0, -1, 0], now).is_empty());
}

#[test]
fn lanes_turn_together_and_stay_apart() {
    let shards = 8;
    let lanes = [0, 3, 5, 6];
    let mut firsts = std::collections::HashSet::new();
    for now in (0..40_000).step_by(250) {
        let at: Vec<u32> = lanes
            .iter()
            .map(|&l| ShardMemory::lane_shard(l, now, shards))
            .collect();
        let distinct: std::collections::HashSet<_> = at.iter().collect();
        assert_eq!(distinct.len(), lanes.len(), "at {now}: {at:?}");
        firsts.insert(at[0]);
        let turned = ShardMemory::lane_shard(0, now + LANE_TURN, shards);
        assert_eq!(turned, (at[0] + 1) % shards, "one shard on per turn");
    }
    assert_eq!(firsts.len(), 8, "a lone lane comes to every shard");
    assert_eq!(ShardMemory::lane_shard(7, -1, 8), 6, "before the epoch too");
    assert_eq!(ShardMemory::lane_shard(3, 123_456, 1), 0);
    assert_eq!(lane_turn(123_456, 1), None, "one shard: lanes do not turn");
    assert_eq!(lane_turn(123_456, 8), Some(61));
}

#[test]
fn a_lost_race_draws_a_new_lane() {
    let polls = Polls::default();
    let claimer: Claimer = ("s".into(), "w".into());
    let lane = polls.lane(&claimer, 256, 0, Instant::now());
    assert_eq!(
        polls.lane(&claimer, 256, 0, Instant::now()),
        lane,
        "a lane is kept"
    );
    let mut moved = false;
    for _ in 0..20 {
        polls.lost_race(&claimer);
        moved |= polls.lane(&claimer, 256, 0, Instant::now()) != lane;
    }
    assert!(moved, "20 draws of 256 lanes all gave the same one");
    assert_eq!(
        polls.lane(&("s".into(), "x".into()), 1, 0, Instant::now()),
        0
    );
}

#[test]
fn a_lane_lost_in_is_avoided_while_crowded() {
    let polls = Polls::default();
    let claimer: Claimer = ("s".into(), "w".into());
    let mut lost_in = std::collections::HashSet::new();
    for _ in 0..4 {
        let lane = polls.lane(&claimer, 4, 0, Instant::now());
        assert!(!lost_in.contains(&lane), "{lane} drawn again: {lost_in:?}");
        lost_in.insert(lane);
        polls.lost_race(&claimer);
    }
    assert_eq!(lost_in.len(), 4, "every lane tried once");
    let last = polls.lane(&claimer, 4, 0, Instant::now());
    assert!(last < 4, "all crowded: any lane");
    polls.update(&claimer, |m| {
        for at in m.crowded.values_mut() {
            *at = at.checked_sub(CROWDED_FOR).unwrap_or(*at);
        }
    });
    polls.lost_race(&claimer);
    assert_ne!(
        polls.lane(&claimer, 4, 0, Instant::now()),
        last,
        "the lane just lost in"
    );
    let crowded: Vec<u32> = polls.memory(&claimer).crowded.into_keys().collect();
    assert_eq!(crowded, [last], "the older losses are forgotten");
}

#[test]
fn a_lane_is_drawn_away_from_shards_known_empty() {
    let polls = Polls::default();
    let claimer: Claimer = ("s".into(), "w".into());
    let (shards, now, at) = (4, 0, Instant::now());
    polls.update(&claimer, |m| {
        m.empty_at.insert(0, at);
        m.counted = Some((at, vec![(2, 0), (2, 0), (0, 0), (1, 0)]));
        m.crowded.insert(1, at);
    });
    for _ in 0..20 {
        assert_eq!(
            polls.lane(&claimer, shards, now, at),
            3,
            "0 and 2 empty, 1 crowded"
        );
        polls.update(&claimer, |m| m.lane = None);
    }
    // Every uncrowded lane's shard known empty: any uncrowded one.
    polls.update(&claimer, |m| {
        m.empty_at.insert(3, at);
    });
    for _ in 0..20 {
        assert_ne!(polls.lane(&claimer, shards, now, at), 1);
        polls.update(&claimer, |m| m.lane = None);
    }
    // A reading or a mark older than LEFTOVERS_FOR says nothing.
    let later = at + LEFTOVERS_FOR;
    let drawn: std::collections::HashSet<u32> = (0..64)
        .map(|_| {
            polls.update(&claimer, |m| m.lane = None);
            polls.lane(&claimer, shards, now, later)
        })
        .collect();
    assert_eq!(drawn, [0, 2, 3].into(), "all but the crowded lane");
}

#[test]
fn a_retry_hint_is_used_once() {
    let polls = Polls::default();
    polls.hint_retrying("s", vec![2]);
    assert_eq!(polls.take_retrying("s"), Some(vec![2]));
    assert_eq!(polls.take_retrying("s"), None);
}
