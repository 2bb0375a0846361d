"""JupyterLab on localhost, driven in the system Chromium with Playwright: the fixtures.

Nothing is installed or downloaded here: Chromium comes from the system (Debian's ``chromium``
package, which ``.ci/run`` installs), Playwright from the ``dev`` extra. Without either, the tests
are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from .lab_driver import SCREENSHOTS, LabPage

CHROMIUM = os.environ.get("SUBTERRA_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
# Chromium in a closed network: no background connections, a fresh profile (Playwright makes one).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
NOTEBOOKS = ("02_visualize_paths", "04_fine_tune", "05_simulate")
# The small settings of the notebook tests, the fast way: the tiny from-scratch model, no LoRA twin.
SETTINGS = {"SUBTERRA_DOMAINS": "travel,zoom,insurance", "SUBTERRA_DOMAIN": "travel", "SUBTERRA_MAX_STEPS": "4",
            "SUBTERRA_LORA_RANK": "0", "SUBTERRA_N_EVAL": "1", "SUBTERRA_N_SCENARIOS": "2",
            "SUBTERRA_CONDITIONS": "subterranean,orchestrated"}
# JupyterLab settings: no news or update toasts over the views, no extension manager asking PyPI.
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
                "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False}}


def skip_reason() -> str | None:
    if not Path(CHROMIUM).exists():
        return (f"browser tests skipped: no Chromium at {CHROMIUM} "
                "(Debian: apt-get install chromium chromium-driver; or set SUBTERRA_CHROMIUM)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "browser tests skipped: playwright is not installed (pip install -e '.[dev]')"
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives JupyterLab in the system Chromium (skipped without it)")


def pytest_collection_modifyitems(config, items):
    reason = skip_reason()
    for item in items:
        if item.get_closest_marker("browser") and reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> list | dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture(scope="package")
def lab_root(tmp_path_factory) -> Path:
    """A root of its own: copies of the notebooks, an outputs folder with the small recipe and a corpus."""
    from subterra import load_domain
    from subterra.synthesis import synthesize
    from test_notebooks import TINY_RECIPE

    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", root / "notebooks")
    outputs = root / "outputs"
    outputs.mkdir()
    (outputs / "small.yaml").write_text(yaml.safe_dump(TINY_RECIPE))
    synthesize(load_domain("travel"), 100, outputs / "travel" / "synthesis", "offline", progress=False)
    return root


@pytest.fixture(scope="package")
def lab(lab_root):
    """``jupyter lab`` on 127.0.0.1 (a free port, a token), its config, data and settings in the root."""
    port, token = _free_port(), os.urandom(16).hex()
    home = lab_root / "home"
    for name, values in LAB_SETTINGS.items():
        file = home / "lab-settings" / f"{name}.jupyterlab-settings"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(values))
    env = {k: v for k, v in os.environ.items()
           if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL") and not k.startswith("JUPYTER")}
    env.update(SETTINGS, SUBTERRA_OUTPUTS=str(lab_root / "outputs"),
               SUBTERRA_RECIPE=str(lab_root / "outputs" / "small.yaml"),
               MPLBACKEND="module://matplotlib_inline.backend_inline", IPYTHONDIR=str(home / "ipython"),
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    log = open(lab_root / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={lab_root}", "--ServerApp.port_retries=0",
         "--ServerApp.allow_root=True", "--LabApp.expose_app_in_browser=True", "--LabApp.extension_manager=readonly"],
        cwd=lab_root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _get(f"{base}/api/status?token={token}")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter lab did not start:\n" + (lab_root / "jupyter.log").read_text()[-3000:])
                time.sleep(0.5)
        yield {"base": base, "token": token, "root": lab_root}
    finally:
        _stop(server)
        log.close()


def _stop(process: subprocess.Popen) -> None:
    """End the server and its kernels (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def shutdown_kernels(lab) -> None:
    for session in _get(f"{lab['base']}/api/sessions?token={lab['token']}"):
        request = urllib.request.Request(f"{lab['base']}/api/sessions/{session['id']}?token={lab['token']}",
                                         method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


@pytest.fixture(scope="package")
def chromium():
    # package scope, not session: Playwright's sync API keeps an event loop running in this thread until it
    # closes, and asyncio.run() in the tests after this package would fail inside it
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def lab_page(chromium, lab, request):
    """A fresh browser page on the lab; it records console errors, screenshots a failure, and shuts the kernels."""
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = LabPage(context.new_page(), lab["base"], lab["token"])
    yield page
    if getattr(request.node, "failed", False):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.page.screenshot(path=str(SCREENSHOTS / f"failed-{request.node.name}.png"))
    context.close()
    shutdown_kernels(lab)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.when == "call" and report.failed:
        item.failed = True
