"""Food-101 as its authors distribute it: the archive `food-101.tar.gz` and the folder it holds,
`food-101/images/<class>/<id>.jpg` with `food-101/meta/{classes,train,test}.txt` (also how
Kaggle mounts its copies under `/kaggle/input`).

The folder gives the official split: train = the images of `meta/train.txt`, test = exactly
those of `meta/test.txt`, classes in the order of `meta/classes.txt`. The archive is checked
against the official MD5, extracted once into a cache folder, and then read as the folder.
Every problem is one `Food101FilesError` raised before anything is written or trained.
No TensorFlow here: `splits` turns the file lists into datasets.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lab5_utils.data.photos import image_problem
from lab5_utils.files import file_lock, official_root


class Food101FilesError(RuntimeError):
    """The official folder or archive cannot be used (the message says why and what to do)."""


@dataclass(frozen=True)
class ArchiveSpec:
    """What an archive must be: its file name, size in bytes and MD5."""

    name: str
    size: int
    md5: str


# The archive published at data.vision.ee.ethz.ch/cvl/food-101.tar.gz (size as tfds records it).
# Tests put a miniature archive's own size and MD5 here (monkeypatch): the check itself is the same.
OFFICIAL = ArchiveSpec("food-101.tar.gz", 4_996_278_331, "85eeb15f3717b99a5da872d97d918f87")
META = ("classes.txt", "train.txt", "test.txt")
SPACE_MARGIN = 1.1  # extracted size / archive size: JPEGs do not compress, files take whole blocks
DEFAULT_CACHE = "~/.cache/lab5"
_MARKER = ".lab5-archive.json"  # in an extracted folder: which archive it came from
_CHUNK = 8 << 20


@dataclass
class OfficialFiles:
    """The official split of a folder: (path, label) pairs of train and test, and the skips."""

    root: Path
    class_names: list[str]
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    skipped: list[str]

    def per_class_share(self, pairs: list[tuple[str, int]], share: float) -> list[tuple[str, int]]:
        """The first `share` of each class's train.txt images (at least one) kept from `pairs`."""
        if share >= 1.0:
            return pairs
        listed = Counter(label for _, label in self.train)
        kept: Counter = Counter()
        out = []
        for path, label in pairs:
            if kept[label] < max(1, round(share * listed[label])):
                kept[label] += 1
                out.append((path, label))
        return out


# --- the folder ---------------------------------------------------------------------------------
def list_official(root: str | Path, strict: bool = False) -> OfficialFiles:
    """The official split of the folder `root` (see `official_root`). Damaged or non-image files
    are skipped as "path (reason)", or are an error with `strict`."""
    root = Path(root)
    meta, images = root / "meta", root / "images"
    if not images.is_dir():
        raise Food101FilesError(
            f"{root} has meta/ but no images/ folder: it is not a complete Food-101 folder. "
            "Point dataset at the folder that holds both (food-101/), or extract the archive again.")
    absent = [name for name in META if not (meta / name).is_file()]
    if absent:
        raise Food101FilesError(f"{meta} lacks {', '.join(absent)}: the official layout needs "
                                f"{', '.join(META)}. Extract the archive again.")
    classes = _lines(meta / "classes.txt")
    no_folder = [name for name in classes if not (images / name).is_dir()]
    if no_folder:
        raise Food101FilesError(
            f"{len(no_folder)} class(es) of meta/classes.txt have no folder in {images}: "
            f"{_first(no_folder)}. Extract the archive again, or remove them from classes.txt.")
    labels = {name: i for i, name in enumerate(classes)}
    listed = {split: _lines(meta / f"{split}.txt") for split in ("train", "test")}
    both = sorted(set(listed["train"]) & set(listed["test"]))
    if both:
        raise Food101FilesError(
            f"{len(both)} image(s) are listed in both meta/train.txt and meta/test.txt: "
            f"{_first(both)}. A test image must never be trained on: fix the lists.")
    pairs, missing, skipped = {}, [], []
    for split, entries in listed.items():
        unknown = [e for e in entries if e.split("/", 1)[0] not in labels]
        if unknown:
            raise Food101FilesError(
                f"{len(unknown)} image(s) of meta/{split}.txt belong to no class of "
                f"meta/classes.txt: {_first(unknown)}.")
        pairs[split] = []
        for entry in entries:
            path = images / f"{entry}.jpg"
            try:
                problem = image_problem(path)
            except FileNotFoundError:
                missing.append(f"{split}.txt: {entry}")
                continue
            if problem is None:
                pairs[split].append((str(path), labels[entry.split("/", 1)[0]]))
            elif strict:
                raise Food101FilesError(
                    f"{path}: {problem}. strict_data is on: remove or replace the file, or set "
                    "strict_data=false to skip such files with a warning.")
            else:
                skipped.append(f"{path} ({problem})")
    if missing:
        raise Food101FilesError(
            f"{len(missing)} image(s) listed in {meta} are missing from {images}: "
            f"{_first(missing)}. Extract the archive again (or copy the missing files).")
    return OfficialFiles(root, classes, pairs["train"], pairs["test"], skipped)


