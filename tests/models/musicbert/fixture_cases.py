"""The MusicBERT reference cases (tests/fixtures/musicbert/<case>/meta.json) and the facts the tests read from them.

A case's kind is its meta.json `kind`, matched exactly against KINDS. A model case must also name an architecture,
a fine-tuning task and criterion this module knows; everything else (sizes, heads, which outputs to compare,
inputs and their <mask> substitutions) is read from the case's files by the tests.
"""

from __future__ import annotations

from pathlib import Path

from tests.fixture_cases import Family, Unhandled, expect_one_of

# meta.json `kind` -> the short kind the tests ask for
KINDS = {
    "OctupleMIDI encoding (MIDI -> 8-tuples -> tokens -> ids) and decoding": "encoding",
    "MusicBERT forward parity (tiny random weights)": "model",
    "bar-level masking (OctupleMaskTokensDataset) reference": "masking",
}
# architectures registered by microsoft/muzic musicbert/musicbert/__init__.py
ARCHS = ["musicbert", "musicbert_base", "musicbert_large", "musicbert_medium", "musicbert_small", "musicbert_mini",
         "musicbert_tiny"]
# fairseq task / criterion of a fine-tuning run -> the problem type of the converted head
PROBLEM_TYPES = {
    "sentence_prediction": "single_label_classification",  # fairseq's own (muzic train_nsp.sh)
    "sentence_prediction_multilabel": "multi_label_classification",  # muzic's (train_genre.sh)
}
# what each entry of a model case's expected_outputs.safetensors is (see model_public/README.md)
MODEL_OUTPUTS = ["input_ids", "attention_mask_compound", "downsampled", "emb_layer_norm_out", "compound_hidden",
                 "features", "mlm_logits", "classification_logits"]
HEAD_PREFIX = "classification_heads."


def classify(folder: Path, meta: dict) -> str:
    kind = KINDS.get(expect_one_of(meta.get("kind"), KINDS, "kind"))
    if kind == "masking":
        expect_one_of(meta["mask_strategy"], ["bar"], "mask_strategy")  # zoo implements muzic's bar masking
    if kind == "model":
        expect_one_of(meta["arch"], ARCHS, "arch")
        finetune = meta.get("finetune")
        if finetune is not None:
            expect_one_of(finetune["task"], PROBLEM_TYPES, "fine-tuning task")
            expect_one_of(finetune["criterion"], PROBLEM_TYPES, "fine-tuning criterion")
            if finetune["criterion"] != finetune["task"]:
                raise Unhandled(f"criterion {finetune['criterion']!r} with task {finetune['task']!r}: the tests "
                                "handle a criterion only with its own task")
        for name, info in meta["checkpoints"].items():
            heads = head_names(info)
            if heads and finetune is None:
                raise Unhandled(f"checkpoint {name!r} has classification heads {heads} but meta.json has no "
                                "'finetune' section")
            if len(heads) > 1:
                raise Unhandled(f"checkpoint {name!r} has several classification heads {heads}")
            if heads and heads[0] != finetune["classification_head_name"]:
                raise Unhandled(f"checkpoint {name!r} has head {heads[0]!r}, meta.json's finetune names "
                                f"{finetune['classification_head_name']!r}")
    return kind


def head_names(checkpoint_info: dict) -> list[str]:
    """The classification heads of one checkpoint, from its state-dict key list in meta.json."""
    return sorted({key[len(HEAD_PREFIX):].split(".")[0] for key in checkpoint_info["model_state_dict"]
                   if key.startswith(HEAD_PREFIX)})


FAMILY = Family("musicbert", classify)


def cases(kind: str) -> list:
    return FAMILY.cases(kind)


def first(kind: str):
    """One case of a kind, for tests that need a real file as input rather than a parity check."""
    found = [c for c in FAMILY.all() if c.kind == kind]
    assert found, f"no musicbert case of kind {kind!r}"
    return found[0]
