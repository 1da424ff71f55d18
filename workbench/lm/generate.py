"""Speech-token generation: KV-cached sampling (a lean loop, or `model.generate`), TTS and voice cloning.

Decoding follows Llasa's released inference: the prompt ends with ``<|SPEECH_GENERATION_START|>``
(or, for voice cloning, with it followed by the prompt's speech tokens), sampling runs until
``<|SPEECH_GENERATION_END|>``, published defaults are temperature 0.8 and top-p 1.0. Long text is
chunked as the paper does (more than 100 characters: 2 chunks, more than 200: 3) and the chunks'
codes are concatenated.

One deliberate addition: with `speech_only=True` (default) a logits processor allows only speech
tokens and the end token after the prompt. A well-trained model puts nearly all mass there anyway;
small or early models otherwise emit text tokens that no codec can decode.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch

from workbench.lm.flops import generation_flops
from workbench.lm.guidance import guidance_for
from workbench.lm.interleaved import (interleaved_inference_prompt, interleaved_processor, is_interleaved,
                                      n_units_in, sequence_layout_of)
from workbench.lm.layout import TokenLayout, TokenSequence, build_inference_prompt
from workbench.lm.phonemes import frontend_text, text_frontend_of

PUBLISHED_TEMPERATURE = 0.8
PUBLISHED_TOP_P = 1.0


class Codec(Protocol):
    """What generation needs from a codec (the codec team's object satisfies this)."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:  # (batch, frames) long -> waveform
        ...


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = PUBLISHED_TEMPERATURE  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = PUBLISHED_TOP_P
    repetition_penalty: float = 1.0
    max_new_tokens: int = 0  # 0 = up to the model's context length
    num_return_sequences: int = 1
    speech_only: bool = True
    seed: int | None = None
    # Classifier-free guidance on the text (workbench.lm.guidance): 1 = off; > 1 needs a model
    # trained with text_dropout > 0 and the lean sampling loop. Each step runs a text-free twin.
    guidance_scale: float = 1.0


@dataclass
class GeneratedSpeech:
    """Output of one `generate_speech_tokens` call; sequences are ordered prompt-major
    (prompt 0's samples first)."""

    codes: list[torch.Tensor]  # per sequence, (frames,) long, the prompt's own codes excluded
    ended: list[bool]  # stopped at SPEECH_GENERATION_END (else hit max_new_tokens)
    n_new_tokens: list[int]  # per sequence, counting the end token
    prompt_lengths: list[int]  # per sequence
    flops: float  # forward FLOPs (N = all parameters) of prefill + decoding, all sequences

    @property
    def n_tokens_generated(self) -> int:
        return sum(self.n_new_tokens)


class _SpeechOnly:
    """Logits processor: only speech tokens and the end token may be sampled."""

    def __init__(self, layout: TokenLayout, vocab_size: int) -> None:
        allowed = torch.zeros(vocab_size, dtype=torch.bool)
        allowed[layout.speech_offset: layout.vocab_size] = True
        allowed[layout.speech_generation_end] = True
        self.blocked = ~allowed

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores.masked_fill(self.blocked.to(scores.device), float("-inf"))


def _left_pad(prompts: Sequence[TokenSequence], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Decoder-only batched generation needs left padding: every row's next token is at the end.
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt.input_ids)
        mask[row, width - len(prompt):] = 1
    return ids, mask


# Settings of a model's own generation_config that add logits processors the lean loop does not
# apply; a model that sets any of them is sampled through `model.generate`.
_GENERATE_ONLY = {"min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "top_h": None,
                  "no_repeat_ngram_size": 0, "bad_words_ids": None, "suppress_tokens": None,
                  "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
                  "min_length": 0, "min_new_tokens": None, "sequence_bias": None, "renormalize_logits": False,
                  "exponential_decay_length_penalty": None, "remove_invalid_values": False,
                  "encoder_repetition_penalty": 1.0, "guidance_scale": None, "watermarking_config": None}


def uses_fast_loop(model: Any, sampling: SamplingConfig) -> bool:
    """Whether `generate_speech_tokens` samples with the lean loop (`workbench.lm.fast_generate`):
    a Llama model, no repetition penalty, and no extra processor in the model's generation config."""
    from workbench.lm.fast_generate import supports_fast_generation

    if not supports_fast_generation(model) or sampling.repetition_penalty != 1.0:
        return False
    gen = getattr(model, "generation_config", None)
    for name, neutral in _GENERATE_ONLY.items():
        value = getattr(gen, name, neutral)
        if value is not None and value != neutral:
            return False
    return True


def tts_prompt(tokenizer: Any, layout: TokenLayout, text: str, *, prompt_text: str | None = None,
               prompt_codes: torch.Tensor | Sequence[int] | None = None,
               prompt_frames: Sequence[int] | None = None) -> TokenSequence:
    """The generation prompt for `text` in the layout the tokenizer was trained with: Llasa's
    (`build_inference_prompt`) or the interleaved one (`interleaved_inference_prompt`;
    `prompt_frames` is the voice prompt's alignment, used only there)."""
    if sequence_layout_of(tokenizer) == "interleaved":
        return interleaved_inference_prompt(tokenizer, layout, text, prompt_text=prompt_text,
                                            prompt_codes=prompt_codes, prompt_frames=prompt_frames)
    if text_frontend_of(tokenizer) == "phonemes":  # the IPA the tokenizer was trained on
        text = frontend_text(tokenizer, text)
        prompt_text = None if prompt_text is None else frontend_text(tokenizer, prompt_text) + " "
    return build_inference_prompt(tokenizer, layout, text, prompt_text=prompt_text, prompt_codes=prompt_codes)


@torch.no_grad()
def generate_speech_tokens(model: Any, layout: TokenLayout, prompts: Sequence[TokenSequence],
                           sampling: SamplingConfig = SamplingConfig(),
                           pad_token_id: int | None = None, *, fast: bool | None = None) -> GeneratedSpeech:
    """Sample speech tokens after each prompt (batched, KV-cached). `fast` None (default): the
    lean loop of `workbench.lm.fast_generate` where it applies (`uses_fast_loop`), else
    `model.generate`; both give the same samples for a seed. True demands the loop, False
    forces `model.generate`."""
    from transformers import LogitsProcessorList

    if not prompts:
        raise ValueError("generate_speech_tokens needs at least one prompt")
    interleaved = is_interleaved(model)
    eou = getattr(model.config, "end_of_unit_token_id", None) if interleaved else None
    for prompt in prompts:
        last = prompt.input_ids[-1]
        if last != layout.speech_generation_start and not layout.is_speech([last]).item() and last != eou:
            raise ValueError(f"prompt ends with id {last}, not <|SPEECH_GENERATION_START|> or a speech token")
    end = layout.speech_generation_end
    pad = pad_token_id if pad_token_id is not None else end
    device = next(model.parameters()).device
    ids, mask = _left_pad(prompts, pad)
    context = int(getattr(model.config, "max_position_embeddings", 2048))
    max_new = sampling.max_new_tokens or max(1, context - ids.shape[1])
    if interleaved and sampling.max_new_tokens:
        # The cap counts speech frames; each unit adds its own token and an end-of-unit.
        max_new += 2 * max(n_units_in(layout, p.input_ids) for p in prompts) + 1
    if sampling.temperature <= 0 and sampling.num_return_sequences > 1:
        raise ValueError("greedy decoding (temperature 0) gives identical samples; "
                         f"num_return_sequences={sampling.num_return_sequences} needs temperature > 0")
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    greedy = sampling.temperature <= 0
    # max_length=None: the saved generation_config carries the training context as max_length, and
    # transformers warns when both limits are set; max_new_tokens is the one that applies here.
    kwargs: dict[str, Any] = dict(do_sample=not greedy, max_new_tokens=max_new, max_length=None,
                                  num_return_sequences=sampling.num_return_sequences,
                                  eos_token_id=end, pad_token_id=pad,
                                  repetition_penalty=sampling.repetition_penalty)
    if not greedy:
        kwargs.update(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)
    processors = LogitsProcessorList([_SpeechOnly(layout, model.config.vocab_size)]) if sampling.speech_only else None
    if interleaved:  # units forced in turn; between them only speech and end-of-unit
        processors = LogitsProcessorList([interleaved_processor(model, layout)])
    guidance = guidance_for(model, sampling.guidance_scale)
    use_fast = uses_fast_loop(model, sampling) if fast is None else fast
    if guidance is not None and not use_fast:
        raise ValueError(f"guidance_scale = {sampling.guidance_scale} runs in the lean sampling loop only "
                         "(a Llama model without repetition penalty, fast=None or True)")
    if use_fast:
        if not uses_fast_loop(model, sampling):
            raise ValueError("fast=True: the lean sampling loop needs a Llama model without repetition penalty "
                             "or extra generation-config processors; use fast=None")
        out = _fast(model, ids, mask, sampling, max_new, end, pad, processors, guidance)
    else:
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             logits_processor=processors, **kwargs)
    new = out[:, ids.shape[1]:].cpu()
    codes, ended, n_new, prompt_lengths = [], [], [], []
    flops = 0.0
    for row in range(new.shape[0]):
        prompt_len = len(prompts[row // sampling.num_return_sequences])
        tokens = new[row]
        hits = (tokens == end).nonzero()
        stop = int(hits[0]) if len(hits) else len(tokens)
        body = tokens[:stop]
        # Without the speech-only mask a model may emit other ids; keep the speech ones, as
        # Llasa's own script does when it parses <|s_k|> strings.
        body = body[layout.is_speech(body)]
        codes.append(layout.codes_from_ids(body))
        ended.append(bool(len(hits)))
        n = stop + 1 if len(hits) else len(tokens)
        n_new.append(n)
        prompt_lengths.append(prompt_len)
        # guidance runs every sequence twice (with and without its text)
        flops += (1 if guidance is None else 2) * generation_flops(model.config, prompt_len, n).with_embedding
    return GeneratedSpeech(codes=codes, ended=ended, n_new_tokens=n_new, prompt_lengths=prompt_lengths,
                           flops=flops)


def _fast(model: Any, ids: torch.Tensor, mask: torch.Tensor, sampling: SamplingConfig, max_new: int,
          end: int, pad: int, processors: Any, guidance: Any = None) -> torch.Tensor:
    """The lean loop with `model.generate`'s processors in its order (custom ones, then
    temperature, top-k, top-p, as transformers appends them when sampling)."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from workbench.lm.fast_generate import fast_generate

    device = next(model.parameters()).device
    chain = list(processors or [])
    for processor in chain:  # the mask moves to the model's device once, not at every token
        if isinstance(processor, _SpeechOnly):
            processor.blocked = processor.blocked.to(device)
    greedy = sampling.temperature <= 0
    if not greedy:
        if sampling.temperature != 1.0:
            chain.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k:
            chain.append(TopKLogitsWarper(top_k=sampling.top_k, min_tokens_to_keep=1))
        if sampling.top_p < 1.0:
            chain.append(TopPLogitsWarper(top_p=sampling.top_p, min_tokens_to_keep=1))
    on_gpu = device.type == "cuda"
    return fast_generate(model, ids, mask, max_new_tokens=max_new, eos_token_id=end, pad_token_id=pad,
                         do_sample=not greedy, processors=chain,
                         num_return_sequences=sampling.num_return_sequences,
                         check_every=8 if on_gpu else 1,  # each "all ended?" test syncs a GPU
                         guidance=guidance)


# ---------------------------------------------------------------------------------------------
# Text chunking
# ---------------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[.!?;:。！？]+[\"')\]]*\s+")
_CLAUSE_END = re.compile(r"[,，]\s+")


def n_chunks_for(text: str) -> int:
    """The paper's rule: 1 chunk up to 100 characters, 2 up to 200, 3 beyond."""
    n = len(text)
    return 1 if n <= 100 else 2 if n <= 200 else 3


def split_text(text: str, n_chunks: int | None = None) -> list[str]:
    """Split `text` into `n_chunks` (default: `n_chunks_for`) pieces of similar length, cutting
    after a sentence end when one lies near the ideal cut, else after a comma, else at a space.
    Joining the pieces with single spaces gives back the text (modulo whitespace at the cuts)."""
    text = text.strip()
    n_chunks = n_chunks or n_chunks_for(text)
    if n_chunks <= 1 or len(text) < 2:
        return [text] if text else []
    tolerance = len(text) / n_chunks / 3  # a boundary may move a cut by up to 1/3 of a chunk

    def candidates(pattern: re.Pattern) -> list[int]:
        return [m.end() for m in pattern.finditer(text) if 0 < m.end() < len(text)]

    levels = [candidates(_SENTENCE_END), candidates(_CLAUSE_END),
              [i + 1 for i, ch in enumerate(text) if ch.isspace() and 0 < i + 1 < len(text)]]
    cuts: list[int] = []
    for k in range(1, n_chunks):
        target = k * len(text) / n_chunks
        previous = cuts[-1] if cuts else 0
        chosen = None
        for level, positions in enumerate(levels):
            usable = [p for p in positions if p > previous]
            if not usable:
                continue
            best = min(usable, key=lambda p: abs(p - target))
            if level == len(levels) - 1 or abs(best - target) <= tolerance:
                chosen = best
                break
        if chosen is None:  # no whitespace at all (e.g. Chinese without punctuation): hard cut
            chosen = max(previous + 1, round(target))
        cuts.append(chosen)
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b].strip() for a, b in zip(bounds, bounds[1:])]
    return [p for p in pieces if p]


