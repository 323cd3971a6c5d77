"""Every operation of the app's own /openapi.json under /api/v1, sent wrong-shaped input by
Hypothesis (wrong types, huge numbers, huge strings, NUL, lone surrogates, unicode, nested
junk, missing fields, undecodable bodies) as the administrator, on a live server (SQLite):
never a 5xx, and every error body has the documented shape (422: `detail` entries naming
each field by its location; 409: `rule`)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import LiveApi

EXAMPLES_PER_OPERATION = int(os.environ.get("VOIPCLOUD_FUZZ_EXAMPLES", "15"))
# would sign the fuzzing administrator out
SKIPPED = {("delete", "/api/v1/auth/token"), ("post", "/api/v1/auth/logout-all")}
LOCATIONS = {"body", "path", "query", "header", "cookie"}

# JSON strings never hold '/': no generated body can name a real directory or endpoint URL
NASTY = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff\ud800",
    "x" * 70_000,
    "\u00e9" * 5_000,
    "\U0001f4de" * 300,
    "\u202e\ufeff",
    "..",
    "%00",
    "null",
    "1e999",
    "-0",
    "NaN",
]
NASTY_WITH_SLASHES = ["10.0.0.1/33", "::1/129", "a/b", "//", "../../etc", "http://[", "/"]
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1, 10**100]),
    st.floats(allow_nan=False, allow_infinity=False),
)


@dataclass(frozen=True)
class Vocabulary:
    """Strings and nested junk. The storage configuration gets strings without '/', so no
    generated body can name a real directory (written by the probe) or an endpoint URL."""

    text: Any
    junk: Any

    @classmethod
    def of(cls, *, slashes: bool) -> Vocabulary:
        alphabet = st.characters() if slashes else st.characters(blacklist_characters="/")
        nasty = st.sampled_from(NASTY + (NASTY_WITH_SLASHES if slashes else []))
        text = st.one_of(st.text(alphabet=alphabet, max_size=40), nasty)
        scalars = st.one_of(st.none(), st.booleans(), NUMBERS, text)
        junk = st.recursive(
            scalars,
            lambda children: (
                st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4)
            ),
            max_leaves=8,
        )
        return cls(text=text, junk=junk)


FULL = Vocabulary.of(slashes=True)
SAFE = Vocabulary.of(slashes=False)
RAW_BODIES = st.sampled_from(
    [
        b"",
        b"{",
        b"\xff\xfe\x00",
        b"[" * 5_000 + b"]" * 5_000,
        b'{"a": NaN}',
        b'{"a": 1e999999}',
        b'"' + b"x" * 200_000 + b'"',
        b"\x00",
    ]
)


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def plausible(
    spec: dict[str, Any], schema: dict[str, Any], words: Vocabulary, depth: int = 0
) -> Any:
    """Values of roughly the declared shape, so other fields pass and one fails deeper."""
    schema = resolve(spec, schema)
    if depth > 3:
        return words.junk
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return st.one_of([plausible(spec, o, words, depth + 1) for o in options])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return shaped_object(spec, schema, words, depth + 1)
    if kind == "array":
        return st.lists(plausible(spec, schema.get("items", {}), words, depth + 1), max_size=3)
    return {
        "string": words.text,
        "integer": NUMBERS,
        "number": NUMBERS,
        "boolean": st.booleans(),
        "null": st.none(),
    }.get(kind, words.junk)


def shaped_object(
    spec: dict[str, Any], schema: dict[str, Any], words: Vocabulary, depth: int = 0
) -> Any:
    """Some of the declared fields (any may be missing), each plausible or junk."""
    properties = schema.get("properties", {})
    if not properties:
        return st.dictionaries(words.text, words.junk, max_size=4)
    return st.fixed_dictionaries(
        {},
        optional={
            name: st.one_of(plausible(spec, field, words, depth), words.junk)
            for name, field in properties.items()
        },
    )


def path_value(spec: dict[str, Any], parameter: dict[str, Any]) -> Any:
    schema = resolve(spec, parameter.get("schema", {}))
    valid: list[str] = [str(v) for v in schema.get("enum", [])]
    if schema.get("type") == "integer":
        valid += ["1", "2"]  # the IC node, and the node the fixture adds
    elif parameter["name"] == "code":
        valid += ["sip", "web", "pbx"]
    elif parameter["name"] == "key":
        valid += ["1001/a.wav"]
    junk = st.one_of(
        NUMBERS.map(str),
        st.text(min_size=1, max_size=40).filter(
            lambda s: not any(0xD800 <= ord(c) < 0xE000 for c in s)
        ),
        st.sampled_from(["%00", "x" * 5_000, "\u00e9t\u00e9", "..", "-1", "1.5", "0x10", "1e3"]),
    )
    return st.one_of(st.sampled_from(valid), junk) if valid else junk


def query_value() -> Any:
    return st.one_of(
        NUMBERS.map(str),
        st.text(max_size=40).filter(lambda s: not any(0xD800 <= ord(c) < 0xE000 for c in s)),
        st.sampled_from(["", "\x00", "x" * 5_000, "true", "-1", "999999999999999999999"]),
    )


HEADER_BYTES = st.binary(max_size=80).map(  # what HTTP lets a client send in a header
    lambda b: bytes(c for c in b if c == 0x09 or 0x20 <= c != 0x7F).strip(b" \t")
)


def request_strategy(spec: dict[str, Any], path: str, operation: dict[str, Any]) -> Any:
    path_params = {}
    query: dict[str, Any] = {}
    headers: dict[str, Any] = {}
    for parameter in operation.get("parameters", []):
        name, where = parameter["name"], parameter["in"]
        if where == "path":
            path_params[name] = path_value(spec, parameter)
        elif where == "query":
            query[name] = query_value()
        elif where == "header":
            headers[name] = HEADER_BYTES
    words = SAFE if path.startswith("/api/v1/storage") else FULL
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        schema = resolve(spec, content["application/json"].get("schema", {}))
        body: Any = st.one_of(
            shaped_object(spec, schema, words).map(lambda v: ("json", v)),
            words.junk.map(lambda v: ("json", v)),
            RAW_BODIES.map(lambda v: ("raw", v)),
            st.just(("none", None)),
        )
    elif content:
        body = st.binary(max_size=200).map(lambda v: ("raw", v))
    else:
        body = st.one_of(st.just(("none", None)), words.junk.map(lambda v: ("json", v)))
    return st.fixed_dictionaries(
        {"path": st.fixed_dictionaries(path_params), "body": body},
        optional={
            "query": st.fixed_dictionaries({}, optional=query),
            "headers": st.fixed_dictionaries({}, optional=headers),
        },
    )


def send(client: httpx.Client, method: str, template: str, case: dict[str, Any]) -> httpx.Response:
    url = template
    for name, value in case["path"].items():
        safe = "/" if name == "key" else ""
        url = url.replace("{" + name + "}", quote(value, safe=safe) or "%20")
    kind, payload = case["body"]
    headers = dict(case.get("headers", {}))
    if kind == "json":
        text = json.dumps(payload)  # lone surrogates escaped, as any JSON encoder may send
        headers.setdefault("content-type", b"application/json")
        return client.request(
            method, url, params=case.get("query"), content=text.encode(), headers=headers
        )
    if kind == "raw":
        headers.setdefault("content-type", b"application/json")
        return client.request(
            method, url, params=case.get("query"), content=payload, headers=headers
        )
    return client.request(method, url, params=case.get("query"), headers=headers)


def check_answer(answer: httpx.Response, what: str, fields: frozenset[str] = frozenset()) -> None:
    """`fields`: the body's top-level fields (kept for callers; every location starts with
    where the value came from: body, query, path or header)."""
    assert answer.status_code < 500, f"{what} -> {answer.status_code}: {answer.text[:500]}"
    if answer.status_code < 400 or "json" not in answer.headers.get("content-type", ""):
        return
    body = answer.json()
    assert "detail" in body, f"{what} -> {answer.status_code} without detail: {body}"
    if answer.status_code == 422:
        assert isinstance(body["detail"], list), f"{what} -> {body}"
        assert body["detail"], f"{what} -> {body}"
        for entry in body["detail"]:
            assert isinstance(entry.get("msg"), str), f"{what} -> {body}"
            loc = entry.get("loc")
            assert isinstance(loc, list), f"{what} -> {body}"
            assert loc, f"{what} -> {body}"
            assert loc[0] in LOCATIONS, f"{what} -> {body}"
            assert all(isinstance(part, str | int) for part in loc), f"{what} -> {body}"
    elif answer.status_code == 409:
        assert isinstance(body.get("rule"), str), f"{what} -> {body}"
        assert body["rule"], f"{what} -> {body}"
        assert isinstance(body["detail"], str), f"{what} -> {body}"


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in spec["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in methods.items():
            if (method, path) not in SKIPPED:
                yield method, path, operation


@pytest.fixture
def fuzz_api(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, database_url: str
) -> LiveApi:
    # any S3 call a generated configuration could make goes to a closed loopback port
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("VOIPCLOUD_STORAGE_TIMEOUT", "0.5")
    live: LiveApi = request.getfixturevalue("api")
    return live


# SQLite for speed; VOIPCLOUD_FUZZ_DATABASES=sqlite,postgresql for both
DATABASES = os.environ.get("VOIPCLOUD_FUZZ_DATABASES", "sqlite").split(",")


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_no_operation_answers_wrong_input_with_a_server_error(fuzz_api: LiveApi) -> None:
    client = fuzz_api.client
    spec = client.get("/openapi.json").json()
    created = client.post(
        "/api/v1/nodes",
        json={"hostname": "fuzz-target", "private_ip": "10.9.8.7", "public_ip": "203.0.113.9"},
    )
    assert created.status_code in {200, 201}, created.text
    ops = list(operations(spec))
    assert len(ops) >= 30, [f"{m} {p}" for m, p, _ in ops]
    failures = []
    seen: Counter[int] = Counter()
    for method, path, operation in ops:
        try:
            fuzzer(client, spec, method, path, operation, seen)()
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    assert not failures, "\n".join(failures)
    assert seen[422] > len(ops) * 2, seen  # the input reached the validation, widely
    assert sum(n for status, n in seen.items() if status < 300) > 0, seen

    for url, field in REGRESSIONS:  # 500s the fuzzing found once
        answer = client.get(url)
        check_answer(answer, url)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == field


REGRESSIONS = [
    # an offset past SQLite's 64-bit integers: OverflowError, 500
    (f"/api/v1/storage/faxes/resources?offset={10**40}", ["query", "offset"]),
]


def fuzzer(
    client: httpx.Client,
    spec: dict[str, Any],
    method: str,
    path: str,
    operation: dict[str, Any],
    seen: Counter[int],
) -> Any:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    fields = frozenset(resolve(spec, content.get("schema", {})).get("properties", {}))

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=not os.environ.get("VOIPCLOUD_FUZZ_RANDOM"),
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=request_strategy(spec, path, operation))
    def fuzz(case: dict[str, Any]) -> None:
        what = f"{method.upper()} {path} {str(case)[:300]}"
        try:
            answer = send(client, method.upper(), path, case)
        except httpx.TransportError as exc:  # the server dropped the request: a crash
            raise AssertionError(f"{what} -> {type(exc).__name__}: {exc}") from None
        seen[answer.status_code] += 1
        check_answer(answer, what, fields)

    return fuzz
