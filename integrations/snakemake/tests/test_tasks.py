"""Unit tests of the executor's pure decisions (tasks.py): steps, ids, task definitions,
resubmission plans and how task records map to Snakemake's success and failure."""

import json

import pytest

from snakemake_executor_plugin_anamo.tasks import (
    FAIL_AT_ONCE_EXIT_CODES,
    SettingsError,
    index_tasks,
    jsonl,
    name_problem,
    only_step,
    parse_step_mapping,
    plan_submission,
    status_of,
    step_for,
    task_id,
    task_spec,
)


def test_name_rules_follow_anamo():
    assert name_problem("sample=S1,lane=2") is None
    assert name_problem("align:sample=S1") is None
    assert "empty" in name_problem("")
    assert "whitespace" in name_problem("a b")
    assert "whitespace" in name_problem("a#b")
    assert "whitespace" in name_problem("a\x07b")
    assert "256 bytes" in name_problem("é" * 129)
    assert name_problem("é" * 128) is None


def test_step_mapping_is_parsed_and_checked():
    assert parse_step_mapping(None) == {}
    assert parse_step_mapping("align=big, call = small,") == {"align": "big", "call": "small"}
    with pytest.raises(SettingsError, match="`align` is not RULE=STEP"):
        parse_step_mapping("align")
    with pytest.raises(SettingsError, match="step `a b` of rule `x`"):
        parse_step_mapping("x=a b")


def test_step_precedence_resource_then_mapping_then_default_then_rule():
    m = {"align": "mapped"}
    assert step_for("align", {"anamo_step": "res"}, m, "dflt") == "res"
    assert step_for("align", {}, m, "dflt") == "mapped"
    assert step_for("call", {}, m, "dflt") == "dflt"
    assert step_for("call", {}, m, None) == "call"
    with pytest.raises(SettingsError, match="rule `call`: resources: anamo_step"):
        step_for("call", {"anamo_step": "has space"}, m, None)
    with pytest.raises(SettingsError, match="--anamo-default-step"):
        step_for("call", {}, {}, "#x")


def test_ids_come_from_wildcards_and_are_stable():
    wc = [("sample", "S1"), ("lane", 2)]
    assert task_id("align", "align", wc, ["a.bam"]) == "sample=S1,lane=2"
    # A step shared by several rules: the rule keeps their jobs apart.
    assert task_id("align", "shared", wc, ["a.bam"]) == "align:sample=S1,lane=2"
    assert task_id("gather", "gather", [], ["all.txt"]) == "gather"
    assert task_id("gather", "shared", [], ["all.txt"]) == "gather"
    assert task_id("align", "align", wc, [], prefix="run7-") == "run7-sample=S1,lane=2"


def test_ids_anamo_would_refuse_fall_back_to_a_stable_hash():
    wc = [("sample", "my sample #1")]
    a = task_id("align", "align", wc, ["out/my sample #1.bam"])
    b = task_id("align", "align", wc, ["out/my sample #1.bam"])
    other = task_id("align", "align", [("sample", "my sample #2")], ["x"])
    assert a == b
    assert a != other
    assert a.startswith("align-") and len(a) == len("align-") + 16
    assert name_problem(a) is None
    long = task_id("r", "r", [("s", "x" * 300)], [])
    assert name_problem(long) is None and long.startswith("r-")
    with pytest.raises(SettingsError, match="--anamo-id-prefix"):
        task_id("r", "r", [("s", "a b")], [], prefix="bad prefix ")


def test_spec_passes_priority_runtime_and_attempts():
    spec = task_spec(step="align", id="S1", script="echo hi", priority=5, max_attempts=3,
                     runtime_minutes=2)
    assert spec == {
        "id": "S1",
        "step": "align",
        "script": "echo hi",
        "priority": 5,
        "max_attempts": 3,
        "fail_exit_codes": FAIL_AT_ONCE_EXIT_CODES,
        "timeout_secs": 120,
    }
    assert FAIL_AT_ONCE_EXIT_CODES[0] == 1 and FAIL_AT_ONCE_EXIT_CODES[-1] == 255
    huge = task_spec(step="s", id="i", script="x", priority=10**20, max_attempts=1)
    assert huge["priority"] == 2**31 - 1 and "timeout_secs" not in huge
    assert "timeout_secs" not in task_spec(step="s", id="i", script="x", priority=0,
                                           max_attempts=1, runtime_minutes="1h")
    with pytest.raises(SettingsError, match="at least 1"):
        task_spec(step="s", id="i", script="x", priority=0, max_attempts=0)


def test_jsonl_is_one_object_per_line():
    text = jsonl([{"id": "a", "step": "s", "script": "x"}, {"id": "b", "step": "s", "script": "y"}])
    lines = text.splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b"]
    assert text.endswith("\n")


def spec(id, step="s"):
    return {"id": id, "step": step, "script": "x"}


def test_plan_adopts_in_flight_replaces_ended_and_imports_new():
    existing = index_tasks([
        {"step": "s", "id": "pending", "state": "pending"},
        {"step": "s", "id": "running", "state": "running"},
        {"step": "s", "id": "done", "state": "succeeded"},
        {"step": "s", "id": "failed", "state": "failed"},
        {"step": "other", "id": "new", "state": "running"},
    ])
    plan = plan_submission(
        [spec("pending"), spec("running"), spec("done"), spec("failed"), spec("new")], existing
    )
    assert plan.adopted == {("s", "pending"): "pending", ("s", "running"): "running"}
    assert plan.to_replace == [("s", "done"), ("s", "failed")]
    assert [s["id"] for s in plan.to_import] == ["done", "failed", "new"]


def test_plan_refuses_two_jobs_on_one_task():
    with pytest.raises(SettingsError, match="same anamo task s/a"):
        plan_submission([spec("a"), spec("a")], {})


def test_status_maps_states_to_snakemake():
    key = ("align", "S1")
    for state in ("waiting", "pending", "running"):
        assert status_of(key, {"state": state}).outcome == "running"
    assert status_of(key, {"state": "succeeded"}).outcome == "succeeded"
    gone = status_of(key, None)
    assert gone.outcome == "failed" and "no longer in the store" in gone.message


def test_failure_message_has_reason_error_and_log_tail():
    task = {
        "state": "failed",
        "attempts": 1,
        "max_attempts": 3,
        "reason": "exit 3",
        "result": {
            "error": "exit 3",
            "worker_id": "w1",
            "instance_id": "local-abc",
            "log_tail": "".join(f"line {i}\n" for i in range(100)),
        },
    }
    st = status_of(("align", "S1"), task)
    assert st.outcome == "failed"
    assert "anamo task align/S1 failed" in st.message
    assert "reason: exit 3" in st.message and "attempts: 1 of 3" in st.message
    assert "local-abc" in st.message
    assert "line 99" in st.message and "line 59" not in st.message
    assert "anamo task show --step align --id S1" in st.message
    cancelled = status_of(("align", "S1"), {"state": "cancelled", "reason": "cancelled by user"})
    assert cancelled.outcome == "failed" and "cancelled by user" in cancelled.message
    odd = status_of(("align", "S1"), {"state": "weird"})
    assert odd.outcome == "failed" and "unknown state 'weird'" in odd.message


def test_only_step_limits_listing_to_a_shared_step():
    assert only_step([("a", "1"), ("a", "2")]) == "a"
    assert only_step([("a", "1"), ("b", "2")]) is None
    assert only_step([]) is None
