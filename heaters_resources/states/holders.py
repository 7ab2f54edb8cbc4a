"""Who a worker is, in terms another process can check: host, boot and pid namespace, pid and
the pid's start time (`states.leases` stores it in a lease row; `steps.common` names scratch
folders with it). A pid means something only within one boot and pid namespace; with its start
time it names one process (pids are reused)."""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Holder:
    owner: str
    run_id: str | None
    host: str
    boot_id: str
    pid: int
    pid_start: int


def host_name() -> str:
    return socket.gethostname()


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _ns(name: str) -> str:
    try:
        return os.readlink(f"/proc/self/ns/{name}")
    except OSError:
        return ""


@functools.cache
def boot_scope() -> str:
    """This kernel boot and this pid namespace: the scope in which a pid names a process.

    The hostname alone is not enough: two containers on one host (host networking) share it
    but not their pids, and a reboot reuses pids. Only a lease with the same host *and* this
    id is judged by the process table; any other waits for its expiry (or its Dagster run)."""
    boot = _read("/proc/sys/kernel/random/boot_id") or str(int(psutil.boot_time()))
    return f"{boot}/{_ns('pid')}"


def _pid_start(pid: int) -> int:
    """The process's start time in ms: with the pid, it names one process (pids are reused)."""
    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except (psutil.Error, OSError):
        return 0


def process_holder(run_id: str | None = None) -> Holder:
    pid = os.getpid()
    host, start = host_name(), _pid_start(pid)
    owner = f"{host}:{pid}:{start}" + (f":run:{run_id}" if run_id else "")
    return Holder(owner, run_id, host, boot_scope(), pid, start)


def pid_alive(pid: int, pid_start: int) -> bool:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return not pid_start or int(proc.create_time() * 1000) == pid_start
    except (psutil.Error, OSError):
        return False
