"""Checkpoint files that run no code when loaded and say when they are damaged.

Loading: `load_weights_only` is ``torch.load(weights_only=True)``: tensors, plain containers,
numbers and strings, plus numpy arrays (the numpy RNG state inside trainer checkpoints) and
nothing else. A file that asks the unpickler for any other object (a ``__reduce__`` that calls
``os.system``, say) is refused with `UnsafeCheckpointError` before anything in it runs.

Checksums: `save_checkpoint_file` writes the file atomically and then a sidecar ``<name>.sha256``
in ``sha256sum`` format (``sha256sum -c`` checks it by hand). A checkpoint folder (the LM's) gets
one ``checksums.sha256`` listing every file in it (`write_folder_checksums`). `verify_file` /
`verify_folder` return why a checkpoint cannot be trusted (truncated, changed after writing,
missing) or None; `load_newest_verified` and `newest_verified_folder` let a resume fall back to the
newest checkpoint that verifies and report the ones skipped. A checkpoint written before checksums
existed (no sidecar) is accepted when it loads.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from workbench.atomic import atomic_torch_save, atomic_write_text

CHECKSUM_SUFFIX = ".sha256"
FOLDER_CHECKSUMS = "checksums.sha256"
_CHUNK_BYTES = 8 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: truncated, corrupt, changed since it was written."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that holds objects other than weights (it could run code when unpickled)."""


def _numpy_globals() -> list[Any]:
    """What unpickling a numpy array needs: its reconstructor, the array and dtype classes."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtype_classes = [type(np.dtype(name)) for name in
                     ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                      "float16", "float32", "float64")]
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, *dtype_classes]


def load_weights_only(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` that accepts only weights (tensors, containers, numbers, strings, numpy
    arrays). Raises `UnsafeCheckpointError` naming the file for anything else, `CheckpointError`
    for a file that is truncated or not a checkpoint."""
    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _unpickling_detail(error)
        raise UnsafeCheckpointError(
            f"{path}: refused to load: it holds more than weights ({detail}); loading it could run code. "
            "Use a checkpoint written by the workbench, or convert this one where you trust it") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as error:
        if isinstance(error, (FileNotFoundError, PermissionError)):
            raise
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or corrupt "
                              f"({type(error).__name__}: {_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    """The first sentence of an error's message (torch appends paragraphs of advice)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    first = text.splitlines()[0]
    return first.split(". ", 1)[0].rstrip(".")[:200]


def _unpickling_detail(error: BaseException) -> str:
    """The one informative line of torch's long weights-only message."""
    for line in str(error).splitlines():
        line = line.strip()
        if "GLOBAL" in line or "Unsupported" in line:
            return line.removeprefix("WeightsUnpickler error: ")[:200]
    return _first_line(error)


# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def previous_path(path: str | os.PathLike) -> Path:
    """Where `save_checkpoint_file(..., keep_previous=True)` keeps the one before:
    ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def write_checksum(path: str | os.PathLike) -> Path:
    path = Path(path)
    return atomic_write_text(checksum_path(path), f"{sha256_file(path)}  {path.name}\n")


def _parse_checksums(text: str) -> dict[str, str]:
    entries = {}
    for line in text.splitlines():
        digest, sep, name = line.strip().partition("  ")
        if sep:
            entries[name] = digest
    return entries


def verify_file(path: str | os.PathLike) -> str | None:
    """None when `path` matches its sidecar checksum (or has none); otherwise the reason."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        return None
    expected = _parse_checksums(sidecar.read_text()).get(path.name)
    if expected is None:
        return f"{sidecar.name} has no entry for it"
    if sha256_file(path) != expected:
        return f"checksum differs from {sidecar.name} (truncated or changed after it was written)"
    return None


def _rotate(path: Path) -> None:
    """Move a verified `path` (and its checksum) to `previous_path(path)`; a damaged one is left to
    be overwritten, so it never replaces a good previous checkpoint."""
    if not path.is_file() or verify_file(path) is not None:
        return
    previous = previous_path(path)
    sidecar = checksum_path(path)
    checksum_path(previous).unlink(missing_ok=True)
    os.replace(path, previous)
    if sidecar.is_file():
        digest = _parse_checksums(sidecar.read_text())[path.name]
        atomic_write_text(checksum_path(previous), f"{digest}  {previous.name}\n")
        sidecar.unlink()


