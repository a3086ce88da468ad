"""JupyterLab in a real (headless) browser: notebook 00 runs to the end, draws its figures, shows no error.

One JupyterLab server (this venv's ``python -m jupyterlab``, loopback, random port and token, root folder a
temporary directory) serves copies of ``notebooks/00_method.ipynb``; Debian's Chromium, driven by playwright,
opens a copy, runs every cell through JupyterLab's own ``notebook:run-all-cells`` command and waits until the
kernel is idle. Then it checks what a user would see: every code cell has an execution count, at least one
figure (an ``<img>`` with a non-zero natural width) is in an output area, and no output is an error or a
traceback. The second case adds a raising cell to its copy and checks that the same inspection reports the
error (so the first case could fail). The server is stopped by its PID; the saved copy must still be a valid
notebook, and the committed results must be untouched (the copy writes to ``<tmp>/results``).

Needs ``/usr/bin/chromium`` (Debian package ``chromium``), ``playwright`` and ``jupyterlab`` (the ``dev``
extra); skipped where one is missing. ``.ci/run`` installs chromium. Run it alone with
``.venv/bin/python -m pytest -m browser``; ``ADADF_BROWSER_SCREENSHOT=<folder or .png>`` keeps the screenshot.
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_method.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking switches Chromium's own connections are refused on a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 90          # JupyterLab answering /api/status
APP_READY_S = 120            # the page loaded, the notebook open, its kernel idle
RUN_ALL_S = 180              # notebook 00 takes about 11 s under papermill
FAILING_CELL = 'raise RuntimeError("deliberately failing cell (tests/test_browser.py)")\n'
# the committed reference, which a notebook run in JupyterLab must never touch
COMMITTED_OUTPUTS = sorted((ROOT / "results" / "reference").rglob("*"))


def _missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    for module, extra in (("playwright", "dev"), ("jupyterlab", "dev or lab")):
        if importlib.util.find_spec(module) is None:
            return f"python package {module!r} is missing (pip install -e '.[{extra}]')"
    return None


if _missing():
    pytestmark = [pytest.mark.browser, pytest.mark.skip(reason=f"browser test skipped: {_missing()}")]


# --------------------------------------------------------------------------------------------- server
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (the kernels a server started), read from /proc; [] elsewhere."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate the server by its PID (SIGTERM: it shuts its kernels down), kill it on timeout, then end
    any kernel it left behind, again by PID."""
    children = _child_pids(proc.pid)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Lab:
    """A running JupyterLab server: its folder, URL, token and log."""

    def __init__(self, root: Path, port: int, token: str, proc: subprocess.Popen, log: Path):
        self.root, self.port, self.token, self.proc, self.log = root, port, token, proc, log
        self.base = f"http://127.0.0.1:{port}"
        self.results = root / "results"          # $ADADF_LAB_RESULTS: the notebooks' scratch folder

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.base}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as response:
            body = response.read().decode()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel through the server's API (each case starts its own)."""
        for kernel in self.api("/api/kernels"):
            self.api(f"/api/kernels/{kernel['id']}", method="DELETE")

    def log_tail(self, chars: int = 6000) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else "(no log)"
        return f"--- JupyterLab server log (tail) ---\n{text[-chars:]}"


def _kernel_dir(base: Path) -> Path:
    """A JUPYTER_PATH whose ``python3`` kernel is this interpreter (the notebooks' kernelspec name)."""
    spec = base / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (adadf)", "language": "python"}))
    return base


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    # every cell stays in the page (no virtual scrolling), so the page holds all outputs at once; no news toast
    for plugin, values in (("notebook-extension/tracker", {"windowingMode": "none"}),
                           ("apputils-extension/notification", {"fetchNews": "false"})):
        settings = tmp / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ,
               ADADF_LAB_RESULTS=str(root / "results"),
               JUPYTER_PATH=str(_kernel_dir(tmp / "jupyter")),
               JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               IPYTHONDIR=str(tmp / "ipython"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env.pop("JUPYTER_PREFER_ENV_PATH", None)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.root_dir={root}",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", "--LabApp.expose_app_in_browser=True",
           f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "getuid") and os.getuid() == 0:
        cmd.append("--allow-root")
    log = tmp / "server.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    server = Lab(root, port, token, proc, log)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode} while starting\n{server.log_tail()}")
            try:
                server.api("/api/status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s\n{server.log_tail()}")
                time.sleep(0.5)
        kernel = server.api("/api/kernelspecs")["kernelspecs"].get("python3")
        assert kernel and kernel["spec"]["argv"][0] == sys.executable, \
            f"the server's python3 kernel is not this venv's python: {kernel}\n{server.log_tail()}"
        yield server
    finally:
        _stop(proc)
    assert proc.poll() is not None, f"JupyterLab (PID {proc.pid}) is still running"


