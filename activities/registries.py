"""Adapters to the external government registries and the fee payment gateway.

None of the real systems (enbek.kz labour exchange, the administrative offences
register, Migration Police / UIS "Berkut", the labour safety inspectorate, the ESUTD
employment-contract register, the payment gateway) is reachable from here. Each sits
behind a `typing.Protocol`; the activities only ever see the protocol, and configuration
chooses the implementation. This module ships the local simulators, which behave like
the real systems in the ways that matter to a durable workflow: they are slow, they fail
transiently, and they give negative answers.

Simulator behaviour
-------------------

Every simulator method is `async`. The knobs come from `casework.settings`
(`simulator_latency`, `simulator_failure_rate`, `simulator_seed`).

| aspect | behaviour |
| --- | --- |
| latency | each call sleeps uniform(0.5, 1.5) x `latency` seconds; `latency=0`: no sleep |
| transient failure | with probability `failure_rate` a call raises `RegistryUnavailable` ("<system> temporarily unavailable") after its latency; `failure_rate=0` disables. Inside a Temporal activity it propagates and the retry policy retries it |
| reproducibility | each simulator owns a `random.Random` derived from `seed` (`None`: OS entropy), so a seeded run fails on the same calls every time |

Deterministic answers, driven by the input so tests and demos can steer a case:

| registry | input | answer |
| --- | --- | --- |
| labour exchange | code not of the form `VAC-YYYY-NNNNNN` | not found (`found=False`, `status="not_found"`) |
| labour exchange | NNNNNN starts with `0` | not found (`found=False`, `status="not_found"`) |
| labour exchange | NNNNNN starts with `1` | open, posted 5 CD before `as_of` (too recent: the law needs 15 CD) |
| labour exchange | NNNNNN starts with `2` | closed, posted 30 CD before `as_of` |
| labour exchange | any other NNNNNN | open, posted 30 CD before `as_of` |
| admin offences | BIN ends in `13` | `offence_found` (ok False); otherwise `clear` |
| migration police (UIS "Berkut") | passport starts with `X` | `entry_ban` (ok False); otherwise `clear` |
| labour safety | BIN ends in `66` | `violations` (ok False); otherwise `clear` |
| ESUTD | BIN ends in `99` | `illegal_foreign_labour` (ok False: foreign workers without a permit); otherwise `clear` |
| payment gateway | `create_invoice(case_id, ...)` | invoice `INV-<case_id>`; a repeat for the same case returns the original invoice |
| payment gateway | `pay(invoice_id or case_id, amount)` | POSTs a signed `PaymentCallback` to the callback URL; `payment_id` is derived from the invoice id, so a redelivery is recognisably the same payment |

A found vacancy carries `employer_bin` = the BIN asked about.

The payment callback is signed with HMAC-SHA256 over the raw body, hex encoded, in the
`X-Gateway-Signature` header (`sign_callback` / `verify_callback`). Delivery is retried
on 5xx answers and connection errors, up to 5 retries with exponential backoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import quote

import httpx
from pydantic import BaseModel, Field

__all__ = [
    "GATEWAY_SIGNATURE_HEADER",
    "AdminOffences",
    "Esutd",
    "Invoice",
    "LabourExchange",
    "LabourSafety",
    "MigrationPolice",
    "PaymentCallback",
    "PaymentGateway",
    "RegistryFinding",
    "RegistryUnavailable",
    "Registries",
    "SimulatedAdminOffences",
    "SimulatedEsutd",
    "SimulatedLabourExchange",
    "SimulatedLabourSafety",
    "SimulatedMigrationPolice",
    "SimulatedPaymentGateway",
    "VacancyInfo",
    "case_id_from_invoice",
    "invoice_id_for",
    "payment_id_for",
    "sign_callback",
    "simulated_registries",
    "verify_callback",
]

GATEWAY_SIGNATURE_HEADER = "X-Gateway-Signature"

# --------------------------------------------------------------------------- errors and answers


class RegistryUnavailable(Exception):
    """A transient outage of an external system.

    Deliberately not a non-retryable error: raised inside a Temporal activity it fails
    the attempt and the activity's retry policy tries again.
    """


class VacancyInfo(BaseModel):
    """A vacancy as the labour exchange reports it."""

    code: str
    found: bool
    posted_on: date | None = None
    employer_bin: str | None = None
    position: str | None = None
    status: Literal["open", "closed", "not_found"]


class RegistryFinding(BaseModel):
    """One registry's answer about an employer or a worker."""

    registry: str
    ok: bool
    code: str  # "clear", "offence_found", "entry_ban", "violations", "illegal_foreign_labour"...
    detail: str


