"""DEQ family: MDEQ variants (the original yaml files) and the DEQ-Transformer (WikiText-103)."""

from __future__ import annotations

from typing import Any

import torch

from zoo.auto import register_family
from zoo.models.deq import (
    DeqTransformerConfig,
    DeqTransformerForCausalLM,
    DeqTransformerModel,
    DeqTransformerTokenizer,
    MdeqConfig,
    MdeqForImageClassification,
    MdeqImageProcessor,
    MdeqModel,
)
from zoo.registry import ModelEntry, OriginalCheckpoint, register_model

MDEQ_PAPER = "Multiscale Deep Equilibrium Models (Bai, Koltun & Kolter, NeurIPS 2020)"
MDEQ_PAPER_URL = "https://arxiv.org/abs/2006.08656"
SHAPES_NOTE = "parameter count of the original model built from the yaml (reference_state_dict_shapes.json)"


def mdeq_dummy_inputs(config: MdeqConfig, model_class: type) -> dict[str, Any]:
    height, width = config.image_size
    generator = torch.Generator().manual_seed(0)
    inputs: dict[str, Any] = {
        "pixel_values": torch.randn(2, config.num_input_channels, height, width, generator=generator)}
    if model_class is MdeqForImageClassification:
        inputs["labels"] = torch.tensor([0, config.num_labels - 1])
    return inputs


register_family(
    "mdeq", MdeqConfig, MdeqModel, {"AutoModelForImageClassification": MdeqForImageClassification},
    processors={"AutoImageProcessor": MdeqImageProcessor}, dummy_inputs=mdeq_dummy_inputs,
)

_TINY_TEST = {"num_channels": [8, 16], "head_channels": [4, 8], "final_chansize": 16, "expansion_factor": 2,
              "num_groups": 4, "image_size": [16, 16], "f_max_iter": 6, "b_max_iter": 6}
_FOUR_BRANCH_TEST = {"num_channels": [8, 16, 16, 16], "head_channels": [2, 4, 4, 4], "final_chansize": 16,
                     "expansion_factor": 1, "num_groups": 4, "image_size": [32, 32], "f_max_iter": 4,
                     "b_max_iter": 4, "num_labels": 10}

_CIFAR = dict(num_groups=8, wnorm=True, downsample_times=0, expansion_factor=5, post_gn_affine=False,
              image_size=[32, 32], f_solver="broyden", b_solver="broyden", stop_mode="rel", f_max_iter=18,
              b_max_iter=20, num_labels=10, num_layers=10)
_IMAGENET = dict(num_groups=8, wnorm=True, downsample_times=2, expansion_factor=5, image_size=[224, 224],
                 f_solver="broyden", b_solver="broyden", stop_mode="abs", f_max_iter=26, b_max_iter=27,
                 num_labels=1000, final_chansize=2048, num_channels=None)

_VARIANTS = [
    dict(name="mdeq_tiny_cifar10", yaml="cifar/cls_mdeq_TINY.yaml", params=158890,
         config={**_CIFAR, "num_channels": [24, 24], "head_channels": [8, 16], "final_chansize": 200,
                 "dropout": 0.25}, test=_TINY_TEST, original=None, metrics={}),
    dict(name="mdeq_large_cifar10", yaml="cifar/cls_mdeq_LARGE.yaml", params=11097438,
         config={**_CIFAR, "num_channels": [32, 64, 128, 256], "head_channels": [14, 28, 56, 112],
                 "final_chansize": 1680, "dropout": 0.3}, test=_FOUR_BRANCH_TEST, original=None,
         metrics={}),
    dict(name="mdeq_small_imagenet", yaml="imagenet/cls_mdeq_SMALL.yaml", params=16808936,
         config={**_IMAGENET, "num_channels": [32, 64, 128, 256], "head_channels": [24, 48, 96, 192],
                 "post_gn_affine": True, "num_layers": 5}, test=_FOUR_BRANCH_TEST,
         original=OriginalCheckpoint(
             filename="MDEQ_Small_Cls.pkl", url="https://drive.google.com/file/d/12ANsUdJJ3_qb5nfiBVPOoON2GQ2v4W1g",
             format="mdeq-v1-state-dict", size_bytes=None, sha256=None, dtype="float32",
             notes="v1 (locuslab/mdeq) layout with fullstage_copy.* / deq.func.* duplicates; the converter drops "
                   "them after checking they equal the real weights. The published file name is not known; zoo calls it by this name."),
         metrics={"imagenet_top1_accuracy_min": 75.0}),
    dict(name="mdeq_large_imagenet", yaml="imagenet/cls_mdeq_LARGE.yaml", params=67063624,
         config={**_IMAGENET, "num_channels": [80, 160, 320, 640], "head_channels": [32, 64, 128, 256],
                 "post_gn_affine": True, "num_layers": 4}, test=_FOUR_BRANCH_TEST, original=None, metrics={}),
    dict(name="mdeq_xl_imagenet", yaml="imagenet/cls_mdeq_XL.yaml", params=90463280,
         config={**_IMAGENET, "num_channels": [88, 176, 352, 704], "head_channels": [32, 64, 128, 256],
                 "post_gn_affine": True, "num_layers": 4, "expansion_factor": 6}, test=_FOUR_BRANCH_TEST,
         original=OriginalCheckpoint(
             filename="MDEQ_XL_Cls.pkl", url="https://drive.google.com/file/d/1vcWnlb5yUXE-3VHiuVJdfRZVeyx0U9-W",
             format="mdeq-v1-state-dict", size_bytes=None, sha256=None, dtype="float32",
             notes="v1 layout (affine post-fusion GroupNorms, hence post_gn_affine=True although the v2 yaml says "
                   "false). The MDEQ-Vision README links file id 1MBUFBOAAI8m2eccNbHePrukpOiAzPbji for MDEQ-XL."),
         metrics={}),
]

