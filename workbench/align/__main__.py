"""``python -m workbench.align TOKENS_DIR --corpus PREPARED_DIR --asr MODEL``: write TOKENS_DIR/alignments.json."""

from __future__ import annotations

import argparse
import dataclasses
import json


def main(argv: list[str] | None = None) -> None:
    from workbench.align.corpus import align_token_shards

    parser = argparse.ArgumentParser(prog="python -m workbench.align", description=__doc__)
    parser.add_argument("tokens_dir")
    parser.add_argument("--corpus", required=True, help="the prepared corpus the shards were tokenised from")
    parser.add_argument("--asr", required=True, help="a workbench-asr model.pt (workbench.checkmodels.asr_train)")
    args = parser.parse_args(argv)
    try:
        summary = align_token_shards(args.tokens_dir, args.corpus, args.asr)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    print(json.dumps(dataclasses.asdict(summary), indent=2))


if __name__ == "__main__":
    main()
