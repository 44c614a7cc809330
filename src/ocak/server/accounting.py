"""The usage record sink: one row per model request, committed before the response ends
(with ``store_content``, its request and answer beside it: content.py)."""

from __future__ import annotations

from ocak.protocol.record import RequestRecord
from ocak.server.auth import Authenticator
from ocak.server.content import ContentKeeper
from ocak.store.db import Store
from ocak.store.usage import UsageRow, insert_usage


def usage_row(record: RequestRecord) -> UsageRow:
    ttft = record.ttft
    return UsageRow(
        ts=record.started_at,
        request_id=record.request_id,
        key_id=record.key_id,
        key_name=record.key_name,
        model=record.model,
        backend=record.backend,
        locality=record.locality,
        stream=record.stream,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        ttft_ms=None if ttft is None else round(ttft * 1000, 3),
        total_ms=round(record.duration * 1000, 3),
        status=record.status,
        http_status=record.http_status,
        error_code=record.error_code,
        finish_reason=record.finish_reason,
        prompt=record.prompt,
    )


class Accounting:
    """Record sink: store the usage row (when there is a store), and the request's content
    when ``content`` keeps it, and charge the key's limits."""

    def __init__(
        self, db: Store | None, auth: Authenticator, content: ContentKeeper | None = None
    ) -> None:
        self.db = db
        self.auth = auth
        self.content = content

    def __call__(self, record: RequestRecord) -> None:
        if not record.is_api:
            return
        try:
            if self.db is not None:
                usage_id = insert_usage(self.db, usage_row(record))
                if self.content is not None and record.exchange is not None:
                    self.content.keep(usage_id, record)
        finally:
            self.auth.charge(record)
