"""zoo: Graphormer, DMP, MusicBERT, NAS-BERT, PriorGrad and DEQ/MDEQ as Hugging Face models.

    import zoo
    from transformers import AutoModel
    model = AutoModel.from_pretrained("path/or/repo-id")   # any zoo folder; zoo registered the Auto classes
"""

from . import catalog  # noqa: E402,F401,I001  (registers every family with the Auto classes: data at the bottom)
from . import recipes  # noqa: E402,F401,I001  (recipes and demos build on the catalogue, never the reverse)
from .auto import Family, families, get_family, register_family
from .registry import (
    ModelEntry,
    OriginalCheckpoint,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    register_model,
)

from .embed import embed  # noqa: E402  (zoo.embed(inputs, model=...); the module stays zoo.embed in sys.modules)

__version__ = "0.1.0"

__all__ = [
    "Family", "ModelEntry", "embed", "OriginalCheckpoint", "UnknownModelError", "create_model", "families", "get_family",
    "list_models", "model_info", "register_family", "register_model",
]
