"""Codec speed on CPU: encode / decode real-time factors and training steps/s of a codec
architecture (default: the cpu profile), each beside a named baseline measured in the same
process, printed as ratios.

    .venv/bin/python benchmarks/codec_speed.py [--profile cpu] [--threads 1] [--seconds 10]

Baselines:
- encode: torchaudio MelSpectrogram (n_fft 1024, hop 256, 80 mels) of the same audio, and a plain
  conv stack with the same strides and widths (no residual units, no Snake);
- decode: torch.istft alone at the codec's n_fft / hop for the same number of frames (the cost
  floor of any inverse-STFT head);
- training: the same step with the GAN on (discriminator step + adversarial terms), with the
  phase-aware complex STFT loss, with the CTC objective (a batch of whole transcribed
  utterances through the encoder and the CTC head; the ablation's "+ctc" settings), with the
  workbench-ASR semantic teacher (the "+asr teacher" variant: the frozen recogniser's features
  into the encoder and a reconstruction head; a recogniser of the cpu ASR profile's shape, its
  weights do not change the cost), and a plain conv-stack forward+backward on the same batch.
  The encode+decode RTF is also measured with the teacher.
RTF = processing seconds / audio seconds (lower is faster; < 0.05 is 20x faster than real time).
Wall times on shared cores are noisy: each number is the median of `--repeats` runs; the
encode+decode RTF is also given in CPU time, which the machine's other load does not inflate.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

KATHLEEN = Path("/work/shared/data/kathleen")


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, mkldnn primitive caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_cpu_time(fn, repeats: int) -> float:
    """Median CPU seconds of this process (all its threads) per call: on a shared, oversubscribed
    machine the wall time also counts the time other processes held the cores, the CPU time
    does not (with one thread it is the wall time of an idle core)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def speech(seconds: float, sample_rate: int) -> torch.Tensor:
    from workbench.audio import load_audio

    pieces, total = [], 0
    for path in sorted((KATHLEEN / "flac16k").glob("*.flac")):
        wav = load_audio(path, sample_rate=sample_rate)[0][0]
        pieces.append(wav)
        total += wav.numel()
        if total >= seconds * sample_rate:
            break
    return torch.cat(pieces)[: int(seconds * sample_rate)]


