"""pytest glue, the only package that imports pytest. Registered through an entry point, so every
pytest run in an environment with massive_checks installed loads this module: it imports nothing
heavy (no torch, transformers, numpy or matplotlib) and changes no global state. The working half
(plugin/runner.py: the suite, spec items, reports) is imported and registered only when the session
collects a spec file, is given a massive_checks option, asks for a massive_checks fixture, or (on
an xdist controller) receives spec records from a worker."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from massive_checks.base.constants import ACROSS, BUNDLED_MODELS, DEFAULTS_FILE
from massive_checks.base.options import SUITE_OPTIONS, add_options, default

STATE = "massive_checks_state"  # the registered runner.MassiveChecks, once active
WORKER_KEY = "massive_checks"  # in xdist's workeroutput: a worker's records, sent to the controller


SPEC_FOLDERS = "massive_checks_specs"  # the ini option naming a project's spec folders


def pytest_addoption(parser):
    parser.addini(
        SPEC_FOLDERS,
        type="paths",
        default=[],
        help="folders whose YAML files are massive_checks spec files (files and folders named on the command line are too)",
    )
    add_options(parser.getgroup("massive_checks", "massive activation claim specs").addoption)


def pytest_configure(config):
    config.addinivalue_line("markers", "massive_spec: an item generated from a YAML claim spec")
    config.addinivalue_line(
        "markers",
        "massive_generates: a spec that generates and judges steered text, the slow part of a spec run "
        "(-m 'not massive_generates' leaves those out)",
    )
    # Items carry xdist_group (one worker per model); without xdist installed the mark is still known.
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist --dist loadgroup group")
    if config.pluginmanager.hasplugin("xdist"):  # its hooks exist only when it is installed and enabled
        config.pluginmanager.register(XdistHooks(), "massive_checks_xdist")
    if any(config.getoption(dest) != default(dest) for dest in SUITE_OPTIONS):  # an option given wakes the plugin
        active(config)


def active(config):
    """The working half (runner.MassiveChecks), imported and registered on first use."""
    plugin = config.pluginmanager.get_plugin(STATE)
    if plugin is None:
        plugin = _runner().build(config)
        config.pluginmanager.register(plugin, STATE)
    return plugin


def _runner():
    """plugin/runner.py, by its name in sys.modules: `from . import runner` would return a stale
    package attribute after pytester restores sys.modules between in-process runs, and mix its
    classes with a fresh import's."""
    return importlib.import_module(f"{__name__}.runner")


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix in (".yaml", ".yml") and file_path.name != DEFAULTS_FILE and _asked_for(file_path, parent.config):
        active(parent.config)
        return _runner().SpecFile.from_parent(parent, path=file_path)
    return None


def _asked_for(path: Path, config) -> bool:
    """A YAML file is a spec file only where the user said so: under a folder of the ini option
    massive_checks_specs, or at or under a file or folder named on the command line (`pytest specs/`,
    `pytest specs/a.yaml`). The project's root, named as `.` or found as testpaths, names every
    file, so it says nothing: other YAML in someone's project is never collected."""
    return any(path == root or root in path.parents for root in _spec_roots(config))


def _spec_roots(config) -> list[Path]:
    roots = [Path(p).resolve() for p in config.getini(SPEC_FOLDERS)]
    if config.args_source == pytest.Config.ArgsSource.ARGS:  # paths the user typed, not testpaths
        here, root = config.invocation_params.dir.resolve(), config.rootpath.resolve()
        for arg in config.args:
            named = (here / arg.split("::")[0]).resolve()
            roots += [named] if named not in (here, root) else []
    return roots


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def massive_session(request):
    """massive_session(name) -> session.ModelSession for a model, loaded once per test session."""
    return active(request.config).suite.session


@pytest.fixture
def ablate():
    """Context manager applying interventions for the forward passes inside it:

        with ablate(lm, "heads:5.1,6.1", "mlp:2"):
            model(...)

    Mean-mode ablations take their means from `data` (default: the built-in text)."""
    from massive_checks.engine.apply import ablate as apply

    return apply


@pytest.fixture
def capture_stats():
    """capture_stats(lm, sites, median_sites=(), stop_early=False) -> context yielding {site: SiteStats} (see apply.py)."""
    from massive_checks.engine.apply import capture_stats as capture

    return capture


class XdistHooks:
    """pytest-xdist hooks, registered only when xdist is present (pytest rejects unknown hooks)."""

    def pytest_xdist_make_scheduler(self, config, log):
        """--dist loadgroup: each model's spec items go to one worker, which loads it once.
        xdist groups by a nodeid suffix that pytest >= 9.2 no longer lets it write
        (pytest-xdist#1386), so the group is read from the item's id, `<spec>[<model>]`; a test
        parametrized with an id `<model>:...` (one that reads a model's spec results through the
        massive_session fixture, like the spec mutation test) joins that model's group, after its
        specs."""
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadGroupScheduling

        names = tuple(config.getoption("model") or BUNDLED_MODELS)

        class ByModel(LoadGroupScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return model_of_nodeid(nodeid) or model_of_test(nodeid, names) or super()._split_scope(nodeid)

        return ByModel(config, log)

    def pytest_testnodedown(self, node, error):  # controller: a worker finished; take its records
        exported = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if exported:
            active(node.config).suite.merge(json.loads(exported))


def model_of_test(nodeid: str, names: tuple[str, ...]) -> str | None:
    """`tests/t.py::test_x[<model>:<anything>]` -> the model, when it is one of `names`."""
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    head = nodeid[nodeid.rindex("[") + 1 : -1].split(":", 1)[0]
    return head if head in names else None


def model_of_nodeid(nodeid: str) -> str | None:
    """`specs/x.yaml::<spec id>[<model>]` -> the model; None for other items. A spec across models
    (`[<a>+<b>]`) joins its first model's group: that worker loads the other model too."""
    path, _, name = nodeid.partition("::")
    if not path.endswith((".yaml", ".yml")) or "[" not in name or not name.endswith("]"):
        return None
    return name[name.index("[") + 1 : -1].split(ACROSS)[0]
