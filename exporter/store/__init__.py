"""The watched set: its rows (:mod:`.rows`), the store's rules (:mod:`.base`), its
backends (:mod:`.sqlite`, :mod:`.postgres`) and where one is (:mod:`.location`)."""

from .base import NewCampaign, NewMessage, Store
from .location import open_store

__all__ = ["NewCampaign", "NewMessage", "Store", "open_store"]
