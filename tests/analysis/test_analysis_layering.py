"""The analysis layer imports only dynamics (never trainers or reports), DESIGN §2."""

import subprocess
import sys


def test_importing_analysis_loads_no_upper_or_sibling_layer():
    code = ("import sys, analysis, analysis.cka, analysis.rank, analysis.kernels, analysis.probes; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('trainers', 'reports')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
