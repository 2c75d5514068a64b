"""PriorGrad model tests: shared mixin, meta-device loading, sampling options, batching, chunking, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import zoo
from tests.model_tester import ModelTesterMixin
from zoo.models.priorgrad import (
    FAST_SCHEDULES,
    PriorGradConfig,
    PriorGradVocoder,
    continuous_step_index,
    inference_schedule,
    step_embedding_table,
)


def tiny_config(**overrides) -> PriorGradConfig:
    values = dict(residual_layers=3, residual_channels=8, dilation_cycle_length=2, energy_min=0.03, energy_max=4.7)
    values.update(overrides)
    return PriorGradConfig(**values)


def random_vocoder(seed: int = 0, **overrides) -> PriorGradVocoder:
    torch.manual_seed(seed)
    vocoder = PriorGradVocoder(tiny_config(**overrides)).eval()
    with torch.no_grad():  # the original zero-initialises the output projection: make outputs depend on input
        vocoder.priorgrad.output_projection.weight.normal_(0, 0.5)
    return vocoder


def log_mels(*frames: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(80, f, generator=generator) * 1.5 - 4.0 for f in frames]


class TestPriorGradModel(ModelTesterMixin):
    family = "priorgrad"

    def get_config(self):
        return tiny_config(condition_prior=True)

    def get_inputs(self, model_class, config, with_labels):
        inputs = zoo.get_family("priorgrad").dummy_inputs(config, model_class)
        if with_labels and model_class is PriorGradVocoder:
            generator = torch.Generator().manual_seed(3)
            inputs = {
                "spectrogram": inputs["spectrogram"], "target_std": inputs["target_std"],
                "labels": torch.randn(inputs["audio"].shape, generator=generator).clamp(-1, 1) * 0.5,
            }
        return inputs


class TestPriorGradModelGlobalCondition(TestPriorGradModel):
    def get_config(self):
        return tiny_config(condition_prior_global=True)

    test_trainer_two_steps = None
    test_remote_code_without_zoo = None
    test_config_round_trip = None


def test_step_table_survives_meta_device_loading(tmp_path):
    vocoder = random_vocoder()
    vocoder.save_pretrained(tmp_path)
    reloaded = PriorGradVocoder.from_pretrained(tmp_path)
    table = reloaded.priorgrad.diffusion_embedding.embedding
    assert table.device.type == "cpu" and not table.is_meta
    torch.testing.assert_close(table, step_embedding_table(50), atol=0, rtol=0)
    saved = load_file(tmp_path / "model.safetensors")
    assert "priorgrad.diffusion_embedding.embedding" not in saved  # non-persistent, as in the original


def test_step_table_closed_form():
    table = step_embedding_table(50)
    assert table.shape == (50, 128)
    torch.testing.assert_close(table[0], torch.cat([torch.zeros(64), torch.ones(64)]))
    torch.testing.assert_close(table[3, 0], torch.sin(torch.tensor(3.0)))
    torch.testing.assert_close(table[1, 63], torch.sin(torch.tensor(1e4)), atol=1e-3, rtol=0)


def test_float_step_interpolates_between_rows():
    embedding = random_vocoder().priorgrad.diffusion_embedding
    with torch.no_grad():
        low, high = embedding(torch.tensor([7])), embedding(torch.tensor([8]))
        exact = embedding(torch.tensor([7.0]))
        middle = embedding(torch.tensor([7.5]))
    torch.testing.assert_close(exact, low, atol=1e-6, rtol=0)
    assert not torch.allclose(middle, low) and not torch.allclose(middle, high)


def test_fast_schedules_and_continuous_steps():
    config = tiny_config()
    assert inference_schedule(config, 6) == FAST_SCHEDULES[6]
    assert inference_schedule(config, 12) == FAST_SCHEDULES[12]
    assert inference_schedule(config, 50) == pytest.approx(config.noise_schedule, abs=1e-15)
    assert inference_schedule(config, full=True) == config.noise_schedule
    # The training schedule maps onto the integer training steps.
    steps = continuous_step_index(config.noise_schedule, config.noise_schedule)
    np.testing.assert_allclose(steps[:-1], np.arange(49), atol=1e-4)
    fast = continuous_step_index(config.noise_schedule, FAST_SCHEDULES[6])
    assert np.all(np.diff(fast) > 0) and fast[0] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="outside the training schedule"):
        continuous_step_index(config.noise_schedule, [0.9, 0.9])


def test_generate_is_seedable_and_clamped():
    vocoder = random_vocoder()
    mel = log_mels(5)[0]
    first = vocoder.generate(mel, generator=torch.Generator().manual_seed(1)).waveform
    again = vocoder.generate(mel, generator=torch.Generator().manual_seed(1)).waveform
    other = vocoder.generate(mel, generator=torch.Generator().manual_seed(2)).waveform
    assert first.shape == (1, 5 * 256)
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert not torch.allclose(first, other)
    assert first.abs().max() <= 1.0
    twelve = vocoder.generate(mel, num_inference_steps=12, generator=torch.Generator().manual_seed(1))
    assert twelve.reverse_steps.shape == (12,)


def test_batched_clips_of_different_lengths_equal_single_runs():
    vocoder = random_vocoder(condition_prior=True)
    mels = log_mels(3, 7, 5)
    steps = 6
    noise = torch.randn(steps, 3, 7 * 256, generator=torch.Generator().manual_seed(5))
    batched = vocoder.generate(mels, noise=noise)
    assert batched.lengths.tolist() == [3 * 256, 7 * 256, 5 * 256]
    for index, mel in enumerate(mels):
        samples = mel.shape[1] * 256
        single = vocoder.generate(mel, noise=noise[:, index: index + 1, :samples]).waveform[0]
        torch.testing.assert_close(batched.waveform[index, :samples], single, atol=1e-5, rtol=1e-4)
        assert batched.waveform[index, samples:].abs().sum() == 0


@pytest.mark.parametrize("options", [{}, {"condition_prior_global": True}], ids=["prior", "global"])
def test_chunked_generation_equals_whole_input(options):
    vocoder = random_vocoder(residual_layers=4, dilation_cycle_length=4, **options)  # dilations 1,2,4,8
    receptive = vocoder.config.receptive_field_frames
    assert receptive == (15 + 391) // 256
    mels = log_mels(23, 17, seed=3)
    noise = torch.randn(6, 2, 23 * 256, generator=torch.Generator().manual_seed(9))
    whole = vocoder.generate(mels, noise=noise).waveform
    chunked = vocoder.generate(mels, noise=noise, chunk_frames=4).waveform
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-4)
    # Without context the chunk borders change: the check above can fail.
    no_context = vocoder.generate(mels, noise=noise, chunk_frames=4, overlap_frames=0).waveform
    assert (no_context - whole).abs().max() > 1e-3


def test_released_receptive_field():
    config = PriorGradConfig()
    assert sum(config.dilations) == 3 * 1023
    assert config.receptive_field_frames == 13


def test_prior_follows_energy():
    vocoder = random_vocoder()
    quiet, loud = torch.full((80, 1), -11.0), torch.full((80, 1), 0.0)
    std = vocoder.prior_std(torch.cat([quiet, loud], dim=1))
    assert std[0] == pytest.approx(0.1)  # floor std_min
    # loud: energy sqrt(80) > override 4 -> clamped to 1
    assert std[1] == pytest.approx(1.0)


# -- bad input ----------------------------------------------------------------------------------------
def test_wrong_mel_size_is_refused():
    vocoder = random_vocoder()
    with pytest.raises(ValueError, match=r"log-mel \[80, frames >= 1\]"):
        vocoder.generate(torch.zeros(64, 10))
    with pytest.raises(ValueError, match="expected a log-mel spectrogram"):
        vocoder(torch.zeros(1, 64, 3), audio=torch.zeros(1, 768), diffusion_step=torch.tensor([1]))
    with pytest.raises(ValueError, match="channels"):
        vocoder.priorgrad(torch.zeros(1, 768), torch.zeros(1, 81, 3), torch.tensor([1]))
    with pytest.raises(ValueError, match="samples but the spectrogram has"):
        vocoder.priorgrad(torch.zeros(1, 700), torch.zeros(1, 80, 3), torch.tensor([1]))


def test_nan_and_bad_steps_are_refused():
    vocoder = random_vocoder()
    mel = log_mels(4)[0]
    mel[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        vocoder.generate(mel)
    with pytest.raises(ValueError, match="diffusion_step must lie in"):
        vocoder.priorgrad(torch.zeros(1, 512), torch.zeros(1, 80, 2), torch.tensor([50]))
    with pytest.raises(ValueError, match="target_std"):
        vocoder.generate(log_mels(4)[0], target_std=torch.ones(5))
    with pytest.raises(ValueError, match="global_cond"):
        random_vocoder(condition_prior_global=True).priorgrad(torch.zeros(1, 512), torch.zeros(1, 80, 2), torch.tensor([1]))


def test_missing_statistics_and_bad_config():
    vocoder = PriorGradVocoder(PriorGradConfig(residual_layers=1, residual_channels=4))
    with pytest.raises(ValueError, match="energy statistics"):
        vocoder.generate(log_mels(3)[0])
    with pytest.raises(ValueError, match="hop_samples must be 256"):
        PriorGradConfig(hop_samples=300)
    with pytest.raises(ValueError, match="only one of"):
        PriorGradConfig(condition_prior=True, condition_prior_global=True)


def test_generate_from_a_padded_feature_extractor_batch():
    vocoder = random_vocoder()
    mels = log_mels(4, 6, seed=2)
    padded = torch.zeros(2, 80, 6)
    padded[0, :, :4], padded[1] = mels[0], mels[1]
    noise = torch.randn(6, 2, 6 * 256, generator=torch.Generator().manual_seed(1))
    from_list = vocoder.generate(mels, noise=noise)
    from_padded = vocoder.generate(padded, frame_lengths=torch.tensor([4, 6]), noise=noise)
    torch.testing.assert_close(from_padded.waveform, from_list.waveform, atol=0, rtol=0)
    std = torch.ones(2, 6 * 256)
    with_std = vocoder.generate(padded, frame_lengths=[4, 6], target_std=std, noise=noise)
    assert with_std.lengths.tolist() == [4 * 256, 6 * 256]
    with pytest.raises(ValueError, match="do not fit"):
        vocoder.generate(padded, frame_lengths=[7, 6])


def test_noise_prediction_needs_no_prior_statistics_unless_conditioned():
    plain = PriorGradVocoder(PriorGradConfig(residual_layers=1, residual_channels=4)).eval()
    out = plain(torch.zeros(1, 80, 2), audio=torch.zeros(1, 512), diffusion_step=torch.tensor([3]))
    assert out.predicted_noise.shape == (1, 1, 512) and out.target_std is None
    conditioned = PriorGradVocoder(PriorGradConfig(residual_layers=1, residual_channels=4, condition_prior=True))
    with pytest.raises(ValueError, match="energy statistics"):
        conditioned(torch.zeros(1, 80, 2), audio=torch.zeros(1, 512), diffusion_step=torch.tensor([3]))


@pytest.mark.parametrize("options", [{}, {"condition_prior_global": True}], ids=["prior", "global"])
def test_step_independent_conditioning_reused(options):
    """Conditioning computed once (generate's cache) gives the per-call result; so do batched chunks."""
    vocoder = random_vocoder(residual_layers=4, dilation_cycle_length=4, **options)
    mels = log_mels(23, 17, seed=4)
    noise = torch.randn(6, 2, 23 * 256, generator=torch.Generator().manual_seed(5))
    uncached = vocoder.generate(mels, noise=noise, conditioning_cache_bytes=0).waveform
    cached = vocoder.generate(mels, noise=noise).waveform
    torch.testing.assert_close(cached, uncached, atol=1e-6, rtol=0)
    one_by_one = vocoder.generate(mels, noise=noise, chunk_frames=4, chunk_batch_size=1,
                                  conditioning_cache_bytes=0).waveform
    batched = vocoder.generate(mels, noise=noise, chunk_frames=4).waveform
    torch.testing.assert_close(batched, one_by_one, atol=1e-6, rtol=0)
    torch.testing.assert_close(batched, uncached, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="chunk_batch_size must be >= 1"):
        vocoder.generate(mels, noise=noise, chunk_frames=4, chunk_batch_size=0)


def test_prepare_conditioning_matches_forward():
    vocoder = random_vocoder(residual_layers=4, dilation_cycle_length=4)
    model = vocoder.priorgrad
    spectrogram = torch.randn(2, 80, 3, generator=torch.Generator().manual_seed(0))
    audio = torch.randn(2, 768, generator=torch.Generator().manual_seed(1))
    step = torch.tensor([7])
    with torch.no_grad():
        conditioning = model.prepare_conditioning(spectrogram)
        assert len(conditioning) == 4 and conditioning[0].shape == (2, 2 * model.config.residual_channels, 768)
        reused = model(audio, spectrogram, step, conditioning=conditioning).predicted_noise
        direct = model(audio, spectrogram, step).predicted_noise
    torch.testing.assert_close(reused, direct, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="conditioning does not match"):
        model(audio[:, :512], spectrogram[..., :2], step, conditioning=conditioning)
