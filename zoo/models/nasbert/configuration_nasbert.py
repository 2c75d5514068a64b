"""NAS-BERT configuration: the search space (op table, block rules) and one subnet's `arches`.

    from zoo.models.nasbert import NasBertConfig
    config = NasBertConfig(arches=[9, 11, 7, 0, 0, 0] * 4)   # op indices into the ML.NET op table
    config.block_hidden_sizes                                # [192, 192, 192, 192]
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

__all__ = ["NasBertConfig", "NasBertOp", "build_op_table", "block_hidden_sizes"]

# ML.NET (SearchSpace.cs): six ops per width, width = WIDTHS[i // 6], kind = KINDS[i % 6].
MLNET_WIDTHS = (128, 192, 384, 512, 768)
# The paper's table (Xu et al. 2021, Table 1): one identity, then five ops per width.
PAPER_WIDTHS = (128, 192, 256, 384, 512)
_MLNET_KINDS = (("identity", 0), ("mha", 0), ("ffn", 0), ("sepconv", 3), ("sepconv", 5), ("sepconv", 7))
_PAPER_KINDS = (("mha", 0), ("ffn", 0), ("sepconv", 3), ("sepconv", 5), ("sepconv", 7))
OP_TABLES = ("mlnet", "paper")


@dataclass(frozen=True)
class NasBertOp:
    """One candidate operation: kind ("identity", "mha", "ffn", "sepconv"), width and conv kernel."""

    kind: str
    width: int  # 0 for the paper table's width-less identity
    kernel: int = 0

    @property
    def name(self) -> str:
        if self.kind == "identity":
            return "identity"
        suffix = str(self.kernel) if self.kind == "sepconv" else ""
        return f"{self.kind}{suffix}@{self.width}"


def build_op_table(op_table: str = "mlnet", widths: list[int] | tuple[int, ...] | None = None) -> list[NasBertOp]:
    """The candidate ops by index. `widths` replaces the table's widths (e.g. a tiny search space for tests).

        build_op_table("mlnet")[9]   # NasBertOp(kind='sepconv', width=192, kernel=3)
    """
    if op_table == "mlnet":
        widths = tuple(widths or MLNET_WIDTHS)
        return [NasBertOp(kind, width, kernel)
                for width in widths for kind, kernel in _MLNET_KINDS]
    if op_table == "paper":
        widths = tuple(widths or PAPER_WIDTHS)
        return [NasBertOp("identity", 0)] + [NasBertOp(kind, width, kernel)
                                              for width in widths for kind, kernel in _PAPER_KINDS]
    raise ValueError(f"unknown op_table '{op_table}'; expected one of {OP_TABLES}")


def block_hidden_sizes(
    arches: list[int], ops: list[NasBertOp], num_blocks: int, default_hidden_size: int
) -> list[int]:
    """The width of each block under NAS-BERT's block rules; raises ValueError naming a violation.

    All non-identity ops of a block share one width; an all-identity block takes the previous block's
    width, or `default_hidden_size` when it is the first block (ML.NET: 768).
    """
    if len(arches) % num_blocks:
        raise ValueError(f"arches has {len(arches)} layers, not a multiple of {num_blocks} blocks")
    for layer, index in enumerate(arches):
        if not isinstance(index, int) or not 0 <= index < len(ops):
            raise ValueError(f"arches[{layer}] = {index!r} is not an op index in 0..{len(ops) - 1}")
    per_block = len(arches) // num_blocks
    sizes: list[int] = []
    for block in range(num_blocks):
        layer_ops = [ops[i] for i in arches[block * per_block:(block + 1) * per_block]]
        widths = sorted({op.width for op in layer_ops if op.kind != "identity"})
        if len(widths) > 1:
            names = ", ".join(op.name for op in layer_ops)
            raise ValueError(
                f"block {block} (layers {block * per_block}..{(block + 1) * per_block - 1}) mixes widths "
                f"{widths} ({names}); all non-identity ops of a block must share one width"
            )
        sizes.append(widths[0] if widths else (sizes[-1] if sizes else default_hidden_size))
    return sizes


class NasBertConfig(PretrainedConfig):
    """Configuration of a NAS-BERT subnet (and of the supernet it is drawn from).

    `arches` lists one op index per layer into the op table (`op_table="mlnet"`, ML.NET's 30 ops, or
    `"paper"`, the paper's 26); `op_widths` replaces the table's widths (tiny search spaces for tests).
    Layers form `num_blocks` equal blocks; the widths follow from `arches` (see `block_hidden_sizes`).

        config = NasBertConfig(embedding_size=64, arches=[9, 11, 7, 0, 0, 0] * 4)
        config.hidden_size   # 192: the width of the last block, what heads see
    """

    model_type = "nasbert"

    def __init__(
        self,
        vocab_size: int = 50265,
        embedding_size: int = 64,
        max_position_embeddings: int = 512,
        arches: list[int] | None = None,
        num_blocks: int = 4,
        op_table: str = "mlnet",
        op_widths: list[int] | None = None,
        attention_head_dim: int = 64,
        ffn_ratio: int = 4,
        default_hidden_size: int = 768,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        pad_token_id: int = 1,
        bos_token_id: int = 0,
        eos_token_id: int = 2,
        **kwargs,
    ):
        kwargs.setdefault("auto_map", {
            "AutoConfig": "configuration_nasbert.NasBertConfig",
            "AutoModel": "modeling_nasbert.NasBertModel",
            "AutoModelForSequenceClassification": "modeling_nasbert.NasBertForSequenceClassification",
            "AutoModelForTokenClassification": "modeling_nasbert.NasBertForTokenClassification",
        })
        kwargs.pop("hidden_size", None)  # derived from arches; present in saved config.json files
        kwargs.pop("block_hidden_sizes", None)
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.max_position_embeddings = max_position_embeddings
        self.arches = list(arches) if arches is not None else [9, 11, 7, 0, 0, 0, 11, 11, 7, 0, 0, 0,
                                                                 9, 7, 11, 0, 0, 0, 10, 7, 9, 0, 0, 0]
        self.num_blocks = num_blocks
        self.op_table = op_table
        self.op_widths = list(op_widths) if op_widths is not None else None
        self.attention_head_dim = attention_head_dim
        self.ffn_ratio = ffn_ratio
        self.default_hidden_size = default_hidden_size
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        ops = self.ops
        for op in ops:
            if op.kind == "mha" and op.width % attention_head_dim:
                raise ValueError(f"op {op.name}: width {op.width} is not a multiple of attention_head_dim "
                                 f"{attention_head_dim}")
        self.block_hidden_sizes = block_hidden_sizes(self.arches, ops, num_blocks, default_hidden_size)
        self.hidden_size = self.block_hidden_sizes[-1]

    @property
    def num_hidden_layers(self) -> int:
        return len(self.arches)

    @property
    def ops(self) -> list[NasBertOp]:
        """The op table this config indexes into."""
        return build_op_table(self.op_table, self.op_widths)

    def layer_ops(self) -> list[NasBertOp]:
        """The op of each layer of this subnet."""
        ops = self.ops
        return [ops[i] for i in self.arches]

    def to_dict(self):
        output = super().to_dict()
        output.pop("block_hidden_sizes", None)
        output.pop("hidden_size", None)
        return output
