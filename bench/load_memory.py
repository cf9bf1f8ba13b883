"""The API processes' memory over a bench/load.py run: is it flat? A table and a chart.

bench/load.py samples each API process's resident memory every 30 s. "Flat" is judged on the
growth per window of the run (MB per 10 min), not on start -> end: a process fills its pools and
caches in its first minutes (psycopg's statement caches, SQLAlchemy's compiled statements, the
dashboard's per-study history), and what matters is whether it keeps growing after that.

load.py calls this for every report it writes. To redraw from a report it wrote earlier:

    .venv/bin/python bench/load_memory.py bench/results/load.md      # writes bench/results/load.png
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

Series = list[tuple[float, float]]  # (seconds into the measured window, RSS MB)
WINDOW_S = 600.0


def growth_rows(series: Series, window_s: float = WINDOW_S) -> list[tuple[float, float, float, float]]:
    """(start s, end s, RSS at the end, growth MB) per ``window_s`` of the run; a last partial
    window is kept if it is at least half a window long."""
    if len(series) < 2:
        return []
    rows = []
    start = series[0]
    for point in series[1:]:
        if point[0] - start[0] >= window_s:
            rows.append((start[0], point[0], point[1], point[1] - start[1]))
            start = point
    last = series[-1]
    if last[0] > start[0] and last[0] - start[0] >= window_s / 2:
        rows.append((start[0], last[0], last[1], last[1] - start[1]))
    return rows


def growth_table(named: dict[str, Series], window_s: float = WINDOW_S) -> str:
    lines = ["| run, process | window | RSS at the end MB | growth MB | MB per 10 min |", "|---|---|---:|---:|---:|"]
    for name, series in named.items():
        for start, end, rss, grown in growth_rows(series, window_s):
            per_10 = grown / (end - start) * 600
            lines.append(f"| {name} | {start / 60:.0f}-{end / 60:.0f} min | {rss:.0f} | {grown:+.1f} | {per_10:+.1f} |")
    return "\n".join(lines)


def draw_chart(named: dict[str, Series], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, series in named.items():
        ax.plot([t / 60 for t, _ in series], [m for _, m in series], marker=".", label=name)
    ax.set_xlabel("minutes into the measured window")
    ax.set_ylabel("API process RSS (MB)")
    top = max((m for series in named.values() for _, m in series), default=1.0)
    ax.set_ylim(0, top * 1.15)  # from zero: growth shown against the whole
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


_SECTION = re.compile(r"^#{2,3} (\S+):", re.M)
_MEMORY = re.compile(r"^API process memory \(RSS MB\) over the window: (.*)$", re.M)
_POINT = re.compile(r"(\d+)s (\d+(?:\.\d+)?)")


def series_from_report(text: str) -> dict[str, Series]:
    """{"<run>, server <i>": series} from the memory lines of a load.py report (the latest report
    in the file where several were appended one after another)."""
    named: dict[str, Series] = {}
    labels = [(m.start(), m.group(1)) for m in _SECTION.finditer(text)]
    for match in _MEMORY.finditer(text):
        label = [name for at, name in labels if at < match.start()][-1]
        for i, part in enumerate(match.group(1).split("; ")):
            points = [(float(t), float(mb)) for t, mb in _POINT.findall(part.split(":", 1)[1])]
            named[f"{label}, server {i}"] = points
    return named


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    report = Path(argv[0])
    named = series_from_report(report.read_text())
    if not named:
        print(f"{report}: no memory series found (is it a bench/load.py report?)", file=sys.stderr)
        return 1
    png = report.with_suffix(".png")
    draw_chart(named, png, "API process memory under bench/load.py")
    print(growth_table(named))
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
