"""What ships for a deployment (issue 13): the Dockerfile and .dockerignore (checked statically,
as hadolint would: no Docker on CI), the Prometheus alerting rules against the metrics the
bridge really exports, the sample policy file against the bridge's own loader and
docs/bridge.md, and .gitignore against the files the README and docs/ tell people to create.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import pathspec
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.utils import floatToGoString

from flex_bridge.adapters.journal import journal_setting
from flex_bridge.app.metrics import Metrics
from flex_bridge.cli import build_parser
from flex_bridge.settings import load_policy

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
RULES = ROOT / "deploy" / "prometheus" / "flex-bridge.rules.yml"
EXAMPLE_POLICY = ROOT / "policy.example.toml"


# ================================================================================ Dockerfile
@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form's arguments; fails the test when it is the shell form."""
        value = json.loads(self.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions: continuation lines joined, comments and blanks dropped
    (as Docker does, also between continuation lines)."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = n
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, args = " ".join(pending).partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
        pending = []
    assert not pending, "the Dockerfile ends in a continuation line"
    return out


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    """The build stages, each starting with its FROM."""
    assert parsed and parsed[0].keyword == "FROM", "a Dockerfile starts with FROM (or ARG)"
    out: list[list[Instruction]] = []
    for ins in parsed:
        if ins.keyword == "FROM":
            out.append([])
        out[-1].append(ins)
    return out


def options(args: str) -> tuple[dict[str, str], str]:
    """``--name=value`` options at the start of an instruction's arguments, and the rest."""
    found: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        name, _, value = option[2:].partition("=")
        found[name] = value
        rest = rest.lstrip()
    return found, rest


def commands(run: Instruction) -> list[list[str]]:
    """The simple commands of a shell-form RUN, split at ``&&``, ``||``, ``;`` and ``|``."""
    words = shlex.split(run.args, posix=True)
    out: list[list[str]] = [[]]
    for word in words:
        if word in ("&&", "||", ";", "|"):
            out.append([])
        else:
            out[-1].append(word)
    return [c for c in out if c]


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    return stages(dockerfile)[-1]


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"the final stage needs exactly one {keyword}; found {found}"
    return found[0]


def test_the_base_image_is_python_311_slim_bookworm_pinned_to_a_version_tag(
    dockerfile: list[Instruction],
) -> None:
    names: set[str] = set()
    for stage in stages(dockerfile):
        _, rest = options(stage[0].args)
        image, _, alias = rest.partition(" ")
        if image in names:  # FROM an earlier stage
            continue
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", image), (
            f"line {stage[0].line}: {image} is not a version-tagged python:3.11 slim-bookworm"
        )
        if alias:
            assert re.fullmatch(r"(?i)AS [a-z][a-z0-9_.-]*", alias), stage[0]
            names.add(alias.split()[1])


def test_stages_are_named_once_and_copies_from_them_refer_to_earlier_ones(
    dockerfile: list[Instruction],
) -> None:
    """hadolint DL3022 / DL3023 / DL3024."""
    seen: list[str] = []
    for stage in stages(dockerfile):
        for ins in stage[1:]:
            opts, _ = options(ins.args)
            if ins.keyword == "COPY" and "from" in opts:
                assert opts["from"] in seen, f"line {ins.line}: --from={opts['from']} is unknown"
        alias = options(stage[0].args)[1].partition(" ")[2]
        if alias:
            name = alias.split()[1]
            assert name not in seen, f"stage {name} is defined twice"
            seen.append(name)
    assert seen, "the build is multi-stage: a named build stage, then the runtime image"


