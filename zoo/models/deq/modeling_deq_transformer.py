"""DEQ-Transformer language model (Bai, Kolter & Koltun, "Deep Equilibrium Models", NeurIPS 2019).

The equilibrium layer f is one weight-tied relative-position Transformer-XL decoder layer whose
query/key/value projections receive the injected input; memory of past equilibrium states and injections
carries across segments. Adaptive input embedding and adaptive softmax follow the original (locuslab/deq
DEQ-Sequence), parameter names included, so converted state dicts keep their keys.

    model = DeqTransformerForCausalLM.from_pretrained("path/to/converted").eval()
    out = model(input_ids=ids, labels=next_ids)          # labels[t] is the token after input_ids[t]
    out.nll, out.logits (log-probabilities), out.mems     # feed out.mems to the next segment
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_deq_transformer import DeqTransformerConfig
from .equilibrium_deq import (
    SolverSettings,
    jacobian_loss_weight,
    should_apply_jacobian_loss,
    solve_equilibrium,
    unrolled,
)
from .modeling_mdeq import DeqConvergenceWarning, load_base_of_head_checkpoint, realign_tensors

__all__ = [
    "DeqTransformerForCausalLM", "DeqTransformerLMOutput", "DeqTransformerModel", "DeqTransformerModelOutput",
    "DeqTransformerPreTrainedModel",
]


@dataclass
class DeqTransformerModelOutput(ModelOutput):
    """`last_hidden_state` (batch, length, d_model) is the equilibrium; `mems` = (states, injections) of the
    last `mem_len` positions, batch first, to pass to the next segment; residuals per sample as in MDEQ."""

    last_hidden_state: torch.Tensor | None = None
    mems: tuple[torch.Tensor, torch.Tensor] | None = None
    abs_residual: torch.Tensor | None = None
    rel_residual: torch.Tensor | None = None
    solver_steps: torch.Tensor | None = None
    converged: torch.Tensor | None = None
    jac_loss: torch.Tensor | None = None


@dataclass
class DeqTransformerLMOutput(ModelOutput):
    """`logits` are log-probabilities over the whole vocabulary (adaptive softmax); `nll` (batch, length)
    the per-token negative log-likelihood of `labels` in natural order; `loss` their mean."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    nll: torch.Tensor | None = None
    mems: tuple[torch.Tensor, torch.Tensor] | None = None
    last_hidden_state: torch.Tensor | None = None
    abs_residual: torch.Tensor | None = None
    rel_residual: torch.Tensor | None = None
    solver_steps: torch.Tensor | None = None
    converged: torch.Tensor | None = None
    jac_loss: torch.Tensor | None = None


def _variational_mask(shape: tuple[int, ...], p: float, like: torch.Tensor, active: bool) -> torch.Tensor | None:
    """One dropout mask for a whole forward pass (shared by every evaluation of f), or None."""
    if not active or p <= 0:
        return None
    return torch.bernoulli(torch.full(shape, 1 - p, dtype=like.dtype, device=like.device)) / (1 - p)