# ---------------------------------------------------------------------------------------------
# TTS and voice cloning
# ---------------------------------------------------------------------------------------------


@dataclass
class SynthesisResult:
    """One synthesised utterance per requested sample."""

    text: str
    chunks: list[str]
    codes: torch.Tensor  # (frames,) long: all chunks concatenated, voice prompt excluded
    ended: bool  # every chunk reached SPEECH_GENERATION_END
    n_tokens_generated: int
    flops: float
    wav: torch.Tensor | None = None  # when a codec was given
    chunk_codes: list[torch.Tensor] = field(default_factory=list)


def synthesize(model: Any, tokenizer: Any, layout: TokenLayout, text: str, *,
               prompt_text: str | None = None, prompt_codes: torch.Tensor | Sequence[int] | None = None,
               sampling: SamplingConfig = SamplingConfig(), chunk: bool = True,
               codec: Codec | None = None) -> list[SynthesisResult]:
    """TTS for `text` (voice cloning when `prompt_text` and `prompt_codes` are given);
    `sampling.num_return_sequences` independent samples.

    Long text is split by `split_text`; every chunk is generated after the same voice prompt. With
    no voice prompt, chunks after the first are prompted with the first chunk's text and codes so
    that the voice stays the same across chunks. With a `codec`, each result carries
    ``codec.decode(codes[None])``.
    """
    chunks = split_text(text) if chunk else [text.strip()]
    if not chunks:
        raise ValueError("synthesize needs non-empty text")
    pad = tokenizer.pad_token_id
    n = sampling.num_return_sequences
    per_sample_codes: list[list[torch.Tensor]] = [[] for _ in range(n)]
    ended = [True] * n
    tokens = [0] * n
    flops = [0.0] * n
    one = dataclasses.replace(sampling, num_return_sequences=1)
    for index, piece in enumerate(chunks):
        if prompt_codes is not None or index == 0:
            prompt = tts_prompt(tokenizer, layout, piece, prompt_text=prompt_text, prompt_codes=prompt_codes)
            out = generate_speech_tokens(model, layout, [prompt], sampling, pad_token_id=pad)
        else:
            # Each sample continues its own first chunk: one prompt per sample, one draw each.
            prompts = [tts_prompt(tokenizer, layout, piece, prompt_text=chunks[0] + " ",
                                  prompt_codes=per_sample_codes[s][0]) for s in range(n)]
            out = generate_speech_tokens(model, layout, prompts, one, pad_token_id=pad)
        for s in range(n):
            per_sample_codes[s].append(out.codes[s])
            ended[s] = ended[s] and out.ended[s]
            tokens[s] += out.n_new_tokens[s]
        share = out.flops / n  # FLOPs are summed over the batch; split evenly per sample
        for s in range(n):
            flops[s] += share
    results = []
    for s in range(n):
        codes = torch.cat(per_sample_codes[s]) if per_sample_codes[s] else torch.zeros(0, dtype=torch.long)
        wav = codec.decode(codes[None]) if codec is not None and codes.numel() else None
        results.append(SynthesisResult(text=text, chunks=chunks, codes=codes, ended=ended[s],
                                       n_tokens_generated=tokens[s], flops=flops[s], wav=wav,
                                       chunk_codes=per_sample_codes[s]))
    return results


__all__ = [
    "Codec", "SamplingConfig", "GeneratedSpeech", "SynthesisResult", "generate_speech_tokens", "uses_fast_loop",
    "tts_prompt",
    "n_chunks_for", "split_text", "synthesize",
]
