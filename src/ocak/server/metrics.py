"""The server's Prometheus metrics, fed by request records and engine stats (served by
``routes/metrics.py``).

Each app has its own registry (several apps in one test process do not clash).
Label values are bounded: a model name the client sent is kept only if the
server serves it (otherwise ``other``), so junk input cannot grow the series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ocak.engines.registry import EngineRegistry
from ocak.protocol.record import RequestRecord

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
OTHER = "other"


class EngineCollector(Collector):
    """Queue depth, active sequences and slots of each ready engine, read at scrape time."""

    def __init__(self, engines: EngineRegistry) -> None:
        self.engines = engines

    def collect(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily(
            "ocak_queue_depth", "Requests waiting for a free sequence.", labels=["model"]
        )
        active = GaugeMetricFamily(
            "ocak_active_sequences", "Sequences being decoded.", labels=["model"]
        )
        slots = GaugeMetricFamily(
            "ocak_sequence_slots", "Sequences the engine decodes together.", labels=["model"]
        )
        ready = GaugeMetricFamily(
            "ocak_model_ready", "1 when the model is loaded.", labels=["model"]
        )
        loads = CounterMetricFamily("ocak_model_loads", "Model loads.", labels=["model"])
        load_seconds = CounterMetricFamily(
            "ocak_model_load_seconds", "Seconds spent loading models.", labels=["model"]
        )
        evictions = CounterMetricFamily(
            "ocak_model_unloads",
            "Models unloaded: idle (keep_alive), memory (room for another), request.",
            labels=["model", "reason"],
        )
        resident = GaugeMetricFamily(
            "ocak_model_resident_bytes",
            "Estimated memory of a loaded model (weights and KV cache).",
            labels=["model"],
        )
        registry = self.engines
        for model, n in registry.loads.items():
            loads.add_metric([model], n)
            load_seconds.add_metric([model], registry.load_seconds.get(model, 0.0))
        for (model, reason), n in registry.evictions.items():
            evictions.add_metric([model, reason], n)
        for engine in registry.ready:
            res = registry.residency(engine.model_id)
            resident.add_metric([engine.model_id], res.resident if res else 0)
        yield from (loads, load_seconds, evictions, resident)
        for engine in self.engines:
            ready.add_metric([engine.model_id], 1.0 if engine.state == "ready" else 0.0)
            if engine.state == "ready":
                s = engine.stats()
                queued.add_metric([engine.model_id], s.queued)
                active.add_metric([engine.model_id], s.active)
                slots.add_metric([engine.model_id], s.slots)
        yield from (queued, active, slots, ready)


class Metrics:
    """The server's Prometheus metrics; ``observe`` is a request record sink."""

    def __init__(self, engines: EngineRegistry, known: Callable[[str], bool] | None = None) -> None:
        self.known = known or (lambda model: model in engines)
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "ocak_requests",
            "Model requests by model, backend and outcome (completed, failed, cancelled, "
            "rejected).",
            ["model", "backend", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "ocak_prompt_tokens", "Prompt tokens processed.", ["model", "backend"], registry=r
        )
        self.completion_tokens = Counter(
            "ocak_completion_tokens",
            "Completion tokens generated.",
            ["model", "backend"],
            registry=r,
        )
        self.ttft = Histogram(
            "ocak_time_to_first_token_seconds",
            "Time from request to first token, for requests that produced one.",
            ["model", "backend"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "ocak_request_duration_seconds",
            "Total time of completed model requests.",
            ["model", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http = Counter(
            "ocak_http_responses", "HTTP responses by status code.", ["code"], registry=r
        )
        r.register(EngineCollector(engines))

    def observe(self, record: RequestRecord) -> None:
        self.http.labels(str(record.http_status)).inc()
        if not record.is_api:
            return
        model = record.model if record.model and self.known(record.model) else OTHER
        backend = record.backend or "none"
        self.requests.labels(model, backend, record.status).inc()
        if record.prompt_tokens:
            self.prompt_tokens.labels(model, backend).inc(record.prompt_tokens)
        if record.completion_tokens:
            self.completion_tokens.labels(model, backend).inc(record.completion_tokens)
        ttft = record.ttft
        if ttft is not None:
            self.ttft.labels(model, backend).observe(ttft)
        if record.status == "completed":
            self.latency.labels(model, backend).observe(record.duration)

    def render(self) -> bytes:
        return generate_latest(self.registry)
