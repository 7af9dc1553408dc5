"""The job parameters over HTTP: GET /api/parameters serves the engine's one definition, the
OpenAPI schema shows it (types, defaults, ranges, choices, help), and a value out of its range
gets a 422 that names the parameter."""

from __future__ import annotations

import pytest
from support.api import upload

from worker.engine.config import AUTO, PARAMETERS


def test_parameters_endpoint_serves_the_definition(sqlite_api):
    with sqlite_api.client() as client:
        served = client.get("/api/parameters").json()
    assert served == [p.to_json() for p in PARAMETERS]
    by_name = {p["name"]: p for p in served}
    assert by_name["phase_flip"]["default"] is None and "reference" in by_name["phase_flip"]["auto"]
    assert by_name["method"]["choices"] and by_name["method"]["default"] in by_name["method"]["choices"]


def test_openapi_shows_types_defaults_ranges_choices_and_help(sqlite_api):
    with sqlite_api.client() as client:
        spec = client.get("/openapi.json").json()
    properties = spec["components"]["schemas"]["JobCreate"]["properties"]
    types = {int: "integer", float: "number", str: "string", bool: "boolean"}
    for p in PARAMETERS:
        field = properties[p.name]
        assert field.get("default") == p.default and field["title"] == p.label, p.name  # null is left out
        assert field.get("x-auto") == p.auto, p.name
        assert field["description"].startswith(p.help), p.name
        kinds = [v.get("type") for v in field.get("anyOf", [field])]
        assert types[p.kind] in kinds and (("null" in kinds) == (p.default is AUTO)), p.name
        choices = next((v["enum"] for v in field.get("anyOf", [field]) if "enum" in v), None)
        assert choices == (list(p.choices) if p.choices else None), p.name
        if p.minimum is not None:
            assert field["minimum"] == p.minimum and field["maximum"] == p.maximum, p.name
    assert properties["size"]["multipleOf"] == 2 and properties["learning_rate"]["exclusiveMinimum"] == 0
    assert "/api/parameters" in spec["paths"]


def _out_of_range(p) -> list:
    bad = []
    if p.minimum is not None:
        bad.append(p.minimum - 1)
    if p.maximum is not None:
        bad.append(p.maximum + 1)
    if p.above is not None:
        bad.append(p.above)
    if p.choices:
        bad.append("nonsense")
    if p.pattern:
        bad.append("nonsense")
    if p.kind is bool:
        bad.append("maybe")
    return bad


CASES = [(p.name, value) for p in PARAMETERS for value in _out_of_range(p)]


@pytest.mark.parametrize("name, value", CASES, ids=[f"{n}={v}" for n, v in CASES])
def test_out_of_range_values_get_422_naming_the_parameter(sqlite_api, stack_file, name, value):
    with sqlite_api.client() as client:
        dataset_id = upload(client, stack_file).json()["id"]
        response = client.post("/api/jobs", json={"dataset_id": dataset_id, name: value})
        assert response.status_code == 422, response.text
        assert [error["loc"] for error in response.json()["detail"]] == [["body", name]]
        assert client.get("/api/jobs").json() == []
