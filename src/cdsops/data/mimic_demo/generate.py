"""Generate the invented MIMIC-like demo dataset shipped with cdsops.

Every row is made up from a seeded random generator: there is no real patient, no real
date and no real note here. Column names follow MIMIC-IV (hosp and note modules) so course
material written for MIMIC works unchanged; dates are shifted into 2110-2190 as MIMIC does.

    python src/cdsops/data/mimic_demo/generate.py [OUT_DIR]   # writes *.csv and mimic_demo.duckdb

The output is deterministic (same seed, same CSV bytes).
"""

from __future__ import annotations

import csv
import random
import sys
from datetime import datetime, timedelta
from pathlib import Path

SEED = 20261126
N_PATIENTS = 100
HERE = Path(__file__).resolve().parent

TABLES = {
    "patients": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    "admissions": ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
                   "admission_location", "discharge_location", "insurance", "language", "marital_status",
                   "race", "hospital_expire_flag"],
    "diagnoses_icd": ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    "d_icd_diagnoses": ["icd_code", "icd_version", "long_title"],
    "d_labitems": ["itemid", "label", "fluid", "category"],
    "labevents": ["labevent_id", "subject_id", "hadm_id", "itemid", "charttime", "valuenum", "valueuom", "flag"],
    "discharge": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "text"],
}
DUCKDB_TYPES = {
    "subject_id": "INTEGER", "hadm_id": "INTEGER", "anchor_age": "INTEGER", "anchor_year": "INTEGER",
    "dod": "DATE", "admittime": "TIMESTAMP", "dischtime": "TIMESTAMP", "deathtime": "TIMESTAMP",
    "hospital_expire_flag": "INTEGER", "seq_num": "INTEGER", "icd_version": "INTEGER", "itemid": "INTEGER",
    "labevent_id": "BIGINT", "charttime": "TIMESTAMP", "valuenum": "DOUBLE", "note_seq": "INTEGER",
}

DIAGNOSES = [  # (ICD-10 code, title, relative weight)
    ("I10", "Essential (primary) hypertension", 10), ("E119", "Type 2 diabetes mellitus without complications", 7),
    ("I4891", "Unspecified atrial fibrillation", 5), ("J189", "Pneumonia, unspecified organism", 5),
    ("N179", "Acute kidney failure, unspecified", 4), ("I5033", "Acute on chronic diastolic (congestive) heart failure", 4),
    ("A419", "Sepsis, unspecified organism", 3), ("J441", "Chronic obstructive pulmonary disease with (acute) exacerbation", 3),
    ("E785", "Hyperlipidemia, unspecified", 6), ("K219", "Gastro-esophageal reflux disease without esophagitis", 4),
    ("F329", "Major depressive disorder, single episode, unspecified", 3), ("I214", "Non-ST elevation (NSTEMI) myocardial infarction", 2),
    ("N390", "Urinary tract infection, site not specified", 3), ("D649", "Anemia, unspecified", 4),
]
LABS = [  # itemid, label, fluid, category, unit, normal low, normal high, mean, sd
    (50912, "Creatinine", "Blood", "Chemistry", "mg/dL", 0.5, 1.2, 1.1, 0.6),
    (50971, "Potassium", "Blood", "Chemistry", "mEq/L", 3.5, 5.1, 4.2, 0.5),
    (50983, "Sodium", "Blood", "Chemistry", "mEq/L", 135, 145, 139, 4),
    (50931, "Glucose", "Blood", "Chemistry", "mg/dL", 70, 100, 125, 40),
    (51222, "Hemoglobin", "Blood", "Hematology", "g/dL", 12, 17, 11.5, 2.0),
    (51301, "White Blood Cells", "Blood", "Hematology", "K/uL", 4, 11, 9.0, 3.5),
    (50813, "Lactate", "Blood", "Blood Gas", "mmol/L", 0.5, 2.0, 1.8, 1.0),
]
ADM_TYPES = ["EW EMER.", "URGENT", "ELECTIVE", "OBSERVATION ADMIT", "DIRECT EMER."]
ADM_LOCS = ["EMERGENCY ROOM", "PHYSICIAN REFERRAL", "TRANSFER FROM HOSPITAL", "WALK-IN/SELF REFERRAL", "CLINIC REFERRAL"]
DIS_LOCS = ["HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY", "REHAB", "HOSPICE"]
INSURANCE = ["Medicare", "Medicaid", "Other"]
MARITAL = ["MARRIED", "SINGLE", "WIDOWED", "DIVORCED", ""]
RACE = ["WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO", "ASIAN", "OTHER", "UNKNOWN"]
COMPLAINTS = ["shortness of breath", "chest pain", "fever and confusion", "abdominal pain", "fall at home", "weakness"]


def _fmt(dt: datetime | None) -> str:
    return "" if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S")