# --------------------------------------------------------------------------- interfaces


@runtime_checkable
class LabourExchange(Protocol):
    """National labour exchange (enbek.kz): vacancy postings."""

    async def get_vacancy(self, code: str, employer_bin: str, as_of: date) -> VacancyInfo: ...


@runtime_checkable
class AdminOffences(Protocol):
    """Register of administrative offences."""

    async def check_employer(self, employer_bin: str) -> RegistryFinding: ...


@runtime_checkable
class MigrationPolice(Protocol):
    """Migration Police information system (UIS "Berkut"): entries, bans, records."""

    async def check_worker(self, passport_number: str, citizenship: str) -> RegistryFinding: ...


@runtime_checkable
class LabourSafety(Protocol):
    """Labour safety inspectorate: violations found at the employer."""

    async def check_employer(self, employer_bin: str) -> RegistryFinding: ...


@runtime_checkable
class Esutd(Protocol):
    """ESUTD, the unified register of employment contracts."""

    async def check_contracts(self, employer_bin: str, passport_number: str) -> RegistryFinding: ...


@dataclass(frozen=True, slots=True)
class Registries:
    """One adapter per registry; the activities receive this bundle."""

    labour_exchange: LabourExchange
    admin_offences: AdminOffences
    migration_police: MigrationPolice
    labour_safety: LabourSafety
    esutd: Esutd


# --------------------------------------------------------------------------- simulators


class _Simulator:
    """Latency and transient failures shared by all simulators."""

    registry = "simulator"
    title = "Simulated system"

    def __init__(
        self, latency: float = 0.05, failure_rate: float = 0.1, seed: int | None = None
    ) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        self.latency = latency
        self.failure_rate = failure_rate
        # A string seed per registry: seeded simulators built together must not fail in
        # lockstep, and string seeding is stable across processes (no hash randomisation).
        self._rng = random.Random(None if seed is None else f"{seed}/{self.registry}")

    async def _simulate_call(self) -> None:
        if self.latency > 0:
            await asyncio.sleep(self.latency * self._rng.uniform(0.5, 1.5))
        if self.failure_rate > 0 and self._rng.random() < self.failure_rate:
            raise RegistryUnavailable(f"{self.title} temporarily unavailable")

    def _finding(self, ok: bool, code: str, detail: str) -> RegistryFinding:
        return RegistryFinding(registry=self.registry, ok=ok, code=code, detail=detail)

    def _clear(self, detail: str) -> RegistryFinding:
        return self._finding(True, "clear", detail)


_VACANCY_CODE = re.compile(r"^VAC-(\d{4})-(\d{6})$")


class SimulatedLabourExchange(_Simulator):
    registry = "labour_exchange"
    title = "Labour exchange (enbek.kz)"

    async def get_vacancy(self, code: str, employer_bin: str, as_of: date) -> VacancyInfo:
        await self._simulate_call()
        match = _VACANCY_CODE.match(code)
        if match is None or match.group(2).startswith("0"):
            return VacancyInfo(code=code, found=False, status="not_found")
        serial = match.group(2)
        posted_days_ago = 5 if serial.startswith("1") else 30
        return VacancyInfo(
            code=code,
            found=True,
            posted_on=as_of - timedelta(days=posted_days_ago),
            employer_bin=employer_bin,
            position=f"Vacancy {code}",
            status="closed" if serial.startswith("2") else "open",
        )


