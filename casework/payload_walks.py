"""The SDK's walks over every payload of every workflow activation and completion, skipped
when they cannot change anything.

Before each activation reaches the workflow and after each completion leaves it, the SDK
walks the whole message three times, once for each stage a payload may pass: a payload
codec (encryption, compression), external storage of large payloads, and the codec again
for storage references. For every payload it finds it resolves a serialization context
(building a data converter for each activity's) and calls the stage. With no codec and no
external storage configured, as in this engine, every stage hands each payload back
unchanged: the walks change nothing, yet py-spy found a fifth of a worker's Python samples
in them during task completions, and skipping them saved 6-10 % of the workers' CPU per
case and per breach (BENCHMARKS.md, session 10).

`skip_idle_payload_walks()` wraps the SDK's two entry points: when the data converter of
the workflow worker has neither a codec nor external storage, they return at once;
otherwise the SDK walks as before, so a deployment that adds a codec gets every payload
encoded and decoded exactly as without this module. What a skipped walk would have done
besides: refuse an activation carrying a reference to externally stored payloads, which
only a client with external storage configured can write; the workflow then fails to
decode that payload instead, with the SDK's conversion error.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import temporalio.bridge.worker as bridge_worker
from temporalio.converter import DataConverter

try:
    from temporalio.converter._extstore import StorageOperationMetrics
except ImportError:  # pragma: no cover - an SDK without external storage
    StorageOperationMetrics = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

_ENTRY_POINTS = ("decode_activation", "encode_completion")
_MARK = "_casework_skips_idle_walks"


def walks_change_nothing(data_converter: DataConverter) -> bool:
    """True when every stage of the walks would hand each payload back unchanged."""
    return data_converter.payload_codec is None and data_converter.external_storage is None


def _skipping(original: Any) -> Any:
    @functools.wraps(original)
    async def entry_point(
        message: Any, data_converter: DataConverter, *args: Any, **kwargs: Any
    ) -> Any:
        if walks_change_nothing(data_converter):
            return _no_storage_operations()
        return await original(message, data_converter, *args, **kwargs)

    setattr(entry_point, _MARK, original)
    return entry_point


def _no_storage_operations() -> Any:
    # What the SDK's walks return when no payload went to or came from external storage.
    return StorageOperationMetrics()


def skip_idle_payload_walks() -> bool:
    """Install the skip in this process (idempotent). False, with a warning, if this
    temporalio has no such entry points: the SDK then walks as it always did."""
    originals = [getattr(bridge_worker, name, None) for name in _ENTRY_POINTS]
    if not all(callable(f) for f in originals):
        log.warning("this temporalio has no %s: its payload walks run as usual", _ENTRY_POINTS)
        return False
    if StorageOperationMetrics is None:
        log.warning("this temporalio has no StorageOperationMetrics: payload walks run as usual")
        return False
    for name, original in zip(_ENTRY_POINTS, originals, strict=True):
        if not hasattr(original, _MARK):
            setattr(bridge_worker, name, _skipping(original))
    return True


def installed() -> bool:
    return all(hasattr(getattr(bridge_worker, name, None), _MARK) for name in _ENTRY_POINTS)


def restore_sdk_payload_walks() -> None:
    """Put the SDK's own entry points back (for comparison and the tests)."""
    for name in _ENTRY_POINTS:
        original = getattr(getattr(bridge_worker, name, None), _MARK, None)
        if original is not None:
            setattr(bridge_worker, name, original)
