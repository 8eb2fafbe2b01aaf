"""Security: nothing is unpickled, nothing reaches the network, user strings render as text.

- A static check over slimsearch/: no pickle-family imports, every `torch.load` passes
  `weights_only=True`, `torch.export.load` only behind slimsearch/pt2.py's guard.
- A crafted model.pt2 whose payload runs code when unpickled: plain `torch.export.load` runs it
  (the control), slimsearch's loader refuses the file and runs nothing.
- A real tiny search and export, every Python process of it under an audit hook that refuses and
  records any socket connection or name lookup that is not loopback; the run is of a task whose
  teacher and layer names carry HTML, backticks and rich markup (tests/reports/hostile_task.py,
  whose `<script>` sibling the report's browser test opens), in a run folder whose path holds
  rich markup, and the CLI output, the report and the model card must show those strings as text.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from slimsearch.errors import ExportError
from slimsearch.pt2 import load_exported_program
from tests.conftest import REPO, write_toml
from tests.reports.hostile_task import BREAKOUT

SOURCES = sorted((REPO / "slimsearch").rglob("*.py"))
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _unpickling_sites(source: str, where: str) -> list[str]:
    tree = ast.parse(source, filename=where)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{where}:{node.lineno} imports {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            found.append(f"{where}:{node.lineno} imports from {node.module}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name == "torch.load":
                weights_only = _keyword(node, "weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    found.append(f"{where}:{node.lineno} torch.load without weights_only=True")
            elif name == "torch.export.load" and where != "slimsearch/pt2.py":
                found.append(f"{where}:{node.lineno} torch.export.load (unpickles; use slimsearch.pt2.load_exported_program)")
            elif name in ("torch.jit.load", "pd.read_pickle", "pandas.read_pickle", "yaml.load", "yaml.unsafe_load"):
                found.append(f"{where}:{node.lineno} {name}")
            elif name in ("np.load", "numpy.load"):
                allow = _keyword(node, "allow_pickle")
                if not (isinstance(allow, ast.Constant) and allow.value is False):
                    found.append(f"{where}:{node.lineno} {name} without allow_pickle=False")
    return found


def test_no_source_file_unpickles():
    assert len(SOURCES) > 30, "the scan must see the package"
    found = [site for path in SOURCES
             for site in _unpickling_sites(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix())]
    assert found == [], "artifacts must load as tensors or JSON, never by unpickling:\n" + "\n".join(found)


def test_the_static_check_catches_what_it_looks_for():
    source = ("import pickle\nimport torch\nimport numpy as np\ntorch.load('w.pt')\n"
              "torch.load('w.pt', weights_only=False)\ntorch.load('w.pt', weights_only=True)\n"
              "torch.export.load('m.pt2')\nnp.load('a.npy', allow_pickle=True)\n")
    found = _unpickling_sites(source, "slimsearch/probe.py")
    assert [site.split(" ", 1)[0] for site in found] == [f"slimsearch/probe.py:{n}" for n in (1, 4, 5, 7, 8)], found
    assert _unpickling_sites("import torch\ntorch.export.load('m.pt2')\n", "slimsearch/pt2.py") == []


def test_console_output_never_reads_user_strings_as_markup():
    """rich reads `[bold]` in printed strings as markup (and raises on a stray `[/x]`), so every
    console print of an interpolated string must pass markup=False (or escape what it interpolates)."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("print", "log") and "console" in _dotted(node.func.value).lower()
                    and node.args):
                continue
            text = node.args[0]
            # Renderables (Table(...), front_table(...)) carry their own markup setting; anything
            # else printed may be a string with user text in it.
            callee = _dotted(text.func).split(".")[-1] if isinstance(text, ast.Call) else ""
            renderable = callee[:1].isupper() or callee.endswith("_table")
            stringy = isinstance(text, (ast.JoinedStr, ast.Name, ast.BinOp)) or (isinstance(text, ast.Call)
                                                                                 and not renderable)
            markup = _keyword(node, "markup")
            if stringy and not (isinstance(markup, ast.Constant) and markup.value is False):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == [], "console prints that would interpret user strings as rich markup: " + ", ".join(found)


