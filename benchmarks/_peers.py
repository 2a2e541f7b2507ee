"""What a run can measure here: peers installed, the reference client, versions, machine, and
what the installed kl3m-data-client accepts (the data plane option).

Nothing is installed at run time except the reference client, pinned exactly
(``kl3m-data-client==0.2.0``, no dependencies) into ``benchmarks/.ref``. The peers (boto3,
s3fs, obstore) come from the pinned ``bench`` extra (``nox -s bench``, or
``pip install -e ".[dev,bench]"``); a missing one is reported and its rows skipped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from _runner import HERE, PY, child_env

REF_DIR = HERE / ".ref"
REFERENCE = "kl3m-data-client==0.2.0"
#: The module each client needs besides this package (clients not listed need none).
NEEDS = {
    "s3fs": "s3fs",
    "obstore": "obstore",
    "obstore-export": "obstore",
    "list-obstore": "obstore",
    "boto3": "boto3",
    "ref": "boto3",
}
#: The data planes of ``AsyncKL3MClient(data_plane=...)`` / ``kl3m-client --data-plane``.
PLANES = ("aiobotocore", "obstore", "auto")
NOT_IN_BUILD = "option not available in this build"


def ensure_reference(log: list[str]) -> None:
    """Install the reference client (pinned exactly, no dependencies) into benchmarks/.ref
    unless it is there; on failure its row is skipped and the reason logged."""
    if (REF_DIR / "kl3m_data_client" / "__init__.py").exists():
        return
    print(f"installing {REFERENCE} into benchmarks/.ref ...", flush=True)
    cmd = [PY, "-m", "pip", "install", "-q", "--no-deps", "--target", str(REF_DIR), REFERENCE]
    if subprocess.run(cmd, check=False).returncode:
        log.append(f"could not install {REFERENCE}: reference skipped")


def missing(client: str) -> str | None:
    """Why ``client`` cannot run here (a missing peer or reference), or None."""
    if client == "ref" and not (REF_DIR / "kl3m_data_client").exists():
        return f"reference not installed ({REFERENCE} into benchmarks/.ref)"
    mod = NEEDS.get(client.split("@")[0])
    if mod is not None and importlib.util.find_spec(mod) is None:
        return f"{mod} not installed (pip install -e '.[bench]')"
    return None


def versions() -> dict[str, str]:
    """Python and the versions of the packages measured (as this interpreter sees them)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    names = ("aiobotocore", "botocore", "aiohttp", "boto3", "s3fs", "obstore", "pyarrow")
    # the fast decoders (dependencies, each with a stdlib fallback) and an optional extra
    for name in (*names, "orjson", "pybase64", "isal", "zstandard"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    out["reference kl3m-data-client"] = "0.2.0 (benchmarks/.ref)"
    return out


def machine() -> dict[str, str]:
    """Cores, CPU model, platform and the load average when the run started."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "platform": platform.platform(),
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in load),
    }


# The installed package as the workload processes see it (their PYTHONPATH): where it is,
# its version, and which data planes its client accepts (constructed only: no request).
_PROBE = """
import json, sys
try:
    import kl3m_data_client as k
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    raise SystemExit(0)
planes = {}
for plane in sys.argv[1:]:
    try:
        k.AsyncKL3MClient(bucket="data.kl3m.ai", endpoint_url="http://127.0.0.1:9",
                          data_plane=plane)
    except TypeError as e:
        planes[plane] = "TypeError: " + str(e)
    except Exception as e:
        planes[plane] = f"rejected: {type(e).__name__}: {e}"
    else:
        planes[plane] = None
print(json.dumps({"file": k.__file__, "version": getattr(k, "__version__", "?"),
                  "planes": planes}))
"""


@dataclass
class Ours:
    """The kl3m-data-client the workloads import, and what it accepts."""

    file: str = "?"
    version: str = "?"
    error: str | None = None
    #: plane -> None (accepted) or why not, for the client and for the CLI
    api: dict[str, str | None] = field(default_factory=dict)
    cli: dict[str, str | None] = field(default_factory=dict)

    def plane_note(self, plane: str, *, cli: bool) -> str | None:
        """Why a row on ``plane`` cannot run (None: it can). The one place that tolerates a
        build without the option."""
        if self.error:
            return f"kl3m_data_client does not import: {self.error}"
        return (self.cli if cli else self.api).get(plane, NOT_IN_BUILD)


def probe_ours(cli: list[str], *, cli_planes: bool = True) -> Ours:
    """Ask a child (same environment as the workloads) about the installed package; the CLI
    too if ``cli_planes`` (``kl3m-client export --help`` lists ``--data-plane``)."""
    env = child_env()
    r = subprocess.run(
        [PY, "-c", _PROBE, *PLANES], capture_output=True, env=env, timeout=120, check=False
    )
    try:
        info = json.loads(r.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        return Ours(error=r.stderr.decode()[-300:] or f"probe exited {r.returncode}")
    if "error" in info:
        return Ours(error=info["error"])
    api: dict[str, str | None] = {}
    for plane, why in info["planes"].items():
        if why is not None and why.startswith("TypeError:") and "data_plane" in why:
            why = NOT_IN_BUILD
        api[plane] = why
    has_option = cli_planes and "--data-plane" in (
        subprocess.run(
            [PY, *cli, "export", "--help"], capture_output=True, env=env, timeout=120, check=False
        ).stdout.decode()
    )
    return Ours(
        file=str(Path(info["file"]).parent),
        version=info["version"],
        api=api,
        cli={p: None if has_option else NOT_IN_BUILD for p in PLANES},
    )


def compile_ours(ours: Ours, log: list[str]) -> None:
    """Byte-compile the measured package, as ``pip install`` does: the children run with
    ``PYTHONDONTWRITEBYTECODE`` (nothing written while measuring), so a source tree edited
    since its last import would otherwise be compiled again by every process measured."""
    if ours.error or not ours.file.endswith("__init__.py"):
        return
    package = str(Path(ours.file).parent)
    cmd = [PY, "-m", "compileall", "-q", package]
    if subprocess.run(cmd, capture_output=True, check=False).returncode:
        log.append(f"could not byte-compile {package}: imports compile it at every start")
