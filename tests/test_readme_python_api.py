"""The README's "Python API (without Airflow)" example runs as pasted, with ``airflow`` unimportable."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Runs the example with every ``airflow`` import refused, then reports what was imported.
PRELUDE = """
import json, sys

class NoAirflow:
    def find_spec(self, name, path=None, target=None):
        if name == "airflow" or name.startswith("airflow."):
            raise ImportError(f"airflow is not importable here: {name}")
        return None

sys.meta_path.insert(0, NoAirflow())
code = open(sys.argv[1]).read()
exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
print("IMPORTED " + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "airflow")))
"""


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API (without Airflow)\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the section has no python example"
    return blocks[0]


def test_the_readme_python_example_runs_the_desk_without_airflow(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    out = subprocess.run([sys.executable, "-c", PRELUDE, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert json.loads(lines[-1].removeprefix("IMPORTED ")) == []
    assert (tmp_path / "desk.db").exists()
    text = "\n".join(lines)
    assert re.search(r"bars loaded: [1-9]\d*", text), text
    assert re.search(r"forecasts: [1-9]\d*", text), text
    assert re.search(r"orders sent: [1-9]\d*", text), text
    assert re.search(r"equity [\d,.]+", text), text
