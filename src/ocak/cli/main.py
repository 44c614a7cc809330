"""The ``ocak`` command: serve, doctor, run, chat, models, ps, keys, usage, characters, data,
kb, prompts."""

from __future__ import annotations

import typer

from ocak.cli import characters, data, doctor, kb, keys, models, ps, serve, talk, usage
from ocak.cli import prompts as prompts_cli
from ocak.cli.eval import eval_suite
from ocak.cli.tune import tune

app = typer.Typer(
    name="ocak",
    help="ocak: run language models on your own machine behind an OpenAI-compatible API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("doctor")(doctor.doctor)
app.command("run")(talk.run)
app.command("chat")(talk.chat)
app.add_typer(models.app, name="models")
app.command("ps")(ps.ps)
app.add_typer(keys.app, name="keys")
app.add_typer(usage.app, name="usage")
app.add_typer(characters.app, name="characters")
app.add_typer(data.app, name="data")
app.add_typer(kb.app, name="kb")
app.add_typer(prompts_cli.app, name="prompts")
app.command("eval")(eval_suite)
app.command("tune")(tune)


def main() -> None:  # pragma: no cover - console entry point
    app()
