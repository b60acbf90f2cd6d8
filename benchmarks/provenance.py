"""Where a benchmark result came from: the script, the sources it measured, the command.

Every benchmark script takes its :func:`provenance` when it starts and writes its JSON with
:func:`write_result`, which puts the provenance in and checks the result's keys against the
script's own ``RESULT_KEYS`` before writing.
``tests/test_benchmark_results.py`` recomputes both hashes for every JSON under
``benchmarks/results/``: a result left behind by a change to the script or to the sources it
measured fails the default test run until the script is run again.

The source hash covers file contents in sorted path order (the repository-relative path and
the bytes of each file), independent of git: an uncommitted edit changes it too.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "PROVENANCE_KEYS", "source_files", "sources_sha256", "file_sha256",
           "provenance", "key_problems", "write_result"]

ROOT = Path(__file__).resolve().parents[1]

# The keys of the provenance object (its layout is fixed; each script versions its own).
PROVENANCE_KEYS = frozenset({"script", "script_sha256", "hdl_sha256", "sources",
                             "git_revision", "command", "schema"})


def source_files(patterns, root=ROOT):
    """The files ``patterns`` (globs relative to ``root``) name, sorted by relative path."""
    files = {path for pattern in patterns for path in Path(root).glob(pattern) if path.is_file()}
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def sources_sha256(patterns, root=ROOT):
    """SHA-256 over the files of ``patterns``: each file's relative path, then its bytes."""
    digest = hashlib.sha256()
    for path in source_files(patterns, root):
        name = path.relative_to(root).as_posix().encode()
        data = path.read_bytes()
        digest.update(b"%d:%s\0%d:" % (len(name), name, len(data)))
        digest.update(data)
    return digest.hexdigest()


def file_sha256(path):
    """SHA-256 of one file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _git_revision(root):
    """``git describe``-like revision of ``root`` (``-dirty`` with local changes), or None."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=30,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def provenance(script, sources, *, schema, argv=None, root=ROOT):
    """The ``provenance`` object of a result ``script`` writes now.

    ``sources`` are the globs of the files the result depends on (``hdl_sha256`` hashes them);
    ``argv`` the script's arguments (default: this process's).
    """
    script = Path(script).resolve()
    rel = script.relative_to(root).as_posix()
    args = sys.argv[1:] if argv is None else list(argv)
    return {
        "script": rel,
        "script_sha256": file_sha256(script),
        "hdl_sha256": sources_sha256(sources, root),
        "sources": list(sources),
        "git_revision": _git_revision(root),
        "command": ["python", rel, *map(str, args)],
        "schema": schema,
    }


def _walk(value, parts, where):
    """Yield ``(where, object)`` for every object the path ``parts`` reaches in ``value``."""
    if not parts:
        yield where, value
        return
    head, rest = parts[0], parts[1:]
    if head == "*":
        if isinstance(value, list):
            for n, item in enumerate(value):
                yield from _walk(item, rest, f"{where}[{n}]")
        else:
            yield where, None                       # reported as "not a list" by the caller
    elif isinstance(value, dict) and head in value:
        yield from _walk(value[head], rest, f"{where}.{head}" if where else head)


def key_problems(data, result_keys):
    """What in ``data`` breaks ``result_keys`` (``{"": top keys, "rows/*": row keys, ...}``).

    Every path names objects (``*`` = each element of a list); each object reached must have
    exactly the listed keys. Returns a list of messages, empty when ``data`` follows the schema.
    """
    problems = []
    for path, keys in result_keys.items():
        parts = [p for p in path.split("/") if p]
        for where, obj in _walk(data, parts, ""):
            if not isinstance(obj, dict):
                problems.append(f"{where or 'top level'}: not an object")
                continue
            missing, extra = set(keys) - set(obj), set(obj) - set(keys)
            if missing or extra:
                problems.append(f"{where or 'top level'}: missing {sorted(missing)}, "
                                f"unexpected {sorted(extra)}")
    return problems


def write_result(path, data, *, provenance, result_keys):
    """Put ``provenance`` in front of ``data``, check it against ``result_keys``, write JSON.

    Take ``provenance`` (:func:`provenance`) when the run starts: a source edited while it runs
    then makes the result stale instead of being credited with it. A mismatch between what the
    script produced and its own declared keys is a bug in the script: raise
    :exc:`ValueError` rather than write a file the results test would refuse.
    """
    data = {"provenance": provenance, **data}
    problems = key_problems(data, result_keys)
    if problems:
        raise ValueError("Result does not follow its schema: " + "; ".join(problems[:5]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return data
