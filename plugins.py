"""Plugins, where a class's code comes from, and the near-miss hint of one-line errors.

A plugin is a Python file or an importable module that registers strategies (strategies.register)
or workloads (workloads.register_workload) when it is imported. `import_plugin` imports it once per
process. `code_origin(cls)` says where a schedule's or a workload's code comes from, with the
fingerprint that goes into every run's identity: a built-in's declared version, or the sha256 of
the file that defines the class (any edit of the file included, comments too: a class's source
alone would miss a helper function it calls).
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

BUILTIN_MODULES = ("schedules", "strategies", "workloads")
PLUGIN_MODULES: dict[str, str] = {}  # plugin as given -> the module name it was imported as
REGISTERED: list = []                # (kind, name, module of its class) of every registration, in order


def did_you_mean(word, options):
    """' (did you mean X or Y?)' for near misses of `word` among `options`, else '': the hint every
    one-line error of a name gives (strategies, knobs, workloads, measures, settings, grid keys)."""
    options = [str(o) for o in options]
    close = difflib.get_close_matches(str(word), options, n=2, cutoff=0.7) or \
        difflib.get_close_matches(str(word), options, n=1, cutoff=0.5)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


class PluginError(ValueError):
    """A plugin that cannot be imported or registers nothing; its message is one line."""


def note_registration(kind, name, cls):
    """Called by the registries (kind "strategy" or "workload"): what was registered, and the module
    of the class that computes it."""
    REGISTERED.append((kind, name, cls.__module__))


@functools.lru_cache(maxsize=None)
def file_hash(path):
    if not path or not Path(path).is_file():
        return None
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def code_origin(cls):
    """{"kind", "where", "fingerprint"}: a built-in's declared version, or the sha256 of the file
    that defines the class (a plugin file, or a module's file)."""
    module = cls.__module__
    if module in BUILTIN_MODULES:
        return {"kind": "builtin", "where": "built in", "fingerprint": f"{cls.__name__} v{cls.version}"}
    if module == "__main__":
        return {"kind": "script", "where": "the script being run (__main__)",
                "fingerprint": file_hash(getattr(sys.modules.get("__main__"), "__file__", None))}
    path = inspect.getsourcefile(cls) or getattr(sys.modules.get(module), "__file__", None)
    kind = "plugin" if module in PLUGIN_MODULES.values() else "module"
    return {"kind": kind, "where": str(path), "fingerprint": file_hash(path)}


def import_plugin(plugin):
    """Import a plugin (a .py file or a module name) once per process; return its module."""
    plugin = str(plugin)
    if plugin not in PLUGIN_MODULES:
        before = len(REGISTERED)
        module = _import(plugin)
        PLUGIN_MODULES[plugin] = module.__name__
        if len(REGISTERED) == before:
            raise PluginError(f"plugin {plugin} registered no strategy and no workload: call strategies.register "
                              f"or workloads.register_workload at the top level of the file (a plugin is "
                              f"imported, so code under 'if __name__ == \"__main__\":' never runs)")
    return sys.modules[PLUGIN_MODULES[plugin]]


def _import(plugin):
    if plugin.endswith(".py") or "/" in plugin or Path(plugin).is_file():
        path = Path(plugin).expanduser().resolve()
        if not path.is_file():
            raise PluginError(f"--plugin {plugin}: no such file")
        name = "altfreeze_plugin_" + re.sub(r"\W", "_", path.stem) + "_" + hashlib.sha1(
            str(path).encode()).hexdigest()[:8]
        spec_ = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec_)
        sys.modules[name] = module
        try:
            spec_.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise PluginError(f"--plugin {plugin} failed to import: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")) from None
        return module
    try:
        return importlib.import_module(plugin)
    except Exception as e:
        raise PluginError(f"--plugin {plugin} failed to import: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")) from None


def record(plugin):
    """What config.json records of a loaded plugin: its path, content hash and what it registered."""
    module = sys.modules[PLUGIN_MODULES[str(plugin)]]
    path = getattr(module, "__file__", None)
    made = {(k, n) for k, n, m in REGISTERED if m == module.__name__}
    workloads = sorted(n for k, n in made if k == "workload")
    return {"plugin": str(plugin), "path": str(path), "sha256": (file_hash(path) or "")[len("sha256:"):],
            "strategies": sorted(n for k, n in made if k == "strategy"), **({"workloads": workloads} if workloads else {})}
