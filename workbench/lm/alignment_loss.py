"""Training-only alignment losses on the attention of Llasa's layout (text tokens, then speech).

Two auxiliary losses push the attention of speech positions onto their text monotonically, as
Neekhara et al. 2024 ("Improving robustness of LLM-based speech synthesis by learning monotonic
alignment") do for an encoder-decoder TTS; here the "cross-attention" is the part of a decoder
layer's self-attention that speech queries spend on the text span. Inference is untouched: the
model stays a plain `LlamaForCausalLM` and `generate` needs nothing from this module.

- **Renormalised over the text span** (`text_span_attention`). A speech query's attention is a
  distribution over every earlier key; a penalty on its raw text part is met by attending
  elsewhere (measured: a DCTTS prior on raw attention was driven to ~0 while the model stopped
  reading its text). Each speech query's attention on the text keys is divided by its total on
  the text keys, so only *how it is spread over the text* counts. A small floor (`eps`) is added
  to every text key before dividing: attention that leaves the text altogether renormalises to
  the uniform spread, which both losses score badly, instead of to 0/0.
- **Diagonal prior** (`diagonal_prior_loss`, DCTTS-style): weight W = 1 - exp(-(s/S - t/T)^2 /
  (2 sigma^2)) on speech query s of S over text token t of T; the loss is the expected W under
  the renormalised attention, averaged over queries, heads and layers (0 = on the diagonal, at
  most 1).
- **CTC alignment** (`ctc_alignment_loss`): the head-averaged renormalised attention of each speech
  query is read as an emission distribution over the text tokens plus a blank (a fixed blank
  probability), and torch's CTC loss is asked for the target 1, 2, ..., T: every path must visit
  every text token once, in order, so the loss is low only for a monotonic alignment that covers
  the whole text. Reported in nats per speech query. A sequence with fewer speech queries than
  text tokens has no such path and contributes 0 (``zero_infinity``).

Speech queries are the positions whose next-token target is a speech frame
(``<|SPEECH_GENERATION_START|>`` and every frame but the last): the hidden state there is the one
that must produce that frame, so it is the one that should read the text for it. Text keys are
the positions strictly between ``<|TEXT_UNDERSTANDING_START|>`` and ``<|TEXT_UNDERSTANDING_END|>``.

Measured (Kathleen, cpu-1m, 400k tokens, `--profile cpu`, held-out gain over 28 valid utterances;
plain: gain 0.0036 nats, valid loss 4.93): with both weights 1 the CTC loss reached its floor
within 70 steps through a *positional sweep*: every head of the chosen layers attends at a fixed
relative offset (trivial with RoPE), walking the text at one token per frame and then parking on
the last token, monotonic and covering, so CTC is met without reading anything (gain 0.0005,
valid loss 5.43). A prior weight of 10 forces the corner-to-corner diagonal instead (prior 0.04),
but at an average speaking rate, again positional (gain 0.0097 with 46 % of utterances preferring
their own text, i.e. noise; valid loss 6.02); on head 0 alone: gain 0.0066, valid loss 5.56. With
weight 10 the pre-clip gradient norm is 5-7, so clipping at 1.0 also slows the LM loss ~6-fold.
Neither loss knows the real durations, so a position-only alignment always satisfies both; in the
encoder-decoder model of the paper the cross-attention has no relative position to sweep with.

The losses need attention probabilities, which only transformers' "eager" attention returns
(``output_attentions=True``); `workbench.lm.train` switches to it only when an alignment weight is
positive (SDPA otherwise), and refuses packed rows (several utterances per row) with the losses on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from workbench.lm.layout import TokenLayout

# Added to each text key's attention before renormalising (see the module docstring). Softmax never
# gives exact zeros short of fp32 underflow, so this only decides the limit of attention that has
# left the text (text logits ~28 below the rest): the uniform spread. Large floors would soften the
# loss of a wrong alignment whenever text mass drops, a dodge of their own.
RENORM_FLOOR = 1e-12
CTC_BLANK_PROB = 0.1  # per-frame probability of the CTC blank (frames aligned to no token: silence)
_PAD_LOGIT = -1e4  # emission logit of padded text columns: never on a CTC path, finite for backward


def default_align_layers(n_layers: int) -> tuple[int, ...]:
    """The middle third of the layers (at least one): layers 1-2 of 5, 2-4 of 8 (the layers the
    measured renormalised prior used on cpu-3m), 0 of 2."""
    if n_layers < 1:
        raise ValueError(f"n_layers = {n_layers}: a model has at least one layer")
    low = n_layers // 3
    return tuple(range(low, max(low + 1, 2 * n_layers // 3)))


def span_masks(input_ids: torch.Tensor, layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """(text_mask, speech_mask), both (B, L) bool, of Llasa-layout rows: text keys strictly between
    the text-understanding markers; speech queries = positions whose next token is a speech frame."""
    ids = input_ids
    start = (ids == layout.text_understanding_start).long().cumsum(dim=1)
    end = (ids == layout.text_understanding_end).long().cumsum(dim=1)
    # inside: after exactly one start marker and before its end marker (the markers themselves excluded)
    text_mask = (start == 1) & (end == 0) & (ids != layout.text_understanding_start)
    next_is_speech = layout.is_speech(ids[:, 1:])
    speech_mask = torch.zeros_like(text_mask)
    speech_mask[:, :-1] = next_is_speech
    return text_mask, speech_mask


def _positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indices (B, N) of each row's True positions in order, padded with 0; counts (B,); valid (B, N))."""
    counts = mask.sum(dim=1)
    width = max(1, int(counts.max()) if counts.numel() else 1)
    # A stable sort of "not in mask" puts each row's positions first, in order.
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :width]
    valid = torch.arange(width, device=mask.device)[None, :] < counts[:, None]
    return torch.where(valid, order, torch.zeros_like(order)), counts, valid


