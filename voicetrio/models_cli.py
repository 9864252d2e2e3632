"""``voicetrio models list|install|verify``: the model catalog from the command line.

``list`` shows every catalog model and whether its file is here (hashing
nothing); ``install [NAME...]`` makes models present and verified (without a
name: the LLM this configuration runs, ``STREAM_LLM_MODEL`` or the
catalog's default, which is what ``./scripts/setup`` installs); ``verify
[NAME...]`` hashes files now (without a name: every model that is present)
and exits 1 if any differs from the catalog or a named one is missing.
Errors are one line with their code (``MODEL_LOAD_FAIL``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from voicetrio.core.model_catalog import CATALOG, DEFAULT_LLM, CatalogError, Entry, entry

#: The exit code when a model is missing or refused.
EXIT_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="models_command", required=True)
    listing = actions.add_parser("list", help="the catalog, and which models are installed")
    listing.add_argument("--json", action="store_true", help="every field, as JSON")
    install = actions.add_parser(
        "install",
        help="fetch (pinned wheels), join and verify models; without NAME, the configured LLM "
        "(STREAM_LLM_MODEL, default " + DEFAULT_LLM + ")",
    )
    install.add_argument("names", nargs="*", metavar="NAME")
    install.add_argument(
        "--no-download",
        action="store_true",
        help="only join parts from installed packages; fail rather than download",
    )
    verify = actions.add_parser(
        "verify", help="hash models now; without NAME, every installed model"
    )
    verify.add_argument("names", nargs="*", metavar="NAME")


def _fail(out: TextIO, code: str, message: str) -> int:
    print(f"voicetrio models: {code}: {' '.join(message.split())}", file=out, flush=True)
    return EXIT_FAILED


def _entries(names: Sequence[str]) -> list[Entry]:
    return [entry(name) for name in dict.fromkeys(names)]


def run(
    args: argparse.Namespace,
    *,
    root: Path | None = None,
    environ: dict[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one ``models`` command; ``root`` (the cache) and ``environ`` are for tests."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    from voicetrio.engines.base import ModelLoadError
    from voicetrio.engines.catalog import cache_root

    env = dict(os.environ) if environ is None else environ
    base = root if root is not None else cache_root(env)
    try:
        if args.models_command == "list":
            return _list(base, args.json, out)
        if args.models_command == "install":
            return _install(base, args.names, not args.no_download, env, out, err)
        return _verify(base, args.names, out, err)
    except CatalogError as exc:
        return _fail(err, "UNKNOWN_MODEL", str(exc))
    except ModelLoadError as exc:
        return _fail(err, exc.code.value, str(exc))
    except OSError as exc:
        # The cache folder cannot be written (permissions, a full disk).
        return _fail(err, "MODEL_LOAD_FAIL", f"{exc}; set STREAM_MODEL_CACHE to a writable folder")


def _list(root: Path, as_json: bool, out: TextIO) -> int:
    from voicetrio.engines.catalog import model_path, state

    rows: list[dict[str, Any]] = []
    for model in CATALOG.values():
        rows.append(
            {
                "name": model.name,
                "kind": model.kind,
                "title": model.title,
                "default": model.name == DEFAULT_LLM,
                "size": model.size,
                "sha256": model.sha256,
                "state": state(model, root),
                "path": str(model_path(model, root)),
                "layout": model.layout,
                "packages": [
                    {
                        "requirement": f"{p.distribution}=={p.version}",
                        "wheel_sha256": p.wheel_sha256,
                        "member": p.member,
                        "size": p.size,
                    }
                    for p in model.parts
                ],
                "licence": model.licence,
                "provenance": model.provenance,
                "installed_by": model.installed_by,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2), file=out)
        return 0
    print(f"{'NAME':<17} {'KIND':<8} {'SIZE':>8}  {'STATE':<9} MODEL", file=out)
    for row in rows:
        mark = " (default)" if row["default"] else ""
        print(
            f"{row['name']:<17} {row['kind']:<8} {row['size'] / 1e6:>5.0f} MB  "
            f"{row['state']:<9} {row['title']}{mark}",
            file=out,
        )
    print(
        f"cache: {root}; `voicetrio models list --json` gives packages, sha256, licence "
        "and provenance",
        file=out,
    )
    return 0


def _install(
    root: Path,
    names: Sequence[str],
    download: bool,
    environ: dict[str, str],
    out: TextIO,
    err: TextIO,
) -> int:
    from voicetrio.core.model_catalog import parse_llm_setting
    from voicetrio.engines.catalog import install, resolve_llm

    if not names:
        setting = environ.get("STREAM_LLM_MODEL", "").strip() or DEFAULT_LLM
        choice = parse_llm_setting(setting)
        if choice.entry is None:
            # The user's own GGUF: nothing to fetch, only to check it is one.
            own = resolve_llm(setting)
            print(f"{setting}: a file of yours, {own.path}; nothing to install", file=out)
            return 0
        names = [choice.entry.name]
    say: Callable[[str], None] = lambda line: print(f"  {line}", file=err, flush=True)  # noqa: E731
    for model in _entries(names):
        done = install(model, root=root, download=download, say=say)
        verb = {"present": "already installed", "joined": "joined", "downloaded": "installed"}
        print(
            f"{model.name}: {verb[done.action]}, sha256 verified: {done.path}", file=out, flush=True
        )
    return 0


def _verify(root: Path, names: Sequence[str], out: TextIO, err: TextIO) -> int:
    from voicetrio.engines.catalog import state, verify

    models = (
        _entries(names) if names else [m for m in CATALOG.values() if state(m, root) != "absent"]
    )
    if not models:
        print("no catalog model is installed", file=out)
        return 0
    failed = False
    for model in models:
        verdict = verify(model, root=root)
        if verdict.status == "ok":
            print(f"ok        {model.name}: {verdict.path}", file=out, flush=True)
            continue
        failed = True
        label = "MISMATCH" if verdict.status == "mismatch" else "missing"
        print(f"{label:<9} {model.name}: {' '.join(verdict.detail.split())}", file=out, flush=True)
    if failed:
        print("voicetrio models: MODEL_LOAD_FAIL: a model is missing or refused", file=err)
        return EXIT_FAILED
    return 0


__all__ = ["EXIT_FAILED", "add_arguments", "run"]
