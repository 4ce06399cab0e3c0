"""Bearer tokens: who calls, with which role and scope. Development tokens are minted with
`casework token ...`; production puts the same claims in tokens from the state IdP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from api.errors import Problem
from casework.contracts import Actor, Role
from casework.settings import Settings, get_settings

bearer = HTTPBearer(auto_error=False, description="JWT with role and scope claims")


def mint_token(actor: Actor, settings: Settings, ttl: timedelta = timedelta(hours=12)) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": actor.user_id,
        "role": actor.role.value,
        "region": actor.region.value if actor.region else None,
        "consulate": actor.consulate,
        "party": actor.party,
        "name": actor.name,
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def actor_from_token(token: str, settings: Settings) -> Actor:
    try:
        claims = jwt.decode(
            token, settings.jwt_secret, algorithms=["HS256"], issuer=settings.jwt_issuer
        )
        actor = Actor(
            user_id=claims["sub"],
            role=claims["role"],
            region=claims.get("region"),
            consulate=claims.get("consulate"),
            party=claims.get("party"),
            name=claims.get("name"),
        )
    except (jwt.PyJWTError, KeyError, ValidationError) as exc:
        raise Problem(
            401, "Unauthorized", f"invalid token: {exc}", headers={"WWW-Authenticate": "Bearer"}
        ) from None
    if actor.role == Role.system:
        raise Problem(401, "Unauthorized", "system tokens are not accepted by the API")
    if actor.role == Role.employer and not actor.party:
        raise Problem(401, "Unauthorized", "an employer token must name its party (BIN)")
    if actor.role == Role.caseworker and not actor.region:
        raise Problem(401, "Unauthorized", "a caseworker token must name its region")
    if actor.role == Role.consulate_officer and not actor.consulate:
        raise Problem(401, "Unauthorized", "a consulate token must name its mission")
    return actor


def current_actor(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    if creds is None:
        raise Problem(
            401,
            "Unauthorized",
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    settings: Settings = getattr(request.app.state, "settings", None) or get_settings()
    return actor_from_token(creds.credentials, settings)


CurrentActor = Annotated[Actor, Depends(current_actor)]
