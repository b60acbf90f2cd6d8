"""The test session's cosimulation summary: what the emitted Verilog was proven equal to.

Every :func:`verif.runner.cosimulate` run of the session is in :data:`verif.runner.RUNS`. At the
end the terminal summary gives one line per simulator and the total line::

    cosim total: N spikes compared (H hidden), M mismatches, S steps, D designs

``N`` counts every spike of the golden model that was compared against the hardware's output
(the last layer on ``o``, every other layer on the trace port of a ``gen --trace`` top), ``H``
those of hidden layers, ``M`` the mismatches of runs that must pass, ``S`` the timesteps checked
(samples x steps), ``D`` the distinct Verilog designs. Runs of deliberately broken designs
(negative checks) are counted apart: they must fail.
"""


def pytest_terminal_summary(terminalreporter, config):
    from verif.runner import RUNS

    if not RUNS:
        return
    tr = terminalreporter
    tr.section("cosimulation")
    proofs = [r for r in RUNS if r.get("expect_pass", True)]
    negatives = [r for r in RUNS if not r.get("expect_pass", True)]

    def spikes(runs):
        return sum(r["spikes_compared"] + r.get("hidden_spikes_compared", 0) for r in runs)

    for sim in sorted({r["sim"] for r in proofs}):
        mine = [r for r in proofs if r["sim"] == sim]
        tr.write_line(f"{sim}: {len(mine)} runs, {spikes(mine)} spikes compared "
                      f"({sum(r.get('hidden_spikes_compared', 0) for r in mine)} hidden), "
                      f"{sum(r['mismatches'] for r in mine)} mismatches, "
                      f"{sum(not r['passed'] for r in mine)} failed runs")
    if negatives:
        caught = sum(not r["passed"] for r in negatives)
        tr.write_line(f"negative checks (broken designs that must fail): {caught} of "
                      f"{len(negatives)} caught")
    tr.write_line(f"cosim total: {spikes(proofs)} spikes compared "
                  f"({sum(r.get('hidden_spikes_compared', 0) for r in proofs)} hidden), "
                  f"{sum(r['mismatches'] for r in proofs)} mismatches, "
                  f"{sum(r['steps_checked'] for r in proofs)} steps, "
                  f"{len({r['design'] for r in proofs})} designs")
