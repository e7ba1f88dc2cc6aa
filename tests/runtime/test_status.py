"""The one-line status summary people read on a screen and in `systemctl status`."""

from __future__ import annotations

import dataclasses

from edgecap.runtime.status import StatusBoard


def test_summary_tells_a_refused_service_and_lost_speech():
    board = StatusBoard()
    board.set("audio", "listening")
    board.set("link", "connected")
    assert board.snapshot().summary() == "Listening…"
    board.set("link", "rejected", "unauthenticated 401: Invalid API key")
    board.put("uplink_lost_s", 12.5)
    assert board.snapshot().summary() == (
        "Listening… · Speech service refused the session (unauthenticated 401: Invalid API key)"
        " · 12.5 s lost"
    )


def test_normal_link_states_stay_quiet():
    board = StatusBoard()
    board.set("audio", "speech")
    for state in ("idle", "connecting", "connected", "finishing"):
        board.set("link", state)
        assert board.snapshot().summary() == "Hearing speech"


def test_listeners_hear_each_change_once():
    board = StatusBoard()
    seen = []
    board.subscribe(lambda snap: seen.append(snap.state_of("link")))
    board.set("link", "retrying", "connect_failed")
    board.set("link", "retrying", "connect_failed")
    board.set("link", "connected")
    assert seen == ["retrying", "connected"]


def test_a_service_notice_is_in_the_summary_while_fresh():
    from edgecap.runtime.status import NOTICE_SHOWN, StatusBoard

    board = StatusBoard()
    board.set("audio", "listening")
    board.set("notice", "translation_failed", "no translation into fr")
    snap = board.snapshot()
    assert snap.fresh_notice() == "no translation into fr"
    assert snap.summary() == "Listening… · no translation into fr"
    later = dataclasses.replace(snap, taken_at=snap.parts["notice"].since + NOTICE_SHOWN)
    assert later.fresh_notice() == "" and later.summary() == "Listening…"
