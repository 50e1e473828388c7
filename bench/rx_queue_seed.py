#!/usr/bin/env python3
"""rx_queue_seed.py DB N - N pending prescriptions of Organization/hosp-fz-1 for the review-queue
benchmark (bench/rx_queue.sh), as the prescribing service writes them: findings and a summary
of three drugs each; patients pat-1 to pat-5 in turn. SQLite through sqlite3, PostgreSQL
through psql (PGBIN, default /usr/lib/postgresql/15/bin)."""
import json
import os
import subprocess
import sys
import time

db, n = sys.argv[1], int(sys.argv[2])
now = int(time.time() * 1000)
summary = json.dumps({"patient": {"name": "王小明", "gender": "male", "birthDate": "1980-05-01"},
                      "doctor": "李建国", "items": [
                          {"drug": "D%d" % i, "name": "药品%d" % i, "dose": 10, "unit": "mg",
                           "timesPerDay": 3, "days": 7, "quantity": 2} for i in range(3)]},
                     ensure_ascii=False)
warnings = json.dumps([{"code": "duplicate", "severity": "warn", "item": 1,
                        "message": "两种药品属同一治疗类别（重复用药）"}], ensure_ascii=False)
rows = [("bench-rx-%06d" % i, "bench-v-%06d" % i, "pat-%d" % (i % 5 + 1), "P", "prac-1-role",
         "hosp-fz-1", "pending", now - (n - i) * 1000, "d", "s", warnings, summary, 3150)
        for i in range(n)]
cols = ("id, visit_id, patient_id, person, doctor, org, status, created_ms, digest, signature,"
        " warnings, summary, amount_fen")
if db.startswith("sqlite:"):
    import sqlite3
    c = sqlite3.connect(db[7:])
    c.executemany("INSERT INTO rx_prescription (%s) VALUES (%s)" % (cols, ", ".join("?" * 13)),
                  rows)
    c.commit()
    c.execute("ANALYZE")
    c.close()
else:
    psql = os.path.join(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"), "psql")
    esc = lambda v: str(v) if isinstance(v, int) else "'" + v.replace("'", "''") + "'"
    text = "".join("INSERT INTO rx_prescription (%s) VALUES (%s);\n"
                   % (cols, ", ".join(esc(v) for v in r)) for r in rows) + "ANALYZE;\n"
    subprocess.run([psql, db, "-q", "-v", "ON_ERROR_STOP=1"], input=text, text=True, check=True,
                   stdout=subprocess.DEVNULL)
