"""`workbench` command line: the same library calls as the notebooks, for scripts and clusters."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from workbench.config import DEFAULT_PROFILE, PROFILE_NAMES, ConfigError, parse_overrides, parse_value
from workbench.paths import default_dir


def _profile_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILE_NAMES,
                        help=f"named profile (default {DEFAULT_PROFILE})")


# ---------------------------------------------------------------------------- data
def cmd_data_prepare(args: argparse.Namespace) -> int:
    from workbench.config import for_profile
    from workbench.data.prepare import DataConfig, prepare_corpus

    overrides = {"corpus": args.corpus}
    if args.source:
        overrides["source"] = str(args.source)
    if args.sample_rate is not None:
        overrides["sample_rate_hz"] = args.sample_rate
    if args.max_utterances is not None:
        overrides["max_utterances"] = args.max_utterances
    config = for_profile(DataConfig, args.profile, **overrides)
    report = prepare_corpus(config, root=args.data_dir)
    print(report.summary_line())
    for problem in report.skipped:
        print(f"  skipped {problem.utterance_id}: {problem.reason}  ({problem.audio_path})")
    if report.converted:
        print(f"  converted {len(report.converted)} files (see {report.out_dir}/prepare_report.json)")
    return 0 if report.n_kept else 1


def cmd_data_synth(args: argparse.Namespace) -> int:
    from workbench.data.synth import prepare_synth, prepare_synth_pretrain

    overrides = parse_overrides(args.set)
    if args.pretrain:
        if args.sentences:
            overrides["sentences_file"] = str(args.sentences)
        report = prepare_synth_pretrain(args.profile, data_dir=args.data_dir, progress=True, **overrides)
    else:
        if overrides:
            raise ConfigError("--set applies to the pretraining corpus only (add --pretrain)")
        report = prepare_synth(args.profile, sentences=args.sentences, data_dir=args.data_dir, progress=True)
    print(report.summary_line())
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:  # noqa: ARG001
    from workbench.data.corpora import CORPORA

    for spec in CORPORA.values():
        print(f"{spec.name:12s} {spec.layout:12s} {spec.licence:28s} {spec.description}")
        print(f"{'':12s} origin: {spec.origin}")
    return 0


# ---------------------------------------------------------------------------- codec
def cmd_codec_train(args: argparse.Namespace) -> int:
    from workbench.codec import CodecConfig, train_codec
    from workbench.config import for_profile
    from workbench.data.prepare import DataConfig

    config = for_profile(CodecConfig, args.profile, **parse_overrides(args.set))
    # a transcripts.tsv folder is taken and split as the profile's `data prepare` would
    result = train_codec(config, args.data, run_id=args.run_id, data_config=for_profile(DataConfig, args.profile))
    print(f"codec: {result.codec_path} ({result.steps} steps) run: {result.run_dir}")
    return 0


def cmd_codec_eval(args: argparse.Namespace) -> int:
    import dataclasses

    from workbench.codec import evaluate_codec, load_codec

    codec = load_codec(args.codec)
    verifiers = tuple(v for v in (args.verifiers or "").split(",") if v)
    result = evaluate_codec(codec, args.data, split=args.split or None, max_utterances=args.max_utterances,
                            verifiers=verifiers, progress=True)
    headline = result.headline()
    if args.json:
        from workbench.atomic import atomic_write_json

        atomic_write_json(args.json, {**headline, "verifier_raw": result.verifier_raw,
                                      "utterances": [dataclasses.asdict(u) for u in result.utterances]})
        print(f"wrote {args.json}")
    print(json.dumps({k: v for k, v in headline.items() if isinstance(v, (int, float))}, indent=1))
    return 0


def cmd_codec_tokenize(args: argparse.Namespace) -> int:
    from workbench.codec import load_codec, tokenize_corpus

    codec = load_codec(args.codec)
    index = tokenize_corpus(codec, args.data, args.out, batch_size=args.batch_size, codec_id=str(args.codec),
                            progress=True)
    print(f"{index.n_utterances} utterances, {index.n_frames:,} frames in {len(index.shards)} shards -> {args.out}")
    return 0


# ---------------------------------------------------------------------------- LM
def cmd_lm_train(args: argparse.Namespace) -> int:
    from workbench.config import for_profile
    from workbench.lm.train import LMTrainConfig, train_lm

    config = for_profile(LMTrainConfig, args.profile, **parse_overrides(args.set))
    result = train_lm(config, args.shards, run_id=args.run_id)
    print(f"model: {result.model_dir}  valid loss {result.final_valid_loss:.4f}  "
          f"{result.tokens_seen:,} tokens  {result.flops:.3g} FLOPs  run: {result.run_dir}")
    return 0


def cmd_lm_sweep(args: argparse.Namespace) -> int:
    import pandas as pd

    from workbench.config import for_profile
    from workbench.scaling.sweep import SweepConfig, run_sweep

    config = for_profile(SweepConfig, args.profile, **parse_overrides(args.set))
    result = run_sweep(config, args.shards)
    columns = ["preset", "n_params", "tokens_seen", "flops", "final_valid_loss", "wall_s"]
    with pd.option_context("display.width", 160):
        print(result.table[columns].to_string(index=False) if not result.table.empty else "no finished points")
    for failure in result.failed:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if result.failed else 0


def cmd_search_ablate(args: argparse.Namespace) -> int:
    from workbench.search.ablation.cli import run_from_args

    return run_from_args(args)


# ---------------------------------------------------------------------------- notebooks, reports
def cmd_run(args: argparse.Namespace) -> int:
    from workbench.report.runner import NotebookFailed, run_notebook

    params = {name: parse_value(value) for name, value in (args.param or [])}
    try:
        run = run_notebook(args.notebook, params, args.profile, reuse=args.reuse, timeout_s=args.timeout)
    except NotebookFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{'reused' if run.reused else 'executed'} {run.name}: {run.notebook_path}")
    if run.html_path:
        print(f"report: {run.html_path}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    """`--grid NAME=V1,V2 --grid OTHER=A,B`: the product of the value lists, one run each."""
    import itertools

    from workbench.report.runner import run_notebook_batch

    axes = []
    for spec in args.grid or []:
        key, sep, values = spec.partition("=")
        if not sep or not values:
            raise ConfigError(f"--grid {spec!r}: expected NAME=VALUE1,VALUE2,...")
        axes.append([(key.strip(), parse_value(v)) for v in values.split(",")])
    fixed = {name: parse_value(value) for name, value in (args.param or [])}
    grid = [{**fixed, **dict(combo)} for combo in itertools.product(*axes)] if axes else [fixed]
    results = run_notebook_batch(args.notebook, grid, args.profile, executor=args.executor,
                                 max_workers=args.max_workers, reuse=args.reuse)
    for params, result in zip(grid, results):
        state = f"ok -> {result.value}" if result.ok else f"FAILED: {(result.error or '').strip().splitlines()[-1]}"
        print(f"{params}: {state}")
    return 0 if all(r.ok for r in results) else 1


def cmd_report(args: argparse.Namespace) -> int:
    from workbench.report.index import build_reports

    print(f"index: {build_reports(args.out or default_dir('reports'))}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from workbench.pipeline import run_pipeline
    from workbench.report.runner import NotebookFailed

    if args.dry_run:
        from workbench.pipeline import plan

        print(plan(args.profile))
        return 0
    try:
        run_pipeline(args.profile, reuse=not args.no_reuse, reports_dir=args.out or default_dir("reports"))
    except NotebookFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import pandas as pd

    from workbench.runs import results

    frame = results(kind=args.kind)
    if frame.empty:
        print("no runs")
        return 0
    if args.json:
        print(json.dumps(frame.to_dict(orient="records"), default=str, indent=1))
        return 0
    with pd.option_context("display.max_columns", 20, "display.width", 200):
        print(frame.drop(columns=["path"]).to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="prepare corpora, synthesise a multi-speaker corpus, list corpora")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    prepare = data_sub.add_parser("prepare", help="materialise a corpus under data/ (checked, converted, split)")
    prepare.add_argument("--corpus", required=True, help="a registered corpus (see `workbench data list`) or any name with --source")
    prepare.add_argument("--source", type=Path, help="folder or manifest file; default: $WORKBENCH_DATA_MIRROR/<corpus>")
    prepare.add_argument("--sample-rate", type=int, help="target rate in Hz (default 16000)")
    prepare.add_argument("--max-utterances", type=int, help="take only the first N utterances by id")
    prepare.add_argument("--data-dir", type=Path, help="data root (default $WORKBENCH_DATA_DIR or ./data)")
    _profile_arg(prepare)
    prepare.set_defaults(func=cmd_data_prepare)
    synth = data_sub.add_parser("synth", help="synthesise a deterministic multi-speaker corpus with espeak-ng and prepare it")
    synth.add_argument("--sentences", type=Path, help="CMU ARCTIC .data file or one sentence per line")
    synth.add_argument("--data-dir", type=Path)
    synth.add_argument("--pretrain", action="store_true",
                       help="the LM pretraining corpus 'synth_pretrain': distinct package sentences, one voice each")
    synth.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="with --pretrain: override a PretrainSynthConfig field, e.g. total_sentences=2000")
    _profile_arg(synth)
    synth.set_defaults(func=cmd_data_synth)
    listing = data_sub.add_parser("list", help="list registered corpora with origin and licence")
    listing.set_defaults(func=cmd_data_list)

    codec = sub.add_parser("codec", help="train, evaluate and use a speech codec")
    codec_sub = codec.add_subparsers(dest="codec_command", required=True, metavar="SUBCOMMAND")
    train = codec_sub.add_parser("train", help="train a codec on a prepared corpus (resumable with --run-id)")
    train.add_argument("--data", type=Path, required=True,
                       help="prepared corpus folder (manifest.jsonl) or transcripts.tsv folder (split as the profile's data prepare)")
    train.add_argument("--run-id", help="reuse this id to resume an interrupted run")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a CodecConfig field")
    _profile_arg(train)
    train.set_defaults(func=cmd_codec_train)
    evaluate = codec_sub.add_parser("eval", help="STOI, PESQ, mel distance, SI-SDR, codebook use, RTF (+ WER/SIM with --verifiers)")
    evaluate.add_argument("codec", help="workbench run dir, codec.pt, or X-codec2 folder / hub id")
    evaluate.add_argument("--data", type=Path, required=True, help="folder in the transcripts.tsv layout, or a prepared corpus")
    evaluate.add_argument("--json", type=Path, help="write every metric (and per-utterance values) here")
    evaluate.add_argument("--split", default="", help="only this split of a prepared corpus (default: all)")
    evaluate.add_argument("--max-utterances", type=int)
    evaluate.add_argument("--verifiers", help="comma-separated, e.g. pocketsphinx,resemblyzer")
    evaluate.set_defaults(func=cmd_codec_eval)
    tokenize = codec_sub.add_parser("tokenize", help="encode a prepared corpus into token shards for the LM (resumable)")
    tokenize.add_argument("codec")
    tokenize.add_argument("--data", type=Path, required=True)
    tokenize.add_argument("--out", type=Path, required=True)
    tokenize.add_argument("--batch-size", type=int, default=16)
    tokenize.set_defaults(func=cmd_codec_tokenize)

    lm = sub.add_parser("lm", help="train a Llama TTS model, or a sweep of them")
    lm_sub = lm.add_subparsers(dest="lm_command", required=True, metavar="SUBCOMMAND")
    lm_train = lm_sub.add_parser("train", help="train one LM on token shards (resumable with --run-id)")
    lm_train.add_argument("shards", type=Path)
    lm_train.add_argument("--run-id")
    lm_train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override an LMTrainConfig field")
    _profile_arg(lm_train)
    lm_train.set_defaults(func=cmd_lm_train)
    sweep = lm_sub.add_parser("sweep", help="sizes x token budgets; a relaunch skips finished points")
    sweep.add_argument("shards", type=Path)
    sweep.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a SweepConfig field, e.g. executor=slurm")
    _profile_arg(sweep)
    sweep.set_defaults(func=cmd_lm_sweep)

    search = sub.add_parser("search", help="inference-time search ablations")
    search_sub = search.add_subparsers(dest="search_command", required=True, metavar="SUBCOMMAND")
    from workbench.search.ablation.cli import build_parser as build_ablate_parser

    ablate = build_ablate_parser(search_sub.add_parser(
        "ablate", help="strategies x budgets x verifiers over held-out sentences (resumable with --run-id)"))
    ablate.set_defaults(func=cmd_search_ablate)

    run = sub.add_parser("run", help="execute a notebook headlessly (Papermill) into a run directory")
    run.add_argument("notebook", help="name (00_data) or path of a notebook in notebooks/")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="override one config field (validated before the kernel starts)")
    run.add_argument("--reuse", action="store_true", help="return a finished run with the same code and config")
    run.add_argument("--timeout", type=int, help="per-cell timeout in seconds")
    _profile_arg(run)
    run.set_defaults(func=cmd_run)

    batch = sub.add_parser("batch", help="run a notebook over a grid of parameters (process pool or Slurm)")
    batch.add_argument("notebook")
    batch.add_argument("--grid", action="append", metavar="NAME=V1,V2", help="one axis of the grid (product of all axes)")
    batch.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="fixed for every run")
    batch.add_argument("--executor", default="local", choices=("local", "inline", "slurm", "submitit-local"))
    batch.add_argument("--max-workers", type=int)
    batch.add_argument("--reuse", action="store_true", help="skip grid points with a finished run")
    _profile_arg(batch)
    batch.set_defaults(func=cmd_batch)

    report = sub.add_parser("report", help="collect the latest notebook reports into reports/ with an index page")
    report.add_argument("--out", type=Path, help="default: reports/ under the project root")
    report.set_defaults(func=cmd_report)

    pipeline = sub.add_parser("pipeline", help="the main job: every stage for a profile, then reports (resumable)")
    pipeline.add_argument("--no-reuse", action="store_true", help="rerun stages even when a finished run matches")
    pipeline.add_argument("--dry-run", action="store_true",
                          help="print every stage's settings for the profile (built and validated) and run nothing")
    pipeline.add_argument("--out", type=Path, help="reports folder (default: reports/ under the project root)")
    _profile_arg(pipeline)
    pipeline.set_defaults(func=cmd_pipeline)

    runs = sub.add_parser("runs", help="table of all runs (config fields and final metrics)")
    runs.add_argument("--kind", help="only runs of this kind (codec, lm, search, notebooks, ...)")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=cmd_runs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BaseException as error:  # noqa: BLE001 - one line for what a user can fix (workbench.cli_errors)
        from workbench.cli_errors import print_described

        status = print_described(error)
        if status is None:
            raise
        return status


if __name__ == "__main__":
    sys.exit(main())
