"""Every import is declared: what the tests, configs, benchmarks and the notebook import comes from a
distribution that ``setup.py`` (install_requires or the ``dev`` extra) or the README's install line
names, so a fresh environment built from the README runs them; and the package's module-level imports
(what ``import jaxspeech.x`` runs) need install_requires alone."""

import ast
import functools
import importlib.metadata
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("jaxspeech", "tests", "configs", "benchmarks", "experiments", ".ci")
NOTEBOOKS = ("colab",)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements) -> set[str]:
    return {_canonical(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r).group()) for r in requirements}


def _setup_lists() -> dict[str, list[str]]:
    """INSTALL_REQUIRES and EXTRAS of setup.py, read as literals (setup.py is not run)."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("INSTALL_REQUIRES", "EXTRAS"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return found


def _readme_install_names() -> set[str]:
    """Distributions the README's Quickstart install line names besides the project itself."""
    lines = subprocess.run(
        [sys.executable, os.path.join(ROOT, ".ci", "quickstart.py")], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    words = re.findall(r"pip install ([^&;|]+)", lines[0])
    return _requirement_names(w for part in words for w in part.split() if not w.startswith(("-", ".", '"', "'")))


def _imports(source: str, top_level_only: bool = False) -> set[str]:
    """Top-level names of the absolute imports in ``source`` (``top_level_only``: those the module's
    body runs on import, not the ones inside functions or classes)."""
    tree = ast.parse(source)
    nodes = []
    if top_level_only:
        pending = list(tree.body)
        while pending:
            node = pending.pop()
            nodes.append(node)
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                pending.extend(ast.iter_child_nodes(node))
    else:
        nodes = list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _notebook_source(path: str) -> str:
    cells = json.load(open(path))["cells"]
    code = ("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    return "\n".join(line for cell in code for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))


def _files(folders, suffix: str) -> list[str]:
    return sorted(
        os.path.join(root, name)
        for folder in folders
        for root, _, names in os.walk(os.path.join(ROOT, folder))
        for name in names
        if name.endswith(suffix)
    )


def _first_party() -> set[str]:
    """Names the repository itself provides: its top-level folders, and the modules that tests and
    configs import from their own folders (on sys.path when they run)."""
    names = {n for n in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, n))}
    for folder in ("configs", "tests"):
        for _, dirs, files in os.walk(os.path.join(ROOT, folder)):
            names.update(dirs)
            names.update(f[:-3] for f in files if f.endswith(".py"))
    return names


def undeclared(sources: dict[str, set[str]], declared: set[str]) -> dict[str, list[str]]:
    """{file: [imported names not provided by a ``declared`` distribution]}: an installed module
    (even one named like a folder here, as tests/whisper and openai-whisper's ``whisper``) must be
    declared; a name nothing installed provides must be the standard library's or the repository's."""
    distributions, local, problems = _distributions(), _first_party(), {}

    def provided(name: str) -> bool:
        if name in distributions:
            return bool({_canonical(d) for d in distributions[name]} & declared) or name == "jaxspeech"
        return name in sys.stdlib_module_names or name in local

    for path, names in sources.items():
        bad = sorted(n for n in names if not provided(n))
        if bad:
            problems[os.path.relpath(path, ROOT)] = bad
    return problems


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def _everything() -> dict[str, set[str]]:
    sources = {path: _imports(open(path).read()) for path in _files(SOURCES, ".py")}
    sources.update({path: _imports(_notebook_source(path)) for path in _files(NOTEBOOKS, ".ipynb")})
    return sources


def _dev_declared() -> set[str]:
    lists = _setup_lists()
    return _requirement_names(lists["INSTALL_REQUIRES"] + lists["EXTRAS"]["dev"]) | _readme_install_names()


def test_every_import_of_tests_configs_benchmarks_and_notebook_is_declared():
    assert undeclared(_everything(), _dev_declared()) == {}


def test_the_package_imports_only_install_requires_at_module_level():
    """Optional dependencies (an extra, torch for one file format) are imported inside the function
    that needs them, so a plain ``pip install jaxspeech`` imports every module."""
    package = _files(("jaxspeech",), ".py")
    package = [p for p in package if os.sep + "testing" + os.sep not in p]  # test helpers use the dev extra
    sources = {path: _imports(open(path).read(), top_level_only=True) for path in package}
    assert undeclared(sources, _requirement_names(_setup_lists()["INSTALL_REQUIRES"])) == {}


def test_an_undeclared_test_dependency_is_found():
    """Without hypothesis in the dev extra, the property tests that import it are named."""
    declared = _dev_declared() - {"hypothesis"}
    problems = undeclared(_everything(), declared)
    assert problems and all(names == ["hypothesis"] for names in problems.values()), problems
    assert "tests/text/test_tokenizers.py" in problems


def test_ci_runs_exactly_the_readme_quickstart_in_a_fresh_environment():
    """The Quickstart block holds the install line, the main job and the test command, nothing else;
    .ci/run reads the first and the last from it and runs them inside a virtual environment it has just created."""
    lines = subprocess.run(
        [sys.executable, os.path.join(ROOT, ".ci", "quickstart.py")], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("pip install -e") and lines[2].startswith("python -m pytest")
    assert lines[1] == "jaxspeech train --config configs/tiny_asr.py --workdir runs/tiny"
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    order = [
        ci.index(step)
        for step in (
            "python3 .ci/quickstart.py",
            "python3 -m venv .venv",
            "source .venv/bin/activate",
            '"$install_line"',
            '"$test_line',
        )
    ]
    assert order == sorted(order)