def save_checkpoint_file(obj: Any, path: str | os.PathLike, *, keep_previous: bool = False) -> Path:
    """torch.save `obj` to `path` atomically, then its ``.sha256`` sidecar. With `keep_previous`
    the checkpoint being replaced is kept as `previous_path(path)` for a resume to fall back on."""
    path = Path(path)
    if keep_previous:
        _rotate(path)
    checksum_path(path).unlink(missing_ok=True)  # until the new sidecar is written, none is trusted
    atomic_torch_save(obj, path)
    write_checksum(path)
    return path


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Loaded:
    state: Any
    path: Path
    skipped: list[Skipped]


def load_newest_verified(candidates: Sequence[str | os.PathLike]) -> Loaded | None:
    """The first of `candidates` (newest first) that exists, verifies and loads weights-only, with
    the ones skipped and why. None when none exists; `CheckpointError` listing every reason when
    some exist but none is usable. An unsafe file is never skipped silently: it raises."""
    skipped: list[Skipped] = []
    for candidate in map(Path, candidates):
        if not candidate.exists():
            continue
        reason = verify_file(candidate)
        if reason is None:
            try:
                return Loaded(load_weights_only(candidate), candidate, skipped)
            except UnsafeCheckpointError:
                raise
            except CheckpointError as error:
                reason = str(error).removeprefix(f"{candidate}: ")
        skipped.append(Skipped(candidate, reason))
    if skipped:
        raise CheckpointError("no usable checkpoint: " + "; ".join(map(str, skipped)) +
                              ". Delete the damaged files to start over, or use a new run id")
    return None


def load_resume_state(checkpoint: str | os.PathLike, label: str, run: Any = None) -> Any | None:
    """A trainer's saved state to resume from: `checkpoint`, else the previous one kept beside it
    (`save_checkpoint_file(..., keep_previous=True)`), verified and weights-only; each skipped
    file is said on stderr (and logged to `run` when given). None when there is nothing to resume."""
    import sys

    checkpoint = Path(checkpoint)
    loaded = load_newest_verified([checkpoint, previous_path(checkpoint)])
    if loaded is None:
        return None
    for skipped in loaded.skipped:
        print(f"[{label}] skipped {skipped}; resuming from {loaded.path.name}", file=sys.stderr)
        if run is not None:
            run.log(None, event="checkpoint_skipped", path=str(skipped.path), reason=skipped.reason)
    return loaded.state


def write_folder_checksums(folder: str | os.PathLike) -> Path:
    """``checksums.sha256`` over every file in `folder` (recursively, itself excluded)."""
    folder = Path(folder)
    lines = [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}"
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != FOLDER_CHECKSUMS]
    return atomic_write_text(folder / FOLDER_CHECKSUMS, "\n".join(lines) + "\n")


def verify_folder(folder: str | os.PathLike, required: Iterable[str] = ()) -> str | None:
    """None when every file listed in the folder's checksums matches (a folder written before
    checksums existed passes when its `required` files exist); otherwise the reason."""
    folder = Path(folder)
    for name in required:
        if not (folder / name).is_file():
            return f"{name} missing"
    listing = folder / FOLDER_CHECKSUMS
    if not listing.is_file():
        return None
    for name, digest in _parse_checksums(listing.read_text()).items():
        file = folder / name
        if not file.is_file():
            return f"{name} missing"
        if sha256_file(file) != digest:
            return f"{name}: checksum differs from {FOLDER_CHECKSUMS} (truncated or changed after it was written)"
    return None


def newest_verified_folder(folders: Iterable[str | os.PathLike], required: Iterable[str] = (),
                           report: Callable[[Skipped], None] | None = None) -> Path | None:
    """The first of `folders` (newest first) that `verify_folder`s; each one skipped is passed
    to `report`. None when none verifies."""
    required = tuple(required)
    for folder in map(Path, folders):
        reason = verify_folder(folder, required)
        if reason is None:
            return folder
        if report is not None:
            report(Skipped(folder, reason))
    return None


__all__ = [
    "CheckpointError", "UnsafeCheckpointError", "load_weights_only", "save_checkpoint_file",
    "load_newest_verified", "verify_file", "previous_path", "checksum_path", "write_checksum",
    "write_folder_checksums", "verify_folder", "newest_verified_folder", "Skipped", "Loaded", "sha256_file",
]
