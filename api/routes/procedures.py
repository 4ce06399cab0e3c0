"""The procedure catalogue: procedures, their rule-set versions and their forms."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import SettingsDep
from casework.contracts import FORMS, WorkPermitApplication
from casework.rules import PROCEDURES, list_rulesets

router = APIRouter(tags=["procedures"])


@router.get("/procedures")
def catalogue(settings: SettingsDep) -> list[dict[str, Any]]:
    """Every procedure with its rule-set versions, application form and task forms (public)."""
    return [
        {
            "procedure": name,
            **meta,
            "rulesets": [
                r.model_dump(mode="json")
                for r in list_rulesets(name, settings.ruleset_override_dir)
            ],
            "application_schema": WorkPermitApplication.model_json_schema(),
            "task_forms": {kind.value: model.model_json_schema() for kind, model in FORMS.items()},
        }
        for name, meta in PROCEDURES.items()
    ]
