"""Where a benchmark result came from: the script, the sources and hardware it measured.

Every benchmark script takes its :func:`provenance` when it starts and writes its JSON with
:func:`write_result`, which puts the provenance in, fingerprints the hardware the result
measured and checks the result's keys against the script's own ``RESULT_KEYS`` before writing.

The rule: figures are produced by the committed scripts on the committed hardware, and are
regenerated when either changes. A result is current when

1. its script hashes as it did (``script_sha256``);
2. the non-gateware sources it depends on hash as they did (``sources_sha256`` over the script's
   ``SOURCES`` globs: host driver, build flow, cosimulation harness, golden model);
3. the repository data it measured (its ``inputs``: the bundles named on its command line or
   by default, from the script's ``inputs(result)``) hash as they did (``inputs_sha256``): a
   retrained bundle stales every result measured on it, whether or not its weights are in the
   hardware;
4. every design it measured generates the same hardware now as when it ran: ``hardware`` maps
   a label per design to the SHA-256 of the RTLIL Amaranth generates for it
   (:func:`rtlil_sha256`, :func:`plan_sha256`), and the script's ``designs(result)`` rebuilds
   those designs from the result's own JSON, by the code paths the script measured them with.

An edit to ``hdl/`` that leaves every measured design's RTLIL unchanged (an opt-in feature, a
comment) keeps results current; one that changes a measured design fails the result that
measured it. ``gateware_sha256`` hashes the script's ``GATEWARE`` globs (the Python the designs
are generated from): while it is unchanged the hardware is the same by construction and the
check needs no regeneration; once it differs every design is regenerated and compared (seconds
per design), and ``python -m benchmarks.provenance --stamp FILE...`` records the new hash after
checking that every fingerprint still holds, to make later checks fast again. The fingerprints
are of this Amaranth version's RTLIL: an Amaranth upgrade is not seen while the gateware hash
holds, and may change RTLIL text it regenerates.

The ``provenance`` object (``PROVENANCE_KEYS``)::

    script           repository-relative path of the script
    script_sha256    SHA-256 of the script's bytes
    sources          the script's SOURCES globs (non-gateware files the figures depend on)
    sources_sha256   hash of those files (see below)
    inputs           repository-relative files and folders of data it measured (bundles)
    inputs_sha256    hash of every file in them, taken when the run started
    gateware         the script's GATEWARE globs (what its designs are generated from)
    gateware_sha256  hash of those files, taken when the run started
    hardware         {design label: SHA-256 of its RTLIL, or null when not known}
    git_revision     HEAD when the run started ("-dirty" with local changes), or null
    command          ["python", script, *arguments]: the command that regenerates the result
    schema           the script's SCHEMA: the version of the result's layout

A source hash covers file contents in sorted path order (the repository-relative path and the
bytes of each file), independent of git: an uncommitted edit changes it too.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "GATEWARE", "PROVENANCE_KEYS", "source_files", "sources_sha256",
           "inputs_sha256", "repo_path", "option_values", "bundle_inputs",
           "file_sha256", "text_sha256", "rtlil_sha256", "plan_sha256", "fingerprints",
           "provenance", "key_problems", "write_result", "load_script", "regenerate",
           "hardware_problems", "stamp"]

ROOT = Path(__file__).resolve().parents[1]

# The keys of the provenance object (its layout is fixed; each script versions its own).
PROVENANCE_KEYS = frozenset({"script", "script_sha256", "sources", "sources_sha256",
                             "inputs", "inputs_sha256", "gateware", "gateware_sha256",
                             "hardware", "git_revision", "command", "schema"})
# What a script's designs are generated from, unless it says otherwise.
GATEWARE = ("hdl/*.py",)
# The files of a platform's build plan that are the design: the netlist and its pin and clock
# constraints (not the build scripts, whose tool options and seeds the build flow sets).
PLAN_DESIGN_SUFFIXES = (".il", ".pcf", ".lpf", ".sdc")


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


def inputs_sha256(paths, root=ROOT):
    """SHA-256 over every file of ``paths`` (files or folders, relative to ``root`` or
    absolute), each file's name as given plus its place in the folder, then its bytes; a path
    that does not exist contributes its name, so that its disappearance changes the hash."""
    digest = hashlib.sha256()
    for given in paths:
        full = Path(root) / given
        files = sorted(f for f in full.rglob("*") if f.is_file()) if full.is_dir() else \
            [full] if full.is_file() else []
        if not files:
            digest.update(b"missing:%s\0" % str(given).encode())
        for path in files:
            name = f"{given}/{path.relative_to(full).as_posix()}" if full.is_dir() else given
            data = path.read_bytes()
            digest.update(b"%d:%s\0%d:" % (len(name.encode()), name.encode(), len(data)))
            digest.update(data)
    return digest.hexdigest()


def repo_path(path, root=ROOT):
    """``path`` relative to the repository when it lies inside it (as given otherwise)."""
    full = Path(path) if Path(path).is_absolute() else Path(root) / path
    full = full.resolve()
    return full.relative_to(Path(root).resolve()).as_posix() \
        if full.is_relative_to(Path(root).resolve()) else str(path)


def option_values(command, option):
    """Every value ``option`` takes in ``command`` (``--opt VALUE`` or ``--opt=VALUE``)."""
    values = []
    for index, word in enumerate(command):
        if word == option and index + 1 < len(command):
            values.append(command[index + 1])
        elif word.startswith(option + "="):
            values.append(word[len(option) + 1:])
    return values


def bundle_inputs(result):
    """A script's ``inputs(result)`` where the data it measures are its command's ``--bundle``
    folders."""
    return [repo_path(b) for b in option_values(result["provenance"]["command"], "--bundle")]


def file_sha256(path):
    """SHA-256 of one file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def text_sha256(text):
    """SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()


def rtlil_sha256(design, *, name="top"):
    """SHA-256 of the RTLIL of the elaboratable ``design``, without ``src`` attributes.

    Amaranth's RTLIL is deterministic for a given design, and without ``src`` attributes (file
    and line of each statement) it does not change with edits that leave the hardware alone.
    """
    from amaranth.back import rtlil
    return text_sha256(rtlil.convert(design, name=name, emit_src=False))


def plan_sha256(platform, design, *, name="top"):
    """SHA-256 of the design files of ``platform.prepare(design, name)``.

    The RTLIL (without ``src`` attributes) and the pin and clock constraints
    (``PLAN_DESIGN_SUFFIXES``), by file name: what the synthesis and place-and-route tools
    read as the design. The build scripts are left out: they carry tool options (seeds) and
    the device, which the build flow (a non-gateware source) decides.
    """
    plan = platform.prepare(design, name, emit_src=False, debug_verilog=False)
    digest = hashlib.sha256()
    for filename in sorted(plan.files):
        if filename.endswith(PLAN_DESIGN_SUFFIXES):
            content = plan.files[filename]
            data = content if isinstance(content, bytes) else content.encode()
            digest.update(b"%d:%s\0%d:" % (len(filename), filename.encode(), len(data)))
            digest.update(data)
    return digest.hexdigest()


def fingerprints(designs):
    """``{label: sha256}`` from ``designs`` (``{label: callable returning the sha256}``)."""
    return {label: make() for label, make in designs.items()}


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


def provenance(script, sources, *, schema, gateware=GATEWARE, inputs=None, argv=None,
               root=ROOT):
    """The ``provenance`` object of a result ``script`` writes now (``hardware`` still empty:
    :func:`write_result` fills it in from the result).

    ``sources`` are the globs of the non-gateware files the result depends on, ``gateware``
    those its designs are generated from; ``inputs`` the script's ``inputs(result)`` (the data
    it measures, from the result's command line; default: none); ``argv`` the script's
    arguments (default: this process's).
    """
    script = Path(script).resolve()
    rel = script.relative_to(root).as_posix()
    args = sys.argv[1:] if argv is None else list(argv)
    command = ["python", rel, *map(str, args)]
    paths = list(inputs({"provenance": {"command": command}})) if inputs is not None else []
    return {
        "script": rel,
        "script_sha256": file_sha256(script),
        "sources": list(sources),
        "sources_sha256": sources_sha256(sources, root),
        "inputs": paths,
        "inputs_sha256": inputs_sha256(paths, root),
        "gateware": list(gateware),
        "gateware_sha256": sources_sha256(gateware, root),
        "hardware": {},
        "git_revision": _git_revision(root),
        "command": command,
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


def _dumps(data):
    """The text of a result file (what :func:`write_result` and :func:`stamp` write)."""
    return json.dumps(data, indent=1) + "\n"


def write_result(path, data, *, provenance, result_keys, designs=None, root=ROOT):
    """Put ``provenance`` in front of ``data``, fingerprint its hardware, check, write JSON.

    Take ``provenance`` (:func:`provenance`) when the run starts: a source or input edited while
    it runs then makes the result stale instead of being credited with it. ``designs`` is the
    script's ``designs(result) -> {label: callable returning a fingerprint}``; the fingerprints
    go into ``hardware``. When the gateware changed while the script ran, the fingerprints now
    would not be those of what ran: every one is written as ``None`` (unknown), which the
    results test refuses, and a warning is printed. A mismatch between what the script produced
    and its own declared keys is a bug in the script: raise :exc:`ValueError` rather than write
    a file the results test would refuse.
    """
    provenance = dict(provenance)
    data = {"provenance": provenance, **data}
    problems = key_problems(data, result_keys)
    if problems:
        raise ValueError("Result does not follow its schema: " + "; ".join(problems[:5]))
    if inputs_sha256(provenance["inputs"], root) != provenance["inputs_sha256"]:
        print(f"warning: {', '.join(provenance['inputs'])} changed while the benchmark ran; "
              f"the result is recorded as of unknown inputs: run it again", file=sys.stderr)
        provenance["inputs_sha256"] = None
    hardware = fingerprints(designs(data)) if designs is not None else {}
    if sources_sha256(provenance["gateware"], root) != provenance["gateware_sha256"]:
        print(f"warning: {', '.join(provenance['gateware'])} changed while the benchmark ran; "
              f"its hardware is recorded as unknown: run it again", file=sys.stderr)
        hardware = dict.fromkeys(hardware)
    provenance["hardware"] = hardware
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_dumps(data))
    return data


@functools.cache
def load_script(rel, root=ROOT):
    """The benchmark script at ``rel`` (repository-relative), imported without running it."""
    path = Path(root) / rel
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _regenerate_one(path, label):
    data = json.loads(Path(path).read_text())
    return load_script(data["provenance"]["script"]).designs(data)[label]()


def regenerate(paths, *, jobs=None):
    """``{(path, label): fingerprint}`` of every design the results at ``paths`` name,
    regenerated in ``jobs`` processes (default: one per core): seconds per design."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    tasks = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        labels = load_script(data["provenance"]["script"]).designs(data)
        tasks += [(str(path), label) for label in labels]
    jobs = min(jobs or os.cpu_count() or 1, len(tasks))
    if jobs <= 1:
        return {(p, label): _regenerate_one(p, label) for p, label in tasks}
    with ProcessPoolExecutor(jobs) as pool:
        done = pool.map(_regenerate_one, *zip(*tasks))
        return dict(zip(tasks, done))


def hardware_problems(data, module, regenerated=None):
    """The labels of ``data``'s recorded hardware that the gateware no longer generates.

    Regenerates every design ``module.designs(data)`` names (or takes its fingerprint from
    ``regenerated``, ``{label: fingerprint}``) and compares it with
    ``data["provenance"]["hardware"]``. Returns messages (empty when every design is the same):
    a changed design, a design recorded as unknown, one the script no longer names or one the
    result does not record.
    """
    recorded = data["provenance"]["hardware"]
    designs = module.designs(data)
    if regenerated is not None:
        designs = {label: functools.partial(regenerated.get, label) for label in designs}
    problems = [f"{label}: not measured by the script any more"
                for label in recorded if label not in designs]
    for label, make in designs.items():
        if label not in recorded:
            problems.append(f"{label}: no fingerprint recorded")
        elif recorded[label] is None:
            problems.append(f"{label}: hardware unknown (the gateware changed during the run)")
        elif make() != recorded[label]:
            problems.append(f"{label}: its hardware changed")
    return problems


def _git_file_sha256(root, rev, rel):
    try:
        data = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=root, capture_output=True,
                              timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return hashlib.sha256(data).hexdigest()


class StampError(Exception):
    """A result :func:`stamp` refuses to stamp; the message says why."""


def _inputs_unchanged_since_run(path, data, module, paths, rerun, root):
    """Raise :exc:`StampError` unless ``paths`` are provably what the run at its recorded
    ``git_revision`` measured (see :func:`stamp`)."""
    revision = data["provenance"].get("git_revision")
    if not revision:
        raise StampError(f"{path}: no git revision recorded, so its inputs cannot be traced; "
                         f"regenerate it: {rerun}")
    base = revision.removesuffix("-dirty")
    if paths:
        try:
            changed = subprocess.run(["git", "diff", "--name-only", base, "--", *paths],
                                     cwd=root, capture_output=True, text=True, timeout=60,
                                     check=True).stdout.split()
            changed += subprocess.run(["git", "ls-files", "--others", "--exclude-standard",
                                       "--", *paths], cwd=root, capture_output=True, text=True,
                                      timeout=60, check=True).stdout.split()
        except (OSError, subprocess.SubprocessError) as exc:
            raise StampError(f"{path}: git could not compare its inputs with {base[:12]} "
                             f"({exc}); regenerate it: {rerun}") from None
        if changed:
            raise StampError(f"{path}: {', '.join(changed[:3])} changed since the run "
                             f"({base[:12]}); regenerate it: {rerun}")
    if revision.endswith("-dirty") and paths:
        problems = hardware_problems(data, module)
        if not data["provenance"]["hardware"]:
            problems.append("no designs to prove its inputs by")
        if problems:
            raise StampError(f"{path}: ran on a dirty tree and " + "; ".join(problems)
                             + f"; regenerate it: {rerun}")


def stamp(path, *, script_from=None, root=ROOT):
    """Bring the provenance of the result at ``path`` up to date without running it again.

    Only where the result is provably of the hardware and sources there are now:

    * a result of the earlier layout (with ``hdl_sha256``, the hash of every source glob it
      measured, gateware included): that hash must equal the same globs' hash now, the
      script's ``SOURCES`` and ``GATEWARE`` must be among those globs, and its ``schema`` must
      be one before the script's ``SCHEMA``;
    * a result of this layout: ``sources_sha256`` and ``inputs_sha256`` must hold, and either
      ``gateware_sha256`` holds or every recorded fingerprint is regenerated unchanged (then
      the new gateware hash is recorded, so that later checks need no regeneration);
    * a result from before ``inputs`` were recorded gets the script's ``inputs(result)`` only
      where git shows them unchanged since the run's ``git_revision``; when that revision was
      ``-dirty`` (the run's own inputs might have been uncommitted edits), every fingerprint
      must also regenerate unchanged, which a bundle in the hardware's memories proves, and a
      result without designs is refused.

    The script's hash must equal the recorded one, or, with ``script_from`` (a git revision),
    the hash of the script at that revision: the caller vouches that the script changed since
    then only in how it records its provenance, not in what it measures. Writes the new
    provenance fields in place (the run's ``command`` and ``git_revision`` kept), nothing else
    of the file changes. Raises :exc:`StampError` with the reason otherwise.
    """
    path = Path(path)
    text = path.read_text()
    data = json.loads(text)
    if not isinstance(data, dict) or "provenance" not in data:
        raise StampError(f"{path}: has no provenance; regenerate it with its benchmark script")
    if _dumps(data) != text:
        raise StampError(f"{path}: not in the layout write_result writes; not stamped")
    prov = data["provenance"]
    rerun = " ".join(prov.get("command") or ["python", prov["script"]])
    module = load_script(prov["script"], root)
    script_sha = file_sha256(Path(root) / prov["script"])
    if prov["script_sha256"] != script_sha and (
            script_from is None
            or _git_file_sha256(root, script_from, prov["script"]) != prov["script_sha256"]):
        raise StampError(f"{path}: {prov['script']} differs from the script that ran "
                         f"(at {script_from or 'the working tree'}); regenerate it: {rerun}")
    if "hdl_sha256" in prov:                                    # the earlier layout
        if sources_sha256(prov["sources"], root) != prov["hdl_sha256"]:
            raise StampError(f"{path}: the sources it measured ({', '.join(prov['sources'])}) "
                             f"changed since it ran; regenerate it: {rerun}")
        uncovered = (set(module.SOURCES) | set(module.GATEWARE)) - set(prov["sources"])
        if uncovered:
            raise StampError(f"{path}: {', '.join(sorted(uncovered))} not among the sources "
                             f"it recorded; regenerate it: {rerun}")
        if prov["schema"] != module.SCHEMA - 1:
            raise StampError(f"{path}: layout version {prov['schema']}, not the one before "
                             f"{module.SCHEMA}; regenerate it: {rerun}")
    else:
        if prov["schema"] != module.SCHEMA:
            raise StampError(f"{path}: layout version {prov['schema']}, the script writes "
                             f"{module.SCHEMA}; regenerate it: {rerun}")
        if sources_sha256(module.SOURCES, root) != prov["sources_sha256"]:
            raise StampError(f"{path}: the sources it measured ({', '.join(module.SOURCES)}) "
                             f"changed since it ran; regenerate it: {rerun}")
        if sources_sha256(module.GATEWARE, root) != prov["gateware_sha256"]:
            problems = hardware_problems(data, module)
            if problems:
                raise StampError(f"{path}: " + "; ".join(problems) + f"; regenerate it: {rerun}")
    if "inputs" in prov:
        paths = list(prov["inputs"])
        if prov["inputs_sha256"] != inputs_sha256(paths, root):
            raise StampError(f"{path}: the inputs it measured ({', '.join(paths)}) changed "
                             f"since it ran; regenerate it: {rerun}")
    else:
        paths = list(module.inputs(data)) if hasattr(module, "inputs") else []
        _inputs_unchanged_since_run(path, data, module, paths, rerun, root)
    new = {
        "script": prov["script"],
        "script_sha256": script_sha,
        "sources": list(module.SOURCES),
        "sources_sha256": sources_sha256(module.SOURCES, root),
        "inputs": paths,
        "inputs_sha256": inputs_sha256(paths, root),
        "gateware": list(module.GATEWARE),
        "gateware_sha256": sources_sha256(module.GATEWARE, root),
        "hardware": fingerprints(module.designs(data)),
        "git_revision": prov["git_revision"],
        "command": prov["command"],
        "schema": module.SCHEMA,
    }
    data["provenance"] = new
    problems = key_problems(data, module.RESULT_KEYS)
    if problems:
        raise StampError(f"{path}: does not follow its schema: " + "; ".join(problems[:5]))
    path.write_text(_dumps(data))
    return new


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.provenance",
        description="Record the current provenance layout and hardware fingerprints of "
                    "benchmark results that are provably of the sources and hardware there "
                    "are now (see the module docstring); refuse the others.")
    parser.add_argument("--stamp", nargs="+", type=Path, required=True, metavar="FILE",
                        help="result JSON files to stamp in place")
    parser.add_argument("--script-from", metavar="REV",
                        help="accept a script that hashes as it did at this git revision")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.stamp:
        try:
            new = stamp(path, script_from=args.script_from)
        except StampError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"stamped {path}: {len(new['hardware'])} designs fingerprinted")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
