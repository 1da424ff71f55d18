"""Notebook hygiene, and the notebooks themselves run headlessly on the smoke profile."""

import ast
import dataclasses
import json
import re

import nbformat
import pytest

from workbench.report.notebooks import NOTEBOOKS, notebooks_dir
from workbench.report.runner import NotebookFailed, run_notebook

NOTEBOOK_FILES = sorted(notebooks_dir().glob("*.ipynb"))


def test_every_notebook_is_registered():
    assert {p.stem for p in NOTEBOOK_FILES} == set(NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_parameters_cell_matches_config(path):
    notebook = nbformat.read(path, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    names = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign) for t in node.targets}
    fields = {f.name for f in dataclasses.fields(NOTEBOOKS[path.stem].config_class())}
    assert names == fields | {"profile"}


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_committed_without_outputs_and_without_definitions(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "strip outputs (make strip)"
            assert not re.search(r"^\s*(def|class)\s", cell.source, re.MULTILINE), "notebook cells hold calls, not definitions"


def test_data_notebook_runs_on_smoke_and_exports_offline_html(workdirs):
    run = run_notebook("00_data", profile="smoke", progress=False)
    meta = json.loads((run.run_dir / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["profile"] == "smoke"
    page = run.html_path.read_text()
    assert page.count("<audio") == 4 and "data:audio/ogg;base64," in page
    assert "<script src=\"http" not in page and "unpkg" not in page
    assert "data:image/png;base64," in page  # the duration histogram is embedded
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["utterances"] == 48


def test_a_library_change_reruns_a_finished_notebook_and_says_why(workdirs, monkeypatch):
    from workbench.report import runner

    first = run_notebook("00_data", profile="smoke", progress=False, reuse=True, export=False)
    assert not first.reused and "no finished run" in first.reason
    again = run_notebook("00_data", profile="smoke", progress=False, reuse=True, export=False)
    assert again.reused and again.run_dir == first.run_dir
    # The same notebook, profile and config under different library code: run again, and say so.
    monkeypatch.setattr(runner, "library_sha", lambda: "0123456789ab")
    changed = run_notebook("00_data", profile="smoke", progress=False, reuse=True, export=False)
    assert not changed.reused and changed.run_dir != first.run_dir
    assert changed.reason == f"workbench library code changed since {first.run_dir.name}"
    parameters = run_notebook("00_data", {"max_utterances": 20}, profile="smoke", progress=False, reuse=True,
                              export=False)
    assert not parameters.reused and parameters.reason.startswith("config and inputs changed")


def test_library_hash_covers_code_and_settings():
    from workbench.report.runner import library_sha

    assert library_sha() == library_sha() and len(library_sha()) == 12


def test_failing_cell_leaves_notebook_marks_failed(workdirs):
    with pytest.raises(NotebookFailed) as error:
        run_notebook("00_data", {"corpus": "no_such_corpus"}, profile="smoke", progress=False)
    assert "no_such_corpus" in str(error.value)
    run_dir = error.value.notebook_path.parent
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "failed"
    executed = nbformat.read(error.value.notebook_path, as_version=4)
    assert any(o.get("output_type") == "error" for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert (run_dir / "report.html").exists()


def test_pipeline_reuses_finished_stages(smoke_pipeline):
    first, second, reports = smoke_pipeline
    assert [s.name for s in first.stages] == [s.name for s in second.stages]
    assert not any(s.reused for s in first.stages) and all(s.reused for s in second.stages)
    index = (reports / "index.html").read_text()
    for stage in first.stages:
        assert f"{stage.name}-smoke.html" in index
        assert (reports / f"{stage.name}-smoke.html").exists()


def test_a_notebook_opened_by_hand_takes_unset_inputs_from_the_newest_upstream_run(workdirs, capsys):
    from workbench.atomic import atomic_write_json
    from workbench.config import for_profile
    from workbench.pipeline import fill_from_upstream
    from workbench.runs import start_run
    from workbench.scaling.sweep import SweepConfig

    for tokens in ("data/tokens/old", "data/tokens/new"):  # two finished 10_codec runs, newest last
        with start_run("notebooks", for_profile(SweepConfig, "smoke")) as run:
            run.meta.update(notebook="10_codec", profile="smoke")
            (run.dir / "notebook.ipynb").write_text("{}")
            atomic_write_json(run.dir / "summary.json", {"tokens_dir": tokens, "codec": "runs/codec/x"})
    config = for_profile(SweepConfig, "smoke")
    namespace = {"tokens_dir": None, "codec": "my.pt"}  # the user set codec, left tokens_dir at None
    filled = fill_from_upstream(dataclasses.replace(config, codec="my.pt"), "20_lm_scaling", "smoke", namespace)
    assert filled.tokens_dir == "data/tokens/new" and filled.codec == "my.pt"
    assert "tokens_dir = 'data/tokens/new'" in capsys.readouterr().out
    # Nothing upstream on another profile: the profile's value stays, nothing is said.
    assert fill_from_upstream(config, "20_lm_scaling", "cpu", {"tokens_dir": None}) == config
