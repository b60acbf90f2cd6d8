"""PLL settings for iCE40 (SB_PLL40) and ECP5 (EHXPLLL), searched from the datasheet limits.

:func:`ice40_pll` and :func:`ecp5_pll` pick the fastest output clock that does not exceed the
requested one (so a design built for it meets the requested timing), and :meth:`PLL.instance`
builds the primitive. nextpnr derives the output clock of both primitives from these settings
and checks it against the constraint, so a wrong setting shows up in the build report.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from amaranth import *

__all__ = ["PLL", "ecp5_pll", "ice40_pll"]

# iCE40 sysCLOCK PLL: phase detector 10..133 MHz, VCO 533..1066 MHz, output 16..275 MHz.
ICE40_PFD = (10e6, 133e6)
ICE40_VCO = (533e6, 1066e6)
ICE40_OUT = (16e6, 275e6)
# ECP5 sysCLOCK PLL: phase detector 3.125..400 MHz, VCO 400..800 MHz, output 3.125..400 MHz.
ECP5_PFD = (3.125e6, 400e6)
ECP5_VCO = (400e6, 800e6)
ECP5_OUT = (3.125e6, 400e6)


@dataclass(frozen=True)
class PLL:
    """One PLL setting: ``family`` (``"ice40"`` or ``"ecp5"``), input and output in Hz."""
    family: str
    f_in: float
    f_out: float
    params: dict = field(default_factory=dict)

    def instance(self, clk_in, clk_out, locked):
        """The primitive: ``clk_in`` is the pad (iCE40, an I/O value) or a clock signal (ECP5)."""
        p = self.params
        if self.family == "ice40":
            return Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE",
                p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
                p_FILTER_RANGE=p["FILTER_RANGE"],
                i_PACKAGEPIN=clk_in, i_RESETB=Const(1), i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=clk_out, o_LOCK=locked)
        return Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{self.f_in / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{self.f_out / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKOP_ENABLE="ENABLED", p_FEEDBK_PATH="CLKOP",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=p["CLKOP_DIV"] - 1, p_CLKOP_FPHASE=0,
            i_CLKI=clk_in, i_CLKFB=clk_out, i_RST=Const(0), i_STDBY=Const(0),
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
            i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0),
            o_CLKOP=clk_out, o_LOCK=locked)


def _check(f_in, f_target):
    for name, value in (("Input clock", f_in), ("Target clock", f_target)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise TypeError(f"{name} must be a positive frequency in Hz, not {value!r}")


def _inside(value, limits):
    return limits[0] - 1e-3 <= value <= limits[1] + 1e-3


def ice40_pll(f_in, f_target):
    """The SB_PLL40 (simple feedback) setting with the highest output <= ``f_target``.

    ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2 ** DIVQ)``. Raises :class:`ValueError` when no
    setting reaches the PLL's output range below ``f_target``.
    """
    _check(f_in, f_target)
    best = None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not _inside(pfd, ICE40_PFD):
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not _inside(vco, ICE40_VCO):
                continue
            for divq in range(1, 7):
                out = vco / 2 ** divq
                if _inside(out, ICE40_OUT) and out <= f_target + 1e-3 and \
                        (best is None or out > best[0] + 1e-3):
                    best = (out, divr, divf, divq, pfd)
    if best is None:
        raise ValueError(f"No iCE40 PLL setting gives {ICE40_OUT[0] / 1e6:g} to "
                         f"{f_target / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    out, divr, divf, divq, pfd = best
    # Loop filter range by phase detector frequency (iCE40 sysCLOCK guide).
    filter_range = next(index for index, limit in enumerate(
        (17e6, 26e6, 44e6, 66e6, 101e6, float("inf")), start=1) if pfd < limit)
    return PLL("ice40", f_in, out, {"DIVR": divr, "DIVF": divf, "DIVQ": divq,
                                    "FILTER_RANGE": filter_range})


def ecp5_pll(f_in, f_target):
    """The EHXPLLL (feedback from CLKOP) setting with the highest output <= ``f_target``.

    ``f_out = f_in * CLKFB_DIV / CLKI_DIV``, VCO ``= f_out * CLKOP_DIV``. Raises
    :class:`ValueError` when no setting reaches the PLL's output range below ``f_target``.
    """
    _check(f_in, f_target)
    best = None
    for clki in range(1, 129):
        pfd = f_in / clki
        if not _inside(pfd, ECP5_PFD):
            continue
        for clkfb in range(1, 81):
            out = pfd * clkfb
            if not _inside(out, ECP5_OUT) or out > f_target + 1e-3:
                continue
            if best is not None and out <= best[0] + 1e-3:
                continue
            clkop = next((d for d in range(1, 129) if _inside(out * d, ECP5_VCO)), None)
            if clkop is not None:
                best = (out, clki, clkfb, clkop)
    if best is None:
        raise ValueError(f"No ECP5 PLL setting gives {ECP5_OUT[0] / 1e6:g} to "
                         f"{f_target / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    out, clki, clkfb, clkop = best
    return PLL("ecp5", f_in, out, {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop})
