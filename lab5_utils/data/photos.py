"""Photo files as users have them: which formats the decode path reads (by file signature),
damage visible in a file's first and last bytes, a hint for formats it cannot read, and the
EXIF orientation a phone stores a JPEG with.

No TensorFlow here: `splits` (folder listing) and `predict` both check files with these functions,
so training and prediction accept the same files.
"""

from __future__ import annotations

from pathlib import Path

# What `pipeline.decode` reads: JPEG itself, the rest with tf.io.decode_image (GIF: first frame)
DECODABLE = "JPEG, PNG, GIF, BMP or WebP"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp"}
# Photo formats TensorFlow does not decode, by suffix and by signature (ISO-BMFF brands, TIFF)
UNSUPPORTED_SUFFIXES = {
    ".heic": "HEIC/HEIF", ".heif": "HEIC/HEIF", ".hif": "HEIC/HEIF", ".avif": "AVIF",
    ".tif": "TIFF", ".tiff": "TIFF", ".jxl": "JPEG XL", ".jp2": "JPEG 2000", ".dng": "raw (DNG)",
    ".cr2": "raw (CR2)", ".cr3": "raw (CR3)", ".nef": "raw (NEF)", ".arw": "raw (ARW)",
    ".orf": "raw (ORF)", ".rw2": "raw (RW2)", ".raf": "raw (RAF)", ".psd": "Photoshop",
}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
CONVERT_HINT = (
    "convert them to JPEG first (macOS Preview: File > Export; Python: Pillow, with the "
    "pillow-heif package for HEIC); iPhones save JPEG with Settings > Camera > Formats > "
    "Most Compatible"
)
ORIENTATION_TAG = 0x0112


def image_problem(path: Path) -> str | None:
    """Why `path` cannot be an image for lab5, or None. Reads only the first and last bytes:
    damage in between is found when decoding (skipped then, or an error with strict_data)."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(32)
        f.seek(max(0, size - 4096))  # room for bytes some cameras append after the image
        tail = f.read()
    kind = _signature(head)
    if kind == "JPEG":
        return None if b"\xff\xd9" in tail else "truncated JPEG: no end-of-image marker"
    if kind == "PNG":
        return None if b"IEND" in tail[-32:] else "truncated PNG: no IEND chunk"
    if kind == "GIF":
        return None if b";" in tail[-8:] else "truncated GIF: no trailer"
    if kind == "BMP":
        return None if int.from_bytes(head[2:6], "little") <= size else "truncated BMP"
    if kind == "WebP":
        if int.from_bytes(head[4:8], "little") + 8 > size:
            return "truncated WebP"
        animated = head[12:16] == b"VP8X" and head[20] & 0x02
        return "animated WebP, which TensorFlow cannot decode: save one frame" if animated else None
    unsupported = kind or UNSUPPORTED_SUFFIXES.get(path.suffix.lower())
    if unsupported:
        return f"{unsupported} image, which TensorFlow cannot decode"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return f"not a {DECODABLE} image (wrong file signature)"
    return f"not an image file ({DECODABLE})"


def _signature(head: bytes) -> str | None:
    """The format a file's first bytes announce: a decodable one, an unsupported one, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM") and len(head) >= 26:
        return "BMP"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "HEIC/HEIF"
        if brand in (b"avif", b"avis"):
            return "AVIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"  # also most raw formats (DNG, NEF, CR2, ARW)
    return None


def conversion_hint(problems: list[str]) -> str:
    """A sentence for a list of "path (reason)" skips that holds formats TensorFlow cannot
    decode, else ""."""
    count = sum("TensorFlow cannot decode" in p for p in problems)
    if not count:
        return ""
    return f" {count} of them are in a format TensorFlow cannot decode: {CONVERT_HINT}."


def exif_orientation(path: str | Path) -> int:
    """A JPEG's EXIF orientation (1-8, 1 = stored upright); 1 for other formats, no tag or an
    unreadable one. Pillow reads only the file's header segments (about 0.1 ms a file)."""
    from PIL import Image

    try:
        with Path(path).open("rb") as f:
            if f.read(3) != b"\xff\xd8\xff":
                return 1
            f.seek(0)
            with Image.open(f) as image:
                value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a broken header is found (and reported) when decoding
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1
