"""The OpenAPI document and the problem catalogue, checked against the code."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from openapi_spec_validator import validate

from app import create_app
from app.openapi import openapi_path
from app.problems import PROBLEM_TYPES
from app.schemas import MODELS

APP_DIR = Path(__file__).resolve().parent.parent / "app"
RAISED_SLUG = re.compile(r'(?:RequestError|problem)\(\s*\d{3},\s*"([a-z-]+)"', re.S)


@pytest.fixture
def document(settings):
    app = create_app(settings)
    return app, app.config["TASKGATE_OPENAPI"]


def test_every_route_and_method_is_in_the_document(document):
    app, raw = document
    spec = orjson.loads(raw)
    assert spec["openapi"] == "3.1.0"
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = openapi_path(rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = spec["paths"][path][method.lower()]
            assert operation["responses"], (path, method)
            for name in re.findall(r"{([a-z_]+)}", path):
                declared = [p["name"] for p in operation.get("parameters", [])]
                assert name in declared, (path, method, name)


def test_every_problem_type_raised_in_the_code_is_catalogued():
    used = set()
    for source in APP_DIR.glob("*.py"):
        used |= set(RAISED_SLUG.findall(source.read_text()))
    used |= {"invalid-wait", "invalid-time-limit", "service-unavailable", "queue-full"}
    assert used <= set(PROBLEM_TYPES)
    assert len(used) > 10


def test_the_schemas_are_in_the_document(document):
    spec = orjson.loads(document[1])
    for model in MODELS:
        assert model.__name__ in spec["components"]["schemas"]
    problem_types = spec["components"]["schemas"]["Problem"]["properties"]["type"]
    assert "/problems/task-failed" in problem_types["enum"]
    assert set(spec["x-problem-types"]) == {f"/problems/{s}" for s in PROBLEM_TYPES}


@pytest.mark.parametrize("api_keys", ["", "a-key-of-twenty-chars"])
def test_the_document_is_valid_openapi_3_1(settings, api_keys):
    app = create_app(settings.model_copy(update={"api_keys": api_keys}))
    validate(orjson.loads(app.config["TASKGATE_OPENAPI"]))


def test_every_answer_documents_its_headers(document):
    spec = orjson.loads(document[1])
    for item in spec["paths"].values():
        for operation in item.values():
            assert "X-Request-ID" in [p["name"] for p in operation["parameters"]]
            for status, response in operation["responses"].items():
                headers = response["headers"]
                assert headers["X-Request-ID"]["required"] is True
                expected = {"401": "WWW-Authenticate", "405": "Allow"}
                expected["503"] = "Retry-After"
                if status in expected:
                    assert headers[expected[status]]["required"] is True
