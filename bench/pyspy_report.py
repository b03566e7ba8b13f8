"""Summarise a py-spy profile (collapsed stacks, `py-spy record --format raw --full-filenames`).

    python bench/pyspy_report.py bench/results/<run>-award-c32.collapsed.txt.gz

Three views, all in % of the samples py-spy collected (it samples only while the
worker's thread is running on a CPU, so these are shares of the worker's CPU time):

- phases: every sample assigned to exactly one phase of the request (the most
  specific one found anywhere in its stack; see PHASES), so the column sums to 100 %;
- libraries, own time: the library of the innermost Python frame (time in C
  extensions such as orjson or psycopg's C core counts for the Python frame calling it);
- libraries, total time: a sample counts for every library on its stack (overlaps);
- top functions by own and by total time.

Also converts the collapsed stacks to a speedscope file (speedscope.app opens both).
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# (label, substrings of the file path) — the first match wins.
LIBRARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "JWT / auth (joserfc, cryptography, alliance/auth)",
        ("/joserfc/", "/cryptography/", "/alliance/auth/"),
    ),
    ("graphql-core: parse", ("/graphql/language/",)),
    ("graphql-core: validate", ("/graphql/validation/",)),
    ("graphql-core: execute & other", ("/graphql/",)),
    ("strawberry", ("/strawberry/",)),
    ("SQLAlchemy", ("/sqlalchemy/",)),
    ("psycopg / psycopg_pool", ("/psycopg/", "/psycopg_pool/", "/psycopg_binary/", "/psycopg_c/")),
    ("JSON (json, orjson)", ("/json/", "orjson")),
    ("logging", ("/logging/",)),
    ("starlette", ("/starlette/",)),
    ("uvicorn / httptools", ("/uvicorn/", "/httptools/")),
    ("asyncio / uvloop", ("/asyncio/", "/uvloop/")),
    ("app: gateway.py", ("/gateway.py",)),
    ("app: schema/ (GraphQL layer)", ("/schema/",)),
    ("app: alliance/ (domain)", ("/alliance/",)),
    ("other Python stdlib", ("/lib/python3",)),
)

# (phase, predicate on one frame) — a sample gets the first phase any of its frames matches.
PHASES: tuple[tuple[str, object], ...] = (
    ("token verification (JWT)", lambda f, p: "/alliance/auth/tokens.py" in p or "/joserfc/" in p),
    ("logging (access log, error log)", lambda f, p: "/logging/" in p),
    (
        "database access in Python (SQLAlchemy + psycopg, incl. socket send/recv)",
        lambda f, p: "/sqlalchemy/" in p or "/psycopg" in p,
    ),
    (
        "JSON decode/encode of bodies",
        lambda f, p: f in ("decode_json", "encode_json") or "/json/" in p,
    ),
    (
        "HTTP response write (uvicorn send → socket)",
        lambda f, p: f == "RequestResponseCycle.send" and "/uvicorn/" in p,
    ),
    (
        "app resolvers & domain code (schema/, alliance/), excluding the above",
        lambda f, p: "/work/main/schema/" in p or "/work/main/alliance/" in p,
    ),
    ("GraphQL parse", lambda f, p: "/graphql/language/" in p or "parser_cache" in p),
    ("GraphQL validate", lambda f, p: "/graphql/validation/" in p or "validation_cache" in p),
    ("GraphQL execute (graphql-core executor, result completion)", lambda f, p: "/graphql/" in p),
    (
        "strawberry (HTTP view, schema.execute, extensions, argument conversion)",
        lambda f, p: "/strawberry/" in p,
    ),
    ("app edge: gateway.py middleware & endpoint", lambda f, p: p.endswith("/gateway.py")),
    ("starlette (routing, Request, Response)", lambda f, p: "/starlette/" in p),
    (
        "uvicorn / httptools (request parsing, connection handling)",
        lambda f, p: "/uvicorn/" in p or "/httptools/" in p,
    ),
)
EVENT_LOOP = (
    "event loop C code (uvloop: epoll, socket I/O, callbacks; no Python frame of a request)"
)


_ROOT_CHAIN = (
    "/multiprocessing/",
    "/uvicorn/_subprocess.py",
    "/uvicorn/server.py",
    "/uvicorn/_compat.py",
    "/uvicorn/supervisors/",
    "/asyncio/runners.py",
    "/asyncio/base_events.py",
)


def in_root_chain(function: str, path: str) -> bool:
    """The frames every sample of a uvicorn worker starts with (process start-up, server
    loop, asyncio runner): left out of the phase, total-time and library views."""
    return (function == "<module>" and path == "<string>") or any(
        needle in path for needle in _ROOT_CHAIN
    )


def is_idle_helper(frames: list[tuple[str, str]]) -> bool:
    """uvicorn's worker keeps a thread blocked on its supervisor pipe; py-spy (0.4, on this
    kernel) reports that blocked read as running, so it is left out."""
    return (
        bool(frames)
        and frames[0][0] == "Thread._bootstrap"
        and any("/multiprocessing/connection.py" in path for _, path in frames)
    )


DATABASE_PHASE = PHASES[2][0]


def database_part(frames: list[tuple[str, str]]) -> str:
    """Where, inside the database phase, a sample is."""
    if any(
        (
            f.endswith("_connect_gen")
            or f.startswith("AsyncConnection.connect")
            or f == "AsyncConnection.close"
        )
        and "/psycopg/" in p
        for f, p in frames
    ):
        return "psycopg: opening/closing server connections (pool overflow churn)"
    if any("/sqlalchemy/pool/" in p for _, p in frames):
        return "SQLAlchemy pool checkout / return (reset, events)"
    function, path = frames[-1]
    if "/psycopg" in path and function in (
        "BaseCursor._send_query_prepared",
        "BaseCursor._execute_send",
        "BaseCursor._send_prepare",
    ):
        return "psycopg: send the query (libpq send + socket write to PostgreSQL)"
    if "/psycopg" in path and function == "wait_async":
        return "psycopg: wait_async (readiness wait, socket read)"
    if "/psycopg" in path:
        return "psycopg: other Python (parameter dump, prepare bookkeeping, results)"
    if "/sqlalchemy/" in path or "greenlet" in path:
        return "SQLAlchemy: execute (connect(), execution context, greenlet bridge, result)"
    return "other"


def parse_frame(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match["function"], match["file"]


def read_text(path: Path) -> str:
    """A collapsed-stack file, plain or gzipped (.gz)."""
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes()).decode()
    return path.read_text()


def read_collapsed(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in read_text(path).splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        frames = [parse_frame(f) for f in stack.split(";") if f]
        stacks.append((frames, int(count)))
    return stacks


def library_of(path: str) -> str:
    for label, needles in LIBRARIES:
        if any(needle in path for needle in needles):
            return label
    return "other"


def phase_of(frames: Iterable[tuple[str, str]]) -> str:
    frames = list(frames)
    for label, predicate in PHASES:
        if any(predicate(function, path) for function, path in frames):  # type: ignore[operator]
            return label
    return EVENT_LOOP


def _short(function: str, path: str) -> str:
    for marker in ("/site-packages/", "/work/main/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{function} ({path})"


def summarise(path: Path, top: int = 50) -> dict[str, object]:
    stacks = read_collapsed(path)
    total = sum(count for frames, count in stacks if frames and not is_idle_helper(frames))
    phases: Counter[str] = Counter()
    own_lib: Counter[str] = Counter()
    total_lib: Counter[str] = Counter()
    own_fn: Counter[str] = Counter()
    db_parts: Counter[str] = Counter()
    total_fn: Counter[str] = Counter()
    excluded = 0
    for frames, count in stacks:
        if not frames:
            continue
        if is_idle_helper(frames):
            excluded += count
            continue
        function, file = frames[-1]
        own_lib[library_of(file)] += count
        own_fn[_short(function, file)] += count
        request_frames = [(f, p) for f, p in frames if not in_root_chain(f, p)]
        phase = phase_of(request_frames)
        phases[phase] += count
        if phase == DATABASE_PHASE:
            db_parts[database_part(frames)] += count
        for label in {library_of(file) for _, file in request_frames}:
            total_lib[label] += count
        for name in {_short(function, file) for function, file in request_frames}:
            total_fn[name] += count

    def pct(counter: Counter[str], limit: int | None = None) -> list[list[object]]:
        return [[name, round(100.0 * n / total, 1), n] for name, n in counter.most_common(limit)]

    return {
        "samples": total,
        "excluded_idle_helper_thread_samples": excluded,
        "phases": pct(phases),
        "database_breakdown": pct(db_parts),
        "libraries_own": pct(own_lib),
        "libraries_total": pct(total_lib),
        "functions_own": pct(own_fn, top),
        "functions_total": pct(total_fn, top),
    }


def markdown(summary: dict[str, object], top: int = 25) -> str:
    lines = [
        f"Samples: {summary['samples']} of the worker's main thread (% of its on-CPU samples; "
        f"{summary.get('excluded_idle_helper_thread_samples', 0)} samples of uvicorn's idle "
        "supervisor-pipe thread left out)",
        "",
    ]

    def table(title: str, rows: list[list[object]], limit: int | None = None) -> None:
        lines.append(f"| {title} | % | samples |")
        lines.append("|---|---:|---:|")
        for name, share, n in rows[:limit]:
            lines.append(f"| {str(name).replace('|', '/')} | {share} | {n} |")
        lines.append("")

    table("phase of the request (each sample counted once)", summary["phases"])  # type: ignore[arg-type]
    table("inside the database phase (% of all samples)", summary["database_breakdown"])  # type: ignore[arg-type]
    table("library, own time (innermost Python frame)", summary["libraries_own"])  # type: ignore[arg-type]
    table(
        "library, total time (anywhere on the stack below the server loop)",
        summary["libraries_total"],  # type: ignore[arg-type]
    )
    table("function, own time", summary["functions_own"], top)  # type: ignore[arg-type]
    table("function, total time (below the server loop)", summary["functions_total"], top + 15)  # type: ignore[arg-type]
    return "\n".join(lines)


def to_speedscope(path: Path, out: Path, name: str) -> None:
    frames: list[dict[str, object]] = []
    index: dict[str, int] = {}
    samples, weights = [], []
    for line in read_text(path).splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack:
            continue
        ids = []
        for raw in stack.split(";"):
            if raw not in index:
                index[raw] = len(frames)
                match = _FRAME.match(raw.strip())
                entry: dict[str, object] = {"name": raw}
                if match is not None:
                    entry = {"name": match["function"], "file": match["file"]}
                    if match["line"]:
                        entry["line"] = int(match["line"])
                frames.append(entry)
            ids.append(index[raw])
        samples.append(ids)
        weights.append(int(count))
    document = {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": name,
        "exporter": "bench/pyspy_report.py",
    }
    out.write_text(json.dumps(document))


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(markdown(summarise(Path(argument))))
