"""`workbench search ablate`: the ablation from the command line."""

from __future__ import annotations

import argparse
from typing import Sequence

from workbench.search.ablation.config import AblationConfig
from workbench.search.ablation.run import run_ablation


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="workbench search ablate", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="config profile (smoke, cpu, gpu-*); default cpu")
    parser.add_argument("--lm", dest="lm_path", help="LM checkpoint folder")
    parser.add_argument("--codec", dest="codec_path", help="codec (default: the one recorded in the LM checkpoint)")
    parser.add_argument("--corpus", help="prepared corpus name or folder (default: kathleen)")
    parser.add_argument("--split", help="held-out split (default: test)")
    parser.add_argument("--n-sentences", type=int)
    parser.add_argument("--strategies", nargs="+", help="sample best_of_n beam partial_mix")
    parser.add_argument("--budgets", nargs="+", type=int)
    parser.add_argument("--verifiers", dest="search_verifiers", nargs="+",
                        help="search verifier specs: name, a+b (weighted), process>outcome")
    parser.add_argument("--check", dest="check_verifiers", nargs="+", help="search=check pairs")
    parser.add_argument("--no-voice-cloning", dest="voice_cloning", action="store_const", const=False)
    parser.add_argument("--time-limit-s", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--run-id", help="resume (or name) this run")
    parser.add_argument("--root", help="runs root (default: $WORKBENCH_RUNS or ./runs)")
    parser.add_argument("--preferences", help="also export (best, worst) pairs as JSONL to this path")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


_CONFIG_ARGS = ("lm_path", "codec_path", "corpus", "split", "n_sentences", "strategies", "budgets",
                "search_verifiers", "check_verifiers", "voice_cloning", "time_limit_s", "seed")


def main(argv: Sequence[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    """Run the ablation that parsed options (from `build_parser`) describe."""
    from workbench.config import for_profile
    from workbench.search.preferences import export_preferences

    overrides = {k: getattr(args, k) for k in _CONFIG_ARGS if getattr(args, k) is not None}
    for key in ("strategies", "budgets", "search_verifiers", "check_verifiers"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    config = for_profile(AblationConfig, args.profile, **overrides)
    result = run_ablation(config, run_id=args.run_id, root=args.root, progress=args.progress)
    print(f"{result.results_csv}: {len(result.rows)} rows ({result.n_new_rows} new, "
          f"{result.n_skipped_rows} resumed){'' if result.complete else ' - incomplete (time limit)'}")
    for note in result.notes:
        print(f"note: {note}")
    if args.preferences:
        n = export_preferences(result.run_dir, args.preferences)
        print(f"{args.preferences}: {n} preference pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
