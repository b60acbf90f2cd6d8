"""benchmarks/provenance.py on a scratch repository: the inputs a result measured (bundles) are
recorded when it starts, a change to them stales the result, and ``stamp`` adds them to an older
result only where git (and, for a run on a dirty tree, the hardware) proves them unchanged."""
import json
import os
import subprocess

import pytest

from benchmarks import provenance as P

SCRIPT = '''
from benchmarks.provenance import PROVENANCE_KEYS, option_values, repo_path, text_sha256
SCHEMA = 1
SOURCES = ("src.txt",)
GATEWARE = ()
RESULT_KEYS = {"": {"provenance", "figure"}, "provenance": PROVENANCE_KEYS}


def inputs(result):
    return [repo_path(b, ROOT) for b in option_values(result["provenance"]["command"],
                                                     "--bundle")]


def designs(result):
    # A design whose "hardware" holds the bundle's weights, as a board top's memories do.
    if "--no-designs" in result["provenance"]["command"]:
        return {}
    bundle = option_values(result["provenance"]["command"], "--bundle")[0]
    path = ROOT / bundle / "weights.txt"
    return {"top": lambda: text_sha256(path.read_text())}
'''


def git(root, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "benchmarks").mkdir(parents=True)
    (root / "benchmarks" / "bench_x.py").write_text(
        f"from pathlib import Path\nROOT = Path({str(root)!r})\n" + SCRIPT)
    (root / "src.txt").write_text("source\n")
    (root / "zoo" / "net").mkdir(parents=True)
    (root / "zoo" / "net" / "weights.txt").write_text("1 2 3\n")
    (root / "zoo" / "net" / "vectors.txt").write_text("0 1\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "start")
    return root


def run(root, argv, *, change_during=None):
    module = P.load_script("benchmarks/bench_x.py", root)
    prov = P.provenance(root / "benchmarks" / "bench_x.py", module.SOURCES, schema=1,
                        gateware=(), inputs=module.inputs, argv=argv, root=root)
    if change_during:
        change_during()
    path = root / "result.json"
    P.write_result(path, {"figure": 1}, provenance=prov, result_keys=module.RESULT_KEYS,
                   designs=module.designs, root=root)
    return path


def test_the_inputs_are_recorded_and_a_changed_bundle_is_refused(repo):
    path = run(repo, ["--bundle", str(repo / "zoo" / "net")])
    prov = json.loads(path.read_text())["provenance"]
    assert prov["inputs"] == ["zoo/net"]
    assert prov["inputs_sha256"] == P.inputs_sha256(["zoo/net"], repo)
    assert prov["hardware"]["top"] == P.text_sha256("1 2 3\n")
    P.stamp(path, root=repo)                                     # unchanged: stamps
    (repo / "zoo" / "net" / "vectors.txt").write_text("1 1\n")  # not in the hardware
    assert P.inputs_sha256(["zoo/net"], repo) != prov["inputs_sha256"]
    with pytest.raises(P.StampError, match=r"the inputs it measured \(zoo/net\) changed since "
                                           r"it ran; regenerate it: python "):
        P.stamp(path, root=repo)


def test_every_file_of_an_input_counts(repo):
    before = P.inputs_sha256(["zoo/net"], repo)
    (repo / "zoo" / "net" / "more").mkdir()
    (repo / "zoo" / "net" / "more" / "x.txt").write_text("x")
    assert P.inputs_sha256(["zoo/net"], repo) != before
    assert P.inputs_sha256(["zoo/gone"], repo) != P.inputs_sha256([], repo)
    outside = repo.parent / "elsewhere"
    outside.mkdir()
    (outside / "w.txt").write_text("w")
    assert P.repo_path(outside, repo) == str(outside)
    first = P.inputs_sha256([str(outside)], repo)
    (outside / "w.txt").write_text("v")
    assert P.inputs_sha256([str(outside)], repo) != first
    assert P.option_values(["a", "--bundle", "x", "--bundle=y", "--bundle"], "--bundle") == \
        ["x", "y"]


def test_an_input_changed_during_the_run_is_recorded_as_unknown(repo, capsys):
    def edit():
        (repo / "zoo" / "net" / "weights.txt").write_text("9\n")
    path = run(repo, ["--bundle", "zoo/net"], change_during=edit)
    assert json.loads(path.read_text())["provenance"]["inputs_sha256"] is None
    assert "zoo/net changed while the benchmark ran" in capsys.readouterr().err


def older(path):
    """The result as the layout before inputs were recorded wrote it."""
    data = json.loads(path.read_text())
    del data["provenance"]["inputs"], data["provenance"]["inputs_sha256"]
    path.write_text(json.dumps(data, indent=1) + "\n")


def test_stamp_adds_inputs_that_git_shows_unchanged(repo):
    path = run(repo, ["--bundle", "zoo/net"])
    older(path)
    new = P.stamp(path, root=repo)
    assert new["inputs"] == ["zoo/net"]
    assert new["inputs_sha256"] == P.inputs_sha256(["zoo/net"], repo)


def test_stamp_refuses_inputs_changed_since_the_run(repo):
    path = run(repo, ["--bundle", "zoo/net"])
    older(path)
    (repo / "zoo" / "net" / "vectors.txt").write_text("retrained\n")
    git(repo, "commit", "-qam", "retrain")
    with pytest.raises(P.StampError, match=r"zoo/net/vectors.txt changed since the run"):
        P.stamp(path, root=repo)
    (repo / "zoo" / "net" / "new.txt").write_text("untracked\n")
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    with pytest.raises(P.StampError, match=r"zoo/net/new.txt changed since the run"):
        P.stamp(path, root=repo)


def test_a_run_on_a_dirty_tree_needs_the_hardware_as_proof(repo):
    (repo / "src.txt").write_text("edited, not committed\n")
    path = run(repo, ["--bundle", "zoo/net"])
    assert json.loads(path.read_text())["provenance"]["git_revision"].endswith("-dirty")
    older(path)
    P.stamp(path, root=repo)                       # the weights are in its hardware: proven
    path = run(repo, ["--bundle", "zoo/net", "--no-designs"])
    older(path)
    with pytest.raises(P.StampError, match=r"ran on a dirty tree and no designs to prove its "
                                           r"inputs by"):
        P.stamp(path, root=repo)
