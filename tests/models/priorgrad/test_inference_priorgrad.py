"""PriorGrad's tiled inference path (`PriorGradModel._denoise`: what `forward` runs without autograd, and
so what `generate` runs) against the layer-by-layer forward, which performs the original's operations
(checked against the original's fixtures in test_parity_priorgrad) and runs whenever autograd is on."""

from __future__ import annotations

import pytest
import torch

from tests.models.priorgrad.test_modeling_priorgrad import random_vocoder

HOP = 256


def inputs(model, batch: int, frames: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    spectrogram = torch.randn(batch, config.conditioner_channels, frames, generator=generator) * 1.5 - 4.0
    audio = torch.randn(batch, frames * HOP, generator=generator).clamp(-1, 1)
    global_cond = torch.rand(batch, 1, frames, generator=generator) + 0.1 if config.condition_prior_global else None
    return audio, spectrogram, global_cond


def layer_by_layer(model, *args, **kwargs) -> torch.Tensor:
    with torch.enable_grad():
        return model(*args, **kwargs).predicted_noise.detach()


def in_float64(model, *args, **kwargs) -> torch.Tensor:
    """The layer-by-layer forward in float64: the float32 paths' common truth."""
    model.double()
    try:
        args = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        return layer_by_layer(model, *args, **kwargs).float()
    finally:
        model.float()


def tiled(model, *args, tile: int, **kwargs) -> torch.Tensor:
    model.inference_tile = tile
    with torch.no_grad():
        return model(*args, **kwargs).predicted_noise


@pytest.mark.parametrize("options", [{}, {"condition_prior": True}, {"condition_prior_global": True}],
                         ids=["plain", "prior", "global"])
@pytest.mark.parametrize("tile", [7, 50, 256, 4096])
def test_tiled_forward_equals_layer_by_layer(options, tile):
    """Dilations 1..128 (two cycles); tiles smaller than the dilation, not dividing the length, equal to a
    frame and longer than the input; float steps that differ per row; every kind of conditioning input."""
    vocoder = random_vocoder(residual_layers=10, dilation_cycle_length=8, **options)
    model = vocoder.priorgrad
    assert max(model.config.dilations) == 128 and model.config.dilations[8:] == [1, 2]
    audio, spectrogram, global_cond = inputs(model, batch=2, frames=3)
    step = torch.tensor([3.25, 17.0])
    expected = layer_by_layer(model, audio, spectrogram, step, global_cond)
    truth = in_float64(model, audio, spectrogram, step, global_cond)
    # Outputs reach ~2: float32 rounding moves the layer-by-layer result by up to ~7e-7, the tiled one
    # (more operations folded and reordered) by up to ~1.1e-6.
    torch.testing.assert_close(expected, truth, atol=1e-6, rtol=0)
    with torch.no_grad():
        prepared = [None, model.prepare_conditioning(spectrogram, global_cond),
                    model._prepare_inference(spectrogram, global_cond),
                    model._prepare_inference(spectrogram, global_cond, project=False)]
    for conditioning in prepared:
        got = tiled(model, audio, spectrogram, step, global_cond, conditioning=conditioning, tile=tile)
        torch.testing.assert_close(got, truth, atol=2e-6, rtol=0)
        torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)


@pytest.mark.parametrize("tile", [50, 1024])
def test_tiled_forward_of_a_padded_batch(tile):
    """Rows of 3, 1 and 2 frames padded to 3 (noise past each clip's end, which the mask must hide):
    equal to the layer-by-layer forward, and inside each clip to the clip run alone."""
    vocoder = random_vocoder(residual_layers=6, dilation_cycle_length=3, condition_prior=True)
    model = vocoder.priorgrad
    audio, spectrogram, _ = inputs(model, batch=3, frames=3, seed=1)
    frame_lengths = torch.tensor([3, 1, 2])
    step = torch.tensor([9.5])
    expected = layer_by_layer(model, audio, spectrogram, step, frame_lengths=frame_lengths)
    got = tiled(model, audio, spectrogram, step, frame_lengths=frame_lengths, tile=tile)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert_rows_equal_clips_alone(model, got, audio, spectrogram, step, frame_lengths, tile)



