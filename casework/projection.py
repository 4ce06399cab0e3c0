"""The case row of the read model, as built from a workflow's `CaseProjection`.

One function for both writers: the projection activity, and the API that writes the
registration row (rev 0) at case start so the case is visible as soon as it is filed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from casework.contracts import CaseProjection


def case_row_values(p: CaseProjection) -> dict[str, Any]:
    values: dict[str, Any] = p.model_dump(exclude={"events"}, mode="python")
    values["status"] = p.status.value
    values["sla_state"] = p.sla_state.value
    values["region"] = p.region.value
    values["outcome"] = p.outcome.value if p.outcome else None
    values["updated_at"] = datetime.now(UTC)
    return values