def _lines(path: Path) -> list[str]:
    """The non-empty lines of a meta file, without a `.jpg` the list may carry."""
    return [ln.strip().removesuffix(".jpg") for ln in path.read_text().splitlines() if ln.strip()]


def _first(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


# --- the archive --------------------------------------------------------------------------------
def extracted(archive: str | Path, cache: str | Path | None = None,
              say: Callable[[str], None] = print) -> Path:
    """The official folder of `archive`, extracted into `cache` (default `DEFAULT_CACHE`) the
    first time: the archive is checked (gzip, size, MD5 against `OFFICIAL`) and the cache
    folder (writable, free space) before anything is written. Later calls find the extracted
    folder by the archive's path, size and modification time, without reading it again."""
    archive = Path(archive).expanduser().resolve()
    cache = Path(cache or DEFAULT_CACHE).expanduser()
    if not archive.is_file():
        raise Food101FilesError(f"archive {str(archive)!r} does not exist or is not a file.")
    stamp = {"archive": str(archive), "size": archive.stat().st_size,
             "mtime": archive.stat().st_mtime}
    done = _extracted_before(cache, stamp)
    if done is not None:
        return done
    check_header(archive)  # the cheap checks first: a wrong file writes nothing
    check_cache(cache, int(stamp["size"] * SPACE_MARGIN))  # before reading gigabytes
    with file_lock(cache / ".lab5-extract.lock"):  # notebooks of one report start side by side
        done = _extracted_before(cache, stamp)  # another process extracted it meanwhile
        if done is not None:
            return done
        for stale in cache.glob(".food101-*.partial-*"):  # what a killed extraction left
            shutil.rmtree(stale, ignore_errors=True)
        return _extract(archive, cache, stamp, say)


def _extract(archive: Path, cache: Path, stamp: dict, say: Callable[[str], None]) -> Path:
    """Verify `archive`, extract it into a hidden folder of `cache`, then rename that folder."""
    md5 = verify_archive(archive, OFFICIAL, say)
    target = cache / f"food101-{md5[:10]}"
    partial = cache / f".{target.name}.partial-{os.getpid()}"
    start = time.monotonic()
    try:
        with archive.open("rb") as raw, tarfile.open(
                fileobj=_Reading(raw, stamp["size"], f"extracting {archive.name}", say),
                mode="r|gz") as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python 3.10.12+
            tar.extractall(partial, **safe)
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise Food101FilesError(f"{archive} could not be extracted ({type(err).__name__}: {err}): "
                                "it is damaged or not a tar.gz archive.") from None
    root = official_root(partial)
    if root is None:
        shutil.rmtree(partial, ignore_errors=True)
        raise Food101FilesError(f"{archive} holds no food-101/meta/classes.txt: it is not the "
                                "Food-101 archive.")
    (partial / _MARKER).write_text(json.dumps({**stamp, "md5": md5, "folder": root.name}))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    say(f"[lab5] extracted {archive.name} into {target} in {time.monotonic() - start:.1f} s")
    return target / root.name


def _extracted_before(cache: Path, stamp: dict) -> Path | None:
    """The folder an earlier `extracted` made from this very archive file, if any."""
    for marker in sorted(cache.glob(f"food101-*/{_MARKER}")) if cache.is_dir() else []:
        try:
            kept = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if all(kept.get(k) == v for k, v in stamp.items()) and kept.get("md5") == OFFICIAL.md5:
            return marker.parent / kept["folder"]
    return None


def check_header(archive: Path, spec: ArchiveSpec | None = None) -> None:
    """Raise `Food101FilesError` unless `archive` starts as a gzip file and has `spec`'s size
    (default `OFFICIAL`)."""
    spec = spec or OFFICIAL
    size = archive.stat().st_size
    with archive.open("rb") as f:
        magic = f.read(2)
    if magic != b"\x1f\x8b":
        raise Food101FilesError(f"{archive} is not a tar.gz archive (no gzip header). Expected "
                                f"{spec.name}, the Food-101 archive ({spec.size:,} bytes).")
    if size < spec.size:
        raise Food101FilesError(
            f"{archive} is truncated: {size:,} bytes of the {spec.size:,} of {spec.name}. Copy or "
            "download it again (an interrupted copy or a full disk leaves such a file).")
    if size > spec.size:
        raise Food101FilesError(f"{archive} is not {spec.name}: {size:,} bytes, where the archive "
                                f"has {spec.size:,}. Copy or download the archive again.")


def verify_archive(archive: Path, spec: ArchiveSpec | None = None,
                   say: Callable[[str], None] = print) -> str:
    """The archive's MD5 once it passes `check_header` and has `spec`'s MD5 (default
    `OFFICIAL`); otherwise a `Food101FilesError` that says which check failed."""
    spec = spec or OFFICIAL
    check_header(archive, spec)
    size = archive.stat().st_size
    digest = hashlib.md5()
    with archive.open("rb") as raw:
        for chunk in _chunks(_Reading(raw, size, f"checking {archive.name} (MD5)", say)):
            digest.update(chunk)
    md5 = digest.hexdigest()
    if md5 != spec.md5:
        raise Food101FilesError(
            f"{archive} has the wrong checksum: MD5 {md5}, size {size:,} bytes; {spec.name} has "
            f"MD5 {spec.md5} and {spec.size:,} bytes. It is damaged or another file: copy or "
            "download it again.")
    return md5


def check_cache(cache: Path, needed: int) -> None:
    """Raise `Food101FilesError` unless `cache` can be made, written and has `needed` bytes free."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache):  # a unique name: loads may run side by side
            pass
    except OSError as err:
        raise Food101FilesError(
            f"cache folder {str(cache)!r} is not writable ({err.strerror or err}): set data_cache "
            "to a folder on a local disk with room for the extracted images.") from None
    free = shutil.disk_usage(cache).free
    if free < needed:
        raise Food101FilesError(
            f"cache folder {str(cache)!r} has {_size(free)} free; extracting the archive needs "
            f"about {_size(needed)} (its size plus 10 %). Free {_size(needed - free)} there, or "
            "set data_cache to a folder on a disk with more room.")


def tfds_manual_dir(archive: str | Path, cache: str | Path | None = None) -> Path:
    """A folder holding the archive as `food-101.tar.gz`, for tfds' `DownloadConfig(manual_dir)`:
    the archive's own folder, or a symlink to it in `cache` when it has another name."""
    path = Path(archive).expanduser().resolve()
    if path.is_dir():
        path = path / OFFICIAL.name
    if not path.is_file():
        raise Food101FilesError(f"archive {str(path)!r} does not exist: tfds:PATH needs the file "
                                f"{OFFICIAL.name} or the folder that holds it.")
    if path.name == OFFICIAL.name:
        return path.parent
    manual = Path(cache or DEFAULT_CACHE).expanduser() / "tfds_manual"
    check_cache(manual, 0)
    link = manual / OFFICIAL.name
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(path)
    return manual


class _Reading:
    """A file object that prints one progress line at most every `seconds` while it is read."""

    def __init__(self, raw, total: int, what: str, say: Callable[[str], None],
                 seconds: float = 10.0) -> None:
        self.raw, self.total, self.what, self.say, self.seconds = raw, total, what, say, seconds
        self.done, self.start = 0, time.monotonic()
        self.last = self.start
        say(f"[lab5] {what}: {_size(total)}")

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.done += len(data)
        now = time.monotonic()
        if now - self.last >= self.seconds:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            self.say(f"[lab5] {self.what}: {100 * self.done / max(self.total, 1):.0f} % "
                     f"({_size(self.done)} of {_size(self.total)}, {rate / 1e6:.0f} MB/s)")
        return data


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _chunks(reader: _Reading) -> Iterator[bytes]:
    while chunk := reader.read(_CHUNK):
        yield chunk
