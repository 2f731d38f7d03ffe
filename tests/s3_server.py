"""A real S3 server for the tests: moto's server mode on 127.0.0.1, started and stopped by the test that needs
it, reached through s3fs with distinctive fake credentials (they must never appear in anything written)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import yaml

ACCESS_KEY = "AKIACIEPFAKE7Q3ZK9XW"
SECRET_KEY = "ciepFakeSecret/Zx81qLw0v9PpK2mN4bV6cX8zA"
REGION = "eu-west-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    opts: dict  # s3fs storage options: endpoint, credentials, region
    fs: Any  # s3fs.S3FileSystem


@contextmanager
def moto_s3(*buckets: str, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> Iterator[S3Server]:
    """A moto S3 server in this process with `buckets` created; stopped on exit."""
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        opts = dict(endpoint_url=endpoint, key=key, secret=secret, client_kwargs={"region_name": REGION})
        fs = s3fs.S3FileSystem(**opts)
        for bucket in buckets:
            fs.mkdir(bucket)
        yield S3Server(endpoint, opts, fs)
    finally:
        server.stop()


def opts_yaml(opts: dict) -> str:
    """Storage options as a one-line YAML mapping, for `--set run.storage_options=...`."""
    return yaml.safe_dump(opts, default_flow_style=True).strip()
