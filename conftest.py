"""Project-wide pytest setup: the ``formal`` marker.

Formal proofs (``tests/formal``, Yosys's SAT prover) run on their own with ``pytest -m formal``
(``.ci/run`` does): a plain ``pytest`` or one with another ``-m`` expression that does not name
``formal`` leaves them out, as ``slow`` tests are left out by default.
"""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "formal: formal proofs with Yosys's SAT prover; run with -m formal")


def pytest_collection_modifyitems(config, items):
    if "formal" in (config.getoption("markexpr") or ""):
        return
    keep, skipped = [], []
    for item in items:
        (skipped if item.get_closest_marker("formal") else keep).append(item)
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = keep
