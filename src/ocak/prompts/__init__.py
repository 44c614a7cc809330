"""The prompt registry: named, versioned, labelled chat prompts, rendered with variables.

``store`` keeps prompts in one SQLite file (versions immutable, labels movable, export
and import as plain dicts), on ``db`` (the file and its schema), ``model`` (versions,
their checks and hash) and ``exchange`` (an export checked and re-hashed); ``render``
checks and renders a version's messages with a sandboxed Jinja2. A part layer: it
imports only ``ocak.errors``.
"""
