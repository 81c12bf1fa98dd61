"""ctsearcher_jax.runtime.native: native kernels are compiled once, atomically; the cache trusts
nothing it did not build (issue 24.4); a machine without a compiler (or with native kernels turned
off) falls back with one clear warning; one build per compiler, flags, jaxlib and source, whatever
the virtual environment (issue 27.6)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys

import jax
import pytest

from ctsearcher_jax.runtime import native

# A handler-free source: builds in well under a second (the FFI headers are still on the path).
TINY = "extern \"C\" int ctsearcher_answer() { return 42; }\n"
# A library whose constructor runs on load: what a planted .so does.
PLANTED = ("#include <cstdio>\n#include <cstdlib>\n"
           "__attribute__((constructor)) static void planted() {\n"
           "  if (const char* p = std::getenv(\"PLANTED_MARKER\")) { FILE* f = std::fopen(p, \"w\");"
           " if (f) std::fclose(f); }\n}\n"
           "extern \"C\" int ctsearcher_answer() { return 666; }\n")


@pytest.fixture
def source(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(native.ENV, raising=False)
    path = tmp_path / "tiny.cc"
    path.write_text(TINY)
    native.clear_caches()
    yield path
    native.clear_caches()


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_build_compiles_once_into_the_cache_and_loads(source, tmp_path, monkeypatch):
    built = native.build(source)
    cache = tmp_path / "cache"
    assert built.parent == cache and built.name.startswith("tiny-")
    sidecar = built.with_suffix(".json")
    assert _files(cache) == sorted([".tiny.lock", built.name, sidecar.name])  # no temporary
    assert json.loads(sidecar.read_text())["sha256"] == native._sha256(built)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    stamp = built.stat().st_mtime_ns
    assert native.build(source) == built and built.stat().st_mtime_ns == stamp  # cached
    assert native.load(str(source)).ctsearcher_answer() == 42
    source.write_text(TINY.replace("42", "43"))  # another source: another library ...
    other = native.build(source)
    assert other != built and not built.exists() and not sidecar.exists()  # ... the old one goes
    # another kind of CPU (a home shared by several node types): another library, both kept
    monkeypatch.setattr(native, "cpu_id", lambda: "flags : sse2\n")
    third = native.build(source)
    assert third not in (built, other) and other.exists() and third.exists()


def test_a_failed_build_raises_with_the_compiler_message_and_leaves_nothing(source, tmp_path):
    source.write_text("this is not C++\n")
    with pytest.raises(native.BuildError, match="failed"):
        native.build(source)
    assert _files(tmp_path / "cache") == [".tiny.lock"]


def test_no_compiler_or_turned_off_falls_back_with_one_warning(source, monkeypatch, caplog):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with caplog.at_level(logging.WARNING, logger="ctsearcher_jax.runtime.native"):
        assert native.load(str(source)) is None
        assert native.load(str(source)) is None  # cached: warned once
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "using the jnp kernel" in warnings[0], warnings
    assert "/nonexistent/c++" in warnings[0]
    native.clear_caches()
    monkeypatch.delenv("CXX")
    monkeypatch.setenv(native.ENV, "0")
    caplog.clear()
    assert native.load(str(source)) is None and not caplog.records  # off: no build, no warning
    assert not native.enabled({native.ENV: "off"}) and native.enabled({})


def test_a_planted_library_is_never_loaded_and_is_rebuilt(source, tmp_path, monkeypatch):
    """Issue 24 row 4: a .so planted under the cache's name (no sidecar, or a sidecar with
    another hash) is not loaded (its constructor never runs); the kernel is rebuilt."""
    target = native.plan(source).target
    target.parent.mkdir(mode=0o700, parents=True)
    planted_src = tmp_path / "planted.cc"
    planted_src.write_text(PLANTED)
    cxx = native.compiler()
    subprocess.run([*cxx, *native.FLAGS, str(planted_src), "-o", str(target)], check=True)
    marker = tmp_path / "constructor_ran"
    monkeypatch.setenv("PLANTED_MARKER", str(marker))
    for sidecar in (None, {"sha256": "0" * 64}):
        if sidecar is not None:
            subprocess.run([*cxx, *native.FLAGS, str(planted_src), "-o", str(target)], check=True)
            target.with_suffix(".json").write_text(json.dumps(sidecar))
        native.clear_caches()
        lib = native.load(str(source))
        assert lib is not None and lib.ctsearcher_answer() == 42 and not marker.exists()
    assert native.trusted(native.plan(source))


def test_a_library_that_cannot_load_is_rebuilt_once_then_warned(source, tmp_path, monkeypatch,
                                                                 caplog):
    """Issue 24 row 13: garbage under the cache's name with a matching sidecar (as a broken disk
    or an interrupted copy would leave) fails to load: rebuilt once. A compiler that writes
    nothing (`CXX=/bin/true`) is a build error: one warning naming the fix, then jnp."""
    p = native.plan(source)
    p.directory.mkdir(mode=0o700, parents=True)
    p.target.write_bytes(b"not an ELF file")
    p.sidecar.write_text(json.dumps({"sha256": native._sha256(p.target)}))
    assert native.load(str(source)).ctsearcher_answer() == 42  # rebuilt
    native.clear_caches()
    monkeypatch.setenv("CXX", shutil.which("true"))
    (tmp_path / "other.cc").write_text(TINY)
    with caplog.at_level(logging.WARNING, logger="ctsearcher_jax.runtime.native"):
        assert native.load(str(tmp_path / "other.cc")) is None
    (warning,) = _warnings(caplog)
    assert "wrote no library; set CXX to a working C++ compiler" in warning, warning


def test_an_untrusted_folder_is_never_loaded_from(source, tmp_path, monkeypatch, caplog):
    """A cache folder writable by others, or another user's, is refused with the fix."""
    assert native.load(str(source)) is not None
    cache = tmp_path / "cache"
    cache.chmod(0o777)
    native.clear_caches()
    with caplog.at_level(logging.WARNING, logger="ctsearcher_jax.runtime.native"):
        assert native.load(str(source)) is None
    (warning,) = _warnings(caplog)
    assert f"`chmod go-w {cache}`" in warning and "writable by others" in warning
    cache.chmod(0o700)
    native.clear_caches()
    caplog.clear()
    monkeypatch.setattr(native.os, "geteuid", lambda: os.getuid() + 12345)
    with caplog.at_level(logging.WARNING, logger="ctsearcher_jax.runtime.native"):
        assert native.load(str(source)) is None
    (warning,) = _warnings(caplog)
    assert "not to you" in warning and native.CACHE_ENV in warning


