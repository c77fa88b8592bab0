"""The executor's only way to talk to anamo: its command line, with JSON output.

`anamo task import --format jsonl --json -` adds tasks (idempotent: a task already there is
left as it is), `anamo task list --json` reads them back with state, reason and result,
`anamo task cancel` and `anamo task delete` act on one task. The store is the one given with
`--anamo-store`, else anamo's own default (`ANAMO_STORE`, else `sqlite://anamo.db`).
"""

import json
import shlex
import subprocess
from typing import Any, Dict, List, Optional, Sequence

from .tasks import jsonl

# A command that hangs (e.g. a store that does not answer) must not hang Snakemake forever.
TIMEOUT_SECS = 300


class AnamoError(RuntimeError):
    """An anamo command that failed; the message names the command and anamo's own error."""


class AnamoCli:
    def __init__(self, binary: str = "anamo", store: Optional[str] = None):
        self.binary = binary
        self.store = store

    def command(self, args: Sequence[str]) -> List[str]:
        cmd = [self.binary]
        if self.store:
            cmd += ["--store", self.store]
        return cmd + list(args)

    def run(self, args: Sequence[str], stdin: Optional[str] = None) -> str:
        cmd = self.command(args)
        shown = shlex.join(cmd)
        try:
            done = subprocess.run(
                cmd,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_SECS,
                stdin=None if stdin is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise AnamoError(
                f"`{self.binary}` not found: install anamo (`cargo install --path .` in its "
                "repository) or point --anamo-binary at it"
            ) from None
        except subprocess.TimeoutExpired:
            raise AnamoError(f"`{shown}` did not finish within {TIMEOUT_SECS} s") from None
        if done.returncode != 0:
            err = (done.stderr or done.stdout).strip()
            raise AnamoError(f"`{shown}` failed (exit {done.returncode}): {err}")
        return done.stdout

    def run_json(self, args: Sequence[str], stdin: Optional[str] = None) -> Any:
        out = self.run(args, stdin)
        try:
            return json.loads(out)
        except json.JSONDecodeError as e:
            raise AnamoError(
                f"`{shlex.join(self.command(args))}` printed no JSON ({e}): {out[:200]!r}"
            ) from None

    def list_tasks(self, step: Optional[str] = None) -> List[Dict[str, Any]]:
        args = ["task", "list", "--json"]
        if step is not None:
            args += ["--step", step]
        tasks = self.run_json(args)
        if not isinstance(tasks, list):
            raise AnamoError(f"`anamo task list --json` printed {type(tasks).__name__}, not a list")
        return tasks

    def import_tasks(self, specs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        report = self.run_json(
            ["task", "import", "--format", "jsonl", "--json", "-"], stdin=jsonl(specs)
        )
        if not isinstance(report, dict):
            raise AnamoError(f"`anamo task import --json` printed {report!r}, not a report")
        return report

    def cancel(self, step: str, id: str) -> str:
        return self.run(["task", "cancel", "--step", step, "--id", id])

    def delete(self, step: str, id: str) -> str:
        return self.run(["task", "delete", "--step", step, "--id", id])
