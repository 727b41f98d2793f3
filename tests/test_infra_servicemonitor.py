"""The prod overlay's ServiceMonitor scrapes the webhook: the right Service, port, path and CA.

Schema validation (monitoring.coreos.com/v1, from prometheus-operator's CRD) is
`tests/test_infra_manifests.py::test_every_object_validates_strictly`; this checks that
the object points at what the overlay actually deploys.
"""

from __future__ import annotations

from tests.test_infra_manifests import objects, one


def test_prod_servicemonitor_scrapes_the_webhooks_metrics_over_verified_tls() -> None:
    (sm,) = objects("overlays/prod", "ServiceMonitor")
    svc = one("overlays/prod", "Service", "mlseal-webhook")
    assert sm["metadata"]["namespace"] == svc["metadata"]["namespace"] == "mlseal-system"
    want = sm["spec"]["selector"]["matchLabels"]
    assert want.items() <= svc["metadata"].get("labels", {}).items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert (ep["scheme"], ep["path"]) == ("https", "/metrics")
    tls = ep["tlsConfig"]
    cert = one("overlays/prod", "Certificate", "mlseal-webhook")
    assert tls["ca"]["secret"] == {"name": cert["spec"]["secretName"], "key": "ca.crt"}
    assert tls["serverName"] in cert["spec"]["dnsNames"]
    assert "insecureSkipVerify" not in tls
    # the webhook serves /metrics on the port the Service targets
    dep = one("overlays/prod", "Deployment", "mlseal-webhook")
    ports = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    assert svc["spec"]["ports"][0]["targetPort"] in ports


def test_dev_has_no_servicemonitor() -> None:
    # dev clusters often run without prometheus-operator: its CRD would be missing
    assert objects("overlays/dev", "ServiceMonitor") == []
