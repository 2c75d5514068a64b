"""PriorGrad: a DiffWave-style diffusion vocoder whose Gaussian prior follows the mel energy.

`PriorGradModel` is the noise predictor eps_theta(x_t, mel, t) with the original module layout (so
original state-dict keys map one to one). `PriorGradVocoder` adds the data-dependent prior, the training
loss weighted by the inverse prior and `generate`, the reverse process with the original fast
schedules, batching of clips of different lengths and chunked inference of long inputs.

    from zoo.models.priorgrad import PriorGradConfig, PriorGradVocoder
    vocoder = PriorGradVocoder(PriorGradConfig(energy_min=0.03, energy_max=4.7))
    waveform = vocoder.generate(log_mel, num_inference_steps=6).waveform   # log_mel: [n_mels, frames]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .configuration_priorgrad import FAST_SCHEDULES, PriorGradConfig

logger = logging.get_logger(__name__)

__all__ = [
    "PriorGradGenerateOutput", "PriorGradModel", "PriorGradModelOutput", "PriorGradPreTrainedModel",
    "PriorGradVocoder", "PriorGradVocoderOutput", "continuous_step_index", "inference_schedule",
    "prior_std_from_log_mel", "step_embedding_table",
]

STEP_EMBEDDING_DIM = 128
STEP_HIDDEN_DIM = 512
INFERENCE_TILE = 1024
# Inference: layers of this dilation and more run their dilated convolution as Winograd F(2, 3) (4 products
# of [2C, C] per 2 outputs instead of 3 per output); below it the strided passes that form and combine
# the pairs cost more than the multiply-adds they save (measured at 64 channels, 1 thread).
WINOGRAD_MIN_DILATION = 16
MAX_CACHED_TILES = 16384  # (tiles x layers) whose views `_denoise` keeps across steps (3 to 8 views per tile)


def step_embedding_table(num_steps: int) -> torch.Tensor:
    """Sinusoidal table [num_steps, 128] of the diffusion-step embedding (float32, on the CPU).

    The float32 operation order matters: entries reach sin(49 * 10^4) where one ulp of the frequency
    changes the value, so the frequencies are formed exactly as the original forms them.
    """
    steps = torch.arange(num_steps, device="cpu").unsqueeze(1)
    frequencies = 10.0 ** (torch.arange(64, device="cpu").unsqueeze(0) * 4.0 / 63.0)
    angles = steps * frequencies
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def prior_std_from_log_mel(
    log_mel: torch.Tensor,
    energy_min: float,
    energy_max: float,
    max_energy_override: float | None,
    std_min: float,
) -> torch.Tensor:
    """Per-frame prior standard deviation [..., frames] from a natural-log mel [..., n_mels, frames].

    Frame energy e = sqrt(sum_mels exp(log_mel)); with an override, e = min(e, override) and the
    override replaces the training-set maximum; std = max((e - e_min) / (e_max - e_min), std_min).
    """
    energy = log_mel.exp().sum(-2).sqrt()
    if max_energy_override is not None:
        energy = torch.clamp(energy, None, max_energy_override)
        energy_max = max_energy_override
    return torch.clamp((energy - energy_min) / (energy_max - energy_min), std_min, None)


def inference_schedule(config: PriorGradConfig, num_inference_steps: int | None = None, full: bool = False) -> list[float]:
    """The betas of a reverse process, as the original inference script picks them.

    `full=True`: the training schedule itself (the original's sampling without `--fast`). Otherwise
    `num_inference_steps` 6 or 12: the official fast schedules; any other N: linspace(1e-4, 0.05, N);
    None: the config's `inference_noise_schedule`.
    """
    if full:
        return list(config.noise_schedule)
    if num_inference_steps is None:
        return list(config.inference_noise_schedule)
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    if num_inference_steps in FAST_SCHEDULES:
        return list(FAST_SCHEDULES[num_inference_steps])
    return np.linspace(1e-4, 0.05, num_inference_steps).tolist()


def continuous_step_index(training_betas: Sequence[float], inference_betas: Sequence[float]) -> np.ndarray:
    """For each inference step, the fractional training step t whose noise level matches (float32).

    gamma_s = prod(1 - inference_betas[:s+1]) falls between abar_{t+1} and abar_t; the index is t plus the
    position of sqrt(gamma_s) between sqrt(abar_t) and sqrt(abar_{t+1}). A schedule whose noise level
    lies outside the training range has no index and is an error.
    """
    abar = np.cumprod(1 - np.asarray(training_betas, dtype=np.float64))
    gamma = np.cumprod(1 - np.asarray(inference_betas, dtype=np.float64))
    steps = []
    for s, level in enumerate(gamma):
        for t in range(len(abar) - 1):
            if abar[t + 1] <= level <= abar[t]:
                fraction = (abar[t] ** 0.5 - level ** 0.5) / (abar[t] ** 0.5 - abar[t + 1] ** 0.5)
                steps.append(t + fraction)
                break
        else:
            raise ValueError(
                f"inference step {s}: cumulative noise level {level:.6g} is outside the training schedule's "
                f"range [{abar[-1]:.6g}, {abar[0]:.6g}]; choose betas the model was trained to denoise"
            )
    return np.array(steps, dtype=np.float32)


@dataclass
class PriorGradModelOutput(ModelOutput):
    """Noise predicted by eps_theta, [batch, 1, samples]."""

    predicted_noise: torch.Tensor | None = None


@dataclass
class PriorGradVocoderOutput(ModelOutput):
    """Training-loss pass: loss (with labels), predicted noise [B, 1, L], the noisy input x_t [B, L], the
    scaled noise target [B, L], the per-sample prior std [B, L] and the diffusion steps used [B]."""

    loss: torch.Tensor | None = None
    predicted_noise: torch.Tensor | None = None
    noisy_audio: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    target_std: torch.Tensor | None = None
    diffusion_step: torch.Tensor | None = None


@dataclass
class PriorGradGenerateOutput(ModelOutput):
    """`generate` result: waveform [B, max samples] (zero after each clip's end), `lengths` in samples [B],
    the continuous step index fed to the network per call (`reverse_steps`, call order) and, when asked,
    the network input at every call (`states`, [calls, B, max samples])."""

    waveform: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    reverse_steps: torch.Tensor | None = None
    states: torch.Tensor | None = None


def _sample_mask(frame_lengths: torch.Tensor, frames: int, per_frame: int) -> torch.Tensor:
    positions = torch.arange(frames * per_frame, device=frame_lengths.device)
    return (positions.unsqueeze(0) < frame_lengths.unsqueeze(1) * per_frame).unsqueeze(1)


def _pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution [B, C, L] -> [B, O, L] as one matrix product (BLAS rather than the generic
    convolution kernel); the same function, rounded differently in the last bits."""
    weight = conv.weight.squeeze(-1)
    if conv.bias is None:
        return torch.matmul(weight, x)
    if x.shape[0] == 1:  # one GEMM with the bias as its initial value
        return torch.addmm(conv.bias.unsqueeze(-1), weight, x[0]).unsqueeze(0)
    return torch.baddbmm(conv.bias.view(1, -1, 1), weight.expand(x.shape[0], -1, -1), x)


def _filter_scaled(parameter: torch.Tensor, scale: float) -> torch.Tensor:
    """`parameter` [2C, ...] of a gated layer with its filter half (rows C:) times `scale`."""
    if scale == 1.0:
        return parameter
    half = parameter.shape[0] // 2
    return torch.cat([parameter[:half], parameter[half:] * scale])


@dataclass
class _InferenceConditioning:
    """The step-independent inputs of one network call, prepared once per `generate`: the upsampled
    conditioner(s) [B, channels, samples] and, when they fit its cache, every layer's conditioning term
    with each layer's filter half doubled, time-tile-major [B, tiles, layers * 2C, tile] (what `_denoise`
    consumes: a tile's terms are one contiguous block, read at about twice the speed of strided rows)."""

    conditioner: torch.Tensor
    global_conditioner: torch.Tensor | None
    projected: torch.Tensor | None
    tile: int
    workspace: dict = field(default_factory=dict, repr=False)  # `_denoise`'s buffers, reused call to call


def _tile_views(layer_input, pad, dilation, tile, buffers, rows, index, tiled_terms, terms, cond):
    """One layer's tiles for `PriorGradModel._denoise`: (the layer input's three shifted views, the tile
    buffers of that width, the state rows it updates, its conditioning term: a view of the cached terms
    or a call that projects the upsampled mel into the gates buffer)."""
    batch, channels, padded = layer_input.shape
    length = padded - 2 * pad
    for row in range(batch):
        source = layer_input[row]
        for start in range(0, length, tile):
            stop = min(start + tile, length)
            width = stop - start
            window = source.as_strided((3, channels, width), (dilation, source.stride(0), 1),
                                       source.storage_offset() + pad + start - dilation)
            if tiled_terms is not None:
                term = tiled_terms[row, start // tile, 2 * channels * index: 2 * channels * (index + 1), :width]
            elif terms is not None:
                term = terms[index][row, :, start:stop]
            else:
                bias, weight, conditioner, global_weight, global_conditioner = cond
                term = partial(_project_tile, buffers[width][2], bias, weight, conditioner[row, :, start:stop],
                               global_weight,
                               None if global_conditioner is None else global_conditioner[row, :, start:stop])
            yield (window, *buffers[width], rows[row, :, start:stop], term)


def _paired_buffers(pair_buffers, columns, z, channels, width, dilation):
    """The Winograd buffers' views for a tile of `width` samples at `dilation`: `blocks` 2d-blocks whose
    output pairs (t, t + d) are (y0, y1), and the `width - 2 d blocks` remaining samples that the plain
    product covers. Returns (blocks, transformed-input destinations (D0, D3, D1, D2) [C, blocks, d],
    their batches ([D0, D3], [D1, D2]) [2, C, pairs], the products' batches ([M0, M3], [M1, M2])
    [2, 2C, pairs], [M0, M3] as [2, 2C, blocks, d], (y0, y1, M0, M3, M1, M2) [2C, blocks, d], the rest's
    im2col views or None)."""
    inputs, products = pair_buffers
    blocks = width // (2 * dilation)
    pairs = blocks * dilation
    paired = None
    if blocks:
        transformed = inputs[: 4 * channels * pairs].view(4, channels, pairs)
        product = products[: 8 * channels * pairs].view(4, 2 * channels, pairs)
        split = product.view(4, 2 * channels, blocks, dilation)
        outputs = z[:, : 2 * pairs].view(2 * channels, blocks, 2, dilation)
        paired = (tuple(transformed.view(4, channels, blocks, dilation).unbind(0)), transformed[:2], transformed[2:],
                  product[:2], product[2:], split[:2], (outputs[:, :, 0], outputs[:, :, 1], *split.unbind(0)))
    rest = width - 2 * pairs
    if rest:
        rest = (columns[:, :rest].view(3, channels, rest), columns[:, :rest], z[:, 2 * pairs: width])
    return blocks, paired, rest or None


def _paired_tile_views(layer_input, pad, dilation, tile, buffers, pair_buffers, rows, index, tiled_terms, cond):
    """`_tile_views` for a layer whose convolution runs as Winograd F(2, 3) (see `PriorGradModel._denoise`):
    per tile (the buffers' views for its width, the four taps a, b, c, e [C, blocks, d] of its pairs, the
    conditioning term's pair view [2, 2C, blocks, d] (of the term, or of `z` where the term is projected
    into it), the rest's shifted views and term, the state rows it updates, its conditioning term)."""
    batch, channels, padded = layer_input.shape
    length = padded - 2 * pad
    shared = {}
    for row in range(batch):
        source = layer_input[row]
        for start in range(0, length, tile):
            stop = min(start + tile, length)
            width = stop - start
            if width not in shared:
                shared[width] = _paired_buffers(pair_buffers, buffers[width][1], buffers[width][2], channels, width,
                                                dilation)
            blocks, paired, rest = shared[width]
            z, gate, filt, gated = buffers[width][2:]
            if tiled_terms is not None:
                term = tiled_terms[row, start // tile, 2 * channels * index: 2 * channels * (index + 1), :width]
            else:
                bias, weight, conditioner, global_weight, global_conditioner = cond
                term = partial(_project_tile, z, bias, weight, conditioner[row, :, start:stop], global_weight,
                               None if global_conditioner is None else global_conditioner[row, :, start:stop])
            source_term = term if isinstance(term, torch.Tensor) else z
            taps = term_pairs = rest_views = None
            offset = source.storage_offset() + pad + start
            if blocks:
                taps = tuple(source.as_strided((channels, blocks, dilation), (source.stride(0), 2 * dilation, 1),
                                               offset + shift * dilation) for shift in (-1, 0, 1, 2))
                term_pairs = source_term[:, : 2 * blocks * dilation].view(
                    2 * channels, blocks, 2, dilation).permute(2, 0, 1, 3)
            if rest is not None:
                done = 2 * blocks * dilation
                window = source.as_strided((3, channels, width - done), (dilation, source.stride(0), 1),
                                           offset + done - dilation)
                rest_views = (window, *rest, term[:, done:] if isinstance(term, torch.Tensor) else None)
            yield (paired, taps, term_pairs, rest_views, z, gate, filt, gated, rows[row, :, start:stop], term)


def _project_tile(out, bias, weight, conditioner, global_weight, global_conditioner) -> None:
    """One tile's conditioning term from the upsampled mel (and global condition), written into `out`."""
    torch.addmm(bias, weight, conditioner, out=out)
    if global_conditioner is not None:
        out.addmm_(global_weight, global_conditioner)


class PriorGradDiffusionEmbedding(nn.Module):
    """Sinusoidal step embedding + two SiLU projections; float steps interpolate between table rows."""

    def __init__(self, num_steps: int):
        super().__init__()
        self.num_steps = num_steps
        # Non-persistent (the original does not save it): `_init_weights` refills it after meta-device loading.
        self.register_buffer("embedding", step_embedding_table(num_steps), persistent=False)
        self.projection1 = nn.Linear(STEP_EMBEDDING_DIM, STEP_HIDDEN_DIM)
        self.projection2 = nn.Linear(STEP_HIDDEN_DIM, STEP_HIDDEN_DIM)

    def forward(self, diffusion_step: torch.Tensor) -> torch.Tensor:
        if diffusion_step.is_floating_point():
            low = torch.floor(diffusion_step).long()
            high = torch.ceil(diffusion_step).long()
            weight = (diffusion_step - low).unsqueeze(-1)
            x = self.embedding[low] + (self.embedding[high] - self.embedding[low]) * weight
        else:
            x = self.embedding[diffusion_step]
        x = F.silu(self.projection1(x))
        return F.silu(self.projection2(x))


class PriorGradSpectrogramUpsampler(nn.Module):
    """Two stride-16 transposed convolutions over (channel, time): frames -> samples (x256)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(1, 1, [3, 32], stride=[1, 16], padding=[1, 8])
        self.conv2 = nn.ConvTranspose2d(1, 1, [3, 32], stride=[1, 16], padding=[1, 8])

    def forward(self, x: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        frames = x.shape[-1]
        x = x.unsqueeze(1)
        if frame_lengths is not None:
            # Zeroed padding contributes nothing, exactly as absent frames do in an unpadded clip.
            x = x * _sample_mask(frame_lengths, frames, 1).unsqueeze(1)
        x = F.leaky_relu(self.conv1(x), 0.4)
        if frame_lengths is not None:
            x = x * _sample_mask(frame_lengths, frames, 16).unsqueeze(1)
        x = F.leaky_relu(self.conv2(x), 0.4)
        return x.squeeze(1)


class PriorGradResidualBlock(nn.Module):
    """Dilated conv + step embedding + (global) conditioning, gated tanh, residual and skip outputs."""

    def __init__(self, conditioner_channels: int, residual_channels: int, dilation: int, global_channels: int | None):
        super().__init__()
        self.dilated_conv = nn.Conv1d(
            residual_channels, 2 * residual_channels, 3, padding=dilation, dilation=dilation
        )
        self.diffusion_projection = nn.Linear(STEP_HIDDEN_DIM, residual_channels)
        self.conditioner_projection = nn.Conv1d(conditioner_channels, 2 * residual_channels, 1)
        if global_channels is not None:
            self.conditioner_projection_global = nn.Conv1d(global_channels, 2 * residual_channels, 1)
        self.output_projection = nn.Conv1d(residual_channels, 2 * residual_channels, 1)

    def project_conditioner(self, conditioner, global_conditioner=None):
        """The block's conditioning term, with the dilated convolution's bias: it does not depend on the
        diffusion step or the noisy audio."""
        y = _pointwise(self.conditioner_projection, conditioner)
        if global_conditioner is not None:
            y = y + _pointwise(self.conditioner_projection_global, global_conditioner)
        return y + self.dilated_conv.bias.unsqueeze(-1)

    def forward(self, x, conditioner, step, global_conditioner=None, mask=None, projected=None):
        y = x + self.diffusion_projection(step).unsqueeze(-1)
        if mask is not None:
            # Zero past each clip's end, like the convolution's own zero padding of an unpadded clip.
            y = y * mask
        if projected is None:
            projected = self.project_conditioner(conditioner, global_conditioner)
        conv = self.dilated_conv
        y = F.conv1d(y, conv.weight, None, padding=conv.padding, dilation=conv.dilation) + projected
        gate, filt = torch.chunk(y, 2, dim=1)
        y = _pointwise(self.output_projection, torch.sigmoid(gate) * torch.tanh(filt))
        residual, skip = torch.chunk(y, 2, dim=1)
        return (x + residual) / math.sqrt(2.0), skip


class PriorGradPreTrainedModel(PreTrainedModel):
    config_class = PriorGradConfig
    base_model_prefix = "priorgrad"
    main_input_name = "spectrogram"

    def _init_weights(self, module: nn.Module) -> None:
        # The original: kaiming-normal Conv1d weights, PyTorch defaults elsewhere, zero final projection.
        if isinstance(module, nn.Conv1d):
            if getattr(module, "zero_init", False):
                init.zeros_(module.weight)
            else:
                init.kaiming_normal_(module.weight)
        elif isinstance(module, (nn.Linear, nn.ConvTranspose2d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if isinstance(module, (nn.Conv1d, nn.Linear, nn.ConvTranspose2d)) and module.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(module.bias, -bound, bound)
        if isinstance(module, PriorGradDiffusionEmbedding):
            init.copy_(module.embedding, step_embedding_table(module.num_steps))


class PriorGradModel(PriorGradPreTrainedModel):
    """The noise predictor eps_theta(x_t, mel, t), layer for layer the original `PriorGrad` module.

    Inputs: `audio` [B, L] (noisy waveform), `spectrogram` [B, C, frames] with L = 256 * frames and
    C = n_mels (+1 with `condition_prior`), `diffusion_step` [B] or [1]: int64 table rows or float
    continuous steps, `global_cond` [B, 1, frames] with `condition_prior_global`. `frame_lengths` [B]
    marks clips padded to a common length; outputs inside each clip then equal unpadded ones.

        model = PriorGradModel(PriorGradConfig(residual_layers=4, residual_channels=16))
        eps = model(torch.zeros(1, 512), torch.zeros(1, 80, 2), torch.tensor([3])).predicted_noise
    """

    def __init__(self, config: PriorGradConfig):
        super().__init__(config)
        global_channels = 1 if config.condition_prior_global else None
        self.input_projection = nn.Conv1d(1, config.residual_channels, 1)
        self.diffusion_embedding = PriorGradDiffusionEmbedding(len(config.noise_schedule))
        self.spectrogram_upsampler = PriorGradSpectrogramUpsampler()
        if config.condition_prior_global:
            self.global_condition_upsampler = PriorGradSpectrogramUpsampler()
        self.residual_layers = nn.ModuleList(
            PriorGradResidualBlock(config.conditioner_channels, config.residual_channels, dilation, global_channels)
            for dilation in config.dilations
        )
        self.skip_projection = nn.Conv1d(config.residual_channels, config.residual_channels, 1)
        self.output_projection = nn.Conv1d(config.residual_channels, 1, 1)
        self.output_projection.zero_init = True
        # Inference (`_denoise`): time tile in samples; a tile's working set (~2.5 kB per sample at 64
        # channels) stays in the CPU caches.
        self.inference_tile = INFERENCE_TILE
        # Inference: layers of dilation >= `winograd_min_dilation` run their convolution as Winograd F(2, 3)
        # (`_denoise`); `winograd = False` keeps every layer on the plain product.
        self.winograd = True
        self.winograd_min_dilation = WINOGRAD_MIN_DILATION
        self.post_init()

    def _check_inputs(self, audio, spectrogram, diffusion_step, global_cond):
        config = self.config
        if audio.dim() != 2 or spectrogram.dim() != 3:
            raise ValueError(
                f"PriorGradModel expects audio [batch, samples] and spectrogram [batch, channels, frames], got "
                f"{tuple(audio.shape)} and {tuple(spectrogram.shape)}"
            )
        if spectrogram.shape[1] != config.conditioner_channels:
            raise ValueError(
                f"spectrogram has {spectrogram.shape[1]} channels; this model expects {config.conditioner_channels}"
                + (" (n_mels + 1 prior channel, condition_prior=True)" if config.condition_prior else " mel bins")
            )
        if audio.shape[-1] != spectrogram.shape[-1] * config.hop_samples:
            raise ValueError(
                f"audio has {audio.shape[-1]} samples but the spectrogram has {spectrogram.shape[-1]} frames; "
                f"expected frames * {config.hop_samples} samples"
            )
        if config.condition_prior_global and global_cond is None:
            raise ValueError("this model was built with condition_prior_global=True: pass global_cond [B, 1, frames]")
        if not config.condition_prior_global and global_cond is not None:
            raise ValueError("global_cond was given but the model was built with condition_prior_global=False")
        steps = diffusion_step.detach()
        last = len(config.noise_schedule) - 1
        if steps.numel() and (steps.min() < 0 or steps.max() > last):
            raise ValueError(
                f"diffusion_step must lie in [0, {last}] (the training schedule has "
                f"{len(config.noise_schedule)} steps), got values in [{steps.min().item()}, {steps.max().item()}]"
            )

    def _upsample(self, spectrogram, global_cond=None, frame_lengths=None):
        conditioner = self.spectrogram_upsampler(spectrogram, frame_lengths)
        global_conditioner = None
        if global_cond is not None:
            global_conditioner = self.global_condition_upsampler(global_cond, frame_lengths)
        return conditioner, global_conditioner

    def _stacked_projection(self, conditioner, global_conditioner=None, filter_scale: float = 1.0,
                            tile: int | None = None) -> torch.Tensor:
        """Every layer's conditioning term (with the dilated convolution's bias) as one matrix product with
        the biases as its initial value: [B, layers * 2C, samples], or with `tile` time-tile-major
        [B, tiles, layers * 2C, tile] (each tile's terms contiguous; the last tile's tail is unused).
        `filter_scale` 2 doubles each layer's filter half (every factor doubled: the exact double)."""
        layers = self.residual_layers

        def stack(parameter):
            return torch.cat([_filter_scaled(parameter(layer), filter_scale) for layer in layers])

        weight = stack(lambda layer: layer.conditioner_projection.weight.squeeze(-1))
        bias = stack(lambda layer: layer.conditioner_projection.bias + layer.dilated_conv.bias)
        if global_conditioner is not None:  # the global condition as one more input row
            weight = torch.cat([weight, stack(lambda layer: layer.conditioner_projection_global.weight.squeeze(-1))], 1)
            bias = bias + stack(lambda layer: layer.conditioner_projection_global.bias)
            conditioner = torch.cat([conditioner, global_conditioner], dim=1)
        batch, _, length = conditioner.shape
        if tile is not None:
            # The bias as one more input row of ones: each output element is written once, by the product
            # (no separate pass that broadcasts the bias into freshly allocated memory).
            weight = torch.cat([weight, bias.unsqueeze(-1)], dim=1)
            conditioner = torch.cat([conditioner, conditioner.new_ones(batch, 1, length)], dim=1)
            out = conditioner.new_empty(batch, -(-length // tile), weight.shape[0], tile)
            for row in range(batch):
                for index, start in enumerate(range(0, length, tile)):
                    stop = min(start + tile, length)
                    torch.mm(weight, conditioner[row, :, start:stop], out=out[row, index, :, : stop - start])
            return out
        if batch == 1:
            return torch.addmm(bias.unsqueeze(-1), weight, conditioner[0]).unsqueeze(0)
        return torch.baddbmm(bias.view(1, -1, 1), weight.expand(batch, -1, -1), conditioner)

    def prepare_conditioning(
        self, spectrogram: torch.Tensor, global_cond: torch.Tensor | None = None,
        frame_lengths: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """The step-independent part of a forward pass: the upsampled mel projected for every residual
        layer ([B, 2 * residual_channels, samples] each). Pass it as `conditioning` to reuse it across
        diffusion steps (30 x 128 floats per sample: about 340 MB per second of 22 kHz audio)."""
        projected = self._stacked_projection(*self._upsample(spectrogram, global_cond, frame_lengths))
        return list(torch.chunk(projected, len(self.residual_layers), dim=1))

    def _prepare_inference(self, spectrogram, global_cond=None, frame_lengths=None, project: bool = True):
        """`generate`'s step-independent inputs of one network call (see `_InferenceConditioning`)."""
        conditioner, global_conditioner = self._upsample(spectrogram, global_cond, frame_lengths)
        projected, tile = None, max(1, min(int(self.inference_tile), conditioner.shape[-1]))
        if project:
            projected = self._stacked_projection(conditioner, global_conditioner, filter_scale=2.0, tile=tile)
        return _InferenceConditioning(conditioner, global_conditioner, projected, tile)

    def forward(
        self,
        audio: torch.Tensor,
        spectrogram: torch.Tensor,
        diffusion_step: torch.Tensor,
        global_cond: torch.Tensor | None = None,
        frame_lengths: torch.Tensor | None = None,
        return_dict: bool | None = None,
        conditioning: list[torch.Tensor] | None = None,
        **kwargs,
    ) -> PriorGradModelOutput | tuple:
        """`conditioning`: `prepare_conditioning(spectrogram, global_cond, frame_lengths)` of these inputs,
        computed once and reused across diffusion steps (`generate` does this).

        Without autograd (`torch.no_grad()`, as `generate` runs) the residual stack runs tile by tile over
        time (`_denoise`): the same function, rounded differently in the last bits."""
        diffusion_step = torch.as_tensor(diffusion_step, device=audio.device)
        if diffusion_step.dim() == 0:
            diffusion_step = diffusion_step.unsqueeze(0)
        self._check_inputs(audio, spectrogram, diffusion_step, global_cond)
        mask = None
        if frame_lengths is not None:
            mask = _sample_mask(frame_lengths.to(audio.device), spectrogram.shape[-1], self.config.hop_samples)
        if isinstance(conditioning, _InferenceConditioning):
            if conditioning.conditioner.shape[::2] != audio.shape:
                raise ValueError("conditioning does not match these inputs: prepared for another spectrogram")
            if not torch.is_grad_enabled():
                x = self._denoise(audio, diffusion_step, conditioning, mask)
                return (x,) if return_dict is False else PriorGradModelOutput(predicted_noise=x)
            conditioning = None
        if conditioning is not None and (len(conditioning) != len(self.residual_layers) or conditioning[0].shape != (
                audio.shape[0], 2 * self.config.residual_channels, audio.shape[-1])):
            raise ValueError("conditioning does not match these inputs: pass prepare_conditioning(spectrogram, ...) "
                             "of the same spectrogram")
        if not torch.is_grad_enabled():
            if conditioning is None:
                conditioning = self._prepare_inference(spectrogram, global_cond, frame_lengths, project=False)
            x = self._denoise(audio, diffusion_step, conditioning, mask)
            return (x,) if return_dict is False else PriorGradModelOutput(predicted_noise=x)
        x = F.relu(_pointwise(self.input_projection, audio.unsqueeze(1)))
        step = self.diffusion_embedding(diffusion_step)
        if conditioning is None:
            # One layer's projection at a time (a training batch would not hold all 30 at once).
            conditioner, global_conditioner = self._upsample(spectrogram, global_cond, frame_lengths)
            conditioning = (layer.project_conditioner(conditioner, global_conditioner) for layer in self.residual_layers)
        skip = 0
        for layer, projected in zip(self.residual_layers, conditioning):
            x, skip_connection = layer(x, None, step, None, mask, projected=projected)
            skip = skip + skip_connection
        x = skip / math.sqrt(len(self.residual_layers))
        x = _pointwise(self.output_projection, F.relu(_pointwise(self.skip_projection, x)))
        if return_dict is False:
            return (x,)
        return PriorGradModelOutput(predicted_noise=x)

    def _denoise(
        self, audio: torch.Tensor, diffusion_step: torch.Tensor,
        conditioning: _InferenceConditioning | list[torch.Tensor], mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """eps_theta [B, 1, L] without autograd: each layer runs over time tiles of `inference_tile` samples.

        A layer's input (x + step term, masked) is written once into a zero-bordered buffer (the borders
        are the convolution's padding); on each tile, the dilated convolution is one matrix product over
        the three shifted views, with the conditioning term as its initial value, followed by the gate and
        the output projection, all on cache-resident data. Constants are folded where they are exact or
        nearly so:
        - tanh(f) = 2 sigmoid(2 f) - 1: the filter rows are doubled (weights and cached terms: exact), one
          sigmoid covers both halves and the gate is s_g - 2 s_g s_f = -sigmoid(g) tanh(f) (one addcmul;
          the output projection is negated to match);
        - the residual stream is kept as v_i = 2^(i/2) (x_i - c_i), where c_i collects the output biases'
          residual halves: v_(i+1) = v_i + 2^(i/2) R_i gate, which the output projection's matrix product
          adds in place; the layer's input is v_i + 2^(i/2) (c_i + step term) and its convolution weights
          are divided by 2^(i/2);
        - the skip sum accumulates in the same matrix product (its biases are added once at the end).
        Layers of dilation d >= `winograd_min_dilation` (with 2d <= the tile; `winograd = True`) run their
        convolution as Winograd F(2, 3) (`_paired_layer`): in each 2d-block of the tile the outputs t and
        t + d share the inputs a, b, c, e = x[t - d], x[t], x[t + d], x[t + 2d]; with
        D = (a - c, b + c, c - b, b - e) and U = (W0, (W0 + W1 + W2) / 2, (W0 - W1 + W2) / 2, -W2),
        M_k = U_k D_k (two batched products of two [2C, C] matrices each, the conditioning term as the initial
        value of M0 and M3), y[t] = M0 + M1 + M2 and y[t + d] = M3 + M1 - M2: 2 products per output instead
        of 3. Samples past the tile's last whole 2d-block take the plain product.
        The weights so folded, the buffers and the tiles' views are built once per `generate` (kept in
        the conditioning's workspace), so that a step runs little Python per tile.
        """
        layers = self.residual_layers
        channels = self.config.residual_channels
        batch, length = audio.shape
        tile = max(1, min(int(self.inference_tile), length))
        workspace = conditioning.workspace if isinstance(conditioning, _InferenceConditioning) else {}
        key = (batch, length, tile, audio.dtype, audio.device, bool(self.winograd), int(self.winograd_min_dilation))
        if workspace.get("key") != key:
            workspace.clear()
            workspace.update(self._denoise_program(audio, conditioning, tile), key=key)
        state, inner = workspace["state"], workspace["inner"]
        step = self.diffusion_embedding(diffusion_step)
        step_terms = F.linear(step, workspace["step_weight"], workspace["step_bias"]).view(-1, len(layers), channels)
        # Each layer's input offset 2^(i/2) (c_i + step term) [B or 1, layers, C, 1].
        offsets = torch.addcmul(workspace["offsets"], workspace["scales"], step_terms).unsqueeze(-1)
        state[:, :channels] = F.relu(_pointwise(self.input_projection, audio.unsqueeze(1)))
        state[:, channels:] = 0
        for index, (conv_weight, out_weight, conv_halves, tiles, kernels) in enumerate(workspace["layers"]):
            torch.add(state[:, :channels], offsets[:, index], out=inner)
            if mask is not None:
                inner.mul_(mask)
            if kernels is not None:
                self._paired_layer(conv_weight, out_weight, kernels, tiles() if callable(tiles) else tiles)
                continue
            for window, columns, cols, z, gate, filt, gated, rows, term in (tiles() if callable(tiles) else tiles):
                columns.copy_(window)
                if conv_halves is not None:  # prepare_conditioning's terms: the filter half doubled here
                    torch.addmm(term[:channels], conv_halves[0], cols, out=gate)
                    torch.addmm(term[channels:], conv_halves[1], cols, beta=2.0, out=filt)
                elif isinstance(term, torch.Tensor):
                    torch.addmm(term, conv_weight, cols, out=z)
                else:  # the term projected from the upsampled mel into `z`, tile by tile
                    term()
                    z.addmm_(conv_weight, cols)
                z.sigmoid_()
                rows.addmm_(out_weight, torch.addcmul(gate, gate, filt, value=-2.0, out=gated))
        skip = state[:, channels:]
        skip += workspace["skip_bias"]
        skip /= math.sqrt(len(layers))
        return _pointwise(self.output_projection, F.relu_(_pointwise(self.skip_projection, skip)))

    @staticmethod
    def _paired_layer(conv_weight, out_weight, kernels, tiles) -> None:
        """One layer of `_denoise` whose dilated convolution runs as Winograd F(2, 3) on each tile."""
        outer_kernels, inner_kernels = kernels
        for paired, taps, term_pairs, rest, z, gate, filt, gated, rows, term in tiles:
            if not isinstance(term, torch.Tensor):
                term()  # the term projected into `z` (its pair view reads it there)
            if paired is not None:
                (d0, d3, d1, d2), outer_inputs, inner_inputs, outer, inner, outer_split, combine = paired
                a, b, c, e = taps
                torch.sub(a, c, out=d0)
                torch.sub(b, e, out=d3)
                torch.add(b, c, out=d1)
                torch.sub(c, b, out=d2)
                outer_split.copy_(term_pairs)
                outer.baddbmm_(outer_kernels, outer_inputs)  # [term + U0 D0, term + U3 D3]
                torch.bmm(inner_kernels, inner_inputs, out=inner)  # [U1 D1, U2 D2]
                y0, y1, m0, m3, m1, m2 = combine
                torch.add(m0, m1, out=y0).add_(m2)
                torch.add(m3, m1, out=y1).sub_(m2)
            if rest is not None:  # samples past the tile's last whole 2d-block: the plain product
                window, columns, cols, z_rest, term_rest = rest
                columns.copy_(window)
                if term_rest is None:
                    z_rest.addmm_(conv_weight, cols)
                else:
                    torch.addmm(term_rest, conv_weight, cols, out=z_rest)
            z.sigmoid_()
            rows.addmm_(out_weight, torch.addcmul(gate, gate, filt, value=-2.0, out=gated))

    def _denoise_program(self, audio, conditioning, tile: int) -> dict:
        """`_denoise`'s step-independent part: folded weights, buffers and, per layer, the views of every
        tile with its conditioning term (a view of the cached terms, or a call that projects the tile of
        the upsampled mel)."""
        layers = self.residual_layers
        channels = self.config.residual_channels
        batch, length = audio.shape
        pad = max(layer.dilated_conv.dilation[0] for layer in layers)
        conditioner = global_conditioner = terms = tiled_terms = None
        if isinstance(conditioning, _InferenceConditioning):
            conditioner, global_conditioner = conditioning.conditioner, conditioning.global_conditioner
            if conditioning.projected is not None and conditioning.tile == tile:
                tiled_terms = conditioning.projected
            doubled = True
        else:
            terms, doubled = conditioning, False
        # state rows [:C]: the residual stream v, rows [C:]: the skip sum without its biases; layer_input:
        # zero borders (the convolutions' padding).
        state = audio.new_empty(batch, 2 * channels, length)
        layer_input = audio.new_zeros(batch, channels, length + 2 * pad)
        columns = audio.new_empty(3 * channels, tile)
        gates = audio.new_empty(2 * channels, tile)
        gated = audio.new_empty(channels, tile)
        scales = torch.tensor([2.0 ** (index / 2) for index in range(len(layers))], dtype=audio.dtype,
                              device=audio.device)
        # Views of the tile buffers, per tile width (all tiles but the last share them).
        buffers = {width: (columns[:, :width].view(3, channels, width), columns[:, :width], gates[:, :width],
                           gates[:channels, :width], gates[channels:, :width], gated[:, :width])
                   for width in {tile, length % tile or tile}}
        # Winograd F(2, 3) buffers: the transformed inputs [4, C, pairs] and products [4, 2C, pairs].
        pair_buffers = None
        if self.winograd and any(self.winograd_min_dilation <= layer.dilated_conv.dilation[0] <= tile // 2
                                 for layer in layers):
            pair_buffers = (audio.new_empty(2 * channels * tile), audio.new_empty(4 * channels * tile))
        offset = audio.new_zeros(channels)
        offsets, program = [], []
        for index, layer in enumerate(layers):
            scale = float(scales[index])
            dilation = layer.dilated_conv.dilation[0]
            conv_weight = _filter_scaled(torch.cat(layer.dilated_conv.weight.unbind(-1), dim=1) / scale, 2.0)
            out_weight = layer.output_projection.weight.squeeze(-1)
            last = index == len(layers) - 1
            # The last layer's residual half is never used.
            out_weight = -out_weight[channels:] if last else -torch.cat([out_weight[:channels] * scale,
                                                                        out_weight[channels:]])
            offsets.append(offset * scale)
            offset = (offset + layer.output_projection.bias[:channels]) / math.sqrt(2.0)
            rows = state[:, channels:] if last else state
            if terms is None and tiled_terms is None:
                cond_weight = _filter_scaled(layer.conditioner_projection.weight.squeeze(-1), 2.0)
                cond_bias = layer.conditioner_projection.bias + layer.dilated_conv.bias
                global_weight = None
                if global_conditioner is not None:
                    global_weight = _filter_scaled(layer.conditioner_projection_global.weight.squeeze(-1), 2.0)
                    cond_bias = cond_bias + layer.conditioner_projection_global.bias
                cond_bias = _filter_scaled(cond_bias, 2.0).unsqueeze(-1)
            if terms is None and tiled_terms is None:
                cond = (cond_bias, cond_weight, conditioner, global_weight, global_conditioner)
            else:
                cond = None
            kernels = None
            if (pair_buffers is not None and terms is None and self.winograd_min_dilation <= dilation
                    and 2 * dilation <= tile):
                # Winograd F(2, 3): for the taps W0, W1, W2 (on x[t - d], x[t], x[t + d]),
                # U0 = W0, U1 = (W0 + W1 + W2) / 2, U2 = (W0 - W1 + W2) / 2, U3 = -W2 (rounded once from float64).
                w0, w1, w2 = conv_weight.double().chunk(3, dim=1)
                kernels = (torch.stack([w0, -w2]).to(conv_weight.dtype),
                           torch.stack([(w0 + w1 + w2) / 2, (w0 - w1 + w2) / 2]).to(conv_weight.dtype))
                tiles = partial(_paired_tile_views, layer_input, pad, dilation, tile, buffers, pair_buffers, rows, index,
                                tiled_terms, cond)
            else:
                tiles = partial(_tile_views, layer_input, pad, dilation, tile, buffers, rows, index, tiled_terms,
                                terms, cond)
            if batch * -(-length // tile) * len(layers) <= MAX_CACHED_TILES:
                tiles = list(tiles())
            halves = None if doubled else (conv_weight[:channels], conv_weight[channels:])
            program.append((conv_weight, out_weight, halves, tiles, kernels))
        return {
            "state": state, "inner": layer_input[..., pad: pad + length], "layers": program,
            "scales": scales.view(-1, 1), "offsets": torch.stack(offsets),
            "step_weight": torch.cat([layer.diffusion_projection.weight for layer in layers]),
            "step_bias": torch.cat([layer.diffusion_projection.bias for layer in layers]),
            "skip_bias": sum(layer.output_projection.bias[channels:] for layer in layers).view(1, -1, 1),
        }


class PriorGradVocoder(PriorGradPreTrainedModel):
    """PriorGrad with its data-dependent prior: training loss (`forward` with `labels`) and `generate`.

    `forward(spectrogram, labels=clean_audio)` draws t and the noise (or takes them as `diffusion_step`
    and `noise`), forms x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) std * noise and returns the loss
    mean(((eps - std * noise) / std)^2). Without labels it predicts the noise of a given noisy `audio`.

        vocoder = PriorGradVocoder.from_pretrained("converted/priorgrad_ljspeech")
        out = vocoder.generate(log_mel, num_inference_steps=6, generator=torch.Generator().manual_seed(0))
        out.waveform   # [1, 256 * frames]
    """

    def __init__(self, config: PriorGradConfig):
        super().__init__(config)
        self.priorgrad = PriorGradModel(config)
        self.post_init()

    # -- the prior ------------------------------------------------------------------------------------
    def prior_std(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Per-frame prior std [..., frames] of a log-mel [..., n_mels, frames] (ones without `use_prior`)."""
        config = self.config
        if not config.use_prior:
            return torch.ones_like(log_mel[..., 0, :])
        if config.energy_min is None or (config.energy_max is None and config.max_energy_override is None):
            raise ValueError(
                "the prior needs the training-set energy statistics: set config.energy_min and energy_max "
                "(the converter reads them from stats_priorgrad/), or pass target_std explicitly"
            )
        return prior_std_from_log_mel(
            log_mel, config.energy_min, config.energy_max, config.max_energy_override, config.std_min
        )

    def _per_sample_std(self, spectrogram: torch.Tensor, target_std: torch.Tensor | None) -> torch.Tensor:
        frames = spectrogram.shape[-1]
        hop = self.config.hop_samples
        if target_std is None:
            target_std = self.prior_std(spectrogram)
        if target_std.shape[-1] == frames:
            target_std = torch.repeat_interleave(target_std, hop, dim=-1)
        if target_std.shape != (spectrogram.shape[0], frames * hop):
            raise ValueError(
                f"target_std must be [batch, frames] or [batch, frames * {hop}] = "
                f"{[spectrogram.shape[0], frames * hop]}, got {list(target_std.shape)}"
            )
        return target_std

    def network_conditioning(self, spectrogram: torch.Tensor, target_std: torch.Tensor):
        """What the network receives: the mel (with the prior as channel n_mels + 1 under `condition_prior`)
        and the global condition [B, 1, frames] under `condition_prior_global`."""
        config = self.config
        if spectrogram.dim() != 3 or spectrogram.shape[1] != config.n_mels:
            raise ValueError(
                f"expected a log-mel spectrogram [batch, {config.n_mels}, frames], got {list(spectrogram.shape)}"
            )
        if not (config.condition_prior or config.condition_prior_global):
            return spectrogram, None
        frame_std = target_std[:, :: config.hop_samples].unsqueeze(1)
        if config.condition_prior:
            return torch.cat([spectrogram, frame_std], dim=1), None
        return spectrogram, frame_std

    def noise_levels(self, device: torch.device | None = None) -> torch.Tensor:
        """abar_t = prod_{s<=t}(1 - beta_s) of the training schedule (float64 product, float32 result)."""
        levels = np.cumprod(1 - np.asarray(self.config.noise_schedule, dtype=np.float64))
        return torch.tensor(levels.astype(np.float32), device=device)

    # -- training -------------------------------------------------------------------------------------
    def loss_function(self, predicted: torch.Tensor, noise: torch.Tensor, target_std: torch.Tensor) -> torch.Tensor:
        if self.config.use_prior:
            if not self.config.use_l2loss:
                raise ValueError("the original PriorGrad defines only the L2 loss with use_prior=True")
            # Gaussian NLL under N(0, diag(std^2)) up to constants: the inverse-prior weighted L2.
            return ((predicted - noise) * torch.reciprocal(target_std)).pow(2).sum() / predicted.numel()
        if self.config.use_l2loss:
            return F.mse_loss(predicted, noise)
        return F.l1_loss(predicted, noise)

    def forward(
        self,
        spectrogram: torch.Tensor,
        labels: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        diffusion_step: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        target_std: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> PriorGradVocoderOutput | tuple:
        """Loss pass with `labels` (clean audio [B, L]); noise prediction for a noisy `audio` otherwise.

        `noise` is a standard-normal draw [B, L] (scaled by the prior std here); `target_std` is the prior
        per frame or per sample (computed from the mel when omitted and needed: for the loss, or as
        conditioning with `condition_prior` / `condition_prior_global`).
        """
        config = self.config
        if target_std is not None or labels is not None or config.condition_prior or config.condition_prior_global:
            target_std = self._per_sample_std(spectrogram, target_std)
        net_spectrogram, global_cond = self.network_conditioning(spectrogram, target_std)
        loss = scaled_noise = None
        if labels is not None:
            if labels.shape != target_std.shape:
                raise ValueError(f"labels must be audio {list(target_std.shape)}, got {list(labels.shape)}")
            batch = labels.shape[0]
            if diffusion_step is None:
                diffusion_step = torch.randint(0, len(self.config.noise_schedule), [batch], device=labels.device)
            if noise is None:
                noise = torch.randn_like(labels)
            scaled_noise = noise * target_std
            level = self.noise_levels(labels.device)[diffusion_step].unsqueeze(1)
            audio = level**0.5 * labels + (1.0 - level) ** 0.5 * scaled_noise
        elif audio is None or diffusion_step is None:
            raise ValueError("pass labels (clean audio) for the training loss, or a noisy audio and its diffusion_step")
        predicted = self.priorgrad(audio, net_spectrogram, diffusion_step, global_cond).predicted_noise
        if labels is not None:
            loss = self.loss_function(predicted.squeeze(1), scaled_noise, target_std)
        output = PriorGradVocoderOutput(
            loss=loss, predicted_noise=predicted, noisy_audio=audio if labels is not None else None,
            noise=scaled_noise, target_std=target_std,
            diffusion_step=diffusion_step if labels is not None else None,
        )
        return output.to_tuple() if return_dict is False else output

    # -- sampling -------------------------------------------------------------------------------------
    def _batch_spectrograms(self, spectrogram):
        if isinstance(spectrogram, torch.Tensor):
            spectrogram = [spectrogram] if spectrogram.dim() == 2 else list(spectrogram)
        if not spectrogram:
            raise ValueError("generate needs at least one spectrogram")
        mels = []
        for index, mel in enumerate(spectrogram):
            mel = torch.as_tensor(mel, dtype=torch.float32)
            if mel.dim() != 2 or mel.shape[0] != self.config.n_mels or mel.shape[1] < 1:
                raise ValueError(
                    f"spectrogram {index}: expected a log-mel [{self.config.n_mels}, frames >= 1], got {list(mel.shape)}"
                )
            if not torch.isfinite(mel).all():
                raise ValueError(f"spectrogram {index} contains NaN or infinite values")
            mels.append(mel)
        lengths = torch.tensor([mel.shape[1] for mel in mels])
        batch = torch.zeros(len(mels), self.config.n_mels, int(lengths.max()))
        for index, mel in enumerate(mels):
            batch[index, :, : mel.shape[1]] = mel
        return batch, lengths

    def _padded_std(self, target_std, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hop = self.config.hop_samples
        if target_std is None:
            frame_std = self.prior_std(batch)
            return torch.repeat_interleave(frame_std, hop, dim=-1)
        if isinstance(target_std, torch.Tensor) and target_std.dim() == 1:
            target_std = [target_std]
        padded = torch.ones(batch.shape[0], batch.shape[-1] * hop)
        if len(target_std) != batch.shape[0]:
            raise ValueError(f"got {len(target_std)} target_std rows for {batch.shape[0]} spectrograms")
        for index, (std, frames) in enumerate(zip(target_std, lengths.tolist())):
            std = torch.as_tensor(std, dtype=torch.float32)
            if std.shape[-1] == frames:
                std = torch.repeat_interleave(std, hop)
            if std.shape != (frames * hop,):
                raise ValueError(f"target_std {index}: expected [{frames}] or [{frames * hop}], got {list(std.shape)}")
            if not torch.isfinite(std).all() or (std <= 0).any():
                raise ValueError(f"target_std {index} must be finite and positive")
            padded[index, : frames * hop] = std
        return padded

    def _plan(self, spectrogram, global_cond, lengths, chunk_frames, overlap_frames, chunk_batch_size,
              cache_bytes):
        """The network calls of one reverse step, prepared once per `generate`: windows of equal size
        (the whole input, or the chunks with their context) stacked into batches, each with its
        step-independent conditioning: the upsampled mel, and the layers' projections of it when they fit
        `cache_bytes` (otherwise each call projects it tile by tile)."""
        frames = spectrogram.shape[-1]
        if chunk_frames is None or chunk_frames >= frames:
            windows = [(0, frames, 0, frames)]
        else:
            windows = []
            for start in range(0, frames, chunk_frames):
                stop = min(start + chunk_frames, frames)
                windows.append((max(0, start - overlap_frames), min(frames, stop + overlap_frames), start, stop))
        groups: dict[int, list] = {}
        for window in windows:
            groups.setdefault(window[1] - window[0], []).append(window)
        plan = []
        for size, group in groups.items():
            step = chunk_batch_size or len(group)
            for first in range(0, len(group), step):
                part = group[first:first + step]
                window_lengths = torch.cat([(lengths - low).clamp(0, size) for low, *_ in part])
                plan.append({
                    "windows": part,
                    "spectrogram": torch.cat([spectrogram[..., low:high] for low, high, *_ in part]),
                    "global_cond": None if global_cond is None else torch.cat(
                        [global_cond[..., low:high] for low, high, *_ in part]),
                    # A mask only where some row is cut short (a mask of full length changes nothing).
                    "lengths": window_lengths if bool((window_lengths != size).any()) else None,
                    "conditioning": None,
                })
        config = self.config
        per_sample = 2 * config.residual_channels * len(config.dilations) * 4
        needed = sum(entry["spectrogram"].shape[0] * entry["spectrogram"].shape[-1] for entry in plan)
        project = needed * config.hop_samples * per_sample <= cache_bytes
        for entry in plan:  # the upsampled mel always (the size of the network's own state, or less)
            entry["conditioning"] = self.priorgrad._prepare_inference(
                entry["spectrogram"], entry["global_cond"], entry["lengths"], project=project)
        return plan

    def _predict_noise(self, x, plan, step):
        hop = self.config.hop_samples
        if len(plan) == 1 and len(plan[0]["windows"]) == 1:
            entry = plan[0]
            return self.priorgrad(x, entry["spectrogram"], step, entry["global_cond"], entry["lengths"],
                                  conditioning=entry["conditioning"]).predicted_noise
        batch = x.shape[0]
        out = x.new_empty(batch, 1, x.shape[-1])
        for entry in plan:
            stacked = torch.cat([x[:, low * hop: high * hop] for low, high, *_ in entry["windows"]])
            eps = self.priorgrad(stacked, entry["spectrogram"], step, entry["global_cond"], entry["lengths"],
                                 conditioning=entry["conditioning"]).predicted_noise
            for index, (low, _, start, stop) in enumerate(entry["windows"]):
                out[..., start * hop: stop * hop] = eps[index * batch:(index + 1) * batch, :,
                                                        (start - low) * hop: (stop - low) * hop]
        return out

    @torch.no_grad()
    def generate(
        self,
        spectrogram: torch.Tensor | Sequence[torch.Tensor],
        target_std: torch.Tensor | Sequence[torch.Tensor] | None = None,
        num_inference_steps: int | None = 6,
        full_schedule: bool = False,
        inference_noise_schedule: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        chunk_frames: int | None = None,
        overlap_frames: int | None = None,
        output_states: bool = False,
        frame_lengths: torch.Tensor | Sequence[int] | None = None,
        chunk_batch_size: int | None = None,
        conditioning_cache_bytes: int = 2 << 30,
    ) -> PriorGradGenerateOutput:
        """Waveforms from log-mels by the reverse diffusion process with the prior N(0, diag(std^2)).

        `spectrogram`: one log-mel [n_mels, frames], a batch [B, n_mels, frames] or a list of log-mels of
        different lengths (batched exactly: each clip's result equals its unbatched result). Schedule:
        `num_inference_steps` 6 / 12 (official fast schedules), other N (linear betas), None (the config's
        `inference_noise_schedule`), `full_schedule=True` (the training schedule) or explicit
        `inference_noise_schedule` betas. Randomness: `generator`, or `noise` [steps, B, max samples]
        (standard-normal draws: [0] the initial sample, [k] the draw after the k-th reverse step).
        `chunk_frames` evaluates the network over windows of that many frames with `overlap_frames`
        context each side (default: the receptive field, which makes chunking exact up to rounding).
        `frame_lengths` [B] marks a zero-padded batch (as the feature extractor returns it).
        Speed: chunks of equal size run as one batch (`chunk_batch_size` of them at most, default all),
        the mel is upsampled once, and the 30 layers' projections of it (about 340 MB per second of
        audio) are computed once when they fit `conditioning_cache_bytes` (otherwise at every step, tile by
        tile); each step runs layer by layer over time tiles (`priorgrad.inference_tile` samples).

            out = vocoder.generate([mel_a, mel_b], num_inference_steps=12, chunk_frames=200)
            clip_b = out.waveform[1, : out.lengths[1]]
        """
        config = self.config
        device = self.device
        if frame_lengths is not None:
            if not isinstance(spectrogram, torch.Tensor) or spectrogram.dim() != 3:
                raise ValueError("frame_lengths goes with a padded batch spectrogram [B, n_mels, max frames]")
            frame_lengths = [int(n) for n in frame_lengths]
            if len(frame_lengths) != spectrogram.shape[0] or not all(1 <= n <= spectrogram.shape[-1] for n in frame_lengths):
                raise ValueError(f"frame_lengths {frame_lengths} do not fit a batch of shape {list(spectrogram.shape)}")
            spectrogram = [mel[:, :n] for mel, n in zip(spectrogram, frame_lengths)]
            if isinstance(target_std, torch.Tensor) and target_std.dim() == 2:
                hop = config.hop_samples
                per_sample = target_std.shape[-1] != max(frame_lengths)
                target_std = [std[: n * hop] if per_sample else std[:n] for std, n in zip(target_std, frame_lengths)]
        batch, lengths = self._batch_spectrograms(spectrogram)
        std = self._padded_std(target_std, batch, lengths).to(device)
        batch, lengths = batch.to(device), lengths.to(device)
        if inference_noise_schedule is not None:
            betas = [float(b) for b in inference_noise_schedule]
        else:
            betas = inference_schedule(config, num_inference_steps, full=full_schedule)
        steps = continuous_step_index(config.noise_schedule, betas)
        beta = np.asarray(betas, dtype=np.float64)
        alpha = 1 - beta
        gamma = np.cumprod(alpha)
        if chunk_frames is not None:
            if chunk_frames < 1:
                raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
            if overlap_frames is None:
                overlap_frames = config.receptive_field_frames
            if overlap_frames < config.receptive_field_frames:
                logger.warning(
                    f"overlap_frames={overlap_frames} is below the receptive field ({config.receptive_field_frames} "
                    "frames): chunk borders will differ from whole-input generation"
                )
        shape = (batch.shape[0], batch.shape[-1] * config.hop_samples)
        if noise is not None:
            noise = torch.as_tensor(noise, dtype=torch.float32, device=device).reshape(len(betas), *shape)

        def draw(k: int) -> torch.Tensor:
            if noise is not None:
                return noise[k]
            return torch.randn(shape, generator=generator, device="cpu" if generator is None else generator.device).to(device)

        net_spectrogram, global_cond = self.network_conditioning(batch, std)
        if chunk_batch_size is not None and chunk_batch_size < 1:
            raise ValueError(f"chunk_batch_size must be >= 1, got {chunk_batch_size}")
        plan = self._plan(net_spectrogram, global_cond, lengths, chunk_frames, overlap_frames, chunk_batch_size,
                          conditioning_cache_bytes)
        audio = draw(0) * std
        states = []
        for call, n in enumerate(range(len(betas) - 1, -1, -1)):
            if output_states:
                states.append(audio.clone())
            step = torch.tensor([steps[n]], device=device)
            eps = self._predict_noise(audio, plan, step).squeeze(1)
            audio = float(1 / alpha[n] ** 0.5) * (audio - float(beta[n] / (1 - gamma[n]) ** 0.5) * eps)
            if n > 0:
                sigma = float(((1.0 - gamma[n - 1]) / (1.0 - gamma[n]) * beta[n]) ** 0.5)
                audio += sigma * (draw(call + 1) * std)
            audio = torch.clamp(audio, -1.0, 1.0)
        sample_lengths = lengths * config.hop_samples
        valid = torch.arange(shape[1], device=device).unsqueeze(0) < sample_lengths.unsqueeze(1)
        return PriorGradGenerateOutput(
            waveform=audio * valid, lengths=sample_lengths, reverse_steps=torch.from_numpy(steps[::-1].copy()),
            states=torch.stack(states) if output_states else None,
        )
