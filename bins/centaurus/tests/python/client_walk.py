"""The official Kubernetes Python client (PyPI `kubernetes`) against a Centaurus region:
typed models read, patch, list and watch pods, nodes and deployments; the dynamic client
applies server-side; exec runs over its WebSocket (v4.channel.k8s.io). Arguments: the admin
kubeconfig, a tenant admin's kubeconfig, and optionally a node that runs containers, for
exec. Exits non-zero, saying why, on the first failure."""

import sys
import time

from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

admin_config, tenant_config = sys.argv[1], sys.argv[2]
exec_node = sys.argv[3] if len(sys.argv) > 3 else None


def api_client(path):
    return config.new_client_from_config(config_file=path)


admin = api_client(admin_config)
tenant = api_client(tenant_config)

# Version and nodes (the admin's: nodes are the system's), through typed models.
version = client.VersionApi(admin).get_code()
assert version.git_version.startswith("v1."), version
nodes = client.CoreV1Api(admin).list_node().items
assert nodes, "no nodes"
for n in nodes:
    info = n.status.node_info
    assert info.kubelet_version.startswith("v1."), info
    assert info.architecture and info.system_uuid is not None, info
    assert any(a.type == "InternalIP" for a in n.status.addresses), n.status.addresses
    assert any(c.type == "Ready" for c in n.status.conditions), n.status.conditions
print(f"{len(nodes)} nodes")
node = client.CoreV1Api(admin).read_node(nodes[0].metadata.name)
patched = client.CoreV1Api(admin).patch_node(node.metadata.name, {"metadata": {"labels": {"walk": "yes"}}})
assert patched.metadata.labels["walk"] == "yes"

# A tenant's Deployment, created from typed models.
core = client.CoreV1Api(tenant)
apps = client.AppsV1Api(tenant)
deployment = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="py", labels={"app": "py"}),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "py"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "py"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        ),
    ),
)
created = apps.create_namespaced_deployment("default", deployment)
assert created.spec.strategy.type == "RollingUpdate", created.spec.strategy


def wait_for(what, check, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


wait_for("2 py pods Running", lambda: len([
    p for p in core.list_namespaced_pod("default", label_selector="app=py").items
    if p.status.phase == "Running"]) == 2)
ready = wait_for("the deployment ready", lambda: (apps.read_namespaced_deployment("py", "default").status.ready_replicas or 0) == 2)
print("deployment ready")

# Patch (merge and strategic), scale, and a watch that sees the change.
apps.patch_namespaced_deployment("py", "default", {"metadata": {"annotations": {"by": "python"}}})
scale = apps.patch_namespaced_deployment_scale("py", "default", {"spec": {"replicas": 3}})
assert scale.spec.replicas == 3, scale
rv = core.list_namespaced_pod("default").metadata.resource_version
w = watch.Watch()
seen = set()
for event in w.stream(core.list_namespaced_pod, "default", label_selector="app=py",
                      resource_version=rv, timeout_seconds=30):
    pod = event["object"]
    assert isinstance(pod, client.V1Pod), type(pod)
    seen.add(pod.metadata.name)
    if event["type"] == "ADDED":
        w.stop()
assert seen, "the watch saw the third pod"
print("watch saw", sorted(seen))

# Every pod reads back through the typed model, a VM pod's too.
for p in core.list_namespaced_pod("default").items:
    assert p.spec.containers, p.metadata.name
    for s in p.status.container_statuses or []:
        assert s.name and s.image is not None and s.restart_count is not None

# Errors are typed: a missing pod is a 404 ApiException; another tenant's is invisible.
try:
    core.read_namespaced_pod("nope", "default")
    raise SystemExit("a missing pod was found")
except ApiException as e:
    assert e.status == 404, e
try:
    client.CoreV1Api(tenant).list_node()
    raise SystemExit("a tenant listed nodes")
except ApiException as e:
    assert e.status == 403, e

# Server-side apply through the dynamic client.
dyn = dynamic.DynamicClient(tenant)
configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "v1"}}
configmaps.server_side_apply(body=body, name="applied", namespace="default", field_manager="python")
core.patch_namespaced_config_map("applied", "default", {"data": {"k": "changed"}}, field_manager="editor")
try:
    configmaps.server_side_apply(body=body, name="applied", namespace="default", field_manager="python")
    raise SystemExit("an apply over another manager's value did not conflict")
except ApiException as e:
    assert e.status == 409 and "editor" in e.body, e.body
configmaps.server_side_apply(body=body, name="applied", namespace="default",
                             field_manager="python", force_conflicts=True)
assert core.read_namespaced_config_map("applied", "default").data["k"] == "v1"
print("server-side apply: conflict and force")

apps.delete_namespaced_deployment("py", "default")

# exec: a command's output through the client's WebSocket stream.
if exec_node:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="py-exec"),
        spec=client.V1PodSpec(node_selector={"kubernetes.io/hostname": exec_node},
                              containers=[client.V1Container(name="c", image="busybox",
                                                             command=["sleep", "3600"])]))
    core.create_namespaced_pod("default", pod)
    wait_for("the exec pod Running",
             lambda: core.read_namespaced_pod("py-exec", "default").status.phase == "Running")
    out = stream(core.connect_get_namespaced_pod_exec, "py-exec", "default",
                 command=["sh", "-c", "echo from-python-$((6*7))"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert "from-python-42" in out, out
    core.delete_namespaced_pod("py-exec", "default")
    print("exec: ok")
print("python client walk: ok")
