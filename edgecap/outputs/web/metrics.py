"""``/metrics``: what an owner of twenty rooms graphs in Grafana and alerts on.

Built with the official Prometheus client, on a registry of our own (never the library's
global one, which tests and other code share): one custom collector that reads, at each
scrape, the status board's snapshot (parts and counters) and the web output's own counts,
plus the library's ``ProcessCollector`` for CPU seconds, resident memory and descriptors
(read from /proc). Nothing is counted twice and nothing runs between scrapes.

The board's counters are named by the parts that put them there (docs/web.md lists the
metrics); a counter this module does not know is still exported, as
``edgecap_status_counter{name=…}``, so a new one is never invisible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from edgecap import __version__
from edgecap.runtime.status import LINK_PROBLEMS, StatusBoard, StatusSnapshot

# Board counter → (metric, help, label pairs). Counters the board keeps as totals.
_COUNTERS: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    "link_attempts": ("link_connection_attempts", "Connections to the speech service tried", ()),
    "link_sessions": ("link_sessions", "Sessions with the speech service opened", ()),
    "link_failures": (
        "link_failures",
        "Connections to the speech service that failed or broke (each is retried)",
        (),
    ),
    "link_dead_detected": (
        "link_dead_connections",
        "Connections found dead (nothing received for [link] dead_after)",
        (),
    ),
    "link_token_failures": ("link_token_failures", "Token requests that failed", ()),
    "speech_lost_reports": ("speech_loss_reports", "Reports of speech lost", ()),
    "fallback_switches": ("fallback_switches", "Switches to the offline engine", ()),
    "fallback_returns": ("fallback_returns", "Returns from the offline engine", ()),
    "audio_open_attempts": ("audio_open_attempts", "Attempts to open the audio source", ()),
}
# Board counters in seconds of speech, as one metric with a label.
_SPEECH: dict[str, tuple[str, str]] = {
    "speech_gated_s": ("detected", "heard by the speech gate and passed on"),
    "speech_confirmed_s": ("sent", "sent to the speech service and confirmed by it"),
    "uplink_replayed_s": ("replayed", "sent again after a reconnect"),
    "speech_offline_s": ("offline", "captioned by the offline engine on the box"),
    "uplink_lost_s": ("lost_link", "lost: the service could not be reached in time"),
    "audio_dropped_s": ("lost_capture", "lost: dropped before it reached the service"),
}
# Board gauges.
_GAUGES: dict[str, tuple[str, str]] = {
    "speech_queue_s": ("speech_queue_seconds", "Speech waiting between capture and the service"),
    "speech_unsent_s": (
        "uplink_unsent_seconds",
        "Speech held for the service and not yet sent (the link's buffer)",
    ),
    "socket_clients": ("socket_clients", "Programs reading the caption socket"),
}
# Per-output board counters and gauges: "<prefix>:<output name>".
_PER_OUTPUT: dict[str, tuple[str, str, bool]] = {
    "output_failures": ("output_failures", "Times an output failed and was reopened", True),
    "output_dropped": ("output_dropped_events", "Final events an output's full queue lost", True),
    "output_queue": ("output_queue_events", "Events waiting in an output's queue", False),
}
_NOT_UP = {"retrying", "rejected", "failed", "unavailable", "device_missing", "device_busy"}


@dataclass(frozen=True)
class WebCounts:
    """The web output's own figures at the moment of a scrape."""

    viewers: int
    max_viewers: int
    viewers_served: int
    viewers_cut: int
    refused: Mapping[str, int]  # reason → count
    responses: Mapping[int, int]  # HTTP status → count
    bytes_sent: int
    captions: Mapping[bool, int]  # offline → finished lines
    caption_updates: int


