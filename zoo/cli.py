"""The `zoo` command: list, info, finetune, convert, demo, hub."""

from __future__ import annotations

import argparse
import importlib
import json
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
    import zoo  # noqa: F401  (registers families and their recipes)
    from zoo.finetune import RecipeOptions, finetune

    options = RecipeOptions(
        max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples, seed=args.seed,
        quick=args.quick,
    )
    if _dp_requested(args):
        return _cmd_finetune_private(args, options)
    metrics = finetune(
        args.variant, args.dataset, args.out, pretrained=args.pretrained, revision=args.revision,
        epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.lr, batch_size=args.batch_size,
        seed=args.seed, options=options, overwrite=args.overwrite, eval_steps=args.eval_steps,
    )
    print(json.dumps(metrics["eval"], indent=2))
    return 0


def _dp_requested(args: argparse.Namespace) -> bool:
    given = [flag for flag, value in (("--dp-delta", args.dp_delta), ("--max-grad-norm", args.max_grad_norm),
                                      ("--clipping", args.clipping), ("--dp-resume", args.dp_resume))
             if value is not None] + (["--dp-swap-batchnorm"] if args.dp_swap_batchnorm else [])
    if given and args.dp_epsilon is None:
        raise LookupError(f"{', '.join(given)} only apply to a differentially private run: add --dp-epsilon")
    return args.dp_epsilon is not None


def _cmd_finetune_private(args: argparse.Namespace, options) -> int:
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
        return 2
    spent = metrics["privacy"]
    print(json.dumps(metrics["eval"], indent=2))
    print(f"privacy: epsilon {spent['epsilon']:.3f} (target {spent['target_epsilon']:g}), delta {spent['delta']:g}, "
          f"{spent['accountant']} accountant, noise multiplier {spent['noise_multiplier']:.4f}, "
          f"sampling rate {spent['sample_rate']:.5f}, {spent['steps']} steps, {spent['clipping']} clipping")
    if spent["stopped"]:
        print(f"zoo finetune: {spent['stopped']}", file=sys.stderr)
    return 0


def _cmd_convert(args: argparse.Namespace, rest: list[str]) -> int:
    module_name = f"conversion.convert_{args.family}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        available = sorted(p.stem.removeprefix("convert_") for p in Path(__file__).resolve().parent.parent.glob(
            "conversion/convert_*.py"))
        print(f"zoo convert: no converter for family '{args.family}' (available: {', '.join(available)})",
              file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


def _cmd_demo(args: argparse.Namespace) -> int:
    import zoo  # noqa: F401
    from zoo import demo

    workdir = Path(args.workdir)
    if not demo.list_demos():
        print("zoo demo: no family has registered a demo yet", file=sys.stderr)
        return 1
    rows, url = demo.run_demos_on_hub(workdir, families=args.family or None, quick=not args.full,
                                      serve_forever=args.serve)
    if not args.serve:
        print(demo.format_rows(rows))
        print(f"browse: {url}  (serve it again: zoo hub serve --root {workdir / 'hub'} --port {url.rstrip('/').rsplit(':', 1)[1]})")
    return 0 if all(row.ok for row in rows) else 1


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
    p.add_argument("--pretrained", help="local folder or Hub repo id to start from")
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

    p = sub.add_parser("convert", help="convert an original checkpoint: zoo convert FAMILY ORIGINAL OUT_DIR ...")
    p.add_argument("family")

    p = sub.add_parser("demo", help="run every family's demo end to end")
    p.add_argument("--workdir", default="demo_output")
    p.add_argument("--family", action="append", help="only this family (repeatable)")
    p.add_argument("--full", action="store_true",
                   help="longer fine-tuning demos (tens of minutes on 2 CPU cores); the default takes a few minutes")
    p.add_argument("--serve", action="store_true", help="keep the local hub serving after the table (Ctrl-C)")

    sub.add_parser("hub", help="local Hub-compatible server: zoo hub serve [--root DIR] [--port N]")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] in ("convert", "hub"):
        args, rest = parser.parse_known_args(argv[:2] if argv[0] == "convert" else argv[:1])
        rest = argv[2:] if argv[0] == "convert" else argv[1:]
        return _cmd_convert(args, rest) if argv[0] == "convert" else _cmd_hub(rest)
    args = parser.parse_args(argv)
    handlers = {"list": _cmd_list, "info": _cmd_info, "recipes": _cmd_recipes, "finetune": _cmd_finetune,
                "demo": _cmd_demo}
    try:
        return handlers[args.command](args)
    except (LookupError, FileExistsError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
