"""Structured output for local engines: grammars from JSON schemas, and tool calls."""
