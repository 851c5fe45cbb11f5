"""Builds the extension module and the plugins with the project's CMake, then packages them with
the Python sources, codecs and pipeline presets (pyproject.toml has the metadata).

Environment:
  NWC_BUILD_DIR     CMake build directory to use (default: <repo>/build/pip). An existing build
                    directory (e.g. build/release) is reused as it is configured; a new one is
                    configured with Ninja, Release, NWC_PYTHON=ON, NWC_BUILD_TESTS=OFF and this
                    interpreter.
  NWC_WITH_RUNTIME  ON (default) or OFF: build with or without the LibTorch model runtime (new
                    build directories only).
  NWC_BUILD_JOBS    parallel build jobs (default: CMake's).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class BinaryDistribution(Distribution):
    """The wheel holds a compiled module: platform-specific, not pure Python."""

    def has_ext_modules(self) -> bool:
        return True


def run(cmd: list[str]) -> None:
    print("setup.py:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


class BuildWithCMake(build_py):
    def run(self) -> None:
        super().run()
        build_dir = os.environ.get("NWC_BUILD_DIR") or os.path.join(ROOT, "build", "pip")
        if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
            run(["cmake", "-S", ROOT, "-B", build_dir, "-G", "Ninja",
                 "-DCMAKE_BUILD_TYPE=Release", "-DNWC_PYTHON=ON", "-DNWC_BUILD_TESTS=OFF",
                 f"-DNWC_WITH_RUNTIME={os.environ.get('NWC_WITH_RUNTIME', 'ON')}",
                 f"-DPython3_EXECUTABLE={sys.executable}"])
        build = ["cmake", "--build", build_dir, "--target", "nwc_python"]
        if os.environ.get("NWC_BUILD_JOBS"):
            build += ["-j", os.environ["NWC_BUILD_JOBS"]]
        run(build)

        package = os.path.join(self.build_lib, "nwc")
        modules = glob.glob(os.path.join(build_dir, "python", "nwc", "_nwc*.so"))
        if len(modules) != 1:
            raise RuntimeError(f"{build_dir}/python/nwc: expected one _nwc*.so, found {modules}")
        shutil.copy2(modules[0], package)
        # The plugins, codecs and presets travel inside the package; _location.py says where.
        plugins = os.path.join(package, "plugins")
        os.makedirs(plugins, exist_ok=True)
        for so in glob.glob(os.path.join(build_dir, "lib", "nwc", "plugins", "nwc-*.so")):
            shutil.copy2(so, plugins)
        for data in ("codecs", "pipelines"):
            dst = os.path.join(package, "share", data)
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(os.path.join(ROOT, data), dst,
                            ignore=shutil.ignore_patterns("*.ckpt*"))
        with open(os.path.join(package, "_location.py"), "w") as f:
            f.write("# Written by setup.py: the plugins, codecs and presets inside the package.\n"
                    'PLUGIN_DIR = "plugins"\nCODEC_DIR = "share/codecs"\n'
                    'PIPELINE_DIR = "share/pipelines"\n')


setup(cmdclass={"build_py": BuildWithCMake}, distclass=BinaryDistribution,
      package_data={"nwc": ["py.typed", "_nwc.pyi"]})