for _v in _VARIANTS:
    register_model(ModelEntry(
        name=_v["name"], family="mdeq", task="image-classification", architecture="MdeqForImageClassification",
        config={k: v for k, v in _v["config"].items() if v is not None},
        description=f"MDEQ from locuslab/deq MDEQ-Vision/experiments/{_v['yaml']}; {SHAPES_NOTE}: {_v['params']:,}",
        original=_v["original"], converter="conversion/convert_deq.py", card="cards/mdeq.md",
        paper=MDEQ_PAPER, paper_url=MDEQ_PAPER_URL, license="mit", metrics=_v["metrics"], params=_v["params"],
        recipe="mdeq_digits", test_config=_v["test"],
    ))


def deq_transformer_dummy_inputs(config: DeqTransformerConfig, model_class: type) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (2, min(config.tgt_len, 8) + 1), generator=generator)
    inputs: dict[str, Any] = {"input_ids": ids[:, :-1]}
    if model_class is DeqTransformerForCausalLM:
        inputs["labels"] = ids[:, 1:]
    return inputs


register_family(
    "deq_transformer", DeqTransformerConfig, DeqTransformerModel, {"AutoModelForCausalLM": DeqTransformerForCausalLM},
    processors={"AutoTokenizer": DeqTransformerTokenizer}, dummy_inputs=deq_transformer_dummy_inputs,
)

register_model(ModelEntry(
    name="deq_transformer_wt103", family="deq_transformer", task="text-generation",
    architecture="DeqTransformerForCausalLM",
    config=dict(vocab_size=267735, d_model=700, n_head=10, d_head=70, d_inner=48000, d_embed=700, div_val=4,
                cutoffs=[20000, 40000, 200000], tie_projs=[False, True, True, True], dropout=0.05, dropatt=0.0,
                pre_lnorm=False, wnorm=True, local_size=0, tgt_len=150, mem_len=150, n_layer=2, eval_n_layer=24,
                f_solver="anderson", b_solver="broyden", stop_mode="rel", f_max_iter=30, b_max_iter=40),
    description="DEQ-Transformer (post-LN, weight-normalised) from locuslab/deq DEQ-Sequence/wt103_deq_transformer.sh; "
                "97,851,488 parameters in the original count (which counts the three storage-shared softmax "
                "projections separately; zoo ties them: 97,691,888)",
    original=OriginalCheckpoint(
        filename="deq_transformer_wt103.pkl", url="https://drive.google.com/file/d/1lZx_sHt0-1gJVgXx90LDRizq3k-ZI0SW",
        format="deq-transformer-state-dict", size_bytes=None, sha256=None, dtype="float32",
        notes="torch.save(DEQTransformerLM.state_dict()); tied tensors appear under both names. The published file "
              "name is not known; zoo calls it by this name."),
    converter="conversion/convert_deq.py", card="cards/deq_transformer.md",
    paper="Deep Equilibrium Models (Bai, Kolter & Koltun, NeurIPS 2019)", paper_url="https://arxiv.org/abs/1909.01377",
    license="mit", metrics={"wikitext103_test_perplexity": 23.1}, params=97851488,
    test_config=dict(vocab_size=60, d_model=16, n_head=2, d_head=8, d_inner=32, d_embed=16, cutoffs=[20, 40],
                     tie_projs=[False, True, True], tgt_len=6, mem_len=6, f_max_iter=4, b_max_iter=4),
))

