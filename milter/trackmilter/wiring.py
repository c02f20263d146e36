"""Where the daemons get what they must not import themselves: the store's write hooks.

The store knows no webhooks and no daemon package imports another (.importlinter): the
command line (and, in each web worker, web_worker_app) builds the webhook outbox hook
here and hands it to the daemon, which hands it to the store it builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from trackmilter.addresses import Network
from trackmilter.config import Settings
from trackmilter.store.base import WriteHook
from trackmilter.webhooks.outbox import hooks_for

if TYPE_CHECKING:
    from trackmilter.web.app import TrackerApp

# Granian's factory for `trackmilter web` workers (a string: the workers import it).
WEB_WORKER = "trackmilter.wiring:web_worker_app"


def store_hooks(settings: Settings, outgoing_networks: Sequence[Network] = ()
                ) -> tuple[WriteHook, ...]:
    """The webhook outbox for [webhooks] endpoints (none without endpoints): events enter
    it in the transaction that stores them. `outgoing_networks`: whose in-line refusals
    are delivery news (the milter's [milter] outgoing_networks)."""
    return hooks_for(settings.webhooks.endpoints, outgoing_networks)


def milter_hooks(settings: Settings) -> tuple[WriteHook, ...]:
    return store_hooks(settings, settings.milter.outgoing_networks)


def web_worker_app() -> TrackerApp:
    # Here, not above: `trackmilter milter` and `maillog` import this module too, and need
    # none of the web server.
    from trackmilter.web.server import worker_app

    return worker_app(store_hooks)
