"""Pure text parsers for what boards print: tegrastats, vcgencmd, nvpmodel, jetson_clocks, nv_tegra_release.

No I/O here: every function takes the text a tool printed and returns data, so each format is tested
on real lines captured from boards (tests/targets/data/). Tokens a parser does not know are skipped,
never fatal: tegrastats adds fields with every JetPack release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# tegrastats prints -256C for a sensor that is absent or not readable (AGX Orin's CV*/GPU zones
# below their operating range, jetson_stats issues #350 and #800); it is not a temperature.
ABSENT_SENSOR_C = -256.0

_TEMP = re.compile(r"^([A-Za-z][A-Za-z0-9_\-]*)@(-?\d+(?:\.\d+)?)C$")
_RAIL_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_RAIL_VALUE = re.compile(r"^(\d+(?:\.\d+)?)(mW)?/(\d+(?:\.\d+)?)(mW)?$")
_USED_TOTAL = re.compile(r"^(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)(kB|MB|GB)$")
_PCT_AT = re.compile(r"^(\d+(?:\.\d+)?)%(?:@(\[[^\]]*\]|\d+(?:\.\d+)?))?$")
_TIMESTAMP = re.compile(r"^(\d\d-\d\d-\d{4}) (\d\d:\d\d:\d\d) ")
_UNIT_MIB = {"kB": 1 / 1024, "MB": 1.0, "GB": 1024.0}

# The input rails that carry the whole module's power. Sub-rails (VDD_CPU_GPU_CV, POM_5V_GPU, ...)
# are parts of it and are never added together: their sum is not the board's draw.
TOTAL_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")


@dataclass
class CpuCore:
    """One CPU core as tegrastats shows it; ``mhz`` is None where the line gives no frequency."""

    load_pct: float
    mhz: float | None


@dataclass
class TegraSample:
    """One tegrastats line. Fields the line does not carry are None (or empty)."""

    timestamp: str | None = None
    ram_used_mib: float | None = None
    ram_total_mib: float | None = None
    swap_used_mib: float | None = None
    swap_total_mib: float | None = None
    cpus: list[CpuCore | None] = field(default_factory=list)  # None: the core is shown as "off"
    gr3d_pct: float | None = None
    gr3d_mhz: list[float] = field(default_factory=list)  # one value per GPC on Orin ("@[a,b]")
    emc_pct: float | None = None
    emc_mhz: float | None = None
    temps: dict[str, float] = field(default_factory=dict)  # sensor -> deg C, absent sensors dropped
    rails: dict[str, tuple[float, float]] = field(default_factory=dict)  # rail -> (current mW, average mW)


def _pct_at(token: str) -> tuple[float, list[float]] | None:
    """``"12%@1300"`` -> (12, [1300]); ``"0%@[0,0]"`` -> (0, [0, 0]); ``"0%"`` -> (0, [])."""
    m = _PCT_AT.match(token)
    if not m:
        return None
    freq = m.group(2)
    if freq is None:
        return float(m.group(1)), []
    values = [v.strip() for v in freq.strip("[]").split(",")]
    return float(m.group(1)), [float(v) for v in values if v]


def _cpu_list(text: str) -> list[CpuCore | None]:
    """``[5%@1224,off]`` (per-core frequency) or ``[5%,6%]@1224`` (one frequency for all, old L4T)."""
    inner, _, after = text.partition("]")
    shared = float(after[1:]) if after.startswith("@") and after[1:].replace(".", "", 1).isdigit() else None
    cores: list[CpuCore | None] = []
    for entry in inner.lstrip("[").split(","):
        entry = entry.strip()
        if not entry:
            continue
        if entry == "off":
            cores.append(None)
            continue
        load, _, mhz = entry.partition("@")
        try:
            cores.append(CpuCore(float(load.rstrip("%")), float(mhz) if mhz else shared))
        except ValueError:
            continue
    return cores


def parse_tegrastats(line: str) -> TegraSample:
    """Parse one line of ``tegrastats`` output (L4T 28 to JetPack 6); unknown tokens are ignored."""
    sample = TegraSample()
    line = line.strip()
    ts = _TIMESTAMP.match(line)
    if ts:
        sample.timestamp = f"{ts.group(1)} {ts.group(2)}"
        line = line[ts.end():]
    tokens = line.split()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in ("RAM", "SWAP") and _USED_TOTAL.match(nxt):
            used, total, unit = _USED_TOTAL.match(nxt).groups()
            scale = _UNIT_MIB[unit]
            if tok == "RAM":
                sample.ram_used_mib, sample.ram_total_mib = float(used) * scale, float(total) * scale
            else:
                sample.swap_used_mib, sample.swap_total_mib = float(used) * scale, float(total) * scale
            i += 2
            continue
        if tok == "CPU" and nxt.startswith("["):
            # Old releases put spaces inside the brackets ("[X%,Y%, , ]@Z"): join up to the "]".
            j = i + 1
            parts = [tokens[j]]
            while "]" not in parts[-1] and j + 1 < len(tokens):
                j += 1
                parts.append(tokens[j])
            sample.cpus = _cpu_list("".join(parts))
            i = j + 1
            continue
        if tok in ("GR3D_FREQ", "EMC_FREQ"):
            parsed = _pct_at(nxt)
            if parsed is not None:
                pct, mhz = parsed
                if tok == "GR3D_FREQ":
                    sample.gr3d_pct, sample.gr3d_mhz = pct, mhz
                else:
                    sample.emc_pct, sample.emc_mhz = pct, (mhz[0] if mhz else None)
                i += 2
                continue
        m = _TEMP.match(tok)
        if m:
            value = float(m.group(2))
            if value != ABSENT_SENSOR_C:
                sample.temps[m.group(1)] = value
            i += 1
            continue
        if _RAIL_NAME.match(tok):
            rv = _RAIL_VALUE.match(nxt)
            if rv:
                # Old releases print plain numbers, newer ones "mW"; both are milliwatts.
                sample.rails[tok] = (float(rv.group(1)), float(rv.group(3)))
                i += 2
                continue
        i += 1
    return sample


def total_input_power_mw(sample: TegraSample) -> tuple[str, float] | None:
    """(rail name, current mW) of the module's total input rail, or None where the line has none.

    Only ``VDD_IN`` (Xavier NX, Orin NX/Nano, TX2) and ``POM_5V_IN`` (Nano) are totals. AGX Xavier
    (GPU/CPU/SOC/CV/VDDRQ/SYS5V) and AGX Orin (VDD_GPU_SOC/VDD_CPU_CV/VIN_SYS_5V0) print sub-rails
    only; adding them would not give the board's input power, so those boards get None.
    """
    for name in TOTAL_INPUT_RAILS:
        if name in sample.rails:
            return name, sample.rails[name][0]
    return None


# --- vcgencmd (Raspberry Pi) -------------------------------------------------------------------

# get_throttled bits, as documented for vcgencmd (raspberrypi/documentation, "get_throttled").
PI_THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm frequency capped",
    2: "currently throttled",
    3: "soft temperature limit active",
}
# The same four conditions as the sticky bits 16-19 name them ("has occurred since boot").
PI_HISTORY_BITS = {
    0: "under-voltage",
    1: "arm frequency capping",
    2: "throttling",
    3: "soft temperature limit",
}
PI_NOW_MASK = 0xF
PI_HISTORY_SHIFT = 16
PI_HISTORY_MASK = PI_NOW_MASK << PI_HISTORY_SHIFT


@dataclass
class ThrottleState:
    """The bits of ``vcgencmd get_throttled``: 0-3 are true now, 16-19 have occurred since boot."""

    raw: int

    def _bit(self, n: int) -> bool:
        return bool(self.raw >> n & 1)

    @property
    def under_voltage(self) -> bool:
        return self._bit(0)

    @property
    def arm_freq_capped(self) -> bool:
        return self._bit(1)

    @property
    def throttled(self) -> bool:
        return self._bit(2)

    @property
    def soft_temp_limit(self) -> bool:
        return self._bit(3)

    @property
    def under_voltage_occurred(self) -> bool:
        return self._bit(16)

    @property
    def arm_freq_capped_occurred(self) -> bool:
        return self._bit(17)

    @property
    def throttled_occurred(self) -> bool:
        return self._bit(18)

    @property
    def soft_temp_limit_occurred(self) -> bool:
        return self._bit(19)

    @property
    def now(self) -> bool:
        """Any of bits 0-3: the Pi is limited at this moment."""
        return bool(self.raw & PI_NOW_MASK)

    @property
    def since_boot(self) -> bool:
        """Any of bits 16-19: a limit has been hit at some point since boot."""
        return bool(self.raw & PI_HISTORY_MASK)

    def reasons(self, history: bool = True) -> list[str]:
        """Readable reasons: ``"pi: arm frequency capped"`` for bits set now, then (with ``history``)
        ``"pi: arm frequency capping has occurred since boot"`` for the sticky bits."""
        out = [f"pi: {text}" for bit, text in PI_THROTTLE_BITS.items() if self._bit(bit)]
        if history:
            out += [f"pi: {text} has occurred since boot" for bit, text in PI_HISTORY_BITS.items()
                    if self._bit(bit + PI_HISTORY_SHIFT)]
        return out

    def to_dict(self) -> dict[str, object]:
        return {"raw": hex(self.raw), "now": self.now, "since_boot": self.since_boot, "reasons": self.reasons()}


def _value_after_equals(text: str, prefix: str) -> str:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not line.startswith(prefix) or "=" not in line:
        raise ValueError(f"not a vcgencmd {prefix!r} reply: {text.strip()[:80]!r}")
    return line.split("=", 1)[1]


def parse_measure_temp(text: str) -> float:
    """``"temp=48.3'C"`` -> 48.3 (deg C)."""
    value = _value_after_equals(text, "temp=")
    return float(value.split("'")[0].rstrip("C"))


def parse_measure_clock(text: str) -> float:
    """``"frequency(48)=1500398464"`` -> 1500.398464 (MHz). The number in brackets is the clock id
    (48 on a Pi 4, 0 on a Pi 5) and is ignored."""
    return int(_value_after_equals(text, "frequency(")) / 1e6


def parse_get_throttled(text: str) -> ThrottleState:
    """``"throttled=0x50005"`` -> ThrottleState(raw=0x50005)."""
    return ThrottleState(int(_value_after_equals(text, "throttled="), 16))


# --- Jetson tools ------------------------------------------------------------------------------


@dataclass
class NvpModel:
    """The current power mode from ``nvpmodel -q``."""

    name: str
    id: int | None


def parse_nvpmodel_query(text: str) -> NvpModel | None:
    """``nvpmodel -q`` prints ``NV Power Mode: MAXN`` then the mode id on the next line; warning and
    error lines (``NVPM WARN``/``NVPM ERROR``) may come before or after. None if there is no mode line."""
    lines = [ln.strip() for ln in text.splitlines()]
    for n, ln in enumerate(lines):
        if ln.startswith("NV Power Mode:"):
            name = ln.split(":", 1)[1].strip()
            ident = None
            if n + 1 < len(lines) and lines[n + 1].isdigit():
                ident = int(lines[n + 1])
            return NvpModel(name, ident) if name else None
    return None


_CLOCK_FIELD = re.compile(r"(\w+)=(\S+)")


def parse_jetson_clocks_show(text: str) -> dict[str, object]:
    """``jetson_clocks --show``: SoC family, machine, each CPU's governor and min/max/current kHz, and the
    GPU/EMC lines' fields. ``cpus_min_equals_max`` is True when every online CPU has MinFreq == MaxFreq,
    which is what ``jetson_clocks`` sets (it raises each minimum to the maximum); None if no CPU lines."""
    out: dict[str, object] = {}
    cpus: dict[str, dict[str, object]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("SOC family:"):
            fam, _, machine = line[len("SOC family:"):].partition("Machine:")
            out["soc_family"] = fam.strip()
            out["machine"] = machine.strip()
        elif line.startswith("Online CPUs:"):
            out["online_cpus"] = line.split(":", 1)[1].strip()
        elif re.match(r"^cpu\d+:", line):
            name, _, rest = line.partition(":")
            fields = dict(_CLOCK_FIELD.findall(rest))
            cpus[name] = {k: (int(v) if v.isdigit() else v) for k, v in fields.items()
                          if k in ("Online", "Governor", "MinFreq", "MaxFreq", "CurrentFreq")}
        elif line.startswith(("GPU ", "EMC ")):
            name, _, rest = line.partition(" ")
            out[name.lower()] = {k: (int(v) if v.isdigit() else v) for k, v in _CLOCK_FIELD.findall(rest)}
        elif line.startswith("NV Power Mode:"):
            out["nv_power_mode"] = line.split(":", 1)[1].strip()
    out["cpus"] = cpus
    online = [c for c in cpus.values() if c.get("Online", 1) == 1 and "MinFreq" in c and "MaxFreq" in c]
    out["cpus_min_equals_max"] = all(c["MinFreq"] == c["MaxFreq"] for c in online) if online else None
    return out


_L4T = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


def parse_nv_tegra_release(text: str) -> str | None:
    """``# R32 (release), REVISION: 7.1, GCID: ...`` -> ``"32.7.1"``; None if the line is not there."""
    m = _L4T.search(text)
    return f"{m.group(1)}.{m.group(2)}" if m else None
