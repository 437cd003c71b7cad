import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_config_table_matches_the_schema() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "schema_doc.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
