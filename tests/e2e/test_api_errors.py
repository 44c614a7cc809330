"""Every error is OpenAI-shaped JSON with the right status; nothing is truncated silently."""

from __future__ import annotations

import httpx
import openai
import pytest

from helpers import ServerProcess

MSG = [{"role": "user", "content": "hi"}]


def post(server: ServerProcess, path: str, body: object, **kw: object) -> httpx.Response:
    if isinstance(body, str | bytes):
        return httpx.post(f"{server.url}{path}", content=body, timeout=60, **kw)  # type: ignore[arg-type]
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kw)  # type: ignore[arg-type]


def error_of(r: httpx.Response) -> dict[str, object]:
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in r.text
    return err  # type: ignore[no-any-return]


def test_context_overflow_is_400_with_both_numbers(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="default", messages=MSG, max_tokens=5000)  # type: ignore[arg-type]
    err = info.value.body
    assert isinstance(err, dict)
    assert err["code"] == "context_length_exceeded"
    assert "1024" in err["message"] and "5000" in err["message"]


def test_prompt_over_the_window_is_refused_not_truncated(client: openai.OpenAI) -> None:
    long = "word " * 1500
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": long}]
        )
    assert info.value.code == "context_length_exceeded"


def test_context_overflow_when_streaming_is_still_a_400(server: ServerProcess) -> None:
    r = post(
        server,
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "max_tokens": 5000, "stream": True},
    )
    assert r.status_code == 400
    assert error_of(r)["code"] == "context_length_exceeded"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-17", messages=MSG)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"model": "default", "messages": [', None),
        ("not json at all", None),
        ("[1, 2, 3]", None),
        ({"model": "default"}, "messages"),
        ({"model": "default", "messages": []}, "messages"),
        ({"model": "default", "messages": "hi"}, "messages"),
        (
            {"model": "default", "messages": [{"role": "wizard", "content": "x"}]},
            "messages.[0].role",
        ),
        ({"messages": MSG}, "model"),
        ({"model": 42, "messages": MSG}, "model"),
        ({"model": "default", "messages": MSG, "temperature": "hot"}, "temperature"),
        ({"model": "default", "messages": MSG, "temperature": 9}, "temperature"),
        ({"model": "default", "messages": MSG, "max_tokens": 0}, "max_tokens"),
        ({"model": "default", "messages": MSG, "max_tokens": -5}, "max_tokens"),
        ({"model": "default", "messages": MSG, "top_p": 1.5}, "top_p"),
        ({"model": "default", "messages": MSG, "stop": [""]}, "stop"),
        ({"model": "default", "messages": MSG, "stream": "yes please"}, "stream"),
    ],
)
def test_bad_bodies_are_400_naming_the_parameter(
    server: ServerProcess, body: object, param: str | None
) -> None:
    r = post(server, "/v1/chat/completions", body)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"functions": [{"name": "f"}]}, "functions"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "messages.[0].content.[0].type",
        ),
    ],
)
def test_unsupported_openai_parameters_are_refused_by_name(
    server: ServerProcess, extra: dict[str, object], param: str
) -> None:
    body = {"model": "default", "messages": MSG, **extra}
    r = post(server, "/v1/chat/completions", body)
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param


@pytest.mark.engines("ctranslate2")
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"},
            "tools",
        ),
    ],
)
def test_engines_without_constrained_decoding_refuse_structured_output(
    server: ServerProcess, engine: str, extra: dict[str, object], param: str
) -> None:
    r = post(server, "/v1/chat/completions", {"model": "default", "messages": MSG, **extra})
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param


def test_neutral_values_of_unsupported_parameters_are_accepted(server: ServerProcess) -> None:
    body = {"model": "default", "messages": MSG, "max_tokens": 2, "n": 1, "logprobs": False}
    assert post(server, "/v1/chat/completions", body).status_code == 200


def test_curl_style_body_without_content_type_works(server: ServerProcess) -> None:
    r = post(
        server,
        "/v1/chat/completions",
        b'{"model":"default","messages":[{"role":"user","content":"hi"}],"max_tokens":3}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text


def test_unknown_route_and_wrong_method_are_json_errors(server: ServerProcess) -> None:
    r = httpx.get(f"{server.url}/v1/nothing-here")
    assert r.status_code == 404
    error_of(r)
    r = httpx.get(f"{server.url}/v1/chat/completions")
    assert r.status_code == 405
    error_of(r)


def test_completions_refuse_echo_and_prompt_lists(server: ServerProcess) -> None:
    r = post(server, "/v1/completions", {"model": "default", "prompt": "x", "echo": True})
    assert r.status_code == 400 and error_of(r)["param"] == "echo"
    r = post(server, "/v1/completions", {"model": "default", "prompt": ["a", "b"]})
    assert r.status_code == 400 and error_of(r)["param"] == "prompt"
