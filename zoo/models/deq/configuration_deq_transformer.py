"""Configuration of the DEQ-Transformer language model (Bai, Kolter & Koltun, NeurIPS 2019)."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

__all__ = ["DeqTransformerConfig"]


class DeqTransformerConfig(PretrainedConfig):
    """DEQ-Transformer hyper-parameters, named as the original `train_transformer.py` arguments.

    f is one relative-position Transformer-XL layer (`n_head` x `d_head` attention, `d_inner` feed-forward,
    post-LN or `pre_lnorm`) whose query/key/value receive the injected input; memory of `mem_len` past
    positions (equilibrium states and injections) carries across segments. The adaptive input embedding
    and adaptive softmax use `cutoffs` and `div_val`; `tie_word_embeddings` ties the softmax's output
    layers to the embedding tables and `tie_projs[i]` its projections. Solver settings as in MdeqConfig;
    `n_layer` / `eval_n_layer` are the unrolled depths in training / evaluation (backward="unrolled").

        config = DeqTransformerConfig(vocab_size=40, cutoffs=[10, 20, 30], d_model=32, n_head=2, d_head=16)
        model = DeqTransformerForCausalLM(config)
    """

    model_type = "deq_transformer"

    def __init__(
        self,
        vocab_size: int = 267735,
        d_model: int = 700,
        n_head: int = 10,
        d_head: int = 70,
        d_inner: int = 48000,
        d_embed: int | None = None,
        div_val: int = 4,
        cutoffs: list[int] | None = None,
        tie_projs: list[bool] | None = None,
        dropout: float = 0.05,
        dropatt: float = 0.0,
        pre_lnorm: bool = False,
        wnorm: bool = True,
        local_size: int = 0,
        tgt_len: int = 150,
        mem_len: int = 150,
        n_layer: int = 2,
        eval_n_layer: int = 24,
        f_solver: str = "anderson",
        b_solver: str = "broyden",
        f_max_iter: int = 30,
        b_max_iter: int = 40,
        f_tol: float = 1e-3,
        b_tol: float = 1e-3,
        stop_mode: str = "rel",
        backward: str = "ift",
        phantom_steps: int = 5,
        phantom_tau: float = 0.5,
        jac_loss_weight: float = 0.0,
        jac_loss_freq: float = 0.0,
        jac_incremental: int = 0,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ):
        kwargs.setdefault("auto_map", {
            "AutoConfig": "configuration_deq_transformer.DeqTransformerConfig",
            "AutoModel": "modeling_deq_transformer.DeqTransformerModel",
            "AutoModelForCausalLM": "modeling_deq_transformer.DeqTransformerForCausalLM",
        })
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_head = n_head
        self.d_head = d_head
        self.d_inner = d_inner
        self.d_embed = d_embed if d_embed is not None else d_model
        self.div_val = div_val
        self.cutoffs = list(cutoffs if cutoffs is not None else [20000, 40000, 200000])
        default_projs = [False] + [True] * len(self.cutoffs)
        self.tie_projs = list(tie_projs if tie_projs is not None else default_projs)
        self.dropout = dropout
        self.dropatt = dropatt
        self.pre_lnorm = pre_lnorm
        self.wnorm = wnorm
        self.local_size = local_size
        self.tgt_len = tgt_len
        self.mem_len = mem_len
        self.n_layer = n_layer
        self.eval_n_layer = eval_n_layer
        self.f_solver = f_solver
        self.b_solver = b_solver
        self.f_max_iter = f_max_iter
        self.b_max_iter = b_max_iter
        self.f_tol = f_tol
        self.b_tol = b_tol
        self.stop_mode = stop_mode
        self.backward = backward
        self.phantom_steps = phantom_steps
        self.phantom_tau = phantom_tau
        self.jac_loss_weight = jac_loss_weight
        self.jac_loss_freq = jac_loss_freq
        self.jac_incremental = jac_incremental
        if self.cutoffs != sorted(self.cutoffs) or (self.cutoffs and self.cutoffs[-1] >= vocab_size):
            raise ValueError(f"cutoffs {self.cutoffs} must be increasing and below vocab_size={vocab_size}")
        if len(self.tie_projs) != len(self.cutoffs) + 1:
            raise ValueError(f"tie_projs needs one entry per softmax cluster ({len(self.cutoffs) + 1}), "
                             f"got {self.tie_projs}")
        if n_head * d_head != d_model:
            raise ValueError(f"n_head * d_head = {n_head * d_head} must equal d_model = {d_model}: the injection is "
                             f"added to the query/key/value projections")

    @classmethod
    def from_original_args(cls, args: dict[str, Any], **overrides: Any) -> DeqTransformerConfig:
        """Build a config from `train_transformer.py` arguments (argparse names: n_token, d_model, n_head,
        d_head, d_inner, d_embed, div_val, cutoffs, tie_projs, pre_lnorm, wnorm, mem_len, ...). Without
        `cutoffs`/`tie_projs` the script's WikiText-103 values are used ([20000, 40000, 200000], tie all but
        the first projection); `not_tied` unties the softmax from the embedding.

            config = DeqTransformerConfig.from_original_args({"n_token": 267735, "d_model": 700, ...})
        """
        cutoffs = list(args.get("cutoffs", [20000, 40000, 200000]))
        values = dict(
            vocab_size=args["n_token"], d_model=args["d_model"], n_head=args["n_head"], d_head=args["d_head"],
            d_inner=args["d_inner"], d_embed=args.get("d_embed") or args["d_model"], div_val=args.get("div_val", 1),
            cutoffs=cutoffs, tie_projs=list(args.get("tie_projs", [False] + [True] * len(cutoffs))),
            dropout=args.get("dropout", 0.0), dropatt=args.get("dropatt", 0.0),
            pre_lnorm=args.get("pre_lnorm", False), wnorm=args.get("wnorm", False),
            local_size=args.get("local_size", 0), tgt_len=args.get("tgt_len", 150), mem_len=args.get("mem_len", 150),
            n_layer=args.get("n_layer", 2), eval_n_layer=args.get("eval_n_layer", 24),
            f_solver=args.get("f_solver", "anderson"), b_solver=args.get("b_solver") or args.get("f_solver", "anderson"),
            f_max_iter=args.get("f_thres", 30), b_max_iter=args.get("b_thres", 40),
            stop_mode=args.get("stop_mode", "rel"), jac_loss_weight=args.get("jac_loss_weight", 0.0),
            jac_loss_freq=args.get("jac_loss_freq", 0.0), jac_incremental=args.get("jac_incremental", 0),
            tie_word_embeddings=not args.get("not_tied", False),
        )
        values.update(overrides)
        return cls(**values)
