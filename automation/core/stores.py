"""One counter store per Redis URL, made when first used: in Redis when REDIS_URL is set (shared
by every process), in this process's memory otherwise. Tests change REDIS_URL, so the store is
looked up by the current URL each time."""

import threading
from collections.abc import Callable

from django.conf import settings


class StorePerUrl:
    def __init__(self, in_redis: Callable[[str], object], in_memory: Callable[[], object]):
        self.in_redis, self.in_memory = in_redis, in_memory
        self.stores: dict[str, object] = {}
        self.lock = threading.Lock()

    def __call__(self):
        url = settings.REDIS_URL
        store = self.stores.get(url)
        if store is None:
            with self.lock:
                store = self.stores.get(url)
                if store is None:
                    store = self.stores[url] = self.in_redis(url) if url else self.in_memory()
        return store
