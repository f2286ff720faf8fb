#!/usr/bin/env python3
"""Measures what a big standalone configuration costs a real ssegate.

    bench/config-apply.py BINARY ROUTES [FILES]   one run, printed
    bench/config-apply.py --results BINARY        the runs the docs quote (10,000 and
                                                  100,000 Routes, in 1 and in 100 files),
                                                  also written to
                                                  bench/results/config-apply-<date>.md
                                                  with the commit and the machine

Writes ROUTES Routes (one Service and EndpointSlice behind them) into FILES
files of a fresh folder, starts `BINARY standalone` on it, and measures:
  - load: start to /readyz (parse, build, first swap);
  - one-line change: a port edited in the small backend file, to the next
    table generation (ssegate_table_generation in /metrics);
  - removal: every Route file deleted, to the next generation;
each with RSS a second later (memory given back?) and peak RSS so far.
Everything runs on loopback; every wait has a deadline (LIMIT, 900 s).
"""
import datetime
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

LIMIT = float(os.environ.get("LIMIT", "900"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder, routes, files):
    with open(os.path.join(folder, "backend.yaml"), "w") as out:
        out.write(
            "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\n"
            "spec: {ports: [{name: http, port: 80}]}\n---\n"
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            "metadata: {name: svc-1, labels: {kubernetes.io/service-name: svc}}\n"
            "addressType: IPv4\nports: [{name: http, port: 9}]\n"
            'endpoints: [{addresses: ["127.0.0.1"]}]\n'
        )
    per = routes // files
    for f in range(files):
        with open(os.path.join(folder, f"routes-{f:05}.yaml"), "w") as out:
            for i in range(f * per, (f + 1) * per):
                out.write(
                    f"---\napiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: r{i}}}\n"
                    f"spec:\n  hostnames: [h{i}.example.com]\n"
                    f"  rules: [{{matches: [{{path: {{value: /p{i}}}}}], backendRefs: [{{name: svc, port: 80}}]}}]\n"
                )


def measure(binary, routes, files):
    """Runs one configuration; prints each line as it is measured and
    returns them."""
    lines = []

    def say(line):
        print(line, flush=True)
        lines.append(line)

    folder = tempfile.mkdtemp(prefix="ssegate-apply-")
    write_config(folder, routes, files)
    admin = f"127.0.0.1:{free_port()}"
    args = [binary, "standalone", "--dir", folder, "--listen", f"127.0.0.1:{free_port()}",
            "--admin", admin, "--access-log", "false"]
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    started = time.time()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    def rss(field="VmRSS"):
        with open(f"/proc/{proc.pid}/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) // 1024

    def memory():
        # A second after the swap: the heap is trimmed after it.
        time.sleep(1)
        return f"RSS {rss()} MiB (peak {rss('VmHWM')} MiB) a second later"

    def generation():
        text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=60).read().decode()
        return int(re.search(r"^ssegate_table_generation (\d+)", text, re.M).group(1))

    def wait(what, done, since):
        while not done():
            if time.time() - since > LIMIT:
                raise SystemExit(f"{what}: no result in {LIMIT} s")
            time.sleep(0.05)
        return time.time() - since

    def ready():
        try:
            return urllib.request.urlopen(f"http://{admin}/readyz", timeout=2).status == 200
        except OSError:
            return False

    try:
        took = wait("load", ready, started)
        say(f"{routes} Routes in {files} file(s): load {took:.2f} s, {memory()}")
        g = generation()
        backend = os.path.join(folder, "backend.yaml")
        text = open(backend).read().replace("port: 9}", "port: 10}")
        since = time.time()
        open(backend, "w").write(text)
        took = wait("one-line change", lambda: generation() > g, since)
        say(f"  one-line change in another file: {took:.2f} s, {memory()}")
        g = generation()
        since = time.time()
        for name in os.listdir(folder):
            if name.startswith("routes-"):
                os.remove(os.path.join(folder, name))
        took = wait("removal", lambda: generation() > g, since)
        say(f"  every Route removed: {took:.2f} s, {memory()}")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
    return lines


# The runs the docs quote: (Routes, files).
RESULT_RUNS = [(10_000, 1), (10_000, 100), (100_000, 1), (100_000, 100)]


def commit():
    """The commit measured, marked when the work tree differs from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
    return root, head + (" with local changes" if dirty else "")


def write_results(binary):
    root, measured = commit()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    lines = []
    for routes, files in RESULT_RUNS:
        lines += measure(binary, routes, files)
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    path = os.path.join(root, "bench", "results", f"config-apply-{today}.md")
    with open(path, "w") as out:
        out.write("# A large standalone configuration: load, change, removal\n\n")
        out.write(f"Written by bench/config-apply.py --results on {today}, commit {measured}, "
                  f"{version} (release build), on {os.cpu_count()} cores. Each run: a fresh "
                  f"folder, `standalone` started on it; times to /readyz and to the next table "
                  f"generation; RSS a second after each.\n\n")
        for line in lines:
            out.write(f"- {line.strip()}\n" if not line.startswith("  ") else f"  - {line.strip()}\n")
    print(f"wrote {path}", flush=True)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--results":
        write_results(sys.argv[2])
    elif len(sys.argv) in (3, 4) and not sys.argv[1].startswith("-"):
        measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
