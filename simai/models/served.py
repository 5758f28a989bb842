"""A served surrogate: one inference process that others call through the store.

For codes that cannot host the model in-process (external coupling). A client puts its
input array under `<requests>/in/<id>` and appends a request to the stream `<requests>`;
`serve` runs the latest model version on it, puts the output under `<requests>/out/<id>` and
then a small reply `{"version": v}` (or `{"error": ...}`) under `<requests>/done/<id>`, which
the client waits for. Run `serve` as a workflow component.
"""

from __future__ import annotations

import uuid
from typing import Any

from simai.models.surrogate import Surrogate, open_store_arg
from simai.store import Store

DEFAULT_REQUESTS = "surrogate/requests"


def serve(
    name: str,
    store: Store | str | None = None,
    requests: str = DEFAULT_REQUESTS,
    *,
    device: str = "cpu",
    poll: float = 1.0,
    timeout: float | None = None,
    max_requests: int | None = None,
    trusted: bool = False,
    model_class: Any = None,
) -> int:
    """Answer requests for model `name` until the request stream is closed; return the count.

    Waits up to `timeout` seconds for the first version and for each request (TimeoutError
    after that; None waits for ever). Requests already answered (a restarted server) or
    abandoned by their client are skipped. `max_requests` ends it after that many answers.
    `trusted` and `model_class` are the Surrogate's.
    """
    store = open_store_arg(store)
    surrogate = Surrogate(
        name, store, device=device, poll=poll, trusted=trusted, model_class=model_class
    )
    surrogate.wait_for_model(timeout)
    answered = 0
    for request in store.stream(requests, timeout=timeout):
        if max_requests is not None and answered >= max_requests:
            break
        rid = request.get("id") if isinstance(request, dict) else None
        if not isinstance(rid, str) or store.exists(f"{requests}/done/{rid}"):
            continue
        try:
            x = store.get(f"{requests}/in/{rid}")
        except KeyError:
            continue
        try:
            if request.get("model") != name:
                raise ValueError(f"this server runs model {name!r}, not {request.get('model')!r}")
            y, version = surrogate.call(x)
            store.put(f"{requests}/out/{rid}", y)
            reply: dict[str, Any] = {"version": version}
        except Exception as e:  # noqa: BLE001 - the error goes back to the caller
            reply = {"error": f"{type(e).__name__}: {e}"}
        store.put(f"{requests}/done/{rid}", reply)
        store.delete(f"{requests}/in/{rid}")
        answered += 1
        if max_requests is not None and answered >= max_requests:
            break
    return answered


class SurrogateClient:
    """Calls a model served by `serve` through the store: `client(x)` like `Surrogate`.

    Inputs and outputs are numpy arrays (a torch tensor is sent as an array and the answer
    comes back as numpy). `client.version` is the version that answered the last call.
    """

    def __init__(
        self,
        name: str,
        store: Store | str | None = None,
        requests: str = DEFAULT_REQUESTS,
        timeout: float | None = 60.0,
    ) -> None:
        self.name = name
        self.store = open_store_arg(store)
        self.requests = requests
        self.timeout = timeout
        self.version: int | None = None

    def __call__(self, x: Any) -> Any:
        rid = uuid.uuid4().hex
        done, out = f"{self.requests}/done/{rid}", f"{self.requests}/out/{rid}"
        self.store.put(f"{self.requests}/in/{rid}", x)
        try:
            self.store.append(self.requests, {"id": rid, "model": self.name})
            try:
                self.store.wait(done, timeout=self.timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"no answer from a server of model {self.name!r} on stream "
                    f"{self.requests!r} within {self.timeout:g} s: is `serve` running?"
                ) from None
            reply = self.store.get(done)
            if "error" in reply:
                raise RuntimeError(f"the server of model {self.name!r} failed: {reply['error']}")
            y = self.store.get(out)
        finally:
            for key in (f"{self.requests}/in/{rid}", out, done):
                self.store.delete(key)
        self.version = reply["version"]
        return y
