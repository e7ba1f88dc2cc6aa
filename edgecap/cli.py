"""The ``edgecap`` command: run, check, config, devices, tail, web-url.

Exit status: 0 success; 78 (EX_CONFIG) for any config error — the systemd unit lists it in
RestartPreventExitStatus= so a broken config does not restart-loop; 70 when a worker failed;
75 (EX_TEMPFAIL) when ``run``'s input ended with speech not captioned (see the supervisor).
This is the one module that writes to stdout/stderr directly: it is the user's terminal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from edgecap import __version__
from edgecap.config.loader import EX_CONFIG, ConfigError, LoadedConfig, load
from edgecap.config.render import render_defaults, render_effective
from edgecap.runtime.escape import escape_controls

log = logging.getLogger("edgecap")


def _config_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        action="append",
        type=str,  # not Path: Path("") would be ".", and -c "" must be reported as empty
        metavar="FILE",
        help="config file (repeatable; its FILE.d/*.ini drop-ins are read too); "
        "default /etc/edgecap/edgecap.ini",
    )
    common.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config key (repeatable)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _config_options()
    parser = argparse.ArgumentParser(
        prog="edgecap", description="Live captions from a microphone, on the box."
    )
    parser.add_argument("--version", action="version", version=f"edgecap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        parents=[common],
        help="run the daemon in the foreground",
        description="Run the daemon in the foreground until SIGTERM/SIGINT or the end of its "
        "input. Exit status: 0 after a stop, or at the end of the input with all of its speech "
        "captioned; 75 when the input ended (a file, stdin) and some of its speech was not "
        "captioned — the service was unreachable or refused the key (each loss is reported "
        "with its cause); 78 for a config error; 70 when a part of the daemon failed.",
    )
    run.add_argument("--source", choices=("alsa", "wav", "raw"), help="= --set audio.source=")
    run.add_argument("--device", help="= --set audio.device= (alsa)")
    run.add_argument("--file", help="= --set audio.source=wav --set audio.file=")
    run.add_argument("--fast", action="store_true", help="wav: as fast as possible")
    run.add_argument("--json", action="store_true", help="JSON lines on stdout")
    run.add_argument("-v", "--verbose", action="store_true", help="log debug messages")

    sub.add_parser("check", parents=[common], help="validate the config; exit 0 or 78")
    config = sub.add_parser(
        "config", parents=[common], help="print the effective config (keys masked)"
    )
    config.add_argument(
        "--defaults", action="store_true", help="print the documented default config instead"
    )
    sub.add_parser("devices", help="list capture devices")
    tail = sub.add_parser(
        "tail",
        parents=[common],
        help="print the captions of the running daemon",
        description="Print the captions of the running daemon, from its socket, until it "
        "stops. Exit status: 0 when the daemon stopped (or Ctrl-C); 69 when no daemon is "
        "running, or it went away without saying goodbye (not with --follow); 77 when the "
        "socket may not be opened (join its group: sudo usermod -aG edgecap $USER).",
    )
    tail.add_argument(
        "--json",
        action="store_true",
        help="the socket's JSON lines as they come, re-encoded as ASCII (\\u escapes)",
    )
    tail.add_argument("--socket", type=Path, help="the socket (default: [socket] path)")
    tail.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="wait for the daemon when it is not running, and reconnect when it restarts",
    )
    web_url = sub.add_parser(
        "web-url",
        parents=[common],
        help="print the address of the caption page ([web]) for phones",
        description="Print the address people open to follow the captions on their phones "
        "(with the access code in it, when there is one). Exit status: 0; 69 when the page "
        "is off ([web] enabled = no); 78 when the access code cannot be read.",
    )
    web_url.add_argument("--qr", action="store_true", help="also print it as a QR code")
    return parser


def _overrides(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    if getattr(args, "file", None):
        out += ["audio.source=wav", f"audio.file={Path(args.file).resolve()}"]
    if getattr(args, "source", None):
        out.append(f"audio.source={args.source}")
    if getattr(args, "device", None):
        out.append(f"audio.device={args.device}")
    if getattr(args, "fast", False):
        out.append("audio.realtime=no")
    if getattr(args, "json", False):
        out += ["stdout.enabled=yes", "stdout.format=json"]
    return out + list(args.set)


def _load(args: argparse.Namespace) -> LoadedConfig:
    """The config, checked also against what its service can do (the registry) and with
    its profanity words file read (config/ cannot: the parser lives in captions/)."""
    from edgecap.captions.profanity import ProfanityWordsError, load_words
    from edgecap.services.registry import service

    loaded = load(args.config, _overrides(args))
    problems = service(loaded.config.daemon.service).problems(loaded.config)
    daemon = loaded.config.daemon
    if daemon.profanity != "off" and daemon.profanity_words is not None:
        try:
            load_words(daemon.profanity_words)
        except ProfanityWordsError as exc:
            problems.append(f"daemon.profanity_words: {exc}")
    if problems:
        raise ConfigError(problems)
    return loaded


def _report_config_error(exc: ConfigError) -> int:
    count = len(exc.errors)
    sys.stderr.write(f"edgecap: {count} config error{'s' if count != 1 else ''}:\n")
    for line in exc.errors:
        sys.stderr.write(f"  {escape_controls(line)}\n")  # values are the user's: escaped
    return EX_CONFIG


def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load(args)  # before importing the daemon: a config error needs none of it
    from edgecap.daemon.supervisor import Daemon
    from edgecap.runtime.logsetup import setup_logging

    lc = loaded.config.log
    setup_logging("debug" if args.verbose else lc.level, lc.target, lc.repeat_interval)
    from edgecap.services.local.recognizers import EngineError

    try:
        daemon = Daemon(loaded, reloader=lambda: _load(args))
    except EngineError as exc:
        log.error("the offline engine cannot be used: %s", exc)
        return EX_CONFIG
    daemon.install_signal_handlers()
    code = daemon.run()
    if daemon.hung:
        logging.shutdown()
        os._exit(code)  # a thread that will not stop must not keep the process alive
    _quiet_broken_stdout()
    return code


def _quiet_broken_stdout() -> None:
    """Standard output may be a pipe whose reader left (``edgecap run | head``): the output
    already stopped writing to it; keep Python's exit-time flush from complaining too."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def cmd_check(args: argparse.Namespace) -> int:
    loaded = _load(args)
    files = ", ".join(str(p) for p in loaded.files) or "no file, built-in defaults"
    sys.stdout.write(f"config OK ({files})\n")
    from edgecap.services.registry import service

    for text in service(loaded.config.daemon.service).warnings(loaded.config):
        sys.stderr.write(f"edgecap: warning: {escape_controls(text)}\n")
    if loaded.config.hdmi.enabled and not shaping_status().startswith("available"):
        sys.stderr.write(f"edgecap: warning: [hdmi] text shaping {shaping_status()}\n")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.defaults:
        sys.stdout.write(render_defaults())
        return 0
    sys.stdout.write(render_effective(_load(args)))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from edgecap.audio.alsa_quiet import new_pyaudio, terminate_quietly
    from edgecap.audio.devices import list_capture_devices
    from edgecap.outputs.framebuffer import list_framebuffers
    from edgecap.outputs.serial.output import list_serial_ports
    from edgecap.outputs.speaker import list_playback_devices

    devices = list_capture_devices()
    sys.stdout.write("Capture devices ([audio] device):\n")
    if not devices:
        sys.stdout.write("  none found\n")
    else:
        sys.stdout.write(f"{'index':>7}  {'channels':>8}  {'rate':>6}  name\n")
    for d in devices:
        mark = "  (default)" if d.is_default else ""
        sys.stdout.write(
            f"{d.index:>7}  {d.max_input_channels:>8}  {int(d.default_rate):>6}  {d.name}{mark}\n"
        )
    sys.stdout.write("\nPlayback devices ([speaker] device):\n")
    pa = new_pyaudio()
    try:
        players = list_playback_devices(pa)
    finally:
        terminate_quietly(pa)
    for p in players:
        mark = "  (default)" if p.is_default else ""
        sys.stdout.write(
            f"{p.index:>7}  {p.max_output_channels:>8}  {p.default_rate:>6}  {p.name}{mark}\n"
        )
    if not players:
        sys.stdout.write("  none found\n")
    sys.stdout.write("\nFramebuffers ([hdmi] device):\n")
    fbs = list_framebuffers()
    for fb in fbs:
        sys.stdout.write(f"  {fb.device}  {fb.width}x{fb.height}, {fb.bpp} bpp  {fb.name}\n")
    if not fbs:
        sys.stdout.write("  none found\n")
    sys.stdout.write("\nSerial ports ([serial] device):\n")
    ports = list_serial_ports()
    for device, description in ports:
        sys.stdout.write(f"  {device}  {description}\n")
    if not ports:
        sys.stdout.write("  none found\n")
    sys.stdout.write("\nText shaping (Devanagari, Arabic … on the screen):\n")
    sys.stdout.write(f"  {shaping_status()}\n")
    from edgecap.outputs.fonts import script_fonts

    sys.stdout.write("\nIndic scripts on the screen (docs/scripts.md):\n")
    for script, path in script_fonts():
        found = str(path) if path else f"no font: apt-get install {script.package}"
        sys.stdout.write(f"  {script.name:<11} {found}\n")
    return 0


