"""Shared by the Dask examples: connect to a scheduler or start a LocalCluster,
and read each worker's peak resident memory (VmHWM)."""
import argparse


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--scheduler", help="address of a running dask-scheduler (default: a "
                   "LocalCluster with --workers processes)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="512MiB", help="per LocalCluster worker")
    p.add_argument("--gb", type=float, default=2.0, help="data size in GB (float64)")
    p.add_argument("--chunk-mb", type=float, default=16.0,
                   help="partition size; 64 MB partitions overran 512 MiB workers here")
    p.add_argument("--seed", type=int, default=0)
    return p


def client_for(args):
    from distributed import Client, LocalCluster
    if args.scheduler:
        return Client(args.scheduler)
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           memory_limit=args.memory_limit, dashboard_address=None)
    return Client(cluster)


def _vmhwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return -1


def worker_peaks(client):
    """{worker address: (peak RSS bytes, memory limit bytes)}."""
    peaks = client.run(_vmhwm)
    info = client.scheduler_info()["workers"]
    return {w: (peaks[w], info[w].get("memory_limit", 0)) for w in peaks}


def report_peaks(client):
    ok = True
    for w, (peak, limit) in sorted(worker_peaks(client).items()):
        print("worker %s: peak RSS %.0f MiB, limit %.0f MiB" % (w, peak / 2**20, limit / 2**20))
        ok &= limit == 0 or peak <= limit
    print("every worker stayed within its memory limit: %s" % ok)
    return ok
