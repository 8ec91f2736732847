#!/usr/bin/env python3
"""Offline checks of deploy/: Kubernetes manifests, compose.yaml and the Dockerfile.

Run through deploy/validate.sh (which installs the pinned tools first with
scripts/setup-deploy.sh). No network: every schema is vendored (deploy/schemas/) or
bundled (kubernetes-validate). Exits 1 on any failure.

- Kubernetes: every manifest listed by the kustomizations, strict schema validation
  (unknown fields are errors) against KUBERNETES_VERSION with kubernetes-validate; the
  KEDA ScaledObject against the JSON schema generated from KEDA's CRD; then the
  references between objects and the settings that must agree.
- Compose: interpolated as `docker compose` would, validated against the compose-spec
  JSON schema, then Tapedeck-specific checks.
- Dockerfile: parsed; multi-stage, pinned toolchain, non-root final stage, no
  redis-server, HEALTHCHECK, and a build context that holds every workspace member.

`validate.py --self-test` breaks each input in memory in known ways and checks that the
validator notices, so the checks cannot rot into always passing.
"""

import copy
import json
import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
K8S = DEPLOY / "k8s"
SCHEMAS = DEPLOY / "schemas"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"

SECRET_KEYS = {"REDIS_URL", "TAPEDECK_ADMIN_TOKEN", "TAPEDECK_SMTP_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
# KEDA's prometheus scaler (pkg/scalers/prometheus_scaler.go at v2.20.2): its trigger
# metadata keys; the CRD types metadata as a free map of strings.
PROMETHEUS_KEYS = {
    "serverAddress", "query", "queryParameters", "threshold", "activationThreshold", "namespace",
    "customHeaders", "ignoreNullValues", "unsafeSsl", "awsRegion", "timeout", "identityOwner",
}
PROMETHEUS_REQUIRED = {"serverAddress", "query", "threshold"}


class Report:
    def __init__(self, quiet=False):
        self.passed = 0
        self.failed = []
        self.quiet = quiet

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            if not self.quiet:
                print(f"ok    {what}")
        else:
            self.failed.append(f"{what}: {detail}" if detail else what)
            if not self.quiet:
                print(f"FAIL  {what}" + (f": {detail}" if detail else ""))
        return ok


def known_env_vars():
    """Every variable `tapedeck` reads (clap `env = "..."` in host/tapedeck/src), plus the
    ones its libraries read."""
    names = set()
    for path in (ROOT / "host" / "tapedeck" / "src").rglob("*.rs"):
        names.update(re.findall(r'env = "([A-Z0-9_]+)"', path.read_text()))
    return names


def env_name_ok(name, known):
    return name in known or name == "RUST_LOG" or name.startswith("AWS_")


def int_of(value):
    try:
        return int(str(value))
    except ValueError:
        return None


# --- Kubernetes ---------------------------------------------------------------------------


def load_kustomization(directory):
    """The documents of every resource a kustomization.yaml lists: [(file, doc)]."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs = []
    for name in kust.get("resources", []):
        path = directory / name
        if not path.is_file():
            docs.append((name, None))
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((str(path.relative_to(DEPLOY)), doc))
    return kust, docs


def by_kind(docs, kind):
    return [d for _, d in docs if d and d.get("kind") == kind]


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def containers(deploy):
    return deploy["spec"]["template"]["spec"].get("containers", [])


def check_kubernetes_schemas(r, directory, kust, docs, keda_schema):
    listed = set(kust.get("resources", []))
    on_disk = {p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml"}
    rel = directory.relative_to(DEPLOY)
    r.check(listed == on_disk, f"{rel}/kustomization.yaml lists every manifest of the folder",
            f"listed {sorted(listed)}, present {sorted(on_disk)}")
    seen = set()
    for name, doc in docs:
        if doc is None:
            r.check(False, f"{rel}/{name} exists")
            continue
        kind, meta = doc.get("kind"), doc.get("metadata") or {}
        what = f"{name}: {kind}/{meta.get('name')}"
        r.check("namespace" not in meta, f"{what} is namespace-agnostic", "metadata.namespace is set")
        key = (kind, meta.get("name"))
        r.check(key not in seen, f"{what} has a unique name")
        seen.add(key)
        if kind == "ScaledObject":
            errors = sorted(jsonschema.Draft7Validator(keda_schema).iter_errors(doc), key=lambda e: list(e.path))
            r.check(not errors, f"{what} matches KEDA's ScaledObject CRD schema (strict)",
                    "; ".join(f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:5]))
            continue
        try:
            version = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            r.check(True, f"{what} matches the Kubernetes {version} schema (strict)")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(root)"
            r.check(False, f"{what} matches the Kubernetes schema (strict)", f"{path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            r.check(False, f"{what} has a known kind", e.message)


def check_tapedeck_pod(r, deploy, role, configmap, kust):
    name = deploy["metadata"]["name"]
    pod = deploy["spec"]["template"]["spec"]
    ctrs = containers(deploy)
    r.check(len(ctrs) == 1, f"{name}: one container")
    c = ctrs[0]
    args = c.get("args", [])
    r.check(args[:3] == ["serve", "--role", role], f"{name}: runs `tapedeck serve --role {role}`", f"args {args}")
    images = {i.get("name") for i in kust.get("images", [])}
    r.check(c.get("image") in images, f"{name}: image is the one kustomization.yaml sets", f"{c.get('image')} not in {images}")
    sources = {e.get("configMapRef", {}).get("name") for e in c.get("envFrom", [])} | {
        e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])}
    r.check({"tapedeck-config", "tapedeck-secrets"} <= sources, f"{name}: environment from the ConfigMap and the Secret (REDIS_URL among it)")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    listen = args[args.index("--listen") + 1] if "--listen" in args else None
    r.check(listen is not None and ports.get("http") == int_of(listen.rsplit(":", 1)[1]),
            f"{name}: the `http` port is the --listen port", f"listen {listen}, ports {ports}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        got = (c.get(probe) or {}).get("httpGet") or {}
        r.check(got.get("path") == path and got.get("port") in ("http", ports.get("http")),
                f"{name}: {probe} GET {path} on the http port", f"{got}")
    res = c.get("resources") or {}
    r.check(bool(res.get("requests")) and "memory" in (res.get("limits") or {}), f"{name}: resource requests and a memory limit")
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    r.check(psc.get("runAsNonRoot") is True and (psc.get("runAsUser") or 0) > 0, f"{name}: runs as a non-root user")
    r.check(csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False
            and "ALL" in ((csc.get("capabilities") or {}).get("drop") or []),
            f"{name}: read-only root filesystem, no privilege escalation, no capabilities")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    r.check("/data" in mounts and "emptyDir" in volumes.get(mounts["/data"], {}),
            f"{name}: /data (the data dir) is an emptyDir", f"mounts {mounts}")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    shutdown = int_of(env.get("TAPEDECK_SHUTDOWN_TIMEOUT_SECS", configmap.get("TAPEDECK_SHUTDOWN_TIMEOUT_SECS", 20)))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    r.check(shutdown is not None and grace > shutdown, f"{name}: terminationGracePeriodSeconds ({grace}) > TAPEDECK_SHUTDOWN_TIMEOUT_SECS ({shutdown})")
    if role == "worker":
        run_max = int_of(configmap.get("TAPEDECK_RUN_CPU_MAX_SECS", 3600))
        r.check(shutdown is not None and run_max is not None and shutdown >= run_max,
                f"{name}: TAPEDECK_SHUTDOWN_TIMEOUT_SECS ({shutdown}) >= the longest allowed run, TAPEDECK_RUN_CPU_MAX_SECS ({run_max})")
        r.check("replicas" not in deploy["spec"], f"{name}: no `replicas` (KEDA owns it; apply would reset it)")
    return env


def check_kubernetes_refs(r, docs, kust, known):
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"]: {**d.get("data", {}), **d.get("stringData", {})} for d in by_kind(docs, "Secret")}
    services = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}
    for name, d in deployments.items():
        sel = d["spec"]["selector"].get("matchLabels", {})
        r.check(labels_match(sel, d["spec"]["template"]["metadata"].get("labels", {})),
                f"Deployment/{name}: selector matches its pod labels")
    configmap = cms.get("tapedeck-config", {})
    secret = secrets.get("tapedeck-secrets", {})
    r.check(SECRET_KEYS <= set(secret), "Secret/tapedeck-secrets has " + ", ".join(sorted(SECRET_KEYS)),
            f"missing {sorted(SECRET_KEYS - set(secret))}")
    r.check(not (set(configmap) & SECRET_KEYS), "ConfigMap/tapedeck-config holds no secret setting")
    roles = {}
    for name, d in deployments.items():
        args = containers(d)[0].get("args", []) if containers(d) else []
        if args[:2] == ["serve", "--role"] and len(args) > 2:
            roles.setdefault(args[2], []).append(d)
    r.check(len(roles.get("gateway", [])) == 1 and len(roles.get("worker", [])) == 1,
            "one gateway and one worker Deployment", f"roles {sorted(roles)}")
    envs = []
    for role in ("gateway", "worker"):
        for d in roles.get(role, []):
            envs.append(check_tapedeck_pod(r, d, role, configmap, kust))
    for role in ("gateway",):
        for d in roles.get(role, []):
            r.check(d["spec"].get("replicas", 1) >= 2, f"Deployment/{d['metadata']['name']}: 2+ replicas")
    names = set(configmap) | set(secret)
    for env in envs:
        names |= set(env)
    unknown = sorted(n for n in names if not env_name_ok(n, known))
    r.check(not unknown, "every environment variable is one tapedeck reads (host/tapedeck/src)", f"unknown {unknown}")
    for d in deployments.values():
        for c in containers(d):
            for e in c.get("envFrom", []):
                ref = e.get("configMapRef") or e.get("secretRef") or {}
                pool = cms if "configMapRef" in e else secrets
                r.check(ref.get("name") in pool, f"Deployment/{d['metadata']['name']}: envFrom {ref.get('name')} exists")
    gateway_pods = [d["spec"]["template"]["metadata"]["labels"] for d in roles.get("gateway", [])]
    for name, svc in services.items():
        matched = [d for d in deployments.values() if labels_match(svc["spec"].get("selector", {}), d["spec"]["template"]["metadata"]["labels"])]
        r.check(len(matched) == 1, f"Service/{name}: selects one Deployment's pods")
        if matched:
            port_names = {p.get("name") for c in containers(matched[0]) for p in c.get("ports", [])}
            for p in svc["spec"].get("ports", []):
                r.check(p.get("targetPort") in port_names, f"Service/{name}: targetPort {p.get('targetPort')} is a container port")
    for ing in by_kind(docs, "Ingress"):
        ann = ing["metadata"].get("annotations", {})
        r.check(any("body-size" in k for k in ann), f"Ingress/{ing['metadata']['name']}: a request body size annotation")
        r.check(any("read-timeout" in k for k in ann), f"Ingress/{ing['metadata']['name']}: a long read timeout (SSE)")
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                svc = services.get(backend["name"])
                ok = svc is not None and any(
                    p.get("name") == backend["port"].get("name") or p.get("port") == backend["port"].get("number")
                    for p in svc["spec"]["ports"])
                r.check(ok, f"Ingress/{ing['metadata']['name']}: backend {backend['name']}:{backend['port']} is a Service port")
                if svc is not None:
                    r.check(any(labels_match(svc["spec"].get("selector", {}), l) for l in gateway_pods),
                            f"Ingress/{ing['metadata']['name']}: routes to the gateways")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    covered = set()
    for pdb in pdbs:
        matched = [n for n, d in deployments.items() if labels_match(pdb["spec"]["selector"].get("matchLabels", {}), d["spec"]["template"]["metadata"]["labels"])]
        r.check(len(matched) == 1, f"PodDisruptionBudget/{pdb['metadata']['name']}: selects one Deployment", f"matches {matched}")
        covered.update(matched)
    r.check(covered == set(deployments), "every Deployment has a PodDisruptionBudget", f"covered {sorted(covered)}")
    sos = by_kind(docs, "ScaledObject")
    r.check(len(sos) == 1, "one KEDA ScaledObject")
    for so in sos:
        spec = so["spec"]
        target = spec["scaleTargetRef"]
        worker_names = [d["metadata"]["name"] for d in roles.get("worker", [])]
        r.check(target.get("kind", "Deployment") == "Deployment" and target.get("name") in worker_names,
                f"ScaledObject/{so['metadata']['name']}: scales the worker Deployment", f"target {target}")
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        r.check(lo <= hi and hi > 1, f"ScaledObject/{so['metadata']['name']}: min {lo} <= max {hi} replicas (the CRD's CEL rule)")
        for trig in spec.get("triggers", []):
            if trig.get("type") != "prometheus":
                r.check(False, f"ScaledObject/{so['metadata']['name']}: trigger is prometheus", trig.get("type"))
                continue
            md = trig.get("metadata", {})
            r.check(set(md) <= PROMETHEUS_KEYS and PROMETHEUS_REQUIRED <= set(md),
                    f"ScaledObject/{so['metadata']['name']}: prometheus trigger metadata keys are the scaler's",
                    f"unknown {sorted(set(md) - PROMETHEUS_KEYS)}, missing {sorted(PROMETHEUS_REQUIRED - set(md))}")
            try:
                threshold = float(md.get("threshold", ""))
            except ValueError:
                threshold = 0
            r.check(threshold > 0, f"ScaledObject/{so['metadata']['name']}: threshold is a positive number")
            r.check("tapedeck_queue_backlog" in md.get("query", ""), f"ScaledObject/{so['metadata']['name']}: query reads tapedeck_queue_backlog")
            if "fallback" in spec:
                r.check(trig.get("metricType", "AverageValue") == "AverageValue",
                        f"ScaledObject/{so['metadata']['name']}: fallback with an AverageValue trigger (KEDA requires it)")
    scraped = [d for d in deployments.values() if d["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/path") == "/metrics"]
    r.check(len(scraped) == len(deployments), "every Deployment's pods are marked for scraping /metrics")
    # Metrics are served on their own listener (never the API's), reachable from the pod
    # network only if TAPEDECK_METRICS_LISTEN says so; the scrape port must be that one.
    cm = next((d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "tapedeck-config"), None)
    metrics_listen = str(((cm or {}).get("data") or {}).get("TAPEDECK_METRICS_LISTEN", ""))
    for d in scraped:
        name = d["metadata"]["name"]
        port = d["spec"]["template"]["metadata"]["annotations"].get("prometheus.io/port")
        ports = {p.get("name"): p.get("containerPort") for c in containers(d) for p in c.get("ports", [])}
        r.check(port is not None and ports.get("metrics") == int_of(port) and ports.get("http") != int_of(port),
                f"{name}: scraped on its `metrics` port, not the API's", f"annotation {port}, ports {ports}")
        r.check(not metrics_listen.startswith("127.") and metrics_listen.rsplit(":", 1)[-1] == str(port),
                f"{name}: TAPEDECK_METRICS_LISTEN serves the scraped port to the pod network", metrics_listen)


def check_redis_optional(r, docs):
    sts = by_kind(docs, "StatefulSet")
    r.check(len(sts) == 1, "optional/: one Redis StatefulSet")
    for s in sts:
        args = " ".join(containers(s)[0].get("args", []))
        r.check("--appendonly yes" in args and "noeviction" in args, "optional/: Redis with AOF on and no eviction")
        r.check(labels_match(s["spec"]["selector"]["matchLabels"], s["spec"]["template"]["metadata"]["labels"]),
                "optional/: StatefulSet selector matches its pod labels")
    svcs = by_kind(docs, "Service")
    r.check(any(s["metadata"]["name"] == "tapedeck-redis" for s in svcs), "optional/: Service tapedeck-redis")


def check_kubernetes(r, main_docs=None, optional_docs=None):
    keda_crd = yaml.safe_load((SCHEMAS / "keda.sh_scaledobjects.yaml").read_text())
    sys.path.insert(0, str(SCHEMAS))
    import crd_to_jsonschema

    keda_schema = json.loads((SCHEMAS / "keda-scaledobject.schema.json").read_text())
    r.check(crd_to_jsonschema.render(crd_to_jsonschema.crd_schema(keda_crd)) == (SCHEMAS / "keda-scaledobject.schema.json").read_text(),
            "schemas/keda-scaledobject.schema.json is generated from the vendored CRD (not stale)")
    jsonschema.Draft7Validator.check_schema(keda_schema)
    known = known_env_vars()
    r.check(len(known) > 20, "read tapedeck's environment variables from host/tapedeck/src", f"found {len(known)}")
    kust, docs = load_kustomization(K8S)
    if main_docs is not None:
        docs = main_docs
    check_kubernetes_schemas(r, K8S, kust, docs, keda_schema)
    check_kubernetes_refs(r, docs, kust, known)
    okust, odocs = load_kustomization(K8S / "optional")
    if optional_docs is not None:
        odocs = optional_docs
    check_kubernetes_schemas(r, K8S / "optional", okust, odocs, keda_schema)
    check_redis_optional(r, odocs)


# --- Compose ------------------------------------------------------------------------------

VAR = re.compile(r"\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
BRACED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?$", re.S)


class MissingVariable(Exception):
    pass


def interpolate(value, env):
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e},
    ${VAR:+r}, ${VAR+r}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group(1):
            return "$"
        if m.group(3):
            return env.get(m.group(3), "")
        b = BRACED.match(m.group(2))
        if not b:
            raise MissingVariable(f"invalid interpolation ${{{m.group(2)}}}")
        name, op, arg = b.group(1), b.group(2), b.group(3) or ""
        val = env.get(name)
        unset_or_empty = not val
        if op is None:
            return val or ""
        if op in (":-", "-"):
            return arg if (unset_or_empty if op == ":-" else val is None) else val
        if op in (":?", "?"):
            if unset_or_empty if op == ":?" else val is None:
                raise MissingVariable(f"{name}: {arg}")
            return val
        return "" if (unset_or_empty if op == ":+" else val is None) else arg

    return VAR.sub(sub, value)


def env_dict(environment):
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return dict(environment or {})


def command_list(cmd):
    return cmd.split() if isinstance(cmd, str) else list(cmd or [])


def check_compose(r, raw=None):
    raw = raw if raw is not None else yaml.safe_load(COMPOSE.read_text())
    try:
        interpolate(raw, {})
        r.check(False, "compose.yaml requires TAPEDECK_ADMIN_TOKEN (${...:?...})", "interpolates without it")
    except MissingVariable as e:
        r.check("TAPEDECK_ADMIN_TOKEN" in str(e), "compose.yaml requires TAPEDECK_ADMIN_TOKEN (${...:?...})", str(e))
    try:
        doc = interpolate(raw, {"TAPEDECK_ADMIN_TOKEN": "validate-sh-token-0123456789"})
    except MissingVariable as e:
        r.check(False, "compose.yaml interpolates with TAPEDECK_ADMIN_TOKEN set", str(e))
        return
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    r.check(not errors, "compose.yaml matches the compose-spec schema",
            "; ".join(f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message[:200]}" for e in errors[:5]))
    if errors:
        return
    services = doc.get("services", {})
    known = known_env_vars()
    tapedeck = {}
    for name, svc in services.items():
        build = svc.get("build")
        if isinstance(build, dict) and build.get("dockerfile") or (isinstance(svc.get("image"), str) and svc["image"].startswith("tapedeck")):
            tapedeck[name] = svc
    roles = {}
    listens = {}
    for name, svc in tapedeck.items():
        build = svc.get("build") or {}
        context = (COMPOSE.parent / (build.get("context", ".") if isinstance(build, dict) else build)).resolve()
        dockerfile = (context / build.get("dockerfile", "Dockerfile")) if isinstance(build, dict) else None
        r.check(context == ROOT and dockerfile is not None and dockerfile.resolve() == DOCKERFILE,
                f"compose {name}: built from deploy/Dockerfile with the repository as context", f"context {context}, dockerfile {dockerfile}")
        env = env_dict(svc.get("environment"))
        r.check(str(env.get("REDIS_URL") or "").startswith("redis://") and "redis" in services,
                f"compose {name}: REDIS_URL names the redis service", f"{env.get('REDIS_URL')}")
        r.check(str(env.get("TAPEDECK_BLOB_URL", "")).startswith("s3://") and "minio" in str(env.get("AWS_ENDPOINT", "")),
                f"compose {name}: blobs in MinIO (TAPEDECK_BLOB_URL s3://, AWS_ENDPOINT)")
        r.check(str(env.get("TAPEDECK_SMTP_URL", "")).startswith("smtp://mailpit:"), f"compose {name}: mail through Mailpit (TAPEDECK_SMTP_URL)")
        r.check(len(str(env.get("TAPEDECK_ADMIN_TOKEN") or "")) >= 16, f"compose {name}: TAPEDECK_ADMIN_TOKEN from the environment")
        unknown = sorted(n for n in env if not env_name_ok(n, known))
        r.check(not unknown, f"compose {name}: every environment variable is one tapedeck reads", f"unknown {unknown}")
        cmd = command_list(svc.get("command"))
        role = cmd[cmd.index("--role") + 1] if "--role" in cmd else None
        roles.setdefault(role, []).append(name)
        listen = cmd[cmd.index("--listen") + 1] if "--listen" in cmd else None
        r.check(cmd[:1] == ["serve"] and role in ("gateway", "worker") and listen is not None,
                f"compose {name}: `serve --role gateway|worker --listen ...`", f"command {cmd}")
        port = listen.rsplit(":", 1)[1] if listen else None
        listens[name] = port
        test = " ".join(command_list((svc.get("healthcheck") or {}).get("test")))
        r.check(port is not None and f"127.0.0.1:{port}/" in test and ("/healthz" in test or "/readyz" in test),
                f"compose {name}: healthcheck probes its own --listen port", test)
        deps = svc.get("depends_on") or {}
        r.check(isinstance(deps, dict) and all(d in deps for d in ("redis", "minio", "create-bucket")),
                f"compose {name}: depends on redis, minio and the bucket")
        if isinstance(deps, dict):
            r.check((deps.get("create-bucket") or {}).get("condition") == "service_completed_successfully",
                    f"compose {name}: waits for the bucket to be created")
    r.check(len(roles.get("gateway", [])) == 1 and len(roles.get("worker", [])) == 2,
            "compose: one gateway and two workers", f"roles {roles}")
    worker_ports = [listens[n] for n in roles.get("worker", [])]
    r.check(len(set(worker_ports)) == len(worker_ports), "compose: workers listen on distinct ports", f"{worker_ports}")
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for dep, cond in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
            r.check(dep in services, f"compose {name}: dependency {dep} exists")
            if (cond or {}).get("condition") == "service_healthy":
                r.check("healthcheck" in services.get(dep, {}), f"compose {name}: {dep} has the healthcheck it waits for")
    redis_cmd = " ".join(command_list(services.get("redis", {}).get("command")))
    r.check("--appendonly yes" in redis_cmd, "compose redis: append-only file on")
    r.check("redis" in services.get("redis", {}).get("image", ""), "compose redis: official image")
    bucket = command_list(services.get("create-bucket", {}).get("entrypoint")) + command_list(services.get("create-bucket", {}).get("command"))
    blob = next((env_dict(s.get("environment")).get("TAPEDECK_BLOB_URL") for s in tapedeck.values()), "") or ""
    bucket_name = blob[len("s3://"):].split("/")[0]
    r.check(bool(bucket_name) and f"mb --ignore-existing local/{bucket_name}" in " ".join(bucket),
            f"compose create-bucket: creates the bucket of TAPEDECK_BLOB_URL ({bucket_name})")
    r.check(services.get("create-bucket", {}).get("restart", "no") == "no", "compose create-bucket: runs once")


# --- Dockerfile ---------------------------------------------------------------------------


def parse_dockerfile(text):
    """[(INSTRUCTION, arguments)], continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and buf):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def json_or_words(args):
    try:
        value = json.loads(args)
        if isinstance(value, list):
            return value
    except ValueError:
        pass
    return args.split()