def test_a_missing_symbol_is_one_warning_not_a_traceback(source, caplog):
    with caplog.at_level(logging.WARNING, logger="ctsearcher_jax.runtime.native"):
        assert native.register(str(source), (("ctsearcher_test_target", "NoSuchHandler"),)) is False
        assert native.register(str(source), (("ctsearcher_test_target", "NoSuchHandler"),)) is False
    (warning,) = _warnings(caplog)
    assert "lacks a handler" in warning and "NoSuchHandler" in warning and "tiny-" in warning


def test_the_key_does_not_depend_on_the_venv_and_march_needs_readable_cpu_flags(
        source, tmp_path, monkeypatch):
    """Issue 27.6: the same headers at another path (another virtual environment) give the same
    key; other header content gives another. No -march=native without the CPU's features."""
    key = native.plan(source).key
    copy = tmp_path / "other_venv" / "include"
    shutil.copytree(jax.ffi.include_dir(), copy)
    monkeypatch.setattr(jax.ffi, "include_dir", lambda: str(copy))
    assert native.plan(source).key == key and f"-I{copy}" in native.plan(source).command
    header = sorted(p for p in copy.rglob("*") if p.is_file())[0]
    header.write_text(header.read_text() + "\n// changed\n")
    native.include_digest.cache_clear()
    assert native.plan(source).key != key
    monkeypatch.setattr(native, "cpu_id", lambda: None)
    assert "-march=native" not in native.plan(source).command
    assert native.arch_flags(None) == ()


def test_processes_building_at_once_compile_once(source, tmp_path):
    """N processes on one node: the build lock makes one of them compile; the others load it."""
    count = tmp_path / "compiles"
    wrapper = tmp_path / "cxx.sh"
    real = native.compiler()[0]
    wrapper.write_text(f"#!/bin/sh\ncase \"$*\" in *-shared*) echo x >> {count};; esac\n"
                       f"exec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    code = ("import sys; from ctsearcher_jax.runtime import native; "
            "lib = native.load(sys.argv[1]); print(lib.ctsearcher_answer())")
    env = dict(os.environ, CXX=str(wrapper), **{native.CACHE_ENV: str(tmp_path / "cache")})
    procs = [subprocess.Popen([sys.executable, "-c", code, str(source)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert outs == ["42"] * 3 and count.read_text().count("x") == 1
