"""Drives a live Meridian gateway through a Python client generated from its
OpenAPI document by openapi-python-client (tests/gateway_generated_client.rs
generates the package `client` and runs this with it on PYTHONPATH).

Usage: python use_client.py http://127.0.0.1:PORT
Exits non-zero, naming the step, when the client and the server disagree.
"""

import io
import sys

from client import Client
from client.api.kv import get_key, put_key, range_, txn
from client.models import (
    ErrorBody,
    ExistsCompare,
    ExistsOpJson,
    GetResponse,
    PutOp,
    PutOpJson,
    PutResponse,
    RangeResponse,
    TxnRequest,
    TxnResponse,
)
from client.types import File


def check(step, condition, detail):
    if not condition:
        sys.exit(f"generated client, {step}: {detail!r}")


def main(base_url):
    api = Client(base_url=base_url, raise_on_unexpected_status=True, timeout=20.0)

    put = put_key.sync("gen/a", client=api, body=File(payload=io.BytesIO(b"alpha")))
    check("put", isinstance(put, PutResponse) and put.version > 0, put)

    got = get_key.sync("gen/a", client=api)
    check("get after put", isinstance(got, GetResponse) and got.value == "alpha", got)
    check("get version", got.version == put.version, (got.version, put.version))

    # The txn writes gen/b only if it does not exist yet: the first run
    # succeeds, the second takes the (empty) failure branch.
    body = TxnRequest(
        compares=[ExistsCompare(exists=False, key="gen/b", op=ExistsOpJson.EQUAL)],
        success=[PutOp(put=PutOpJson(key="gen/b", value="beta"))],
    )
    first = txn.sync(client=api, body=body)
    check("txn", isinstance(first, TxnResponse) and first.succeeded, first)
    second = txn.sync(client=api, body=body)
    check("txn again", isinstance(second, TxnResponse) and not second.succeeded, second)

    after = get_key.sync("gen/b", client=api)
    check("get after txn", isinstance(after, GetResponse) and after.value == "beta", after)

    page = range_.sync(client=api, prefix="gen/", limit=10)
    check("range", isinstance(page, RangeResponse), page)
    check("range keys", [kv.key for kv in page.kvs] == ["gen/a", "gen/b"], page.kvs)

    missing = get_key.sync("gen/absent", client=api)
    check("get of a missing key", isinstance(missing, ErrorBody), missing)
    check("missing code", missing.error.code == "not_found", missing.error)

    bad = range_.sync(client=api, prefix="gen/", start="gen/a")
    check("prefix with start", isinstance(bad, ErrorBody), bad)
    check("bad range code", bad.error.code == "MER-1007", bad.error)
    print("generated client: put, get, txn, range and two refusals agree with the server")


if __name__ == "__main__":
    main(sys.argv[1])
