"""Loading the released DEQ-Transformer (wt103, 97.7M parameters) until every weight has been read.

Sides, alternating round by round after a warm-up (benchmarks/_protocol.py), files in the page cache:
1. zoo `from_pretrained` of the safetensors folder `save_pretrained` wrote, then every weight read
   (summed), so a lazily mapped file is paid for in full;
2. the original format (`torch.save` of the state dict, what a release ships) read by zoo's restricted
   reader (`conversion/safe_checkpoint.py`, the only way zoo opens a pickle), every tensor read;
3. the floor: `safetensors.torch.load_file` of the same weights into a dict, every tensor read.

Before timing, the tensors of the three sides are compared (each of the model's weights equal to the
same key in both dicts). The ratio reader / from_pretrained is the figure that must stay above 1: a
released name should load faster from zoo's own folder than from its original pickle.

    python benchmarks/loading.py --repeats 5
    python benchmarks/loading.py --quick          # a 10M-parameter configuration
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import _protocol as protocol  # noqa: E402

from conversion.safe_checkpoint import read_state_dict  # noqa: E402
from zoo.registry import model_info  # noqa: E402

VARIANT = "deq_transformer_wt103"


def read_all(tensors) -> float:
    """Sum of every element, so every page of every weight is touched."""
    total = 0.0
    for tensor in tensors:
        total += float(tensor.detach().double().sum()) if tensor.is_floating_point() else float(tensor.sum())
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a 10M-parameter configuration, 3 rounds")
    parser.add_argument("--out", type=Path, default=HERE / "loading")
    args = parser.parse_args(argv)
    threads = protocol.pin_threads(args.threads)
    entry = model_info(VARIANT)
    config_kwargs = dict(entry.config)
    if args.quick:
        config_kwargs.update(vocab_size=30000, cutoffs=[10000, 20000], tie_projs=[False, True, True], d_inner=4000)
        args.repeats = 3
    from safetensors.torch import load_file

    from zoo.models.deq import DeqTransformerConfig, DeqTransformerForCausalLM

    torch.manual_seed(0)
    model = DeqTransformerForCausalLM(DeqTransformerConfig(**config_kwargs)).eval()
    params = sum(p.numel() for p in model.parameters())
    env = protocol.environment(threads, variant=VARIANT, quick=args.quick, parameters=params)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model.save_pretrained(tmp / "zoo")
        state = model.state_dict()
        torch.save(state, tmp / "original.pt")
        reference = {name: tensor.clone() for name, tensor in state.items()}
        del model, state
        gc.collect()
        sizes = {"safetensors folder": sum(f.stat().st_size for f in (tmp / "zoo").iterdir()),
                 "torch.save file": (tmp / "original.pt").stat().st_size}
        weights = next((tmp / "zoo").glob("*.safetensors"))

        def from_pretrained():
            loaded = DeqTransformerForCausalLM.from_pretrained(tmp / "zoo")
            return read_all(loaded.state_dict().values()), loaded

        def reader():
            tensors = read_state_dict(tmp / "original.pt")
            return read_all(tensors.values()), tensors

        def floor():
            tensors = load_file(weights)
            return read_all(tensors.values()), tensors

        checks = {}
        loaded = from_pretrained()[1].state_dict()
        for name, (_, tensors) in (("from_pretrained", (None, loaded)), ("reader", reader()), ("load_file", floor())):
            missing = sorted(set(reference) - set(tensors)) if name != "load_file" else []
            differ = [k for k in reference if k in tensors and not torch.equal(reference[k], tensors[k])]
            checks[name] = {"keys": len(tensors), "missing": missing[:5], "differ": differ[:5],
                            "equal": not missing and not differ}
            if not checks[name]["equal"]:
                raise AssertionError(f"{name}: weights differ from the saved model ({checks[name]}); not timing")
        del loaded, reference
        gc.collect()
        sides = {"zoo from_pretrained": lambda: from_pretrained()[0],
                 "restricted reader, torch.save file": lambda: reader()[0],
                 "safetensors load_file (floor)": lambda: floor()[0]}
        times = protocol.alternate(sides, args.repeats, progress="loading rounds")
    protocol.finish(env)
    results = {"env": env, "parameters": params, "file_bytes": sizes, "checks": checks,
               "sides": protocol.summarize(times),
               "reader_over_from_pretrained": protocol.ratio(times, "restricted reader, torch.save file",
                                                             "zoo from_pretrained"),
               "from_pretrained_over_floor": protocol.ratio(times, "zoo from_pretrained",
                                                            "safetensors load_file (floor)")}
    protocol.save(results, args.out, panels=[
        {"title": f"{VARIANT}: load + read every weight ({params / 1e6:.1f}M parameters)", "ylabel": "seconds",
         "bars": results["sides"], "rotation": 12}])
    print(f"load average {env['load_average_start']} -> {env['load_average_end']}, {threads} thread(s)")
    for name, row in results["sides"].items():
        print(f"{name:>36}: {row['median_s']:.2f} s ({row['min_s']:.2f}..{row['max_s']:.2f})")
    for key in ("reader_over_from_pretrained", "from_pretrained_over_floor"):
        r = results[key]
        print(f"{r['of']}: {r['median']:.2f}x ({r['min']:.2f}..{r['max']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
