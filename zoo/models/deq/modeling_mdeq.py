"""Multiscale deep equilibrium model (MDEQ) for image classification.

MDEQ (Bai, Koltun & Kolter, NeurIPS 2020) solves for the joint fixed point of several resolution
streams: f runs one residual block per resolution (the image injection enters the highest resolution)
and fuses all streams by up/down-sampling. Parameter names follow the original v2 code
(locuslab/deq MDEQ-Vision) so that converted checkpoints keep their key names.

    model = MdeqForImageClassification.from_pretrained("path/to/converted")
    out = model(pixel_values=images)            # out.logits, out.rel_residual, out.solver_steps
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_mdeq import MdeqConfig
from .equilibrium_deq import (
    SolverSettings,
    jacobian_loss_weight,
    should_apply_jacobian_loss,
    solve_equilibrium,
    unrolled,
)

__all__ = [
    "realign_tensors", "DeqConvergenceWarning", "MdeqForImageClassification", "MdeqImageClassifierOutput", "MdeqModel",
    "MdeqModelOutput", "MdeqPreTrainedModel",
]


class DeqConvergenceWarning(UserWarning):
    """The fixed-point solver stopped before reaching its tolerance (or diverged)."""


@dataclass
class MdeqModelOutput(ModelOutput):
    """Equilibrium of every resolution branch plus what the solver reached.

    `last_hidden_state` is the highest-resolution equilibrium, `equilibrium_states` all of them
    (highest resolution first); `abs_residual`/`rel_residual` are per-sample ||f(z)-z|| (relative to
    ||f(z)||) at the returned state, `solver_steps` the number of f evaluations (per sample: the batch is
    solved together), `converged` whether each sample reached the tolerance; `jac_loss` the Hutchinson
    Jacobian estimate when computed.
    """

    last_hidden_state: torch.Tensor | None = None
    equilibrium_states: tuple[torch.Tensor, ...] | None = None
    abs_residual: torch.Tensor | None = None
    rel_residual: torch.Tensor | None = None
    solver_steps: torch.Tensor | None = None
    converged: torch.Tensor | None = None
    jac_loss: torch.Tensor | None = None


@dataclass
class MdeqImageClassifierOutput(ModelOutput):
    """Logits (and loss with labels) plus the equilibrium and solver statistics of `MdeqModelOutput`."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    equilibrium_states: tuple[torch.Tensor, ...] | None = None
    abs_residual: torch.Tensor | None = None
    rel_residual: torch.Tensor | None = None
    solver_steps: torch.Tensor | None = None
    converged: torch.Tensor | None = None
    jac_loss: torch.Tensor | None = None


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=bias)