# -------------------------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _copy_notebook(folder: Path, failing: bool) -> Path:
    """notebooks/00_method.ipynb copied, as it is committed, into ``folder`` and, if ``failing``, with a
    raising cell after the imports. Its default output_dir (None) sends its results to the scratch folder,
    here $ADADF_LAB_RESULTS/synthfer."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    cells = nb["cells"]

    def code(source: str) -> dict:
        return {"cell_type": "code", "execution_count": None, "id": secrets.token_hex(4), "metadata": {},
                "outputs": [], "source": source}

    if failing:
        imports = next(i for i, c in enumerate(cells) if c["cell_type"] == "code" and "import" in "".join(c["source"]))
        cells.insert(imports + 1, code(FAILING_CELL))
    folder.mkdir(parents=True)
    path = folder / NOTEBOOK.name
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


# The notebook as JupyterLab holds it (its model, not the page): kernel status and, per code cell,
# execution count, error outputs and stderr text.
STATE_JS = """() => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  if (!w || !w.content || !w.content.model || !w.sessionContext) return null;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  const cells = [];
  const list = w.content.model.cells;
  for (let i = 0; i < list.length; i++) {
    const c = list.get(i);
    if (c.type !== 'code') continue;
    const outputs = c.outputs.toJSON();
    cells.push({
      index: i, count: c.executionCount,
      errors: outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
      stderr: outputs.filter(o => o.output_type === 'stream' && o.name === 'stderr')
                     .map(o => Array.isArray(o.text) ? o.text.join('') : o.text).join(''),
    });
  }
  return {path: w.context.path, kernel: kernel ? kernel.status : null, cells: cells,
          running: Array.from(document.querySelectorAll('.jp-Notebook .jp-InputPrompt'))
                        .filter(e => e.textContent.includes('*')).length};
}"""

# What the page shows: figures with their natural size, and error or traceback outputs.
PAGE_JS = """() => {
  const imgs = Array.from(document.querySelectorAll('.jp-Notebook .jp-OutputArea-output img'));
  const shown = Array.from(document.querySelectorAll(
      '.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"],' +
      '.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'));
  return {figures: imgs.filter(i => i.complete && i.naturalWidth > 0).map(i => [i.naturalWidth, i.naturalHeight]),
          images: imgs.length,
          errors: shown.map(e => e.textContent).filter(t => /Traceback|Error/.test(t)).map(t => t.slice(0, 400))};
}"""


def _wait(page, predicate, timeout_s: float, what: str, lab: Lab):
    """Poll STATE_JS until ``predicate(state)`` holds; fail with the state and the server log otherwise."""
    deadline, state = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        state = page.evaluate(STATE_JS)
        if state and predicate(state):
            return state
        page.wait_for_timeout(500)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}; last state: {json.dumps(state)[:3000]}\n"
                f"{lab.log_tail()}")


def _run_in_lab(lab: Lab, browser, name: str, failing: bool):
    """Open the copy in JupyterLab, run all cells, wait for the end; (state, page, screenshot, notebook)."""
    folder = lab.root / name
    path = _copy_notebook(folder, failing)
    rel = path.relative_to(lab.root).as_posix()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    try:
        # a workspace of its own: the page opens this notebook only
        page.goto(f"{lab.base}/lab/workspaces/{name}/tree/{rel}?token={lab.token}", timeout=APP_READY_S * 1000)
        page.wait_for_function("() => window.jupyterapp !== undefined", timeout=APP_READY_S * 1000)
        _wait(page, lambda s: s["path"] == rel and s["kernel"] == "idle", APP_READY_S,
              f"JupyterLab to open {rel} with an idle kernel (browser console: {console[-5:]})", lab)
        n_code = len(page.evaluate(STATE_JS)["cells"])
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells')"
                      ".then(() => { window.__runAllResult = 'done'; },"
                      "      e => { window.__runAllResult = 'failed: ' + e; }); }")
        # finished: the command's promise settled, no prompt shows [*], the kernel is idle; a cell that
        # raised stops the run (JupyterLab leaves the later cells unexecuted)
        _wait(page, lambda s: page.evaluate("() => window.__runAllResult") is not None
              and s["kernel"] == "idle" and s["running"] == 0, RUN_ALL_S,
              "all cells to run and the kernel to become idle", lab)
        page.wait_for_timeout(500)                                   # the last outputs' images decode
        shown = page.evaluate(PAGE_JS)
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty",
                               timeout=30_000)
        figure = page.locator(".jp-Notebook .jp-OutputArea-output img")
        if figure.count():
            figure.first.scroll_into_view_if_needed()
        screenshot = folder / "jupyterlab.png"
        page.screenshot(path=str(screenshot), full_page=True)
        target = os.environ.get("ADADF_BROWSER_SCREENSHOT")
        if target:
            target = Path(target)
            if target.suffix.lower() != ".png":
                target.mkdir(parents=True, exist_ok=True)
                target = target / f"{name}.png"
            shutil.copyfile(screenshot, target)
        state = page.evaluate(STATE_JS)
    finally:
        page.close()
        lab.shutdown_kernels()
    return state, shown, n_code, path, console


def _problems(state, shown, n_code) -> list[str]:
    """What a user would call a failed Run All, in words (empty when the notebook ran cleanly)."""
    problems = []
    counts = [c["count"] for c in state["cells"]]
    executed = sum(c is not None and c > 0 for c in counts)
    if executed != n_code:
        problems.append(f"{executed} of {n_code} code cells executed (execution counts {counts})")
    for c in state["cells"]:
        if c["errors"]:
            problems.append(f"cell {c['index']} raised: {c['errors']}")
        if "Traceback" in c["stderr"] or "Error" in c["stderr"]:
            problems.append(f"cell {c['index']} wrote an error to stderr: {c['stderr'][:400]!r}")
    if shown["errors"]:
        problems.append(f"the page shows {len(shown['errors'])} error output(s): {shown['errors'][0]!r}")
    if not shown["figures"]:
        problems.append(f"no figure rendered ({shown['images']} <img> in output areas, none with a natural width)")
    return problems


def _mtimes():
    return {p: p.stat().st_mtime_ns for p in COMMITTED_OUTPUTS if p.is_file()}


@pytest.mark.parametrize("failing", [False, True], ids=["clean", "failing-cell"])
def test_run_all_in_jupyterlab(lab, browser, failing):
    committed = _mtimes()
    name = "failing" if failing else "clean"
    state, shown, n_code, path, console = _run_in_lab(lab, browser, name, failing)
    problems = _problems(state, shown, n_code)
    if failing:
        # the same inspection must catch a raising cell: its error, and the cells Run All then skipped
        assert any("deliberately failing cell" in p for p in problems), (problems, state)
        assert any("code cells executed" in p for p in problems), (problems, state)
    else:
        assert not problems, "\n".join(problems + [f"browser console: {console[-10:]}", lab.log_tail()])
        assert n_code >= 10, n_code                                  # the notebook, not an empty page
        assert sorted(p.name for p in (lab.results / "synthfer" / "figures").glob("00_*.png")), \
            "the run wrote no figure into its scratch results folder ($ADADF_LAB_RESULTS/synthfer)"
    # the saved copy is a valid notebook with what the page showed; the committed results are untouched
    import nbformat

    saved = nbformat.read(str(path), as_version=4)
    nbformat.validate(saved)
    assert [c.execution_count for c in saved.cells if c.cell_type == "code"] == [c["count"] for c in state["cells"]]
    assert _mtimes() == committed, "the browser run changed the committed reference"
