"""The web servers of ``ablate ui`` (MLflow, a child process) and ``ablate dashboard`` (in this process).

Both follow one policy: loopback only unless ``--insecure`` (neither server has any
authentication); the URL is printed only once the server answers; a server that dies first is
one error line with the tail of its log; and the server stops with the command, whether it is
stopped by Ctrl-C, SIGTERM or SIGKILL (see ``ablate.signals``).

Example:
    >>> check_host("192.168.1.5", insecure=False, what="the MLflow UI")
    Traceback (most recent call last):
    AblateError: --host 192.168.1.5 would serve the MLflow UI beyond this machine without authentication; ...
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, NoReturn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ablate import signals
from ablate.errors import AblateError

STARTUP_S = 300.0  # an MLflow server on a loaded laptop takes a minute or more to answer
STOP_S = signals.KEEPER_GRACE_S + 5  # the keeper ends the server's group within its own grace
POLL_S = 0.5
TAIL_CHARS = 240  # of a dead server's log, in its one error line


def check_host(host: str, insecure: bool, what: str) -> None:
    """Refuses a non-loopback ``host`` unless ``insecure``; then says, in one line, what it exposes."""
    if is_loopback(host):
        return
    if not insecure:
        raise AblateError(f"--host {host} would serve {what} beyond this machine without authentication; "
                          f"keep the default 127.0.0.1 (reach it with `ssh -L PORT:127.0.0.1:PORT`) "
                          f"or pass --insecure to expose it anyway.")
    print(f"ablate: warning: {what} on {host} has no authentication: anyone who reaches this port can read "
          f"and change everything in it.", file=sys.stderr)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def local_url(host: str, port: int, path: str = "/") -> str:
    """Where this machine reaches a server bound to ``host`` (an all-interfaces address: loopback)."""
    try:
        everywhere = not host or ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name
        everywhere = False
    if everywhere:
        host = "::1" if ":" in host else "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"


def check_port_free(host: str, port: int) -> None:
    """Refuses a port already in use, before a server that could not bind it starts (and another answers)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            s.bind((host, port))
    except OSError as e:
        raise AblateError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port.") from None


def answers(url: str, timeout: float = 2.0) -> bool:
    """True once an HTTP server answers ``url`` (with any status below 500)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError as e:
        return e.code < 500
    except (urllib.error.URLError, OSError):
        return False


def wait_until_answers(url: str, gone: Callable[[], str | None], what: str, timeout_s: float = STARTUP_S) -> None:
    """Polls ``url`` until it answers; ``gone()`` says why the server is gone (None: still starting)."""
    deadline = time.monotonic() + timeout_s
    while not answers(url):
        reason = gone()
        if reason is not None:
            raise AblateError(f"{what} stopped before answering: {reason}")
        if time.monotonic() > deadline:
            raise AblateError(f"{what} did not answer {url} within {timeout_s:.0f} s.")
        time.sleep(POLL_S)


def log_tail(path: Path) -> str:
    """The end of a server's log, on one line (for an error line)."""
    text = " | ".join(line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip())
    return ("..." + text[-TAIL_CHARS:]) if len(text) > TAIL_CHARS else text or "(empty log)"


def serve_child(cmd: list[str], url: str, log: Path, what: str, announce: str,
                env: dict[str, str] | None = None) -> NoReturn:
    """Runs the server ``cmd`` under a keeper (see ``ablate.signals.keep``), logging to ``log``.

    Prints ``announce`` once ``url`` answers, then serves until stopped; always ends the server.
    A server that exits by itself is an error (one line, with the tail of its log).
    """
    with open(log, "w") as out:
        keeper = subprocess.Popen(signals.keeper_command(cmd), stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                  preexec_fn=signals.die_with_parent())  # noqa: PLW1509 - see die_with_parent

    def gone() -> str | None:
        return None if keeper.poll() is None else f"exit {keeper.returncode}; {log}: {log_tail(log)}"

    try:
        wait_until_answers(url, gone, what)
        print(announce, flush=True)
        keeper.wait()
        raise AblateError(f"{what} stopped by itself: {gone()}")
    finally:
        signals.stop([keeper], STOP_S, group=True)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow request does not hold the command open once it is stopped


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """No access log: the terminal shows the URL and errors, not every page load."""


def serve_wsgi(app: Any, host: str, port: int, what: str, announce: str) -> NoReturn:
    """Serves the WSGI ``app`` in this process; prints ``announce`` once it answers; serves until stopped.

    The server runs in a thread so that the main thread, where stop signals arrive, can wait
    for the first answer and then for a stop.
    """
    try:
        httpd = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as e:
        raise AblateError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port.") from None
    thread = threading.Thread(target=httpd.serve_forever, name="serve", daemon=True)
    thread.start()
    try:
        wait_until_answers(local_url(host, port), lambda: None if thread.is_alive() else "its thread ended", what)
        print(announce, flush=True)
        while thread.is_alive():
            thread.join(POLL_S)  # a bounded join: signals are handled between joins
        raise AblateError(f"{what} stopped by itself.")
    finally:
        httpd.shutdown()
        httpd.server_close()
