"""Keep ALSA's and JACK's diagnostics off stderr; create PyAudio instances quietly.

Why: every ``pyaudio.PyAudio()`` probes all ALSA PCM definitions and the JACK server. On a Pi
without JACK and with the stock alsa.conf this prints some 65 lines ("cannot find card '0'",
"Unknown PCM cards.pcm.rear", "Cannot connect to server socket", ...). The daemon creates a new
instance on every device reopen (that is how a replugged USB microphone is found), so with
stderr going to the journal a flapping device would flood it with meaningless lines.

- ALSA: ``snd_lib_error_set_handler`` installs a process-wide C callback. Ours forwards the
  message location to ``logging`` at DEBUG (the printf arguments cannot be read from Python,
  so only the format string is logged). The ctypes callback object must stay referenced for
  the life of the process: if it were garbage collected, ALSA would call freed memory.
- JACK: libjack has the same kind of hooks (``jack_set_error_function`` /
  ``jack_set_info_function``); they are set the same way when libjack can be loaded.
  ``JACK_NO_START_SERVER=1`` is also set (unless the user set it) so that probing never
  spawns a jackd on a machine that has one installed.
- Fallback: if a hook cannot be installed (library missing or renamed), stderr (fd 2) is
  pointed at /dev/null only while ``PyAudio()`` runs. That hides stderr output from every
  thread for those few milliseconds, so it is a last resort, serialised by a lock and always
  restored.

PortAudio's own "Expression '...' failed" lines (printed on a device error) cannot be hooked:
its debug-print setter is not exported by Debian's libportaudio2. They only appear on errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Iterator

import pyaudio

log = logging.getLogger(__name__)
alsa_log = logging.getLogger("edgecap.audio.alsa_lib")

# void (*)(const char *file, int line, const char *function, int err, const char *fmt, ...)
# Declared without the varargs: on the ABIs a Pi uses (arm64, armhf, also x86-64) a callee
# that ignores trailing variadic integer/pointer arguments is called correctly.
_ALSA_HANDLER_T = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)
_JACK_HANDLER_T = ctypes.CFUNCTYPE(None, ctypes.c_char_p)

_lock = threading.Lock()
_installed = False
_alsa_ok = False
_jack_ok = False
# Module-level references: ALSA and JACK keep the raw function pointers.
_alsa_handler: object | None = None
_jack_handler: object | None = None


def _decode(b: bytes | None) -> str:
    return b.decode("utf-8", "replace") if b else ""


def _on_alsa_error(
    file: bytes | None, line: int, func: bytes | None, err: int, fmt: bytes | None
) -> None:
    try:
        if alsa_log.isEnabledFor(logging.DEBUG):
            reason = f" ({os.strerror(abs(err))})" if err else ""
            alsa_log.debug(
                "ALSA %s:%d %s: %s%s", _decode(file), line, _decode(func), _decode(fmt), reason
            )
    except Exception:  # an exception must never cross back into C
        pass


def _on_jack_message(msg: bytes | None) -> None:
    try:
        if alsa_log.isEnabledFor(logging.DEBUG):
            alsa_log.debug("JACK: %s", _decode(msg))
    except Exception:  # an exception must never cross back into C
        pass


def _mapped_library(stem: str) -> str | None:
    """Path of the already-loaded shared library ``stem`` (e.g. "libjack"), if any.

    Hooking the copy PortAudio really uses matters: pipewire-jack, for one, installs its own
    libjack.so.0 in a directory of its own.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                if os.path.basename(path).startswith(stem + ".so"):
                    return path
    except OSError:
        pass
    return None


