"""The endpoint inside a gateway-like process: Twisted's asyncio reactor, one loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_bridge_path_through_twisted_udp_on_the_same_loop() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE.parent.parent)]))
    proc = subprocess.run([sys.executable, str(HERE / "twisted_bridge.py")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["frames"] > 20 and result["via_twisted"] > 20
    assert result["ticks"] > 0  # Twisted's timers ran meanwhile
