#!/usr/bin/env python
"""The live gate explorer in a real browser: JupyterLab on localhost, headless Chromium driven by Selenium.

Runs a copy of notebooks/01_gate_explorer.ipynb (one sample, no calibration, its figures into a scratch folder),
waits for the explorer's timeline, drags the threshold slider, checks that the timeline image and the read-out
changed, and saves a screenshot of the explorer. Needs Debian's `chromium` and `chromium-driver` packages and the
project's dev extras (selenium):

    apt-get install -y chromium chromium-driver
    .venv/bin/python scripts/check_explorer_browser.py            # run before each release

Writes results/figures/explorer_browser.png and results/explorer_browser.md (date, machine, latencies).
Exit status 0 when the timeline changed after the slider moved, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRAGS = (25, -45, 20)  # threshold slider moves, in pixels


def prepare_notebook(folder: Path, steps: int, model_name: str) -> Path:
    import papermill

    source = papermill.iorw.load_notebook_node(str(ROOT / "notebooks" / "01_gate_explorer.ipynb"))
    parameters = dict(model_name=model_name, num_samples=1, num_inference_steps=steps, calibrate_target_speedup=None,
                      live=True, live_samples=1, results_dir=str(folder / "results"))
    notebook = papermill.parameterize.parameterize_notebook(source, parameters)
    path = folder / "explorer.ipynb"
    papermill.iorw.write_ipynb(notebook, str(path))
    return path


def start_jupyterlab(folder: Path, token: str, threads: int | None) -> tuple[subprocess.Popen, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--ServerApp.token={token}", f"--ServerApp.root_dir={folder}", "--allow-root",
               "--LabApp.expose_app_in_browser=True"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return server, port
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise RuntimeError("JupyterLab did not answer within 120 s")


def open_browser(width: int = 1400, height: int = 2000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait_for(condition, timeout: float, what: str, poll: float = 0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


def explorer_state(driver) -> tuple[str, str] | None:
    """(timeline image source, read-out text) once the explorer shows a finished run, else None."""
    from selenium.webdriver.common.by import By

    images = driver.find_elements(By.CSS_SELECTOR, ".cgtaylor-timeline")
    readouts = driver.find_elements(By.CSS_SELECTOR, ".cgtaylor-readout")
    if not images or not readouts or "steps computed" not in readouts[0].text:
        return None
    return images[0].get_attribute("src"), readouts[0].text


def drag_threshold(driver, pixels: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    handle = driver.find_element(By.CSS_SELECTOR, ".cgtaylor-threshold .noUi-handle")
    ActionChains(driver).click_and_hold(handle).move_by_offset(pixels // 2, 0).move_by_offset(pixels - pixels // 2, 0) \
        .release().perform()


def run_check(driver, url: str, timeout: float) -> dict:
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(lambda: driver.execute_script("return !!(window.jupyterapp && document.querySelector('.jp-Notebook'))"),
             120, "the notebook to open")
    wait_for(lambda: driver.execute_script(
        "const k = window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel;"
        "return k && k.status === 'idle';"), 120, "the kernel to start")
    started = time.time()
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    before = wait_for(lambda: explorer_state(driver), timeout, "the explorer's first run")
    first_seconds = time.time() - started
    timeline = driver.find_element(By.CSS_SELECTOR, ".cgtaylor-timeline")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", timeline)
    readouts, latencies, changed = [before[1]], [], True
    for pixels in DRAGS:
        pixels_before = timeline.screenshot_as_png
        moved = time.time()
        drag_threshold(driver, pixels)
        after = wait_for(lambda: (s := explorer_state(driver)) and s != before and s, timeout,
                         "the explorer to redraw after the threshold moved")
        latencies.append(time.time() - moved)
        changed = changed and after[0] != before[0] and timeline.screenshot_as_png != pixels_before
        readouts.append(after[1])
        before = after
    return dict(readouts=readouts, first_seconds=first_seconds, latencies=latencies, timeline_changed=changed)


def write_report(result: dict, args, screenshot: Path) -> Path:
    lines = [
        "# The live gate explorer in a browser (`scripts/check_explorer_browser.py`)",
        "",
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores shared with other work (load average {os.getloadavg()[0]:.1f} at the end), "
        f"torch threads in the kernel: {args.threads or 'torch default'}; headless Chromium through Selenium.",
        f"- Model `{args.model}`, 1 sample, {args.steps} steps.",
        f"- First explorer run after Run All (includes the notebook's own run and the full-compute reference): "
        f"{result['first_seconds']:.1f} s.",
        f"- Threshold slider dragged {len(DRAGS)} times ({', '.join(f'{p:+d}' for p in DRAGS)} px): redrawn "
        f"{', '.join(f'{t:.1f}' for t in result['latencies'])} s later in the browser. Read-outs, first to last:",
        *(f"  - {readout}" for readout in result["readouts"]),
        f"- Timeline image changed: {'yes' if result['timeline_changed'] else 'NO'}. Screenshot: `{screenshot}`.",
    ]
    path = ROOT / "results" / "explorer_browser.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dit-digits")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the kernel (OMP_NUM_THREADS)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for each explorer run")
    args = parser.parse_args()
    screenshot = ROOT / "results" / "figures" / "explorer_browser.png"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        prepare_notebook(folder, args.steps, args.model)
        token = secrets.token_hex(16)
        server, port = start_jupyterlab(folder, token, args.threads)
        driver = None
        try:
            driver = open_browser()
            result = run_check(driver, f"http://127.0.0.1:{port}/lab/tree/explorer.ipynb?token={token}", args.timeout)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.find_element("css selector", ".cgtaylor-explorer").screenshot(str(screenshot))
        finally:
            if driver is not None:
                driver.quit()
            server.terminate()
            server.wait(timeout=30)
    report = write_report(result, args, screenshot.relative_to(ROOT))
    print(report.read_text())
    return 0 if result["timeline_changed"] else 1


if __name__ == "__main__":
    sys.exit(main())
