"""Signals cannot be lost, and a signal during start-up never kills the exporter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .children import SCRIPT, free_port

STRESS = """
import os, random, signal, sys, threading, time
from viber_exporter.signals import signals_blocked
def burn(stop):
    while not stop.is_set():
        sum(i * i for i in range(2000))

rng = random.Random(7)
reloads = expected = 0
def reload():
    global reloads
    reloads += 1

stop = threading.Event()
with signals_blocked() as signals:  # before any thread starts, as the console script does
    burners = [threading.Thread(target=burn, args=(stop,), daemon=True) for _ in range(2)]
    for burner in burners:
        burner.start()
    for cycle in range(int(sys.argv[1])):
        hups = rng.randrange(3)
        expected += hups
        final = signal.SIGINT if cycle % 2 else signal.SIGTERM
        delay = rng.choice((0.0, 0.0001, 0.001, 0.003))

        def send(hups=hups, final=final, delay=delay):
            time.sleep(delay)
            for _ in range(hups):
                os.kill(os.getpid(), signal.SIGHUP)  # process-directed, as kill(1) sends them
                time.sleep(0.0005)  # one SIGHUP at a time: pending signals do not queue
            os.kill(os.getpid(), final)

        sender = threading.Thread(target=send)
        sender.start()
        got = signals.wait(reload, timeout=10)
        sender.join()
        if got is not final:
            sys.exit(f"cycle {cycle}: expected {final.name}, got {got}")
    stop.set()
print(f"ok {reloads} {expected}")
"""


@pytest.mark.slow
def test_hundreds_of_signals_under_cpu_load_are_never_lost():
    """Each cycle sends one SIGINT or SIGTERM (after some SIGHUPs) to the process at a
    random moment, from another thread, while two threads burn the CPU; every one is
    taken. In a child process: a process-directed signal goes to any thread that does
    not block it, and pytest's own threads (or a previous test's) do not."""
    result = subprocess.run([sys.executable, "-c", STRESS, "400"], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    _, reloads, expected = result.stdout.split()
    # SIGHUPs sent faster than they are taken coalesce (a pending signal is pending once):
    # for reloads that is harmless. Stop signals were never lost.
    assert 0 < int(reloads) <= int(expected)


def wait_until_blocked(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        blocked = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16)
        if blocked & (1 << (signal.SIGHUP - 1)):
            return
        time.sleep(0.001)
    raise AssertionError("the signals were never blocked")


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[exporter]
listen = "127.0.0.1:{port}"
state_path = "{tmp_path / 's.db'}"
[providers.b]
plugin = "bsg"
api_key = "live_signals-test-key"
base_url = "http://127.0.0.1:9"
""")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.5, 0.8, 1.2])
def test_a_sighup_at_any_stage_of_start_up_is_a_reload_not_a_death(tmp_path, delay):
    port = free_port()
    config = write_config(tmp_path, port)
    env = {**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""}
    process = subprocess.Popen([str(SCRIPT), "run", "--config", str(config)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # From the moment our code runs (the console script blocks the signals first):
        # before that, the interpreter itself is still starting.
        wait_until_blocked(process.pid)
        time.sleep(delay)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert process.poll() is None, f"died on a SIGHUP {delay}s after start: {process.stderr.read()}"
            try:
                if requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("never became ready")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert "stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
