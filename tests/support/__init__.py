"""Test support: the services and fakes the cluster and integration tests run against."""


def free_port() -> int:
    """A TCP port free on loopback now (for the services the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environ(**env: str):
    """A context manager: set these environment variables, then restore what was there."""
    import contextlib
    import os

    @contextlib.contextmanager
    def scope():
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    return scope()


def local_ray(object_store_mb: int = 256):
    """A context manager: a throwaway local Ray (2 CPUs, capped object store, its files and socket
    under a short /tmp folder, no auth token in ~/.ray); an already running one is reused as is."""
    import contextlib
    import os
    import shutil
    import tempfile

    import ray

    @contextlib.contextmanager
    def scope():
        if ray.is_initialized():
            yield
            return
        tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
        with environ(RAY_TMPDIR=tmp, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled")):
            ray.init(num_cpus=2, object_store_memory=object_store_mb * 1024**2, include_dashboard=False,
                     log_to_driver=False, _temp_dir=tmp)
            try:
                yield
            finally:
                ray.shutdown()
                shutil.rmtree(tmp, ignore_errors=True)

    return scope()
