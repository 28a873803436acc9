"""The edges an attacker or a careless operator reaches, tried against a real
``viber-exporter run``: one figure per point of issue 24 (bad bytes and signals, odd
numbers, deep JSON, idle and stalled connections, a second process, state copy, open
reads, password timing, huge callbacks, tokens in logs, IPv6).

Prints figures; asserts nothing about speed (docs/reliability.md records a run).

    python bench/attack.py                 # the full run (300 idle, 20 stalled)
    python bench/attack.py --idle 30 --stalled 4 --guesses 10   # quick
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bcrypt
import requests
from common import header, mock_process, verdict

SCRIPT = Path(sys.executable).parent / "viber-exporter"
TOKEN = "attack-api-token"  # noqa: S105 - a test value
CALLBACK = "callback/t0ken"  # a "/" once leaked into Werkzeug's access log
ROUTEE_ID = "0a047b46-a4dd-4ca8-b817-{:012d}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(mock: str, state: Path, port: int, password_hash: str, listen: str | None = None) -> str:
    from viber_exporter.testing.mock import exporter_config

    text = exporter_config(
        mock, state, exporter={"listen": listen or f"127.0.0.1:{port}", "api_token": TOKEN, "log_level": "debug"},
        polling={"tick": "1s"}, routee={"callback_token": CALLBACK},
    )
    return text + f'[exporter.basic_auth_users]\nprom = "{password_hash}"\n'


class Run:
    """A ``viber-exporter run`` child with its log in a file."""

    def __init__(self, path: Path, port: int, host: str = "127.0.0.1") -> None:
        self.path, self.url = path, f"http://{host}:{port}"
        self.log = path.with_suffix(".log")
        env = {**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""}
        self.process = subprocess.Popen([str(SCRIPT), "run", "--config", str(path)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise SystemExit(f"the exporter never became ready: {self.log.read_text()[-2000:]}")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return -1

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(f"{self.url}{path}", auth=("prom", "pw"), timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, body: object, **kwargs: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return requests.post(f"{self.url}{path}", json=body, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]

    def callback(self, body: object, data: bytes | None = None) -> requests.Response:
        url = f"{self.url}/api/v1/callbacks/routee"
        if data is not None:
            return requests.post(url, params={"token": CALLBACK}, data=data, timeout=60,
                                 headers={"Content-Type": "application/json"})
        return requests.post(url, params={"token": CALLBACK}, json=body, timeout=60)

    def metric(self, name: str) -> float:
        """A sample's value; 0 for a series not exported (nothing counted yet)."""
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> int:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)


def row(point: str, what: str, figure: object, ok: bool) -> bool:
    print(f"{point:>3}  {what:<62} {figure!s:<24} {'ok' if ok else 'FAILED'}")
    return ok


def report(run: Run, when: str) -> str:
    return f"{when}: RSS {run.status('VmRSS') / 1024:.0f} MB, {run.status('Threads')} threads"


