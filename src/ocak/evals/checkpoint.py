"""A run's checkpoint: every finished sample appended (and flushed) to a JSONL file next
to the result file (``results.json.partial.jsonl``), so ``--resume`` after an
interruption sends only the samples not yet done.

The first line names the suite's hash; a suite changed since (its cases, graders,
targets or repeats) cannot be resumed: mixing samples of two suites would make rates
that mean nothing. A line cut short by a kill is ignored. The file is removed once the
result file is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from ocak.evals.results import Key, Sample
from ocak.evals.suite import SuiteError

FORMAT = "ocak-eval-checkpoint/1"


def checkpoint_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial.jsonl")


class Checkpoint:
    def __init__(self, path: Path, suite_hash: str, suite_name: str) -> None:
        self.path = path
        self.suite_hash = suite_hash
        self.suite_name = suite_name
        self._file: IO[str] | None = None
        self.discarded = 0  # samples of an earlier run dropped by starting over

    def _read(self) -> tuple[dict[str, object] | None, dict[Key, Sample]]:
        header: dict[str, object] | None = None
        samples: dict[Key, Sample] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return None, {}
        for i, line in enumerate(lines):
            try:
                row = json.loads(line)
                if i == 0:
                    header = row if isinstance(row, dict) else None
                    continue
                sample = Sample.from_dict(row)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short when the run was killed
            samples[sample.key] = sample
        return header, samples

    def start(self, resume: bool) -> dict[Key, Sample]:
        """Open the checkpoint for appending: with ``resume``, the samples it holds (a
        ``SuiteError`` when they belong to another version of the suite); without, it
        starts empty (``discarded`` counts what an earlier run had left)."""
        done: dict[Key, Sample] = {}
        if self.path.exists():
            header, samples = self._read()
            if resume:
                if header is None or header.get("format") != FORMAT:
                    raise SuiteError(
                        f"{self.path} is not an ocak eval checkpoint; remove it or run "
                        "without --resume"
                    )
                if header.get("suite_hash") != self.suite_hash:
                    raise SuiteError(
                        f"the suite changed since the checkpoint {self.path} was written "
                        "(its cases, graders, targets or repeats differ), so its samples "
                        "cannot be reused: run without --resume to start over"
                    )
                done = samples
            else:
                self.discarded = len(samples)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Written anew (header, then what is kept), so a line cut short is not appended to.
        self._file = self.path.open("w", encoding="utf-8")
        header_line = {"format": FORMAT, "suite": self.suite_name, "suite_hash": self.suite_hash}
        self._file.write(json.dumps(header_line) + "\n")
        for sample in done.values():
            self._file.write(json.dumps(sample.to_dict(), ensure_ascii=False) + "\n")
        self._file.flush()
        return done

    def append(self, sample: Sample) -> None:
        assert self._file is not None, "start() first"
        self._file.write(json.dumps(sample.to_dict(), ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
