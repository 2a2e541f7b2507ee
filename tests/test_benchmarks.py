"""The benchmark runner end to end on a tiny bucket: ``benchmarks/run.py`` builds the bucket,
starts its endpoint, runs two clients in their own processes, and writes the table, the
targets, the chart, latest.{md,json} and the generated block of a RESULTS file. No network and
no peer of the ``bench`` extra: raw aiobotocore and our async stream only, 0 ms latency."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
HAND_WRITTEN = "# Results\n\nText written by hand.\n"
OLD_BLOCK = "<!-- BEGIN GENERATED (benchmarks/run.py) -->\nold figures\n<!-- END GENERATED -->\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_runner_table_targets_chart_and_results(tmp_path: Path) -> None:
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text(HAND_WRITTEN + OLD_BLOCK + "\nMore hand text.\n")
    chart = tmp_path / "chart.png"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    args = ["--docs", "50", "--only", "aiobotocore,ours-async", "--latencies", "0"]
    args += ["--repeat", "1", "--skip", "list,rss,startup,capacity"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "out")]
    args += ["--chart", str(chart), "--write-results", str(results_md)]
    proc = subprocess.run(
        [sys.executable, str(RUN), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout

    # the workloads imported this checkout's package
    assert f"from {ROOT / 'src' / 'kl3m_data_client'}" in out
    # one table with both rows, every document fetched and decoded by each
    head = "| client | docs | docs/s | CPU ms/doc | peak RSS MB | docs/s vs obstore raw "
    assert out.count(head) == 1
    rows = {line.split(" | ")[0]: line for line in out.splitlines() if " | 50 | " in line}
    assert set(rows) == {
        "| raw aiobotocore, 64-way semaphore",
        "| ours: AsyncKL3MClient.stream_documents",
    }
    ours_cells = rows["| ours: AsyncKL3MClient.stream_documents"].split(" | ")
    assert ours_cells[5:7] == ["-", "1.00x"]  # no obstore in this run; itself

    latest = json.loads((tmp_path / "out" / "latest.json").read_text())
    best = latest["fetch"]["0.0"]
    for client in ("aiobotocore", "ours-async"):
        r = best[client]
        assert r["docs"] == 50
        assert 0 < r["seconds"] < 60
        assert 0 < r["cpu"] / r["docs"] < 1.0  # seconds of CPU per document
        assert 10_000 < r["rss_kb"] < 2_000_000  # a Python process: 10 MB .. 2 GB
    assert (tmp_path / "out" / "latest.md").read_text().splitlines()[0].startswith("# ")

    # targets: the async stream measured against itself is n/a without obstore
    checks = {c["target"]: c for c in latest["targets"]}
    assert checks["stream_documents"]["ratio"] is None
    assert "| stream_documents | >= 0.9x obstore | n/a | - |" in out

    width, height = _png_size(chart)
    assert width > 600 and height > 150
    assert latest["chart"] == str(chart)

    text = results_md.read_text()
    assert text.startswith(HAND_WRITTEN) and text.endswith("\nMore hand text.\n")
    assert "old figures" not in text
    assert text.count("<!-- BEGIN GENERATED (benchmarks/run.py) -->") == 1
    assert rows["| ours: AsyncKL3MClient.stream_documents"] in text