def _load(stem: str, soname: str) -> ctypes.CDLL | None:
    """The loaded copy of a library, else the one the dynamic linker finds; None if absent."""
    for name in (_mapped_library(stem), soname, ctypes.util.find_library(stem[3:])):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def install_handlers() -> tuple[bool, bool]:
    """Install the ALSA and JACK message hooks once per process.

    Returns (alsa hooked, jack hooked). Safe to call any number of times from any thread.
    """
    global _installed, _alsa_ok, _jack_ok, _alsa_handler, _jack_handler
    with _lock:
        if _installed:
            return _alsa_ok, _jack_ok
        _installed = True
        os.environ.setdefault("JACK_NO_START_SERVER", "1")
        asound = _load("libasound", "libasound.so.2")
        if asound is not None:
            try:
                _alsa_handler = _ALSA_HANDLER_T(_on_alsa_error)
                asound.snd_lib_error_set_handler.argtypes = [_ALSA_HANDLER_T]
                asound.snd_lib_error_set_handler.restype = ctypes.c_int
                _alsa_ok = asound.snd_lib_error_set_handler(_alsa_handler) == 0
            except AttributeError:
                _alsa_ok = False
        jack = _load("libjack", "libjack.so.0")
        if jack is not None:
            try:
                _jack_handler = _JACK_HANDLER_T(_on_jack_message)
                for setter in (jack.jack_set_error_function, jack.jack_set_info_function):
                    setter.argtypes = [_JACK_HANDLER_T]
                    setter.restype = None
                    setter(_jack_handler)
                _jack_ok = True
            except AttributeError:
                _jack_ok = False
        else:
            # PortAudio (already loaded with pyaudio) did not pull in libjack: nothing to hush.
            _jack_ok = _mapped_library("libjack") is None
        log.debug("ALSA messages hooked: %s; JACK messages hooked: %s", _alsa_ok, _jack_ok)
        return _alsa_ok, _jack_ok


_stderr_lock = threading.Lock()
# Pa_Initialize and Pa_Terminate keep process-wide state and are not thread-safe; PyAudio
# runs them without the GIL, and the capture worker and the speaker output each make and end
# instances on their own threads: one at a time.
_portaudio_lock = threading.Lock()


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Point fd 2 at /dev/null for the duration, then restore it (even on error).

    Process-wide: other threads' stderr output in that window is lost too, so keep the window
    short. Concurrent users are serialised so one cannot "restore" the other's /dev/null.
    """
    with _stderr_lock:
        try:
            saved = os.dup(2)
        except OSError:
            yield  # no fd 2 at all (closed by the service manager): nothing to silence
            return
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, 2)
            finally:
                os.close(devnull)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def new_pyaudio() -> pyaudio.PyAudio:
    """A fresh ``PyAudio()`` without the probe noise on stderr.

    ALSA and PortAudio re-read the device configuration only when PortAudio goes from zero
    to one initialised instance, so callers must ``terminate()`` every instance they create:
    while any other instance is alive in the process, a new one sees the old device list.
    """
    alsa_ok, jack_ok = install_handlers()
    with _portaudio_lock:
        if alsa_ok and jack_ok:
            return pyaudio.PyAudio()
        with stderr_silenced():
            return pyaudio.PyAudio()


def terminate_quietly(pa: pyaudio.PyAudio | None) -> None:
    """``pa.terminate()`` that never raises and always reaches ``Pa_Terminate``.

    ``PyAudio.terminate()`` first closes the instance's streams and gives up at the first one
    that fails to close, before terminating PortAudio. PortAudio would then stay initialised
    and every later instance would see a stale device list, so streams that fail to close are
    dropped from the instance before terminating (``Pa_Terminate`` closes them anyway).
    """
    if pa is None:
        return
    streams = getattr(pa, "_streams", None)
    if isinstance(streams, set):
        for stream in list(streams):
            try:
                stream.close()
            except Exception as e:  # a stream PortAudio already gave up on
                log.debug("closing a PyAudio stream failed: %r", e)
                streams.discard(stream)
    try:
        with _portaudio_lock:
            pa.terminate()
    except Exception as e:  # closing must not fail
        log.debug("PyAudio terminate failed: %r", e)
