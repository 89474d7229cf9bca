"""Runs pip-audit on the installed packages and says plainly how much it could check.

Fails on any known advisory. When the advisory service cannot be reached (as on a
machine that only sees a package mirror), every package is skipped: that is said
in one line instead of a page of skips, and it is not taken as a pass of the audit.
"""

from __future__ import annotations

import json
import subprocess
import sys


def main() -> int:
    # An advisory may be ignored (--ignore-vuln ID) only when no fixed release exists, with the reason next to it.
    # None is ignored today.
    run = subprocess.run(
        [sys.executable, "-m", "pip_audit", "--skip-editable", "--progress-spinner", "off", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        print(run.stdout, run.stderr, sep="\n")
        return run.returncode or 1
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = [d for d in deps if not d.get("skip_reason")]
    vulnerable = [d for d in audited if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed release"
            print(f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    print(
        f"pip-audit: {len(audited)} packages audited, {len(vulnerable)} with known advisories, {len(skipped)} skipped"
    )
    if deps and not audited:
        print("pip-audit: the advisory service could not be reached from this machine; nothing was audited")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    raise SystemExit(main())
