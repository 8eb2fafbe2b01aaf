"""Reading a `torch.export` archive (model.pt2) without unpickling anything.

`torch.export.load` unpickles: tensors stored in pickle form and the archive's sample inputs
fall back to `torch.load(weights_only=False)`, and custom / opaque constants go straight to
`pickle.loads`. An export folder is something users copy around and `slimsearch export
--verify-only` reads, so a file from elsewhere must never run code when it is checked. Here
archives with custom or opaque objects are refused, and every `torch.load` inside
`torch.export.load` is forced to `weights_only=True` (PyTorch's own switch for that).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Iterator

from slimsearch.errors import ExportError

# File-name prefixes torch.export gives constants that are not tensors (torch.export.pt2_archive.constants).
_OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")
_FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


def load_exported_program(path: str | Path):
    """`torch.export.load(path)`, refusing archives that would need unpickling to load."""
    import torch

    path = Path(path)
    _refuse_pickled_objects(path)
    try:
        with _weights_only_loads():
            return torch.export.load(str(path))
    except Exception as error:  # a weights-only refusal, a corrupt zip, an unknown format
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()  # torch colours its refusal
        first_line = (text.splitlines() or [""])[0][:200]
        raise ExportError(f"model.pt2 in {path.parent} does not load as a torch.export program without "
                          f"unpickling ({type(error).__name__}: {first_line})") from None


def _refuse_pickled_objects(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            configs = [json.loads(archive.read(name)) for name in names if name.endswith("_constants_config.json")]
    except (OSError, zipfile.BadZipFile, ValueError) as error:
        raise ExportError(f"model.pt2 in {path.parent} is not a torch.export archive ({error})") from None
    payloads = [Path(name).name for name in names]
    payloads += [entry.get("path_name", "") for config in configs
                 for entry in (config.get("config") or {}).values() if isinstance(entry, dict)]
    objects = sorted({name for name in payloads if name.startswith(_OBJECT_PREFIXES)})
    if objects:
        raise ExportError(f"model.pt2 in {path.parent} holds pickled Python objects ({', '.join(objects[:3])}); "
                          f"slimsearch only loads archives of tensors and graphs")


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    previous = os.environ.get(_FORCE_WEIGHTS_ONLY)
    os.environ[_FORCE_WEIGHTS_ONLY] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_FORCE_WEIGHTS_ONLY, None)
        else:
            os.environ[_FORCE_WEIGHTS_ONLY] = previous
