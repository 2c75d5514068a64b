"""The espeak-ng recipe's pieces and the demo (training itself is run by `python -m zoo.recipes.priorgrad`)."""

from __future__ import annotations

import shutil

import pytest
import torch

import zoo  # noqa: F401
from zoo.demo import list_demos
from zoo.finetune import get_recipe
from zoo.models.priorgrad import PriorGradFeatureExtractor
from zoo.recipes.priorgrad import collate, espeak_corpus, log_mel_l1, mr_stft_distance, run_demo


def test_recipe_and_demo_are_registered():
    recipe = get_recipe("priorgrad_espeak")
    assert recipe.family == "priorgrad" and recipe.variant == "priorgrad_vocoder_ljspeech"
    assert "priorgrad" in list_demos()


def test_distances_are_zero_for_identical_audio_and_grow_with_noise():
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(22050 // 256 * 256) / 22050
    tone = 0.5 * torch.sin(2 * torch.pi * 220 * t)
    fe = PriorGradFeatureExtractor()
    mel = fe.log_mel(tone)
    assert log_mel_l1(fe, tone, mel) == 0.0
    assert mr_stft_distance(tone, tone) == 0.0
    slightly = tone + 0.01 * torch.randn(tone.shape, generator=generator)
    very = tone + 0.3 * torch.randn(tone.shape, generator=generator)
    assert 0 < mr_stft_distance(slightly, tone) < mr_stft_distance(very, tone)
    assert 0 < log_mel_l1(fe, slightly, mel) < log_mel_l1(fe, very, mel)


def test_collate_stacks_items():
    items = [{"spectrogram": torch.zeros(80, 3), "labels": torch.zeros(768), "target_std": torch.ones(3)}] * 2
    batch = collate(items)
    assert batch["spectrogram"].shape == (2, 80, 3) and batch["labels"].shape == (2, 768)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_corpus_is_22050_hz_speech(tmp_path):
    paths = espeak_corpus(tmp_path, count=2)
    fe = PriorGradFeatureExtractor()
    for path in paths:
        audio = fe.normalize(fe.load_audio(path), name=str(path))  # refuses any other sample rate
        assert len(audio) > 22050 // 2
    assert espeak_corpus(tmp_path, count=2) == paths  # cached


def test_demo_converts_and_vocodes(tmp_path):
    result = run_demo(tmp_path, quick=True)
    assert result.summary["sampling_parity_max_abs_diff"] < 1e-4
    line = result.predict(str(result.folder))
    assert line.startswith("vocoded test.wav") and "6144 samples" in line
