"""An operator reads from any response how long it took inside the API (`Server-Timing`),
and from a case start how long each phase took: preparing, Temporal, registering."""

from __future__ import annotations

from api.timing import parse
from tests.api.conftest import Stack
from tests.api.flows import EMPLOYER_SCOPE, start_case


async def test_a_case_start_reports_its_phases_and_its_time_in_the_api(stack: Stack) -> None:
    r = await start_case(stack)
    assert r.status_code == 201, r.text

    phases = parse(r.headers["Server-Timing"])
    assert set(phases) == {"prepare", "temporal", "register", "app"}
    assert all(ms >= 0 for ms in phases.values())
    # Starting a workflow on the server takes a real round trip, and the request's time in
    # the API covers the route's own phases.
    assert phases["temporal"] > 0
    route = phases["prepare"] + phases["temporal"] + phases["register"]
    assert phases["app"] >= route - 0.3  # each figure is rounded to 0.1 ms


async def test_every_response_reports_its_time_in_the_api_even_a_refusal(stack: Stack) -> None:
    employer = stack.token("employer", **EMPLOYER_SCOPE)
    listed = await stack.http.get("/api/v1/cases", headers=employer)
    refused = await stack.http.get("/api/v1/cases")  # no token

    assert listed.status_code == 200 and refused.status_code == 401
    for r in (listed, refused):
        assert set(parse(r.headers["Server-Timing"])) == {"app"}


def test_the_header_is_read_back_phase_by_phase() -> None:
    assert parse("prepare;dur=0.4, temporal;dur=9.1, register;dur=2.0, app;dur=12.5") == {
        "prepare": 0.4,
        "temporal": 9.1,
        "register": 2.0,
        "app": 12.5,
    }
    assert parse("") == {}
