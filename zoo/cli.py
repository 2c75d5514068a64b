"""The `zoo` command: list, info, finetune, convert, demo, hub."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_list(args: argparse.Namespace) -> int:
    import zoo

    names = zoo.list_models(args.pattern, pretrained=True if args.pretrained else None, family=args.family)
    rows = [("name", "family", "task", "original checkpoint", "params")]
    for name in names:
        entry = zoo.model_info(name)
        original = entry.original.filename if entry.original else "-"
        params = f"{entry.params / 1e6:.1f}M" if entry.params else "-"
        rows.append((name, entry.family, entry.task, original, params))
    _print_table(rows)
    print(f"\n{len(names)} model(s)")
    return 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _cmd_recipes(args: argparse.Namespace) -> int:
    import zoo  # noqa: F401  (families register their recipes)
    from zoo.finetune import get_recipe, list_recipes

    rows = [("recipe", "family", "default variant", "data set")]
    for name in list_recipes(args.family):
        recipe = get_recipe(name)
        rows.append((name, recipe.family, recipe.variant, recipe.dataset.split(";")[0][:70]))
    _print_table(rows)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import zoo

    print(json.dumps(zoo.model_info(args.name).to_dict(), indent=2, default=str))
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from zoo.threads import fit_threads, quiet_pools

    quiet_pools()  # before torch starts its OpenMP pool
    import zoo  # noqa: F401  (registers families and their recipes)

    fit_threads()
    from zoo.finetune import RecipeOptions, finetune

    options = RecipeOptions(
        max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples, seed=args.seed,
        quick=args.quick,
    )
    if _dp_requested(args):
        code, metrics = _cmd_finetune_private(args, options)
        if code:
            return code
    else:
        metrics = finetune(
            args.variant, args.dataset, args.out, pretrained=args.pretrained, revision=args.revision,
            epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.lr, batch_size=args.batch_size,
            seed=args.seed, options=options, overwrite=args.overwrite, eval_steps=args.eval_steps,
        )
        print(json.dumps(metrics["eval"], indent=2))
    if args.push_to:
        from zoo.hub import write_card
        from zoo.publish import publish_folder

        write_card(args.out, variant=args.variant, repo_id=args.push_to)  # the card names the repo it goes to
        result = publish_folder(args.out, args.push_to, token=os.environ.get("HF_TOKEN"))
        print(f"{result.repo_id}: " + (f"commit {result.commit} tag {result.tag}" if result.commit else "unchanged")
              + (f" (base model {metrics.get('base_model')})" if metrics.get("base_model") else ""))
    return 0


def converter_families() -> list[str]:
    """Families with a converter (conversion/convert_<family>.py)."""
    return sorted(p.stem.removeprefix("convert_") for p in Path(__file__).resolve().parent.parent.glob(
        "conversion/convert_*.py"))


def _dp_requested(args: argparse.Namespace) -> bool:
    given = [flag for flag, value in (("--dp-delta", args.dp_delta), ("--max-grad-norm", args.max_grad_norm),
                                      ("--clipping", args.clipping), ("--dp-resume", args.dp_resume))
             if value is not None] + (["--dp-swap-batchnorm"] if args.dp_swap_batchnorm else [])
    if given and args.dp_epsilon is None:
        raise LookupError(f"{', '.join(given)} only apply to a differentially private run: add --dp-epsilon")
    return args.dp_epsilon is not None


def _cmd_finetune_private(args: argparse.Namespace, options) -> tuple[int, dict | None]:
    from zoo.private import PrivacyError, PrivacyOptions, finetune_private

    privacy = PrivacyOptions(
        epsilon=args.dp_epsilon, delta=1e-5 if args.dp_delta is None else args.dp_delta,
        max_grad_norm=1.0 if args.max_grad_norm is None else args.max_grad_norm,
        clipping=args.clipping or "flat", accountant=args.dp_accountant, swap_batchnorm=args.dp_swap_batchnorm,
        resume_from=args.dp_resume,
    )
    try:
        metrics = finetune_private(
            args.variant, args.dataset, args.out, privacy, pretrained=args.pretrained, revision=args.revision,
            epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.lr, batch_size=args.batch_size,
            seed=args.seed, options=options, overwrite=args.overwrite,
        )
    except PrivacyError as err:
        print(f"zoo finetune: error: {err}", file=sys.stderr)
        return 2, None
    spent = metrics["privacy"]
    print(json.dumps(metrics["eval"], indent=2))
    print(f"privacy: epsilon {spent['epsilon']:.3f} (target {spent['target_epsilon']:g}), delta {spent['delta']:g}, "
          f"{spent['accountant']} accountant, noise multiplier {spent['noise_multiplier']:.4f}, "
          f"sampling rate {spent['sample_rate']:.5f}, {spent['steps']} steps, {spent['clipping']} clipping")
    if spent["stopped"]:
        print(f"zoo finetune: {spent['stopped']}", file=sys.stderr)
    return 0, metrics


def _cmd_convert(args: argparse.Namespace, rest: list[str]) -> int:
    module_name = f"conversion.convert_{args.family}"
    if args.family not in converter_families():
        print(f"zoo convert: no converter for family '{args.family}' (available: {', '.join(converter_families())})",
              file=sys.stderr)
        return 2
    module = importlib.import_module(module_name)
    saved = sys.argv[0]
    sys.argv[0] = f"zoo convert {args.family}"  # the converter's own --help and usage name the command
    try:
        return int(module.main(rest) or 0)
    except SystemExit as done:  # argparse's --help / usage errors inside the converter
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 2)
    finally:
        sys.argv[0] = saved


def _cmd_demo(args: argparse.Namespace) -> int:
    from zoo.threads import quiet_pools

    quiet_pools()  # before torch starts its OpenMP pool
    import zoo  # noqa: F401
    from zoo import demo

    workdir = Path(args.workdir)
    if not demo.list_demos():
        print("zoo demo: no family has registered a demo yet", file=sys.stderr)
        return 1
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = Path(args.log) if args.log else workdir / "demo.log"
    log_file.write_text("")
    names = args.family or demo.list_demos()
    print(f"zoo demo: {len(names)} families ({'full' if args.full else 'quick; --full for the longer fine-tunes'}); "
          f"details in {log_file}", flush=True)
    rows, url = demo.run_demos_on_hub(workdir, families=args.family or None, quick=not args.full,
                                      serve_forever=args.serve, log_file=log_file)
    if not args.serve:
        print(demo.format_rows(rows))
        print(f"browse: {url}  (serve it again: zoo hub serve --root {workdir / 'hub'} --port {url.rstrip('/').rsplit(':', 1)[1]})")
    return 0 if all(row.ok for row in rows) else 1


def _cmd_pull(args: argparse.Namespace) -> int:
    from zoo.pull import OfflineError, PullError, VariantMismatchError, pull_result
    from zoo.resolvers import DownloadError

    try:
        result = pull_result(args.variant, file=args.file, revision=args.revision, from_original=args.from_original,
                             progress=not args.quiet)
    except (PullError, DownloadError, VariantMismatchError, OfflineError) as err:
        print(f"zoo pull: error: {err}", file=sys.stderr)
        return 2
    print(result.folder)
    print(f"source: {result.source}", file=sys.stderr)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from zoo.verification import VerificationError, verify

    try:
        result = verify(args.target, revision=args.revision, device=args.device, atol=args.atol)
    except VerificationError as err:
        print(f"zoo verify: error: {err}", file=sys.stderr)
        return 2
    original = result.record.get("original") or {}
    print(f"{args.target}: {result.record.get('architecture')}"
          + (f" from {original.get('file')} (sha256 {original.get('sha256')})" if original else ""))
    for name, diff in result.diffs.items():
        print(f"  {name}: max |difference| {diff:.3g}")
    verdict = "OK" if result.ok else "FAILED"
    print(f"max |difference| {result.max_abs_diff:.3g} (tolerance {result.atol:g}, {result.device}): {verdict}")
    return 0 if result.ok else 1


def _cmd_publish(args: argparse.Namespace) -> int:
    from zoo.publish import all_released, publish

    variants = list(args.variants) + (all_released() if args.all else [])
    if not variants:
        print("zoo publish: error: name variants or pass --all", file=sys.stderr)
        return 2
    files = dict(item.split("=", 1) for item in args.file if "=" in item)
    if len(files) != len(args.file):
        print("zoo publish: error: --file takes VARIANT=PATH", file=sys.stderr)
        return 2
    try:
        results = publish(list(dict.fromkeys(variants)), args.org, token=os.environ.get("HF_TOKEN"),
                          private=args.private, files=files)
    except Exception as err:  # noqa: BLE001 - report which variant failed and why, as one line
        print(f"zoo publish: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    for result in results:
        state = f"commit {result.commit} tag {result.tag}" if result.commit else "unchanged"
        print(f"{result.repo_id}\t{state}\tmax|diff| {result.max_abs_diff:.3g}")
    return 0

def _cmd_embed(rest: list[str]) -> int:
    from zoo.threads import fit_threads, quiet_pools

    quiet_pools()
    import zoo  # noqa: F401  (registers the families)
    from zoo.embed import main as embed_main

    fit_threads()
    return int(embed_main(rest) or 0)


def _cmd_featurize(rest: list[str]) -> int:
    from zoo.threads import quiet_pools

    quiet_pools()
    from zoo.inference import featurize_main

    return int(featurize_main(rest) or 0)


def _cmd_hub(rest: list[str]) -> int:
    module = importlib.import_module("zoo.hub_cli")
    return int(module.main(rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the registry as a table")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'graphormer*'")
    p.add_argument("--pretrained", action="store_true", help="only variants with published original weights")
    p.add_argument("--family")

    p = sub.add_parser("info", help="one registry entry as JSON")
    p.add_argument("name")

    p = sub.add_parser("recipes", help="the registered fine-tuning recipes")
    p.add_argument("--family")

    p = sub.add_parser("finetune", help="fine-tune a variant on a registered recipe")
    p.add_argument("variant")
    p.add_argument("--dataset", required=True, help="recipe name (see zoo.finetune.list_recipes())")
    p.add_argument("--out", required=True)
    p.add_argument("--pretrained", nargs="?", const=True,
                   help="local folder or Hub repo id to start from; alone: the variant's released weights (zoo pull)")
    p.add_argument("--push-to", metavar="ORG/NAME", help="publish the fine-tuned folder there (base model recorded)")
    p.add_argument("--revision")
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--eval-steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--max-eval-samples", type=int)
    p.add_argument("--quick", action="store_true", help="small data subset")
    p.add_argument("--overwrite", action="store_true")
    dp = p.add_argument_group("differential privacy (DP-SGD on Opacus; see zoo.private)")
    dp.add_argument("--dp-epsilon", type=float, help="train with DP-SGD to this epsilon (e.g. 8)")
    dp.add_argument("--dp-delta", type=float, help="delta of the guarantee (default 1e-5; must be below 1/n)")
    dp.add_argument("--max-grad-norm", type=float, help="per-example clipping bound C (default 1.0)")
    dp.add_argument("--clipping", choices=("flat", "per-layer", "adaptive"), help="clipping scheme (default flat)")
    dp.add_argument("--dp-accountant", choices=("rdp", "prv"), default="rdp")
    dp.add_argument("--dp-swap-batchnorm", action="store_true",
                    help="replace BatchNorm with GroupNorm where the family allows it (DMP's GNN)")
    dp.add_argument("--dp-resume", help="a previous DP run's folder: continue training and its accountant")

    families = converter_families()
    p = sub.add_parser("convert", help="convert an original checkpoint: zoo convert FAMILY ORIGINAL OUT_DIR ...",
                       description="Convert an original checkpoint into a zoo Hub folder. "
                                   "`zoo convert FAMILY --help` prints that converter's options.",
                       epilog=f"families: {', '.join(families)}")
    p.add_argument("family", help=f"one of: {', '.join(families)}")

    p = sub.add_parser("demo", help="run every family's demo end to end")
    p.add_argument("--workdir", default="demo_output")
    p.add_argument("--family", action="append", help="only this family (repeatable)")
    p.add_argument("--full", action="store_true",
                   help="longer fine-tuning demos (tens of minutes on 2 CPU cores); the default takes a few minutes")
    p.add_argument("--serve", action="store_true", help="keep the local hub serving after the table (Ctrl-C)")
    p.add_argument("--log", help="file for each family's detailed output (default: WORKDIR/demo.log)")

    sub.add_parser("embed", help="vectors per molecule / piece / sentence / image / utterance: "
                                 "zoo embed INPUT... --model VARIANT_OR_REPO [--per-item] [--output X.npy|X.parquet]")
    sub.add_parser("featurize", help="Graphormer items for a SMILES file on several processes, as Parquet shards: "
                                     "zoo featurize SMILES_FILE OUT_DIR [--num-proc N] [--shard-size N]")
    sub.add_parser("hub", help="local Hub-compatible server: zoo hub serve [--root DIR] [--port N]")

    p = sub.add_parser("pull", help="download (or reuse) a variant's converted weights; prints the folder")
    p.add_argument("variant")
    p.add_argument("--file", help="the original checkpoint you downloaded by hand (for links zoo cannot fetch)")
    p.add_argument("--revision", help="branch, tag or commit of the Hub repo")
    p.add_argument("--from-original", action="store_true",
                   help="convert the original release even when a converted Hub repo is configured")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("verify", help="rerun a folder's verification record; prints the max difference")
    p.add_argument("target", metavar="FOLDER_OR_REPO")
    p.add_argument("--revision")
    p.add_argument("--device", default="cpu")
    p.add_argument("--atol", type=float, help="tolerance (default: the record's)")

    p = sub.add_parser("publish", help="pull, convert, verify and upload released variants to a Hub org")
    p.add_argument("variants", nargs="*")
    p.add_argument("--org", required=True)
    p.add_argument("--all", action="store_true", help="every variant with an original release")
    p.add_argument("--file", action="append", default=[], metavar="VARIANT=PATH",
                   help="a release downloaded by hand (links zoo cannot fetch); repeatable")
    p.add_argument("--private", action="store_true")
    return parser


def _input_errors() -> type[Exception]:
    from zoo.finetune import FinetuneInputError

    return FinetuneInputError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "embed":
        return _cmd_embed(argv[1:])
    if argv and argv[0] == "featurize":
        return _cmd_featurize(argv[1:])
    parser = build_parser()
    if argv and argv[0] in ("convert", "hub"):
        args, rest = parser.parse_known_args(argv[:2] if argv[0] == "convert" else argv[:1])
        rest = argv[2:] if argv[0] == "convert" else argv[1:]
        return _cmd_convert(args, rest) if argv[0] == "convert" else _cmd_hub(rest)
    args = parser.parse_args(argv)
    handlers = {"list": _cmd_list, "info": _cmd_info, "recipes": _cmd_recipes, "finetune": _cmd_finetune,
                "demo": _cmd_demo, "pull": _cmd_pull, "verify": _cmd_verify, "publish": _cmd_publish}
    try:
        return handlers[args.command](args)
    except (LookupError, FileExistsError, FileNotFoundError, _input_errors()) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