class SimulatedAdminOffences(_Simulator):
    registry = "admin_offences"
    title = "Administrative offences register"

    async def check_employer(self, employer_bin: str) -> RegistryFinding:
        await self._simulate_call()
        if employer_bin.endswith("13"):
            return self._finding(
                False,
                "offence_found",
                f"Employer {employer_bin} has an administrative offence on record",
            )
        return self._clear(f"No administrative offences recorded for employer {employer_bin}")


class SimulatedMigrationPolice(_Simulator):
    registry = "migration_police"
    title = 'Migration Police (UIS "Berkut")'

    async def check_worker(self, passport_number: str, citizenship: str) -> RegistryFinding:
        await self._simulate_call()
        if passport_number.upper().startswith("X"):
            return self._finding(
                False,
                "entry_ban",
                f"Entry ban recorded for passport {passport_number} ({citizenship})",
            )
        return self._clear(
            f"No entry ban or records for passport {passport_number} ({citizenship})"
        )


class SimulatedLabourSafety(_Simulator):
    registry = "labour_safety"
    title = "Labour safety inspectorate"

    async def check_employer(self, employer_bin: str) -> RegistryFinding:
        await self._simulate_call()
        if employer_bin.endswith("66"):
            return self._finding(
                False,
                "violations",
                f"Labour safety violations recorded for employer {employer_bin}",
            )
        return self._clear(f"No labour safety violations recorded for employer {employer_bin}")


class SimulatedEsutd(_Simulator):
    registry = "esutd"
    title = "Employment contract register (ESUTD)"

    async def check_contracts(self, employer_bin: str, passport_number: str) -> RegistryFinding:
        await self._simulate_call()
        if employer_bin.endswith("99"):
            return self._finding(
                False,
                "illegal_foreign_labour",
                f"Employer {employer_bin} employs foreign workers without a permit",
            )
        return self._clear(
            f"Employment contracts of employer {employer_bin} are consistent "
            f"(passport {passport_number})"
        )


def simulated_registries(
    latency: float = 0.05, failure_rate: float = 0.1, seed: int | None = None
) -> Registries:
    """All five registries as simulators sharing the same knobs."""
    return Registries(
        labour_exchange=SimulatedLabourExchange(latency, failure_rate, seed),
        admin_offences=SimulatedAdminOffences(latency, failure_rate, seed),
        migration_police=SimulatedMigrationPolice(latency, failure_rate, seed),
        labour_safety=SimulatedLabourSafety(latency, failure_rate, seed),
        esutd=SimulatedEsutd(latency, failure_rate, seed),
    )


# --------------------------------------------------------------------------- payment gateway


class Invoice(BaseModel):
    invoice_id: str
    case_id: str
    amount_kzt: int = Field(ge=0)
    due: datetime
    pay_url: str


class PaymentCallback(BaseModel):
    """Body of the gateway's callback: what the engine's endpoint receives."""

    invoice_id: str
    case_id: str
    payment_id: str
    amount_kzt: int = Field(ge=0)
    paid_at: datetime


@runtime_checkable
class PaymentGateway(Protocol):
    async def create_invoice(self, case_id: str, amount_kzt: int, due: datetime) -> Invoice: ...


_INVOICE_PREFIX = "INV-"


def invoice_id_for(case_id: str) -> str:
    # Reversible on purpose: `pay` runs in another process (CLI, demo) than the worker
    # that created the invoice, so the case must be recoverable without shared state.
    return f"{_INVOICE_PREFIX}{case_id}"


def case_id_from_invoice(invoice_id: str) -> str | None:
    if invoice_id.startswith(_INVOICE_PREFIX) and len(invoice_id) > len(_INVOICE_PREFIX):
        return invoice_id[len(_INVOICE_PREFIX) :]
    return None


def payment_id_for(invoice_id: str) -> str:
    digest = hashlib.sha256(f"payment:{invoice_id}".encode()).hexdigest()
    return f"PAY-{digest[:20].upper()}"


