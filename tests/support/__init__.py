"""Test support: the services and fakes the cluster and integration tests run against."""


def free_port() -> int:
    """A TCP port free on loopback now (for the services the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
