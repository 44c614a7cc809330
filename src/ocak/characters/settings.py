"""Settings of the character engine (``OCAK_CHARACTERS_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CharacterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OCAK_CHARACTERS_", extra="ignore")

    history_budget: int = Field(
        600,
        ge=50,
        le=100_000,
        description="Tokens of verbatim history a character keeps in its prompt; past it, "
        "older turns are summarized into its memory.",
    )
    summary_tokens: int = Field(160, ge=16, le=2048, description="Longest summary, in tokens.")
    recall_limit: int = Field(3, ge=0, le=20, description="Memories recalled into each prompt.")
    lore_budget: int = Field(
        512, ge=0, le=8192, description="Most lorebook tokens per turn (cards may ask for less)."
    )
