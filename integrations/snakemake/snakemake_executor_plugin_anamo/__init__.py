"""Snakemake executor plugin for anamo: `snakemake --executor anamo` turns each job into one
anamo task (step from the rule, id from the wildcards, script = the command Snakemake gives
for the job), which the step's self-sizing fleet runs; status is read back with one
`anamo task list --json` per check. Decisions live in `tasks.py`, the anamo command line in
`cli.py`; this module wires them into Snakemake's `RemoteExecutor`.
"""

import asyncio
from dataclasses import dataclass, field
import os
import shlex
from typing import Any, AsyncGenerator, Dict, List, Optional

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import (
    CommonSettings,
    ExecutorSettingsBase,
    SharedFSUsage,
)

from .cli import AnamoCli, AnamoError
from .tasks import (
    SettingsError,
    index_tasks,
    only_step,
    parse_step_mapping,
    plan_submission,
    status_of,
    step_for,
    task_id,
    task_spec,
)


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    store: Optional[str] = field(
        default=None,
        metadata={
            "help": "anamo store holding the tasks: sqlite://PATH or dynamodb://TABLE "
            "(default: anamo's own, i.e. $ANAMO_STORE, else sqlite://anamo.db).",
        },
    )
    steps: Optional[str] = field(
        default=None,
        metadata={
            "help": "Map rules to anamo steps (fleets): RULE=STEP,RULE=STEP. A rule's "
            "`resources: anamo_step=...` wins over this; unmapped rules use "
            "--anamo-default-step, else their own name.",
        },
    )
    default_step: Optional[str] = field(
        default=None,
        metadata={"help": "Step (fleet) of rules that are not mapped otherwise."},
    )
    max_attempts: int = field(
        default=3,
        metadata={
            "help": "Attempts anamo gives a task whose worker is lost (instance gone, "
            "lease expired) before failing it. A job whose command exits non-zero fails "
            "at once; Snakemake's --retries retries it.",
        },
    )
    id_prefix: Optional[str] = field(
        default=None,
        metadata={
            "help": "Prefix of every task id, to keep two workflows that share a store "
            "and step apart (e.g. `run7-`).",
        },
    )
    status_interval: Optional[int] = field(
        default=None,
        metadata={
            "help": "Seconds between two status checks (one `anamo task list` each) "
            "[default: Snakemake's --seconds-between-status-checks].",
        },
    )
    binary: str = field(
        default="anamo",
        metadata={"help": "The anamo program to call (default: `anamo` on PATH)."},
    )


common_settings = CommonSettings(
    non_local_exec=True,
    # Locally (the embedded mode, `anamo up` or a controller with the local provider) the
    # jobs share this directory; on EC2 use `--default-storage-provider s3
    # --shared-fs-usage none` (see the README).
    implies_no_shared_fs=False,
    job_deploy_sources=True,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=True,
    auto_deploy_default_storage_provider=True,
    init_seconds_before_status_checks=1,
)


def wildcards_of(job: JobExecutorInterface) -> List[tuple]:
    """The job's wildcards as (name, value) pairs; none for group jobs."""
    wc = getattr(job, "wildcards", None)
    if wc is None or job.is_group():
        return []
    return list(wc.items())


class Executor(RemoteExecutor):
    def __post_init__(self):
        s = self.workflow.executor_settings
        try:
            self.step_mapping = parse_step_mapping(s.steps)
        except SettingsError as e:
            raise WorkflowError(str(e)) from None
        self.anamo = AnamoCli(s.binary, s.store)
        if s.status_interval is not None:
            if s.status_interval < 1:
                raise WorkflowError(
                    f"--anamo-status-interval is {s.status_interval}; give at least 1 second"
                )
            self.next_seconds_between_status_checks = s.status_interval
        shared_io = SharedFSUsage.INPUT_OUTPUT in self.workflow.storage_settings.shared_fs_usage
        # Workers start tasks in their own directory: with a shared file system the job
        # must run in this one, where its relative paths point.
        self.workdir = os.getcwd() if shared_io else None

    def get_job_exec_prefix(self, job: JobExecutorInterface) -> str:
        return f"cd {shlex.quote(self.workdir)}" if self.workdir else ""

    def spec_for(self, job: JobExecutorInterface) -> Dict[str, Any]:
        s = self.workflow.executor_settings
        rule = job.name
        step = step_for(rule, job.resources, self.step_mapping, s.default_step)
        id = task_id(rule, step, wildcards_of(job), job.output, s.id_prefix or "")
        return task_spec(
            step=step,
            id=id,
            script=self.format_job_exec(job),
            priority=getattr(job, "priority", 0) or 0,
            max_attempts=s.max_attempts,
            runtime_minutes=job.resources.get("runtime"),
        )

    def run_jobs(self, jobs: List[JobExecutorInterface]):
        for job in jobs:
            self.run_job_pre(job)
        self.submit(jobs)

    def run_job(self, job: JobExecutorInterface):
        self.submit([job])

    def submit(self, jobs: List[JobExecutorInterface]):
        """Submit a batch: one listing to find tasks of an earlier run, one import."""
        if not jobs:
            return
        try:
            specs = [self.spec_for(job) for job in jobs]
            keys = [(s["step"], s["id"]) for s in specs]
            existing = index_tasks(self.anamo.list_tasks(only_step(keys)))
            plan = plan_submission(specs, existing)
            for step, id in plan.to_replace:
                self.logger.info(f"anamo task {step}/{id} ended in an earlier run; running it again")
                self.anamo.delete(step, id)
            if plan.to_import:
                report = self.anamo.import_tasks(plan.to_import)
                if report.get("conflicting"):
                    raise AnamoError(
                        f"tasks {', '.join(report['conflicting'])} appeared in the store while "
                        "being submitted (another Snakemake run on the same store and step?); "
                        "use --anamo-id-prefix to keep the runs apart"
                    )
        except (SettingsError, AnamoError) as e:
            raise WorkflowError(f"anamo executor: {e}") from None
        for job, key in zip(jobs, keys):
            if key in plan.adopted:
                self.logger.info(
                    f"anamo task {key[0]}/{key[1]} is still {plan.adopted[key]} from an earlier "
                    "run; following it instead of submitting it again"
                )
            self.report_job_submission(
                SubmittedJobInfo(job, external_jobid=f"{key[0]}/{key[1]}", aux={"key": key})
            )

    async def check_active_jobs(
        self, active_jobs: List[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not active_jobs:
            return
        keys = [j.aux["key"] for j in active_jobs]
        async with self.status_rate_limiter:
            try:
                tasks = await asyncio.to_thread(self.anamo.list_tasks, only_step(keys))
            except AnamoError as e:
                self.logger.warning(f"anamo executor: status check failed, trying again: {e}")
                for j in active_jobs:
                    yield j
                return
        by_key = index_tasks(tasks)
        for j, key in zip(active_jobs, keys):
            status = status_of(key, by_key.get(key))
            if status.outcome == "running":
                yield j
            elif status.outcome == "succeeded":
                self.report_job_success(j)
            else:
                self.report_job_error(j, msg=status.message)

    def cancel_jobs(self, active_jobs: List[SubmittedJobInfo]):
        for j in active_jobs:
            step, id = j.aux["key"]
            try:
                self.anamo.cancel(step, id)
                self.logger.info(f"cancelled anamo task {step}/{id}")
            except AnamoError as e:
                self.logger.error(f"anamo executor: could not cancel {step}/{id}: {e}")
