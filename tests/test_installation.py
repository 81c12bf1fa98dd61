"""Install hints fit how the package was installed (a checkout, a folder, a wheel, an index)."""

from __future__ import annotations

import json
from importlib import metadata

from ctsearcher_jax import installation
from ctsearcher_jax.runtime.devices import install_hint as backend_hint

REQUIRES = metadata.requires("ctsearcher-jax")  # the installed metadata's requirements


class _Dist:
    """An installed distribution with this direct_url.json (None: installed from an index)."""

    requires = REQUIRES

    def __init__(self, direct_url):
        self.direct_url = direct_url

    def read_text(self, name):
        return json.dumps(self.direct_url) if name == "direct_url.json" and self.direct_url else None


def _source(monkeypatch, tmp_path, direct_url):
    monkeypatch.setattr(metadata, "distribution", lambda name: _Dist(direct_url))
    return installation.install_source(root=tmp_path)  # no pyproject.toml: not a checkout


def test_hints_for_each_way_of_installing(monkeypatch, tmp_path):
    checkout = installation.install_source()  # the tests run from a checkout
    assert checkout["kind"] == "source"
    assert installation.install_hint("cuda", checkout).startswith("pip install -e '")

    wheel = _source(monkeypatch, tmp_path, {"url": "file:///dl/ctsearcher_jax-0.1.0-py3-none-any.whl",
                                            "archive_info": {}})
    assert wheel == {"kind": "archive", "path": "/dl/ctsearcher_jax-0.1.0-py3-none-any.whl"}
    hint = installation.install_hint("torch", wheel)
    assert hint == "pip install 'torch>=2.2'" and "-e" not in hint
    assert "jax[cuda12]" in installation.install_hint("cuda", wheel)

    folder = _source(monkeypatch, tmp_path, {"url": "file:///src/ct", "dir_info": {}})
    assert installation.install_hint("tpu", folder) == "pip install '/src/ct[tpu]'"
    editable = _source(monkeypatch, tmp_path, {"url": "file:///src/ct",
                                               "dir_info": {"editable": True}})
    assert installation.install_hint("tpu", editable) == "pip install -e '/src/ct[tpu]'"
    index = _source(monkeypatch, tmp_path, None)
    assert installation.install_hint("wandb", index) == "pip install 'ctsearcher-jax[wandb]'"


def test_the_backend_hint_names_the_extra():
    assert "cuda" in backend_hint("gpu") and "tpu" in backend_hint("tpu")
    assert backend_hint("cpu") == "set JAX_PLATFORMS=cpu"
