"""Checks implementations on one problem and prints their verdicts as JSON (a child of bench.harness.verdicts).

It runs as a script and imports nothing but `impls`, so it works in any environment that
has the package, asv's own included. Every implementation of the problem is checked in
this one process, so the float64 oracle runs once for all of them.
"""

import json
import sys
import traceback


def main(spec: dict) -> dict:
    import impls
    from impls import agreement

    problem = impls.Problem(**spec["problem"])
    reasons = impls.available(spec["names"])
    verdicts = {}
    for name in spec["names"]:
        if reasons[name] is not None:
            verdicts[name] = {"unavailable": reasons[name]}
            continue
        try:
            report = agreement.check(impls.create(name, problem))
        except Exception:  # a crash is a failed check, reported like one
            verdicts[name] = {"ok": False, "worst_ratio": float("inf"), "report": traceback.format_exc()}
        else:
            verdicts[name] = {"ok": report.ok, "worst_ratio": report.worst_ratio, "report": str(report)}
    return verdicts


if __name__ == "__main__":
    json.dump(main(json.loads(sys.argv[1])), sys.stdout)
