"""Starting a case does not rebuild data models: the workflow sandbox imports a
procedure's module afresh for every new case and every replay, so a pydantic model
defined there has its schema built again each time (8 % of a worker's CPU while cases
were being started). Models live in passed-through modules (`casework.contracts`)."""

from __future__ import annotations

import importlib
import inspect

import pytest
from pydantic import BaseModel

from casework.runtime import WORKFLOWS


@pytest.mark.parametrize("module_name", sorted({w.__module__ for w in WORKFLOWS}))
def test_procedure_modules_define_no_pydantic_models(module_name: str) -> None:
    module = importlib.import_module(module_name)
    defined_here = [
        name
        for name, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseModel) and obj.__module__ == module_name
    ]
    assert defined_here == [], f"move {defined_here} to casework.contracts"
