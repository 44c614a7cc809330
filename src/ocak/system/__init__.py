"""The machine under ocak: CPU features, llama.cpp's native build, and ``ocak doctor``'s checks.

``cpu`` and ``llama_build`` import only the standard library: the install step
(``scripts/build_llama.py``) uses them before ocak's dependencies exist.
"""