def assert_rows_equal_clips_alone(model, got, audio, spectrogram, step, frame_lengths, tile):
    """Each row of a padded batch's output equals its clip run alone (1e-6), over the row's real frames."""
    for row, frames in enumerate(frame_lengths.tolist()):
        alone = tiled(model, audio[row:row + 1, :frames * HOP], spectrogram[row:row + 1, :, :frames], step,
                      tile=tile)
        torch.testing.assert_close(got[row:row + 1, :, :frames * HOP], alone, atol=1e-6, rtol=0)


def test_generate_does_not_depend_on_the_tile():
    vocoder = random_vocoder(residual_layers=6, dilation_cycle_length=3)
    mels = [torch.randn(80, frames, generator=torch.Generator().manual_seed(frames)) - 4.0 for frames in (5, 2)]
    noise = torch.randn(6, 2, 5 * HOP, generator=torch.Generator().manual_seed(2))
    vocoder.priorgrad.inference_tile = 1024
    whole = vocoder.generate(mels, noise=noise).waveform
    vocoder.priorgrad.inference_tile = 96
    torch.testing.assert_close(vocoder.generate(mels, noise=noise).waveform, whole, atol=1e-6, rtol=0)


def test_cached_terms_are_the_public_ones_with_doubled_filter_rows():
    """The cached conditioning `generate` uses holds each layer's filter half doubled (exactly: a power of
    two scales every rounding alike), time-tile-major; in time order it is `prepare_conditioning`'s."""
    vocoder = random_vocoder(residual_layers=4, condition_prior_global=True)
    model = vocoder.priorgrad
    model.inference_tile = 300  # 2 frames = 512 samples: a full tile and a partial one
    _, spectrogram, global_cond = inputs(model, batch=2, frames=2)
    channels = model.config.residual_channels
    with torch.no_grad():
        public = torch.cat(model.prepare_conditioning(spectrogram, global_cond), dim=1)
        prepared = model._prepare_inference(spectrogram, global_cond)
        upsampled = (prepared.conditioner, prepared.global_conditioner)
        plain = model._stacked_projection(*upsampled, tile=300)
    assert prepared.projected.shape == (2, 2, 4 * 2 * channels, 300) and prepared.tile == 300

    def time_order(terms):  # [B, tiles, rows, tile] -> [B, layers, 2 (gate, filter), C, samples]
        return terms.permute(0, 2, 1, 3).reshape(2, -1, 600)[..., :512].reshape(2, 4, 2, channels, 512)

    doubled, plain = time_order(prepared.projected), time_order(plain)
    torch.testing.assert_close(doubled[:, :, 0], plain[:, :, 0], atol=0, rtol=0)
    torch.testing.assert_close(doubled[:, :, 1], 2 * plain[:, :, 1], atol=0, rtol=0)
    torch.testing.assert_close(plain.reshape(2, -1, 512), public, atol=1e-6, rtol=0)


def test_prepared_conditioning_of_other_inputs_is_refused():
    model = random_vocoder().priorgrad
    audio, spectrogram, _ = inputs(model, batch=1, frames=3)
    with torch.no_grad():
        prepared = model._prepare_inference(spectrogram)
        with pytest.raises(ValueError, match="conditioning does not match"):
            model(audio[:, :2 * HOP], spectrogram[..., :2], torch.tensor([1]), conditioning=prepared)


def test_tile_views_built_per_step_past_the_cache_bound(monkeypatch):
    """Past MAX_CACHED_TILES the tiles' views are rebuilt at every step instead of kept: same result."""
    from zoo.models.priorgrad import modeling_priorgrad

    vocoder = random_vocoder(residual_layers=6, dilation_cycle_length=3, condition_prior_global=True)
    vocoder.priorgrad.inference_tile = 200
    mels = [torch.randn(80, frames, generator=torch.Generator().manual_seed(frames)) - 4.0 for frames in (5, 2)]
    noise = torch.randn(6, 2, 5 * HOP, generator=torch.Generator().manual_seed(3))
    kept = vocoder.generate(mels, noise=noise).waveform
    monkeypatch.setattr(modeling_priorgrad, "MAX_CACHED_TILES", 0)
    torch.testing.assert_close(vocoder.generate(mels, noise=noise).waveform, kept, atol=0, rtol=0)
    uncached = vocoder.generate(mels, noise=noise, conditioning_cache_bytes=0).waveform
    torch.testing.assert_close(uncached, kept, atol=1e-6, rtol=0)


