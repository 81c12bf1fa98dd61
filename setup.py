"""Build step: ship the top-level `configs/*.yaml` inside the wheel as `ctsearcher_jax/configs/`.

`configs/` stays the one copy users read and edit; the build copies it, so an installed package
resolves `--config paper` / `--config tiny` without a checkout. Everything else is pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "ctsearcher_jax" / "configs"
        target.mkdir(parents=True, exist_ok=True)
        for src in sorted(Path(__file__).parent.joinpath("configs").glob("*.yaml")):
            self.copy_file(str(src), str(target / src.name))


setup(cmdclass={"build_py": BuildWithConfigs})