class EdgecapCollector:
    """Reads the board and the web output at each scrape (on the web output's thread)."""

    def __init__(
        self,
        status: StatusBoard | None,
        web: Callable[[], WebCounts],
        service: str,
    ) -> None:
        self.status = status
        self.web = web
        self.service = service

    def collect(self) -> Iterator[Metric]:
        snap = self.status.snapshot() if self.status is not None else None
        info = GaugeMetricFamily(
            "edgecap_info", "This edgecap: its version and service", labels=["version", "service"]
        )
        info.add_metric([__version__, self.service], 1)
        yield info
        if snap is not None:
            yield from self._board(snap)
        yield from self._web(self.web())

    def _board(self, snap: StatusSnapshot) -> Iterator[Metric]:
        parts = snap.parts
        state = GaugeMetricFamily(
            "edgecap_state",
            "1 for each part of edgecap (audio, link, fallback, engine, output:*) in its state",
            labels=["part", "state"],
        )
        for name, part in sorted(parts.items()):
            state.add_metric([name, part.state], 1)
        yield state
        link = parts.get("link")
        if link is not None:
            yield _gauge(
                "edgecap_link_up",
                "1 while the speech service is reachable (or not needed), 0 while edgecap "
                "retries or the service refuses the session",
                0 if link.state in LINK_PROBLEMS else 1,
            )
        audio = parts.get("audio")
        if audio is not None:
            yield _gauge(
                "edgecap_audio_up",
                "1 while the audio source delivers audio",
                1 if audio.state in ("listening", "speech") else 0,
            )
        fallback = parts.get("fallback")
        if fallback is not None:
            yield _gauge(
                "edgecap_fallback_active",
                "1 while the offline engine stands in for the speech service",
                1 if fallback.state == "offline" else 0,
            )
        outputs = GaugeMetricFamily(
            "edgecap_output_up", "1 while an output works, 0 while it is retried", labels=["output"]
        )
        for name, part in sorted(parts.items()):
            if name.startswith("output:"):
                outputs.add_metric([name[7:]], 0 if part.state in _NOT_UP else 1)
        yield outputs
        yield from self._counters(snap.counters)

    def _counters(self, counters: Mapping[str, float]) -> Iterator[Metric]:
        known: set[str] = set()
        speech = CounterMetricFamily(
            "edgecap_speech_seconds",
            "Seconds of speech, by what happened to it: "
            + "; ".join(f"{kind} = {text}" for kind, text in _SPEECH.values()),
            labels=["kind"],
        )
        for name, (kind, _) in _SPEECH.items():
            if name in counters:
                speech.add_metric([kind], float(counters[name]))
                known.add(name)
        yield speech
        for name, (metric, text, _labels) in _COUNTERS.items():
            if name in counters:
                known.add(name)
                family = CounterMetricFamily(f"edgecap_{metric}", text)
                family.add_metric([], float(counters[name]))
                yield family
        for name, (metric, text) in _GAUGES.items():
            if name in counters:
                known.add(name)
                yield _gauge(f"edgecap_{metric}", text, counters[name])
        for prefix, (metric, text, is_counter) in _PER_OUTPUT.items():
            family: Any = (
                CounterMetricFamily(f"edgecap_{metric}", text, labels=["output"])
                if is_counter
                else GaugeMetricFamily(f"edgecap_{metric}", text, labels=["output"])
            )
            for name, value in sorted(counters.items()):
                head, sep, output = name.partition(":")
                if sep and head == prefix:
                    family.add_metric([output], float(value))
                    known.add(name)
            yield family
        other = GaugeMetricFamily(
            "edgecap_status_counter",
            "Any other counter of the status board, by name",
            labels=["name"],
        )
        for name, value in sorted(counters.items()):
            if name not in known:
                other.add_metric([name], float(value))
        yield other

    def _web(self, web: WebCounts) -> Iterator[Metric]:
        yield _gauge("edgecap_web_viewers", "Caption pages following the captions now", web.viewers)
        yield _gauge("edgecap_web_viewers_max", "[web] max_clients", web.max_viewers)
        served = CounterMetricFamily("edgecap_web_viewers_served", "Caption streams started")
        served.add_metric([], web.viewers_served)
        yield served
        cut = CounterMetricFamily(
            "edgecap_web_viewers_cut", "Viewers disconnected because they stopped reading"
        )
        cut.add_metric([], web.viewers_cut)
        yield cut
        refused = CounterMetricFamily(
            "edgecap_web_refused",
            "Requests turned away: full (max_clients), code (wrong or no access code), "
            "busy (too many connections at once)",
            labels=["reason"],
        )
        for reason, count in sorted(web.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        responses = CounterMetricFamily(
            "edgecap_web_responses", "HTTP responses by status code", labels=["code"]
        )
        for code, count in sorted(web.responses.items()):
            responses.add_metric([str(code)], count)
        yield responses
        sent = CounterMetricFamily("edgecap_web_sent_bytes", "Bytes sent by the web server")
        sent.add_metric([], web.bytes_sent)
        yield sent
        captions = CounterMetricFamily(
            "edgecap_captions",
            "Caption lines finished (offline: by the offline engine)",
            labels=["offline"],
        )
        for offline in (False, True):
            captions.add_metric(["true" if offline else "false"], web.captions.get(offline, 0))
        yield captions
        updates = CounterMetricFamily(
            "edgecap_caption_updates", "Caption events (provisional and final) published"
        )
        updates.add_metric([], web.caption_updates)
        yield updates


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text)
    family.add_metric([], float(value))
    return family


class Metrics:
    """A registry of our own: the collector above and the process's CPU and memory."""

    def __init__(self, collector: EdgecapCollector) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)  # type: ignore[arg-type]
        ProcessCollector(registry=self.registry)

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition (the format the scraper asked for) and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
