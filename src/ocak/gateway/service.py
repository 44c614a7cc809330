"""The gateway a server runs: built once at start from the settings and the local engines.

``build_gateway`` checks what validation alone cannot (a target's provider and
local model exist; a local-only alias lists nothing remote), reads each
provider's key from the environment variable the config names, and leaves out,
with a warning, the targets whose key is not set: one config serves an online
install (hosted model first) and an offline one (the local model).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping

from ocak.config import Settings
from ocak.config.gateway import ProviderConfig
from ocak.config.presets import PRESETS
from ocak.engines.registry import EngineRegistry
from ocak.errors import InvalidRequest
from ocak.gateway.adapters import split_name
from ocak.gateway.router import Alias, Breaker, LocalTarget, RemoteTarget, Router, Target
from ocak.plugins import Registry
from ocak.providers.base import Http, Provider, is_loopback_url
from ocak.providers.errors import Secrets
from ocak.providers.openai_compat import OpenAICompatible

# Provider types by name: entry points of the group "ocak.providers" (pyproject.toml).
PROVIDERS: Registry[Callable[..., Provider]] = Registry("ocak.providers")

log = logging.getLogger("ocak.gateway")


class Gateway:
    """The router, the providers, their shared HTTP client, and the keys to keep secret."""

    def __init__(
        self,
        router: Router,
        providers: dict[str, Provider] | None = None,
        secrets: Secrets | None = None,
        http: Http | None = None,
    ) -> None:
        self.router = router
        self.providers = providers or {}
        self.secrets = secrets or Secrets()
        self.http = http or Http()

    def knows(self, name: str) -> bool:
        return self.router.knows(name)

    def start(self) -> None:
        """Start polling the providers that have a health path (in the running loop)."""
        self.router.health.start()

    async def close(self) -> None:
        await self.router.health.close()
        await self.http.aclose()


def build_gateway(
    settings: Settings,
    engines: EngineRegistry,
    environ: Mapping[str, str] | None = None,
    *,
    speech: Collection[str] = (),
) -> Gateway:
    """The gateway for these settings; ``ConfigError`` (with the field and line) when a
    reference points at nothing. ``speech``: the local speech and embedding models
    (``piper``, ``whisper-tiny.en``, ``all-minilm-l6-v2``), which an alias of the audio or
    embeddings API may name as local targets."""
    env = os.environ if environ is None else environ
    routing = settings.routing
    secrets = Secrets()
    gateway = Gateway(Router({}, engines, routing), secrets=secrets)
    providers: dict[str, Provider] = {}
    missing_key: dict[str, str] = {}
    for name, config in settings.providers.items():
        key = None
        if config.key_env is not None:
            key = env.get(config.key_env) or None
            if key is None:
                missing_key[name] = config.key_env
                continue
            secrets.add(key)
        kind = PROVIDERS.get(config.type)
        made: Provider = kind(name, config, key=key, http=gateway.http, secrets=secrets)
        if isinstance(made, OpenAICompatible):
            made.locality_ttl = routing.locality_ttl
        if config.health is not None:
            gateway.router.health.watch(made, config.health, config.health_interval)
        providers[name] = made

    breakers: dict[str, Breaker] = {}
    aliases: dict[str, Alias] = {}
    for alias_name, alias_config in settings.models.items():
        if alias_name in engines:
            log.warning(
                "the alias '%s' hides the local model of the same name (reach it with "
                "{local: %s} among the alias's targets)",
                alias_name,
                alias_name,
            )
        alias = Alias(
            alias_name,
            [],
            locality=alias_config.locality,
            knowledge=alias_config.knowledge,
            balance=alias_config.balance,
            affinity=alias_config.affinity,
        )
        for i, tc in enumerate(alias_config.targets):
            at = ("models", alias_name, "targets", i)
            timeouts = routing.timeouts
            retries = routing.retries if tc.retries is None else tc.retries
            rank = i if tc.rank is None else tc.rank
            if tc.local is not None:
                try:
                    engine, adapters = split_name(tc.local)
                except InvalidRequest as exc:
                    raise settings.config_error((*at, "local"), exc.message) from None
                if engine not in engines and not (engine in speech and not adapters):
                    served = ", ".join([*(e.model_id for e in engines), *speech]) or "none"
                    raise settings.config_error(
                        (*at, "local"), f"no local model '{engine}' (served: {served})"
                    )
                missing = [a.name for a in adapters if engines.adapter(a.name) is None]
                if missing:
                    raise settings.config_error(
                        (*at, "local"), f"no LoRA adapter '{missing[0]}' in the model store"
                    )
                target: Target = LocalTarget(
                    name=f"local/{tc.local}",
                    rank=rank,
                    weight=tc.weight,
                    params=dict(tc.params),
                    timeouts=timeouts.over(tc.timeouts),
                    retries=retries,
                    engine=engine,
                    adapters=adapters,
                )
            else:
                assert tc.provider is not None and tc.model is not None
                provider_config = settings.providers.get(tc.provider)
                if provider_config is None:
                    known = ", ".join(settings.providers) or "none configured"
                    raise settings.config_error(
                        (*at, "provider"), f"no provider '{tc.provider}' (known: {known})"
                    )
                local_only = alias_config.locality == "local"
                if local_only and not provider_config.local and not _may_verify(provider_config):
                    raise settings.config_error(
                        at,
                        f"the alias is local-only but provider '{tc.provider}' is not local: "
                        "list local models, providers with local: true, or an ocak preset "
                        "on a loopback address",
                    )
                name = f"{tc.provider}/{tc.model}"
                provider = providers.get(tc.provider)
                if provider is None:
                    log.warning(
                        "%s left out of '%s': the environment variable %s is not set",
                        name,
                        alias_name,
                        missing_key[tc.provider],
                    )
                    alias.skipped.append(name)
                    continue
                target = RemoteTarget(
                    name=name,
                    rank=rank,
                    weight=tc.weight,
                    params=dict(tc.params),
                    timeouts=timeouts.over(provider_config.timeouts).over(tc.timeouts),
                    retries=retries,
                    provider=provider,
                    model=tc.model,
                    breaker=breakers.setdefault(
                        name, Breaker(routing.breaker_failures, routing.breaker_cooldown)
                    ),
                )
            alias.targets.append(target)
        if not alias.targets:
            log.warning(
                "the alias '%s' has no target left (%s need keys): its requests will fail",
                alias_name,
                ", ".join(alias.skipped),
            )
        aliases[alias_name] = alias
    gateway.router.aliases = aliases
    gateway.providers = providers
    for name in settings.providers:
        if name in providers:
            log.info("provider %s: %s", name, providers[name].url)
    return gateway


def _may_verify(config: ProviderConfig) -> bool:
    """An ocak preset on a loopback address: local-only requests may go once it proves it."""
    preset = PRESETS.get(config.preset or "")
    return preset is not None and preset.locality == "verify" and is_loopback_url(config.url)