def plain_conv_stack(config) -> nn.Module:
    layers, width = [nn.Conv1d(1, config.encoder_channels, 7, padding=3)], config.encoder_channels
    for stride in config.strides:
        out = min(2 * width, config.encoder_max_channels)
        layers += [nn.Conv1d(width, out, 2 * stride, stride, (stride + 1) // 2), nn.ReLU()]
        width = out
    layers.append(nn.Conv1d(width, config.latent_dim, 3, padding=1))
    return nn.Sequential(*layers)


def main() -> None:
    from workbench.codec.config import CodecConfig
    from workbench.codec.discriminators import CodecDiscriminators
    from workbench.codec.losses import (
        MultiScaleMelLoss, discriminator_loss, feature_matching_loss, generator_adversarial_loss,
    )
    from workbench.codec.model import build_model, count_parameters
    from workbench.config import for_profile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = for_profile(CodecConfig, args.profile)
    model = build_model(config).eval()
    wav = speech(args.seconds, config.sample_rate)
    audio_s = wav.numel() / config.sample_rate
    print(f"profile {args.profile}: {count_parameters(model) / 1e6:.2f} M parameters, codebook "
          f"{config.codebook_size}, {config.frame_rate_hz:g} Hz; {audio_s:.1f} s of speech; "
          f"{args.threads} thread(s); median of {args.repeats}")

    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(config.sample_rate, n_fft=1024, hop_length=256, n_mels=80)
    conv = plain_conv_stack(config).eval()
    x = wav.view(1, 1, -1)
    with torch.no_grad():
        codes = model.encode(x).codes
        t_enc = median_time(lambda: model.encode(x), args.repeats)
        t_mel = median_time(lambda: mel(wav), args.repeats)
        t_conv = median_time(lambda: conv(model.pad_to_hop(x)), args.repeats)
        t_dec = median_time(lambda: model.decode(codes), args.repeats)
        window = torch.hann_window(config.n_fft)
        spec = torch.stft(wav, config.n_fft, config.hop_length, window=window, return_complex=True)
        t_istft = median_time(lambda: torch.istft(spec, config.n_fft, config.hop_length, window=window),
                              args.repeats)

    def row(name: str, seconds: float, baseline: str, base_seconds: float) -> None:
        print(f"{name:<28} RTF {seconds / audio_s:8.4f}  | {baseline:<34} RTF {base_seconds / audio_s:8.4f}"
              f"  | ratio {seconds / base_seconds:7.1f}x")

    print("\n-- inference")
    row("encode (codec)", t_enc, "torchaudio MelSpectrogram", t_mel)
    row("encode (codec)", t_enc, "plain conv stack, same strides", t_conv)
    row("decode (codec)", t_dec, "torch.istft alone (same n_fft/hop)", t_istft)
    total = (t_enc + t_dec) / audio_s
    print(f"encode+decode RTF {total:.4f} ({1 / total:.0f}x faster than real time; target > 20x)")
    with torch.no_grad():
        cpu_total = (median_cpu_time(lambda: model.encode(x), args.repeats)
                     + median_cpu_time(lambda: model.decode(codes), args.repeats)) / audio_s
        cpu_mel = median_cpu_time(lambda: mel(wav), args.repeats) / audio_s
    print(f"encode+decode CPU-time RTF {cpu_total:.4f} (wall / CPU {total / cpu_total:.1f}: how much of the "
          f"wall time the machine's other load took) | MelSpectrogram CPU-time RTF {cpu_mel:.4f} "
          f"| ratio {cpu_total / cpu_mel:.1f}x")

    print("\n-- training (batch %d x %.1f s crops)" % (config.batch_size, config.segment_s))
    model.train()
    batch = torch.stack([wav[i * 4000: i * 4000 + int(config.segment_s * config.sample_rate)]
                         for i in range(config.batch_size)]).unsqueeze(1)
    mel_loss = MultiScaleMelLoss(config.sample_rate, config.mel_n_ffts, config.mel_n_mels)
    disc = CodecDiscriminators(config.mpd_periods, config.mrsd_n_ffts, config.disc_channels)
    opt_g = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=config.adam_betas)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=1e-4, betas=config.adam_betas)
    conv.train()
    opt_c = torch.optim.AdamW(conv.parameters(), lr=1e-4)

    def step_mel() -> None:
        loss = config.mel_loss_weight * mel_loss(model(batch).audio, batch)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()

    def step_gan() -> None:
        fake = model(batch).audio
        d_real, d_fake = disc(batch), disc(fake.detach())
        loss_d = discriminator_loss(d_real, d_fake)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        g_fake = disc(fake)
        loss = (config.mel_loss_weight * mel_loss(fake, batch) + generator_adversarial_loss(g_fake)
                + feature_matching_loss(d_real, g_fake))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()

    def step_conv() -> None:
        loss = conv(model.pad_to_hop(batch)).abs().mean()
        opt_c.zero_grad()
        loss.backward()
        opt_c.step()

    repeats = max(3, args.repeats)
    t_mel_step = median_time(step_mel, repeats)
    t_gan_step = median_time(step_gan, repeats)
    t_conv_step = median_time(step_conv, repeats)

    from workbench.codec.data import corpus_utterances, load_corpus_audio
    from workbench.codec.losses import MultiResolutionComplexSTFTLoss
    from workbench.codec.semantic_head import CTCHead, TranscribedSampler, character_vocab, ctc_loss
    from workbench.codec.study import ABLATION_VARIANTS

    ctc_settings = ABLATION_VARIANTS["+ctc"]
    phase_weight = ABLATION_VARIANTS["+phase"]["complex_stft_loss_weight"]
    phase_loss = MultiResolutionComplexSTFTLoss(config.complex_stft_n_ffts, config.complex_stft_compression)
    utterances = corpus_utterances(KATHLEEN, "train")[:64]
    transcribed = load_corpus_audio(utterances, config.sample_rate)
    ctc_sampler = TranscribedSampler(transcribed.wavs, [u.text for u in utterances], config.hop_length,
                                     int(ctc_settings["ctc_max_s"] * config.sample_rate),
                                     ctc_settings["ctc_batch_size"], seed=0)
    ctc_head = CTCHead(config.latent_dim, config.ctc_hidden_dim, len(character_vocab()), config.ctc_kernel_size)
    opt_h = torch.optim.AdamW(list(model.parameters()) + list(ctc_head.parameters()), lr=1e-4)

    def step_phase() -> None:
        fake = model(batch).audio
        loss = config.mel_loss_weight * mel_loss(fake, batch) + phase_weight * phase_loss(fake, batch)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()

    def step_ctc() -> None:
        loss = config.mel_loss_weight * mel_loss(model(batch).audio, batch)
        utterance_batch = ctc_sampler.next_batch()
        loss = loss + ctc_settings["ctc_weight"] * ctc_loss(ctc_head(model.encode(utterance_batch.audio).latents),
                                                            utterance_batch)
        opt_h.zero_grad()
        loss.backward()
        opt_h.step()

    t_phase_step = median_time(step_phase, repeats)
    t_ctc_step = median_time(step_ctc, repeats)
    print(f"{'step, mel loss only':<28} {1 / t_mel_step:6.2f} steps/s | {'step with GAN (MPD+MRSD)':<26} "
          f"{1 / t_gan_step:6.2f} steps/s | GAN step costs {t_gan_step / t_mel_step:.2f}x")
    print(f"{'step, mel loss only':<28} {1 / t_mel_step:6.2f} steps/s | {'plain conv stack fwd+bwd':<26} "
          f"{1 / t_conv_step:6.2f} steps/s | ratio {t_mel_step / t_conv_step:.1f}x")
    print(f"{'step, mel loss only':<28} {1 / t_mel_step:6.2f} steps/s | {'step + complex STFT loss':<26} "
          f"{1 / t_phase_step:6.2f} steps/s | phase loss costs {t_phase_step / t_mel_step:.2f}x")
    print(f"{'step, mel loss only':<28} {1 / t_mel_step:6.2f} steps/s | {'step + CTC objective':<26} "
          f"{1 / t_ctc_step:6.2f} steps/s | CTC objective costs {t_ctc_step / t_mel_step:.2f}x")
    print(f"the profile's {config.max_steps} steps = about {config.max_steps * t_mel_step / 60:.0f} min mel-only, "
          f"{config.max_steps * t_ctc_step / 60:.0f} min with CTC (at this machine's current speed)")

    import dataclasses
    import tempfile

    from workbench.checkmodels.asr_model import ASRModelSpec, CTCRecognizer, save_model
    from workbench.checkmodels.asr_train import ASRTrainConfig
    from workbench.codec.losses import semantic_loss

    asr_cpu = for_profile(ASRTrainConfig, "cpu")
    spec = ASRModelSpec(**{f.name: getattr(asr_cpu, f.name) for f in dataclasses.fields(ASRModelSpec)
                           if hasattr(asr_cpu, f.name)})
    with tempfile.TemporaryDirectory() as folder:
        teacher_file = save_model(CTCRecognizer(spec), Path(folder) / "model.pt")
        torch.manual_seed(0)
        taught = build_model(dataclasses.replace(config, semantic_model_path=str(teacher_file)))
    opt_t = torch.optim.AdamW(taught.parameters(), lr=1e-4)

    def step_teacher() -> None:
        out = taught(batch)
        loss = (config.mel_loss_weight * mel_loss(out.audio, batch)
                + config.semantic_loss_weight * semantic_loss(out.semantic_pred, out.semantic_target))
        opt_t.zero_grad()
        loss.backward()
        opt_t.step()

    t_teacher_step = median_time(step_teacher, repeats)
    print(f"{'step, mel loss only':<28} {1 / t_mel_step:6.2f} steps/s | {'step + ASR teacher':<26} "
          f"{1 / t_teacher_step:6.2f} steps/s | teacher costs {t_teacher_step / t_mel_step:.2f}x")
    taught.eval()
    with torch.no_grad():
        t_enc_taught = median_time(lambda: taught.encode(x), args.repeats)
    row("encode with ASR teacher", t_enc_taught, "encode without (codec)", t_enc)
    print(f"encode+decode RTF with the ASR teacher {(t_enc_taught + t_dec) / audio_s:.4f} (target < 0.05)")


if __name__ == "__main__":
    main()
