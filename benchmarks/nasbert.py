"""CPU latency of ML.NET's NAS-BERT5-like subnet against a BERT-base-sized transformers BertModel.

Both models have random weights (latency does not depend on them). Prints a table and writes
benchmarks/nasbert.json and benchmarks/nasbert.png. The paper reports NAS-BERT5 ~23.6x faster than
BERT-base on a 12-core CPU; the ratio depends on the machine and the thread count.

    python benchmarks/nasbert.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import BertConfig, BertModel

import zoo

HERE = Path(__file__).resolve().parent
SEQ_LEN = 128
BATCHES = (1, 32)


def latency(model: torch.nn.Module, batch: int, repeats: int, vocab: int, pad_id: int) -> float:
    """Median seconds of a no-grad forward on [batch, SEQ_LEN] random ids (no padding)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(pad_id + 1, vocab, (batch, SEQ_LEN), generator=generator)
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nasbert = zoo.create_model("nasbert5_mlnet").eval()
    bert = BertModel(BertConfig(), add_pooling_layer=False).eval()  # BERT-base: 12 x 768, 110M with embeddings
    models = {"nasbert5_mlnet": (nasbert, nasbert.config.vocab_size, nasbert.config.pad_token_id),
              "bert_base": (bert, bert.config.vocab_size, bert.config.pad_token_id)}
    rows = {name: {"params": sum(p.numel() for p in m.parameters())} for name, (m, _, _) in models.items()}
    for name, (model, vocab, pad) in tqdm(models.items(), desc="models"):
        for batch in BATCHES:
            rows[name][f"latency_s_batch{batch}"] = latency(model, batch, args.repeats, vocab, pad)
    result = {
        "seq_len": SEQ_LEN, "threads": args.threads, "repeats": args.repeats, "cpu": platform.processor() or
        platform.machine(), "torch": torch.__version__, "models": rows,
        "speedup": {f"batch{b}": rows["bert_base"][f"latency_s_batch{b}"] / rows["nasbert5_mlnet"][f"latency_s_batch{b}"]
                    for b in BATCHES},
        "param_ratio": rows["bert_base"]["params"] / rows["nasbert5_mlnet"]["params"],
        "paper_speedup_nasbert5": 23.6,
    }
    print(f"{'model':<16}{'params':>14}" + "".join(f"{'batch ' + str(b) + ' (ms)':>18}" for b in BATCHES))
    for name, row in rows.items():
        print(f"{name:<16}{row['params']:>14,}" +
              "".join(f"{1000 * row[f'latency_s_batch{b}']:>18.1f}" for b in BATCHES))
    print("speedup (BERT-base / NAS-BERT5): " +
          ", ".join(f"{k} {v:.1f}x" for k, v in result["speedup"].items()) +
          f"; params {result['param_ratio']:.1f}x fewer; paper: 23.6x on a 12-core CPU")
    (HERE / "nasbert.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(result, HERE / "nasbert.png")
    return result


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(5.5, 3.2))
    width = 0.38
    for offset, name in ((-width / 2, "bert_base"), (width / 2, "nasbert5_mlnet")):
        values = [1000 * result["models"][name][f"latency_s_batch{b}"] for b in BATCHES]
        axis.bar([i + offset for i in range(len(BATCHES))], values, width, label=name)
    axis.set_xticks(range(len(BATCHES)), [f"batch {b}" for b in BATCHES])
    axis.set_yscale("log")
    axis.set_ylabel(f"ms per forward (seq {SEQ_LEN})")
    axis.set_title(f"CPU, {result['threads']} threads: " +
                   ", ".join(f"{v:.1f}x" for v in result["speedup"].values()))
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
