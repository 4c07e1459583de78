"""What a command runs on: Python, the stack's package versions (against the repository's lock of tested versions),
the CPU features adapterkit's fast paths use, and CUDA devices. `adapterkit env` prints it; run.json records it."""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path

# The packages whose versions decide a run's numbers; the lock pins every transitive one.
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "datasets",
    "evaluate",
    "safetensors",
    "tokenizers",
    "huggingface-hub",
    "kernels",
    "optuna",
    "deepspeed",  # None unless installed; decides a DeepSpeed launch's numbers
)
# /proc/cpuinfo flags behind the bf16 autocast and int8 paths (scoring/precision.py, model/fast_int8.py).
CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx512f")
LOCK_NAME = "requirements.lock"


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def default_lock() -> Path | None:
    """The lock of the checkout adapterkit runs from (an editable install); None for an installed wheel."""
    path = Path(__file__).resolve().parents[1] / LOCK_NAME
    return path if path.is_file() else None


def read_lock(path: Path) -> dict[str, str]:
    """`name==version` lines of a pip-compile lock (comments, hashes and markers left out), by canonical name."""
    pins = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;\\#]+)", line)
        if m:
            pins[_canonical(m.group(1))] = m.group(3)
    return pins


def _public(version: str) -> str:
    return version.split("+", 1)[0]  # torch's local label (+cpu) names the build, not the release


def cpu_features() -> dict:
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        line = next((l for l in text.splitlines() if l.startswith("flags")), "")
        flags = set(line.split(":", 1)[-1].split())
    except OSError:
        pass
    out: dict[str, object] = {f: f in flags for f in CPU_FLAGS} if flags else {}
    out["machine"] = platform.machine()
    try:
        import torch

        out["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # torch missing or too old to say
        pass
    return out


def cuda_devices() -> list[str]:
    try:
        import torch

        return (
            [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available()
            else []
        )
    except Exception:
        return []


def record() -> dict:
    """The environment as run.json keeps it."""
    return {
        "python": platform.python_version(),
        "packages": {n: installed(n) for n in PACKAGES},
        "cpu": cpu_features(),
        "cuda": cuda_devices(),
    }


def report(lock: Path | None = None) -> dict:
    """record() with each package's locked version and whether the installed one matches."""
    lock = lock or default_lock()
    pins = read_lock(lock) if lock else {}
    rec = record()
    packages = {}
    for name, version in rec["packages"].items():
        pinned = pins.get(_canonical(name))
        packages[name] = {
            "installed": version,
            "locked": pinned,
            "matches": None if pinned is None else (version is not None and _public(version) == _public(pinned)),
        }
    rec["packages"] = packages
    rec["lock"] = str(lock) if lock else None
    if pins:
        others = [
            f"{n}=={pins[n]} (installed {installed(n) or 'none'})"
            for n in sorted(pins)
            if _canonical(n) not in {_canonical(p) for p in PACKAGES}
            and _public(installed(n) or "") != _public(pins[n])
        ]
        rec["other_mismatches"] = others
    return rec


def format_report(rep: dict) -> str:
    lines = [f"python {rep['python']}"]
    for name, p in rep["packages"].items():
        state = "" if p["matches"] is None else ("  matches the lock" if p["matches"] else f"  LOCK HAS {p['locked']}")
        lines.append(f"{name:<16} {p['installed'] or 'not installed':<14}{state}")
    cpu = rep["cpu"]
    used = [f for f in CPU_FLAGS if cpu.get(f)]
    lines.append(
        f"cpu              {cpu.get('machine')}, torch kernels {cpu.get('torch_capability', '?')}; "
        f"{', '.join(used) if used else 'no AVX-512 / AMX'}"
        + ("; bf16 autocast on (avx512_bf16 or amx)" if cpu.get("avx512_bf16") or cpu.get("amx_tile") else "")
    )
    lines.append(f"cuda             {', '.join(rep['cuda']) if rep['cuda'] else 'no devices'}")
    if rep["lock"] is None:
        lines.append("lock             none found (an installed wheel; give --lock FILE to compare)")
    else:
        others = rep.get("other_mismatches") or []
        lines.append(
            f"lock             {rep['lock']}: "
            + (
                "every other locked package matches"
                if not others
                else f"{len(others)} other package(s) differ: {', '.join(others[:5])}"
                + (" ..." if len(others) > 5 else "")
            )
        )
    return "\n".join(lines)
