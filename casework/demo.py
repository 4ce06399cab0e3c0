"""Demo reference data: the 2026 quota pools, so a fresh installation has something to allocate.

National figures come from the domain reference (sections 1 and 3). The work-permit
quota is published per category for the whole country; the regional split below is a
demo approximation, not the Government's distribution.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.engine import Engine

from activities.quota import ensure_quota
from casework.regions import Region

# Categories 1-4 and seasonal (0.25 % of the labour force). ICT transfers are outside
# the quota and have no pool.
WORK_PERMIT_QUOTA_2026: dict[str, int] = {
    "1": 726,
    "2": 3402,
    "3": 5893,
    "4": 3131,
    "seasonal": 4994,
}

# Settlement regions only (north and east): 2,281 kandas + 5,997 resettlers = 8,278.
KANDAS_QUOTA_2026: dict[str, int] = {
    Region.pavlodar.value: 977,
    Region.akmola.value: 285,
    Region.abai.value: 264,
    Region.east_kazakhstan.value: 200,
    Region.north_kazakhstan.value: 200,
    Region.kostanay.value: 200,
    Region.atyrau.value: 125,
    Region.west_kazakhstan.value: 30,
}

RESETTLER_QUOTA_2026: dict[str, int] = {
    Region.north_kazakhstan.value: 2820,
    Region.pavlodar.value: 1655,
    Region.east_kazakhstan.value: 600,
    Region.kostanay.value: 485,
    Region.abai.value: 275,
    Region.ulytau.value: 125,
    Region.karaganda.value: 37,
}

# Labour force in thousands, rounded from recent official statistics and deliberately
# coarse: the demo only needs plausible proportions. Almaty city and Astana are nudged
# to the top because that is where most foreign hires are placed, even though Turkistan's
# labour force is about Astana's size. Every region gets a share so that no demo pool is
# empty. The same weights split every category, seasonal included (real seasonal demand
# leans further to the agricultural south).
REGION_WEIGHTS: dict[str, int] = {
    Region.almaty_city.value: 1100,
    Region.astana.value: 850,
    Region.turkistan.value: 800,
    Region.almaty_region.value: 700,
    Region.karaganda.value: 600,
    Region.zhambyl.value: 500,
    Region.shymkent.value: 500,
    Region.aktobe.value: 450,
    Region.kostanay.value: 420,
    Region.akmola.value: 390,
    Region.pavlodar.value: 390,
    Region.east_kazakhstan.value: 370,
    Region.mangystau.value: 350,
    Region.kyzylorda.value: 340,
    Region.atyrau.value: 330,
    Region.west_kazakhstan.value: 320,
    Region.zhetisu.value: 320,
    Region.abai.value: 290,
    Region.north_kazakhstan.value: 270,
    Region.ulytau.value: 110,
}


def split_national_quota(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder); sums exactly to ``total``.

    Integer arithmetic throughout, so the result does not depend on float rounding.
    Ties for a leftover unit go to the larger weight, then to the key that sorts first,
    so the split is deterministic.
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if any(w < 0 for w in weights.values()):
        raise ValueError("weights must be >= 0")
    weight_sum = sum(weights.values())
    if weight_sum == 0:
        if total == 0:
            return dict.fromkeys(weights, 0)
        raise ValueError("cannot split a positive total over zero weights")
    shares = {key: divmod(total * w, weight_sum) for key, w in weights.items()}
    result = {key: whole for key, (whole, _) in shares.items()}
    leftover = total - sum(result.values())
    by_remainder = sorted(weights, key=lambda key: (-shares[key][1], -weights[key], key))
    for key in by_remainder[:leftover]:
        result[key] += 1
    return result


def demo_pools() -> list[tuple[str, str, str, int]]:
    """(kind, region, category, limit) for every demo pool, 2026 figures."""
    pools: list[tuple[str, str, str, int]] = []
    for category, total in WORK_PERMIT_QUOTA_2026.items():
        for region, limit in split_national_quota(total, REGION_WEIGHTS).items():
            pools.append(("work_permit", region, category, limit))
    pools += [("kandas", region, "kandas", limit) for region, limit in KANDAS_QUOTA_2026.items()]
    pools += [
        ("resettler", region, "resettler", limit) for region, limit in RESETTLER_QUOTA_2026.items()
    ]
    return pools


def load_demo_quotas(engine: Engine, year: int = 2026) -> int:
    """Create or reset the limits of every demo pool for ``year``; returns the pool count.

    Idempotent: running it again only rewrites limits, never what is reserved or used.
    Other years get the 2026 figures, which is what a demo needs.
    """
    pools = demo_pools()
    for kind, region, category, limit in pools:
        ensure_quota(engine, kind, region, category, year, limit)
    return len(pools)
