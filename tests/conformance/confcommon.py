"""Shared by the Python client programs of scripts/conformance: connection settings from the
environment and the case runner (one JSON line per case on stdout)."""
import hashlib
import json
import os
import socket
import sys
import threading

ENV = os.environ
FULL = ENV.get("CONF_MODE", "ci") == "full"
CASE_TIMEOUT_S = 180 if FULL else 15
LARGE_TIMEOUT_S = 120 if FULL else 3  # a 2 MiB value takes milliseconds directly

HOST, PORT, USER = ENV.get("CONF_HOST"), ENV.get("CONF_PORT"), ENV.get("CONF_USER")
PASSWORD, DB, CA = ENV.get("CONF_PASSWORD"), ENV.get("CONF_DB"), ENV.get("CONF_CA")

_open_sockets = []  # sockets of the connections opened by the running case
_shared_sockets = []  # sockets of connections opened outside any case (shared by cases)
_in_case = False


def track_socket(fd):
    """Registers a connection's socket fd: a case that times out has its sockets shut down (and
    those of the shared connections it may be blocked on) so its blocked client call returns
    and the program goes on with the next case."""
    (_open_sockets if _in_case else _shared_sockets).append(fd)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def emit(name, ok, obs):
    sys.stdout.write(json.dumps({"case": name, "ok": bool(ok), "obs": obs}, default=str) + "\n")
    sys.stdout.flush()


def run_case(name, fn, error_obs, timeout=None, full_only=False):
    if full_only and not FULL:
        return
    timeout = timeout or CASE_TIMEOUT_S
    box = {}

    def body():
        try:
            box["r"] = fn()
        except BaseException as e:  # the exception is what the client saw
            box["r"] = (False, {"thrown": error_obs(e)})

    global _in_case
    _open_sockets.clear()
    _in_case = True
    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout)
    _in_case = False
    if t.is_alive():
        # A shared connection the case hangs on is lost for the later cases too: they fail
        # at once instead of waiting behind it.
        for fd in list(_open_sockets) + list(_shared_sockets):
            try:
                socket.socket(fileno=os.dup(fd)).shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        t.join(10)
        emit(name, False, {"thrown": {"message": f"timeout: no answer within {timeout} s"}})
        return
    ok, obs = box["r"]
    emit(name, ok, obs)