@dataclass
class TextSpanAttention:
    """Attention of speech queries over the text keys, renormalised to sum to 1 over the text.

    `probs` is (B, layers, heads, S, T), padded: rows of padded queries and columns of padded text
    positions are 0; `speech_lengths[b]` = S_b, `text_lengths[b]` = T_b."""

    probs: torch.Tensor
    speech_lengths: torch.Tensor
    text_lengths: torch.Tensor

    @property
    def usable(self) -> torch.Tensor:
        """(B,) bool: sequences with at least one speech query and one text token."""
        return (self.speech_lengths > 0) & (self.text_lengths > 0)

    def valid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(query_valid (B, S), text_valid (B, T)) bool masks of the padded tensor."""
        B, _, _, S, T = self.probs.shape
        device = self.probs.device
        return (torch.arange(S, device=device)[None, :] < self.speech_lengths[:, None],
                torch.arange(T, device=device)[None, :] < self.text_lengths[:, None])


def text_span_attention(attentions: Sequence[torch.Tensor] | torch.Tensor, text_mask: torch.Tensor,
                        speech_mask: torch.Tensor, eps: float = RENORM_FLOOR) -> TextSpanAttention:
    """Per layer and head, the attention of the speech query positions over the text key
    positions, renormalised over the text span (computed in fp32).

    `attentions`: one (B, H, L, L) tensor per layer (what a transformers model returns with
    ``output_attentions=True``, here only the chosen layers), or one such tensor. `text_mask`,
    `speech_mask`: (B, L) bool (see `span_masks`)."""
    layers = [attentions] if isinstance(attentions, torch.Tensor) else list(attentions)
    if not layers:
        raise ValueError("text_span_attention needs the attention of at least one layer")
    text_index, text_lengths, text_valid = _positions(text_mask)
    query_index, speech_lengths, query_valid = _positions(speech_mask)
    out = []
    for attn in layers:
        if attn.dim() != 4 or attn.shape[0] != text_mask.shape[0] or attn.shape[-1] != text_mask.shape[1]:
            raise ValueError(f"attention of shape {tuple(attn.shape)} does not match masks of shape "
                             f"{tuple(text_mask.shape)}: expected (B, heads, L, L)")
        B, H, L, _ = attn.shape
        rows = attn.gather(2, query_index[:, None, :, None].expand(B, H, query_index.shape[1], L))
        span = rows.gather(3, text_index[:, None, None, :].expand(B, H, query_index.shape[1], text_index.shape[1]))
        span = (span.float() + eps) * text_valid[:, None, None, :]
        span = span / span.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        out.append(span * query_valid[:, None, :, None])
    return TextSpanAttention(torch.stack(out, dim=1), speech_lengths, text_lengths)


def diagonal_weights(speech_lengths: torch.Tensor, text_lengths: torch.Tensor, n_queries: int,
                     n_text: int, sigma: float) -> torch.Tensor:
    """(B, S, T) DCTTS penalty W = 1 - exp(-(s/S_b - t/T_b)^2 / (2 sigma^2)), positions taken at
    their centres ((s + 0.5) / S_b), so the diagonal runs corner to corner for any S_b, T_b."""
    device = speech_lengths.device
    s = (torch.arange(n_queries, device=device)[None, :] + 0.5) / speech_lengths.clamp_min(1)[:, None]
    t = (torch.arange(n_text, device=device)[None, :] + 0.5) / text_lengths.clamp_min(1)[:, None]
    return 1.0 - torch.exp(-((s[:, :, None] - t[:, None, :]) ** 2) / (2.0 * sigma * sigma))


def diagonal_prior_loss(span: TextSpanAttention, sigma: float = 0.2) -> torch.Tensor:
    """(B,) expected diagonal penalty of each sequence's renormalised text attention, averaged over
    its speech queries, the heads and the layers; 0 for a sequence without text or speech."""
    if sigma <= 0:
        raise ValueError(f"sigma = {sigma}: the prior's width must be > 0")
    B, n_layers, n_heads, S, T = span.probs.shape
    weights = diagonal_weights(span.speech_lengths, span.text_lengths, S, T, sigma)
    per_query = (span.probs * weights[:, None, None]).sum(dim=-1)  # (B, layers, heads, S); padded rows 0
    total = per_query.sum(dim=(1, 2, 3))
    return torch.where(span.usable, total / (n_layers * n_heads * span.speech_lengths.clamp_min(1)),
                       torch.zeros_like(total))


def ctc_alignment_loss(span: TextSpanAttention, blank_prob: float = CTC_BLANK_PROB) -> torch.Tensor:
    """(B,) CTC loss of the target 1..T_b (every text token once, in order) under emissions
    [blank, text tokens] per speech query, in nats per speech query, averaged over layers.

    Emissions per layer: the renormalised attention averaged over heads, scaled by 1 - blank_prob,
    with the blank at blank_prob (built through log_softmax, whose backward torch's CTC gradient
    assumes). A sequence with no monotonic path (fewer queries than text tokens) or no text gives 0."""
    if not 0.0 < blank_prob < 1.0:
        raise ValueError(f"blank_prob = {blank_prob}: expected a probability in (0, 1)")
    B, n_layers, _, S, T = span.probs.shape
    query_valid, text_valid = span.valid()
    mean_heads = span.probs.mean(dim=2)  # (B, layers, S, T); rows sum to 1 over valid text
    text_logits = torch.log(mean_heads.clamp_min(1e-30)).masked_fill(~text_valid[:, None, None, :], _PAD_LOGIT)
    blank_logit = torch.full((B, n_layers, S, 1), math.log(blank_prob / (1.0 - blank_prob)),
                             device=mean_heads.device)
    log_probs = F.log_softmax(torch.cat([blank_logit, text_logits], dim=-1), dim=-1)
    targets = (torch.arange(T, device=mean_heads.device)[None, :] + 1).expand(B, T)
    input_lengths = span.speech_lengths.clamp_min(1)
    target_lengths = span.text_lengths
    total = torch.zeros(B, device=mean_heads.device)
    for layer in range(n_layers):
        nll = F.ctc_loss(log_probs[:, layer].transpose(0, 1), targets, input_lengths, target_lengths,
                         blank=0, reduction="none", zero_infinity=True)
        total = total + nll
    per_query = total / (n_layers * input_lengths)
    return torch.where(span.usable, per_query, torch.zeros_like(per_query))


@dataclass(frozen=True)
class AlignmentObjective:
    """The training loop's view: which layers, which weights; `sums` turns a forward pass's
    attentions into per-batch sums of the per-sequence losses (the loop divides by the step's
    sequence count, so micro-batching and data parallel give the same update)."""

    layout: TokenLayout
    layers: tuple[int, ...]
    prior_weight: float = 0.0
    ctc_weight: float = 0.0
    prior_sigma: float = 0.2
    heads: tuple[int, ...] = ()  # query heads of each chosen layer; () = all

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("AlignmentObjective needs at least one layer")
        if self.prior_weight < 0 or self.ctc_weight < 0:
            raise ValueError(f"alignment weights must be >= 0: prior {self.prior_weight}, ctc {self.ctc_weight}")

    @classmethod
    def for_model(cls, layout: TokenLayout, n_layers: int, layers: Sequence[int], prior_weight: float,
                  ctc_weight: float, prior_sigma: float, heads: Sequence[int] = (),
                  n_heads: int | None = None) -> "AlignmentObjective":
        chosen = tuple(int(i) for i in layers) or default_align_layers(n_layers)
        bad = [i for i in chosen if not 0 <= i < n_layers]
        if bad:
            raise ValueError(f"align_layers {list(chosen)}: layers {bad} do not exist in a {n_layers}-layer model")
        bad = [h for h in heads if n_heads is not None and not 0 <= h < n_heads]
        if bad:
            raise ValueError(f"align_heads {list(heads)}: heads {bad} do not exist in layers of {n_heads} heads")
        return cls(layout, chosen, float(prior_weight), float(ctc_weight), float(prior_sigma),
                   tuple(int(h) for h in heads))

    @property
    def terms(self) -> tuple[str, ...]:
        """Names of the losses with a positive weight (the keys `sums` returns)."""
        return tuple(name for name, weight in (("align_prior", self.prior_weight), ("align_ctc", self.ctc_weight))
                     if weight > 0)

    def sums(self, attentions: Sequence[torch.Tensor], input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"align_prior": Σ_b prior_b, "align_ctc": Σ_b ctc_b} for one batch (only the terms with
        a positive weight), from all layers' attentions of the forward pass."""
        if attentions is None or len(attentions) == 0:
            raise ValueError("no attention probabilities: the model must run with eager attention "
                             "and output_attentions=True")
        text_mask, speech_mask = span_masks(input_ids, self.layout)
        chosen = [attentions[i] for i in self.layers]
        if self.heads:  # the other heads stay free for whatever else the LM needs
            chosen = [attn[:, list(self.heads)] for attn in chosen]
        span = text_span_attention(chosen, text_mask, speech_mask)
        out: dict[str, torch.Tensor] = {}
        if self.prior_weight > 0:
            out["align_prior"] = diagonal_prior_loss(span, self.prior_sigma).sum()
        if self.ctc_weight > 0:
            out["align_ctc"] = ctc_alignment_loss(span).sum()
        return out

    def weighted(self, sums: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ weight × loss over the terms in `sums`."""
        weights = {"align_prior": self.prior_weight, "align_ctc": self.ctc_weight}
        terms = [weights[name] * value for name, value in sums.items()]
        if not terms:
            raise ValueError("no alignment loss terms to weigh")
        return sum(terms[1:], terms[0])


__all__ = ["RENORM_FLOOR", "CTC_BLANK_PROB", "default_align_layers", "span_masks", "TextSpanAttention",
           "text_span_attention", "diagonal_weights", "diagonal_prior_loss", "ctc_alignment_loss",
           "AlignmentObjective"]