def shaping_status() -> str:
    """Whether Pillow can shape complex scripts (libraqm with FriBiDi and HarfBuzz): without
    it Devanagari is drawn letter by letter, wrongly."""
    from PIL import features

    if features.check("raqm"):
        return f"available (libraqm {features.version('raqm')})"
    return (
        "NOT available: Devanagari and Arabic captions will be drawn wrongly on the screen; "
        "install libraqm0 (apt-get install libraqm0)"
    )


def cmd_tail(args: argparse.Namespace) -> int:
    from edgecap.tail import run_tail

    path = args.socket
    if path is None:
        # Only the socket's path is needed: no service key is read for it.
        overrides = [*args.set, "daemon.service=local"]
        path = load(args.config, overrides, env={}).config.socket.path
    return run_tail(path, json_mode=args.json, follow=args.follow, out=sys.stdout, err=sys.stderr)


def cmd_web_url(args: argparse.Namespace) -> int:
    from edgecap.outputs.web.address import print_web_url

    # Only [web] is needed: no service key is read for it.
    overrides = [*args.set, "daemon.service=local"]
    web = load(args.config, overrides, env={}).config.web
    return print_web_url(web, sys.stdout, sys.stderr, qr=args.qr)


COMMANDS = {
    "run": cmd_run,
    "check": cmd_check,
    "config": cmd_config,
    "devices": cmd_devices,
    "tail": cmd_tail,
    "web-url": cmd_web_url,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        return _report_config_error(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
