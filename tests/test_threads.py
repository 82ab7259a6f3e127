"""The default fit waits passively at OpenMP's barriers (fast on a busy machine), keeping the user's choices and the bits."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import src, os, torch; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), torch.get_num_threads())"


def _python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_importing_src_sets_the_passive_wait_policy_before_torch_loads():
    policy, spin, threads = _python(PROBE).split()
    assert policy == "PASSIVE" and spin == "None"
    # the thread count is torch's own choice (here: what it picks without us)
    assert int(threads) == int(_python("import torch; print(torch.get_num_threads())"))


def test_a_users_own_settings_are_kept():
    assert _python(PROBE, OMP_WAIT_POLICY="ACTIVE").split()[:2] == ["ACTIVE", "None"]
    assert _python(PROBE, GOMP_SPINCOUNT="1000").split()[:2] == ["None", "1000"]
    assert _python(PROBE, OMP_NUM_THREADS="1").split() == ["PASSIVE", "None", "1"]


def test_torch_imported_first_is_left_alone():
    """Too late to reach libgomp: then nothing is set (no setting that claims an effect it cannot have)."""
    assert _python("import torch, src, os; print(os.environ.get('OMP_WAIT_POLICY'))") == "None"


TRAIN = """
import hashlib, src, torch
from src.hand.nets import FeedForwardNet
from src.hand.losses import CrossEntropyLoss
from src.hand.optim import GD
torch.manual_seed(0)
x, y = torch.randn(2048, 784), torch.randint(0, 10, (2048,))
net, loss_fn = FeedForwardNet(seed=0), CrossEntropyLoss()
opt = GD(net.parameters(), lr=0.3)
t = torch.nn.functional.one_hot(y, 10).float()
for i in range(0, 2048, 64):
    opt.zero_grad(); loss_fn.from_logits(net.logits(x[i:i+64]), t[i:i+64], net.weights()).backward(); opt.step()
print(hashlib.sha256(torch.cat([p.detach().flatten() for p in net.parameters()]).numpy().tobytes()).hexdigest())
"""


def test_the_wait_policy_does_not_change_a_single_bit():
    """How threads wait cannot change what they compute: the same weights to the last bit (2 threads)."""
    assert len(_python(TRAIN, OMP_NUM_THREADS="2")) == 64
    assert _python(TRAIN, OMP_NUM_THREADS="2") == _python(TRAIN, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="ACTIVE")
