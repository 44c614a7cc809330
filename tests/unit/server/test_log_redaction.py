"""--log-content keeps prompts and answers in the request log, never a player's recording."""

from __future__ import annotations

import json

from ocak.server.request_log import _request_content

RECORDING = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAACABAAZGF0YQAAAAA=" * 40


def test_recordings_are_named_not_logged() -> None:
    message = json.dumps({"audio": {"data": RECORDING}, "voice": True}).encode()
    logged = _request_content(message, b"application/json")
    assert logged == {"audio": "[a recording: not logged]", "voice": True}
    big = json.dumps({"audio": {"data": RECORDING * 20}}).encode()  # past the capture limit
    assert RECORDING[:40] not in str(_request_content(big[: 16 * 1024], b"application/json"))
    upload = b"--x\r\nContent-Disposition: form-data; name=file\r\n\r\nRIFF....\r\n--x--"
    assert "RIFF" not in str(_request_content(upload, b"multipart/form-data; boundary=x"))


def test_other_requests_are_logged_as_sent() -> None:
    chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    assert _request_content(json.dumps(chat).encode(), b"application/json") == chat
