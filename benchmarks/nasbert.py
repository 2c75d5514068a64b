"""CPU latency of ML.NET's NAS-BERT5-like subnet against a BERT-base-sized transformers BertModel.

Both models have random weights (latency does not depend on them). Prints a table and writes
benchmarks/nasbert.json and benchmarks/nasbert.png. The paper reports NAS-BERT5 ~23.6x faster than
BERT-base on a 12-core CPU; the ratio depends on the machine and the thread count.

    python benchmarks/nasbert.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import BertConfig, BertModel

import zoo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _protocol as protocol  # noqa: E402

SEQ_LEN = 128
BATCHES = (1, 32)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    threads = protocol.pin_threads(args.threads)
    env = protocol.environment(threads, seq_len=SEQ_LEN)
    torch.manual_seed(0)
    nasbert = zoo.create_model("nasbert5_mlnet").eval()
    bert = BertModel(BertConfig(), add_pooling_layer=False).eval()  # BERT-base: 12 x 768, 110M with embeddings
    models = {"nasbert5_mlnet": (nasbert, nasbert.config.vocab_size, nasbert.config.pad_token_id),
              "bert_base": (bert, bert.config.vocab_size, bert.config.pad_token_id)}
    result = {"env": env, "seq_len": SEQ_LEN, "params": {name: sum(p.numel() for p in m.parameters())
                                                         for name, (m, _, _) in models.items()},
              # two different networks on the same ids: the comparison is of cost, the outputs differ by design
              "outputs": "different models on the same input ids (cost comparison; outputs not comparable)",
              "paper_speedup_nasbert5": 23.6, "batches": {}}
    for batch in tqdm(BATCHES, desc="batch sizes"):
        sides = {}
        for name, (model, vocab, pad) in models.items():
            ids = torch.randint(pad + 1, min(vocab, nasbert.config.vocab_size), (batch, SEQ_LEN),
                                generator=torch.Generator().manual_seed(0))
            mask = torch.ones_like(ids)

            def run(model=model, ids=ids, mask=mask):
                with torch.inference_mode():
                    model(input_ids=ids, attention_mask=mask)
            sides[name] = run
        times = protocol.alternate(sides, args.repeats)
        result["batches"][f"batch{batch}"] = {"sides": protocol.summarize(times),
                                              "bert_over_nasbert": protocol.ratio(times, "bert_base", "nasbert5_mlnet")}
    protocol.finish(env)
    result["param_ratio"] = result["params"]["bert_base"] / result["params"]["nasbert5_mlnet"]
    protocol.save(result, HERE / "nasbert", panels=[
        {"title": f"batch {b}, seq {SEQ_LEN}", "ylabel": "seconds per forward", "bars": row["sides"], "log": True}
        for b, row in zip(BATCHES, result["batches"].values())])
    print(f"load average {env['load_average_start']} -> {env['load_average_end']}, {threads} thread(s)")
    for name, row in result["batches"].items():
        r = row["bert_over_nasbert"]
        print(f"{name}: BERT-base / NAS-BERT5 {r['median']:.1f}x ({r['min']:.1f}..{r['max']:.1f})")
    print(f"params {result['param_ratio']:.1f}x fewer; paper: 23.6x on a 12-core CPU")
    return result


if __name__ == "__main__":
    main()
