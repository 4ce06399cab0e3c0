"""The registry and payment-gateway simulators: deterministic answers, outages, callbacks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest

from activities.registries import (
    CALLBACK_RETRIES,
    GATEWAY_SIGNATURE_HEADER,
    AdminOffences,
    Esutd,
    LabourExchange,
    LabourSafety,
    MigrationPolice,
    PaymentCallback,
    PaymentGateway,
    Registries,
    RegistryUnavailable,
    SimulatedAdminOffences,
    SimulatedLabourExchange,
    SimulatedPaymentGateway,
    invoice_id_for,
    payment_id_for,
    sign_callback,
    simulated_registries,
    verify_callback,
)

T = TypeVar("T")

AS_OF = date(2026, 3, 2)
BIN = "123456789012"
SECRET = "test-gateway-secret"
CALLBACK_URL = "http://engine.test/api/payments/callback"


@pytest.fixture
def registries() -> Registries:
    return simulated_registries(latency=0, failure_rate=0)


# --------------------------------------------------------------------------- registries


def test_simulators_implement_the_protocols(registries: Registries) -> None:
    assert isinstance(registries.labour_exchange, LabourExchange)
    assert isinstance(registries.admin_offences, AdminOffences)
    assert isinstance(registries.migration_police, MigrationPolice)
    assert isinstance(registries.labour_safety, LabourSafety)
    assert isinstance(registries.esutd, Esutd)


async def test_vacancy_serial_0_is_not_found(registries: Registries) -> None:
    info = await registries.labour_exchange.get_vacancy("VAC-2026-012345", BIN, AS_OF)
    assert info.found is False
    assert info.status == "not_found"
    assert info.posted_on is None
    assert info.employer_bin is None


async def test_malformed_vacancy_code_is_not_found(registries: Registries) -> None:
    info = await registries.labour_exchange.get_vacancy("VAC-26-1", BIN, AS_OF)
    assert (info.found, info.status) == (False, "not_found")


async def test_vacancy_serial_1_was_posted_too_recently(registries: Registries) -> None:
    info = await registries.labour_exchange.get_vacancy("VAC-2026-123456", BIN, AS_OF)
    assert info.found is True
    assert info.status == "open"
    assert info.posted_on == AS_OF - timedelta(days=5)
    assert info.employer_bin == BIN


async def test_vacancy_serial_2_is_closed(registries: Registries) -> None:
    info = await registries.labour_exchange.get_vacancy("VAC-2026-200001", BIN, AS_OF)
    assert info.found is True
    assert info.status == "closed"


@pytest.mark.parametrize("serial", ["300001", "555555", "999999"])
async def test_other_vacancies_are_open_for_30_days(registries: Registries, serial: str) -> None:
    code = f"VAC-2026-{serial}"
    info = await registries.labour_exchange.get_vacancy(code, BIN, AS_OF)
    assert info.code == code
    assert info.found is True
    assert info.status == "open"
    assert info.posted_on == AS_OF - timedelta(days=30)
    assert info.employer_bin == BIN
    assert info.position


@pytest.mark.parametrize(
    ("employer_bin", "ok", "code"),
    [
        ("000000000013", False, "offence_found"),
        ("000000000031", True, "clear"),
        (BIN, True, "clear"),
    ],
)
async def test_admin_offences(
    registries: Registries, employer_bin: str, ok: bool, code: str
) -> None:
    finding = await registries.admin_offences.check_employer(employer_bin)
    assert (finding.registry, finding.ok, finding.code) == ("admin_offences", ok, code)
    assert finding.detail


@pytest.mark.parametrize(
    ("passport", "ok", "code"),
    [("X1234567", False, "entry_ban"), ("N1234567", True, "clear"), ("N123456X", True, "clear")],
)
async def test_migration_police(registries: Registries, passport: str, ok: bool, code: str) -> None:
    finding = await registries.migration_police.check_worker(passport, "UZB")
    assert (finding.registry, finding.ok, finding.code) == ("migration_police", ok, code)


@pytest.mark.parametrize(
    ("employer_bin", "ok", "code"),
    [("000000000066", False, "violations"), ("000000000065", True, "clear")],
)
async def test_labour_safety(
    registries: Registries, employer_bin: str, ok: bool, code: str
) -> None:
    finding = await registries.labour_safety.check_employer(employer_bin)
    assert (finding.registry, finding.ok, finding.code) == ("labour_safety", ok, code)


@pytest.mark.parametrize(
    ("employer_bin", "ok", "code"),
    [("000000000099", False, "illegal_foreign_labour"), ("000000000098", True, "clear")],
)
async def test_esutd(registries: Registries, employer_bin: str, ok: bool, code: str) -> None:
    finding = await registries.esutd.check_contracts(employer_bin, "N1234567")
    assert (finding.registry, finding.ok, finding.code) == ("esutd", ok, code)


async def _outcomes(sim: AdminOffences, calls: int) -> list[bool]:
    outcomes = []
    for _ in range(calls):
        try:
            await sim.check_employer(BIN)
            outcomes.append(True)
        except RegistryUnavailable as exc:
            assert "temporarily unavailable" in str(exc)
            outcomes.append(False)
    return outcomes


async def _with_retries(call: Callable[[], Awaitable[T]], attempts: int = 30) -> tuple[T, int]:
    """What Temporal's retry policy does for the activity, minus the backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return await call(), attempt
        except RegistryUnavailable:
            continue
    raise AssertionError(f"still unavailable after {attempts} attempts")


