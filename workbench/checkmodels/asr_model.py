"""A small character-level CTC recogniser that the workbench trains itself (the model; its verifier
is `workbench.verifiers.trained_asr`, its training `workbench.checkmodels.asr_train`).

Why: pocketsphinx is the only ASR model that ships offline here; a second, independent content
verifier lets search results be re-checked by a model that search did not optimise against (the
paper re-checks SIM with a second speaker model for the same reason, Llasa §5).

Model (`CTCRecognizer`): per-utterance normalised log-mel (80 bins, 10 ms hop) -> one strided
convolution (stride 4, 40 ms frames: read speech has ~12-15 characters per second, so CTC keeps
room for blanks between doubled letters) -> residual blocks of depthwise conv + LayerNorm + MLP
(ConvNeXt-style; convolutions keep both CPU cores busy where a recurrent layer would step frame
by frame) -> optionally a bidirectional GRU -> linear layer over blank + the characters `normalize_text` can emit. Greedy CTC
decoding. Padded frames are zeroed after every block, so a clip decodes the same alone or in a
padded batch.

The verifier `workbench-asr` loads a trained model from a run directory or a checkpoint file
(`model=`); without `model=` it takes the newest finished `asr` run under the runs root.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from workbench.checkmodels import common
from workbench.errors import VerifierError

# Blank first (CTC convention), then every character `normalize_text` leaves after spelling
# digits out: space, apostrophe, a-z.
BLANK = "_"
ALPHABET = (BLANK, " ", "'") + tuple("abcdefghijklmnopqrstuvwxyz")
MODEL_FILE = common.MODEL_FILE
SAMPLE_RATE_HZ = 16000


@dataclass(frozen=True)
class ASRModelSpec:
    """Architecture and front end of a `CTCRecognizer`; stored in every checkpoint so a model
    file is self-describing."""

    n_mels: int = 80
    n_fft: int = 400  # 25 ms window at 16 kHz
    hop_length: int = 160  # 10 ms
    stride: int = 4  # frames merged by the front-end convolution (40 ms output frames)
    width: int = 192
    n_blocks: int = 5
    kernel_size: int = 9  # depthwise kernel, in output frames (9 x 40 ms = 0.36 s)
    mlp_ratio: int = 2
    dropout: float = 0.1
    rnn_layers: int = 0  # bidirectional GRU layers after the conv blocks (width/2 per direction)
    vocab: tuple[str, ...] = ALPHABET

    def __post_init__(self) -> None:
        for name in ("n_mels", "n_fft", "hop_length", "stride", "width", "n_blocks", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"ASRModelSpec.{name} = {getattr(self, name)}: must be >= 1")
        if self.rnn_layers < 0 or (self.rnn_layers and self.width % 2):
            raise ValueError(f"ASRModelSpec.rnn_layers = {self.rnn_layers} with width {self.width}: "
                             "need rnn_layers >= 0 and an even width")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"ASRModelSpec.kernel_size = {self.kernel_size}: must be odd and >= 1")
        if not self.vocab or self.vocab[0] != BLANK:
            raise ValueError(f"ASRModelSpec.vocab must start with the blank {BLANK!r}, got {self.vocab[:3]!r}")


# ---------------------------------------------------------------------------------------------
# Text <-> ids


def encode_text(text: str, vocab: tuple[str, ...] = ALPHABET) -> list[int]:
    """Ids of a normalised transcript (see `normalize_text`); raises on a character outside `vocab`."""
    index = {c: i for i, c in enumerate(vocab)}
    try:
        return [index[c] for c in text]
    except KeyError as error:
        raise ValueError(f"character {error.args[0]!r} of {text!r} is not in the ASR vocabulary") from None


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: tuple[str, ...] = ALPHABET) -> list[str]:
    """Best-path CTC decoding of (batch, frames, vocab) scores: argmax per frame, merge repeats,
    drop blanks, collapse spaces."""
    best = log_probs.argmax(dim=-1).cpu()
    texts = []
    for row, length in zip(best, lengths.tolist()):
        ids = row[:length].tolist()
        chars = [vocab[i] for j, i in enumerate(ids) if i != 0 and (j == 0 or i != ids[j - 1])]
        texts.append(" ".join("".join(chars).split()))
    return texts


# ---------------------------------------------------------------------------------------------
# Lexicon-constrained beam search

# "greedy": best path, may misspell; "lexicon": beam search over dictionary words;
# "lexicon-lm": the same plus the run's word n-gram LM (`WORD_LM_FILE` beside the model).
DECODERS = ("greedy", "lexicon", "lexicon-lm")
WORD_LM_FILE = "words.arpa"


@dataclass(frozen=True)
class LexiconDecoding:
    """Beam-search settings (flashlight's LexiconDecoder through torchaudio; scores are natural
    log-probabilities, `lm_weight` scales the LM's, `word_score` is added per word)."""

    # Tuned on kathleen:valid, original and codec-resynthesised (28 clips each): a wider beam
    # (64 / 12 / 30) changed no WER by more than a word or two at half the speed.
    beam_size: int = 32
    beam_size_token: int = 8  # letters tried per frame
    beam_threshold: float = 20.0  # hypotheses this far below the best are pruned
    lm_weight: float = 1.0  # ignored without an LM
    # A word costs a little: the model often drops spaces, and splitting into short words
    # was the lexicon search's commonest error.
    word_score: float = -1.0


def cmudict_path() -> Path:
    """The CMU pronouncing dictionary that ships inside the pocketsphinx wheel."""
    import pocketsphinx

    return Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"


@functools.lru_cache(maxsize=4)
def lexicon_words(vocab: tuple[str, ...] = ALPHABET) -> tuple[str, ...]:
    """Sorted headwords of the CMU dictionary that `vocab` can spell ("word(2)" variants and
    words with other characters, e.g. "a.m.", dropped). Read once per process."""
    letters = set(vocab) - {BLANK, " "}
    words = set()
    with open(cmudict_path(), encoding="utf-8") as handle:
        for line in handle:
            word = line.split(" ", 1)[0]
            if word and set(word) <= letters:
                words.add(word)
    return tuple(sorted(words))


class LexiconDecoder:
    """Per-clip log-probabilities -> transcripts made of `lexicon_words` only, optionally scored
    by a word LM (ARPA file). Build through `lexicon_decoder`, which caches one per setting."""

    def __init__(self, vocab: tuple[str, ...], lm_path: str | None, settings: LexiconDecoding) -> None:
        import tempfile

        from torchaudio.models.decoder import ctc_decoder

        if " " not in vocab:
            raise ValueError(f"lexicon decoding needs the word separator ' ' in the vocabulary, got {vocab!r}")
        # The lexicon file is whitespace-separated, so the separator is written as "|".
        self.tokens = [("|" if c == " " else c) for c in vocab]
        self.separator = vocab.index(" ")
        with tempfile.NamedTemporaryFile("w", suffix=".lex", encoding="utf-8") as lexicon:
            # Every word ends with the separator, so a word can only end at a space.
            lexicon.writelines(f"{w}\t{' '.join(w)} |\n" for w in lexicon_words(vocab))
            lexicon.flush()
            self._decoder = ctc_decoder(lexicon.name, self.tokens, lm=lm_path, beam_size=settings.beam_size,
                                        beam_size_token=settings.beam_size_token,
                                        beam_threshold=settings.beam_threshold, lm_weight=settings.lm_weight,
                                        word_score=settings.word_score, blank_token=BLANK, sil_token="|")

    def __call__(self, log_probs: list[torch.Tensor]) -> list[str]:
        texts = []
        for lp in log_probs:
            # One extra frame that is surely the separator, so the last word ends even when the
            # model emits no trailing space (a word only completes at its separator).
            end = torch.full((1, lp.shape[-1]), -1e4)
            end[0, self.separator] = 0.0
            emissions = torch.cat([lp.float().cpu(), end])[None].contiguous()
            best = self._decoder(emissions, torch.tensor([emissions.shape[1]]))[0]
            texts.append(" ".join(best[0].words) if best else "")
        return texts


def lexicon_decoder(vocab: tuple[str, ...] = ALPHABET, lm_path: str | Path | None = None,
                    settings: LexiconDecoding = LexiconDecoding()) -> LexiconDecoder:
    """A `LexiconDecoder`, cached per process by (vocab, LM file and its modification time,
    settings): building one spells ~125k words into a trie and reads the LM (2-3 s)."""
    if lm_path is None:
        return _lexicon_decoder(vocab, None, 0, settings)
    lm = Path(lm_path)
    if not lm.is_file():
        raise VerifierError(f"word LM {str(lm)!r} not found")
    return _lexicon_decoder(vocab, str(lm.resolve()), lm.stat().st_mtime_ns, settings)


@functools.lru_cache(maxsize=8)
def _lexicon_decoder(vocab: tuple[str, ...], lm_path: str | None, mtime_ns: int,  # noqa: ARG001 - keys
                     settings: LexiconDecoding) -> LexiconDecoder:
    return LexiconDecoder(vocab, lm_path, settings)


def write_word_lm(texts: Iterable[str], path: str | Path, order: int = 3, discount: float = 0.7,
                  vocab: tuple[str, ...] = ALPHABET) -> Path:
    """Write a word n-gram LM of normalised `texts` as an ARPA file (what KenLM reads), atomically.

    Interpolated absolute discounting (Ney et al. 1994): p(w|h) = max(c(hw) - D, 0) / c(h) +
    bow(h) p(w|h'), bow(h) = D * (distinct words after h) / c(h); stored as ARPA back-off, which
    holds exactly for interpolated models. Unigrams are maximum likelihood scaled by 1 - n1/N, and
    the Good-Turing mass of unseen words, n1/N, is spread over the lexicon's unseen words as the
    probability of <unk> (what the decoder scores a dictionary word the texts never used with).
    """
    import math
    from collections import Counter

    if order < 1 or not 0.0 < discount < 1.0:
        raise ValueError(f"write_word_lm: order {order} must be >= 1 and discount {discount} in (0, 1)")
    counts: list[Counter] = [Counter() for _ in range(order + 1)]  # counts[n][ngram tuple]
    for text in texts:
        words = ["<s>", *text.split(), "</s>"]
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                if n > 1 or words[i] != "<s>":
                    counts[n][tuple(words[i:i + n])] += 1
    if not counts[1]:
        raise ValueError("write_word_lm: no words in the texts")
    total = sum(counts[1].values())
    unseen_mass = max(sum(1 for c in counts[1].values() if c == 1), 1) / total
    n_unseen = max(len(set(lexicon_words(vocab)) - {w for (w,) in counts[1]}), 1)
    # History statistics: total count and distinct continuations of each (n-1)-gram context.
    context_total = [Counter() for _ in range(order + 1)]
    context_types = [Counter() for _ in range(order + 1)]
    for n in range(2, order + 1):
        for gram, c in counts[n].items():
            context_total[n][gram[:-1]] += c
            context_types[n][gram[:-1]] += 1

    def backoff(gram: tuple[str, ...]) -> float:  # bow of a context, 1 where it never is one
        n = len(gram) + 1
        if n > order or gram not in context_total[n]:
            return 1.0
        return discount * context_types[n][gram] / context_total[n][gram]

    probs: dict[tuple[str, ...], float] = {}

    def prob(gram: tuple[str, ...]) -> float:
        if gram in probs:
            return probs[gram]
        if len(gram) == 1:
            return (1 - unseen_mass) * counts[1].get(gram, 0) / total or unseen_mass / n_unseen
        lower = prob(gram[1:])
        c = counts[len(gram)].get(gram, 0)
        history = context_total[len(gram)].get(gram[:-1], 0)
        if history == 0:
            return lower
        return max(c - discount, 0.0) / history + backoff(gram[:-1]) * lower

    for n in range(1, order + 1):
        for gram in counts[n]:
            probs[gram] = prob(gram)
    lines = ["", "\\data\\", f"ngram 1={len(counts[1]) + 2}"]
    lines += [f"ngram {n}={len(counts[n])}" for n in range(2, order + 1)]
    for n in range(1, order + 1):
        lines += ["", f"\\{n}-grams:"]
        if n == 1:
            # <s> is only ever a context; <unk> stands for every unseen dictionary word.
            lines.append(f"-99\t<s>\t{math.log10(backoff(('<s>',))):.6f}")
            lines.append(f"{math.log10(unseen_mass / n_unseen):.6f}\t<unk>")
        for gram in sorted(counts[n]):
            bow = f"\t{math.log10(backoff(gram)):.6f}" if n < order and gram in context_total[n + 1] else ""
            lines.append(f"{math.log10(probs[gram]):.6f}\t{' '.join(gram)}{bow}")
    lines += ["", "\\end\\", ""]
    from workbench.atomic import atomic_write_text

    return atomic_write_text(Path(path), "\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Features


def log_mel_features(wav: torch.Tensor, spec: ASRModelSpec) -> torch.Tensor:
    """(frames, n_mels) log-mel of a 1-D 16 kHz waveform, mean- and variance-normalised over the
    utterance per bin: removes the recording channel's spectral tilt and the level, which differ
    between corpora far more than the speech does."""
    from workbench.audio import log_mel

    feats = log_mel(wav.float(), SAMPLE_RATE_HZ, n_fft=spec.n_fft, hop_length=spec.hop_length,
                    n_mels=spec.n_mels).T  # (frames, n_mels)
    mean = feats.mean(dim=0, keepdim=True)
    std = feats.std(dim=0, keepdim=True, unbiased=False) if feats.shape[0] > 1 else torch.ones_like(mean)
    return (feats - mean) / (std + 1e-5)


def pad_features(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (frames, n_mels) tensors into (batch, max_frames, n_mels) plus their lengths."""
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.long)
    batch = torch.zeros(len(features), int(lengths.max()), features[0].shape[1])
    for i, f in enumerate(features):
        batch[i, :f.shape[0]] = f
    return batch, lengths


# ---------------------------------------------------------------------------------------------
# Model


class ConvBlock(nn.Module):
    """Depthwise conv over time (context) -> LayerNorm -> pointwise MLP (mixing), residual."""

    def __init__(self, width: int, kernel_size: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2, groups=width)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_ratio * width, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (batch, frames, width); mask: (batch, frames, 1), 1 on real frames.
        h = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        return (x + self.mlp(self.norm(h))) * mask


class CTCRecognizer(nn.Module):
    """Normalised log-mel frames -> per-frame log-probabilities over `spec.vocab` (blank = 0)."""

    def __init__(self, spec: ASRModelSpec) -> None:
        super().__init__()
        self.spec = spec
        # Kernel 2*stride-1 centred on each output frame: neighbouring windows overlap by a frame.
        kernel = 2 * spec.stride + 1
        self.front = nn.Conv1d(spec.n_mels, spec.width, kernel, stride=spec.stride, padding=kernel // 2)
        self.front_norm = nn.LayerNorm(spec.width)
        self.blocks = nn.ModuleList(ConvBlock(spec.width, spec.kernel_size, spec.mlp_ratio, spec.dropout)
                                    for _ in range(spec.n_blocks))
        # Optional recurrent layers: a GRU carries context across the whole utterance, which
        # helps CTC spell; packed sequences keep padding out of the recurrence.
        self.rnn = (nn.GRU(spec.width, spec.width // 2, num_layers=spec.rnn_layers, batch_first=True,
                           bidirectional=True) if spec.rnn_layers else None)
        self.out_norm = nn.LayerNorm(spec.width)
        self.head = nn.Linear(spec.width, len(spec.vocab))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames of inputs with `lengths` frames (the strided convolution's arithmetic)."""
        kernel = 2 * self.spec.stride + 1
        return (lengths + 2 * (kernel // 2) - kernel) // self.spec.stride + 1

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (batch, frames, n_mels), zero beyond `lengths` -> (log_probs (batch, out_frames,
        vocab), out_lengths)."""
        hidden, out_lengths = self.hidden_states(features, lengths)
        return self.head(hidden).log_softmax(dim=-1), out_lengths

    def hidden_states(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the output layer reads: (batch, out_frames, width) normalised features, and
        out_lengths. A codec's semantic teacher distils these (`workbench.codec.teachers`)."""
        out_lengths = self.output_lengths(lengths)
        x = self.front(features.transpose(1, 2)).transpose(1, 2)
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < out_lengths[:, None]).unsqueeze(-1)
        mask = mask.to(x.dtype)
        x = nn.functional.gelu(self.front_norm(x)) * mask
        for block in self.blocks:
            x = block(x, mask)
        if self.rnn is not None:
            packed = nn.utils.rnn.pack_padded_sequence(x, out_lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = self.rnn(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])
            x = x + h  # residual: the conv features stay available to the head
        return self.out_norm(x), out_lengths

    @torch.no_grad()
    def log_probs_of(self, wavs: list[torch.Tensor], batch_size: int = 16) -> list[torch.Tensor]:
        """Per-clip (frames, vocab) log-probabilities of 1-D 16 kHz waveforms, in input order."""
        was_training = self.training
        self.eval()
        try:
            # Sort by length so each padded batch wastes little compute; restore the order after.
            order = sorted(range(len(wavs)), key=lambda i: wavs[i].numel())
            out: list[torch.Tensor] = [torch.empty(0)] * len(wavs)
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                features, lengths = pad_features([log_mel_features(wavs[i], self.spec) for i in idx])
                device = next(self.parameters()).device  # inputs go where the weights are
                log_probs, out_lengths = self(features.to(device), lengths.to(device))
                log_probs, out_lengths = log_probs.cpu(), out_lengths.cpu()
                for row, i in enumerate(idx):
                    out[i] = log_probs[row, :out_lengths[row]]
            return out
        finally:
            self.train(was_training)

    def transcribe(self, wavs: list[torch.Tensor], batch_size: int = 16,
                   decode: Callable[[list[torch.Tensor]], list[str]] | None = None) -> list[str]:
        """Transcripts (normalised text: lowercase, no punctuation) of 1-D 16 kHz waveforms;
        `decode` maps per-clip log-probabilities to texts (default: greedy)."""
        log_probs = self.log_probs_of(wavs, batch_size)
        if decode is not None:
            return decode(log_probs)
        return [greedy_decode(lp[None], torch.tensor([lp.shape[0]]), self.spec.vocab)[0] for lp in log_probs]


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Saving and loading


def save_model(model: CTCRecognizer, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write a self-describing model file (spec + weights + `extra` metadata), atomically."""
    from workbench.atomic import atomic_torch_save

    spec = asdict(model.spec)
    spec["vocab"] = list(spec["vocab"])
    return atomic_torch_save({"format": "workbench-ctc-asr/1", "spec": spec,
                              "state_dict": model.state_dict(), "extra": extra or {}}, path)


def load_model(path: str | Path) -> CTCRecognizer:
    """A `CTCRecognizer` in eval mode from a model file, or a run directory holding `model.pt`."""
    path = resolve_model_path(path)
    from workbench.checkpoints import load_weights_only

    blob = load_weights_only(path)  # refuses a file that holds more than weights
    if not isinstance(blob, dict) or blob.get("format") != "workbench-ctc-asr/1":
        raise VerifierError(f"{path}: not a workbench CTC ASR model file (format "
                            f"{blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r})")
    spec_dict = dict(blob["spec"])
    spec_dict["vocab"] = tuple(spec_dict["vocab"])
    model = CTCRecognizer(ASRModelSpec(**spec_dict))
    model.load_state_dict(blob["state_dict"])
    return model.eval()


def resolve_model_path(model: str | Path | None, root: str | Path | None = None) -> Path:
    """The model file for `model`: a file as is, a run directory's `model.pt`, or (None) the newest
    finished `asr` run under the runs root that has one."""
    return common.resolve_model_path(model, root, verifier="workbench-asr", run_kind="asr",
                                             trainer="workbench.checkmodels.asr_train.train_asr")
