"""Does a TTS LM read its text? The text-conditioning gain.

Validation loss mixes two skills: continuing the audio (codec frames 20 ms apart are highly
predictable from the frames before them) and saying the right words. A model can lower the loss a
long way on the first alone, and then no amount of search on WER can help it. The gain measures
the second directly: the speech-token loss of held-out utterances when the prompt carries another
utterance's transcript, minus the loss with their own. Zero means the text is ignored; a model
that reads it is surprised by speech that does not match.

    gain = text_conditioning_gain(lm.model, lm.tokenizer, lm.layout, utterances)
    gain.gain_nats, gain.fraction_better

Measured on the cpu ladder (Kathleen, 47 held-out utterances): 0.002-0.005 nats per token after
400k training tokens at every size, i.e. the text is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from workbench.data.token_shards import TokenizedUtterance
from workbench.lm.data import collate
from workbench.lm.layout import IGNORE_INDEX, TokenLayout, build_tts_sequence


@dataclass(frozen=True)
class TextGain:
    """Mean speech-token losses (nats per token) with the right and with a mismatched text."""

    loss_right: float
    loss_wrong: float
    fraction_better: float  # utterances whose own text gives the lower loss
    n_utterances: int

    @property
    def gain_nats(self) -> float:
        return self.loss_wrong - self.loss_right


@torch.no_grad()
def _per_sequence_loss(model: Any, sequences: list, pad_id: int, batch_size: int) -> list[float]:
    from workbench.devices import model_device

    device = model_device(model)
    losses: list[float] = []
    for start in range(0, len(sequences), batch_size):
        batch = collate(sequences[start:start + batch_size], pad_id).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
        targets = torch.nn.functional.pad(batch.labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                                reduction="none")
        counts = (targets != IGNORE_INDEX).sum(dim=1).clamp(min=1)
        losses += (nll.sum(dim=1) / counts).cpu().tolist()
    return losses


def _mismatched_units(units: str, other: str) -> str:
    """`other`'s units laid over as many positions as `units` has (cycled when shorter), keeping
    the silence units at both ends: the durations stay, only what is said changes."""
    body = other.strip() or other
    inner = "".join(body[i % len(body)] for i in range(max(0, len(units) - 2)))
    return units[0] + inner + units[-1] if len(units) >= 2 else inner[:len(units)]


def text_conditioning_gain(model: Any, tokenizer: Any, layout: TokenLayout,
                           utterances: Sequence[TokenizedUtterance], *, max_utterances: int = 32,
                           batch_size: int = 8, alignments: Mapping[str, Any] | None = None) -> TextGain:
    """Loss of each utterance's speech under its own transcript and under the transcript of the
    utterance half the list away (a fixed derangement, so the result is deterministic). Only the
    speech tokens and the end token carry loss, exactly as in training.

    With `alignments` the model is one of the interleaved layout (`workbench.lm.interleaved`): the
    mismatched sequence keeps the utterance's own durations and frames and replaces its characters,
    in the text part and before each unit's frames, by the other utterance's; the loss covers the
    speech and end-of-unit tokens."""
    from workbench.lm.interleaved import build_interleaved_sequence
    from workbench.lm.phonemes import frontend_texts

    chosen = list(utterances)
    if alignments is not None:
        chosen = [u for u in chosen if u.utterance_id in alignments]
    chosen = chosen[:max_utterances]
    if len(chosen) < 2:
        raise ValueError(f"text_conditioning_gain needs at least 2 utterances, got {len(chosen)}")
    shift = len(chosen) // 2
    if alignments is not None:
        aligned = [alignments[u.utterance_id] for u in chosen]
        right = [build_interleaved_sequence(tokenizer, layout, a.units, a.frames, u.codes)
                 for a, u in zip(aligned, chosen)]
        wrong = [build_interleaved_sequence(tokenizer, layout,
                                            _mismatched_units(a.units, aligned[(i + shift) % len(chosen)].units),
                                            a.frames, u.codes)
                 for i, (a, u) in enumerate(zip(aligned, chosen))]
    else:
        texts = frontend_texts(tokenizer, [u.text for u in chosen])  # IPA for a phoneme tokenizer
        right = [build_tts_sequence(tokenizer, layout, texts[i], u.codes) for i, u in enumerate(chosen)]
        wrong = [build_tts_sequence(tokenizer, layout, texts[(i + shift) % len(chosen)], u.codes)
                 for i, u in enumerate(chosen)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else layout.speech_generation_end
    was_training = model.training
    model.eval()
    try:
        loss_right = _per_sequence_loss(model, right, pad_id, batch_size)
        loss_wrong = _per_sequence_loss(model, wrong, pad_id, batch_size)
    finally:
        model.train(was_training)
    n = len(chosen)
    return TextGain(loss_right=sum(loss_right) / n, loss_wrong=sum(loss_wrong) / n,
                    fraction_better=sum(r < w for r, w in zip(loss_right, loss_wrong)) / n, n_utterances=n)


def lm_alignments(lm: Any) -> dict[str, Any] | None:
    """The alignment file an interleaved LM was trained with (`LoadedLM.meta["alignments"]`), which
    covers every split of its tokens; None for Llasa's layout."""
    if lm.meta.get("sequence_layout") != "interleaved":
        return None
    from workbench.align.forced import load_alignments

    if not lm.meta.get("alignments"):
        raise ValueError("interleaved LM checkpoint records no alignment file: cannot measure its text gain")
    return load_alignments(lm.meta["alignments"])


def lm_text_gain(lm: Any, utterances: Sequence[TokenizedUtterance], **options: Any) -> TextGain:
    """`text_conditioning_gain` of a loaded LM in its own layout (interleaved LMs are measured on
    the utterances whose alignment matches their frame count)."""
    alignments = lm_alignments(lm)
    if alignments is not None:
        alignments = {u.utterance_id: alignments[u.utterance_id] for u in utterances
                      if u.utterance_id in alignments and sum(alignments[u.utterance_id].frames) == u.n_frames}
    return text_conditioning_gain(lm.model, lm.tokenizer, lm.layout, utterances, alignments=alignments, **options)


__all__ = ["TextGain", "text_conditioning_gain", "lm_text_gain", "lm_alignments"]


def main(argv: list[str] | None = None) -> None:
    """``python -m workbench.lm.diagnostics MODEL_DIR TOKENS_DIR [--split valid]``: the text-conditioning
    gain of a trained LM (in its own layout) on one split of a token-shard folder, as JSON."""
    import argparse
    import dataclasses
    import json

    from workbench.data.token_shards import read_token_shards
    from workbench.lm.model import load_lm

    parser = argparse.ArgumentParser(prog="python -m workbench.lm.diagnostics", description=main.__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("tokens_dir")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--max-utterances", type=int, default=32)
    args = parser.parse_args(argv)
    _, utterances = read_token_shards(args.tokens_dir, split=args.split)
    if len(utterances) < 2:
        raise SystemExit(f"error: {args.tokens_dir}: split {args.split!r} has {len(utterances)} utterances; need 2")
    gain = lm_text_gain(load_lm(args.model_dir), utterances, max_utterances=args.max_utterances)
    print(json.dumps({**dataclasses.asdict(gain), "gain_nats": gain.gain_nats}, indent=2))


if __name__ == "__main__":
    main()
