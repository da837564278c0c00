"""What pyproject.toml cannot say: install the start-up hook ``codesuture-autostart.pth``
into site-packages, with a normal install (wheel) and an editable one (``pip install
-e``). Its name and its one line are ``PTH_NAME``/``PTH_LINE`` in
src/codesuture/autostart.py (read here without importing the package). Everything
else is in pyproject.toml."""

import ast
import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = os.path.dirname(os.path.abspath(__file__))


def pth() -> tuple[str, str]:
    """``(file name, contents)`` of the start-up hook."""
    with open(os.path.join(HERE, "src", "codesuture", "autostart.py"), encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("PTH_NAME", "PTH_LINE"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["PTH_NAME"], found["PTH_LINE"] + "\n"


def write_pth(directory: str) -> str:
    name, text = pth()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


class BuildPyWithPth(build_py):
    """A wheel: the hook at the root of the build tree, so at the root of site-packages."""

    def run(self) -> None:
        super().run()
        if not getattr(self, "editable_mode", False):
            write_pth(self.build_lib)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, pth()[0]))
        return outputs


class EditableWheelWithPth(editable_wheel):
    """``pip install -e``: the hook beside the editable wheel's own ``__editable__.*.pth``."""

    def _install_namespaces(self, installation_dir, pth_prefix):  # noqa: ANN001 - setuptools' signature
        super()._install_namespaces(installation_dir, pth_prefix)
        write_pth(str(installation_dir))


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
