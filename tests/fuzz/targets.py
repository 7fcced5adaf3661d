"""Fuzz targets for NovaNet's parsers of hostile input, shared by the tests and bench/fuzz.py.

Each target is (strategy, check). ``check(x)`` returns True when the input was accepted, False
when it was rejected with the documented error type and a message that names a field; anything
else (another exception, an error naming nothing, state that changed) raises and is recorded as
a finding by the harness.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from tests.fuzz import seeds
from tests.fuzz.harness import Finding
from tests.fuzz.mutate import TRICKY_STRINGS, documents, json_values, mutated

# "a.b[0].c: message" or "pods[2] (x/c).ports[1]: message": every NovaNet error starts with the field;
# a key that would garble the path is quoted as Python quotes it ("pods[3].'fe80::1%eth0': ...").
_SEG = r"(?:[^\s:('\"]|'[^'\n]*'|\"[^\"\n]*\")"
FIELD = re.compile(rf"(^|\n|[\s(]){_SEG}+( \([^)]*\))?{_SEG}*: ")


def _names_field(msg: str) -> bool:
    return bool(FIELD.search(msg))


def _lab() -> Any:
    from novanet_lab import errors, spec

    return spec, errors.LabError


# --------------------------------------------------------------------------- manifests


def check_manifest_object(obj: Any) -> bool:
    from novanet_core.state.model import ClusterState, ObjectError, parse_object

    try:
        parsed = parse_object(obj)
    except ObjectError as e:
        if not (e.path or "must be a map" in str(e)):
            raise Finding(f"ObjectError without a field path: {e}") from None
        return False
    kind = type(parsed).__name__
    st_ = ClusterState()
    st_.table(kind)[parsed.key] = parsed  # an accepted object must be storable under its key
    if not isinstance(parsed.key, str) or not parsed.key:
        raise Finding(f"accepted {kind} has key {parsed.key!r}")
    return True


manifest_objects = documents(seeds.MANIFESTS)


class ManifestDir:
    """A manifest directory with one good file and one file the fuzzer rewrites."""

    def __init__(self) -> None:
        from novanet_core.state.manifests import ManifestSource

        self.dir = Path(tempfile.mkdtemp(prefix="novanet-fuzz-manifests-"))
        good = [copy.deepcopy(seeds.NODE), copy.deepcopy(seeds.NAMESPACE)]
        pod = copy.deepcopy(seeds.POD)
        pod["metadata"]["name"] = "good"
        good.append(pod)
        (self.dir / "good.yaml").write_text(yaml.safe_dump_all(good))
        (self.dir / "fuzz.yaml").write_text(yaml.safe_dump_all([seeds.POD, seeds.POLICY]))
        self.src = ManifestSource(self.dir)
        first = self.src.snapshot()
        self.good = {k: v for k, v in first.pods.items() if k == "x/good"} | {
            "node": first.nodes["node-1"], "ns": first.namespaces["x"]}
        self.n = 0

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def check(self, payload: tuple[str, Any]) -> bool:
        how, body = payload
        if how == "docs":
            try:
                text = yaml.safe_dump_all(body if isinstance(body, list) else [body])
            except (yaml.YAMLError, UnicodeEncodeError, RecursionError):
                return False  # PyYAML cannot write this document: not an input a user can produce
        else:
            text = body
        self.n += 1
        # A new inode per write, as every real writer (rename) gives; the source keys on it.
        tmp = self.dir / f".fuzz-{self.n}.tmp"
        tmp.write_text(text, errors="surrogatepass")
        os.replace(tmp, self.dir / "fuzz.yaml")
        before_errors = len(self.src.errors)
        snap = self.src.snapshot()
        if snap.pods.get("x/good") != self.good["x/good"] or snap.nodes.get("node-1") != self.good["node"] \
                or snap.namespaces.get("x") != self.good["ns"]:
            # the fuzz file may legitimately redefine node-1 / namespace x; then the good ones are shadowed
            names = re.findall(r"name: (\S+)", text)
            if "good" in names or "node-1" in names or "x" in names:
                return True
            raise Finding("objects of an untouched file changed after another file was rewritten")
        for e in self.src.errors[before_errors:] if len(self.src.errors) > before_errors else []:
            if not e.startswith("fuzz.yaml"):
                raise Finding(f"manifest error does not name the file: {e}")
        return len(self.src.errors) == before_errors


def manifest_files() -> st.SearchStrategy[tuple[str, Any]]:
    seed_text = yaml.safe_dump_all(seeds.MANIFESTS)
    return st.one_of(
        st.tuples(st.just("docs"), st.lists(documents(seeds.MANIFESTS), min_size=1, max_size=4)),
        st.tuples(st.just("text"), _text_mutations(seed_text)),
    )


def _text_mutations(seed: str) -> st.SearchStrategy[str]:
    """Byte-level damage to a YAML/JSON document: splice, truncate, insert noise."""

    @st.composite
    def go(draw: st.DrawFn) -> str:
        s = seed
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(s)))
            op = draw(st.sampled_from(("cut", "insert", "truncate", "dup")))
            if op == "cut":
                s = s[:i] + s[i + draw(st.integers(1, 20)):]
            elif op == "insert":
                s = s[:i] + draw(st.sampled_from(("{", "}", "[", "]", ":", "- ", "&a ", "*a", "!!python/object:os.system",
                                                  "\t", "\n  ", "'", '"', "\x00", "---\n", "%YAML 1.1\n", "[" * 3000, "[" * 3000 + "]" * 3000))
                                 | st.text(max_size=8)) + s[i:]
            elif op == "truncate":
                s = s[:i]
            else:
                j = draw(st.integers(i, min(len(s), i + 60)))
                s = s[:j] + s[i:j] * draw(st.integers(2, 6)) + s[j:]
        return s

    return go()


# --------------------------------------------------------------------------- NetworkPolicy


class PolicyWorld:
    """A small cluster with one valid policy in force; the fuzzer updates it and adds others."""

    def __init__(self) -> None:
        from novanet_core.policy import PolicyEngine
        from novanet_core.state.model import ClusterState, parse_object

        self.state = ClusterState()
        for i, (ns, labels) in enumerate([("x", {"app": "web", "tier": "fe"}), ("x", {"app": "db"}),
                                          ("y", {"app": "web"})]):
            doc = copy.deepcopy(seeds.POD)
            doc["metadata"].update(name=f"p{i}", namespace=ns, labels=labels)
            doc["status"]["podIP"] = f"10.42.1.{10 + i}"
            pod = parse_object(doc)
            self.state.pods[pod.key] = pod
        for ns in ("x", "y"):
            n = parse_object({**seeds.NAMESPACE, "metadata": {"name": ns, "labels": {"team": ns}}})
            self.state.namespaces[n.key] = n
        self.good = parse_object(seeds.POLICY)
        self.state.policies[self.good.key] = self.good
        self.engine = PolicyEngine()
        self.engine.load(self.state)
        self.baseline = dict(self.engine.endpoints)

    def check(self, payload: tuple[bool, Any]) -> bool:
        from novanet_core.state.model import NetworkPolicy

        same_key, spec = payload
        name = self.good.name if same_key else "other"
        np = NetworkPolicy(namespace="x", name=name, spec=spec)
        self.engine.upsert_policy(np)
        rejected = self.engine.rejected.get(np.key)
        try:
            for src in self.state.pods.values():
                for dst in self.state.pods.values():
                    for proto, port in (("TCP", 80), ("UDP", 53), ("SCTP", 85), ("TCP", 9000)):
                        self.engine.evaluate(src, dst, proto, port)
                self.engine.evaluate("192.168.7.7", src, "TCP", 80)
        finally:
            if rejected is not None:
                for e in rejected:
                    if not e.startswith("spec"):
                        raise Finding(f"policy error does not start with a field path: {e}")
                if same_key and dict(self.engine.endpoints) != self.baseline:
                    raise Finding("a rejected update changed the enforced policy of the previous valid version")
            # back to the known state for the next case
            if same_key:
                self.engine.upsert_policy(self.good)
            else:
                self.engine.delete_policy(np.key)
        if dict(self.engine.endpoints) != self.baseline:
            raise Finding("restoring the valid policy did not restore the compiled endpoints")
        return rejected is None


def policy_specs() -> st.SearchStrategy[tuple[bool, Any]]:
    specs = [seeds.POLICY["spec"], seeds.DENY_ALL["spec"]]
    # parse_object only hands the engine map specs (anything else is an ObjectError there)
    return st.tuples(st.booleans(), documents(specs).filter(lambda s: isinstance(s, dict)))


# --------------------------------------------------------------------------- agent config


def check_agent_config(payload: tuple[Any, dict[str, str]]) -> bool:
    from novanet_core.backends import ConfigError
    from novanet_core.config.loader import load_config

    doc, env = payload
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="novanet-fuzz-cfg-") as f:
        try:
            f.write(doc if isinstance(doc, str) else yaml.safe_dump(doc))
        except (yaml.YAMLError, UnicodeEncodeError, RecursionError):
            return False
        f.flush()
        try:
            cfg = load_config(f.name, env=env)
        except ConfigError as e:
            if not _names_field(str(e)) and not str(e).startswith("config file "):
                raise Finding(f"config error names no key: {e}") from None
            return False
    _ = cfg.state_dir, cfg.model_dump()
    return True


def agent_configs() -> st.SearchStrategy[tuple[Any, dict[str, str]]]:
    env_vals = st.sampled_from(TRICKY_STRINGS) | st.text(max_size=20).filter(lambda s: "\x00" not in s)
    env = st.one_of(st.just({}), st.dictionaries(st.sampled_from(sorted(_env_keys())), env_vals, max_size=3),
                    st.just(dict(seeds.AGENT_ENV)))
    doc = st.one_of(documents([seeds.AGENT_CONFIG]), _text_mutations(yaml.safe_dump(seeds.AGENT_CONFIG)))
    return st.tuples(doc, env)


def _env_keys() -> list[str]:
    from novanet_core.config.loader import ENV_KEYS

    return list(ENV_KEYS)


# --------------------------------------------------------------------------- lab spec


def check_lab_spec(doc: Any) -> bool:
    spec_mod, lab_error = _lab()
    try:
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    except (yaml.YAMLError, UnicodeEncodeError, RecursionError):
        return False
    try:
        spec_mod.load_spec_text(text, "<fuzz>")
    except lab_error as e:
        msg = str(e)
        if not (_names_field(msg.split("\n", 1)[-1]) or "not valid YAML" in msg or "top level" in msg):
            raise Finding(f"lab spec error names no field: {msg[:200]}") from None
        return False
    return True


def lab_specs() -> st.SearchStrategy[Any]:
    specs = seeds.lab_specs()
    return st.one_of(documents(specs), st.sampled_from(specs).flatmap(lambda s: _text_mutations(yaml.safe_dump(s))))


# --------------------------------------------------------------------------- CNI (in-process client)

CNI_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51} | set(range(100, 200))


def cni_inputs(gc: bool = True) -> st.SearchStrategy[tuple[dict[str, str], str]]:
    """CNI environment and stdin. ``gc=False`` leaves GC out: against a live agent a well-formed
    GC legitimately deletes every attachment it does not list."""
    if not gc:
        return _cni_inputs().filter(lambda c: c[0].get("CNI_COMMAND") != "GC")
    return _cni_inputs()


def _cni_inputs() -> st.SearchStrategy[tuple[dict[str, str], str]]:
    env_text = st.sampled_from(TRICKY_STRINGS) | st.text(max_size=30)
    env = st.one_of(
        mutated(seeds.CNI_ENV).filter(lambda e: isinstance(e, dict)).map(
            lambda e: {str(k): str(v) for k, v in e.items()}),
        st.fixed_dictionaries({"CNI_COMMAND": st.sampled_from(("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION",
                                                               "add", "", "ADD\n"))},
                              optional={"CNI_CONTAINERID": env_text, "CNI_NETNS": env_text, "CNI_IFNAME": env_text,
                                        "CNI_ARGS": env_text}),
    )

    def dump(conf: Any) -> st.SearchStrategy[str]:
        import json

        try:
            text = json.dumps(conf)
        except (ValueError, TypeError):
            text = "{"
        return st.one_of(st.just(text), _text_mutations(text))

    stdin = documents([seeds.CNI_CONF]).flatmap(dump)
    return st.tuples(env, stdin)


def make_cni_check(sock_dir: str, run: Callable[[dict[str, str], str], tuple[int, Any]] | None = None
                   ) -> Callable[[tuple[dict[str, str], str]], bool]:
    """The CNI client run in-process against an agent socket path in ``sock_dir`` (which may have
    no agent: then every well-formed request gets 'try again later' and DEL a deferred delete)."""
    from novanet_core.cni import client, minijson

    run = run or client.run
    sock = os.path.join(sock_dir, "cni.sock")

    def check(payload: tuple[dict[str, str], str]) -> bool:
        env, stdin = payload
        # Keep the fuzzer's agentSocket inside the sandbox: a deferred DEL writes next to it.
        try:
            conf = minijson.loads(stdin)
            if isinstance(conf, dict) and isinstance(conf.get("agentSocket"), str) and conf["agentSocket"].startswith("/"):
                conf["agentSocket"] = sock
                stdin = minijson.dumps(conf)
        except ValueError:
            pass
        code, out = run(env, stdin)
        if code == 0:
            if out is not None:
                minijson.dumps(out)
            return True
        if code != 1 or not isinstance(out, dict):
            raise Finding(f"CNI exit {code} with output {out!r}")
        if set(out) - {"cniVersion", "code", "msg", "details"} or not isinstance(out.get("msg"), str):
            raise Finding(f"CNI error not in the spec's shape: {out!r}")
        if out.get("code") not in CNI_CODES:
            raise Finding(f"CNI error code {out.get('code')!r} is not a spec or NovaNet code")
        minijson.dumps(out)
        return False

    return check


def binary_runner(binary: str) -> Callable[[dict[str, str], str], tuple[int, Any]]:
    """``run(env, stdin)`` for a CNI plugin executable (the C client): exec it as a runtime does.
    Killed by a signal, or output that is not the spec's JSON, is a finding."""
    import json
    import subprocess

    def run(env: dict[str, str], stdin: str) -> tuple[int, Any]:
        # execve carries "NAME=value" strings: a name that is empty or holds "=" (or any NUL) cannot
        # reach a plugin from any runtime, so such pairs are not inputs the binary can be given.
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                **{k: v for k, v in env.items() if k and "=" not in k and "\x00" not in k + v}}
        p = subprocess.run([binary], input=stdin.encode("utf-8", "surrogatepass"), env=full, capture_output=True,
                           timeout=60)
        if p.returncode < 0:
            raise Finding(f"{binary} killed by signal {-p.returncode}")
        if not p.stdout.strip():
            return p.returncode, None
        try:
            return p.returncode, json.loads(p.stdout)
        except ValueError:
            raise Finding(f"{binary} printed no JSON: {p.stdout[:200]!r}") from None

    return run


# --------------------------------------------------------------------------- random JSON (for the API)

api_values = json_values
