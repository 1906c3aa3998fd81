"""The course around the notebooks: how long each lesson takes, measured, shown at its top and in the instructor's guide.

`notebooks/measured_times.json` holds `replib.execute` timing logs of full-profile runs: "cold" (an empty checkpoint
cache, so the notebook trains its models) and "cached" (the same cache again, so it loads them). It is written from
those logs, never typed:

    python -m replib.course record --cold build/cold/timings.json --cached build/cached/timings.json

Several logs may be given per kind; a later one's entries replace an earlier one's (a notebook re-timed after a change).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "notebooks" / "measured_times.json"
KINDS = ("cold", "cached")


def load_times(path: Path = MEASURED) -> dict[str, dict[str, dict[str, Any]]]:
    """{"cold": {notebook stem: entry}, "cached": {...}}; empty kinds when the file is missing (replib without its
    notebooks folder)."""
    data = json.loads(path.read_text()) if path.exists() else {}
    return {kind: data.get(kind, {}) for kind in KINDS}


def _entry(times: dict[str, dict[str, Any]], notebook: str) -> dict[str, Any] | None:
    """The entry of notebook "05" (or "05_unet_digits") in one kind's log."""
    for stem, entry in times.items():
        if stem == notebook or stem.split("_")[0] == notebook:
            return entry
    return None


def duration(seconds: float) -> str:
    """A time as a learner reads it: 40 s, 3 min, 11 min, 1 h 05 min."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60):02d} min"


def _machine(entry: dict[str, Any]) -> str:
    m = entry.get("machine", {})
    return f"{m.get('cpu', 'a CPU')} with {m.get('logical_cpus', '?')} logical CPUs"


def lesson_time(notebook: str, path: Path = MEASURED) -> str:
    """One markdown sentence: the notebook's measured full-profile time, cold and cached, and where it was measured."""
    times = load_times(path)
    cold, cached = _entry(times["cold"], notebook), _entry(times["cached"], notebook)
    if cold is None and cached is None:
        return f"**Time:** not measured yet for notebook {notebook}."
    parts = []
    if cold is not None:
        parts.append(f"about **{duration(cold['seconds'])}** from scratch (it trains its models)")
    if cached is not None:
        parts.append(f"**{duration(cached['seconds'])}** once its models are cached (a second run, or from an "
                     "instructor's checkpoint pack)")
    ref = cold or cached
    when = str(ref.get("finished", ""))[:10] or "an undated run"
    return f"**Time:** {' and '.join(parts)}; measured {when} on {_machine(ref)}."


def say(text: str) -> None:
    """Show markdown written from this run's variables (an f-string), so prose and numbers always agree with the cells
    above; plain text when IPython is absent. Tag the cell `remove-input` so the book shows only the prose."""
    try:
        from IPython.display import Markdown, display
        display(Markdown(text))
    except ImportError:
        print(text)


def show_time(notebook: str) -> None:
    """Show `lesson_time` at the top of a notebook."""
    say(lesson_time(notebook))


def times_table(path: Path = MEASURED) -> str:
    """A markdown table of every notebook's measured times, cold and cached, with the total."""
    times = load_times(path)
    names = sorted(set(times["cold"]) | set(times["cached"]))
    rows = ["| notebook | from scratch (trains) | models cached |", "|---|---|---|"]
    total = {kind: 0.0 for kind in KINDS}
    for name in names:
        cells = []
        for kind in KINDS:
            entry = times[kind].get(name)
            cells.append(duration(entry["seconds"]) if entry else "not measured")
            total[kind] += entry["seconds"] if entry else 0.0
        rows.append(f"| `{name}` | {cells[0]} | {cells[1]} |")
    rows.append(f"| **all** | **{duration(total['cold'])}** | **{duration(total['cached'])}** |")
    return "\n".join(rows)


def record(cold: list[Path], cached: list[Path], out: Path = MEASURED) -> dict[str, dict[str, Any]]:
    """Write `out` from full-profile timing logs (later logs win per notebook); refuse entries of another profile."""
    data: dict[str, dict[str, Any]] = {}
    for kind, logs in (("cold", cold), ("cached", cached)):
        merged: dict[str, Any] = {}
        for log in logs:
            for stem, entry in json.loads(Path(log).read_text()).items():
                if entry.get("profile") != "full" or entry.get("overrides"):
                    raise SystemExit(f"{log}: {stem} was not a plain full-profile run "
                                     f"(profile {entry.get('profile')!r}, overrides {entry.get('overrides')}); "
                                     "the course shows what a learner runs")
                merged[stem] = entry
        data[kind] = dict(sorted(merged.items()))
    out.write_text(json.dumps(data, indent=1) + "\n")
    return data


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m replib.course", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="write notebooks/measured_times.json from replib.execute timing logs")
    rec.add_argument("--cold", type=Path, nargs="+", required=True, help="timings.json of runs with an empty cache")
    rec.add_argument("--cached", type=Path, nargs="+", required=True, help="timings.json of runs with the cache filled")
    rec.add_argument("--out", type=Path, default=MEASURED)
    sub.add_parser("table", help="print the measured times as a markdown table")
    args = ap.parse_args(argv)
    if args.command == "record":
        record(args.cold, args.cached, args.out)
        print(f"wrote {args.out}")
    else:
        print(times_table())


if __name__ == "__main__":
    main()
