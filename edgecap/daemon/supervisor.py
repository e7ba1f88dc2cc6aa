"""The daemon: builds the pipeline from the config, owns every worker, stops it in time.

    source ─▶ CaptureWorker (gate) ─▶ SpeechQueue ─▶ speech consumer ─▶ outputs

The speech consumer is the LinkWorker (a cloud service: speech goes out, captions come
back through the CaptionBoard) or, for ``service = local``, the LocalWorker (the offline
engine on the box, into the same CaptionBoard).

The supervisor (the main thread) sleeps until there is something to do: a signal, a
worker's exit, a change of what systemd's STATUS= shows, or systemd's watchdog falling due
(every ``WatchdogSec / 2``; STATUS= is looked at then too) — on a VM a wake-up costs more
than the work it does, so without systemd it has no timed wake-up at all. The pipeline's
gauges for /metrics are read from the parts whenever the status board is read
(``GaugedBoard``), not refreshed on a timer.

Stopping is ordered so nothing in flight is lost: capture stops first (ending the open
utterance and closing the queue), then the consumer drains the queue, then the outputs
close. Each join has a deadline; a worker that misses it is named, and the caller exits
hard rather than hang (a non-daemon thread would otherwise keep the process alive forever).

Exit status: 0 after a stop (SIGTERM, SIGINT) or an end of input with every word of speech
captioned; 75 (EX_TEMPFAIL) when the input ended (a file, stdin) and speech was lost — the
service was unreachable or refused the key, the losses were reported one by one; 78 for a
config error; 70 when a worker failed or did not stop in time.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, TextIO

from edgecap.audio.factory import make_source
from edgecap.audio.source import AudioSource, SourceConfigError
from edgecap.captions.board import CaptionBoard, Numbering
from edgecap.captions.events import CaptionEvent
from edgecap.captions.profanity import ProfanityFilter, ProfanityWordsError
from edgecap.config.loader import EX_CONFIG, ConfigError, LoadedConfig
from edgecap.config.schema import DaemonConfig
from edgecap.config.secrets import SecretNotFound, SecretValue, resolve
from edgecap.daemon.capture import CaptureWorker
from edgecap.daemon.notify import Notifier
from edgecap.gate.speech_gate import GateSettings, SpeechGate
from edgecap.outputs.fanout import FanOut
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.frames import SAMPLE_RATE, frame_samples
from edgecap.runtime.logsetup import under_journal
from edgecap.runtime.speech import Activity
from edgecap.runtime.speech_queue import SpeechQueue
from edgecap.runtime.status import NOTICE_SHOWN, StatusBoard, StatusSnapshot
from edgecap.runtime.wakeup import Wakeup
from edgecap.runtime.worker import Worker
from edgecap.services.registry import SERVICES, service

if TYPE_CHECKING:  # imported where used: start-up pays only for what the config uses
    from edgecap.link.worker import LinkWorker
    from edgecap.outputs.socket_server import SocketOutput
    from edgecap.outputs.web.output import WebOutput
    from edgecap.services.local.worker import LocalWorker

log = logging.getLogger(__name__)

EX_OK = 0
EX_SOFTWARE = 70  # a worker failed: systemd restarts the service
EX_TEMPFAIL = 75  # the input ended and some of its speech was not captioned
OFFLINE_MARK = "≈ "  # begins a fallback caption line on the screen
QUEUE_SECONDS = 30  # speech held between capture and the consumer before the oldest is dropped
# STATUS= is also checked this often (when nothing else woke the supervisor sooner): what no
# status change announces — the socket's listener count, the seconds lost — shows within it.
STATUS_RECHECK = 15.0
STALL_CHECK = 2.0  # end of input: how often a consumer is checked for progress
STALLED_AFTER = 10.0  # ... and how long without progress it may go
WAKE_SLACK = 0.005  # a deadline this close counts as come (a timed wake-up may be early)


class GaugedBoard(StatusBoard):
    """The daemon's status board. Its gauges (speech through each stage, queue depths, the
    socket's clients: numbers that move with every block) are read from the parts whenever
    the board is read — a /metrics scrape, a status message to the outputs, STATUS= — rather
    than refreshed on a timer that would wake the daemon for readers that may never come.

    ``gauges`` is called on the reader's thread (a listener's snapshot: the thread that
    changed a part), so it must be quick and never block; one at a time, so a total never
    goes back (two readers racing could otherwise put an older value after a newer one)."""

    def __init__(self) -> None:
        super().__init__()
        self.gauges: Callable[[], None] | None = None
        self._gauges_lock = threading.Lock()
        self._gauges_failed = False

    def snapshot(self) -> StatusSnapshot:
        gauges = self.gauges
        if gauges is not None:
            with self._gauges_lock:
                try:
                    gauges()
                except Exception:  # a reader (a part changing state) must never fail for it
                    if not self._gauges_failed:
                        log.exception("the status gauges could not be read")
                    self._gauges_failed = True
        return super().snapshot()


def gate_settings(loaded: LoadedConfig) -> GateSettings:
    g = loaded.config.gate
    return GateSettings(
        enabled=g.enabled,
        aggressiveness=g.aggressiveness,
        frame_ms=loaded.config.audio.frame_ms,
        preroll_ms=round(g.preroll * 1000),
        hangover_ms=round(g.hangover * 1000),
        min_speech_ms=round(g.min_speech * 1000),
        max_utterance_s=g.max_utterance,
    )


def profanity_filter(daemon: DaemonConfig) -> ProfanityFilter | None:
    """``[daemon] profanity`` as every caption board applies it (None: off). A words file
    that cannot be used is a config error (the CLI checks it first; this covers a file
    changed in between)."""
    if daemon.profanity == "off":
        return None
    try:
        return ProfanityFilter.load(daemon.profanity, daemon.profanity_words)
    except ProfanityWordsError as exc:
        raise ConfigError([f"daemon.profanity_words: {exc}"]) from exc


class Daemon:
    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        stdout: TextIO | None = None,
        source: AudioSource | None = None,
        stop_timeout: float = 2.0,
        notifier: Notifier | None = None,
        reloader: Callable[[], LoadedConfig] | None = None,
    ) -> None:
        self.loaded = loaded
        self.reloader = reloader
        self.started_wall = time.time()
        self.stop_timeout = self.base_stop_timeout = stop_timeout
        self.status = GaugedBoard()
        self.status.set("audio", "starting")
        cfg = loaded.config
        self.profanity = profanity_filter(cfg.daemon)  # before anything is opened
        self.source = source if source is not None else make_source(cfg.audio)
        self.gate = SpeechGate(gate_settings(loaded))
        self.queue = SpeechQueue(QUEUE_SECONDS * SAMPLE_RATE)
        self._stdout_stream = stdout
        self.stdout: OutputWorker | None = None  # made with the other outputs
        self.capture = CaptureWorker(
            self.source,
            self.gate,
            self.queue,
            self.status,
            retry_first=min(0.5, cfg.audio.retry_max),
            retry_max=cfg.audio.retry_max,
        )
        self.link: LinkWorker | None = None
        self.board: CaptionBoard | None = None
        self.fallback_worker: LocalWorker | None = None
        self.consumer: Worker = self._make_consumer(first_seq=1)
        self.outputs = self._make_outputs()
        self.fanout = FanOut(self.outputs)
        self.status.subscribe(self.fanout.publish)
        self._wake = Wakeup()  # a pipe-like flag: set by any thread or a signal handler
        self._stop_reason: str | None = None
        self._reload_requested = False
        self.notifier = notifier if notifier is not None else Notifier()
        self._ready = False
        self._last_watchdog = 0.0
        self._status_checked = 0.0  # when STATUS= was last brought up to date
        self._notice_ends: float | None = None  # when the summary's notice expires
        self.wakeups = 0  # times the supervisor woke up (tests, the bench)
        self.watchdog_withheld = 0  # intervals in which a stale worker kept the watchdog quiet
        self.hung: list[str] = []
        self.exit_code: int | None = None
        self._input_ended = False  # the run ended at the end of its input, not by a stop
        self.status.subscribe(self._on_status)
        self.status.gauges = self._count_listeners

    @property
    def consumers(self) -> list[Worker]:
        """The speech consumer, then the offline fallback it feeds (if any)."""
        if self.fallback_worker is None:
            return [self.consumer]
        return [self.consumer, self.fallback_worker]

    @property
    def workers(self) -> list[Worker]:
        """In start order."""
        return [*self.outputs, *self.consumers, self.capture]

    def _make_consumer(self, first_seq: int) -> Worker:
        """The speech consumer for the current config: the link to the configured service
        (with a caption board numbering lines from ``first_seq``, and the offline engine
        standing by when ``fallback = local``) or the offline engine itself."""
        cfg = self.loaded.config
        self.link = None
        self.board = None
        self.fallback_worker = None
        numbering = Numbering(first_seq)
        spec = service(cfg.daemon.service)
        if spec.cloud:
            settings = spec.settings(cfg)
            for text in spec.warnings(cfg):
                log.warning("config: %s", text)
            self.board = CaptionBoard(
                self._publish_caption,
                targets=spec.targets(settings),
                translation_only=spec.translation_only(settings),
                numbering=numbering,
                profanity=self.profanity,
            )
            from edgecap.link.fallback import Fallback
            from edgecap.link.worker import LinkWorker

            fallback = None
            if cfg.daemon.fallback == "local":
                queue = SpeechQueue(QUEUE_SECONDS * SAMPLE_RATE)
                fallback = Fallback(
                    queue, cfg.daemon.fallback_after, self.status, service=spec.name
                )
                self.status.set("fallback", "standby")
                self.fallback_worker = self._make_local(
                    queue,
                    CaptionBoard(
                        self._publish_caption,
                        numbering=numbering,
                        offline=True,
                        profanity=self.profanity,
                    ),
                    name="fallback",
                )
            self.link = LinkWorker(
                self.queue,
                spec.codec(cfg),
                self._service_key,
                cfg.link,
                self.status,
                self.board,
                fallback=fallback,
            )
            # The last captions are awaited at stop (end of stream → finished).
            self.stop_timeout = self.base_stop_timeout + cfg.link.finish_timeout
            return self.link
        self.stop_timeout = self.base_stop_timeout
        self.board = CaptionBoard(
            self._publish_caption, numbering=numbering, offline=True, profanity=self.profanity
        )
        return self._make_local(self.queue, self.board)

    def _make_local(
        self, queue: SpeechQueue, board: CaptionBoard, name: str = "local"
    ) -> LocalWorker:
        from edgecap.services.local.process import DecoderProcess
        from edgecap.services.local.worker import LocalWorker

        local = self.loaded.config.local
        return LocalWorker(
            queue,
            DecoderProcess(local.engine, local.model_path),  # its own process: see there
            board,
            self.status,
            on_activity=self._publish_activity,
            partial_interval=local.partial_interval,
            name=name,
        )

    def _make_stdout(self) -> OutputWorker | None:
        """The stdout output behind its worker, like every other output: a reader that
        stops reading holds up nothing but this worker."""
        sc = self.loaded.config.stdout
        enabled = sc.enabled == "yes" or (sc.enabled == "auto" and not under_journal())
        if not enabled:
            return None
        from edgecap.outputs.stdout import StdoutOutput

        stream = self._stdout_stream if self._stdout_stream is not None else sys.stdout
        # captions are shown; JSON still carries the activity
        stdout = StdoutOutput.from_config(sc, stream, show_activity=False)
        return OutputWorker(stdout, self.status, drain_timeout=0.5)

    def _publish_activity(self, activity: Activity) -> None:
        """The offline engine's speech start / end: only stdout shows it (never blocks)."""
        stdout = self.stdout
        if stdout is not None:
            stdout.publish(activity)

    def _publish_caption(self, event: CaptionEvent) -> None:
        self.fanout.publish(event)

    def _make_outputs(self) -> list[OutputWorker]:
        """One worker per enabled output; each is opened (and reopened) on its own thread."""
        cfg = self.loaded.config
        outputs: list[OutputWorker] = []
        self.socket_output: SocketOutput | None = None
        if cfg.socket.enabled:
            from edgecap.outputs.socket_server import SocketOutput

            sc = cfg.socket
            spec = service(cfg.daemon.service)
            settings = spec.settings(cfg)
            self.socket_output = SocketOutput(
                sc,
                service=spec.name,
                languages=list(spec.languages(settings)),
                targets=list(spec.targets(settings)),
                translation_only=spec.translation_only(settings),
                on_clients=self._on_socket_clients,
            )
            outputs.append(OutputWorker(self.socket_output, self.status, drain_timeout=0.5))
        self.web_output: WebOutput | None = None
        if cfg.web.enabled:
            from edgecap.outputs.web.output import WebOutput

            spec = service(cfg.daemon.service)
            settings = spec.settings(cfg)
            self.web_output = WebOutput(
                cfg.web,
                self.status,
                service=spec.name,
                languages=list(spec.languages(settings)),
                targets=list(spec.targets(settings)),
                translation_only=spec.translation_only(settings),
            )
            outputs.append(OutputWorker(self.web_output, self.status, drain_timeout=0.5))
        if cfg.hdmi.enabled:
            # with a cloud service, the offline fallback's lines are marked
            from edgecap.outputs.hdmi import HdmiOutput

            mark = OFFLINE_MARK if service(cfg.daemon.service).cloud else ""
            join_url = None
            if cfg.web.enabled and cfg.web.show_qr:
                from edgecap.outputs.web.address import join_url as web_join_url

                join_url = web_join_url(cfg.web)
            hdmi = HdmiOutput.from_config(cfg.hdmi, offline_mark=mark, join_url=join_url)
            outputs.append(OutputWorker(hdmi, self.status, drain_timeout=0.5))
        if cfg.console.enabled:
            from edgecap.outputs.console import ConsoleOutput

            console = ConsoleOutput(cfg.console)
            outputs.append(OutputWorker(console, self.status, drain_timeout=0.5))
        if cfg.serial.enabled:
            from edgecap.outputs.serial.output import SerialOutput

            outputs.append(OutputWorker(SerialOutput(cfg.serial), self.status, drain_timeout=1.0))
        if cfg.transcript.enabled:
            from edgecap.outputs.transcript import TranscriptOutput

            # capture time 0 is about now: the source opens as the daemon starts
            transcript = TranscriptOutput(cfg.transcript, started_at=self.started_wall)
            outputs.append(OutputWorker(transcript, self.status, drain_timeout=0.5))
        if cfg.speaker.enabled:
            from edgecap.audio.alsa_quiet import new_pyaudio, terminate_quietly
            from edgecap.outputs.speaker import SpeakerOutput

            # PortAudio instances are made and ended the capture stage's (quiet) way
            speaker = SpeakerOutput.from_config(
                cfg.speaker,
                self.status,
                new_pyaudio=new_pyaudio,
                release_pyaudio=terminate_quietly,
            )
            outputs.append(OutputWorker(speaker, self.status, drain_timeout=0.5))
        if cfg.speaker.save_dir is not None:
            from edgecap.outputs.voice_files import VoiceFilesOutput

            voice_files = VoiceFilesOutput.from_config(cfg.speaker, self.status)
            outputs.append(OutputWorker(voice_files, self.status, drain_timeout=1.0))
        self.stdout = self._make_stdout()
        if self.stdout is not None:
            outputs.append(self.stdout)
        return outputs

    def _service_key(self) -> SecretValue | None:
        """The service key, read again from its sources at each (re)connection after a
        reload; if it has vanished since, the one read at start is used."""
        spec = service(self.loaded.config.daemon.service)
        ref = spec.settings(self.loaded.config).api_key
        try:
            return resolve(ref)
        except SecretNotFound as exc:
            log.error("%s key: %s; using the key read at start", spec.name, exc)
            return self.loaded.secrets.get(spec.section)

    def reload(self) -> None:
        """SIGHUP: read the config again and apply it without dropping the microphone.

        A config with errors is refused: the running one stays, the errors are logged and
        the status says so. Otherwise a changed service (or its settings) replaces the
        speech consumer — the old session ends gracefully, its last captions arrive — and
        changed outputs are replaced; the service key is read again in any case. Changes to
        [audio] and [gate] wait for a restart (they would interrupt the capture)."""
        if self.reloader is None:
            if self.link is not None:
                self.link.request_reload()
            return
        try:
            new = self.reloader()
            profanity = profanity_filter(new.config.daemon)  # the words file, read again
        except ConfigError as exc:
            # one message: the log's repeat limiter would fold same-shaped lines together
            log.error("reload refused, config unchanged: %s", "; ".join(exc.errors))
            self.status.set("config", "rejected", exc.errors[0] if exc.errors else "")
            return
        except Exception as exc:
            # A loader bug must never take the supervisor down: the running config stays.
            log.exception("reload refused, config unchanged: the config could not be read")
            self.status.set("config", "rejected", f"could not be read: {type(exc).__name__}")
            return
        old = self.loaded.config
        if self.status.snapshot().state_of("config") == "rejected":
            self.status.set("config", "ok")
        if (new.config.audio, new.config.gate) != (old.audio, old.gate):
            log.warning("reload: [audio] and [gate] changes take effect at the next restart")
        kept = replace(new.config, audio=old.audio, gate=old.gate)
        self.loaded = replace(new, config=kept)
        consumer_keys = {"daemon", "link", "local", *(s.section for s in SERVICES.values())}
        words_changed = profanity != self.profanity  # same file name, new words
        self.profanity = profanity
        if words_changed or any(getattr(kept, k) != getattr(old, k) for k in consumer_keys):
            self._replace_consumer()
        elif self.link is not None:
            self.link.request_reload()
        output_keys = ("socket", "web", "hdmi", "console", "serial", "transcript", "stdout")
        if any(getattr(kept, k) != getattr(old, k) for k in output_keys):
            self._replace_outputs()
        log.info("reload: configuration applied (service %s)", kept.daemon.service)

    def _replace_consumer(self) -> None:
        old = self.consumer
        old_fallback = self.fallback_worker
        old.hand_over()
        if not old.join(self.stop_timeout):
            log.error("reload: the old %s worker did not stop; restart edgecap", old.name)
            self.hung.append(old.name)
        if old_fallback is not None:
            # its queue was closed by the old link: it finishes what it holds
            if not old_fallback.join(self.stop_timeout):
                log.error("reload: the old offline fallback did not stop; restart edgecap")
                self.hung.append(old_fallback.name)
            self.status.set("fallback", "off")
        # Numbered only now: the old link (and its fallback) end their open lines with the
        # next numbers as they finish, and the new board must not hand those out again.
        first_seq = self.board.next_seq if self.board is not None else 1
        self.consumer = self._make_consumer(first_seq)
        if self.fallback_worker is not None:
            self.fallback_worker.start(self._on_worker_exit)
        self.consumer.start(self._on_worker_exit)
        log.info("reload: speech now goes to %s", self.loaded.config.daemon.service)

    def _replace_outputs(self) -> None:
        for worker in self.outputs:
            worker.request_stop()
        for worker in self.outputs:
            if not worker.join(2.0):
                self.hung.append(worker.name)
        self.outputs = self._make_outputs()
        self.fanout.workers = self.outputs
        for worker in self.outputs:
            worker.start(self._on_worker_exit)

    # --- control ------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        self._wake.set()

    def _on_worker_exit(self, worker: Worker) -> None:
        self._wake.set()

    def install_signal_handlers(self) -> None:
        def on_stop(signum: int, frame: object) -> None:
            self.request_stop(signal.Signals(signum).name)

        def on_hup(signum: int, frame: object) -> None:
            self._reload_requested = True  # handled by the loop, not inside the handler
            self._wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    # --- run ----------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.loaded.config
        log.info(
            "edgecap starting: service %s, audio %s, gate %s",
            cfg.daemon.service,
            self.source.name,
            "on" if cfg.gate.enabled else "off",
        )
        started = time.monotonic()
        self._wake.open()  # before the workers start: an exit right away still wakes us
        try:
            for worker in self.workers:
                worker.start(self._on_worker_exit)
            try:
                code = self._supervise()
            except Exception:
                # A bug here must not leave the workers running with nobody to stop them.
                log.exception("the supervisor failed; stopping")
                code = EX_SOFTWARE
            code = self._stop(code)
        finally:
            self._wake.close()
        lost = self._log_summary(started)
        if code == EX_OK and self._input_ended and lost:
            log.error(
                "the input ended with %.2f s of its speech not captioned (reported above): "
                "exit status %d",
                lost / SAMPLE_RATE,
                EX_TEMPFAIL,
            )
            code = EX_TEMPFAIL
        self.exit_code = code
        return code

    def _log_summary(self, started: float) -> int:
        """The totals of the run; returns the speech lost (samples): every loss the link
        reported (the line's total is their sum) and what the speech queue dropped."""
        cfg = self.loaded.config
        lost = self.queue.dropped_samples
        if self.link is not None:
            link = self.link
            lost += link.lost.samples
            log.info(
                "link: %d connection attempts, %d sessions, %d failures; %.2f s of speech "
                "confirmed, %.2f s replayed, %.2f s lost in %d reports; %d bytes sent",
                link.attempts,
                link.sessions,
                link.failures,
                link.buffer.confirmed_samples / SAMPLE_RATE,
                link.buffer.replayed_samples / SAMPLE_RATE,
                link.lost.seconds,
                link.loss_reports,
                link.bytes_sent,
            )
        frames = self.capture.frames_read
        log.info(
            "edgecap stopped after %.1f s: %d frames captured (%.1f s); gate forwarded %d "
            "frames in %d blocks and %d utterances; consumer received %d blocks in %d "
            "utterances; %d blocks dropped",
            time.monotonic() - started,
            frames,
            frames * frame_samples(cfg.audio.frame_ms) / SAMPLE_RATE,
            self.gate.frames_forwarded,
            self.gate.audio_out,
            self.gate.utterances,
            self.consumer.frames,
            self.consumer.utterances,
            self.queue.dropped_frames,
        )
        return lost

    def _sleep(self, timeout: float | None) -> None:
        """Until something is to be done (see ``_wake``) or ``timeout`` (None: none)."""
        self._wake.wait(timeout)
        self._wake.clear()  # before the caller looks at what is to be done
        self.wakeups += 1

    def _supervise(self) -> int:
        """The loop: wakes on a signal, a worker's exit, a change of STATUS= or the watchdog
        falling due; returns the exit code when the daemon should stop."""
        while True:
            if self._stop_reason is not None:
                log.info("stopping (%s)", self._stop_reason)
                return EX_OK
            if self._reload_requested:
                self._reload_requested = False
                self.notifier.reloading()
                self.reload()
                self.notifier.ready(self._service_status())
            self._tell_systemd()
            failed = [w for w in self.workers if w.finished.is_set() and w.error is not None]
            if failed:
                return self._failure_code(failed[0])
            if self.capture.finished.is_set():
                # End of input: the consumer works through what is queued (an offline engine
                # may need longer than the stop budget) for as long as it makes progress.
                self._await_consumer()
                self._input_ended = self._stop_reason is None
                return EX_OK
            self._sleep(self._systemd_due(time.monotonic()))

    def _failure_code(self, worker: Worker) -> int:
        if isinstance(worker.error, SourceConfigError):
            log.error("audio source cannot be used: %s", worker.error)
            return EX_CONFIG
        return EX_SOFTWARE

    def _await_consumer(self) -> None:
        """End of input: until the consumers have worked through the queue (their exit
        wakes us), a stop, or a consumer that made no progress for ``STALLED_AFTER``
        (checked every ``STALL_CHECK``: this phase comes once, at the end of a file)."""
        consumers = self.consumers
        while self._stop_reason is None:
            # finished, not alive: the exit wakes us a moment before the thread is gone
            working = [c for c in consumers if c.alive and not c.finished.is_set()]
            if not working:
                return
            now = time.monotonic()
            stalled = [c for c in working if c.stale(now, STALLED_AFTER)]
            if stalled:
                log.error("the %s worker stopped making progress", stalled[0].name)
                return
            self._tell_systemd()
            due = self._systemd_due(now)
            self._sleep(STALL_CHECK if due is None else min(due, STALL_CHECK))

    def _count_listeners(self) -> None:
        """The board's gauges (``GaugedBoard``): called on whichever thread reads it."""
        sock = self.socket_output
        if sock is not None:
            self.status.put("socket_clients", sock.clients)
        self._count_pipeline()

    def _count_pipeline(self) -> None:
        """What /metrics reports beside the parts' own counters: speech through each stage
        and the queues' depths (put() tells no listener: no event). A reload may swap the
        parts meanwhile: each is read once."""
        frame_s = frame_samples(self.loaded.config.audio.frame_ms) / SAMPLE_RATE
        put = self.status.put
        put("speech_gated_s", round(self.gate.frames_forwarded * frame_s, 3))
        put("speech_queue_s", round(self.queue.held_samples / SAMPLE_RATE, 3))
        link, fallback, consumer = self.link, self.fallback_worker, self.consumer
        if link is not None:
            buffer = link.buffer
            put("speech_confirmed_s", round(buffer.confirmed_samples / SAMPLE_RATE, 3))
            put("speech_unsent_s", round(buffer.unsent_samples / SAMPLE_RATE, 3))
        offline = fallback if link is not None else consumer
        if offline is not None:
            put("speech_offline_s", round(offline.frames * frame_s, 3))
        for worker in self.outputs:
            name = worker.output.name
            put(f"output_queue:{name}", len(worker.queue))
            put(f"output_failures:{name}", worker.failures)
            put(f"output_dropped:{name}", worker.queue.dropped_finals)

    # --- systemd ------------------------------------------------------------------------
    def _service_status(self) -> str:
        return self.status.snapshot().service_line(self.loaded.config.daemon.service)

    def _on_status(self, snap: StatusSnapshot) -> None:
        """A status listener, called on the thread that changed a part: wakes the supervisor
        only when systemd is to hear of it — READY once audio has left "starting", STATUS=
        when its line is no longer the one sent. Quick and never blocking (a string and a
        byte into a pipe); counters (put, add) call no listener, so they never wake us."""
        if not self.notifier.enabled:
            return
        if not self._ready:
            if snap.state_of("audio") not in (None, "starting"):
                self._wake.set()
        elif snap.service_line(self.loaded.config.daemon.service) != self.notifier.last_status:
            self._wake.set()

    def _on_socket_clients(self, clients: int) -> None:
        """The socket output's thread (or a publisher's, for an inline caption): a client
        came or went. STATUS= counts listeners."""
        self.status.put("socket_clients", clients)
        if self.notifier.enabled and self._ready:
            self._wake.set()

    def _systemd_due(self, now: float) -> float | None:
        """Seconds until systemd must hear from us again without being woken for it (the
        watchdog; STATUS= parts that change silently); None: not before an event."""
        if not self.notifier.enabled or not self._ready:
            return None
        due = self._status_checked + STATUS_RECHECK
        interval = self.notifier.watchdog_interval
        if interval is not None:
            due = min(due, self._last_watchdog + interval)
        if self._notice_ends is not None:
            due = min(due, self._notice_ends)
        return max(0.0, due - now)

    def _tell_systemd(self) -> None:
        """READY once capture has opened its source (or is waiting for a missing device:
        that is the daemon doing its job), STATUS when it changed, and WATCHDOG only while
        every worker is alive and recently made progress."""
        if not self.notifier.enabled:
            return
        snap = self.status.snapshot()
        now = time.monotonic()
        if not self._ready:
            if snap.state_of("audio") in (None, "starting"):
                return
            self._ready = True
            self.notifier.ready(snap.service_line(self.loaded.config.daemon.service))
        else:
            self.notifier.status(snap.service_line(self.loaded.config.daemon.service))
        self._status_checked = now
        self._notice_ends = None
        notice = snap.parts.get("notice")
        if notice is not None and snap.fresh_notice():
            # the summary drops it then: a wake-up to say so (a little after, to be sure)
            self._notice_ends = now + notice.since + NOTICE_SHOWN - snap.taken_at + 0.05
        interval = self.notifier.watchdog_interval
        if interval is None or now - self._last_watchdog < interval - WAKE_SLACK:
            return
        self._last_watchdog = now
        stale = max(interval, 2.0)
        stuck = [w.name for w in self.workers if not w.alive or w.stale(now, stale)]
        if stuck:
            self.watchdog_withheld += 1
            log.error("watchdog withheld: %s made no progress", ", ".join(stuck))
            return
        self.notifier.watchdog()

    def _stop(self, code: int) -> int:
        self.notifier.stopping()
        deadline = time.monotonic() + self.stop_timeout
        # Order matters: capture closes the queue, the consumer drains it (its last captions
        # go to the outputs), then the outputs hand on what they hold and close.
        # (The fallback's queue is closed by the link as it ends.)
        for worker in (self.capture, *self.consumers, *self.outputs):
            worker.request_stop()
            if not worker.join(deadline - time.monotonic()):
                self.hung.append(worker.name)
            elif worker.error is not None and code == EX_OK:
                code = self._failure_code(worker)
        if self.hung:
            log.critical(
                "worker(s) %s did not stop within %.1f s", ", ".join(self.hung), self.stop_timeout
            )
            return EX_SOFTWARE
        return code
