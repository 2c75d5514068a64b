"""The NAS-BERT reference cases (tests/fixtures/nasbert/<case>/meta.json): discovery and kind.

Kinds, from what meta.json declares: "tsm" (a TorchSharp `.tsm` file: `file` + `tensors`), "layout" (the released
key/shape tables: `checkpoints`), "encodings" (tokenizer encodings: `num_cases`). The shared `vocab/` folder is not a case.
"""

from __future__ import annotations

from tests.fixture_cases import Family, Unhandled


def classify(folder, meta):
    """A case's kind from what its meta.json declares; anything else fails, naming the fields it has."""
    if "tensors" in meta and "file" in meta:
        return "tsm"
    if "checkpoints" in meta:
        return "layout"
    if "num_cases" in meta:
        return "encodings"
    raise Unhandled(f"meta.json has none of the fields that make a NAS-BERT case ('file'+'tensors', "
                    f"'checkpoints', 'num_cases'); it has {sorted(meta)}")


FAMILY = Family("nasbert", classify, resources={"vocab"})


def first_tsm(with_head: bool):
    """A `.tsm` case's file: an encoder-only checkpoint, or a fine-tuned model stream with its head."""
    found = [c for c in FAMILY.all() if c.kind == "tsm" and ("head" in c.meta["original_config"]) == with_head]
    assert found, f"no NAS-BERT .tsm case {'with' if with_head else 'without'} a prediction head"
    return found[0].folder / found[0].meta["file"]


def first_layout():
    found = [c for c in FAMILY.all() if c.kind == "layout"]
    assert found, "no NAS-BERT layout case"
    return found[0].folder / found[0].meta["file"]