async def test_transient_failures_are_reproducible_and_retry_succeeds() -> None:
    regs = simulated_registries(latency=0, failure_rate=0.5, seed=42)
    outcomes = await _outcomes(regs.admin_offences, 40)
    assert any(outcomes) and not all(outcomes)

    again = simulated_registries(latency=0, failure_rate=0.5, seed=42)
    assert await _outcomes(again.admin_offences, 40) == outcomes

    # Every registry eventually answers, and at least one needed more than one try.
    regs = simulated_registries(latency=0, failure_rate=0.5, seed=7)
    vacancy, vacancy_attempts = await _with_retries(
        lambda: regs.labour_exchange.get_vacancy("VAC-2026-300001", BIN, AS_OF)
    )
    findings = [
        await _with_retries(lambda: regs.admin_offences.check_employer(BIN)),
        await _with_retries(lambda: regs.migration_police.check_worker("N1234567", "UZB")),
        await _with_retries(lambda: regs.labour_safety.check_employer(BIN)),
        await _with_retries(lambda: regs.esutd.check_contracts(BIN, "N1234567")),
    ]
    assert vacancy.status == "open"
    assert all(finding.ok for finding, _ in findings)
    assert max([vacancy_attempts, *(attempts for _, attempts in findings)]) > 1


async def test_failure_rate_zero_never_fails() -> None:
    sim = SimulatedAdminOffences(latency=0, failure_rate=0, seed=1)
    assert all(await _outcomes(sim, 200))


async def test_latency_is_applied() -> None:
    sim = SimulatedLabourExchange(latency=0.02, failure_rate=0, seed=1)
    started = time.monotonic()
    await sim.get_vacancy("VAC-2026-300001", BIN, AS_OF)
    # Lower bound only: 0.5 x latency is the shortest sleep; an upper bound would be flaky.
    assert time.monotonic() - started >= 0.009


def test_invalid_knobs_are_rejected() -> None:
    with pytest.raises(ValueError):
        simulated_registries(latency=-1)
    with pytest.raises(ValueError):
        simulated_registries(failure_rate=1.5)


# --------------------------------------------------------------------------- payment gateway

DUE = datetime(2026, 3, 16, 18, 0, tzinfo=UTC)


async def test_invoice_is_idempotent_per_case() -> None:
    gateway = SimulatedPaymentGateway(CALLBACK_URL, SECRET, latency=0)
    assert isinstance(gateway, PaymentGateway)
    first = await gateway.create_invoice("WP-2026-0001", 592_525, DUE)
    again = await gateway.create_invoice("WP-2026-0001", 592_525, DUE)
    other = await gateway.create_invoice("WP-2026-0002", 592_525, DUE)
    assert first == again
    assert first.invoice_id == invoice_id_for("WP-2026-0001")
    assert other.invoice_id != first.invoice_id
    assert (first.case_id, first.amount_kzt, first.due) == ("WP-2026-0001", 592_525, DUE)
    assert first.pay_url.endswith(first.invoice_id)

    # Another process (a fresh gateway) derives the same invoice id.
    fresh = SimulatedPaymentGateway(CALLBACK_URL, SECRET, latency=0)
    assert (await fresh.create_invoice("WP-2026-0001", 592_525, DUE)).invoice_id == first.invoice_id


def test_sign_and_verify() -> None:
    body = b'{"invoice_id":"INV-1","amount_kzt":100}'
    signature = sign_callback(body, SECRET)
    assert len(signature) == 64 and int(signature, 16) >= 0
    assert verify_callback(body, signature, SECRET)
    assert not verify_callback(body.replace(b"100", b"1"), signature, SECRET)
    assert not verify_callback(body, signature, "another-secret")
    assert not verify_callback(body, "", SECRET)
    assert not verify_callback(body, "подпись", SECRET)  # non-ASCII header must not crash


