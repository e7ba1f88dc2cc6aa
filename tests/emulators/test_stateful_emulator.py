"""The stateful emulator is strict: it refuses what its protocol forbids, and answers a
well-behaved client the way its docstring says (a raw websocket-client, no edgecap code)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket

from .soniox import noise_pcm
from .stateful import (
    PATH,
    StatefulEmulator,
    frame,
    synthesized_chunks,
    translation_of,
    turn_words,
    unframe,
)
from .tls import TlsMaterial

START = {"type": "session.start", "sample_rate": 16000, "targets": ["de", "fr"], "voice": "de"}


@pytest.fixture
def emu(tmp_path: Path, tls_material: TlsMaterial) -> Iterator[StatefulEmulator]:
    with StatefulEmulator(tmp_path, api_key="k", lag_ms=100, tls=tls_material) as e:
        yield e


def connect(emu: StatefulEmulator, key: str = "k") -> websocket.WebSocket:
    ws = websocket.create_connection(
        emu.url,
        header=[f"X-Api-Key: {key}"],
        sslopt={"ca_certs": emu.ca_file},
        suppress_origin=True,
        timeout=3,
    )
    ws.send(json.dumps(START))
    assert json.loads(ws.recv())["type"] == "session.ready"
    return ws


def receive_until_closed(ws: websocket.WebSocket) -> list[str | bytes]:
    """Every message until the server's close (answered), then the socket is shut."""
    out: list[str | bytes] = []
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return out
            out.append(data.decode() if opcode == websocket.ABNF.OPCODE_TEXT else data)
    except websocket.WebSocketConnectionClosedException:
        return out
    finally:
        ws.shutdown()  # close() does nothing once the close was answered


def test_a_wrong_key_or_path_is_refused_at_the_upgrade(emu: StatefulEmulator) -> None:
    for url, key, status in ((emu.url, "nope", 401), (emu.url.replace(PATH, "/x"), "k", 404)):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(
                url, header=[f"X-Api-Key: {key}"], sslopt={"ca_certs": emu.ca_file}, timeout=3
            )
        assert info.value.status_code == status
    assert emu.sessions == []


def test_a_whole_turn_with_its_reply(emu: StatefulEmulator) -> None:
    ws = connect(emu)
    turn = uuid.uuid4().hex
    ws.send(json.dumps({"type": "turn.start", "turn": turn}))
    pcm = noise_pcm(600, seed=4)
    for i in range(0, len(pcm), 3200):
        ws.send_binary(frame(f"turn={turn}", pcm[i : i + 3200]))
    ws.send(json.dumps({"type": "turn.end", "turn": turn}))
    got: list[str | bytes] = []
    while not got or _type(got[-1]) != "turn.end":
        got.append(ws.recv())
    words = [w for _, w in turn_words(pcm)]
    assert words
    finals = [json.loads(m) for m in got if _type(m) == "final"]
    assert [w["text"] for f in finals for w in f["words"]] == words
    for lang in ("de", "fr"):
        text = "".join(f["translations"][lang] for f in finals)
        assert text == "".join(translation_of(w, lang) for w in words)
    assert finals[-1]["final_ms"] == 600
    chunks = [unframe(m) for m in got if isinstance(m, bytes)]
    assert [c[1] for c in chunks] == synthesized_chunks(
        turn, "".join(translation_of(w, "de") for w in words)
    )
    assert all(fields["turn"] == turn and fields["lang"] == "de" for fields, _ in chunks)
    ws.send(json.dumps({"type": "telemetry", "turn": turn, "received": len(got)}))
    ws.close()
    (s,) = emu.sessions
    assert emu.wait_for(lambda: s.done, 3)
    assert s.violations == []
    assert s.turns[0].telemetry == len(got) and s.client_close_code == 1000


def _type(message: str | bytes) -> str | None:
    return None if isinstance(message, bytes) else json.loads(message).get("type")


@pytest.mark.parametrize(
    ("steps", "complaint"),
    [
        (["audio:a"], "not open"),
        (["start:a", "start:b"], "while turn"),
        (["start:a", "end:b"], "not the open turn"),
        (["start:a", "audio:a", "end:a", "audio:a"], "not open"),
        (["start:a", "end:a", "start:a"], "used before"),
        (["start:a", "end:a", "telemetry:a:1"], "counts 1"),
        (["telemetry:a:1"], "has not ended"),
        (['{"type": "finish"}'], "unexpected"),
    ],
)
def test_what_the_protocol_forbids_ends_the_session(
    emu: StatefulEmulator, steps: list[str], complaint: str
) -> None:
    ids = {"a": uuid.uuid4().hex, "b": uuid.uuid4().hex}
    ws = connect(emu)
    for step in steps:
        kind, _, rest = step.partition(":")
        name, _, count = rest.partition(":")
        if kind == "audio":
            ws.send_binary(frame(f"turn={ids[name]}", b"\x01\x00" * 320))
        elif kind in ("start", "end"):
            ws.send(json.dumps({"type": f"turn.{kind}", "turn": ids[name]}))
        elif kind == "telemetry":
            ws.send(json.dumps({"type": kind, "turn": ids[name], "received": int(count)}))
        else:
            ws.send(step)
    messages = receive_until_closed(ws)
    (error,) = [json.loads(m) for m in messages if _type(m) == "error"]
    assert error["code"] == "protocol" and complaint in error["message"]
    (s,) = emu.sessions
    assert emu.wait_for(lambda: s.done, 3)
    assert len(s.violations) == 1 and complaint in s.violations[0]


def test_a_missing_reply_is_a_violation_after_the_timeout(emu: StatefulEmulator) -> None:
    emu.telemetry_timeout = 0.3
    ws = connect(emu)
    turn = uuid.uuid4().hex
    ws.send(json.dumps({"type": "turn.start", "turn": turn}))
    ws.send(json.dumps({"type": "turn.end", "turn": turn}))
    messages = receive_until_closed(ws)  # no telemetry: the server gives up on us
    assert _type(messages[-1]) == "error"
    assert "no telemetry" in json.loads(messages[-1])["message"]


def test_a_turn_id_is_never_accepted_twice_even_on_another_connection(
    emu: StatefulEmulator,
) -> None:
    turn = uuid.uuid4().hex
    first = connect(emu)
    first.send(json.dumps({"type": "turn.start", "turn": turn}))
    assert _type(first.recv()) == "turn.started"
    first.close()
    second = connect(emu)
    second.send(json.dumps({"type": "turn.start", "turn": turn}))
    messages = receive_until_closed(second)
    assert "used before" in json.loads(messages[-1])["message"]
