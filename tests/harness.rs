//! The harness itself: a test whose service is missing or broken fails and names it, a
//! deliberate local opt-out (`ANAMO_TEST_ALLOW_SKIP=1`) records what it did not run, and `CI`
//! overrides the opt-out. The service-backed tests here (`moto_answers`, `dynamodb_answers`,
//! written like every other) are rerun as child processes of this test binary with their
//! environment broken.

mod common;

use std::process::{Command, Output};

use common::services::{check_endpoint, ALLOW_SKIP, RUN_COMMAND};

const MOTO_VAR: &str = "ANAMO_TEST_MOTO_ENDPOINT";
const DYNAMO_VAR: &str = "ANAMO_TEST_DYNAMODB_ENDPOINT";

/// A loopback port nothing listens on (bound, then released).
fn closed_port_url() -> String {
    let port = common::http::free_port();
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn moto_answers() {
    let Some(moto) = common::moto::Moto::connect().await else {
        return;
    };
    moto.ec2
        .describe_instances()
        .send()
        .await
        .expect("DescribeInstances on moto");
}

#[tokio::test]
async fn dynamodb_answers() {
    let Some(h) = common::Harness::dynamo().await else {
        return;
    };
    let counts = h.store.counts("align").await.expect("counts");
    assert_eq!(counts.pending, 0);
    h.store
        .delete_schema()
        .await
        .expect("delete the test table");
}

/// Runs test `name` of this binary alone, with `env` set and `remove` unset.
fn rerun(name: &str, env: &[(&str, &str)], remove: &[&str]) -> Output {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", name, "--nocapture", "--test-threads", "1"]);
    for var in remove {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run the test binary again")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_broken_service_fails_its_tests_and_names_it() {
    for (test, var, name) in [
        ("moto_answers", MOTO_VAR, "moto"),
        ("dynamodb_answers", DYNAMO_VAR, "DynamoDB Local"),
    ] {
        let url = closed_port_url();
        let out = rerun(test, &[(var, &url)], &[ALLOW_SKIP, "CI"]);
        let said = text(&out);
        assert!(
            !out.status.success(),
            "{test} passed with {var}={url}:\n{said}"
        );
        for needle in [name, var, url.as_str(), RUN_COMMAND, "does not answer"] {
            assert!(said.contains(needle), "{test}: no {needle:?} in:\n{said}");
        }

        let out = rerun(test, &[], &[var, ALLOW_SKIP, "CI"]);
        let said = text(&out);
        assert!(
            !out.status.success(),
            "{test} passed without {var}:\n{said}"
        );
        assert!(said.contains(&format!("{var} is not set")), "{said}");
    }
}

#[test]
fn skipping_needs_the_explicit_opt_out_is_recorded_and_never_happens_in_ci() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skipped.txt");
    let log_str = log.to_str().unwrap();
    let url = closed_port_url();

    let out = rerun(
        "moto_answers",
        &[
            (MOTO_VAR, &url),
            (ALLOW_SKIP, "1"),
            ("ANAMO_TEST_SKIP_LOG", log_str),
        ],
        &["CI"],
    );
    let said = text(&out);
    assert!(out.status.success(), "opted out, the test skips:\n{said}");
    assert!(said.contains("SKIPPED"), "a loud line says so:\n{said}");
    let listed = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        listed.contains("moto_answers") && listed.contains(MOTO_VAR),
        "the skip list names the test and the service: {listed:?}"
    );

    let out = rerun(
        "moto_answers",
        &[
            (MOTO_VAR, &url),
            (ALLOW_SKIP, "1"),
            ("CI", "true"),
            ("ANAMO_TEST_SKIP_LOG", log_str),
        ],
        &[],
    );
    assert!(
        !out.status.success(),
        "CI overrides the opt-out:\n{}",
        text(&out)
    );
}

#[test]
fn endpoint_check_says_what_is_wrong_and_how_to_fix_it() {
    let err = check_endpoint(MOTO_VAR, "moto", None).unwrap_err();
    assert!(err.contains("ANAMO_TEST_MOTO_ENDPOINT is not set") && err.contains(RUN_COMMAND));
    let err = check_endpoint(MOTO_VAR, "moto", Some("no-port-here")).unwrap_err();
    assert!(err.contains("is not an http://HOST:PORT endpoint"), "{err}");
    let err = check_endpoint(MOTO_VAR, "moto", Some("http://127.0.0.1")).unwrap_err();
    assert!(err.contains("is not an http://HOST:PORT endpoint"), "{err}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    assert_eq!(check_endpoint(MOTO_VAR, "moto", Some(&url)), Ok(url));
}
