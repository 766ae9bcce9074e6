"""Benchmark (printed, not asserted): restic backups of 2,000 student homes.

Each home gets typical course files: two R scripts, a notebook, a small R Markdown file and two
CSV extracts (one shared by the whole course, one the student made), generated with a fixed seed.
Measured with restic from Debian in a temporary directory on this machine (local repository):

1. the first backup (every byte new);
2. an incremental backup after 5% of the students changed one script and added a CSV;
3. an incremental backup with nothing changed;
4. restoring one student's home.

Printed: wall time, files, source size and repository size after each step.
Usage: .venv/bin/python benchmarks/bench_backup.py   (restic installed; CDSOPS_BENCH_HOMES=2000)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

HOMES = int(os.environ.get("CDSOPS_BENCH_HOMES", "2000"))
SCRIPT = "library(dplyr)\nlibrary(ggplot2)\nadm <- read.csv('data/admissions.csv')\n"


def csv_rows(rng: random.Random, rows: int) -> str:
    lines = ["subject_id,hadm_id,admittime,los,diagnosis"]
    for _i in range(rows):
        lines.append(f"{rng.randrange(10**5)},{rng.randrange(10**6)},2126-0{rng.randrange(1, 10)}-1{rng.randrange(10)},"
                     f"{rng.random() * 30:.3f},{rng.choice(['SEPSIS', 'PNEUMONIA', 'CHF', 'STROKE'])}")
    return "\n".join(lines) + "\n"


def make_home(base: Path, n: int, shared_csv: str) -> int:
    rng = random.Random(n)
    home = base / f"s{n:06d}"
    (home / "project" / "data").mkdir(parents=True)
    files = {
        "project/analysis.R": SCRIPT + f"fit <- lm(los ~ diagnosis, data = adm)  # student {n}\n" * rng.randrange(5, 40),
        "project/plots.R": SCRIPT + "ggplot(adm, aes(los)) + geom_histogram()\n" * rng.randrange(2, 20),
        "project/explore.ipynb": json.dumps({"cells": [{"cell_type": "code", "source": [SCRIPT] * rng.randrange(1, 30),
                                                        "outputs": []}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}),
        "project/report.Rmd": "---\ntitle: report\n---\n```{r}\nsummary(adm)\n```\n" * rng.randrange(1, 10),
        "project/data/admissions.csv": shared_csv,
        "project/data/my_cohort.csv": csv_rows(rng, rng.randrange(200, 3000)),
    }
    size = 0
    for name, text in files.items():
        (home / name).write_text(text)
        size += len(text)
    return size


def restic(repo: Path, *args: str) -> tuple[float, str]:
    env = dict(os.environ, RESTIC_REPOSITORY=str(repo), RESTIC_PASSWORD="bench-password-0123456789",
               RESTIC_CACHE_DIR=str(repo.parent / "cache"))
    t = time.monotonic()
    out = subprocess.run(["restic", *args], env=env, check=True, capture_output=True, text=True).stdout
    return time.monotonic() - t, out


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def summary(out: str) -> dict:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return next(line for line in lines if line.get("message_type") == "summary")


def report(label: str, seconds: float, out: str, repo: Path) -> None:
    s = summary(out)
    print(f"{label:<34} {seconds:7.1f} s  files new/changed/unmodified {s['files_new']}/{s['files_changed']}/"
          f"{s['files_unmodified']}  added {s['data_added'] / 2**20:7.1f} MiB  repository {du(repo) / 2**20:7.1f} MiB")


def change_some(homes: Path) -> None:
    rng = random.Random(99)
    for n in rng.sample(range(1, HOMES + 1), HOMES // 20):
        home = homes / f"s{n:06d}" / "project"
        with (home / "analysis.R").open("a") as f:
            f.write("# revised after the lecture\nmodel <- glm(los > 7 ~ diagnosis, data = adm)\n")
        (home / "data" / "extra.csv").write_text(csv_rows(rng, 500))


def main() -> None:
    if shutil.which("restic") is None:
        raise SystemExit("restic is not installed (apt-get install restic)")
    print(subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory(prefix="cdsops-bench-backup-") as tmp:
        homes, repo = Path(tmp) / "home", Path(tmp) / "repo"
        shared = csv_rows(random.Random(0), 5000)
        t = time.monotonic()
        size = sum(make_home(homes, n, shared) for n in range(1, HOMES + 1))
        print(f"generated {HOMES} homes, {HOMES * 6} files, {size / 2**20:.1f} MiB in {time.monotonic() - t:.1f} s")
        restic(repo, "init")
        seconds, out = restic(repo, "backup", "--json", "--host", "bench", str(homes))
        report("first backup", seconds, out, repo)
        change_some(homes)
        seconds, out = restic(repo, "backup", "--json", "--host", "bench", str(homes))
        report(f"incremental ({HOMES // 20} homes changed)", seconds, out, repo)
        seconds, out = restic(repo, "backup", "--json", "--host", "bench", str(homes))
        report("incremental (no change)", seconds, out, repo)
        target = Path(tmp) / "restore"
        seconds, _ = restic(repo, "restore", "latest", "--include", str(homes / "s000042"), "--target", str(target))
        print(f"{'restore one home':<34} {seconds:7.1f} s  ({du(target) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
