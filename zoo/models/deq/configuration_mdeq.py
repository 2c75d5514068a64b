"""Configuration of the multiscale deep equilibrium model (MDEQ, Bai, Koltun & Kolter, NeurIPS 2020)."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

__all__ = ["MdeqConfig"]


class MdeqConfig(PretrainedConfig):
    """MDEQ hyper-parameters, named after the original yaml keys (lower-case), plus the solver settings.

    Architecture: `num_channels`/`num_blocks`/`big_kernels` per resolution branch (NUM_BRANCHES =
    len(num_channels)), `expansion_factor` (inner width of each residual block), `num_groups`
    (GroupNorm groups), `wnorm`, `dropout` (variational: one mask per forward), `downsample_times`
    (stride-2 convolutions in the stem), `*_gn_affine`, the classification head (`head_channels`,
    `final_chansize`, `num_labels`).
    Equilibrium: `f_solver`/`b_solver` ("anderson", "broyden", "fixed_point_iteration"),
    `f_max_iter`/`b_max_iter` (F_THRES/B_THRES), `f_tol`/`b_tol`, `stop_mode` ("rel"/"abs"), `backward`
    ("ift", "phantom", "shine" (needs f_solver="broyden"), "unrolled"), `phantom_steps`/`phantom_tau`, `num_layers` (steps of the unrolled
    mode), and the Jacobian regulariser (`jac_loss_weight`, `jac_loss_freq`, `jac_incremental`).

        config = MdeqConfig(num_channels=[8, 16], head_channels=[4, 8], final_chansize=32, num_labels=10)
        model = MdeqForImageClassification(config)
        logits = model(pixel_values=torch.randn(2, 3, 16, 16)).logits
    """

    model_type = "mdeq"

    def __init__(
        self,
        num_input_channels: int = 3,
        num_channels: list[int] | None = None,
        num_blocks: list[int] | None = None,
        big_kernels: list[int] | None = None,
        expansion_factor: int = 5,
        num_groups: int = 8,
        wnorm: bool = True,
        dropout: float = 0.0,
        downsample_times: int = 0,
        block_gn_affine: bool = True,
        fuse_gn_affine: bool = True,
        post_gn_affine: bool = False,
        head_channels: list[int] | None = None,
        final_chansize: int = 200,
        image_size: list[int] | None = None,
        bn_momentum: float = 0.1,
        num_layers: int = 10,
        f_solver: str = "broyden",
        b_solver: str = "broyden",
        f_max_iter: int = 18,
        b_max_iter: int = 20,
        f_tol: float = 1e-3,
        b_tol: float = 1e-3,
        stop_mode: str = "rel",
        backward: str = "ift",
        phantom_steps: int = 5,
        phantom_tau: float = 0.5,
        jac_loss_weight: float = 0.0,
        jac_loss_freq: float = 0.0,
        jac_incremental: int = 0,
        **kwargs: Any,
    ):
        kwargs.setdefault("auto_map", {
            "AutoConfig": "configuration_mdeq.MdeqConfig",
            "AutoModel": "modeling_mdeq.MdeqModel",
            "AutoModelForImageClassification": "modeling_mdeq.MdeqForImageClassification",
        })
        if "id2label" not in kwargs:
            kwargs.setdefault("num_labels", 10)
        super().__init__(**kwargs)
        self.num_input_channels = num_input_channels
        self.num_channels = list(num_channels or [24, 24])
        self.num_blocks = list(num_blocks or [1] * len(self.num_channels))
        self.big_kernels = list(big_kernels or [0] * len(self.num_channels))
        self.expansion_factor = expansion_factor
        self.num_groups = num_groups
        self.wnorm = wnorm
        self.dropout = dropout
        self.downsample_times = downsample_times
        self.block_gn_affine = block_gn_affine
        self.fuse_gn_affine = fuse_gn_affine
        self.post_gn_affine = post_gn_affine
        self.head_channels = list(head_channels or [8, 16])
        self.final_chansize = final_chansize
        self.image_size = list(image_size or [32, 32])
        self.bn_momentum = bn_momentum
        self.num_layers = num_layers
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
        n = len(self.num_channels)
        for name in ("num_blocks", "big_kernels", "head_channels"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"MdeqConfig.{name} has {len(getattr(self, name))} entries but num_channels has "
                                 f"{n} (one per resolution branch)")

    @property
    def num_branches(self) -> int:
        return len(self.num_channels)

    @classmethod
    def from_original_yaml(cls, cfg: dict[str, Any], **overrides: Any) -> MdeqConfig:
        """Build a config from an original MDEQ yaml (v2 `DEQ` section, or the v1 schema with
        F_THRES/B_THRES under MODEL and no BIG_KERNELS / *_GN_AFFINE keys, where every GroupNorm is affine).

            config = MdeqConfig.from_original_yaml(yaml.safe_load(open("cls_mdeq_TINY.yaml")))
        """
        model = cfg["MODEL"]
        stage = model["EXTRA"]["FULL_STAGE"]
        deq = cfg.get("DEQ", {})
        v1 = "DEQ" not in cfg
        loss = cfg.get("LOSS", {})
        n = stage["NUM_BRANCHES"]
        if len(stage["NUM_CHANNELS"]) != n:
            raise ValueError(f"yaml NUM_BRANCHES={n} but NUM_CHANNELS has {len(stage['NUM_CHANNELS'])} entries")
        values = dict(
            num_channels=stage["NUM_CHANNELS"], num_blocks=stage["NUM_BLOCKS"],
            big_kernels=stage.get("BIG_KERNELS", [0] * n), expansion_factor=model.get("EXPANSION_FACTOR", 5),
            num_groups=model.get("NUM_GROUPS", 4), wnorm=model.get("WNORM", False), dropout=model.get("DROPOUT", 0.0),
            downsample_times=model.get("DOWNSAMPLE_TIMES", 2),
            block_gn_affine=model.get("BLOCK_GN_AFFINE", True), fuse_gn_affine=model.get("FUSE_GN_AFFINE", True),
            post_gn_affine=True if v1 else model.get("POST_GN_AFFINE", True),
            head_channels=stage["HEAD_CHANNELS"], final_chansize=stage["FINAL_CHANSIZE"],
            num_labels=model["NUM_CLASSES"], image_size=list(model.get("IMAGE_SIZE", [32, 32])),
            num_layers=model.get("NUM_LAYERS", 5),
            f_solver=deq.get("F_SOLVER", "broyden"), b_solver=deq.get("B_SOLVER", "broyden"),
            f_max_iter=(model if v1 else deq).get("F_THRES", 30), b_max_iter=(model if v1 else deq).get("B_THRES", 40),
            stop_mode=deq.get("STOP_MODE", "abs"),
            jac_loss_weight=loss.get("JAC_LOSS_WEIGHT", 0.0), jac_loss_freq=loss.get("JAC_LOSS_FREQ", 0.0),
            jac_incremental=loss.get("JAC_INCREMENTAL", 0) if loss.get("JAC_INCREMENTAL", 0) < 10**8 else 0,
        )
        values.update(overrides)
        return cls(**values)
