"""Signed webhook notifications of clock events, retried until delivered, once per endpoint.

The workflow runs this activity for every at-risk, breached, suspended, resumed and
extended event; Temporal retries it (with backoff) until every endpoint has answered 2xx.
Each successful delivery is recorded, so a retry only sends to the endpoints still
missing it. The body is signed with HMAC-SHA256 (`X-Casework-Signature`) and carries a
stable `X-Casework-Event-Id` for receivers to deduplicate on.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from datetime import UTC, datetime

import httpx
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity

from casework.contracts import ClockNotice
from casework.db import WebhookDeliveryRow
from workflows import activity_names as act

log = logging.getLogger("casework.webhooks")
SIGNATURE_HEADER = "X-Casework-Signature"
EVENT_HEADER = "X-Casework-Event-Id"


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str, secret: str) -> bool:
    return hmac.compare_digest(sign(body, secret).encode(), signature.encode())


class WebhookActivities:
    def __init__(
        self, engine: Engine, urls: list[str], secret: str, client: httpx.AsyncClient | None = None
    ) -> None:
        self.engine = engine
        self.urls = urls
        self.secret = secret
        self.client = client

    def _delivered(self, event_id: str) -> set[str]:
        with Session(self.engine) as s:
            return set(
                s.exec(
                    select(WebhookDeliveryRow.url).where(WebhookDeliveryRow.event_id == event_id)
                )
            )

    def _record(self, event_id: str, url: str, status: int) -> None:
        try:
            with Session(self.engine) as s:
                s.add(
                    WebhookDeliveryRow(
                        event_id=event_id,
                        url=url,
                        delivered_at=datetime.now(UTC),
                        status_code=status,
                    )
                )
                s.commit()
        except IntegrityError:
            pass  # a concurrent attempt recorded it first

    @activity.defn(name=act.DELIVER_WEBHOOKS)
    async def deliver_webhooks(self, notice: ClockNotice) -> int:
        """Deliver to every endpoint still missing this event; raise (and be retried) if any fails."""
        if not self.urls:
            return 0
        done = await asyncio.to_thread(self._delivered, notice.event_id)
        body = notice.model_dump_json().encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, self.secret),
            EVENT_HEADER: notice.event_id,
        }
        failures = []
        client = self.client or httpx.AsyncClient(timeout=10)
        try:
            for url in self.urls:
                if url in done:
                    continue
                try:
                    r = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    failures.append(f"{url}: {type(exc).__name__}")
                    continue
                if 200 <= r.status_code < 300:
                    await asyncio.to_thread(self._record, notice.event_id, url, r.status_code)
                else:
                    failures.append(f"{url}: HTTP {r.status_code}")
        finally:
            if self.client is None:
                await client.aclose()
        if failures:
            raise RuntimeError(
                f"webhook delivery of {notice.event_id} failed: {'; '.join(failures)}"
            )
        return len(self.urls) - len(done)
