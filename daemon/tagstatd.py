"""tagstatd, the process: arguments, logging, signals, sd_notify and the control socket.

``main`` loads the configuration, builds the service (``tagstat.service``),
and serves: the control socket in its threads, the uploader in its own, the
poll loop in the main thread. Signal handlers only set flags and wake the
loop. A configuration error exits 78 (EX_CONFIG), which the systemd unit
does not restart, so a broken file never becomes a crash loop. A home that
cannot be used (not creatable, not writable, a file, a socket path too long
to bind) is checked before anything is read or created and exits 1 with one
line; under systemd it cannot happen (the unit passes no --home, and systemd
makes the directories for the service user), so RestartPreventExitStatus
need not know it.
"""

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from tagstat.config import load_config
from tagstat.errors import ConfigError, TagstatError
from tagstat.logsetup import early_logging, setup_logging
from tagstat.paths import Paths
from tagstat.sdnotify import Notifier
from tagstat.service import EX_CONFIG, Service, build_service

log = logging.getLogger(__name__)


def simulated_backend(paths: Paths, scenario: str | None):
    """A pyusb backend serving simulated Time Taggers whose state outlives the daemon."""
    from tagstat.drivers.sim.model import Simulation
    from tagstat.drivers.sim.pyusb_backend import SimBackend
    from tagstat.drivers.sim.scenario import default_scenario, load_scenario

    sc = load_scenario(Path(scenario)) if scenario else default_scenario()
    return SimBackend(Simulation(sc, state_dir=paths.simulator_dir))


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="tagstatd",
        description="Usage-statistics daemon for Time Taggers.",
    )
    p.add_argument("--home", help="keep config, database and socket in DIR (env TAGSTAT_HOME)")
    p.add_argument(
        "--simulate",
        nargs="?",
        const="",
        metavar="SCENARIO",
        help="attach simulated Time Taggers (default scenario, or a TOML scenario file)",
    )
    p.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="overrides the configuration's log_level (default INFO)",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    early_logging(args.log_level or "INFO")
    paths = Paths.resolve(args.home)
    try:
        paths.check_socket()  # before creating anything in a home that cannot work
        paths.ensure()
    except TagstatError as e:
        log.error("%s", e)
        return 1
    try:
        config = load_config(paths.config_file)
        logging.getLogger().setLevel(args.log_level or config.log_level)
        backend = simulated_backend(paths, args.simulate) if args.simulate is not None else None
        service = build_service(paths, config, backend=backend)
    except ConfigError as e:
        log.error("configuration error: %s", e)
        return EX_CONFIG
    except TagstatError as e:
        log.error("%s", e)
        return 1
    service.log_level_override = args.log_level
    setup_logging(service.masker, args.log_level or config.log_level)
    service.count_log_records()  # the report counts tagstatd's warnings, never their text
    service.notifier = Notifier.from_env()
    return serve(service)


def serve(service: Service) -> int:
    from tagstat.access import AccessPolicy
    from tagstat.control import ControlServer

    stop = threading.Event()
    _handle_signals(service, stop)
    policy = AccessPolicy(lambda: service.config)
    server = ControlServer(service.paths.socket, service, authorize=policy.authorize,
                           socket_group=service.config.reader_group)  # fmt: skip
    service.on_reconfigure.append(lambda old, new: server.set_socket_group(new.reader_group))
    try:
        server.start()
    except TagstatError as e:
        log.error("%s", e)
        service.shutdown()
        return 1
    log.info("tagstatd started: status %s, socket %s", service.keeper.effective.name,
             service.paths.socket)  # fmt: skip
    service.uploader.start()
    try:
        service.run(stop, on_poll=_readiness(service.notifier))
    finally:
        service.notifier.stopping()
        server.stop()
        service.shutdown()
        log.info("tagstatd stopped")
    return 0


def _handle_signals(service: Service, stop: threading.Event) -> None:
    """Handlers only set flags and ring the loop's doorbell; the loop does the work."""

    def on_stop(*_):
        stop.set()
        service.wake.set()

    def on_reload(*_):
        service.reload_requested = True
        service.wake.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGHUP, on_reload)


def _readiness(notifier: Notifier):
    """on_poll: READY=1 with the status line after the first poll, then status updates."""
    ready = False

    def on_poll(service: Service) -> None:
        nonlocal ready
        if not ready:
            notifier.ready(service.status_line())
            ready = True
        else:
            notifier.status(service.status_line())

    return on_poll


if __name__ == "__main__":
    sys.exit(main())
