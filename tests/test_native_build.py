"""ctsearcher_jax.runtime.native: native kernels are compiled once, atomically, and a machine
without a compiler (or with native kernels turned off) falls back with one clear warning."""

from __future__ import annotations

import logging

import pytest

from ctsearcher_jax.runtime import native

# A handler-free source: builds in well under a second (the FFI headers are still on the path).
TINY = "extern \"C\" int ctsearcher_answer() { return 42; }\n"


@pytest.fixture
def source(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(native.ENV, raising=False)
    path = tmp_path / "tiny.cc"
    path.write_text(TINY)
    native.clear_caches()
    yield path
    native.clear_caches()


def test_build_compiles_once_into_the_cache_and_loads(source, tmp_path, monkeypatch):
    built = native.build(source)
    assert built.parent == tmp_path / "cache" and built.name.startswith("tiny-")
    assert [p.name for p in built.parent.iterdir()] == [built.name]  # no temporary left behind
    stamp = built.stat().st_mtime_ns
    assert native.build(source) == built and built.stat().st_mtime_ns == stamp  # cached
    assert native.load(str(source)).ctsearcher_answer() == 42
    source.write_text(TINY.replace("42", "43"))  # another source: another library
    other = native.build(source)
    assert other != built
    # another kind of CPU (a home shared by several node types): another library
    monkeypatch.setattr(native, "cpu_id", lambda: "flags : sse2\n")
    assert native.build(source) not in (built, other)


def test_a_failed_build_raises_with_the_compiler_message_and_leaves_nothing(source, tmp_path):
    source.write_text("this is not C++\n")
    with pytest.raises(native.BuildError, match="failed"):
        native.build(source)
    assert not list((tmp_path / "cache").iterdir())


def test_no_compiler_or_turned_off_falls_back_with_one_warning(source, monkeypatch, caplog):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with caplog.at_level(logging.WARNING, logger="ctsearcher_jax.runtime.native"):
        assert native.load(str(source)) is None
        assert native.load(str(source)) is None  # cached: warned once
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "using the jnp kernel" in warnings[0], warnings
    assert "/nonexistent/c++" in warnings[0]
    native.clear_caches()
    monkeypatch.delenv("CXX")
    monkeypatch.setenv(native.ENV, "0")
    caplog.clear()
    assert native.load(str(source)) is None and not caplog.records  # off: no build, no warning
    assert not native.enabled({native.ENV: "off"}) and native.enabled({})
