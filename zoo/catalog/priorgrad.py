"""PriorGrad vocoder: Auto-class registration and the released LJSpeech variant."""

from __future__ import annotations

import torch

from zoo.auto import register_family
from zoo.models.priorgrad import PriorGradConfig, PriorGradFeatureExtractor, PriorGradModel, PriorGradVocoder
from zoo.registry import ModelEntry, OriginalCheckpoint, register_model


def priorgrad_dummy_inputs(config: PriorGradConfig, model_class: type) -> dict[str, torch.Tensor]:
    """Two 2-frame clips: noisy audio, conditioning and steps for either class (prior std given)."""
    generator = torch.Generator().manual_seed(0)
    frames = 2
    samples = frames * config.hop_samples
    audio = torch.randn(2, samples, generator=generator) * 0.3
    mel = torch.randn(2, config.n_mels, frames, generator=generator) - 4.0
    frame_std = 0.1 + 0.9 * torch.rand(2, frames, generator=generator)
    steps = torch.tensor([0, len(config.noise_schedule) - 1])
    if model_class is PriorGradModel:
        inputs = {"audio": audio, "diffusion_step": steps}
        if config.condition_prior:
            mel = torch.cat([mel, frame_std.unsqueeze(1)], dim=1)
        inputs["spectrogram"] = mel
        if config.condition_prior_global:
            inputs["global_cond"] = frame_std.unsqueeze(1)
        return inputs
    return {"spectrogram": mel, "audio": audio, "diffusion_step": steps, "target_std": frame_std}


register_family(
    "priorgrad", PriorGradConfig, PriorGradModel, {"AutoModelForTextToWaveform": PriorGradVocoder},
    processors={"AutoFeatureExtractor": PriorGradFeatureExtractor}, dummy_inputs=priorgrad_dummy_inputs,
)

register_model(ModelEntry(
    name="priorgrad_vocoder_ljspeech",
    family="priorgrad",
    task="mel-to-waveform",
    architecture="PriorGradVocoder",
    # the defaults are the released params.py; the sizes are spelled out so a folder is checked against them
    config={"residual_layers": 30, "residual_channels": 64, "dilation_cycle_length": 10, "n_mels": 80},
    description="PriorGrad vocoder trained on LJSpeech (22.05 kHz, 80 mels) for 3M steps, released by the authors.",
    original=OriginalCheckpoint(
        filename="weights-3000000.pt",
        url="https://huggingface.co/neuralspeech/priorgrad",
        format="priorgrad-learner",
        size_bytes=None,
        sha256=None,
        dtype="float32",
        archive="priorgrad_voc.zip",
        archive_member="checkpoints/priorgrad/weights-3000000.pt",
        companions=("stats_priorgrad.zip",),
        notes=(
            "priorgrad_voc.zip unzips to checkpoints/priorgrad/weights-3000000.pt (learner dict: step, model, "
            "optimizer, params, scaler); the LJSpeech energy statistics are in stats_priorgrad.zip "
            "(stats_priorgrad/energy_{max,min}_train.npy). Convert with --stats pointing at them. Older versions "
            "of the PriorGrad-vocoder README link the same two zips on Google Drive (files "
            "1sGXP2lF0o30mMSx2Kew8k9VkDR3p1IAK and 1uPPsFwG1_xh6eWEjuMHaBfxrQ24uEZyT)."
        ),
    ),
    converter="conversion/convert_priorgrad.py",
    card="cards/priorgrad.md",
    paper="PriorGrad: Improving Conditional Denoising Diffusion Models with Data-Dependent Adaptive Prior",
    paper_url="https://arxiv.org/abs/2106.06406",
    license="apache-2.0",  # PriorGrad-vocoder/LICENSE in microsoft/NeuralSpeech
    params=2_619_971,
    recipe="priorgrad_espeak",
    test_config={"residual_layers": 2, "residual_channels": 8, "dilation_cycle_length": 2},
))

