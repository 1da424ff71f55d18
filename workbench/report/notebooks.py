"""Registry of the workbench's notebooks and the config class each one's parameters must fit."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

NOTEBOOKS_ENV = "WORKBENCH_NOTEBOOKS"


@dataclass(frozen=True)
class NotebookSpec:
    name: str  # file stem in notebooks/, numbered by pipeline stage
    config: str  # "module:Class" of the config its parameters build (imported lazily)
    title: str

    @property
    def path(self) -> Path:
        return notebooks_dir() / f"{self.name}.ipynb"

    def config_class(self) -> type:
        module, _, cls = self.config.partition(":")
        return getattr(importlib.import_module(module), cls)

    def sha(self) -> str:
        """Hash of the notebook's code cells (outputs excluded), part of the reuse key of its runs."""
        import nbformat

        notebook = nbformat.read(self.path, as_version=4)
        code = "\n# cell\n".join(c.source for c in notebook.cells if c.cell_type == "code")
        return hashlib.sha256(code.encode()).hexdigest()[:12]


NOTEBOOKS: dict[str, NotebookSpec] = {}


def register_notebook(spec: NotebookSpec) -> NotebookSpec:
    NOTEBOOKS[spec.name] = spec
    return spec


register_notebook(NotebookSpec("00_data", "workbench.data.prepare:DataConfig", "Data: corpus preparation and summary"))
register_notebook(NotebookSpec("10_codec", "workbench.codec.study:CodecStudyConfig", "Codec: train, evaluate, listen, tokenise"))
register_notebook(NotebookSpec("20_lm_scaling", "workbench.scaling.sweep:SweepConfig", "LM scaling: sweep, fits, held-out check, samples by size"))
register_notebook(NotebookSpec("25_alignment", "workbench.scaling.alignment_study:AlignmentStudyConfig", "Alignment: which lever makes the LM read its text"))
register_notebook(NotebookSpec("30_search", "workbench.search.ablation.config:AblationConfig", "Search: verifiers and strategies at equal compute"))


def notebooks_dir() -> Path:
    """$WORKBENCH_NOTEBOOKS, else the repository's notebooks/ beside this package."""
    return Path(os.environ.get(NOTEBOOKS_ENV) or Path(__file__).resolve().parents[2] / "notebooks")


def get_notebook(name: str) -> NotebookSpec:
    """Spec by name ("00_data") or path ("notebooks/00_data.ipynb")."""
    stem = Path(name).stem
    if stem in NOTEBOOKS:
        return NOTEBOOKS[stem]
    close = difflib.get_close_matches(stem, list(NOTEBOOKS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"unknown notebook {name!r}{hint}; notebooks: {', '.join(sorted(NOTEBOOKS))}")