def test_dependencies_are_installed_from_the_pins_without_dev_extras(
    dockerfile: list[Instruction],
) -> None:
    installs = [
        (run, cmd)
        for run in dockerfile
        if run.keyword == "RUN"
        for cmd in commands(run)
        if "pip" in PurePosixPath(cmd[0]).name and "install" in cmd
    ]
    assert installs, "the Dockerfile installs flex-bridge with pip"
    for run, cmd in installs:
        pinned = (
            any(
                a in ("-c", "--constraint") and b == "constraints.txt"
                for a, b in itertools.pairwise(cmd)
            )
            or "--constraint=constraints.txt" in cmd
        )
        assert pinned, f"line {run.line}: pip install without -c constraints.txt: {cmd}"
        assert "--no-cache-dir" in cmd, f"line {run.line}: pip install keeps its cache (DL3042)"
        assert not any("[" in a for a in cmd), f"line {run.line}: extras installed: {cmd}"
    copied = " ".join(i.args for i in dockerfile if i.keyword == "COPY")
    assert "constraints.txt" in copied, "constraints.txt is copied into the build"


def test_every_runtime_dependency_is_pinned_in_constraints() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
        for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    }
    for requirement in project["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;]", requirement)[0]).lower()
        assert name in pins, f"{requirement} is not pinned (==) in constraints.txt"


BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "python3-dev", "libpq-dev", "git")


def test_the_runtime_stage_only_copies_the_built_environment(
    dockerfile: list[Instruction], final_stage: list[Instruction]
) -> None:
    assert len(stages(dockerfile)) >= 2, "multi-stage: the runtime stage has no build leftovers"
    copies = [i for i in final_stage if i.keyword == "COPY"]
    assert copies and all("from" in options(i.args)[0] for i in copies), (
        "the runtime stage takes only what the build stage built (COPY --from=...)"
    )
    for run in (i for i in final_stage if i.keyword == "RUN"):
        for cmd in commands(run):
            assert not ("install" in cmd and "pip" in PurePosixPath(cmd[0]).name), run
            assert not (PurePosixPath(cmd[0]).name in ("apt-get", "apt") and "install" in cmd), (
                f"line {run.line}: packages installed in the runtime stage"
            )
            assert not set(cmd) & set(BUILD_TOOLS), f"line {run.line}: build tools: {cmd}"


def test_hadolint_style_rules(dockerfile: list[Instruction]) -> None:
    for ins in dockerfile:
        assert ins.keyword != "ADD", f"line {ins.line}: COPY, not ADD (DL3020)"
        assert ins.keyword != "MAINTAINER", f"line {ins.line}: MAINTAINER is deprecated (DL4000)"
        if ins.keyword == "WORKDIR":
            assert ins.args.startswith("/"), f"line {ins.line}: WORKDIR must be absolute (DL3000)"
        if ins.keyword == "FROM":
            assert ":latest" not in ins.args, f"line {ins.line}: no :latest (DL3007)"
        if ins.keyword == "RUN":
            for cmd in commands(ins):
                assert cmd[0] != "cd", f"line {ins.line}: use WORKDIR, not cd (DL3003)"
                assert cmd[0] != "sudo", f"line {ins.line}: no sudo (DL3004)"
                assert cmd[0] not in ("curl", "wget"), f"line {ins.line}: nothing downloaded"
                if cmd[0] == "apt-get" and "install" in cmd:
                    assert "-y" in cmd and "--no-install-recommends" in cmd, ins  # DL3014/5
    for stage in stages(dockerfile):
        for keyword in ("ENTRYPOINT", "CMD", "HEALTHCHECK"):
            assert sum(i.keyword == keyword for i in stage) <= 1, f"one {keyword} per stage"


def test_it_runs_as_an_unprivileged_user(final_stage: list[Instruction]) -> None:
    user = [i for i in final_stage if i.keyword == "USER"]
    assert user, "the runtime stage sets USER"
    name, _, group = user[-1].args.partition(":")
    assert name not in ("root", "0") and group not in ("root", "0"), user[-1]
    assert name.isdigit() and int(name) >= 1000, "a numeric uid: runAsNonRoot can check it"
    keywords = [i.keyword for i in final_stage]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT"), "USER before ENTRYPOINT"
    created = " ".join(i.args for i in final_stage if i.keyword == "RUN")
    assert f"--uid {name}" in created, f"uid {name} is created in the image"


