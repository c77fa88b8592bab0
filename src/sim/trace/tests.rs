//! Trace parsing (CSV, JSONL) and the seeded generator.

use super::*;

#[test]
fn csv_with_and_without_ids() {
    let t = Trace::parse_csv(
        "x.csv",
        "# comment\nstep,submit_time_s,duration_s\na,0,10\na,5,2.5\nb,0,1\n",
    )
    .unwrap();
    assert_eq!(t.steps, ["a", "b"]);
    assert_eq!(t.tasks[1].id, "t000002");
    assert_eq!(t.tasks[1].duration_ms, 2500);
    assert_eq!(t.tasks[2].id, "t000001");
    let again = Trace::parse_csv("x.csv", &t.to_csv()).unwrap();
    assert_eq!(again.tasks, t.tasks);
}

#[test]
fn csv_errors_name_the_line() {
    let e = Trace::parse_csv("x.csv", "step,submit_time_s,duration_s\na,0,zero\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("x.csv:2:"), "{e}");
    let e = Trace::parse_csv("x.csv", "step,duration_s\n").unwrap_err();
    assert!(e.to_string().contains("header"), "{e}");
    let e = Trace::parse_csv(
        "x.csv",
        "step,submit_time_s,duration_s,id\na,0,1,S\na,0,1,S\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
}

#[test]
fn jsonl() {
    let t = Trace::parse_jsonl(
        "x.jsonl",
        "{\"step\":\"a\",\"submit_time_s\":1,\"duration_s\":2,\"id\":\"S1\"}\n",
    )
    .unwrap();
    assert_eq!(t.tasks[0].id, "S1");
    assert_eq!(t.tasks[0].submit_ms, 1000);
}

#[test]
fn generator_is_seeded_and_complete() {
    let g = GeneratorSpec::parse(
        "tasks=50,steps=align:call,duration=lognormal(6,0.5),scale=1:0.5,arrival=poisson(0.1),seed=7",
    )
    .unwrap();
    let a = g.generate(1);
    let b = g.generate(2);
    assert_eq!(a, b, "the spec's seed wins");
    assert_eq!(a.tasks.len(), 100);
    assert_eq!(a.steps, ["align", "call"]);
    assert!(a.tasks.windows(2).all(|w| w[0].submit_ms <= w[1].submit_ms));
    assert!(GeneratorSpec::parse("tasks=0").is_err());
    assert!(GeneratorSpec::parse("duration=weird(1)").is_err());
    assert!(GeneratorSpec::parse("steps=2,scale=1").is_err());
}
