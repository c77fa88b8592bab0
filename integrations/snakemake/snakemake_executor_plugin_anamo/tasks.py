"""Pure decisions of the anamo executor: which step and id a Snakemake job gets, the task
definition sent to ``anamo task import``, what to do with tasks already in the store when
(re)submitting, and what a task record means for Snakemake (running, succeeded, failed with
which message).

Nothing here runs a process or touches a file; ``cli.py`` talks to anamo and ``__init__.py``
wires both into Snakemake, so everything below is unit-tested without either.
"""

from dataclasses import dataclass, field
import hashlib
import json
import unicodedata
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

# anamo's limit for ids and step names (`validate_name` in src/model.rs).
MAX_NAME_BYTES = 256
# anamo's priority is a 32-bit signed integer.
MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1
# Snakemake retries a failed job itself (`--retries`, `retries:`), with the attempt number
# in the command and resources that may grow with it. So a non-zero exit must end the anamo
# task at once; anamo's own attempts are kept for lost workers (lease expired, instance gone).
FAIL_AT_ONCE_EXIT_CODES = list(range(1, 256))
# States in which a task is still on its way: a resubmission follows it instead of adding it.
IN_FLIGHT = ("waiting", "pending", "running")
FINAL = ("succeeded", "failed", "cancelled")
# How much of a failed task's output goes into Snakemake's error report.
LOG_TAIL_LINES = 40

Key = Tuple[str, str]


class SettingsError(ValueError):
    """A setting or a rule's `anamo_step` resource that anamo cannot use; the message says
    which value, why, and how to fix it."""


