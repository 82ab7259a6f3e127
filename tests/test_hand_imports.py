"""src.hand is the math alone: importing all of it loads torch and none of the system's libraries."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import src.hand

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_LIBRARIES = ("lightning", "pytorch_lightning", "lightning_fabric", "jsonargparse", "torchvision", "torchmetrics")

_PROBE = """
import importlib, json, pkgutil, sys
import src.hand
names = sorted(m.name for m in pkgutil.iter_modules(src.hand.__path__, "src.hand."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_src_hand_imports_torch_and_nothing_of_the_system():
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.splitlines()[-1])
    expected = sorted(f"src.hand.{m.name}" for m in pkgutil.iter_modules(src.hand.__path__))
    assert seen["modules"] == expected and "src.hand.fused" in expected  # every module was imported
    assert "torch" in seen["loaded"]
    assert not set(SYSTEM_LIBRARIES) & set(seen["loaded"]), set(SYSTEM_LIBRARIES) & set(seen["loaded"])
