"""Helpers for the CTranslate2 tests: the converted default model, tiny checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ocak.models.store import default_model_path

CT2_NAME = "smollm2-135m-instruct-int8"


def ocak_cli(*args: str, data_dir: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``ocak ARGS`` in a child process with its own data folder."""
    return subprocess.run(
        [sys.executable, "-m", "ocak", *args],
        env={**os.environ, "OCAK_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def convert_default_model(data_dir: Path) -> Path:
    """The embedded GGUF converted to CTranslate2 int8 with the real CLI.

    The converter itself makes this a cache: a second run finds the model and
    does nothing (a changed source or an interrupted run converts again).
    """
    result = ocak_cli(
        "models",
        "convert",
        str(default_model_path()),
        "--name",
        CT2_NAME,
        "--quantization",
        "int8",
        data_dir=data_dir,
    )
    if result.returncode != 0:
        raise RuntimeError(f"conversion failed ({result.returncode}):\n{result.stderr}")
    path = data_dir / "models" / CT2_NAME
    assert (path / "model.bin").is_file(), result.stdout + result.stderr
    return path
