"""Custom search attributes: procedure, region, status, SLA state, deadline. No personal data."""

from typing import TYPE_CHECKING, Any

from temporalio.common import SearchAttributeKey

if TYPE_CHECKING:
    from temporalio.client import Client

CASE_PROCEDURE = SearchAttributeKey.for_keyword("CaseProcedure")
CASE_REGION = SearchAttributeKey.for_keyword("CaseRegion")
CASE_STATUS = SearchAttributeKey.for_keyword("CaseStatus")
SLA_STATE = SearchAttributeKey.for_keyword("SlaState")
SLA_DEADLINE = SearchAttributeKey.for_datetime("SlaDeadline")

ALL_KEYS: list[SearchAttributeKey[Any]] = [
    CASE_PROCEDURE,
    CASE_REGION,
    CASE_STATUS,
    SLA_STATE,
    SLA_DEADLINE,
]


def cli_flags() -> list[str]:
    """`--search-attribute` flags for `temporal server start-dev`."""
    kinds = {"KEYWORD": "Keyword", "DATETIME": "Datetime"}
    return [
        f"--search-attribute={k.name}={kinds[k.indexed_value_type.name.removeprefix('INDEXED_VALUE_TYPE_')]}"
        for k in ALL_KEYS
    ]


async def register(client: "Client") -> None:
    """Register the attributes on a server that lacks them (test server, fresh namespaces)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    have = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {
        k.name: IndexedValueType.ValueType(k.indexed_value_type)
        for k in ALL_KEYS
        if k.name not in have.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