class WeightNormProjection(nn.Module):
    """A bias-optional 1x1 Conv1d (`conv=True`, weight (out, in, 1)) or Linear, optionally weight-normalised
    as in the original: weight = weight_v * weight_g / ||weight_v|| (norm over all but the first dim)."""

    def __init__(self, d_in: int, d_out: int, bias: bool, wnorm: bool, conv: bool):
        super().__init__()
        shape = (d_out, d_in, 1) if conv else (d_out, d_in)
        self.conv, self.wnorm = conv, wnorm
        if wnorm:
            self.weight_g = nn.Parameter(torch.ones((d_out,) + (1,) * (len(shape) - 1)))
            self.weight_v = nn.Parameter(torch.empty(shape))
        else:
            self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None

    def effective_weight(self) -> torch.Tensor:
        if not self.wnorm:
            return self.weight
        v = self.weight_v
        norm = v.reshape(v.shape[0], -1).norm(dim=1).view(self.weight_g.shape)
        return v * (self.weight_g / norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.effective_weight()
        if self.conv:  # x: (batch, channels, length)
            return F.conv1d(x, weight, self.bias)
        return F.linear(x, weight, self.bias)


class DeqRelativeSelfAttention(nn.Module):
    """Transformer-XL relative-position attention with the injection added to query/key/value."""

    def __init__(self, config: DeqTransformerConfig):
        super().__init__()
        d, n, h = config.d_model, config.n_head, config.d_head
        self.n_head, self.d_head, self.d_model = n, h, d
        self.scale = 1 / (h ** 0.5)
        self.pre_lnorm, self.local_size = config.pre_lnorm, config.local_size
        self.qkv_net = WeightNormProjection(d, 3 * n * h, bias=False, wnorm=config.wnorm, conv=True)
        self.r_net = WeightNormProjection(d, n * h, bias=False, wnorm=config.wnorm, conv=True)
        self.r_w_bias = nn.Parameter(torch.zeros(n, h))
        self.r_r_bias = nn.Parameter(torch.zeros(n, h))
        self.o_net = WeightNormProjection(n * h, d, bias=True, wnorm=config.wnorm, conv=True)
        self.attn_mask_drop: torch.Tensor | None = None
        self.out_drop: torch.Tensor | None = None

    @staticmethod
    def _rel_shift(x: torch.Tensor) -> torch.Tensor:
        bsz, n_head, qlen, klen = x.shape
        padded = F.pad(x, (1, 0)).view(bsz, n_head, klen + 1, qlen)
        return padded[:, :, 1:].reshape(bsz, n_head, qlen, klen)

    def forward(self, z: torch.Tensor, pos_emb: torch.Tensor, us: torch.Tensor, mems: torch.Tensor) -> torch.Tensor:
        bsz, d_model, qlen = z.shape
        n, h = self.n_head, self.d_head
        mlen = mems.shape[2]
        cat = torch.cat([mems, z], dim=-1)
        if self.pre_lnorm:
            cat = F.layer_norm(cat.transpose(1, 2), (d_model,)).transpose(1, 2)
        w_heads = self.qkv_net(cat) + us
        q, k, v = torch.chunk(w_heads, 3, dim=1)
        q = q[:, :, -qlen:]
        klen = k.shape[2]
        q, k, v = q.reshape(bsz, n, h, qlen), k.reshape(bsz, n, h, klen), v.reshape(bsz, n, h, klen)
        r_k = self.r_net(pos_emb).reshape(n, h, pos_emb.shape[2])
        ac = torch.einsum("bndi,bndj->bnij", q + self.r_w_bias[:, :, None], k)
        bd = self._rel_shift(torch.einsum("bndi,ndj->bnij", q + self.r_r_bias[:, :, None], r_k))
        score = (ac + bd) * self.scale
        local = self.local_size or 1000
        ones = torch.ones(qlen, klen, dtype=torch.bool, device=z.device)
        mask = torch.triu(ones, diagonal=1 + mlen) | torch.tril(ones, diagonal=mlen - local)
        # (the original casts the scores to float32 for the masking; zoo keeps the model's dtype)
        score = score.masked_fill(mask[None, None], float("-inf"))
        prob = F.softmax(score, dim=-1)
        if self.attn_mask_drop is not None:
            prob = prob * self.attn_mask_drop
        attn = torch.einsum("bnij,bndj->bndi", prob, v).reshape(bsz, n * h, qlen)
        out = self.o_net(attn)
        if self.out_drop is not None:
            out = out * self.out_drop
        if self.pre_lnorm:
            return out + z
        return F.layer_norm((out + z).transpose(1, 2), (d_model,)).transpose(1, 2)


class DeqPositionwiseFF(nn.Module):
    def __init__(self, config: DeqTransformerConfig):
        super().__init__()
        self.d_model, self.pre_lnorm = config.d_model, config.pre_lnorm
        self.ff1_net = WeightNormProjection(config.d_model, config.d_inner, bias=True, wnorm=config.wnorm, conv=False)
        self.ff2_net = WeightNormProjection(config.d_inner, config.d_model, bias=True, wnorm=config.wnorm, conv=False)
        self.drop1: torch.Tensor | None = None
        self.drop2: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        if self.pre_lnorm:
            # The original's pre-LN quirk: the residual adds the *normalised* input.
            x = F.layer_norm(x, (self.d_model,))
        hidden = F.relu(self.ff1_net(x))
        if self.drop1 is not None:
            hidden = hidden * self.drop1
        out = self.ff2_net(hidden)
        if self.drop2 is not None:
            out = out * self.drop2
        out = out + x
        if not self.pre_lnorm:
            out = F.layer_norm(out, (self.d_model,))
        return out.transpose(1, 2)


class DeqDecoderLayer(nn.Module):
    """f(z; injection, memory): attention then feed-forward (the original RelPartialLearnableDecoderLayer)."""

    def __init__(self, config: DeqTransformerConfig):
        super().__init__()
        self.dec_attn = DeqRelativeSelfAttention(config)
        self.pos_ff = DeqPositionwiseFF(config)

    def forward(self, z: torch.Tensor, us: torch.Tensor, mems: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        return self.pos_ff(self.dec_attn(z, pos_emb, us, mems))


class AdaptiveEmbedding(nn.Module):
    """Adaptive input embedding (Baevski & Auli): cluster i has width d_embed // div_val**i, projected to d_model."""

    def __init__(self, config: DeqTransformerConfig):
        super().__init__()
        self.n_token, self.d_embed, self.d_proj = config.vocab_size, config.d_embed, config.d_model
        self.div_val = config.div_val
        self.cutoff_ends = [0] + config.cutoffs + [config.vocab_size]
        self.emb_scale = self.d_proj ** 0.5
        self.emb_layers = nn.ModuleList()
        self.emb_projs = nn.ModuleList()
        if self.div_val == 1:
            self.emb_layers.append(nn.Embedding(self.n_token, self.d_embed))
            if self.d_proj != self.d_embed:
                self.emb_projs.append(nn.Linear(self.d_embed, self.d_proj, bias=False))
        else:
            for i in range(len(self.cutoff_ends) - 1):
                width = self.d_embed // (self.div_val ** i)
                self.emb_layers.append(nn.Embedding(self.cutoff_ends[i + 1] - self.cutoff_ends[i], width))
                self.emb_projs.append(nn.Linear(width, self.d_proj, bias=False))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.div_val == 1:
            embed = self.emb_layers[0](ids)
            if self.d_proj != self.d_embed:
                embed = F.linear(embed, self.emb_projs[0].weight)
            return embed * self.emb_scale
        flat = ids.reshape(-1)
        weight = self.emb_projs[0].weight
        out = torch.zeros(flat.shape[0], self.d_proj, dtype=weight.dtype, device=weight.device)
        for i in range(len(self.cutoff_ends) - 1):
            lo, hi = self.cutoff_ends[i], self.cutoff_ends[i + 1]
            index = ((flat >= lo) & (flat < hi)).nonzero().squeeze(1)
            if index.numel():
                emb = F.linear(self.emb_layers[i](flat[index] - lo), self.emb_projs[i].weight)
                out = out.index_copy(0, index, emb)
        return (out * self.emb_scale).reshape(*ids.shape, self.d_proj)


class ProjectedAdaptiveLogSoftmax(nn.Module):
    """Adaptive softmax with projections (Transformer-XL), returning full-vocabulary log-probabilities.

    Tail cluster i is scored through head column -i (the original's indexing, reproduced on purpose)."""

    def __init__(self, config: DeqTransformerConfig):
        super().__init__()
        self.n_token, self.d_embed, self.d_proj = config.vocab_size, config.d_embed, config.d_model
        self.div_val = config.div_val
        self.cutoffs = config.cutoffs + [config.vocab_size]
        self.cutoff_ends = [0] + self.cutoffs
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs) - 1
        if self.n_clusters > 0:
            self.cluster_weight = nn.Parameter(torch.zeros(self.n_clusters, self.d_embed))
            self.cluster_bias = nn.Parameter(torch.zeros(self.n_clusters))
        self.out_layers = nn.ModuleList()
        self.out_projs = nn.ModuleList()
        if self.div_val == 1:
            if self.d_proj != self.d_embed:
                for _ in self.cutoffs:
                    self.out_projs.append(nn.Linear(self.d_embed, self.d_proj, bias=False))
            self.out_layers.append(nn.Linear(self.d_embed, self.n_token))
        else:
            for i in range(len(self.cutoffs)):
                width = self.d_embed // (self.div_val ** i)
                self.out_projs.append(nn.Linear(width, self.d_proj, bias=False))
                self.out_layers.append(nn.Linear(width, self.cutoff_ends[i + 1] - self.cutoff_ends[i]))

    def _proj(self, i: int) -> torch.Tensor | None:
        return self.out_projs[i].weight if len(self.out_projs) > i else None

    @staticmethod
    def _logit(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, proj: torch.Tensor | None):
        if proj is not None:
            hidden = hidden @ proj
        return F.linear(hidden, weight, bias)

    def log_prob(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, d_model) -> (N, vocab_size) log-probabilities."""
        if self.n_clusters == 0:
            return F.log_softmax(self._logit(hidden, self.out_layers[0].weight, self.out_layers[0].bias,
                                             self._proj(0)), dim=-1)
        weights, biases = [], []
        for i in range(len(self.cutoffs)):
            if self.div_val == 1:
                lo, hi = self.cutoff_ends[i], self.cutoff_ends[i + 1]
                weight, bias = self.out_layers[0].weight[lo:hi], self.out_layers[0].bias[lo:hi]
            else:
                weight, bias = self.out_layers[i].weight, self.out_layers[i].bias
            if i == 0:
                weight = torch.cat([weight, self.cluster_weight], dim=0)
                bias = torch.cat([bias, self.cluster_bias], dim=0)
            weights.append(weight)
            biases.append(bias)
        head = F.log_softmax(self._logit(hidden, weights[0], biases[0], self._proj(0)), dim=1)
        parts = [head[:, :self.shortlist_size]]
        for i in range(1, len(self.cutoffs)):
            tail = F.log_softmax(self._logit(hidden, weights[i], biases[i], self._proj(i)), dim=1)
            parts.append(head[:, -i, None] + tail)
        return torch.cat(parts, dim=1)


class DeqTransformerPreTrainedModel(PreTrainedModel):
    config_class = DeqTransformerConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):  # noqa: D102  (see realign_tensors)
        base = load_base_of_head_checkpoint(cls, DeqTransformerForCausalLM, DeqTransformerModel,
                                            pretrained_model_name_or_path, args, kwargs)
        if base is not None:
            return base
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        realign_tensors(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded

    def _init_weights(self, module: nn.Module) -> None:
        std = 0.02
        if isinstance(module, WeightNormProjection):
            if module.wnorm:
                init.normal_(module.weight_v, std=std)
                init.ones_(module.weight_g)
            else:
                init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, DeqRelativeSelfAttention):
            init.uniform_(module.r_w_bias, -0.05, 0.05)
            init.uniform_(module.r_r_bias, -0.05, 0.05)
        elif isinstance(module, (nn.Embedding, nn.Linear)):
            init.normal_(module.weight, std=std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, ProjectedAdaptiveLogSoftmax) and module.n_clusters > 0:
            init.normal_(module.cluster_weight, std=std)
            init.zeros_(module.cluster_bias)
        elif isinstance(module, nn.Conv1d):
            init.normal_(module.weight, std=std)
            init.zeros_(module.bias)
        elif isinstance(module, SinusoidalPositions):
            init.copy_(module.inv_freq, module.frequencies(module.demb))


class SinusoidalPositions(nn.Module):
    """Transformer-XL sinusoidal relative positions; `inv_freq` is a (saved) buffer as in the original."""

    def __init__(self, demb: int):
        super().__init__()
        self.demb = demb
        self.register_buffer("inv_freq", self.frequencies(demb))

    @staticmethod
    def frequencies(demb: int) -> torch.Tensor:
        return 1 / (10000 ** (torch.arange(0.0, demb, 2.0) / demb))

    def forward(self, pos_seq: torch.Tensor) -> torch.Tensor:
        sinusoid = torch.outer(self.inv_freq.to(pos_seq.dtype), pos_seq)
        return torch.cat([sinusoid.sin(), sinusoid.cos()], dim=0)[None]


class DeqTransformerModel(DeqTransformerPreTrainedModel):
    """Embedding, injection and the equilibrium layer; returns the equilibrium hidden states and new memory.

        model = DeqTransformerModel(DeqTransformerConfig(vocab_size=40, cutoffs=[10, 20, 30], d_model=32,
                                                         n_head=2, d_head=16, d_inner=64, mem_len=6))
        out = model(input_ids=torch.randint(0, 40, (2, 6)))
        out.last_hidden_state.shape, [m.shape for m in out.mems]
    """

    # a head checkpoint loaded as the base model: its head weights are dropped on purpose, not reported
    # (transformers matches these with re.search; any other unexpected key is still reported)
    _keys_to_ignore_on_load_unexpected = [r"^(crit)\."]

    def __init__(self, config: DeqTransformerConfig):
        super().__init__(config)
        self.word_emb = AdaptiveEmbedding(config)
        self.inject_conv = nn.Conv1d(config.d_model, 3 * config.d_model, kernel_size=1)
        self.pos_emb = SinusoidalPositions(config.d_model)
        self.func = DeqDecoderLayer(config)
        self._train_forward_count = 0
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.word_emb

    def solver_settings(self) -> SolverSettings:
        c = self.config
        return SolverSettings(
            f_solver=c.f_solver, b_solver=c.b_solver, f_max_iter=c.f_max_iter, b_max_iter=c.b_max_iter,
            f_tol=c.f_tol, b_tol=c.b_tol, stop_mode=c.stop_mode, backward=c.backward,
            phantom_steps=c.phantom_steps, phantom_tau=c.phantom_tau,
        )

    def _check(self, input_ids: torch.Tensor, mems) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(f"input_ids must be an integer (batch, length) tensor, got "
                             f"{getattr(input_ids, 'shape', type(input_ids))}")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {self.config.vocab_size}), got values from "
                             f"{int(input_ids.min())} to {int(input_ids.max())}")
        if mems is not None:
            z0, u0 = mems
            bsz, d = input_ids.shape[0], self.config.d_model
            if z0.shape[0] != bsz or z0.shape[2] != d or u0.shape[:2] != z0.shape[:2] or u0.shape[2] != 3 * d:
                raise ValueError(f"mems must be (states (batch, mem, {d}), injections (batch, mem, {3 * d})) for batch "
                                 f"{bsz}; got {tuple(z0.shape)} and {tuple(u0.shape)}")
            for name, value in (("states", z0), ("injections", u0)):
                if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    rows = (~torch.isfinite(value)).flatten(1).any(dim=1).nonzero().flatten().tolist()
                    raise ValueError(f"mems: the {name} hold NaN or infinite values for sample(s) {rows[:10]}; "
                                     "the equilibrium solve needs finite memory (pass the previous segment's mems)")

    def _set_dropout(self, bsz: int, qlen: int, klen: int, like: torch.Tensor) -> None:
        c, active = self.config, self.training
        attn, ff = self.func.dec_attn, self.func.pos_ff
        attn.attn_mask_drop = _variational_mask((bsz, c.n_head, qlen, klen), c.dropatt, like, active)
        attn.out_drop = _variational_mask((bsz, c.d_model, 1), c.dropout, like, active)
        ff.drop1 = _variational_mask((bsz, 1, c.d_inner), c.dropout, like, active)
        ff.drop2 = _variational_mask((bsz, 1, c.d_model), c.dropout, like, active)

    def equilibrium_function(self, input_ids: torch.Tensor, mems=None):
        """(f, z_init, context): f on flattened (batch, d_model * length) states for this segment;
        context holds the injection `u1s` (batch, 3 d_model, length), `us`, `z0` (channel-first)."""
        c = self.config
        bsz, qlen = input_ids.shape
        emb = self.word_emb(input_ids)
        emb_drop = _variational_mask((bsz, 1, c.d_model), c.dropout, emb, self.training)
        if emb_drop is not None:
            emb = emb * emb_drop
        u1s = self.inject_conv(emb.transpose(1, 2))
        if mems is None or mems[0].shape[1] == 0:
            z0 = u1s.new_zeros(bsz, c.d_model, 0)
            u0 = u1s.new_zeros(bsz, 3 * c.d_model, 0)
        else:
            z0, u0 = mems[0].transpose(1, 2).to(u1s.dtype), mems[1].transpose(1, 2).to(u1s.dtype)
        mlen = z0.shape[2]
        klen = mlen + qlen
        pos_emb = self.pos_emb(torch.arange(klen - 1, -1, -1.0, dtype=u1s.dtype, device=u1s.device))
        pos_drop = _variational_mask((1, c.d_model, 1), c.dropout, u1s, self.training)
        if pos_drop is not None:
            pos_emb = pos_emb * pos_drop
        us = torch.cat([u0, u1s], dim=2)
        self._set_dropout(bsz, qlen, klen, u1s)

        def f(z: torch.Tensor) -> torch.Tensor:
            return self.func(z.reshape(bsz, c.d_model, qlen), us, z0, pos_emb).reshape(bsz, -1)

        return f, u1s.new_zeros(bsz, c.d_model * qlen), {"u1s": u1s, "us": us, "z0": z0}

    def forward(
        self,
        input_ids: torch.Tensor,
        mems: tuple[torch.Tensor, torch.Tensor] | None = None,
        unrolled_steps: int | None = None,
        jac_probes: torch.Tensor | None = None,
        compute_jac_loss: bool | None = None,
        **kwargs,
    ) -> DeqTransformerModelOutput:
        """Solve for the segment's equilibrium given the memory of the previous segment (`mems`, or None)."""
        self._check(input_ids, mems)
        c = self.config
        bsz, qlen = input_ids.shape
        f, z_init, context = self.equilibrium_function(input_ids, mems)
        if compute_jac_loss is None:
            compute_jac_loss = self.training and c.jac_loss_weight > 0 and should_apply_jacobian_loss(c.jac_loss_freq)
        if self.training:
            self._train_forward_count += 1
        if unrolled_steps is None and c.backward == "unrolled":
            unrolled_steps = c.n_layer if self.training else c.eval_n_layer
        if unrolled_steps is not None:
            z = unrolled(f, z_init, unrolled_steps)
            with torch.no_grad():
                gz = f(z) - z
            out = DeqTransformerModelOutput(
                abs_residual=gz.norm(dim=1), rel_residual=gz.norm(dim=1) / ((gz + z).norm(dim=1) + 1e-9),
                solver_steps=torch.full((z.shape[0],), unrolled_steps, device=z.device),
                converged=torch.zeros(z.shape[0], dtype=torch.bool, device=z.device))
            jac = None
        else:
            result = solve_equilibrium(f, z_init, self.solver_settings(), track_grad=torch.is_grad_enabled(),
                                       jac_loss=compute_jac_loss, jac_probes=jac_probes)
            z, stats, jac = result.z, result.stats, result.jac_loss
            self.last_solve = result
            if not stats.converged:
                warnings.warn(stats.warning_text("DEQ-Transformer forward solve"), DeqConvergenceWarning, stacklevel=2)
            out = DeqTransformerModelOutput(
                abs_residual=stats.abs_residual, rel_residual=stats.rel_residual,
                solver_steps=torch.full((z.shape[0],), stats.nstep, device=z.device), converged=stats.residual < stats.tol)
        self._check_finite_solve(z)
        z = z.reshape(bsz, c.d_model, qlen)
        out.last_hidden_state = z.transpose(1, 2)
        out.jac_loss = jac
        out.mems = self._new_mems(z, context)
        return out

    def _check_finite_solve(self, z: torch.Tensor) -> None:
        """A NaN or infinite equilibrium would give NaN log-probabilities silently: refuse it, naming the
        samples and any non-finite weight (a corrupt checkpoint is the usual cause)."""
        bad = ~torch.isfinite(z.detach()).all(dim=1)
        if not bool(bad.any()):
            return
        samples = bad.nonzero().flatten().tolist()
        weights = [name for name, value in self.named_parameters() if not bool(torch.isfinite(value.detach()).all())]
        cause = (f"non-finite weights: {', '.join(weights[:5])}" if weights else
                 "the weights are finite: the solve diverged (check the mems and the solver settings)")
        raise ValueError(f"input_ids: the equilibrium solve produced NaN or infinite states for sample(s) "
                         f"{samples[:10]}; {cause}")

    def _new_mems(self, z: torch.Tensor, context: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.config.mem_len <= 0:
            return None
        with torch.no_grad():
            states = torch.cat([context["z0"], z.detach()], dim=2)
            end = states.shape[2]
            begin = max(0, end - self.config.mem_len)
            return (states[:, :, begin:end].transpose(1, 2).contiguous(),
                    context["us"][:, :, begin:end].detach().transpose(1, 2).contiguous())

    def jacobian_weight(self) -> float:
        return jacobian_loss_weight(self.config.jac_loss_weight, self._train_forward_count, self.config.jac_incremental)


class DeqTransformerForCausalLM(DeqTransformerPreTrainedModel):
    """DEQ-Transformer with the projected adaptive softmax, tied to the adaptive embedding as in the original.

    `labels` are the next-token targets aligned with `input_ids` (labels[:, t] follows input_ids[:, t], as the
    original's `target`; -100 is ignored), so a segment's last position is scored against the first token of
    the next segment.

        model = DeqTransformerForCausalLM(config)
        out = model(input_ids=ids[:, :-1], labels=ids[:, 1:])
        next_out = model(input_ids=more_ids, mems=out.mems)
    """

    def __init__(self, config: DeqTransformerConfig):
        super().__init__(config)
        self.transformer = DeqTransformerModel(config)
        self.crit = ProjectedAdaptiveLogSoftmax(config)
        tied = {}
        n_layers = len(self.crit.out_layers)
        for i in range(n_layers):
            tied[f"crit.out_layers.{i}.weight"] = f"transformer.word_emb.emb_layers.{i}.weight"
        for i, tie in enumerate(config.tie_projs):
            if not tie or i >= len(self.crit.out_projs):
                continue
            source = 0 if config.div_val == 1 else i
            if source < len(self.transformer.word_emb.emb_projs):
                tied[f"crit.out_projs.{i}.weight"] = f"transformer.word_emb.emb_projs.{source}.weight"
        self._tied_weights_keys = tied
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.transformer.word_emb

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        mems: tuple[torch.Tensor, torch.Tensor] | None = None,
        unrolled_steps: int | None = None,
        jac_probes: torch.Tensor | None = None,
        compute_jac_loss: bool | None = None,
        **kwargs,
    ) -> DeqTransformerLMOutput:
        """Log-probabilities for every position; with `labels`, per-token NLL and their mean as `loss`."""
        out = self.transformer(input_ids, mems=mems, unrolled_steps=unrolled_steps, jac_probes=jac_probes,
                               compute_jac_loss=compute_jac_loss)
        hidden = out.last_hidden_state
        bsz, qlen, d = hidden.shape
        log_probs = self.crit.log_prob(hidden.reshape(-1, d)).reshape(bsz, qlen, -1)
        loss = nll = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)} (next-token "
                                 f"targets), got {tuple(labels.shape)}")
            valid = labels != -100
            if ((labels[valid] < 0) | (labels[valid] >= self.config.vocab_size)).any():
                raise ValueError(f"labels must lie in [0, {self.config.vocab_size}) or be -100")
            safe = torch.where(valid, labels, torch.zeros_like(labels))
            nll = -log_probs.gather(2, safe[..., None])[..., 0] * valid
            loss = nll.sum() / valid.sum().clamp(min=1)
            if out.jac_loss is not None and self.training:
                loss = loss + self.transformer.jacobian_weight() * out.jac_loss
        return DeqTransformerLMOutput(
            loss=loss, logits=log_probs, nll=nll, mems=out.mems, last_hidden_state=hidden,
            abs_residual=out.abs_residual, rel_residual=out.rel_residual, solver_steps=out.solver_steps,
            converged=out.converged, jac_loss=out.jac_loss,
        )
