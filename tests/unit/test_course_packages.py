"""The course package set both IDE profiles install (rstudio_server_r_packages, shared by the
jupyterhub role): R Markdown assignments need rmarkdown and knitr, the production BigQuery path
from R needs bigrquery from the dated CRAN snapshot. The Molecule scenario that knits a document
(molecule/rstudio_server) must install a subset of what production ships, so its proof holds for
the defaults."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _defaults() -> dict:
    return yaml.safe_load((ROOT / "roles/rstudio_server/defaults/main.yml").read_text(encoding="utf-8"))


def _scenario_role_vars() -> dict:
    play = yaml.safe_load((ROOT / "molecule/rstudio_server/converge.yml").read_text(encoding="utf-8"))[0]
    return next(r["vars"] for r in play["roles"] if isinstance(r, dict) and r.get("role") == "rstudio_server")


def test_the_course_set_has_r_markdown_and_bigrquery():
    d = _defaults()
    assert {"r-cran-rmarkdown", "r-cran-knitr"} <= set(d["rstudio_server_r_packages"])
    assert "bigrquery" in d["rstudio_server_cran_packages"]


def test_the_scenario_that_knits_a_document_installs_what_production_ships():
    tested = set(_scenario_role_vars()["rstudio_server_r_packages"])
    assert {"r-cran-rmarkdown", "r-cran-knitr"} <= tested
    assert tested <= set(_defaults()["rstudio_server_r_packages"])
