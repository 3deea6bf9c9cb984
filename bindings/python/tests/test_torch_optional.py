"""PyTorch is optional: `import vpipe` never imports it, and `import vpipe.torch` without it
fails with an ImportError that says how to install it. Runs with or without torch installed
(a subprocess hides torch by setting sys.modules["torch"] = None)."""

from __future__ import annotations

import os
import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_import_vpipe_does_not_import_torch():
    r = _run("import sys, vpipe; print('torch' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_vpipe_torch_without_torch_says_how_to_install():
    r = _run(
        "import sys; sys.modules['torch'] = None\n"
        "try:\n"
        "    import vpipe.torch\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
    )
    assert r.returncode == 0, r.stderr
    assert "ImportError: vpipe.torch needs PyTorch" in r.stdout
    assert "pip install" in r.stdout and "import vpipe` itself works without it" in r.stdout
