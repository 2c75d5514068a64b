"""DmpProcessor: SMILES strings -> the model's whole batch (token ids of the canonical SMILES + the graph).

It travels with every DMP folder (preprocessor_config.json + this file + the tokenizer files), so that
without zoo installed

    from transformers import AutoModelForSequenceClassification, AutoProcessor
    processor = AutoProcessor.from_pretrained("org/dmp-bbb", trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained("org/dmp-bbb", trust_remote_code=True)
    logits = model(**processor(["CCO", "c1ccccc1O"])).logits

works (RDKit is needed for the graph view).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin

from .featurization_dmp import DmpDataCollator, DmpFeaturizer
from .tokenization_dmp import DmpTokenizer

__all__ = ["DmpProcessor"]


class DmpProcessor(FeatureExtractionMixin):
    """Tokenizer (SMILES view) + featurizer (graph view) + collator in one callable.

        processor = DmpProcessor(DmpTokenizer())
        batch = processor(["CCO", "c1ccccc1O"])        # input_ids, attention_mask, atom_features, ...
        batch = processor(smiles, labels=[0, 1])       # adds labels
    """

    model_input_names = ["input_ids", "attention_mask", "atom_features", "edge_index", "bond_features", "atom_batch"]

    def __init__(self, tokenizer: DmpTokenizer | None = None, **kwargs: Any):
        kwargs.pop("processor_class", None)
        super().__init__(**kwargs)
        self.tokenizer = tokenizer if tokenizer is not None else DmpTokenizer()
        self.featurizer = DmpFeaturizer()

    def __call__(
        self, smiles: str | Sequence[str], labels: Sequence[Any] | None = None, errors: str = "raise",
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Featurize and batch molecules; `errors="skip"` leaves out unparsable SMILES and lists them in
        the result's `skipped` entry as (index, smiles, reason)."""
        if isinstance(smiles, str):
            smiles = [smiles]
        if return_tensors not in (None, "pt"):
            raise ValueError(f"DmpProcessor returns PyTorch tensors only, got return_tensors={return_tensors!r}")
        features = self.featurizer.encode_molecules(list(smiles), self.tokenizer, labels=labels, errors=errors)
        if not features:
            raise ValueError(f"none of the {len(smiles)} molecule(s) could be featurized: {features.skipped}")
        batch = DmpDataCollator(pad_token_id=self.tokenizer.pad_token_id)(features)
        result = BatchFeature(batch)
        if errors == "skip":
            result["skipped"] = features.skipped
        return result

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for name in ("tokenizer", "featurizer"):
            out.pop(name, None)
        auto_map = dict(out.get("auto_map") or {})
        if "AutoProcessor" in auto_map:
            auto_map.setdefault("AutoFeatureExtractor", auto_map["AutoProcessor"])
            out["auto_map"] = auto_map
        return out

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any):
        """preprocessor_config.json (with the remote-code auto_map) and the tokenizer files."""
        self.tokenizer.save_pretrained(save_directory)
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> DmpProcessor:
        tokenizer_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
        tokenizer = DmpTokenizer.from_pretrained(pretrained_model_name_or_path, **tokenizer_kwargs)
        kwargs.pop("trust_remote_code", None)
        config, kwargs = cls.get_feature_extractor_dict(pretrained_model_name_or_path, **kwargs)
        config = {k: v for k, v in config.items() if k not in ("feature_extractor_type", "auto_map", "processor_class")}
        return cls(tokenizer=tokenizer, **config)
