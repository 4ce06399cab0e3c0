"""The fee payment gateway's callback, and (in development) a way to drive the simulator."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field, ValidationError
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.registries import (
    GATEWAY_SIGNATURE_HEADER,
    PaymentCallback,
    SimulatedPaymentGateway,
    verify_callback,
)
from api import policy
from api.admission import ADMITTED
from api.auth import CurrentActor
from api.deps import ClientDep, SessionDep, SettingsDep
from api.errors import Problem, from_temporal
from casework.contracts import PaymentReceived
from casework.db import CaseRow
from workflows.work_permit import WorkPermitWorkflow

router = APIRouter(tags=["payments"])


async def deliver(client: Client, cb: PaymentCallback) -> dict[str, Any]:
    handle = client.get_workflow_handle(cb.case_id)
    try:
        summary = await handle.execute_update(
            WorkPermitWorkflow.payment_received,
            PaymentReceived(payment_id=cb.payment_id, amount_kzt=cb.amount_kzt, paid_at=cb.paid_at),
        )
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise from_temporal(exc) from exc
    return {
        "status": "accepted",
        "case_id": cb.case_id,
        "payment_id": cb.payment_id,
        "case_status": summary.status,
    }


@router.post("/payments/callback", dependencies=[ADMITTED])
async def gateway_callback(
    request: Request,
    client: ClientDep,
    settings: SettingsDep,
    signature: Annotated[str, Header(alias=GATEWAY_SIGNATURE_HEADER)],
) -> dict[str, Any]:
    """The payment gateway confirms a fee (authenticated by its HMAC signature, not a user token)."""
    body = await request.body()
    if not verify_callback(body, signature, settings.gateway_secret):
        raise Problem(401, "Unauthorized", "bad gateway signature", kind="bad-signature")
    try:
        cb = PaymentCallback.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {"name": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()
        ]
        raise Problem(
            422, "Invalid request", "malformed callback", kind="invalid-request", errors=errors
        ) from None
    return await deliver(client, cb)


class SimulatedPayment(BaseModel):
    amount_kzt: int | None = Field(default=None, ge=0, description="default: the case's fee")


@router.post("/dev/payments/{case_id}/pay", dependencies=[ADMITTED])
async def simulate_payment(
    case_id: str,
    body: SimulatedPayment,
    actor: CurrentActor,
    session: SessionDep,
    client: ClientDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    """Development only: the simulated gateway receives the employer's payment and calls back."""
    if not settings.dev_mode:
        raise Problem(404, "Not found", "the payment simulator is off", kind="not-found")
    row = policy.require_case(actor, session.get(CaseRow, case_id), case_id)
    policy.require_applicant(actor, row)
    gateway = SimulatedPaymentGateway(
        callback_url="internal", secret=settings.gateway_secret, latency=0
    )
    cb = gateway.callback_for(
        case_id, body.amount_kzt if body.amount_kzt is not None else (row.fee_kzt or 0)
    )
    session.close()  # give the connection back before waiting on the workflow
    return await deliver(client, cb)