def name_problem(value: str) -> Optional[str]:
    """Why anamo would refuse `value` as an id or step name, or None when it is fine.

    Mirrors `validate_name` in anamo's src/model.rs: non-empty, at most 256 bytes, no
    whitespace, control characters or `#`.
    """
    if not value:
        return "it is empty"
    if len(value.encode("utf-8")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    for c in value:
        if c.isspace() or c == "#" or unicodedata.category(c) == "Cc":
            return f"it contains {c!r}; whitespace, control characters and `#` are not allowed"
    return None


def parse_step_mapping(text: Optional[str]) -> Dict[str, str]:
    """`--anamo-steps` (`rule=step,rule=step`) as a dict; bad entries raise SettingsError."""
    mapping: Dict[str, str] = {}
    if not text:
        return mapping
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        rule, sep, step = entry.partition("=")
        rule, step = rule.strip(), step.strip()
        if not sep or not rule or not step:
            raise SettingsError(
                f"--anamo-steps: `{entry}` is not RULE=STEP; write e.g. "
                "`--anamo-steps align=align,call=call-fleet`"
            )
        problem = name_problem(step)
        if problem:
            raise SettingsError(
                f"--anamo-steps: step `{step}` of rule `{rule}` is not a valid anamo step "
                f"name: {problem}"
            )
        mapping[rule] = step
    return mapping


def step_for(
    rule: str,
    resources: Mapping[str, Any],
    mapping: Mapping[str, str],
    default_step: Optional[str],
) -> str:
    """The anamo step (and so the fleet) that runs a job of `rule`: the rule's
    `resources: anamo_step=...`, else `--anamo-steps`, else `--anamo-default-step`, else the
    rule's name."""
    step = resources.get("anamo_step")
    source = f"rule `{rule}`: resources: anamo_step"
    if step is None:
        step, source = mapping.get(rule), f"--anamo-steps entry of rule `{rule}`"
    if step is None:
        step, source = default_step, "--anamo-default-step"
    if step is None:
        step, source = rule, f"rule name `{rule}`"
    step = str(step)
    problem = name_problem(step)
    if problem:
        raise SettingsError(
            f"{source}: `{step}` is not a valid anamo step name: {problem}; set "
            f"`resources: anamo_step=\"...\"` in the rule or map it with --anamo-steps"
        )
    return step


def task_id(
    rule: str,
    step: str,
    wildcards: Sequence[Tuple[str, Any]],
    outputs: Iterable[str],
    prefix: str = "",
) -> str:
    """A stable task id for a job: its wildcards (`sample=S1,lane=2`), or the rule's name
    when it has none; prefixed with the rule (`align:sample=S1`) when the step is shared with
    other rules, so two rules' jobs never meet under one id. Ids anamo would refuse (spaces,
    `#`, over 256 bytes) fall back to `RULE-HASH`, a hash of the same text and the job's
    outputs, which is just as stable."""
    wc = ",".join(f"{k}={v}" for k, v in wildcards)
    base = wc or rule
    if wc and step != rule:
        base = f"{rule}:{wc}"
    candidate = f"{prefix}{base}"
    if name_problem(candidate) is None:
        return candidate
    digest = hashlib.sha256(
        "\0".join([rule, base, *sorted(str(o) for o in outputs)]).encode("utf-8")
    ).hexdigest()[:16]
    fallback = f"{prefix}{rule}-{digest}"
    if name_problem(fallback) is not None:
        raise SettingsError(
            f"--anamo-id-prefix `{prefix}` makes no valid anamo id ({fallback!r}: "
            f"{name_problem(fallback)}); use a short prefix without spaces or `#`"
        )
    return fallback


def task_spec(
    *,
    step: str,
    id: str,
    script: str,
    priority: int,
    max_attempts: int,
    runtime_minutes: Optional[Any] = None,
) -> Dict[str, Any]:
    """The task definition (one JSONL line of `anamo task import`) for a job."""
    if max_attempts < 1:
        raise SettingsError(
            f"--anamo-max-attempts is {max_attempts}; it must be at least 1 (the attempts "
            "anamo gives a task whose worker is lost)"
        )
    spec: Dict[str, Any] = {
        "id": id,
        "step": step,
        "script": script,
        "priority": max(MIN_PRIORITY, min(MAX_PRIORITY, int(priority))),
        "max_attempts": max_attempts,
        "fail_exit_codes": FAIL_AT_ONCE_EXIT_CODES,
    }
    if isinstance(runtime_minutes, (int, float)) and not isinstance(runtime_minutes, bool):
        if runtime_minutes > 0:
            spec["timeout_secs"] = max(1, int(runtime_minutes * 60))
    return spec


def jsonl(specs: Iterable[Mapping[str, Any]]) -> str:
    """Task definitions as JSONL, the input of `anamo task import --format jsonl -`."""
    return "".join(json.dumps(s, separators=(",", ":")) + "\n" for s in specs)


@dataclass
class SubmissionPlan:
    """What to do to submit a batch of tasks given what the store already holds."""

    to_import: List[Dict[str, Any]] = field(default_factory=list)
    # Final tasks from an earlier run: deleted first, then imported anew.
    to_replace: List[Key] = field(default_factory=list)
    # In-flight tasks (e.g. Snakemake was killed and restarted): followed, not duplicated.
    adopted: Dict[Key, str] = field(default_factory=dict)


def plan_submission(
    specs: Sequence[Mapping[str, Any]], existing: Mapping[Key, Mapping[str, Any]]
) -> SubmissionPlan:
    """Decide per task: import it (new), follow it (still waiting/pending/running from an
    earlier Snakemake run: that run's job is the same job), or replace it (it ended:
    Snakemake asks for the job again, so it must run again)."""
    plan = SubmissionPlan()
    seen = set()
    for spec in specs:
        key = (spec["step"], spec["id"])
        if key in seen:
            raise SettingsError(
                f"two jobs of this batch map to the same anamo task {key[0]}/{key[1]}; "
                "give their rules different steps or wildcards"
            )
        seen.add(key)
        task = existing.get(key)
        state = task.get("state") if task else None
        if state in IN_FLIGHT:
            plan.adopted[key] = str(state)
            continue
        if state is not None:
            plan.to_replace.append(key)
        plan.to_import.append(dict(spec))
    return plan


@dataclass
class Status:
    """A task as Snakemake sees it: still `running`, `succeeded`, or `failed` with a
    message for the error report."""

    outcome: str
    message: str = ""


def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    kept = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join("    " + line for line in kept)


def status_of(key: Key, task: Optional[Mapping[str, Any]]) -> Status:
    """What the task record from `anamo task list --json` means for its Snakemake job."""
    step, id = key
    if task is None:
        return Status(
            "failed",
            f"anamo task {step}/{id} is no longer in the store (was it deleted?). ",
        )
    state = task.get("state")
    if state in IN_FLIGHT:
        return Status("running")
    if state == "succeeded":
        return Status("succeeded")
    result = task.get("result") or {}
    parts = [f"anamo task {step}/{id} {state}"]
    reason = task.get("reason")
    if reason:
        parts.append(f"reason: {reason}")
    if result.get("error"):
        parts.append(f"error: {result['error']}")
    attempts = task.get("attempts")
    if attempts is not None:
        parts.append(f"attempts: {attempts} of {task.get('max_attempts', '?')}")
    if result.get("instance_id") or result.get("worker_id"):
        parts.append(
            f"last run on {result.get('instance_id') or '-'} (worker {result.get('worker_id', '-')})"
        )
    message = "; ".join(parts) + ".\n"
    tail = result.get("log_tail") or ""
    if tail.strip():
        message += f"Last lines of its output (`anamo task show --step {step} --id {id}`):\n"
        message += log_tail(tail) + "\n"
    if state not in FINAL:
        message = f"anamo task {step}/{id} is in unknown state {state!r}.\n" + message
    return Status("failed", message)


def index_tasks(tasks: Iterable[Mapping[str, Any]]) -> Dict[Key, Mapping[str, Any]]:
    """Task records by (step, id)."""
    return {(str(t.get("step")), str(t.get("id"))): t for t in tasks}


def only_step(keys: Iterable[Key]) -> Optional[str]:
    """The one step all `keys` share (so a listing can be limited to it), else None."""
    steps = {k[0] for k in keys}
    return steps.pop() if len(steps) == 1 else None
