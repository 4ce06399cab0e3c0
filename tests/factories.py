"""Valid inputs for tests; each test states only what it changes."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from casework.contracts import Actor, CaseStart, Role, WorkPermitApplication
from casework.regions import Region

CASEWORKER = Actor(
    user_id="cw-astana-1", role=Role.caseworker, region=Region.astana, name="A. Caseworker"
)
CASEWORKER_2 = Actor(user_id="cw-astana-2", role=Role.caseworker, region=Region.astana)
CASEWORKER_ALMATY = Actor(user_id="cw-almaty-1", role=Role.caseworker, region=Region.almaty_city)
EMPLOYER_BIN = "123456789012"
EMPLOYER = Actor(user_id="emp-1", role=Role.employer, party=EMPLOYER_BIN)


def application_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "region": "astana",
        "category": "3",
        "employer": {"bin": EMPLOYER_BIN, "name": "Steppe Engineering LLP"},
        "worker": {
            "full_name": "Ivan Petrov",
            "passport_number": "P1234567",
            "citizenship": "RUS",
            "birth_date": "1988-04-12",
            "education": "higher",
            "experience_years": 9,
        },
        "position": "Welding engineer",
        "vacancy_code": "VAC-2026-512345",
        "staffing": {"total_staff": 120, "citizens_in_category": 95, "foreigners_in_category": 3},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def case_start(case_id: str | None = None, **overrides: Any) -> CaseStart:
    app = WorkPermitApplication.model_validate(application_data(**overrides))
    body = json.dumps(app.model_dump(mode="json"), sort_keys=True).encode()
    return CaseStart(
        case_id=case_id or f"WP-T{uuid.uuid4().hex[:10].upper()}",
        procedure="work_permit",
        application=app,
        filed_by=EMPLOYER,
        request_hash=hashlib.sha256(body).hexdigest(),
    )


CONSULATE = "KZ-CN-URUMQI"
CONSUL = Actor(user_id="consul-urumqi-1", role=Role.consulate_officer, consulate=CONSULATE)
CASEWORKER_PAVLODAR = Actor(user_id="cw-pavlodar-1", role=Role.caseworker, region=Region.pavlodar)


def kandas_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "applicant": {
            "full_name": "Nurlan Bekov",
            "birth_date": "1985-06-01",
            "passport_number": "E7654321",
            "citizenship": "CHN",
        },
        "family": [
            {
                "full_name": "Aigul Bekova",
                "birth_date": "1987-02-03",
                "passport_number": "E7654322",
                "citizenship": "CHN",
                "relation": "spouse",
            },
            {
                "full_name": "Aruzhan Bekova",
                "birth_date": "2012-09-09",
                "passport_number": "E7654323",
                "citizenship": "CHN",
                "relation": "child",
            },
        ],
        "ethnicity_proof": {"kind": "document", "reference": "Hukou record 1985-0601"},
        "survey": {
            "profession": "welder",
            "education": "vocational",
            "experience_years": 12,
            "languages": ["kk", "zh"],
            "preferred_regions": ["pavlodar", "akmola"],
            "housing_need": "rent",
        },
        "country_of_residence": "CHN",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def kandas_start(case_id: str | None = None, **overrides: Any):  # type: ignore[no-untyped-def]
    from casework.kandas import KandasApplication, KandasStart

    app = KandasApplication.model_validate(kandas_data(**overrides))
    body = json.dumps(app.model_dump(mode="json"), sort_keys=True).encode()
    return KandasStart(
        case_id=case_id or f"KS-T{uuid.uuid4().hex[:10].upper()}",
        application=app,
        consulate=CONSULATE,
        filed_by=CONSUL,
        request_hash=hashlib.sha256(body).hexdigest(),
    )
