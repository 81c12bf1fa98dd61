"""The README's Python blocks run as written (from an empty folder), so the documented API stays true."""

from __future__ import annotations

import re

from ctsearcher_jax import __all__ as public_names


def _python_blocks(readme: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme, flags=re.S)


def test_readme_python_blocks_run(repo_root, tmp_path, monkeypatch, capsys):
    blocks = _python_blocks((repo_root / "README.md").read_text())
    assert blocks, "README.md has no ```python block"
    monkeypatch.chdir(tmp_path)
    for k, code in enumerate(blocks):
        exec(compile(code, f"README.md python block {k + 1}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(len(line.split()) == 5 for line in out), out  # one line per reader
    assert (tmp_path / "example" / "model" / "README.md").is_file()


def test_public_names_resolve_and_have_docstrings():
    import ctsearcher_jax
    import feature_extraction

    for module in (ctsearcher_jax, feature_extraction):
        names = [n for n in module.__all__ if n != "__version__"]
        assert names and set(names) <= set(dir(module))
        for name in names:
            value = getattr(module, name)
            assert (value.__doc__ or "").strip(), f"{module.__name__}.{name} has no docstring"
    assert "load_model" in public_names and "scanmatch" in public_names
