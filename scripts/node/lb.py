#!/usr/bin/env python3
"""The load-balancer stand-in of the node of scripts/node.sh.

A cloud controller gives every Service of `type: LoadBalancer` an address and
writes it to `status.loadBalancer.ingress`; kube-proxy then routes that
address to the Service's endpoints. This does the first half only, from a
pool on the pod bridge (10.244.0.200-.254): kube-proxy does the routing, as
with MetalLB or cloud-provider-kind. Services with a `loadBalancerClass`
belong to some other implementation and are left alone. Addresses are given
round the pool, so a freed one is given again as late as possible.

Usage: lb.py KUBECONFIG   (polls every 0.5 s; each kubectl call at most 10 s)
"""
import json
import subprocess
import sys
import time

POOL = [f"10.244.0.{i}" for i in range(200, 255)]
POLL_SECONDS = 0.5
CALL_TIMEOUT = 10


def kubectl(kubeconfig, *args):
    return subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, *args],
        capture_output=True, text=True, timeout=CALL_TIMEOUT, check=True,
    ).stdout


def main(kubeconfig):
    last = len(POOL) - 1
    while True:
        try:
            services = json.loads(kubectl(kubeconfig, "get", "services", "-A", "-o", "json"))["items"]
        except (subprocess.SubprocessError, ValueError) as e:
            print(f"lb: list services: {e}", flush=True)
            time.sleep(POLL_SECONDS)
            continue
        mine = [s for s in services
                if s["spec"].get("type") == "LoadBalancer" and not s["spec"].get("loadBalancerClass")]
        given = {i.get("ip") for s in mine for i in s.get("status", {}).get("loadBalancer", {}).get("ingress", [])}
        for s in mine:
            if s.get("status", {}).get("loadBalancer", {}).get("ingress"):
                continue
            free = [(last + 1 + k) % len(POOL) for k in range(len(POOL))]
            free = [k for k in free if POOL[k] not in given]
            name = f'{s["metadata"]["namespace"]}/{s["metadata"]["name"]}'
            if not free:
                print(f"lb: {name}: no address left in the pool", flush=True)
                continue
            last = free[0]
            ip = POOL[last]
            patch = {"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}}
            try:
                kubectl(kubeconfig, "patch", "service", "-n", s["metadata"]["namespace"], s["metadata"]["name"],
                        "--subresource=status", "--type=merge", "-p", json.dumps(patch))
                given.add(ip)
                print(f"lb: {name}: {ip}", flush=True)
            except subprocess.SubprocessError as e:
                print(f"lb: {name}: patch status: {e}", flush=True)
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    main(sys.argv[1])