class WeightNormConv2d(nn.Module):
    """Conv2d with weight normalisation: weight = weight_v * weight_g / ||weight_v|| (norm over all
    dimensions but the output channel), stored as the original `weight_g`/`weight_v` parameters."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0):
        super().__init__()
        self.padding = padding
        self.weight_g = nn.Parameter(torch.ones(out_channels, 1, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))

    def weight(self) -> torch.Tensor:
        v = self.weight_v
        norm = v.reshape(v.shape[0], -1).norm(dim=1).view(-1, 1, 1, 1)
        return v * (self.weight_g / norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), padding=self.padding)


def _conv(config: MdeqConfig, in_ch: int, out_ch: int, kernel: int) -> nn.Module:
    if config.wnorm:
        return WeightNormConv2d(in_ch, out_ch, kernel, padding=kernel // 2)
    return nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)


class MdeqBasicBlock(nn.Module):
    """conv -> GN -> ReLU -> conv (+ injection) -> GN, residual, ReLU -> GN (Figure 2 of the paper)."""

    def __init__(self, config: MdeqConfig, channels: int, big_kernels: int):
        super().__init__()
        inner = int(config.expansion_factor * channels)
        self.conv1 = _conv(config, channels, inner, 5 if big_kernels >= 1 else 3)
        self.gn1 = nn.GroupNorm(config.num_groups, inner, affine=config.block_gn_affine)
        self.conv2 = _conv(config, inner, channels, 5 if big_kernels >= 2 else 3)
        self.gn2 = nn.GroupNorm(config.num_groups, channels, affine=config.block_gn_affine)
        self.gn3 = nn.GroupNorm(config.num_groups, channels, affine=config.block_gn_affine)
        self.dropout = config.dropout
        self.mask: torch.Tensor | None = None  # variational dropout: one mask for the whole solve

    def forward(self, x: torch.Tensor, injection: torch.Tensor | float = 0.0) -> torch.Tensor:
        out = F.relu(self.gn1(self.conv1(x)))
        out = self.conv2(out)
        if self.mask is not None:
            out = out * self.mask
        out = self.gn2(out + injection)
        return self.gn3(F.relu(out + x))


class MdeqBranch(nn.Module):
    def __init__(self, config: MdeqConfig, index: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            MdeqBasicBlock(config, config.num_channels[index], config.big_kernels[index])
            for _ in range(config.num_blocks[index])
        )

    def forward(self, x: torch.Tensor, injection: torch.Tensor | float) -> torch.Tensor:
        y = self.blocks[0](x, injection)
        for block in self.blocks[1:]:
            y = block(y)
        return y


class MdeqDownsample(nn.Module):
    """Branch j -> coarser branch i: (i - j) stride-2 3x3 convolutions with GroupNorm (ReLU between)."""

    def __init__(self, config: MdeqConfig, in_res: int, out_res: int):
        super().__init__()
        ch_in, ch_out = config.num_channels[in_res], config.num_channels[out_res]
        steps = out_res - in_res
        layers = []
        for k in range(steps):
            out = ch_out if k == steps - 1 else ch_in
            step = nn.Sequential()
            step.add_module("conv", nn.Conv2d(ch_in, out, 3, stride=2, padding=1, bias=False))
            step.add_module("gnorm", nn.GroupNorm(config.num_groups, out, affine=config.fuse_gn_affine))
            if k != steps - 1:
                step.add_module("relu", nn.ReLU())
            layers.append(step)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MdeqUpsample(nn.Module):
    """Branch j -> finer branch i: 1x1 convolution, GroupNorm, nearest upsampling by 2^(j - i)."""

    def __init__(self, config: MdeqConfig, in_res: int, out_res: int):
        super().__init__()
        ch_in, ch_out = config.num_channels[in_res], config.num_channels[out_res]
        self.net = nn.Sequential()
        self.net.add_module("conv", nn.Conv2d(ch_in, ch_out, 1, bias=False))
        self.net.add_module("gnorm", nn.GroupNorm(config.num_groups, ch_out, affine=config.fuse_gn_affine))
        self.net.add_module("upsample", nn.Upsample(scale_factor=2 ** (in_res - out_res), mode="nearest"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MdeqPostFuse(nn.Module):
    def __init__(self, config: MdeqConfig, channels: int):
        super().__init__()
        self.conv = (WeightNormConv2d(channels, channels, 1) if config.wnorm
                     else nn.Conv2d(channels, channels, 1, bias=False))
        # The original uses NUM_GROUPS // 2 groups here.
        self.gnorm = nn.GroupNorm(config.num_groups // 2, channels, affine=config.post_gn_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gnorm(self.conv(F.relu(x)))


class MdeqStage(nn.Module):
    """The layer f: a residual block per resolution, then multiscale fusion (the original MDEQModule)."""

    def __init__(self, config: MdeqConfig):
        super().__init__()
        n = config.num_branches
        self.branches = nn.ModuleList(MdeqBranch(config, i) for i in range(n))
        if n > 1:
            self.fuse_layers = nn.ModuleList(
                nn.ModuleList(
                    nn.Identity() if i == j
                    else (MdeqUpsample(config, j, i) if j > i else MdeqDownsample(config, j, i))
                    for j in range(n)
                )
                for i in range(n)
            )
        else:
            self.fuse_layers = None
        self.post_fuse_layers = nn.ModuleList(MdeqPostFuse(config, c) for c in config.num_channels)

    def forward(self, zs: list[torch.Tensor], injections: list[torch.Tensor | float]) -> list[torch.Tensor]:
        blocks = [branch(z, inj) for branch, z, inj in zip(self.branches, zs, injections)]
        if self.fuse_layers is None:
            return blocks
        fused = []
        for i, row in enumerate(self.fuse_layers):
            y = blocks[i]
            for j, layer in enumerate(row):
                if j != i:
                    y = y + layer(blocks[j])
            fused.append(self.post_fuse_layers[i](y))
        return fused


HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies",
              "trust_remote_code")


def load_base_of_head_checkpoint(cls, head_class, base_class, pretrained_model_name_or_path, args, kwargs):
    """Load a head checkpoint (config.architectures names `head_class`) asked for as `base_class` through the
    head, and return its base model (with the loading info when asked).

    transformers renames every `*.weight_g` / `*.weight_v` key to `parametrizations.weight.original0/1`
    (its legacy weight-norm mapping) unless the key exists in the model as it stands; a head checkpoint's
    keys carry the base-model prefix, so for the base model they would not, and every weight-normalised
    weight would be silently re-initialised. Returns None when the checkpoint is not such a head checkpoint.
    """
    if cls is not base_class or args:
        return None
    config = kwargs.get("config")
    if not isinstance(config, PretrainedConfig):
        try:
            config = base_class.config_class.from_pretrained(
                pretrained_model_name_or_path, **{k: kwargs[k] for k in HUB_KWARGS if k in kwargs})
        except (OSError, ValueError):
            return None  # let transformers report the problem the usual way
    if (getattr(config, "architectures", None) or [None])[0] != head_class.__name__:
        return None
    loaded = head_class.from_pretrained(pretrained_model_name_or_path, **kwargs)
    head, info = (loaded if isinstance(loaded, tuple) else (loaded, None))
    base = getattr(head, base_class.base_model_prefix)
    if info is None:
        return base
    prefix = base_class.base_model_prefix + "."
    info = dict(info)  # the head's report seen from the base: its own keys, and every unexpected key
    for key in ("missing_keys", "mismatched_keys"):
        if isinstance(info.get(key), (list, set)):
            info[key] = type(info[key])(k for k in info[key] if isinstance(k, str) and k.startswith(prefix))
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if isinstance(info.get(key), (list, set)):
            info[key] = type(info[key])(k.removeprefix(prefix) if isinstance(k, str) else k for k in info[key])
    return base, info


def realign_tensors(model: nn.Module) -> None:
    """Copy every parameter and buffer into freshly allocated memory.

    Weights loaded from safetensors are memory-mapped at arbitrary 4-byte offsets, and some CPU kernels
    (1x1 convolutions on small inputs) round differently on such unaligned weights; without the copy a
    reloaded model would differ from the saved one in the last bits, and the solver would amplify it.
    Tied parameters stay tied (the shared Parameter object receives the new storage once).
    """
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.clone()
        for module in model.modules():
            for name, buffer in list(module._buffers.items()):
                if buffer is not None:
                    module._buffers[name] = buffer.clone()


class MdeqPreTrainedModel(PreTrainedModel):
    config_class = MdeqConfig
    base_model_prefix = "mdeq"
    main_input_name = "pixel_values"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):  # noqa: D102  (transformers' docstring)
        base = load_base_of_head_checkpoint(cls, MdeqForImageClassification, MdeqModel, pretrained_model_name_or_path,
                                            args, kwargs)
        if base is not None:
            return base
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        realign_tensors(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded

    def _init_weights(self, module: nn.Module) -> None:
        # The original initialisation: N(0, 0.01) convolutions, unit BatchNorm scale.
        if isinstance(module, WeightNormConv2d):
            init.normal_(module.weight_v, std=0.01)
            init.ones_(module.weight_g)
        elif isinstance(module, nn.Conv2d):
            init.normal_(module.weight, std=0.01)
            if module.bias is not None:
                init.normal_(module.bias, std=0.01)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=0.01)
            if module.bias is not None:
                init.zeros_(module.bias)


class MdeqModel(MdeqPreTrainedModel):
    """Stem + injection + the equilibrium layer; returns the equilibrium of every resolution branch.

        model = MdeqModel(MdeqConfig(num_channels=[8, 16], head_channels=[4, 8]))
        out = model(pixel_values=torch.randn(2, 3, 16, 16))
        out.equilibrium_states[1].shape, out.rel_residual
    """

    # a head checkpoint loaded as the base model: its head weights are dropped on purpose, not reported
    # (transformers matches these with re.search; any other unexpected key is still reported)
    _keys_to_ignore_on_load_unexpected = [r"^(classifier|downsamp_modules|final_layer|incre_modules)\."]

    def __init__(self, config: MdeqConfig):
        super().__init__(config)
        c, momentum = config.num_channels[0], config.bn_momentum
        layers = [
            conv3x3(config.num_input_channels, c, stride=2 if config.downsample_times >= 1 else 1),
            nn.BatchNorm2d(c, momentum=momentum), nn.ReLU(),
            conv3x3(c, c, stride=2 if config.downsample_times >= 2 else 1),
            nn.BatchNorm2d(c, momentum=momentum), nn.ReLU(),
        ]
        self.downsample = nn.Sequential(*layers)
        for i in range(3, config.downsample_times + 1):
            self.downsample.add_module(f"DS{i}", conv3x3(c, c, stride=2))
            self.downsample.add_module(f"DS{i}-BN", nn.BatchNorm2d(c, momentum=momentum))
            self.downsample.add_module(f"DS{i}-RELU", nn.ReLU())
        if config.downsample_times == 0 and config.num_branches <= 2:
            self.stage0 = None  # the stem output is injected directly
        else:
            self.stage0 = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, momentum=momentum), nn.ReLU())
        self.fullstage = MdeqStage(config)
        self._train_forward_count = 0
        self.post_init()

    # -- input checks ------------------------------------------------------------------------------
    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        config = self.config
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(f"pixel_values must be a (batch, channels, height, width) tensor, got {shape}")
        if not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values must be a floating-point tensor (normalised images), got {pixel_values.dtype}")
        if 0 in pixel_values.shape:
            raise ValueError(f"pixel_values is empty (shape {tuple(pixel_values.shape)}): pass at least one image of "
                             "non-zero height and width")
        if pixel_values.shape[1] != config.num_input_channels:
            raise ValueError(f"pixel_values has {pixel_values.shape[1]} channels but this MDEQ expects "
                             f"{config.num_input_channels} (shape {tuple(pixel_values.shape)})")
        factor = 2 ** (config.downsample_times + config.num_branches - 1)
        height, width = pixel_values.shape[-2:]
        if height % factor or width % factor:
            raise ValueError(f"image size {height}x{width} is not divisible by {factor}: MDEQ with "
                             f"{config.num_branches} branches and {config.downsample_times} stem downsamplings "
                             f"needs height and width divisible by 2^{config.downsample_times + config.num_branches - 1}"
                             f" (trained on {config.image_size[0]}x{config.image_size[1]})")
        if not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values contains NaN or infinite values; the equilibrium solve needs finite input")

    def solver_settings(self) -> SolverSettings:
        c = self.config
        return SolverSettings(
            f_solver=c.f_solver, b_solver=c.b_solver, f_max_iter=c.f_max_iter, b_max_iter=c.b_max_iter,
            f_tol=c.f_tol, b_tol=c.b_tol, stop_mode=c.stop_mode, backward=c.backward,
            phantom_steps=c.phantom_steps, phantom_tau=c.phantom_tau,
        )

    def injection(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The tensor injected into the highest-resolution branch (the other branches get zeros)."""
        x = self.downsample(pixel_values)
        return self.stage0(x) if self.stage0 is not None else x

    def _set_dropout_masks(self, shapes: list[torch.Size], reference: torch.Tensor) -> None:
        p = self.config.dropout
        for branch, shape in zip(self.fullstage.branches, shapes):
            for block in branch.blocks:
                if self.training and p > 0:
                    keep = torch.full(shape, 1 - p, dtype=reference.dtype, device=reference.device)
                    block.mask = torch.bernoulli(keep) / (1 - p)
                else:
                    block.mask = None

    def equilibrium_function(self, pixel_values: torch.Tensor):
        """(f, z_init, to_list): the map z -> f(z) on flattened states (batch, D) for these images (branch 0
        first, each branch flattened), the zero initial state and the function splitting z into branches."""
        config = self.config
        x0 = self.injection(pixel_values)
        bsz, _, height, width = x0.shape
        shapes = [torch.Size((bsz, c, height // 2**i, width // 2**i)) for i, c in enumerate(config.num_channels)]
        injections: list[torch.Tensor | float] = [x0] + [0.0] * (config.num_branches - 1)
        sizes = [s[1] * s[2] * s[3] for s in shapes]
        self._set_dropout_masks(shapes, x0)

        def to_list(z: torch.Tensor) -> list[torch.Tensor]:
            return [part.reshape(shape) for part, shape in zip(torch.split(z, sizes, dim=1), shapes)]

        def f(z: torch.Tensor) -> torch.Tensor:
            return torch.cat([y.reshape(bsz, -1) for y in self.fullstage(to_list(z), injections)], dim=1)

        return f, x0.new_zeros(bsz, sum(sizes)), to_list

    def forward(
        self,
        pixel_values: torch.Tensor,
        unrolled_steps: int | None = None,
        jac_probes: torch.Tensor | None = None,
        compute_jac_loss: bool | None = None,
        **kwargs,
    ) -> MdeqModelOutput:
        """Solve for the multiscale equilibrium.

        `unrolled_steps=K` skips the solver and applies f K times from zero (the original pretraining
        path; also used when `config.backward == "unrolled"`, with K = config.num_layers).
        `compute_jac_loss` forces (True) or suppresses (False) the Hutchinson estimate; by default it is
        computed in training when `config.jac_loss_weight > 0`, on a `jac_loss_freq` fraction of steps.
        `jac_probes` (num_probes, batch, D) fixes its probe vectors.
        """
        self._check_pixel_values(pixel_values)
        config = self.config
        f, z_init, to_list = self.equilibrium_function(pixel_values)
        if compute_jac_loss is None:
            compute_jac_loss = self.training and config.jac_loss_weight > 0 and should_apply_jacobian_loss(
                config.jac_loss_freq)
        if self.training:
            self._train_forward_count += 1
        if unrolled_steps is None and config.backward == "unrolled":
            unrolled_steps = config.num_layers
        if unrolled_steps is not None:
            z = unrolled(f, z_init, unrolled_steps)
            new_z = f(z) - z
            output = MdeqModelOutput(
                abs_residual=new_z.detach().norm(dim=1),
                rel_residual=new_z.detach().norm(dim=1) / ((new_z + z).detach().norm(dim=1) + 1e-9),
                solver_steps=torch.full((z.shape[0],), unrolled_steps, device=z.device),
                converged=torch.zeros(z.shape[0], dtype=torch.bool, device=z.device),
            )
            jac = None
        else:
            settings = self.solver_settings()
            result = solve_equilibrium(f, z_init, settings, track_grad=torch.is_grad_enabled(),
                                       jac_loss=compute_jac_loss, jac_probes=jac_probes)
            z, stats, jac = result.z, result.stats, result.jac_loss
            self.last_solve = result
            if not stats.converged:
                warnings.warn(stats.warning_text("MDEQ forward solve"), DeqConvergenceWarning, stacklevel=2)
            output = MdeqModelOutput(
                abs_residual=stats.abs_residual, rel_residual=stats.rel_residual,
                solver_steps=torch.full((z.shape[0],), stats.nstep, device=z.device), converged=stats.residual < stats.tol,
            )
        _check_finite_solve(z, pixel_values)
        states = tuple(to_list(z))
        output.last_hidden_state = states[0]
        output.equilibrium_states = states
        output.jac_loss = jac
        return output

    def jacobian_weight(self) -> float:
        """The regulariser weight at the current training step (grows with `jac_incremental`)."""
        return jacobian_loss_weight(self.config.jac_loss_weight, self._train_forward_count,
                                    self.config.jac_incremental)


def _check_finite_solve(z: torch.Tensor, pixel_values: torch.Tensor) -> None:
    """A NaN or infinite equilibrium state would give NaN logits silently: refuse it, naming the samples."""
    bad = ~torch.isfinite(z.detach()).all(dim=1)
    if bool(bad.any()):
        samples = bad.nonzero().flatten().tolist()
        largest = float(pixel_values.detach().abs().amax())
        raise ValueError(
            f"pixel_values: the equilibrium solve produced NaN or infinite states for sample(s) {samples[:10]} "
            f"(largest input magnitude {largest:.3g}); the input is far outside the range the model works on "
            "(images normalised per channel, as in training)"
        )


class MdeqBottleneck(nn.Module):
    """The head's bottleneck block (BatchNorms without affine parameters, as in the original)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, momentum: float):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=momentum, affine=False)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=momentum, affine=False)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out, momentum=momentum, affine=False)
        self.downsample = None
        if inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, bias=False), nn.BatchNorm2d(out, momentum=momentum))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + residual)


class MdeqForImageClassification(MdeqPreTrainedModel):
    """MDEQ with the original classification head (per-resolution bottlenecks, strided merging,
    1x1 projection to `final_chansize`, global average pooling, linear classifier).

        model = MdeqForImageClassification(MdeqConfig(num_channels=[8, 16], head_channels=[4, 8],
                                                      final_chansize=32, num_labels=10))
        out = model(pixel_values=torch.randn(2, 3, 16, 16), labels=torch.tensor([1, 2]))
        out.loss.backward()
    """

    def __init__(self, config: MdeqConfig):
        super().__init__(config)
        self.mdeq = MdeqModel(config)
        momentum = config.bn_momentum
        self.incre_modules = nn.ModuleList(
            nn.Sequential(MdeqBottleneck(c, h, momentum)) for c, h in zip(config.num_channels, config.head_channels)
        )
        expansion = MdeqBottleneck.expansion
        self.downsamp_modules = nn.ModuleList(
            nn.Sequential(
                conv3x3(config.head_channels[i] * expansion, config.head_channels[i + 1] * expansion, stride=2, bias=True),
                nn.BatchNorm2d(config.head_channels[i + 1] * expansion, momentum=momentum), nn.ReLU(),
            )
            for i in range(config.num_branches - 1)
        )
        self.final_layer = nn.Sequential(
            nn.Conv2d(config.head_channels[-1] * expansion, config.final_chansize, 1),
            nn.BatchNorm2d(config.final_chansize, momentum=momentum), nn.ReLU(),
        )
        self.classifier = nn.Linear(config.final_chansize, config.num_labels)
        self.post_init()

    def predict(self, states: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
        """Logits from the equilibrium states of every branch (highest resolution first)."""
        y = self.incre_modules[0](states[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](states[i + 1]) + down(y)
        y = self.final_layer(y)
        return self.classifier(y.flatten(2).mean(dim=2))

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        unrolled_steps: int | None = None,
        jac_probes: torch.Tensor | None = None,
        compute_jac_loss: bool | None = None,
        **kwargs,
    ) -> MdeqImageClassifierOutput:
        """Classify images; with `labels`, `loss` is the cross-entropy plus the weighted Jacobian term."""
        out = self.mdeq(pixel_values, unrolled_steps=unrolled_steps, jac_probes=jac_probes,
                        compute_jac_loss=compute_jac_loss)
        logits = self.predict(out.equilibrium_states)
        if not bool(torch.isfinite(logits.detach()).all()):
            raise ValueError("pixel_values: the classifier produced NaN or infinite logits from a finite equilibrium; "
                             "the input is far outside the range the model works on")
        loss = None
        if labels is not None:
            if labels.shape != (logits.shape[0],):
                raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
            if labels.min() < 0 or labels.max() >= self.config.num_labels:
                raise ValueError(f"labels must lie in [0, {self.config.num_labels}), got {labels.tolist()}")
            loss = F.cross_entropy(logits, labels)
            if out.jac_loss is not None and self.training:
                loss = loss + self.mdeq.jacobian_weight() * out.jac_loss
        return MdeqImageClassifierOutput(
            loss=loss, logits=logits, equilibrium_states=out.equilibrium_states, abs_residual=out.abs_residual,
            rel_residual=out.rel_residual, solver_steps=out.solver_steps, converged=out.converged,
            jac_loss=out.jac_loss,
        )
