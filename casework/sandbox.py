"""The workflow sandbox the workers run: the SDK's, with the workflow modules passed through."""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions


def sandbox_runner(*workflow_modules: str, reload: bool = False) -> SandboxedWorkflowRunner:
    """The SDK's sandbox with every default restriction, the given workflow modules
    passed through unless `reload`.

    The sandbox imports a workflow's module afresh for each case it runs, to isolate
    module-level state; defining `WorkPermitWorkflow` again costs about 5 ms of CPU per
    case started. The engine's workflow modules hold no state that a case changes (like
    `case_base`, which they already import passed through), so one import serves every
    case. What stays guarded: the lint rule (TID251) keeps the clock, settings, HTTP and
    the database out of `workflows/`, and every replay (the audit's and CI's recorded
    histories) runs under the SDK's default sandbox, which reloads the modules and
    restricts every call they make.
    """
    if reload:
        return SandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*workflow_modules)
    )
