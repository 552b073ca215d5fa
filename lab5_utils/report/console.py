"""What a person reads, and what goes to the engines' logs: the one place that sorts the lines a
`lab5` command, a notebook kernel or a child process prints.

TensorFlow, absl, XLA and Jupyter write their own log lines to stderr (absl does so before
`absl::InitializeLog()`, whatever `TF_CPP_MIN_LOG_LEVEL` says). Every line goes to a log file;
the console shows it unless it has one of the engines' log formats (`ENGINE_LINE`), and shows
everything with `--verbose`. The formats, not today's messages, decide, so the next version's new
message is sorted the same way. Only the standard library here: `lab5 --help` stays fast.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

ENGINE_LINE = re.compile("|".join([
    r"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\s:\]]+:\d+\]",  # absl/glog: E0000 00:00:17.5 52 a.cc:13]
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] [^\s:\]]+:\d+\]",  # TensorFlow before 2.16
    r"WARNING: All log messages before absl::InitializeLog\(\) is called",  # absl's preamble
    r"\[[A-Z]\w*App\] ",  # a Jupyter application (traitlets): [IPKernelApp] WARNING | ...
    r"\d+\.\d\ds - ",  # the kernel's debugger (pydevd): 0.00s - Debugger warning: ...
]))
TAIL_LINES = 12  # lines of a log shown when what it logged failed


def is_engine_line(line: str) -> bool:
    """True for a line in one of the engines' log formats (TensorFlow/absl/XLA C++, Jupyter)."""
    return ENGINE_LINE.match(line) is not None


def strip_colours(text: str) -> str:
    """`text` without terminal colour codes (IPython's tracebacks carry them)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def tail(path: Path | None, text: str | None = None, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a log (`text`, else the file at `path`), indented, under a line
    that names it."""
    try:
        text = Path(path).read_text(errors="replace") if text is None else text
    except OSError as err:
        return f"    (its log {path} cannot be read: {err.strerror})\n"
    last = text.splitlines()[-lines:]
    where = f" {path}" if path else " (named below)"
    return f"    the last {len(last)} lines of its log{where}:\n" + "".join(
        f"    {line}\n" for line in last)


class LogFile:
    """Every line given, kept in memory and written to `path` once `path`'s folder exists (a run
    folder is made only after the checks); written again in full if the folder is replaced
    (`--force`). Appends: a resumed command adds to the log of the run it continues."""

    def __init__(self, header: str = "") -> None:
        self.lines: list[str] = [header] if header else []
        self.path: Path | None = None
        self._handle: TextIO | None = None
        self._lock = threading.RLock()  # the command's thread and the pipe's reader both add

    def to(self, path: str | Path) -> None:
        """Write the log to `path` from now on (everything so far included)."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            self.path = Path(path)
            self._write("")

    def add(self, text: str) -> None:
        with self._lock:
            self.lines.append(text)
            self._write(text)

    def _write(self, text: str) -> None:
        if self.path is None:
            return
        if self._handle is not None and not self.path.exists():  # its folder was replaced
            self._handle.close()
            self._handle = None
        if self._handle is None:
            if not self.path.parent.is_dir():
                return
            try:
                self._handle = open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            except OSError:  # not writable: kept in memory, written to the fallback at the end
                self.path = None
                return
            text = "".join(self.lines)
        self._handle.write(text)
        self._handle.flush()

    def close(self, fallback: Path) -> Path:
        """Close the log; one whose folder never appeared is written to `fallback`."""
        with self._lock:
            if self._handle is None:
                self.to(fallback)
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            return self.path or fallback


def header(title: str) -> str:
    """A log's first line: what wrote it and when."""
    return f"--- {title}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')} ---\n"


class Sorter:
    """Sorts lines: each one to `log`; to `show` unless it is an engine's line (or `verbose`)."""

    def __init__(self, log: LogFile, verbose: bool = False) -> None:
        self.log, self.verbose, self.hidden = log, verbose, 0
        self.lock = threading.RLock()
        self.sync: Callable[[], None] = lambda: None  # waits until fd 2's lines are sorted
        self.closing_line = True  # off after a one-line error: that message stays the only one

    def sort(self, line: str, show: Callable[[str], None]) -> None:
        """Sort one line. A message's further lines have no format of their own and are shown
        (TensorFlow's CPU-instructions note at TF_CPP_MIN_LOG_LEVEL=0, for example)."""
        with self.lock:
            self.log.add(line)
            if self.verbose or not is_engine_line(line):
                show(line)
            else:
                self.hidden += 1


