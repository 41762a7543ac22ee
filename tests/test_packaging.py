"""The sdist and wheel build and install cleanly, with their typing marker."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_sdist_and_wheel_build_and_install(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # python -m build makes the sdist, then the wheel from the unpacked sdist.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    wheels = list(dist.glob("rsauth-*.whl"))
    sdists = list(dist.glob("rsauth-*.tar.gz"))
    assert len(wheels) == 1
    assert len(sdists) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "rsauth/py.typed" in names
    assert "rsauth/sandbox/__main__.py" in names
    assert not [name for name in names if name.startswith("tests/")]

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), str(wheels[0])],
        check=True, capture_output=True, timeout=300,
    )
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import rsauth, rsauth.sandbox; "
        "print(rsauth.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(target)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    assert out.strip().startswith(str(target))
