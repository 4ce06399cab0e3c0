"""Versioned rule sets: terms, fees, thresholds, refusal grounds, quota keys, SLA points.

Rule sets are data (`rulesets/<procedure>/<effective_from>.json`). A case records the
version it started under and keeps it for life. An operator may put override rule sets in
`CASEWORK_RULESET_OVERRIDE_DIR` (e.g. terms in minutes for an SLA drill); an override is
used only when a case asks for its version explicitly.
"""

from __future__ import annotations

import json
import time
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from casework.kandas import KandasRules

from casework.contracts import BreachAction, GroundRef, PermitCategory, Staffing, Term

RULESET_DIR = Path(__file__).parent / "rulesets"


class ClockRule(BaseModel):
    term: Term
    warn_fraction: float = Field(default=0.7, gt=0, lt=1)
    on_breach: BreachAction = BreachAction.escalate


class RefusalGround(BaseModel):
    code: str
    rule_ref: str
    text_kk: str
    text_ru: str
    text_en: str

    def ref(self) -> GroundRef:
        return GroundRef(
            code=self.code, rule_ref=self.rule_ref, text_kk=self.text_kk, text_ru=self.text_ru
        )


class Validity(BaseModel):
    months: int
    max_months: int | None = None
    extendable: bool = False


class LocalContent(BaseModel):
    min_citizen_share_cat_1_2: float = 0.70
    min_citizen_share_cat_3_4: float = 0.90
    max_ict_share_of_citizens: float = 0.50
    small_branch_max_staff: int = 10

    def check(self, category: PermitCategory, staffing: Staffing) -> LocalContentResult:
        """The local-content rule in kadry, counting the requested worker as one more foreigner."""
        if staffing.is_branch and staffing.total_staff <= self.small_branch_max_staff:
            return LocalContentResult(
                ok=True,
                rule="small_branch_exempt",
                detail=f"branch with {staffing.total_staff} staff (<= {self.small_branch_max_staff}): exempt",
            )
        citizens = staffing.citizens_in_category
        foreigners = staffing.foreigners_in_category + 1
        if category == PermitCategory.ict:
            limit = self.max_ict_share_of_citizens * citizens
            ok = foreigners <= limit
            return LocalContentResult(
                ok=ok,
                rule="ict_share",
                share=round(foreigners / citizens, 4) if citizens else None,
                threshold=self.max_ict_share_of_citizens,
                detail=f"ICT transferees {foreigners} vs {citizens} citizens in the category (max {self.max_ict_share_of_citizens:.0%})",
            )
        if category in (PermitCategory.heads, PermitCategory.unit_heads):
            threshold = self.min_citizen_share_cat_1_2
        elif category in (PermitCategory.specialists, PermitCategory.skilled_workers):
            threshold = self.min_citizen_share_cat_3_4
        else:
            return LocalContentResult(
                ok=True, rule="not_applicable", detail="seasonal work: no local-content share"
            )
        share = citizens / (citizens + foreigners)
        return LocalContentResult(
            ok=share >= threshold,
            rule="citizen_share",
            share=round(share, 4),
            threshold=threshold,
            detail=f"citizens {citizens} of {citizens + foreigners} in the category = {share:.1%} (min {threshold:.0%})",
        )


class LocalContentResult(BaseModel):
    ok: bool
    rule: str
    detail: str
    share: float | None = None
    threshold: float | None = None


class Authority(BaseModel):
    name_kk: str
    name_ru: str


class WorkPermitRules(BaseModel):
    procedure: str = "work_permit"
    version: str
    effective_from: date
    source: str
    mci_kzt: int
    quota_year: int
    clocks: dict[str, ClockRule]
    refusal_grounds: list[RefusalGround]
    fee_mci: dict[PermitCategory, int]
    seasonal_fee_mci: dict[int, int]
    validity: dict[PermitCategory, Validity]
    local_content: LocalContent
    vacancy_min_posting_days: int = 15
    appeal_term: Term
    appeal_route_kk: str
    appeal_route_ru: str
    authority: Authority
    quota_exempt: list[PermitCategory] = [PermitCategory.ict]

    def ground(self, code: str) -> RefusalGround:
        for g in self.refusal_grounds:
            if g.code == code:
                return g
        raise KeyError(code)

    def ground_codes(self) -> set[str]:
        return {g.code for g in self.refusal_grounds}

    def fee_kzt(self, category: PermitCategory, seasonal_days: int | None) -> int:
        if category == PermitCategory.seasonal:
            return self.seasonal_fee_mci[seasonal_days or 90] * self.mci_kzt
        return self.fee_mci[category] * self.mci_kzt


