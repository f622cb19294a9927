"""A least-recently-used cache of per-prompt states, bounded by bytes (numpy arrays or torch tensors)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

#: Default bound of a prompt cache: 64 MiB. MiniLM states are ~1.5 KB per token (384 float32), so
#: about 4000 distinct 10-token prompts fit; the least recently used prompt goes first.
DEFAULT_CACHE_BYTES = 64 << 20


class PromptCache:
    """``get(prompt)`` / ``put(prompt, states)``; entries are evicted, least recently used first, while
    the total ``nbytes`` exceeds ``max_bytes`` (``max_bytes=0`` disables caching). Not thread-safe on
    its own (the Segmenter's lock serialises calls)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if not isinstance(max_bytes, int) or max_bytes < 0:
            from genmask_sdk.errors import ConfigError

            raise ConfigError(f"cache_bytes must be an int >= 0, got {max_bytes!r}.")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries: OrderedDict[str, Any] = OrderedDict()

    def get(self, prompt: str) -> Any:
        value = self._entries.get(prompt)
        if value is not None:
            self._entries.move_to_end(prompt)
        return value

    def put(self, prompt: str, states: Any) -> None:
        size = int(states.nbytes)
        if size > self.max_bytes:
            return
        old = self._entries.pop(prompt, None)
        if old is not None:
            self.nbytes -= int(old.nbytes)
        self._entries[prompt] = states
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= int(evicted.nbytes)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prompt: str) -> bool:
        return prompt in self._entries
