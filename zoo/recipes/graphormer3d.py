"""The Graphormer-3D demo: convert the bundled original-format fixture and predict on a slab + adsorbate."""

from __future__ import annotations

from pathlib import Path

from zoo.demo import DemoResult, register_demo
from zoo.models.graphormer3d import example_system

DEMO_CASE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "graphormer3d" / "public_3d"


def graphormer3d_demo(workdir: Path, quick: bool) -> DemoResult:
    """Convert the bundled original-format fixture checkpoint and predict on a hand-built slab + adsorbate."""
    from conversion.convert_graphormer3d import convert

    if not (DEMO_CASE / "checkpoint.pt").is_file():
        raise FileNotFoundError(
            f"the demo converts the bundled fixture {DEMO_CASE}; run it from a source checkout"
        )
    folder = convert(
        DEMO_CASE / "checkpoint.pt",
        Path(workdir) / "graphormer3d_public_3d",
        overwrite=True,
        reference_dir=DEMO_CASE,
    )
    import json

    check = json.loads((folder / "conversion.json").read_text())["check"]

    def predict(path_or_repo_id: str) -> str:
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(path_or_repo_id).eval()
        featurizer = AutoFeatureExtractor.from_pretrained(path_or_repo_id)
        system = example_system()
        batch = featurizer([system])
        with torch.no_grad():
            out = model(**batch)
        n_images = int((~batch["real_mask"] & batch["atom_ids"].ne(0)).sum())
        shift = out.delta_pos[0, len(system["tags"]) - 1].tolist()
        return (
            f"{system['name']} ({len(system['tags'])} atoms + {n_images} periodic images): relaxed energy "
            f"{out.energy_ev.item():+.3f} eV, adsorbate O shift ({shift[0]:+.2f}, {shift[1]:+.2f}, "
            f"{shift[2]:+.2f}) Å [tiny random-weight fixture model]"
        )

    summary = {
        "max_abs_energy_error": check["max_abs_energy_error"],
        "max_abs_node_error": check["max_abs_node_error"],
    }
    return DemoResult(folder=folder, predict=predict, summary=summary)


register_demo("graphormer3d", graphormer3d_demo)