def sign_callback(body: bytes, secret: str) -> str:
    """Hex HMAC-SHA256 of the raw callback body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_callback(body: bytes, signature: str, secret: str) -> bool:
    expected = sign_callback(body, secret)
    # Bytes, not str: compare_digest rejects non-ASCII str with TypeError, and the
    # header is attacker-controlled.
    return hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace"))


CALLBACK_RETRIES = 5


class _GatewaySimulator(_Simulator):
    registry = "payment_gateway"
    title = "Payment gateway"


class SimulatedPaymentGateway:
    """The fee payment gateway: issues invoices and, when "the applicant pays", calls back."""

    def __init__(
        self,
        callback_url: str,
        secret: str,
        latency: float = 0.05,
        failure_rate: float = 0.0,
        seed: int | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        pay_base_url: str = "https://pay.gateway.example/invoices",
        retry_backoff: float = 0.2,
        timeout: float = 10.0,
    ) -> None:
        self.callback_url = callback_url
        self._secret = secret
        self._sim = _GatewaySimulator(latency, failure_rate, seed)
        self._client = client
        self._pay_base_url = pay_base_url.rstrip("/")
        self._retry_backoff = retry_backoff
        self._timeout = timeout
        self._invoices: dict[str, Invoice] = {}

    async def create_invoice(self, case_id: str, amount_kzt: int, due: datetime) -> Invoice:
        await self._sim._simulate_call()
        invoice_id = invoice_id_for(case_id)
        existing = self._invoices.get(invoice_id)
        if existing is not None:
            # Idempotency key semantics: an activity retry gets the original invoice.
            return existing
        invoice = Invoice(
            invoice_id=invoice_id,
            case_id=case_id,
            amount_kzt=amount_kzt,
            due=due,
            pay_url=f"{self._pay_base_url}/{quote(invoice_id, safe='')}",
        )
        self._invoices[invoice_id] = invoice
        return invoice

    def callback_for(self, invoice_id_or_case_id: str, amount_kzt: int) -> PaymentCallback:
        """The callback `pay` would send (paid now).

        An argument starting with "INV-" is an invoice id, anything else a case id; the
        invoice need not have been created by this instance.
        """
        case_id = case_id_from_invoice(invoice_id_or_case_id)
        if case_id is None:
            case_id = invoice_id_or_case_id
        invoice_id = invoice_id_for(case_id)
        return PaymentCallback(
            invoice_id=invoice_id,
            case_id=case_id,
            payment_id=payment_id_for(invoice_id),
            amount_kzt=amount_kzt,
            paid_at=datetime.now(UTC),
        )

    async def pay(self, invoice_id_or_case_id: str, amount_kzt: int) -> dict[str, Any]:
        """The applicant pays: deliver the signed callback and return the engine's answer.

        Raises `httpx.HTTPStatusError` on a 4xx answer (not retried: resending the same
        body cannot fix it) or when 5xx answers outlast the retries, and the last
        `httpx.TransportError` when the endpoint stays unreachable.
        """
        callback = self.callback_for(invoice_id_or_case_id, amount_kzt)
        # Serialised once: every redelivery carries byte-identical body and signature.
        body = callback.model_dump_json().encode()
        headers = {
            "Content-Type": "application/json",
            GATEWAY_SIGNATURE_HEADER: sign_callback(body, self._secret),
        }
        if self._client is not None:
            return await self._deliver(self._client, body, headers)
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            return await self._deliver(client, body, headers)

    async def _deliver(
        self, client: httpx.AsyncClient, body: bytes, headers: dict[str, str]
    ) -> dict[str, Any]:
        for attempt in range(CALLBACK_RETRIES + 1):
            last_attempt = attempt == CALLBACK_RETRIES
            try:
                response = await client.post(self.callback_url, content=body, headers=headers)
            except httpx.TransportError:
                if last_attempt:
                    raise
            else:
                if response.status_code < 500 or last_attempt:
                    response.raise_for_status()
                    return _json_object(response)
            if self._retry_backoff > 0:
                await asyncio.sleep(self._retry_backoff * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _json_object(response: httpx.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    data = response.json()
    return data if isinstance(data, dict) else {"result": data}
