"""dynamics/integrations is one thin room (DESIGN §2): nothing in the core imports it or its frameworks, and
the adapters import no upper layer (trainers, analysis, reports)."""

import ast
import subprocess
import sys
from pathlib import Path

import dynamics

FRAMEWORKS = ("lightning", "transformers", "accelerate", "tensorboard", "wandb")
PACKAGE = Path(dynamics.__file__).parent


def test_the_core_imports_no_integration_and_no_framework():
    code = ("import sys, dynamics, dynamics.recorder, dynamics.mirrors, dynamics.store, dynamics.ntk, dynamics.capture, "
            "dynamics.gauss_newton, dynamics.cli; from dynamics import Recorder; dynamics.cli.build_parser(); "
            f"print(sorted(m for m in sys.modules if m.startswith('dynamics.integrations') or m.split('.')[0] in "
            f"{FRAMEWORKS!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module)
    return modules


def test_no_core_module_names_the_integrations_and_no_adapter_names_an_upper_layer():
    for path in PACKAGE.rglob("*.py"):
        modules = imported_modules(path)
        if path.parent.name == "integrations":
            assert not {m for m in modules if m.split(".")[0] in ("trainers", "analysis", "reports")}, path
        else:
            assert not {m for m in modules if m.startswith("dynamics.integrations")} - (
                {"dynamics.integrations.tensorboard"} if path.name == "cli.py" else set()), path
            assert not {m for m in modules if m.split(".")[0] in FRAMEWORKS}, path
