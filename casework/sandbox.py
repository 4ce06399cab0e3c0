"""The workflow sandbox the workers run: the SDK's, with the workflow modules passed through
and its bookkeeping calls made without re-entering the sandbox."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import temporalio.workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    Replayer,
    UnsandboxedWorkflowRunner,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox import _runner as sdk_runner

from casework.payload_walks import skip_idle_payload_walks
from casework.settings import Settings, get_settings

log = logging.getLogger(__name__)

# The SDK methods the direct instance replaces; if an SDK upgrade renames them, the
# workers fall back to the SDK's own instance rather than run on guesses.
_SDK_PARTS = ("_run_code", "get_serialization_context", "get_external_store_context")
_IN_SANDBOX = "__temporal_in_sandbox"


class _DirectInstance(sdk_runner._Instance):
    """The SDK's sandboxed instance, two costs lighter; the workflow's own code (its start,
    each activation) runs exactly as before, under the same restrictions.

    1. The SDK runs each call into the sandbox with `exec` of a source string, so Python
       compiles it again each time (15 µs here). The compiled code is kept per string.
    2. For every payload of every command and activation the SDK asks the instance for a
       serialization context (and an external-storage context). It asks through the sandbox:
       swapping `sys.modules`, `__import__` and the builtins in and out, about 130 µs a call,
       171 + 29 calls in an approved work-permit case (22 ms of a worker's CPU per case on
       session 9's machine). Those calls read the workflow's info and its pending commands
       and build a small dataclass: no workflow code and no import runs in them. They are
       asked of the in-sandbox object directly, which returns the same context.
    """

    _compiled: dict[str, Any] = {}
    _compiled_lock = threading.Lock()

    def _run_code(self, code: str, **extra_globals: Any) -> None:
        compiled = self._compiled.get(code)
        if compiled is None:
            with self._compiled_lock:
                compiled = self._compiled.setdefault(code, compile(code, "<string>", "exec"))
        scope: dict[str, Any] = self.globals_and_locals
        scope.update(extra_globals)
        try:
            temporalio.workflow.unsafe._set_in_sandbox(True)
            self._current_thread_id = threading.get_ident()
            exec(compiled, scope, scope)  # noqa: S102 - the SDK's own sandbox entry, compiled once
        finally:
            temporalio.workflow.unsafe._set_in_sandbox(False)
            self._current_thread_id = None
            for k in extra_globals:
                scope.pop(k, None)

    def _in_sandbox(self) -> Any:
        return self.globals_and_locals[_IN_SANDBOX]

    def get_serialization_context(self, command_info: Any) -> Any:
        return self._in_sandbox().get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        return self._in_sandbox().get_external_store_context(command_info)


def _sdk_has_parts() -> bool:
    instance = getattr(sdk_runner, "_Instance", None)
    return instance is not None and all(callable(getattr(instance, p, None)) for p in _SDK_PARTS)


class DirectSandboxRunner(SandboxedWorkflowRunner):
    """`SandboxedWorkflowRunner` whose instances are `_DirectInstance`s: same restrictions,
    same passed-through modules, same module reloading per case."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _DirectInstance(det, self.runner_class, self.restrictions)


def sandbox_runner(
    *workflow_modules: str, reload: bool = False, direct: bool = True
) -> SandboxedWorkflowRunner:
    """The SDK's sandbox with its default restrictions, the given workflow modules
    passed through unless `reload`, and the sandbox's bookkeeping calls made directly
    unless `direct` is false (`_DirectInstance`).

    The sandbox imports a workflow's module afresh for each case it runs, to isolate
    module-level state; defining `WorkPermitWorkflow` again costs about 5 ms of CPU per
    case started. The engine's workflow modules hold no state that a case changes (like
    `case_base`, which they already import passed through), so one import serves every
    case. A passed-through module keeps the real modules it imported, so the sandbox no
    longer checks the calls it makes; what guards them: the lint rule (TID251) keeps the
    clock, randomness, settings, HTTP and the database out of `workflows/`, the workflow
    tests run their workers with `reload` (every call checked), and every replay (the
    audit's and CI's recorded histories) reloads the modules and restricts every call.
    """
    restrictions = (
        SandboxRestrictions.default
        if reload
        else SandboxRestrictions.default.with_passthrough_modules(*workflow_modules)
    )
    if direct and not _sdk_has_parts():
        log.warning("this temporalio has no %s: the SDK's own sandbox instance is used", _SDK_PARTS)
        direct = False
    runner = DirectSandboxRunner if direct else SandboxedWorkflowRunner
    return runner(restrictions=restrictions)


def worker_sandbox(settings: Settings, *workflow_modules: str) -> WorkflowRunner:
    """The sandbox a worker runs its workflow modules under (or none, `worker_sandbox`
    false), and whether this process skips the SDK's idle payload walks
    (`casework.payload_walks`), as the settings choose: the engine's workers and the bench's
    bare worker take both from here, so both sides always run the same setting."""
    if settings.worker_skip_idle_payload_walks:
        skip_idle_payload_walks()
    if not settings.worker_sandbox:
        log.warning("workflows run without the SDK's sandbox (CASEWORK_WORKER_SANDBOX=false)")
        return UnsandboxedWorkflowRunner()
    return sandbox_runner(
        *workflow_modules,
        reload=settings.worker_sandbox_reload_workflow_modules,
        direct=settings.worker_sandbox_direct_calls,
    )


def replayer(workflows: Sequence[type]) -> Replayer:
    """The Replayer every replay uses (the auditors' replay, CI's recorded histories, the
    bench): the engine's data converter and the SDK's default sandbox, the workflow
    modules imported afresh for each history and every call they make checked; only the
    sandbox's bookkeeping calls are made directly (`_DirectInstance`) and the idle
    payload walks skipped as the settings choose (`casework.payload_walks`)."""
    if get_settings().worker_skip_idle_payload_walks:
        skip_idle_payload_walks()
    return Replayer(
        workflows=list(workflows),
        data_converter=pydantic_data_converter,
        workflow_runner=sandbox_runner(reload=True),
    )