def version_tuple(text):
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def check_dockerfile(r, text=None):
    text = text if text is not None else DOCKERFILE.read_text()
    instructions = parse_dockerfile(text)
    args = {}
    stages = []
    for inst, rest in instructions:
        if inst == "FROM":
            stages.append({"from": rest, "body": []})
        elif not stages:
            if inst == "ARG" and "=" in rest:
                k, v = rest.split("=", 1)
                args[k.strip()] = v.strip()
        else:
            stages[-1]["body"].append((inst, rest))

    def expand(s):
        return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), s)

    r.check(len(stages) >= 2, "Dockerfile: multi-stage", f"{len(stages)} stage(s)")
    if len(stages) < 2:
        return
    builder, final = stages[0], stages[-1]
    bfrom = expand(builder["from"]).split()
    bimage = bfrom[0]
    bname = bfrom[2] if len(bfrom) > 2 and bfrom[1].lower() == "as" else None
    r.check(bimage.startswith("rust:") and version_tuple(bimage.split(":", 1)[1]) >= (1, 95),
            "Dockerfile: builder on the official Rust image, 1.95 or newer", bimage)
    r.check(bool(re.search(r":\d+\.\d+\.\d+", bimage)), "Dockerfile: Rust version pinned to a patch release", bimage)
    brun = " ".join(rest for inst, rest in builder["body"] if inst == "RUN")
    r.check("rustup target add wasm32-wasip2" in brun, "Dockerfile: builder adds the wasm32-wasip2 target")
    r.check(re.search(r"cargo build --release --locked -p tapedeck(\s|$)", brun) is not None,
            "Dockerfile: `cargo build --release --locked -p tapedeck`")
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    build_pkgs = [p for p in ("clang-19", "lld-19", "llvm-19", "wasi-libc", "libclang-rt-19-dev-wasm32") if p in setup]
    r.check(all(re.search(rf"(\s|^){re.escape(p)}(\s|$)", brun) for p in build_pkgs),
            "Dockerfile: builder installs the wasm C toolchain of scripts/setup.sh", ", ".join(build_pkgs))
    # Everything the build reads must be COPYed: every workspace member, the lock file and
    # the files embedded with include_str!/include_bytes! from outside their crate.
    copied = []
    for inst, rest in builder["body"]:
        if inst in ("COPY", "ADD") and "--from" not in rest:
            parts = [p for p in json_or_words(rest) if not p.startswith("--")]
            copied += [p.rstrip("/") for p in parts[:-1]]
    ignored = [l.strip().rstrip("/") for l in DOCKERIGNORE.read_text().splitlines() if l.strip() and not l.startswith("#")] if DOCKERIGNORE.exists() else []

    def covered(rel):
        return any(rel == c or rel.startswith(c + "/") or c == "." for c in copied) and not any(
            rel == i or rel.startswith(i + "/") for i in ignored)

    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    needed = ["Cargo.toml", "Cargo.lock"] + cargo["workspace"]["members"]
    needed += [v["path"] for v in cargo.get("patch", {}).get("crates-io", {}).values() if "path" in v]
    for src in (ROOT / "host").rglob("*.rs"):
        for lit in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', src.read_text()):
            target = (src.parent / lit).resolve()
            if target.is_relative_to(ROOT):
                needed.append(str(target.relative_to(ROOT)))
    missing = [n for n in needed if not covered(n)]
    r.check(not missing, "Dockerfile: the build context COPYed holds every workspace member, patch and embedded file",
            f"not copied (or ignored): {missing}")
    r.check(DOCKERIGNORE.exists() and all(p in ignored for p in ("**/target", "data", "**/node_modules")),
            "deploy/Dockerfile.dockerignore keeps target/, data/ and node_modules out of the context")
    ffrom = expand(final["from"]).split()[0]
    r.check(re.match(r"^debian:[a-z]+-slim$", ffrom) is not None, "Dockerfile: runtime on Debian slim", ffrom)
    r.check(bimage.split("-")[-1] == ffrom.split(":")[1].removesuffix("-slim"),
            "Dockerfile: builder and runtime on the same Debian release (glibc)", f"{bimage} / {ffrom}")
    body = final["body"]
    frun = " ".join(rest for inst, rest in body if inst == "RUN")
    users = [rest for inst, rest in body if inst == "USER"]
    user = users[-1].split(":")[0] if users else ""
    r.check(bool(users) and user not in ("root", "0"), "Dockerfile: final stage runs as a non-root USER", f"USER {users}")
    r.check(user.isdigit(), "Dockerfile: USER is numeric (Kubernetes runAsNonRoot can verify it)", user)
    r.check("redis-server" not in frun and not re.search(r"(\s|^)redis(\s|$)", frun), "Dockerfile: no redis-server in the image")
    r.check("ffmpeg" not in frun, "Dockerfile: no ffmpeg in the image (not needed at run time)")
    copies_bin = [rest for inst, rest in body if inst == "COPY" and "--from=" in rest]
    r.check(any(bname and f"--from={bname}" in c and "tapedeck" in c for c in copies_bin),
            "Dockerfile: final stage takes only the binary from the builder", f"{copies_bin}")
    hc = [rest for inst, rest in body if inst == "HEALTHCHECK"]
    r.check(len(hc) == 1 and "/healthz" in hc[0] and not hc[0].upper().startswith("NONE"), "Dockerfile: HEALTHCHECK on /healthz")
    r.check(any(inst == "EXPOSE" and "8080" in rest.split() for inst, rest in body), "Dockerfile: EXPOSE 8080")
    r.check(any(inst == "VOLUME" and "/data" in json_or_words(rest) for inst, rest in body), "Dockerfile: /data volume")
    env = " ".join(rest for inst, rest in body if inst == "ENV")
    r.check("TAPEDECK_DATA_DIR=/data" in env, "Dockerfile: TAPEDECK_DATA_DIR=/data")
    ep = [json_or_words(rest) for inst, rest in body if inst == "ENTRYPOINT"]
    r.check(ep[-1:] == [["tapedeck"]], 'Dockerfile: ENTRYPOINT ["tapedeck"]', f"{ep}")
    cmd = [json_or_words(rest) for inst, rest in body if inst == "CMD"]
    r.check(cmd[-1:] == [["serve", "--listen", "0.0.0.0:8080"]], 'Dockerfile: CMD ["serve", "--listen", "0.0.0.0:8080"]', f"{cmd}")