class RulesetInfo(BaseModel):
    procedure: str
    version: str
    effective_from: date
    source: str
    override: bool = False


def _files(procedure: str, override_dir: Path | None) -> list[tuple[Path, bool]]:
    found = [(p, False) for p in _listing(RULESET_DIR / procedure)]
    if override_dir:
        found += [(p, True) for p in _listing(override_dir / procedure)]
    return found


# Folder -> (its modification time, when it was listed, its rule-set files): every case
# start looks the rule sets up, and listing a folder costs far more than one stat of it. A
# file added, removed or renamed changes the folder's time; a file rewritten in place keeps
# its name, and `_load` is keyed by the file's own time. File times are coarse (a few ms),
# so a listing is reused only if the folder had not changed for a second when it was taken:
# a later change then surely shows as a new time.
_listings: dict[Path, tuple[int, int, list[Path]]] = {}
_SETTLED_NS = 1_000_000_000


def _listing(folder: Path) -> list[Path]:
    try:
        mtime = folder.stat().st_mtime_ns
    except FileNotFoundError:
        return []
    cached = _listings.get(folder)
    if cached is not None and cached[0] == mtime and cached[1] - mtime > _SETTLED_NS:
        return cached[2]
    listed = sorted(folder.glob("*.json"))
    _listings[folder] = (mtime, time.time_ns(), listed)
    return listed


AnyRules = Union["WorkPermitRules", "KandasRules"]


@lru_cache(maxsize=64)
def _load(path: Path, mtime: float) -> Any:
    model = RULE_MODELS[path.parent.name]
    return model.model_validate(json.loads(path.read_text(encoding="utf-8")))


def list_rulesets(procedure: str, override_dir: Path | None = None) -> list[RulesetInfo]:
    out = []
    for path, override in _files(procedure, override_dir):
        rules = _load(path, path.stat().st_mtime)
        out.append(
            RulesetInfo(
                procedure=procedure,
                version=rules.version,
                effective_from=rules.effective_from,
                source=rules.source,
                override=override,
            )
        )
    return out


def load_rules(
    procedure: str, on: date, version: str | None = None, override_dir: Path | None = None
) -> Any:
    """The rule set in force on `on` (regular sets only), or the named version."""
    candidates = []
    for path, override in _files(procedure, override_dir):
        rules = _load(path, path.stat().st_mtime)
        if version is not None:
            if rules.version == version:
                return rules
            continue
        if not override and rules.effective_from <= on:
            candidates.append(rules)
    if version is not None:
        raise LookupError(f"no rule set {procedure} {version}")
    if not candidates:
        raise LookupError(f"no rule set for {procedure} in force on {on}")
    return max(candidates, key=lambda r: r.effective_from)


def _rule_models() -> dict[str, type[BaseModel]]:
    from casework.kandas import KandasRules

    return {"work_permit": WorkPermitRules, "kandas_status": KandasRules}


class _Models(dict[str, type[BaseModel]]):
    def __missing__(self, key: str) -> type[BaseModel]:
        self.update(_rule_models())
        return self[key]


RULE_MODELS = _Models()

PROCEDURES: dict[str, dict[str, str]] = {
    "work_permit": {
        "title_en": "Permit for an employer to attract foreign labour (under the annual quota)",
        "title_ru": "Разрешение работодателю на привлечение иностранной рабочей силы",
        "title_kk": "Жұмыс берушіге шетелдік жұмыс күшін тартуға рұқсат",
        "case_prefix": "WP",
    },
    "kandas_status": {
        "title_en": "Kandas (ethnic Kazakh repatriate) status through the consulate one window",
        "title_ru": "Присвоение статуса кандаса (консульское «одно окно»)",
        "title_kk": "Қандас мәртебесін беру (консулдық «бір терезе»)",
        "case_prefix": "KS",
    },
}
