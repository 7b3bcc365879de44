"""Drive the web demo as a user would: start `deepfake-detector serve`, judge a clip in headless Chromium.

Used by tests/test_web.py (the end-to-end and browser tests) and, run as a script, to take
the README's screenshot of the page:

    python tools/web_check.py --model models/detector.pt --clip data/sample/astronaut_00_swap.mp4 \
        --screenshot docs/web_demo.png

Chromium and ChromeDriver are Debian's (`apt-get install chromium chromium-driver`); selenium
is told where they are, so it never tries to download a driver.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# Flags that let Chromium run headless as root on a machine without network or GPU.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1900")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


@dataclass
class Server:
    """A running `deepfake-detector serve` process."""

    process: subprocess.Popen
    url: str
    log: Path
    started_s: float

    def stop(self) -> None:
        """Stop the server as Ctrl+C does (it then removes its reports), killing it after 20 s."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(model: Path, log: Path, port: int | None = None, timeout_s: float = 180.0,
                 extra_args: tuple[str, ...] = ()) -> Server:
    """Start the server on a loopback port and wait until it answers.

    Raises:
        RuntimeError: If the process exits or does not answer within ``timeout_s`` (with its log).
    """
    from deepfake_detector.interfaces.web import free_port

    port = port or free_port()
    url = f"http://127.0.0.1:{port}/"
    t0 = time.perf_counter()
    with log.open("wb") as fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "deepfake_detector.interfaces.cli", "serve", "--model", str(model), "--port", str(port),
             *extra_args],
            stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    while time.perf_counter() - t0 < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return Server(process, url, log, time.perf_counter() - t0)
        except OSError:
            time.sleep(0.5)
    process.kill()
    process.wait()
    raise RuntimeError(f"the server did not answer at {url} within {timeout_s:.0f} s:\n{log.read_text(errors='replace')}")


def find_browser() -> tuple[str, str] | str:
    """``(chromium, chromedriver)`` paths, or why there are none (a reason to skip)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e .[test])"
    browser = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return "no Chromium/ChromeDriver on PATH (Debian: apt-get install chromium chromium-driver)"
    return browser, driver


def judge_in_browser(url: str, clip: Path, screenshot: Path, timeout_s: float = 180.0) -> dict[str, str]:
    """Open the page, upload ``clip``, press Judge, wait for the verdict and the montage, take a screenshot.

    Returns:
        ``verdict`` (the verdict panel's text), ``about`` (the model panel's text) and
        ``plot`` / ``montage`` (the images' ``src``).

    Raises:
        RuntimeError: If no browser is installed.
        selenium.common.TimeoutException: If the verdict or the images do not come.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    found = find_browser()
    if isinstance(found, str):
        raise RuntimeError(found)
    browser, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    profile = tempfile.mkdtemp(prefix="dfd-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager: never download anything
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        wait = WebDriverWait(driver, timeout_s)
        driver.get(url)
        file_input = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
        file_input.send_keys(str(Path(clip).resolve()))
        # The upload is done when the file is listed in the upload box (name and extension
        # are laid out apart: look for the stem).
        wait.until(ec.text_to_be_present_in_element((By.ID, "upload"), Path(clip).stem))
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#judge"))).click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), "Verdict:"))
        images = {}
        for key in ("plot", "montage"):
            images[key] = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"#{key} img"))).get_attribute("src")
        time.sleep(1.0)  # let the images paint before the screenshot
        height = driver.execute_script("return document.getElementById('montage').getBoundingClientRect().bottom")
        driver.set_window_size(1400, max(900, min(int(height) + 160, 3000)))  # + the window frame
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        return {"verdict": driver.find_element(By.ID, "verdict").text,
                "about": driver.find_element(By.ID, "about").text, **images}
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--clip", type=Path, required=True)
    ap.add_argument("--screenshot", type=Path, required=True)
    args = ap.parse_args(argv)
    log = Path(tempfile.mkdtemp(prefix="dfd-serve-")) / "serve.log"
    server = start_server(args.model, log)
    print(f"server answered after {server.started_s:.1f} s at {server.url}")
    try:
        t0 = time.perf_counter()
        seen = judge_in_browser(server.url, args.clip, args.screenshot)
        print(f"judged in the browser in {time.perf_counter() - t0:.1f} s (load, upload, judge, render)")
        print(seen["verdict"])
    finally:
        server.stop()
    print(f"screenshot: {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
