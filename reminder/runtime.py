"""What a start or a reload loads and accepts, and what the daemon runs on until the next
reload: settings, contacts, rules, templates, and the delivery built from them."""

from __future__ import annotations

import asyncio
import pickle
from dataclasses import dataclass

from reminder.app import App, refuse_broken_templates
from reminder.clock import WallClock
from reminder.contacts import Contacts
from reminder.delivery import Delivery, close_all, make_senders
from reminder.render import Renderer
from reminder.rules import Rules
from reminder.settings import Settings
from reminder.store.db import Store


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a start or a reload read and accepted: settings, contacts, the rules and the
    templates folder's sources. A session hands it on to the next (pickled, through the
    supervisor), so every session works on what was accepted, whatever is edited on disk
    before the next reload."""

    settings: Settings
    contacts: Contacts
    planning: Rules
    templates: dict[str, str] | None


def load_checked(store: Store, clock: WallClock) -> tuple[Loaded, bytes, Renderer]:
    """Config, contacts and templates read anew, the templates rendered against the
    ledger (at the moment ``clock`` says): a ``ConfigError`` names what fails. Also the
    ``Loaded`` pickled as read (once used, its caches hold what does not pickle)."""
    app = App()  # a fresh App reads config, contacts and templates anew
    settings = app.config.settings
    loaded = Loaded(settings, app.contacts, app.planning, app.renderer.sources)
    accepted = pickle.dumps(loaded)
    refuse_broken_templates(store, app.planning, app.renderer, settings, clock())
    return loaded, accepted, app.renderer


@dataclass(slots=True)
class Runtime:
    """Everything a reload replaces."""

    settings: Settings
    planning: Rules
    delivery: Delivery
    accepted: bytes  # the ``Loaded`` pickled as it was read, before use filled its caches

    @classmethod
    def load(cls, store: Store, clock: WallClock) -> Runtime:
        """Config, contacts and templates read anew, the templates rendered against the
        ledger (at the moment ``clock`` says) before anything uses them."""
        loaded, accepted, renderer = load_checked(store, clock)
        return cls.of(store, accepted, clock, loaded, renderer)

    @classmethod
    def of(
        cls,
        store: Store,
        accepted: bytes,
        clock: WallClock,
        loaded: Loaded | None = None,
        renderer: Renderer | None = None,
    ) -> Runtime:
        """The runtime of what a start or reload accepted (its templates already checked):
        ``accepted`` is the pickled ``Loaded``."""
        if loaded is None:
            loaded = pickle.loads(accepted)  # our own bytes, from our supervisor
            assert isinstance(loaded, Loaded)
        if renderer is None:
            renderer = Renderer(loaded.templates)
        senders = make_senders(loaded.settings, loaded.contacts)
        delivery = Delivery(store, loaded.settings, loaded.contacts, renderer, senders, clock)
        return cls(loaded.settings, loaded.planning, delivery, accepted)

    async def close(self) -> None:
        # the render pool's shutdown waits for its workers: in a thread, so that a stop's
        # time limit (``wait_for``) still holds over it
        await asyncio.to_thread(self.delivery.close)
        await close_all(self.delivery.senders)