class Lines:
    """Whole lines out of text that comes in pieces; a piece ending in a carriage return (a
    redrawn progress bar) passes at once."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit, self.rest = emit, ""
        self._lock = threading.Lock()  # notebooks running at once print from their threads

    def write(self, text: str) -> int:
        with self._lock:
            *whole, self.rest = (self.rest + text).split("\n")
            for line in whole:
                self.emit(line + "\n")
            if "\r" in self.rest:
                head, _, self.rest = self.rest.rpartition("\r")
                self.emit(head + "\r")
        return len(text)

    def flush_rest(self) -> None:
        if self.rest:
            rest, self.rest = self.rest, ""
            self.emit(rest + "\n")


class _Stream:
    """A `sys.stdout`/`sys.stderr` stand-in: what is written goes to `lines`, the rest of the
    file API (isatty, fileno, encoding, ...) is the console's own stream's."""

    def __init__(self, target: TextIO, lines: Lines, passthrough: bool) -> None:
        self._target, self._lines, self._passthrough = target, lines, passthrough

    def write(self, text: str) -> int:
        if self._passthrough:  # stdout: shown as written (a live progress bar), copied to the log
            self._target.write(text)
        return self._lines.write(text)

    def flush(self) -> None:
        self._target.flush()

    def __getattr__(self, name: str):
        return getattr(self._target, name)


def _pump(fd: int, lines: Lines) -> None:
    """Read a pipe until its writers close it, handing its text to `lines`."""
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
    with open(fd, "rb", buffering=0) as pipe:
        for chunk in iter(lambda: pipe.read(65536), b""):
            lines.write(decode(chunk))
    lines.flush_rest()


def pipe_into(sort: Callable[[str], None], name: str) -> tuple[int, threading.Thread]:
    """A pipe whose lines go to `sort` (a child's stdout and stderr, file descriptor 2): (its
    write end, the thread reading it, which ends when every writer has closed it)."""
    read, write = os.pipe()
    lines = Lines(sort)
    thread = threading.Thread(target=_pump, args=(read, lines), name=name, daemon=True)
    thread.start()
    return write, thread


def fallback_log(command: str) -> Path:
    """Where a command that writes no folder of its own keeps its log (replaced each time)."""
    return Path(tempfile.gettempdir()) / f"lab5-{command}.log"


@contextlib.contextmanager
def sorted_console(command: str, verbose: bool = False) -> Iterator[Sorter]:
    """While a `lab5` command runs: file descriptor 2 (where TensorFlow's C++ code writes) and
    `sys.stderr` are sorted; `sys.stdout` is shown as it is and copied to the log. The command
    names its log with `sorter.log.to(path)` (else `fallback_log`); the closing line names it."""
    sys.stdout.flush()
    sys.stderr.flush()
    out, err = sys.stdout, sys.stderr
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (closed by the caller): nothing to sort
        yield Sorter(LogFile(), verbose)
        return
    raw = open(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
    shown_err = raw if _fileno(err) == 2 else err  # else where Python's stderr went (pytest's)
    sorter = Sorter(LogFile(header(f"lab5 {command}")), verbose)
    show_raw, show = _shower(raw), _shower(shown_err)  # C-level lines: where they went before

    marker, synced = f"\0lab5 sync {os.getpid()}\n", threading.Event()

    def sort_or_sync(line: str) -> None:
        if line == marker:
            synced.set()
        else:
            sorter.sort(line, show_raw)

    def sync() -> None:
        os.write(2, marker.encode())
        synced.wait(timeout=10)
        synced.clear()

    sorter.sync = sync
    write, thread = pipe_into(sort_or_sync, "lab5-stderr")
    os.dup2(write, 2)
    os.close(write)
    err_lines = Lines(lambda line: sorter.sort(line, show))
    out_lines = Lines(sorter.log.add)
    sys.stderr, sys.stdout = _Stream(shown_err, err_lines, False), _Stream(out, out_lines, True)
    try:
        yield sorter
    finally:
        sys.stdout, sys.stderr = out, err
        out_lines.flush_rest()
        err_lines.flush_rest()
        os.dup2(saved, 2)  # the pipe's last writer closes: the thread reads to its end
        os.close(saved)
        thread.join(timeout=10)
        path = sorter.log.close(fallback_log(command))
        lines = f"{sorter.hidden} line{'s' * (sorter.hidden != 1)}"
        hidden = f" ({lines} of engine logs not shown; --verbose shows them)"
        if sorter.closing_line:
            show(f"[lab5] log: {path}{hidden if sorter.hidden else ''}\n")


def _shower(stream: TextIO) -> Callable[[str], None]:
    def show(line: str) -> None:
        stream.write(line)
        stream.flush()

    return show


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # pytest's capture, a StringIO
        return None
