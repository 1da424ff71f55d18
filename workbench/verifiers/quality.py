"""Quality verifier: DNSMOS (Reddy et al., P.835 model) through the `speechmos` package, whose ONNX
models ship in the wheel and run offline on onnxruntime. No reference needed."""

from __future__ import annotations

from typing import Sequence

from workbench.verifiers.base import (AudioLike, MosScores, PromptLike, VerifierResult, finite_or_raise,
                                      prepare_audios, register)


@register("dnsmos")
class DnsmosVerifier:
    """Score = overall MOS (OVRL, 1-5); raw = `MosScores` (SIG, BAK, OVRL, P.808).

    DNSMOS rates 9 s windows; shorter clips are tiled to 9 s by speechmos, longer ones averaged
    over 1 s hops.
    """

    name = "dnsmos"
    sample_rate_hz = 16000
    score_range: tuple[float, float] = (1.0, 5.0)

    def __init__(self, personalized: bool = False) -> None:
        # The personalised model penalises interfering talkers as noise.
        self.model_type = "dnsmos_personalized" if personalized else "dnsmos"

    def evaluate(self, audios: Sequence[AudioLike], sample_rate: int, texts: Sequence[str] | None = None,
                 prompts: Sequence[PromptLike] | PromptLike | None = None) -> list[VerifierResult]:
        from speechmos import dnsmos

        results = []
        for i, wav in enumerate(prepare_audios(audios, sample_rate, self.sample_rate_hz)):
            # speechmos rejects samples outside [-1, 1] rather than clipping them.
            out = dnsmos.run(wav.clamp(-1.0, 1.0).numpy(), sr=self.sample_rate_hz, model_type=self.model_type)
            scores = MosScores(sig=float(out["sig_mos"]), bak=float(out["bak_mos"]),
                               ovrl=finite_or_raise(float(out["ovrl_mos"]), f"dnsmos OVRL of audio {i}"),
                               p808=float(out["p808_mos"]))
            results.append(VerifierResult(self.name, scores.ovrl, scores))
        return results

    def score(self, audios: Sequence[AudioLike], sample_rate: int, texts: Sequence[str] | None = None,
              prompts: Sequence[PromptLike] | PromptLike | None = None) -> list[float]:
        return [r.score for r in self.evaluate(audios, sample_rate, texts, prompts)]