def _tiny_program(path: Path) -> Path:
    program = torch.export.export(nn.Linear(4, 2).eval(), (torch.randn(2, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, str(path))
    return path


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling creates the marker file


def _with_payload(good: Path, evil: Path, marker: Path) -> Path:
    """`good` with its sample inputs replaced by a pickle that creates `marker` when loaded."""
    import io

    payload = io.BytesIO()
    torch.save(_RunsCodeWhenUnpickled(marker), payload)
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(evil, "w") as target:
        for item in source.infolist():
            data = payload.getvalue() if item.filename.endswith("sample_inputs/model.pt") else source.read(item)
            target.writestr(item, data)
    return evil


def test_exported_program_loader_never_unpickles(tmp_path):
    good = _tiny_program(tmp_path / "good.pt2")
    assert load_exported_program(good).module()(torch.ones(3, 4)).shape == (3, 2)

    marker = tmp_path / "code-ran"
    evil = _with_payload(good, tmp_path / "evil.pt2", marker)
    with pytest.raises(ExportError, match="does not load as a torch.export program without unpickling"):
        load_exported_program(evil)
    assert not marker.exists(), "loading the archive ran code from it"
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ

    # The control: torch's own loader does run the payload, so the file is a real attack.
    try:
        torch.export.load(str(evil))
    except Exception:
        pass
    assert marker.exists()


def test_archive_with_pickled_objects_is_refused_before_loading(tmp_path):
    good = _tiny_program(tmp_path / "good.pt2")
    with zipfile.ZipFile(good, "a") as archive:
        root = archive.namelist()[0].split("/")[0]
        archive.writestr(f"{root}/data/constants/custom_obj_0", b"not read")
    with pytest.raises(ExportError, match=r"holds pickled Python objects \(custom_obj_0\)"):
        load_exported_program(good)


# --- a real search and export: no network, user strings shown as text ----------------------------

NETWORK_GUARD = '''
"""Test harness (tests/test_security.py): refuse and record network use that is not loopback."""
import ipaddress, os, sys, urllib.parse

_LOG = os.environ["SLIMSEARCH_TEST_NETWORK_LOG"]


def _write(line):
    with open(_LOG, "a") as log:
        log.write(line + "\\n")


def _loopback(host):
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host is None or str(host) in ("", "localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(event, target):
    _write(f"BLOCKED pid={os.getpid()} {event} {target!r}")
    raise PermissionError(f"network access refused by the test harness: {event} {target!r}")


def _hook(event, args):
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        address = args[-1] if event != "socket.connect" else args[1]
        if isinstance(address, tuple) and address and not _loopback(address[0]):
            _refuse(event, address)
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr"):
        if not _loopback(args[0]):
            _refuse(event, args[0])
    elif event == "urllib.Request":
        host = urllib.parse.urlsplit(str(args[0])).hostname
        if not _loopback(host):
            _refuse(event, args[0])


sys.addaudithook(_hook)
_write(f"WATCHED pid={os.getpid()} {' '.join(sys.orig_argv)}")
'''


def _guarded_env(tmp_path: Path) -> tuple[dict, Path]:
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD)
    log = tmp_path / "network.log"
    env = {**os.environ, "COLUMNS": "200", "SLIMSEARCH_TEST_NETWORK_LOG": str(log),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(guard), str(REPO), os.environ.get("PYTHONPATH")]))}
    return env, log


def _python(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


def test_the_network_guard_refuses_and_records_what_it_should(tmp_path):
    env, log = _guarded_env(tmp_path)
    probe = ("import socket\n"
             "for target in [('192.0.2.1', 9), ('example.com', 80)]:\n"
             "    try:\n"
             "        socket.create_connection(target, timeout=1)\n"
             "    except PermissionError:\n"
             "        print('refused', target[0])\n"
             "try:\n"
             "    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
             "except PermissionError:\n"
             "    print('loopback refused')\n"
             "except OSError:\n"
             "    print('loopback allowed')\n")
    done = _python(env, "-c", probe)
    assert done.stdout.split("\n")[:3] == ["refused 192.0.2.1", "refused example.com", "loopback allowed"], done
    blocked = [line for line in log.read_text().splitlines() if line.startswith("BLOCKED")]
    assert len(blocked) == 2 and "192.0.2.1" in blocked[0] and "example.com" in blocked[1]


def test_search_and_export_stay_offline_and_show_user_strings_as_text(tmp_path):
    import markdown_it

    env, log = _guarded_env(tmp_path)
    # '[red]runs[' + '/' + 'red]': a run folder whose path is rich markup, for a task whose
    # teacher and first layer are named BREAKOUT.
    runs = tmp_path / "[red]runs[" / "red]"
    config = write_toml(tmp_path / "search.toml", {
        "task": "tests.reports.hostile_task:breakout", "latency_budget": "5x", "trials": 2, "name": "hostile",
        "seed": 1, "runs_dir": str(runs), "finetune": {"epochs": 1.0},
        "latency": {"warmup": 2, "repeats": 20, "rounds": 2}, "space": {"families": ["prune", "distill"]},
    })
    run = _python(env, "-m", "slimsearch.cli", "run", str(config))
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = runs / "hostile"
    assert f"in {run_dir}:" in run.stderr, run.stderr  # printed as typed, brackets and all
    assert f"report: {run_dir / 'report.html'}" in run.stdout, run.stdout

    out = tmp_path / "model"
    export = _python(env, "-m", "slimsearch.cli", "export", str(run_dir), "-o", str(out))
    assert export.returncode == 0, export.stderr[-3000:]

    lines = log.read_text().splitlines()
    assert [line for line in lines if line.startswith("BLOCKED")] == []
    watched = [line for line in lines if line.startswith("WATCHED")]
    assert sum("latency_worker" in line for line in watched) >= 2, watched  # the timing processes were watched too

    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page

    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    rendered = markdown_it.MarkdownIt("commonmark").enable("table").render(card)
    assert "<img" not in rendered, "a name from user code became HTML in the model card"
    # The teacher's name and the hostile layer's prune knob both show, backticks and all, as text.
    shown = "`&lt;img src=x onerror=alert(1)&gt;`[bold]"
    assert rendered.count(shown) >= 2, rendered
    assert json.loads((out / "model_card.json").read_text())["teacher"]["name"] == BREAKOUT
