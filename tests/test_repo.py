"""Repository contracts: CI runs README's commands verbatim; the package installs its data."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_block_after(heading: str) -> list[str]:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split(f"## {heading}", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_ci_runs_readme_setup_and_test_commands_exactly():
    ci = [line.strip() for line in open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8")
          if line.strip() and not line.startswith("#")]
    setup, tests = _readme_block_after("Set up"), _readme_block_after("Tests")
    assert len(setup) == 1 and len(tests) == 1
    assert ci[-2:] == [setup[0], tests[0]]


def test_builtin_dictionary_ships_with_the_package():
    from openrec.text.charset import BUILTIN_DICTS
    assert os.path.isfile(BUILTIN_DICTS["en_symbols"])


def test_shell_scripts_parse():
    """The lent-machine scripts never run in CI: at least a syntax error must fail here."""
    import glob
    import subprocess
    scripts = sorted(glob.glob(os.path.join(ROOT, "scripts", "*.sh")) + [os.path.join(ROOT, ".ci", "run")])
    assert len(scripts) >= 5
    for path in scripts:
        res = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
        assert res.returncode == 0, f"{path}: {res.stderr}"