# --- self-test ----------------------------------------------------------------------------


def self_test():
    """Each case breaks one input in memory; the validator must report a failure."""
    kust, docs = load_kustomization(K8S)
    _, odocs = load_kustomization(K8S / "optional")
    compose = yaml.safe_load(COMPOSE.read_text())
    dockerfile = DOCKERFILE.read_text()

    def k8s_case(mutate):
        d = copy.deepcopy(docs)
        mutate({doc["metadata"]["name"] + "/" + doc["kind"]: doc for _, doc in d})
        return lambda r: check_kubernetes(r, main_docs=d)

    def compose_case(mutate):
        c = copy.deepcopy(compose)
        mutate(c)
        return lambda r: check_compose(r, raw=c)

    def docker_case(old, new):
        assert old in dockerfile, old
        return lambda r: check_dockerfile(r, text=dockerfile.replace(old, new, 1))

    worker = "tapedeck-worker/Deployment"
    gateway = "tapedeck-gateway/Deployment"
    so = "tapedeck-worker/ScaledObject"
    cases = {
        "unknown ScaledObject field": k8s_case(lambda m: m[so]["spec"].update(maxReplicas=5)),
        "ScaledObject threshold as a number": k8s_case(lambda m: m[so]["spec"]["triggers"][0]["metadata"].update(threshold=4)),
        "misspelled prometheus metadata key": k8s_case(lambda m: m[so]["spec"]["triggers"][0]["metadata"].update(serverAdress="x")),
        "Deployment field typo": k8s_case(lambda m: m[gateway]["spec"]["template"]["spec"].update(terminationGracePeriod=45)),
        "container field typo": k8s_case(lambda m: containers(m[gateway])[0].update(readinessprobe={})),
        "grace period below the shutdown timeout": k8s_case(lambda m: m[worker]["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=600)),
        "selector not matching pod labels": k8s_case(lambda m: m[worker]["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/component": "workers"})),
        "metrics scraped on the API port": k8s_case(lambda m: m[worker]["spec"]["template"]["metadata"]["annotations"].update({"prometheus.io/port": "8080"})),
        "misspelled setting": k8s_case(lambda m: m["tapedeck-config/ConfigMap"]["data"].update(TAPEDECK_BLOB_UR="x")),
        "ingress to a missing service": k8s_case(lambda m: m["tapedeck/Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"].update(name="nope")),
        "compose worker without REDIS_URL": compose_case(lambda c: c["services"]["worker-2"].update(environment={"TAPEDECK_ADMIN_TOKEN": "x" * 20})),
        "compose workers on one port": compose_case(lambda c: c["services"]["worker-2"].update(
            command=["serve", "--role", "worker", "--listen", "0.0.0.0:8081"],
            healthcheck=c["services"]["worker-1"]["healthcheck"])),
        "compose unknown service key": compose_case(lambda c: c["services"]["gateway"].update(helthcheck={})),
        "compose token not required": compose_case(lambda c: [
            env.update(TAPEDECK_ADMIN_TOKEN="${TAPEDECK_ADMIN_TOKEN:-changeme}")
            for env in [c["x-tapedeck"]["environment"]] + [s["environment"] for s in c["services"].values() if "environment" in s]
            if "TAPEDECK_ADMIN_TOKEN" in env]),
        "Dockerfile runs as root": docker_case("USER 10001:10001", "USER root"),
        "Dockerfile installs redis-server": docker_case("ca-certificates curl", "ca-certificates curl redis-server"),
        "Dockerfile without HEALTHCHECK": docker_case("HEALTHCHECK ", "# HEALTHCHECK "),
        "Dockerfile on old Rust": docker_case("ARG RUST_VERSION=1.95.0", "ARG RUST_VERSION=1.94.0"),
        "Dockerfile missing a member": docker_case("COPY bench ./bench", ""),
    }
    bad = []
    for name, run in cases.items():
        r = Report(quiet=True)
        try:
            run(r)
        except Exception as e:  # a crash is also noticing, but say so
            r.failed.append(f"raised {type(e).__name__}: {e}")
        if r.failed:
            print(f"ok    self-test: {name} is caught ({r.failed[0][:160]})")
        else:
            print(f"FAIL  self-test: {name} went unnoticed")
            bad.append(name)
    return bad


def main():
    if sys.argv[1:] == ["--self-test"]:
        bad = self_test()
        print(f"self-test: {len(bad)} of the broken inputs went unnoticed" if bad else "self-test: every broken input was caught")
        return 1 if bad else 0
    r = Report()
    print(f"== Kubernetes (deploy/k8s, strict, Kubernetes {KUBERNETES_VERSION}; KEDA CRD schema)")
    check_kubernetes(r)
    print("== Compose (deploy/compose.yaml, compose-spec schema)")
    check_compose(r)
    print("== Dockerfile (deploy/Dockerfile)")
    check_dockerfile(r)
    print(f"validate: {r.passed} checks passed, {len(r.failed)} failed")
    for f in r.failed:
        print(f"  failed: {f}")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
