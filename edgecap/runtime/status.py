"""The status model: what each part of edgecap is doing, and counters.

Parts report into one StatusBoard ("audio": listening / speech / device_missing …; later
"link" and each output). Readers take immutable snapshots; listeners are called after every
change, outside the lock, and must not block (outputs put the snapshot in their own queue).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

log = logging.getLogger(__name__)

# Audio states, in the words shown to people by the outputs.
AUDIO_STATES = {
    "starting": "Starting…",
    "listening": "Listening…",
    "speech": "Hearing speech",
    "device_missing": "No microphone",
    "device_busy": "Microphone busy",
    "ended": "End of input",
    "failed": "Audio failed",
}


# Link states worth telling people about (connecting, connected, idle and finishing are
# the normal ones: an on-demand link connects at every first word).
# A service's notice (a failed translation …) is part of the summary for this long.
NOTICE_SHOWN = 30.0

LINK_PROBLEMS = {
    "retrying": "Speech service unreachable",
    "rejected": "Speech service refused the session",
}


@dataclass(frozen=True)
class PartStatus:
    state: str
    detail: str = ""
    since: float = field(default_factory=time.time)


@dataclass(frozen=True)
class StatusSnapshot:
    parts: Mapping[str, PartStatus]
    counters: Mapping[str, float]
    taken_at: float

    def state_of(self, part: str) -> str | None:
        p = self.parts.get(part)
        return p.state if p else None

    def fresh_notice(self) -> str:
        """The service's latest notice, if it came less than NOTICE_SHOWN ago."""
        part = self.parts.get("notice")
        if part is None or self.taken_at - part.since >= NOTICE_SHOWN:
            return ""
        return part.detail or part.state

    def summary(self) -> str:
        """One short human sentence, e.g. for systemd STATUS= and a screen's status line."""
        audio = self.parts.get("audio")
        if audio is None:
            return "Starting…"
        text = AUDIO_STATES.get(audio.state, audio.state)
        if audio.detail and audio.state not in ("listening", "speech"):
            text = f"{text}: {audio.detail}"
        link = self.parts.get("link")
        fallback = self.parts.get("fallback")
        if fallback is not None and fallback.state == "offline":
            # short enough for a screen's status line; the journal has the details
            problem = LINK_PROBLEMS.get(link.state if link else "", "Speech service down")
            text += f" · Offline captions ({problem.lower()})"
        elif link is not None and link.state in LINK_PROBLEMS:
            text += f" · {LINK_PROBLEMS[link.state]}"
            if link.detail:
                text += f" ({link.detail})"
        notice = self.fresh_notice()
        if notice:
            text += f" · {notice}"
        lost = self.counters.get("audio_dropped_s", 0.0) + self.counters.get("uplink_lost_s", 0.0)
        if lost:
            text += f" · {lost:.1f} s lost"
        return text

    def service_line(self, service: str) -> str:
        """The summary with the service and listeners, for systemd's STATUS= (what
        `systemctl status edgecap` shows): "Listening… · Soniox: connected · 2 listeners"."""
        text = self.summary()
        link = self.parts.get("link")
        if link is not None and link.state not in LINK_PROBLEMS:
            text += f" · {service.capitalize()}: {link.state}"
        listeners = int(self.counters.get("socket_clients", 0))
        if listeners:
            text += f" · {listeners} listener{'s' if listeners != 1 else ''}"
        return text


Listener = Callable[[StatusSnapshot], None]


class StatusBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[str, PartStatus] = {}
        self._counters: dict[str, float] = {}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def set(self, part: str, state: str, detail: str = "") -> bool:
        """Set a part's state; returns True when it changed (listeners are then told)."""
        with self._lock:
            old = self._parts.get(part)
            if old is not None and old.state == state and old.detail == detail:
                return False
            self._parts[part] = PartStatus(state, detail)
        self._notify()
        return True

    def add(self, counter: str, amount: float = 1) -> None:
        with self._lock:
            self._counters[counter] = self._counters.get(counter, 0) + amount

    def put(self, counter: str, value: float) -> None:
        with self._lock:
            self._counters[counter] = value

    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            return StatusSnapshot(
                MappingProxyType(dict(self._parts)),
                MappingProxyType(dict(self._counters)),
                time.time(),
            )

    def _notify(self) -> None:
        snap = self.snapshot()
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(snap)
            except Exception:
                log.exception("status listener failed")