def _note(rng: random.Random, age: int, gender: str, complaint: str, titles: list[str], days: int, died: bool) -> str:
    sex = {"F": "female", "M": "male"}[gender]
    course = rng.choice(["was treated with intravenous fluids and antibiotics", "was started on diuretics",
                         "was monitored on telemetry", "received supportive care", "was seen by the consulting team"])
    outcome = "expired despite maximal therapy" if died else rng.choice(["improved and was discharged", "was stable at discharge"])
    return (
        f"INVENTED DEMO NOTE - not a real patient.\n"
        f"Chief complaint: {complaint}.\n"
        f"History: ___ is a {age} year old {sex} presenting with {complaint}.\n"
        f"Hospital course: over {days} days the patient {course}. Diagnoses: {'; '.join(titles)}.\n"
        f"Outcome: the patient {outcome}.\n"
        f"Follow-up: with primary care physician in ___ weeks."
    )


def generate() -> dict[str, list[list[object]]]:
    rng = random.Random(SEED)
    rows: dict[str, list[list[object]]] = {t: [] for t in TABLES}
    rows["d_icd_diagnoses"] = [[c, 10, t] for c, t, _w in sorted(DIAGNOSES)]
    rows["d_labitems"] = [[i, label, fluid, cat] for i, label, fluid, cat, *_ in sorted(LABS)]
    hadm_id = 20000000
    labevent_id = 1
    note_n = 0
    for n in range(N_PATIENTS):
        subject_id = 10000000 + n * 37 + rng.randrange(37)
        gender = rng.choice("FM")
        age = rng.randint(18, 91)
        anchor_year = rng.randint(2110, 2185)
        group = rng.choice(["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022"])
        t = datetime(anchor_year, 1, 1) + timedelta(days=rng.randrange(300), minutes=rng.randrange(1440))
        race, marital, insurance = rng.choice(RACE), rng.choice(MARITAL), rng.choice(INSURANCE)
        dod = None
        n_adm = rng.choices([1, 2, 3, 4], weights=[55, 25, 12, 8])[0]
        for a in range(n_adm):
            hadm_id += rng.randint(1, 977)
            days = rng.randint(1, 14)
            admit = t
            disch = admit + timedelta(days=days, minutes=rng.randrange(600))
            died = a == n_adm - 1 and rng.random() < 0.08
            rows["admissions"].append([
                subject_id, hadm_id, _fmt(admit), _fmt(disch), _fmt(disch) if died else "", rng.choice(ADM_TYPES),
                rng.choice(ADM_LOCS), "DIED" if died else rng.choice(DIS_LOCS), insurance, "ENGLISH", marital, race,
                int(died),
            ])
            if died:
                dod = disch.date().isoformat()
            codes = rng.sample(DIAGNOSES, k=rng.randint(1, 5))
            for seq, (code, _title, _w) in enumerate(codes, start=1):
                rows["diagnoses_icd"].append([subject_id, hadm_id, seq, code, 10])
            for itemid, _label, _fluid, _cat, unit, lo, hi, mean, sd in LABS:
                for _k in range(rng.randint(1, 3)):
                    when = admit + timedelta(hours=rng.randrange(days * 24))
                    value = round(max(0.1, rng.gauss(mean, sd)), 1)
                    flag = "abnormal" if value < lo or value > hi else ""
                    rows["labevents"].append([labevent_id, subject_id, hadm_id, itemid, _fmt(when), value, unit, flag])
                    labevent_id += 1
            note_n += 1
            complaint = rng.choice(COMPLAINTS)
            rows["discharge"].append([
                f"{subject_id}-DS-{a + 1}", subject_id, hadm_id, "DS", a + 1, _fmt(disch),
                _note(rng, age, gender, complaint, [c[1] for c in codes], days, died),
            ])
            t = disch + timedelta(days=rng.randint(20, 700))
        rows["patients"].append([subject_id, gender, age, anchor_year, group, dod or ""])
    rows["labevents"].sort(key=lambda r: (r[1], r[4], r[0]))
    return rows


def write(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = generate()
    for table, cols in TABLES.items():
        with open(out / f"{table}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(cols)
            w.writerows(rows[table])
    build_duckdb(out, out / "mimic_demo.duckdb")


def build_duckdb(csv_dir: Path, target: Path) -> None:
    import duckdb

    tmp = target.with_suffix(".duckdb.tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        for table, cols in TABLES.items():
            types = {c: DUCKDB_TYPES.get(c, "VARCHAR") for c in cols}
            col_sql = ", ".join(f"{c} {t}" for c, t in types.items())
            con.execute(f"CREATE TABLE {table} ({col_sql})")
            con.execute(
                f"INSERT INTO {table} SELECT * FROM read_csv(?, header=true, columns={types!r}, nullstr='', quote='\"', escape='\"')",
                [str(csv_dir / f"{table}.csv")],
            )
        con.execute("CHECKPOINT")
    finally:
        con.close()
    tmp.replace(target)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
