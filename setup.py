"""The wheel carries the top-level config tree inside the package, as ``lpcam/conf/``.

Everything else about the package is in pyproject.toml. In a checkout (and an editable install) the
tree is read where it is, ``conf/`` beside ``lpcam/`` (lpcam/config_dirs.py); a wheel has no such
sibling, so building one copies the tree into the package.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads conf/ in place
            return
        target = Path(self.build_lib) / "lpcam" / "conf"
        for source in sorted((ROOT / "conf").rglob("*.yaml")):
            dest = target / source.relative_to(ROOT / "conf")
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(source), str(dest))


setup(cmdclass={"build_py": BuildWithConfigs})
