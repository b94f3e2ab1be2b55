"""The local server's control API (sfu/README.md) over plain urllib, for the scripts that drive
ntgcalls against `groupcall serve`: the interop test and the receive comparison here, and the
benches (benches/ntgcalls_load.py, ntgcalls_play.py). Standard library only, so importing it
costs the start-up time ntgcalls_play.py measures next to nothing."""

import asyncio
import json
import urllib.error
import urllib.request

HTTP_TIMEOUT = 10.0


class Api:
    """`request` answers (HTTP status, JSON body); 0 and an error body when unreachable."""

    def __init__(self, base, timeout=HTTP_TIMEOUT):
        self.base = base.rstrip("/")
        self.timeout = timeout

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            try:
                return e.code, json.load(e)
            except ValueError:
                return e.code, {"error": {"type": "not JSON", "message": str(e)}}
        except (urllib.error.URLError, OSError) as e:
            return 0, {"error": {"type": "unreachable", "message": f"{self.base}: {e}"}}

    async def call(self, method, path, body=None):
        # urllib blocks: keep the event loop (and ntgcalls' futures) running meanwhile.
        return await asyncio.to_thread(self.request, method, path, body)