def scrape_p95(run: Run, count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        run.get("/metrics")
        samples.append(time.perf_counter() - started)
    return statistics.quantiles(samples, n=20)[-1] * 1000


def stalled_body(port: int, authenticated: bool) -> socket.socket:
    """A near-complete 10 MiB upload that then stops sending."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    auth = f"Authorization: Bearer {TOKEN}\r\n" if authenticated else ""
    s.sendall(f"POST /api/v1/messages HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
              f"Content-Length: {10 * 1024 * 1024 - 1}\r\n\r\n".encode())
    with contextlib.suppress(OSError):  # refused after its headers: the server closed it
        s.sendall(b" " * (10 * 1024 * 1024 - 100))
    return s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=300, help="idle connections held open")
    parser.add_argument("--stalled", type=int, default=20, help="stalled near-10-MiB uploads")
    parser.add_argument("--guesses", type=int, default=27, help="wrong basic-auth guesses for the timing test")
    parser.add_argument("--callback-items", type=int, default=150_000)
    args = parser.parse_args()
    header("attack: the edges of a running exporter (issue 24)",
           "a real `viber-exporter run` against the mock providers; each point tried over real sockets, files and signals")
    results: list[bool] = []
    timings: list[bool] = []
    password_hash = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=10)).decode()
    with tempfile.TemporaryDirectory() as tmp, mock_process() as mock:
        port = free_port()
        path = Path(tmp) / "config.toml"
        path.write_text(config(mock, Path(tmp) / "s.db", port, password_hash))
        run = Run(path, port)

        def check(point: str, what: str, figure: object, ok: bool, *, timed: bool = False) -> None:
            """A point's figure and verdict. Timed ones (wall-clock figures, which a
            loaded machine moves) are reported but do not decide the exit status: the
            behaviour behind each is tested in tests/test_httpserver.py and tests/test_web.py."""
            held = row(point, what, figure, ok)
            (timings if timed else results).append(held)

        try:
            good = path.read_bytes()
            path.write_bytes(good + b"\n# caf\xe9\n")
            run.process.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            reload_answer = requests.post(f"{run.url}/-/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
            check("1", "non-UTF-8 byte + SIGHUP: alive; POST /-/reload answers", reload_answer.status_code,
                  run.alive and reload_answer.status_code == 400)
            path.write_bytes(good)
            run.process.send_signal(signal.SIGHUP)

            year_one = run.post("/api/v1/messages", {"messages": [{"provider": "bsg", "id": "1", "sent_at": "0001-01-01T00:00:00+23:59"}]})
            check("2", "sent_at 0001-01-01T00:00:00+23:59 at registration", year_one.status_code, year_one.status_code == 400)
            item = {"trackingId": ROUTEE_ID.format(1), "status": {"name": "DELIVERED", "updatedDate": "0001-01-01T00:00:00+23:59"}, "price": 1.7e308}
            pushed = run.callback([item])
            read = run.get(f"/api/v1/messages/routee/{ROUTEE_ID.format(1)}")
            check("2", "provider time in year 1: callback, then GET the message", f"{pushed.status_code}, {read.status_code}",
                  pushed.status_code == 200 and read.status_code == 200)
            latency = run.metric('viber_message_delivery_latency_seconds_sum{provider="routee"}')
            check("3", "price 1.7e308 in a callback: latency sum after it (s)", f"{latency:.0f}", latency < 60)
            cost = run.metric('viber_message_cost_total{channel="viber",currency="EUR",provider="routee"}')
            check("3", "... and the cost counter (EUR)", cost, cost == 0)

            deep = b"[" * 5000 + b"]" * 5000
            answers = [requests.post(f"{run.url}/api/v1/messages", data=deep, timeout=10,
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}).status_code,
                       run.callback(None, deep).status_code]
            check("4", "JSON nested 5000 deep: registration, callback", answers, answers == [400, 400])

            before = report(run, "before")
            idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(args.idle)]
            stalled = [stalled_body(port, authenticated=False) for _ in range(args.stalled)]
            time.sleep(1.0)
            during = report(run, f"with {args.idle} idle + {args.stalled} stalled")
            p95 = scrape_p95(run, 50)
            threads = run.status("Threads")
            check("5", f"{before}; {during}", f"{threads} threads", threads <= 40)
            check("5", "/metrics p95 under that load (ms)", f"{p95:.1f}", p95 < 250, timed=True)
            for s in idle + stalled:
                s.close()

            second_path = Path(tmp) / "second.toml"
            second_path.write_text(path.read_text().replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"))
            second = subprocess.run([str(SCRIPT), "run", "--config", str(second_path)], capture_output=True, text=True,
                                    timeout=30, env={**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""}, check=False)
            check("6", "a second exporter on the same SQLite file: exit code", second.returncode,
                  second.returncode == 1 and f"pid {run.process.pid}" in second.stderr)

            typo = subprocess.run([str(SCRIPT), "state", "copy", "--from", str(Path(tmp) / "s.bd"), "--to", str(Path(tmp) / "c.db")],
                                  capture_output=True, text=True, timeout=30, check=False)
            busy = subprocess.run([str(SCRIPT), "state", "copy", "--from", str(Path(tmp) / "s.db"), "--to", str(Path(tmp) / "c.db")],
                                  capture_output=True, text=True, timeout=30, check=False)
            check("7", "state copy from a typo / from a store in use: exit codes", f"{typo.returncode} / {busy.returncode}",
                  typo.returncode == 1 and busy.returncode == 1 and not (Path(tmp) / "s.bd").exists())

            open_reads = [requests.get(f"{run.url}{p}", timeout=10).status_code for p in ("/", "/api/v1/providers", "/api/v1/messages")]
            check("8", "/, providers, messages without credentials", open_reads, open_reads == [401, 401, 401])

            samples: dict[str, list[float]] = {"prom": [], "nobody": []}
            for _ in range(max(3, args.guesses // 3)):
                for user in samples:  # interleaved, so a change of load hits both alike
                    started = time.perf_counter()
                    requests.get(f"{run.url}/metrics", auth=(user, "wrong"), timeout=30)
                    samples[user].append(time.perf_counter() - started)
            known, unknown = (statistics.median(samples[u]) * 1000 for u in ("prom", "nobody"))
            check("9", "wrong password, known vs unknown user (median ms)", f"{known:.1f} vs {unknown:.1f}",
                  abs(known - unknown) < max(10.0, 0.3 * known), timed=True)
            stop = threading.Event()
            guesses = 0

            def guess() -> None:
                nonlocal guesses
                while not stop.is_set():
                    requests.get(f"{run.url}/metrics", auth=("prom", f"guess{guesses}"), timeout=30)
                    guesses += 1

            guessers = [threading.Thread(target=guess) for _ in range(4)]
            proc_before = _cpu(run.process.pid)
            started = time.monotonic()
            for t in guessers:
                t.start()
            p95_guessed = scrape_p95(run, 30)
            stop.set()
            for t in guessers:
                t.join(30)
            elapsed = time.monotonic() - started
            cores = (_cpu(run.process.pid) - proc_before) / elapsed
            check("9", f"{guesses / elapsed:.0f} guesses/s: exporter CPU (cores), valid scrape p95 (ms)",
                  f"{cores:.2f}, {p95_guessed:.1f}", cores < 1.3, timed=True)

            items = [{"trackingId": ROUTEE_ID.format(n), "status": {"name": "QUEUED"}} for n in range(args.callback_items)]
            huge = run.callback(items)
            check("10", f"a callback of {args.callback_items} reports", huge.status_code, huge.status_code == 413)

            run.callback([], data=b"[]")
            log_text = run.log.read_text()
            leaks = log_text.count("t0ken")
            check("11", "callback token (with '/') in the debug log: occurrences", leaks, leaks == 0)
        finally:
            code = run.stop()
        check("-", "SIGTERM after all of it: exit code", code, code == 0)

        port6 = free_port()
        path.write_text(config(mock, Path(tmp) / "s.db", port6, password_hash, listen=f"[::]:{port6}"))
        run6 = Run(path, port6)
        try:
            answers = []
            for host in ("127.0.0.1", "[::1]"):
                answers.append(requests.get(f"http://{host}:{port6}/-/healthy", timeout=5).status_code)
            check("12", 'listen "[::]": IPv4 and IPv6 loopback answer', answers, answers == [200, 200])
        finally:
            run6.stop()
    print(f"result: {sum(results)} of {len(results)} checks held; {verdict(all(results))}; "
          f"timed figures: {sum(timings)} of {len(timings)} within their targets")
    return 0 if all(results) else 1


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