def paired_layers(conditioning) -> list[int]:
    """The layers whose convolution the last tiled call ran as Winograd F(2, 3) (their program has kernels)."""
    return [index for index, layer in enumerate(conditioning.workspace["layers"]) if layer[4] is not None]


@pytest.mark.parametrize("tile", [7, 50, 300, 512, 4096])
def test_winograd_layers_equal_the_plain_product_and_float64(tile):
    """Every layer allowed to pair (dilations 1..1024 on 512 samples: dilations past the tile and past the
    length, tiles that are not multiples of 2d and leave samples past the last whole 2d-block): equal to
    float64 within the plain tiled path's bound, and to the plain tiled path (`winograd = False`)."""
    vocoder = random_vocoder(residual_layers=11, dilation_cycle_length=11, condition_prior_global=True)
    model = vocoder.priorgrad
    assert model.config.dilations == [2 ** i for i in range(11)]
    audio, spectrogram, global_cond = inputs(model, batch=2, frames=2, seed=4)
    step = torch.tensor([5.5, 30.0])
    truth = in_float64(model, audio, spectrogram, step, global_cond)
    model.winograd_min_dilation = 1
    got = {}
    for winograd in (True, False):
        model.winograd = winograd
        for project in (True, False):
            with torch.no_grad():
                prepared = model._prepare_inference(spectrogram, global_cond, project=project)
            got[winograd, project] = tiled(model, audio, spectrogram, step, global_cond, conditioning=prepared,
                                           tile=tile)
            # Pairs need 2d <= the tile (and the input): d <= min(tile, 512) / 2.
            expected = [i for i in range(11) if winograd and 2 ** (i + 1) <= min(tile, 512)]
            assert paired_layers(prepared) == expected
            torch.testing.assert_close(got[winograd, project], truth, atol=2e-6, rtol=0)
    for project in (True, False):
        torch.testing.assert_close(got[True, project], got[False, project], atol=2e-6, rtol=0)


@pytest.mark.parametrize("min_dilation", [1, 2, 4])
@pytest.mark.parametrize("tile", [16, 50, 1024])
def test_winograd_on_a_padded_batch(tile, min_dilation):
    """A padded batch (rows of 3, 1 and 2 frames) with paired layers: equal to the layer-by-layer forward,
    and inside each clip to the clip run alone."""
    vocoder = random_vocoder(residual_layers=6, dilation_cycle_length=3, condition_prior=True)
    model = vocoder.priorgrad
    model.winograd_min_dilation = min_dilation
    audio, spectrogram, _ = inputs(model, batch=3, frames=3, seed=5)
    frame_lengths = torch.tensor([3, 1, 2])
    step = torch.tensor([12.0])
    expected = layer_by_layer(model, audio, spectrogram, step, frame_lengths=frame_lengths)
    with torch.no_grad():
        prepared = model._prepare_inference(spectrogram, frame_lengths=frame_lengths)
    got = tiled(model, audio, spectrogram, step, frame_lengths=frame_lengths, conditioning=prepared, tile=tile)
    assert paired_layers(prepared) == [i for i, d in enumerate(model.config.dilations) if d >= min_dilation]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert_rows_equal_clips_alone(model, got, audio, spectrogram, step, frame_lengths, tile)


def test_generate_with_and_without_winograd():
    vocoder = random_vocoder(residual_layers=6, dilation_cycle_length=3)
    model = vocoder.priorgrad
    model.winograd_min_dilation = 2
    mels = [torch.randn(80, frames, generator=torch.Generator().manual_seed(frames)) - 4.0 for frames in (5, 2)]
    noise = torch.randn(6, 2, 5 * HOP, generator=torch.Generator().manual_seed(6))
    paired = vocoder.generate(mels, noise=noise).waveform
    model.winograd = False
    # Six steps of two differently rounded float32 paths: they part by up to ~1.0e-6 here.
    torch.testing.assert_close(paired, vocoder.generate(mels, noise=noise).waveform, atol=2e-6, rtol=0)
