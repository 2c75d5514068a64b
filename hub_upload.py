#!/usr/bin/env python
"""Publish a converted or fine-tuned zoo folder to the Hugging Face Hub (or a local `zoo hub serve`).

    python hub_upload.py FOLDER --repo-id ORG/NAME [--revision BRANCH] [--tag TAG] [--private] [--dry-run]

The folder is validated first (config loads through the Auto classes, weights are safetensors and load
strictly, no pickle files, the card has complete metadata, remote-code files are present when auto_map
names them). Then the repo is created if needed and everything goes up in ONE commit, optionally tagged.
Prints the commit and the URL. Endpoint and token come from HF_ENDPOINT and HF_TOKEN, as for every Hub
tool: with HF_ENDPOINT=http://127.0.0.1:N it publishes to a local `zoo hub serve`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub_upload.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder with config.json, model.safetensors, README.md, ...")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME")
    parser.add_argument("--revision", help="branch to commit to (created from main if missing; default main)")
    parser.add_argument("--tag", help="tag the new commit")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", action="store_true", help="validate and list the files; send nothing")
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (registers extra families, e.g. tests.toy)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repo_id.count("/") != 1:
        print(f"hub_upload.py: error: --repo-id must be ORG/NAME, got {args.repo_id!r}", file=sys.stderr)
        return 2
    import zoo  # noqa: F401  (registers every family with the Auto classes)
    from zoo.hub import FolderValidationError, UploadConflictError, upload_folder

    for module in args.imports:
        importlib.import_module(module)
    try:
        result = upload_folder(
            args.folder, args.repo_id, revision=args.revision, tag=args.tag, private=args.private,
            commit_message=args.message, token=os.environ.get("HF_TOKEN"), dry_run=args.dry_run,
        )
    except FolderValidationError as err:
        print(f"hub_upload.py: {err}", file=sys.stderr)
        return 1
    except UploadConflictError as err:  # exit status 3: another writer won; safe to retry
        print(f"hub_upload.py: {err}", file=sys.stderr)
        return 3
    except Exception as err:  # noqa: BLE001 - the Hub's error message is what the user needs
        print(f"hub_upload.py: upload failed, nothing was committed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    total = sum(row["size"] for row in result.files)
    if result.dry_run:
        print(f"dry run: {args.folder} is valid; would commit {len(result.files)} files ({total} bytes) "
              f"to {result.repo_id}@{result.revision}" + (f" and tag {result.tag}" if result.tag else ""))
        for row in result.files:
            print(f"  {row['name']}  {row['size']}  {row['sha256']}")
        return 0
    print(f"commit: {result.commit}")
    print(f"url: {result.url}" + ("" if result.revision == "main" else f"?revision={result.revision}"))
    if result.tag:
        print(f"tag: {result.tag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
