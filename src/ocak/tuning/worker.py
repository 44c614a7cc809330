"""``python -m ocak.tuning.worker SPEC.json OUT_DIR``: one tuning run in a process of its own.

A job runner starts this (``command``) so that training runs at low priority with its
own bounded threads, and a crash or a kill takes only the worker down. It reads the
``TuneSpec`` JSON, trains into ``OUT_DIR`` (put in place whole, or not at all), and
writes one JSON object per line on stdout, flushed as it goes:

- ``{"event": "started", "total_steps", "examples", "truncated", "longest",
  "hyperparameters", "estimate", "available_memory", ...}`` once the data, the base and
  the memory estimate passed;
- ``{"event": "step", "step", "total_steps", "epoch", "loss", "elapsed",
  "learning_rate", "tokens"}`` after every optimizer step;
- ``{"event": "epoch", "step", "epoch", "loss", "valid_loss", "checkpoint", ...}``;
- last, one of ``{"event": "done", "out_dir", "adapter", "record"}`` (exit 0),
  ``{"event": "error", "error": {"message", "type", "code", "param", "status"}}``
  (exit 1) or ``{"event": "cancelled", "step"}`` (exit 130).

SIGTERM or SIGINT asks the run to stop before its next step (exit 130, nothing written).
A worker that ends without a last event was killed: its job failed, and the next run
for the same ``OUT_DIR`` removes what it left. Logs go to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from ocak.errors import OcakError
from ocak.system.priority import set_priority

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 130
log = logging.getLogger("ocak.tuning")


PARENT_POLL = 1.0  # seconds between looks at whether the server still runs


def command(spec_path: Path, out_dir: Path) -> list[str]:
    """The worker's command line (this Python, this ocak)."""
    return [sys.executable, "-m", "ocak.tuning.worker", str(spec_path), str(out_dir)]


def _error_body(exc: OcakError) -> dict[str, Any]:
    error = exc.to_dict()["error"]
    body: dict[str, Any] = dict(error) if isinstance(error, dict) else {"message": exc.message}
    body["status"] = exc.status
    return body


def run(spec_path: Path, out_dir: Path, out: TextIO, stop: threading.Event) -> int:
    """Train the spec in ``spec_path`` into ``out_dir``, events to ``out``; the exit code."""

    def send(event: dict[str, Any]) -> None:
        try:
            out.write(json.dumps(event) + "\n")
            out.flush()
        except OSError:  # the server is gone (a broken pipe): nobody to tell, go on to stop
            stop.set()

    step = 0
    try:
        from ocak.tuning.spec import TuneSpec

        try:
            text = spec_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise OcakError(f"the tuning spec cannot be read: {exc}") from None
        spec = TuneSpec.from_json(text)
        log.info("tuning worker: %s", set_priority(spec.priority))
        from ocak.tuning.train import Cancelled, TuneEvent, train

        def progress(event: TuneEvent) -> None:
            nonlocal step
            step = event.step
            send(event.as_dict())

        try:
            result = train(spec, out_dir, progress, stop.is_set)
        except Cancelled:
            send({"event": "cancelled", "step": step})
            return EXIT_CANCELLED
    except OcakError as exc:
        send({"event": "error", "error": _error_body(exc)})
        return EXIT_FAILED
    except Exception as exc:  # a bug: said on stdout in one line, the trace on stderr
        log.exception("tuning worker failed")
        error = OcakError(f"training failed: {type(exc).__name__}: {exc}")
        send({"event": "error", "error": _error_body(error)})
        return EXIT_FAILED
    send({"event": "done", "out_dir": str(result.out_dir), "adapter": str(result.adapter),
          "record": result.record})  # fmt: skip
    return EXIT_OK


def _watch_parent(stop: threading.Event) -> None:
    """Stop when the process that started this one is gone (a server killed mid-job): the
    run then ends before its next step, or before its result would be put in place, and
    leaves nothing for a job the restarted server has marked failed."""
    parent = os.getppid()
    while not stop.wait(PARENT_POLL):
        if os.getppid() != parent:
            log.info("tuning worker: the server is gone; stopping")
            stop.set()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m ocak.tuning.worker SPEC.json OUT_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=_watch_parent, args=(stop,), daemon=True).start()
    events, sys.stdout = sys.stdout, sys.stderr  # whatever a library prints stays off the protocol
    return run(Path(args[0]), Path(args[1]), events, stop)


if __name__ == "__main__":
    sys.exit(main())
