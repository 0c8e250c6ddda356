"""Build hook (the rest of the configuration is in pyproject.toml): stamp the git commit into the package.

An installed, non-editable copy has no checkout to ask, so benchmark records and the CLI's headers would say
"commit unknown". ``build_py`` writes ``swin_fused/_commit.txt`` (the short hash, ``-dirty`` when the
checkout has uncommitted changes) into the build; nothing is written when git or the checkout is missing.
"""
import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py


def _git(*args: str) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


class BuildPyWithCommit(build_py):
    def run(self):
        super().run()
        try:
            commit = _git("rev-parse", "--short=12", "HEAD")
            dirty = _git("status", "--porcelain", "--untracked-files=no")
        except (OSError, subprocess.SubprocessError):
            return
        target = os.path.join(self.build_lib, "swin_fused", "_commit.txt")
        if commit and os.path.isdir(os.path.dirname(target)):
            with open(target, "w") as f:
                f.write(commit + ("-dirty" if dirty else "") + "\n")


setup(cmdclass={"build_py": BuildPyWithCommit})
