"""ocak: a local-first LLM service with an OpenAI-compatible API."""

__version__ = "0.1.0"