def test_entrypoint_and_cmd_serve_the_bridge_on_the_exposed_port(
    final_stage: list[Instruction],
) -> None:
    assert only(final_stage, "ENTRYPOINT").exec_form() == ["flex-bridge"]
    cmd = only(final_stage, "CMD").exec_form()
    assert cmd == ["serve", "--host", "0.0.0.0"]
    args = build_parser().parse_args(cmd)  # the CLI takes them as they are
    assert (args.command, args.host) == ("serve", "0.0.0.0")
    assert only(final_stage, "EXPOSE").args.split() == [str(args.port)] == ["8000"]


def env_values(stage: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for ins in (i for i in stage if i.keyword == "ENV"):
        for item in shlex.split(ins.args):
            key, _, value = item.partition("=")
            values[key] = value
    return values


def test_the_journal_is_an_absolute_sqlite_path_on_the_volume(
    final_stage: list[Instruction],
) -> None:
    setting = env_values(final_stage)["FLEX_BRIDGE_JOURNAL"]
    assert setting == "sqlite:////var/lib/flex-bridge/journal.db"
    path = PurePosixPath(journal_setting(setting))  # how the bridge reads it
    assert path == PurePosixPath("/var/lib/flex-bridge/journal.db")
    volumes = only(final_stage, "VOLUME").exec_form()
    assert str(path.parent) in volumes
    assert only(final_stage, "WORKDIR").args == str(path.parent)
    created = " ".join(i.args for i in final_stage if i.keyword == "RUN")
    assert f"install -d -o flexbridge -g flexbridge -m 0750 {path.parent}" in created


class _Health(BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []  # noqa: RUF012 (each test's server has a subclass of its own)

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[ThreadingHTTPServer, type[_Health]]]:
    handler = type("Handler", (_Health,), {"paths": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_healthcheck_asks_healthz_with_the_standard_library(
    final_stage: list[Instruction],
    health_server: tuple[ThreadingHTTPServer, type[_Health]],
) -> None:
    opts, rest = options(only(final_stage, "HEALTHCHECK").args)
    assert {"interval", "timeout", "retries"} <= set(opts)
    assert rest.startswith("CMD ")
    argv = json.loads(rest[4:])
    assert argv[:2] == ["python", "-c"], "Python's stdlib: the slim image has no curl"
    script = argv[2]
    assert "http://127.0.0.1:8000/healthz" in script
    assert not re.search(r"\b(curl|wget|requests|aiohttp)\b", script)

    # Run it, as Docker would, against a stand-in on another port.
    server, handler = health_server
    here = f"http://127.0.0.1:{server.server_address[1]}/healthz"

    def check() -> int:
        script_here = script.replace("http://127.0.0.1:8000/healthz", here)
        done = subprocess.run([sys.executable, "-c", script_here], capture_output=True, timeout=30)
        return done.returncode

    assert check() == 0
    assert handler.paths == ["/healthz"]
    handler.status = 503
    assert check() != 0
    server.shutdown()
    server.server_close()
    assert check() != 0  # nothing listening


def ignored_by(path: Path) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines(path.read_text(encoding="utf-8").splitlines())


def test_dockerignore_keeps_local_state_and_caches_out_and_what_is_copied_in(
    dockerfile: list[Instruction],
) -> None:
    spec = ignored_by(ROOT / ".dockerignore")
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "sync/node_modules/twilio-sync/package.json",
        "bench/results/latest.json",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/x",
        ".hypothesis/examples/x",
        "flex_bridge/__pycache__/cli.cpython-311.pyc",
        "flex_bridge.egg-info/PKG-INFO",
        "flex-bridge.db",
        "flex-bridge.db.lock",
        "emulator.json",
        "policy.toml",
        ".env",
    ):
        assert spec.match_file(path), f"{path} is in the build context"
    copied = [
        word
        for ins in dockerfile
        if ins.keyword == "COPY" and "from" not in options(ins.args)[0]
        for word in options(ins.args)[1].split()[:-1]
    ]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        probe = f"{source}/__init__.py" if (ROOT / source).is_dir() else source
        assert not spec.match_file(probe), f"COPY {source}, but .dockerignore leaves it out"


# ============================================================================ alerting rules
EXTERNAL_METRICS: frozenset[str] = frozenset(
    {
        "up",  # Prometheus' own, per scrape target
    }
)
PROMQL_WORDS = {
    # functions, aggregations and keywords the rules may use
    *("rate", "irate", "increase", "delta", "absent", "absent_over_time", "histogram_quantile"),
    *("min_over_time", "max_over_time", "avg_over_time", "sum_over_time", "clamp_min"),
    *("sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile"),
    *("by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"),
    *("bool", "offset", "vector", "scalar", "time"),
}


def go_float(bound: float) -> str:
    """A bucket's ``le`` as prometheus_client writes it (``5.0``, ``+Inf``)."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


@dataclass(frozen=True)
class Exported:
    """A metric family the bridge exports: its series names and label names."""

    series: frozenset[str]
    labels: frozenset[str]
    buckets: frozenset[str] = frozenset()


def exported_metrics() -> dict[str, Exported]:
    """Every series name ``Metrics()`` exports, as Prometheus sees it: a counter's with
    ``_total``, a histogram's ``_bucket``, ``_sum`` and ``_count`` (its buckets' ``le``)."""
    metrics = Metrics()
    labels: dict[str, frozenset[str]] = {}
    buckets: dict[str, frozenset[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name  # the family name, without _total
            labels[name] = frozenset(value._labelnames)
            upper = getattr(value, "_upper_bounds", None)
            if upper is not None:
                buckets[name] = frozenset(map(go_float, upper))
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
        "info": ("_info",),
    }
    out: dict[str, Exported] = {}
    for family in metrics.registry.collect():
        series = frozenset(family.name + s for s in suffixes[family.type])
        labelset = labels.get(family.name, frozenset())
        fam_buckets = buckets.get(family.name, frozenset())
        for name in series:
            extra = {"le"} if name.endswith("_bucket") else set()
            out[name] = Exported(series, labelset | extra, fam_buckets)
    return out


SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def metric_selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """The metric names of a PromQL expression, each with its label matchers."""
    # Label lists of by/without/on/ignoring/group_*(...) are not metrics; drop them first.
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors: [5m]
    found = []
    for match in SELECTOR.finditer(expr):
        name, braces = match.group(1), match.group(2) or ""
        start = match.start()
        if start and (expr[start - 1].isalnum() or expr[start - 1] in "._"):
            continue  # the tail of a number (0.05, 5m) or of another word
        after = expr[match.end() :].lstrip()
        if name in PROMQL_WORDS or (after.startswith("(") and not braces):
            assert name in PROMQL_WORDS, f"unknown PromQL function {name!r} in {expr!r}"
            continue
        found.append((name, MATCHER.findall(braces)))
    return found


SOURCE = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "flex_bridge").rglob("*.py"))


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert isinstance(document, dict) and set(document) == {"groups"}
    groups = document["groups"]
    assert isinstance(groups, list) and groups
    out: list[dict[str, Any]] = []
    for group in groups:
        assert isinstance(group["name"], str) and group["name"]
        assert isinstance(group["rules"], list) and group["rules"], group["name"]
        out.extend(group["rules"])
    return out


def test_every_rule_is_a_complete_alert(rules: list[dict[str, Any]]) -> None:
    names = [rule.get("alert") for rule in rules]
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in rules:
        name = rule.get("alert")
        assert isinstance(name, str) and re.fullmatch(r"FlexBridge[A-Za-z0-9]+", name), rule
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert isinstance(rule.get("expr"), str) and rule["expr"].strip(), name
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: for: missing"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "description"}, name
        assert all(isinstance(v, str) and v.strip() for v in annotations.values()), name
        assert rule["expr"].count("(") == rule["expr"].count(")"), name


def test_the_rules_cover_what_operators_must_hear_about(rules: list[dict[str, Any]]) -> None:
    used = {name for rule in rules for name, _ in metric_selectors(rule["expr"])}
    for needed in (
        "up",  # down, and no scrape at all (absent)
        "flex_bridge_ready",  # readiness
        "flex_bridge_ready_checked_timestamp_seconds",  # and that someone asks for it
        "flex_bridge_intents_total",  # intents failing
        "flex_bridge_upstream_429_total",
        "flex_bridge_upstream_retries_total",
        "flex_bridge_sync_writes_total",  # announce failures, degrade going ahead
        "flex_bridge_intents_in_flight",
        "flex_bridge_webhook_seconds_bucket",  # latency against the 5 s / 15 s budgets
    ):
        assert needed in used, f"no alert on {needed}"
    exprs = " ".join(rule["expr"] for rule in rules)
    assert "absent(up" in exprs and "went_ahead_unannounced" in exprs


def test_every_metric_label_and_value_in_the_rules_is_exported(
    rules: list[dict[str, Any]],
) -> None:
    exported = exported_metrics()
    assert "flex_bridge_intents_total" in exported  # the registry is read as intended
    assert "flex_bridge_webhook_seconds_count" in exported
    for rule in rules:
        selectors = metric_selectors(rule["expr"])
        assert selectors, f"{rule['alert']}: no metric in {rule['expr']!r}"
        for name, matchers in selectors:
            if name in EXTERNAL_METRICS:
                continue
            assert name in exported, f"{rule['alert']}: {name} is not exported by Metrics()"
            family = exported[name]
            for label, op, value in matchers:
                if label == "job":  # Prometheus' target label, set by the scrape config
                    continue
                assert label in family.labels, f"{rule['alert']}: {name} has no label {label}"
                if op != "=":
                    continue
                if label == "le":
                    assert value in family.buckets, f"{rule['alert']}: no bucket le={value}"
                else:
                    assert f'"{value}"' in SOURCE, (
                        f"{rule['alert']}: {name}{{{label}={value!r}}}: flex_bridge never "
                        "uses that value"
                    )


def test_promtool_accepts_the_rules_when_it_is_installed() -> None:
    """promtool is not required; where it is installed, it must accept the file too."""
    promtool = shutil.which("promtool")
    if promtool is not None:
        done = subprocess.run(
            [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_annotations_only_use_labels_the_alert_keeps(rules: list[dict[str, Any]]) -> None:
    """``{{ $labels.x }}`` renders empty when the expression aggregated ``x`` away (promtool
    does not catch that): each label an annotation names survives the expression."""
    exported = exported_metrics()
    for rule in rules:
        expr = rule["expr"]
        kept: set[str] = set()
        groupings = re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
        if groupings:  # aggregated: what every `by` keeps
            kept = set.intersection(*({x.strip() for x in g.split(",")} for g in groupings))
        else:  # a selector's own labels, and the target's
            for name, _ in metric_selectors(expr):
                kept |= {"job", "instance"} | set(
                    exported.get(name, Exported(frozenset(), frozenset())).labels
                )
        named = re.findall(r"\$labels\.([a-zA-Z_]+)", " ".join(rule["annotations"].values()))
        assert set(named) <= kept, f"{rule['alert']}: {set(named) - kept} aggregated away"


# ============================================================================ sample policy
OPTIONAL = re.compile(r"^#: ?", re.MULTILINE)


def key_paths(document: dict[str, Any]) -> set[str]:
    """Sections and their keys (``sync.mode``), arrays of tables by their items' keys
    (``assignment.rules[].op``); no deeper (event types, match values)."""
    paths: set[str] = set()
    for section, table in document.items():
        paths.add(section)
        if not isinstance(table, dict):
            continue
        for key, value in table.items():
            paths.add(f"{section}.{key}")
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                paths.update(f"{section}.{key}[].{k}" for item in value for k in item)
    return paths


def documented_policy() -> dict[str, Any]:
    """The policy example of docs/bridge.md, "The policy file"."""
    text = (ROOT / "docs" / "bridge.md").read_text(encoding="utf-8")
    section = text[text.index("## The policy file") :]
    block = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    return tomllib.loads(block.group(1))


def test_the_sample_policy_loads_with_the_bridges_loader() -> None:
    policy = load_policy(str(EXAMPLE_POLICY))  # what FLEX_BRIDGE_POLICY=... runs
    assert [rule.name for rule in policy.rules] == ["vip", "everyone else"]
    assert [rule.op for rule in policy.rules] == ["accept", "defer"]
    assert policy.sync.mode == "degrade"
    assert policy.enrichment.enrichers == ()
    assert policy.event_handlers == {}
    assert policy.agents.call_urls is None  # [agents] with no key: anything valid


def test_the_sample_policys_optional_settings_load_too(tmp_path: Path) -> None:
    text = EXAMPLE_POLICY.read_text(encoding="utf-8")
    assert OPTIONAL.search(text), "the sample shows its optional settings as #: lines"
    enabled = tmp_path / "policy.toml"
    enabled.write_text(OPTIONAL.sub("", text), encoding="utf-8")
    policy = load_policy(str(enabled))
    assert [rule.name for rule in policy.rules] == ["vip", "voice", "everyone else"]
    assert policy.rules[1].before_accept
    assert [e.name for e in policy.enrichment.enrichers] == ["crm"]
    assert policy.event_handlers == {"task.canceled": ("mypackage.hooks:on_task_canceled",)}
    assert policy.agents.caller_ids == ("+15550100",)
    assert policy.agents.call_urls == ("https://handler.example.com/twiml/",)


def test_the_sample_policy_covers_every_setting_of_docs_bridge_md() -> None:
    text = OPTIONAL.sub("", EXAMPLE_POLICY.read_text(encoding="utf-8"))
    missing = key_paths(documented_policy()) - key_paths(tomllib.loads(text))
    assert not missing, f"policy.example.toml leaves out {sorted(missing)}"


# ================================================================================ .gitignore
def files_the_docs_tell_people_to_create() -> set[str]:
    found = {"flex-bridge.db", "flex-bridge.db.lock", "flex-bridge.db-wal"}  # the default journal
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = doc.read_text(encoding="utf-8")
        # File names (a placeholder such as --state-file PATH is not one).
        found.update(re.findall(r"--state-file[ =]([\w-]+\.\w+)", text))
        found.update(re.findall(r"FLEX_BRIDGE_POLICY=([\w-]+\.\w+)", text))
    return found


def test_gitignore_covers_the_files_readme_and_docs_tell_people_to_create() -> None:
    created = files_the_docs_tell_people_to_create()
    assert {"emulator.json", "policy.toml"} <= created
    spec = ignored_by(ROOT / ".gitignore")
    for name in sorted(created):
        assert spec.match_file(name), f"{name} (created by following the docs) is not ignored"


def test_gitignore_keeps_what_ships() -> None:
    spec = ignored_by(ROOT / ".gitignore")
    for path in (
        "policy.example.toml",
        "Dockerfile",
        ".dockerignore",
        "deploy/prometheus/flex-bridge.rules.yml",
        "bench/results/emulator.json",  # a committed result, not the emulator's state file
        "bench/results/latest.json",
        "flex_bridge/emulator/specs/twilio_taskrouter_v1.json",
    ):
        assert not spec.match_file(path), f"{path} ships, but .gitignore ignores it"


# ======================================================================= docs/deployment.md
def test_the_deployment_guide_lists_every_exported_metric() -> None:
    guide = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in guide, f"docs/deployment.md does not list {name}"
    for alert in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"][0]["rules"]:
        assert f"`{alert['alert']}`" in guide, f"docs/deployment.md does not list {alert['alert']}"