class _Endpoint:
    """The engine's callback endpoint, scripted: first answers from `script`, then 200."""

    def __init__(self, script: list[int | type[httpx.TransportError]] | None = None) -> None:
        self.script = list(script or [])
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, type):
            raise step("connection refused", request=request)
        if step != 200:
            return httpx.Response(step, json={"detail": "try later"})
        assert verify_callback(request.content, request.headers[GATEWAY_SIGNATURE_HEADER], SECRET)
        callback = PaymentCallback.model_validate_json(request.content)
        return httpx.Response(200, json={"status": "accepted", "payment_id": callback.payment_id})

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def _gateway(endpoint: _Endpoint) -> SimulatedPaymentGateway:
    client = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    return SimulatedPaymentGateway(CALLBACK_URL, SECRET, latency=0, client=client, retry_backoff=0)


async def test_pay_posts_a_signed_callback() -> None:
    endpoint = _Endpoint()
    gateway = _gateway(endpoint)
    invoice = await gateway.create_invoice("WP-2026-0001", 592_525, DUE)

    answer = await gateway.pay(invoice.invoice_id, 592_525)

    assert answer == {"status": "accepted", "payment_id": payment_id_for(invoice.invoice_id)}
    (request,) = endpoint.requests
    assert request.method == "POST"
    assert str(request.url) == CALLBACK_URL
    assert request.headers["content-type"] == "application/json"
    assert request.headers[GATEWAY_SIGNATURE_HEADER] == sign_callback(request.content, SECRET)
    callback = PaymentCallback.model_validate_json(request.content)
    assert callback.invoice_id == invoice.invoice_id
    assert callback.case_id == "WP-2026-0001"
    assert callback.amount_kzt == 592_525
    assert callback.paid_at.tzinfo is not None


async def test_payment_id_is_stable_per_invoice_and_pay_accepts_case_id() -> None:
    endpoint = _Endpoint()
    gateway = _gateway(endpoint)
    invoice = await gateway.create_invoice("WP-2026-0001", 1000, DUE)
    await gateway.pay(invoice.invoice_id, 1000)
    # A fresh gateway (another process) paying by case id sends the same payment.
    await _gateway(endpoint).pay("WP-2026-0001", 1000)
    first, second = endpoint.bodies()
    assert first["payment_id"] == second["payment_id"]
    assert first["invoice_id"] == second["invoice_id"] == invoice.invoice_id
    assert second["case_id"] == "WP-2026-0001"


async def test_pay_retries_5xx_and_connection_errors_with_identical_body() -> None:
    endpoint = _Endpoint([503, httpx.ConnectError, 502])
    answer = await _gateway(endpoint).pay("WP-2026-0003", 500)
    assert answer["status"] == "accepted"
    assert len(endpoint.requests) == 4
    assert len({r.content for r in endpoint.requests}) == 1
    assert len({r.headers[GATEWAY_SIGNATURE_HEADER] for r in endpoint.requests}) == 1


async def test_pay_gives_up_after_five_retries() -> None:
    endpoint = _Endpoint([503] * 10)
    with pytest.raises(httpx.HTTPStatusError):
        await _gateway(endpoint).pay("WP-2026-0004", 500)
    assert len(endpoint.requests) == CALLBACK_RETRIES + 1 == 6

    unreachable = _Endpoint([httpx.ConnectError] * 10)
    with pytest.raises(httpx.ConnectError):
        await _gateway(unreachable).pay("WP-2026-0004", 500)
    assert len(unreachable.requests) == 6


async def test_pay_does_not_retry_a_rejection() -> None:
    endpoint = _Endpoint([401])
    with pytest.raises(httpx.HTTPStatusError) as excinfo:
        await _gateway(endpoint).pay("WP-2026-0005", 500)
    assert excinfo.value.response.status_code == 401
    assert len(endpoint.requests) == 1


async def test_pay_against_a_real_http_server() -> None:
    """No injected client: the gateway opens its own connection to a local server."""
    received: list[tuple[dict[str, str], bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)
        }
        body = await reader.readexactly(int(headers["content-length"]))
        received.append((headers, body))
        payload = b'{"status":"accepted"}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(payload), payload)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gateway = SimulatedPaymentGateway(
            f"http://127.0.0.1:{port}/callback", SECRET, latency=0, retry_backoff=0
        )
        assert await gateway.pay("WP-2026-0006", 700) == {"status": "accepted"}
    finally:
        server.close()
        await server.wait_closed()

    ((headers, body),) = received
    assert verify_callback(body, headers[GATEWAY_SIGNATURE_HEADER.lower()], SECRET)
    assert PaymentCallback.model_validate_json(body).case_id == "WP-2026-0006"
