"""Benchmark: how long `deepfake-detector serve` takes to serve its page, and to be ready to judge.

Usage:
    python benchmarks/bench_serve_start.py [--model PATH] [--clip PATH] [--repeats 1] [--timeout 180]

Each repeat starts a fresh ``python -m deepfake_detector.interfaces.cli serve --port N`` (a free loopback
port) and measures, wall-clock from the start of the process:

(page)   the first HTTP 200 on ``/``: what someone who opened the page waits for;
(model)  the server's ``model ready`` line on stderr (the detector and MTCNN loaded in the
         background after the page is up); a server that loads the model before serving
         prints no such line, and its model is ready when the page is;
(judge)  with ``--clip``: the first verdict through the page's API (``/judge``, gradio_client),
         asked for as soon as the page answers: loading and judging together.

Then the server is stopped as Ctrl+C does (SIGINT) and its exit status and the time it took
to exit are printed. No figure is asserted: another process on the same cores slows every
step, so say what else was running when quoting them. To time another checkout (before a
change), run this script with ``PYTHONPATH=<that checkout>/src``: the server is started with
the same interpreter and environment, so it imports that checkout's package.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What the server prints on stderr once the model is loaded (deepfake_detector.interfaces.web.READY_LINE).
READY_MARK = "model ready"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerRun:
    """One server process, with the time each line of its stderr arrived."""

    def __init__(self, model: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.lines: list[tuple[float, str]] = []
        self.t0 = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deepfake_detector.interfaces.cli", "serve", "--model", str(model), "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append((time.perf_counter() - self.t0, line.rstrip("\n")))

    def log(self) -> str:
        return "\n".join(line for _, line in self.lines[-40:])

    def first_page(self, timeout_s: float) -> float:
        """Seconds until ``/`` answers 200."""
        while time.perf_counter() - self.t0 < timeout_s:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with status {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - self.t0
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"no page at {self.url} within {timeout_s:.0f} s:\n{self.log()}")

    def model_ready(self, page_s: float, timeout_s: float) -> float:
        """Seconds until the ``model ready`` line; ``page_s`` for a server that never prints one."""
        while time.perf_counter() - self.t0 < timeout_s:
            for t, line in self.lines:
                if READY_MARK in line:
                    return t
            if self.process.poll() is not None or self._loaded_before_page():
                return page_s
            time.sleep(0.1)
        raise SystemExit(f"no {READY_MARK!r} line within {timeout_s:.0f} s:\n{self.log()}")

    def _loaded_before_page(self) -> bool:
        # A server that loads the model before serving prints the served URL after loading it
        # and never says "model ready".
        return any("web demo on http" in line for _, line in self.lines) and not any(
            "loading the model" in line for _, line in self.lines)

    def first_verdict(self, clip: Path) -> float:
        """Seconds until the first verdict through the page's API."""
        from gradio_client import Client, handle_file

        client = Client(self.url, verbose=False)
        summary = client.predict(handle_file(str(clip)), api_name="/judge")[0]
        if not summary.startswith("## Verdict:"):
            raise SystemExit(f"unexpected answer: {summary[:300]}")
        return time.perf_counter() - self.t0

    def stop(self) -> tuple[int, float]:
        """Stop it as Ctrl+C does; its exit status and how long it took to exit."""
        t = time.perf_counter()
        self.process.send_signal(signal.SIGINT)
        try:
            rc = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            rc = self.process.wait()
        self._reader.join(timeout=5)
        return rc, time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print each repeat's figures and the medians, in seconds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "release" / "detector.pt")
    parser.add_argument("--clip", type=Path, default=None, help="also time the first verdict on this file")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each step")
    args = parser.parse_args(argv)

    import deepfake_detector

    figures: dict[str, list[float]] = {"page": [], "model": [], "judge": []}
    for i in range(args.repeats):
        run = ServerRun(args.model, free_port())
        try:
            page = run.first_page(args.timeout)
            judge = run.first_verdict(args.clip) if args.clip else None
            model = run.model_ready(page, args.timeout)
        finally:
            rc, exit_s = run.stop()
        figures["page"].append(page)
        figures["model"].append(model)
        if judge is not None:
            figures["judge"].append(judge)
        tail = [line for _, line in run.lines[-3:]]
        print(f"[{i + 1}] page {page:5.1f} s | model ready {model:5.1f} s"
              + (f" | first verdict {judge:5.1f} s" if judge is not None else "")
              + f" | SIGINT: exit status {rc} after {exit_s:.1f} s; last stderr lines {tail}", flush=True)
    print(f"package: {Path(deepfake_detector.__file__).parent}; model: {args.model}; repeats {args.repeats}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("medians: " + " | ".join(f"{k} {statistics.median(v):.1f} s" for k, v in figures.items() if v))


if __name__ == "__main__":
    main()
